// The trainer's device rules that hold on any machine: data-parallel training on a GPU in a build without NCCL is
// refused with E_CONFIG before any weight moves (distributed_test runs the NCCL group where it exists), and a GPU in
// a CPU-only build is E_CONFIG saying how to get a CUDA build. (Training steps on a device: m2vla_bench train, run by scripts/gpu-acceptance.sh.)
#include <string>

#include "check.h"
#include "device.h"
#include "fixture.h"
#include "run_dir.h"
#include "train/distributed.h"
#include "train/trainer.h"

namespace m2vla::test {
namespace {

template <typename F>
std::string config_error(F f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_MSG(e.code() == ErrorCode::Config, "expected E_CONFIG, got ", error_code_name(e.code()), ": ", e.what());
    return e.what();
  }
  failed(__FILE__, __LINE__, "an E_CONFIG error", "nothing was thrown");
}

TEST(data_parallel_training_on_a_gpu_without_nccl_is_refused) {
  if (train::distributed_available(c10::Device(c10::kCUDA, 0))) skip("this build has NCCL (distributed_test covers it)");
  const RunSpec spec = resolve_run_dir(fixture_dir());
  train::TrainerOptions o;
  o.model_path = spec.model_file, o.backbone = spec.backbone, o.preprocess = spec.preprocess;
  o.action_head_path = spec.action_head_file, o.proprio_path = spec.proprio_projector_file, o.head = spec.head;
  o.device = c10::Device(c10::kCUDA, 0);
  o.distributed.world_size = 2;
  const std::string why = config_error([&] { train::Trainer t(o); });
  EXPECT_MSG(why.find("NCCL") != std::string::npos && why.find("cuda:0") != std::string::npos, why);
}

TEST(a_gpu_in_a_cpu_only_build_says_how_to_get_a_cuda_build) {
#ifdef M2VLA_WITH_CUDA
  skip("a CUDA build");
#else
  const std::string why = config_error([] { resolve_placement("cuda:0", "float32"); });
  EXPECT_MSG(why.find("M2VLA_CUDA=1") != std::string::npos, why);
#endif
}

}  // namespace
}  // namespace m2vla::test

TEST_MAIN()
