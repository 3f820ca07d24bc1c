#include "policy.h"

#include <ATen/ATen.h>

#include "error.h"
#include "head/kernel_cases.h"
#include "timing.h"
#include "transfer.h"
#ifdef M2VLA_WITH_CUDA
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

KernelReport Policy::choose_kernels() const {
  if (device().is_cpu()) return {"cpu-fused", {}, {}};
  KernelReport report{"libtorch-ops", {}, {}};
#ifdef M2VLA_WITH_CUDA
  // What the kernels cannot take (native/cuda/kernels.h) keeps the policy on libtorch ops without a check.
  const auto& dims = head_->dims();
  std::ostringstream limits;
  if (head_->options().dtype != at::kBFloat16) limits << "they read bfloat16, the policy runs in " << head_->options().dtype;
  else if (dims.chunk > M2VLA_MOL_MAX_QUERIES || dims.head_dim > M2VLA_MOL_MAX_HEAD_DIM)
    limits << "MoL attention takes chunks <= " << M2VLA_MOL_MAX_QUERIES << " and head_dim <= " << M2VLA_MOL_MAX_HEAD_DIM;
  else if (dims.key_dim % 8 != 0 || head_->options().top_k > M2VLA_TOPK_MAX)
    limits << "top-R retrieval takes key_dim % 8 == 0 and R <= " << M2VLA_TOPK_MAX;
  if (!limits.str().empty()) {
    report.warnings.push_back("m2vla: CUDA kernels not used on " + device().str() + " (" + limits.str() + "); using libtorch ops");
    return report;
  }
  head::KernelRegistry registry([&report](const std::string& message) { report.warnings.push_back(message); });
  bool trusted = true;
  for (const char* name : {"molAttention", "l1TopK"}) {
    const head::KernelCase c = head::kernel_case(name, device());
    const head::KernelCheck check{c.make_inputs, c.cuda, c.reference, c.tolerance, /*seed=*/0};
    trusted = registry.use_fast_path(name, [&] { return head::check_kernel(check); }) && trusted;
    report.checks.emplace_back(name, *registry.verdict(name));
  }
  if (trusted) report.path = "cuda-kernels";
#endif
  return report;
}

ActResult Policy::act(const ActRequest& req) const {
  const auto& cfg = backbone_->config();
  const c10::Device device = this->device();
  const KernelReport& kernels = this->kernels();
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

  model::BackboneOutput vlm = backbone_->forward(inputs[0], inputs[1], req.reference_casts);
  out.times.vision = vlm.vision_ms;
  out.times.projector = vlm.projector_ms;
  out.times.llm = vlm.llm_ms;
  watch.lap();

  head::HeadForwardInput in;
  in.hidden = vlm.hidden_states.to(at::kFloat);
  in.prompt_len = req.input_ids.size(1);
  in.proprio = inputs[2];
  in.reference_casts = req.reference_casts;
  in.impl = req.trace                          ? head::MolImpl::Reference
            : kernels.path == "cpu-fused"      ? head::MolImpl::Fused
            : kernels.path == "cuda-kernels"   ? head::MolImpl::Cuda
                                               : head::MolImpl::Reference;
  in.trace = req.trace;
  in.seed = req.seed;
  out.head = head_->forward(in);
  head::Retrieval& r = out.head.retrieval;
  const std::vector<at::Tensor> host =
      to_host_packed({out.head.normalized, r.indices, r.similarities, r.values, out.head.query_keys});
  out.head.normalized = out.normalized = host[0];
  r.indices = host[1], r.similarities = host[2], r.values = host[3], out.head.query_keys = host[4];
  out.actions = head::unnormalize_bounds_q99(out.normalized, config_.action_stats);
  out.times.retrieval = out.head.retrieval_ms;
  out.times.head = watch.lap() - out.head.retrieval_ms;
  return out;
}

}  // namespace m2vla
