// Policy parity on fixture A against the reference's golden outputs, at test/native/policy.test.ts's tolerances, on
// the device given after "--" (cpu by default; cuda:N skips when this build or machine has no GPU), and the bounded
// error of a bfloat16 policy.
#include <ATen/ATen.h>

#include <cstdio>

#include "check.h"
#include "fixture.h"
#include "run_dir.h"

namespace m2vla::test {
namespace {

const char* const kCases[] = {"case0", "case1", "case2", "case3"};
constexpr double kTol = 1e-4;  // actions and normalized actions (policy.test.ts TOL)

std::string device_arg() { return args().empty() ? "cpu" : args()[0]; }

Placement placement(const std::string& dtype) {
  const std::string device = device_arg();
  if (device != "cpu") {
#ifndef M2VLA_WITH_CUDA
    skip("a CPU-only build (configure with -DM2VLA_CUDA=ON for " + device + ")");
#endif
    if (!at::hasCUDA()) skip("no CUDA device on this machine");
    // Float32 parity means float32 arithmetic: no TF32 in matmuls or convolutions.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  return resolve_placement(device, dtype);
}

void check_case(const Policy& policy, const std::string& c, const std::string& set, bool casts) {
  const ActResult out = policy.act(case_request(c, casts));
  const double actions = max_abs_diff(out.actions, expected(c + "." + set + ".actions"));
  const double normalized = max_abs_diff(out.normalized, expected(c + "." + set + ".normalized_actions"));
  std::printf("  %s %s on %s: |actions - golden| %.2e, |normalized - golden| %.2e\n", c.c_str(), set.c_str(),
              policy.device().str().c_str(), actions, normalized);
  EXPECT_MSG(actions < kTol, c, " ", set, ": actions differ by ", actions);
  EXPECT_MSG(normalized < kTol, c, " ", set, ": normalized actions differ by ", normalized);
  const at::Tensor indices = out.head.retrieval.indices.to(at::kCPU, at::kLong);
  EXPECT_MSG(indices.equal(expected(c + "." + set + ".msm.topk_indices").to(at::kLong).reshape(indices.sizes())), c,
            ": retrieved rows ", indices, " differ from the golden ones");
  if (set == "expected") {
    const double sims = max_abs_diff(out.head.retrieval.similarities, expected(c + ".expected.msm.topk_similarities"));
    EXPECT_MSG(sims < 1e-2, c, ": similarities differ by ", sims);
  }
}

TEST(parity_reference_casts) {
  const auto policy = load_policy(resolve_run_dir(fixture_dir()), placement("float32"));
  for (const char* c : kCases) check_case(*policy, c, "expected", true);
}

TEST(parity_no_casts) {
  const auto policy = load_policy(resolve_run_dir(fixture_dir()), placement("float32"));
  for (const char* c : kCases) check_case(*policy, c, "expected_nocast", false);
}

TEST(kernel_path) {
  const Placement p = placement("float32");
  const auto policy = load_policy(resolve_run_dir(fixture_dir()), p);
  const KernelReport& k = policy->kernels();
  std::printf("  kernel path on %s (float32): %s\n", p.device.str().c_str(), k.path().c_str());
  EXPECT_MSG(k.path() == (p.device.is_cpu() ? "cpu-fused" : "libtorch-ops"), "path ", k.path());
}

// bfloat16 weights and activations (VLM and head): the actions stay within a bound of the float32 golden run with the
// reference's casts (its float32 analogue of the bf16 deployment). Measured on the CPU: see the printed errors; the
// bound is the head test's 0.1 for the head alone, doubled for the bf16 VLM in front of it.
TEST(bfloat16_bounded_error) {
  const Placement p = placement("bfloat16");
  const auto policy = load_policy(resolve_run_dir(fixture_dir()), p);
  std::printf("  kernel path on %s (bfloat16): %s\n", p.device.str().c_str(), policy->kernels().path().c_str());
  if (!p.device.is_cpu()) EXPECT_MSG(policy->kernels().path() == "cuda-kernels", "bf16 on a GPU must use the CUDA kernels: ",
                                    policy->kernels().warnings.empty() ? "" : policy->kernels().warnings[0]);
  for (const char* c : kCases) {
    const ActResult out = policy->act(case_request(c, true));
    EXPECT(at::isfinite(out.actions).all().item<bool>());
    const double err = max_abs_diff(out.normalized, expected(std::string(c) + ".expected.normalized_actions"));
    std::printf("  %s bfloat16 on %s: |normalized - float32 golden| %.3e\n", c, p.device.str().c_str(), err);
    EXPECT_MSG(err < 0.2, c, ": bfloat16 normalized actions differ from the float32 golden ones by ", err);
  }
}

}  // namespace
}  // namespace m2vla::test

TEST_MAIN()
