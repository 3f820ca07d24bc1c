#include "policy.h"

#include <ATen/ATen.h>
#include <ATen/record_function.h>

#include "error.h"
#include "head/kernel_cases.h"
#include "head/mol/reference.h"
#include "timing.h"
#include "transfer.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#include "cuda/kernels.h"
#endif

namespace m2vla {

Policy::Policy(std::shared_ptr<const model::Backbone> backbone, std::shared_ptr<const head::ActionHead> head,
               PolicyConfig config)
    : backbone_(std::move(backbone)), head_(std::move(head)), config_(std::move(config)) {
  const auto& cfg = backbone_->config();
  const auto& dims = head_->dims();
  if (dims.hidden != cfg.llm.hidden_size)
    fail(ErrorCode::Config, "action head: hidden size ", dims.hidden, " does not fit the VLM's ", cfg.llm.hidden_size);
  if (dims.num_blocks != cfg.llm.num_layers)
    fail(ErrorCode::Config, "action head: ", dims.num_blocks, " MoL blocks, but the VLM has ", cfg.llm.num_layers,
         " layers (one block per layer)");
  if (config_.proprio_stats.q01.numel() != dims.proprio_dim || config_.action_stats.q01.numel() != dims.action_dim)
    fail(ErrorCode::Config, "dataset statistics: proprio/action have ", config_.proprio_stats.q01.numel(), "/",
         config_.action_stats.q01.numel(), " dimensions, the head ", dims.proprio_dim, "/", dims.action_dim);
  if (head_->options().device != device())
    fail(ErrorCode::Config, "action head on ", head_->options().device.str(), " but the VLM on ", device().str(),
         ": load both with the same device");
}

const KernelReport& Policy::kernels() const {
  std::call_once(kernels_once_, [this] { kernels_ = choose_kernels(); });
  return kernels_;
}

std::string KernelReport::path() const {
  using head::Backend;
  if (mol == Backend::CpuFused && retrieval == Backend::CpuFused) return "cpu-fused";
  if (mol == Backend::Cuda && retrieval == Backend::Cuda) return "cuda-kernels";
  return "libtorch-ops";
}

KernelReport Policy::choose_kernels() const {
  KernelReport report;
  if (!config_.custom_kernels) return report;
  if (device().is_cpu()) return {head::Backend::CpuFused, head::Backend::CpuFused, {}, {}};
#ifdef M2VLA_WITH_CUDA
  // What the kernels cannot take (native/cuda/kernels.h) keeps the policy on libtorch ops without a check.
  const auto& dims = head_->dims();
  std::ostringstream limits;
  if (head_->options().dtype != at::kBFloat16) limits << "they read bfloat16, the policy runs in " << head_->options().dtype;
  else if (dims.chunk > M2VLA_MOL_MAX_QUERIES || dims.head_dim > M2VLA_MOL_MAX_HEAD_DIM)
    limits << "MoL attention takes chunks <= " << M2VLA_MOL_MAX_QUERIES << " and head_dim <= " << M2VLA_MOL_MAX_HEAD_DIM;
  else if (!head::mol_layout_fits(dims.num_heads, dims.head_dim))
    limits << "MoL attention reads bf16 pairs: it needs an even head count and head_dim, the head has " << dims.num_heads
           << " x " << dims.head_dim;
  else if (dims.key_dim % 8 != 0 || head_->options().top_k > M2VLA_TOPK_MAX)
    limits << "top-R retrieval takes key_dim % 8 == 0 and R <= " << M2VLA_TOPK_MAX;
  if (!limits.str().empty()) {
    report.warnings.push_back("m2vla: CUDA kernels not used on " + device().str() + " (" + limits.str() + "); using libtorch ops");
    return report;
  }
  head::KernelRegistry registry([&report](const std::string& message) { report.warnings.push_back(message); });
  const auto trusted = [&](const char* name) {
    const bool ok = registry.use_fast_path(name, [&] { return head::check_kernel_variants(name, device()); });
    report.checks.emplace_back(name, *registry.verdict(name));
    return ok;
  };
  if (trusted("molAttention")) report.mol = head::Backend::Cuda;
  if (trusted("l1TopK")) report.retrieval = head::Backend::Cuda;
  // A kernel that faulted (an illegal address, say) leaves the CUDA context unusable: falling back would fail on the
  // next op with an error that blames it. Say what happened instead.
  if (const std::string dead = cuda::context_error(device()); !dead.empty())
    fail(ErrorCode::Native, "the CUDA kernels' self-check on ", device().str(), " left the CUDA context unusable (", dead,
         "); the process must restart. Checks: ", report.checks.empty() ? "" : report.checks.back().second.detail);
#endif
  return report;
}

ActResult Policy::act(const ActRequest& req) const {
  const auto& cfg = backbone_->config();
  const c10::Device device = this->device();
  kernels();  // the first call decides (and on a GPU checks) the kernels: not part of any stage's time
  const StageSyncScope syncs(req.time_stages);
  ActResult out;
  Stopwatch watch(device);
  at::Tensor pixels = req.images.empty() ? req.pixel_values
                                         : model::preprocess_images(req.images, cfg.num_images, config_.preprocess);
  if (!at::isfinite(pixels).all().item<bool>()) fail(ErrorCode::Input, "pixelValues: contain NaN or Inf");
  const int64_t batch = pixels.size(0);
  if (req.state.dim() != 2 || req.state.size(0) != batch || req.state.size(1) != head_->dims().proprio_dim)
    fail(ErrorCode::Shape, "state: expected ", head_->dims().proprio_dim, " values per observation (proprio dim), got ",
         req.state.numel(), " for ", batch, " observation(s)");
  if (!at::isfinite(req.state).all().item<bool>()) fail(ErrorCode::Input, "state: contains NaN or Inf");
  out.proprio = head::normalize_bounds_q99(req.state, config_.proprio_stats);
  if (!device.is_cpu()) backbone_->check_token_ids(req.input_ids);  // on the host, before the copy
  // torch.Tensor(normalized) in the reference: the head reads the normalized state as float32.
  const std::vector<at::Tensor> inputs =
      to_device_packed({pixels.to(at::kFloat), req.input_ids, out.proprio.to(at::kFloat)}, device);
  out.times.preprocess = watch.lap();

  out.head = forward(inputs[0], inputs[1], inputs[2], req.reference_casts, req.trace, req.seed, &out.times);
  watch.lap();
  head::Retrieval& r = out.head.retrieval;
  const std::vector<at::Tensor> host =
      to_host_packed({out.head.normalized, r.indices, r.similarities, r.values, out.head.query_keys});
  out.head.normalized = out.normalized = host[0];
  r.indices = host[1], r.similarities = host[2], r.values = host[3], out.head.query_keys = host[4];
  out.actions = head::unnormalize_bounds_q99(out.normalized, config_.action_stats);
  out.times.head += watch.lap();  // the copy back
  return out;
}

head::HeadForwardOutput Policy::forward(const at::Tensor& pixels, const at::Tensor& input_ids, const at::Tensor& proprio,
                                        bool reference_casts, bool trace, std::optional<uint64_t> seed,
                                        StageTimes* times) const {
  const KernelReport& kernels = this->kernels();
  Stopwatch watch(device());
  model::BackboneOutput vlm = backbone_->forward(pixels, input_ids, reference_casts);
  watch.lap();
  RECORD_USER_SCOPE("m2vla::head");  // with retrieval: m2vla_bench act --profile splits the ops by these scopes
  head::HeadForwardInput in;
  // The head slices what it reads and converts it to its dtype itself: the stack stays in the VLM's dtype (a
  // bf16 -> float32 -> bf16 round trip of every hidden state is exact but costs 2 x 56 MB of traffic at full size).
  in.hidden = vlm.hidden_states;
  in.prompt_len = input_ids.size(1);
  in.proprio = proprio;
  in.reference_casts = reference_casts;
  in.mol = trace ? head::Backend::Reference : kernels.mol;
  in.retrieval = trace ? head::Backend::Reference : kernels.retrieval;
  in.trace = trace;
  in.seed = seed;
  head::HeadForwardOutput out = head_->forward(in);
  if (times) {
    times->vision = vlm.vision_ms, times->projector = vlm.projector_ms, times->llm = vlm.llm_ms;
    times->retrieval = out.retrieval_ms;
    times->head = watch.lap() - out.retrieval_ms;
  }
  return out;
}

}  // namespace m2vla
