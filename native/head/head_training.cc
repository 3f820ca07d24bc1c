// The training side of ActionHead (declared in action_head.h): its learnable tensors, the training-mode forward the
// trainer differentiates, inference from already sliced inputs, and the reference state dicts checkpoints store.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "error.h"
#include "head/action_head.h"

namespace m2vla::head {
namespace {

const std::string kBlockPrefix = "model.mlp_resnet_blocks.";

}  // namespace

// The tensors' handles: the optimizer updates them in place, so the head trains through a const reference.
std::vector<HeadParameter> ActionHead::parameters() const {
  std::vector<HeadParameter> p;
  append_parameters(p, "", latent_table(), latent_slots(*this));
  for (size_t i = 0; i < cross_blocks_.size(); ++i)
    append_parameters(p, kBlockPrefix + std::to_string(i) + ".", cross_block_table(), CrossBlock::slots(cross_blocks_[i]));
  for (size_t i = 0; i < blocks_.size(); ++i)
    append_parameters(p, kBlockPrefix + std::to_string(i) + ".", mol_block_table(), MolBlock::slots(blocks_[i]));
  append_parameters(p, "", output_table(), output_slots(*this));
  if (uses_msm()) append_parameters(p, "", msm_table(), msm_slots(*this));
  append_parameters(p, "proprio_projector.", proprio_table(), ProprioProjector::slots(proprio_));
  if (denoise_) append_parameters(p, "", denoise_table(), DenoiseModule::slots(*denoise_));
  return p;
}

at::Tensor ActionHead::train_forward(const HeadBatch& batch, const TrainingNoise& noise) const {
  const at::ScalarType dtype = options_.dtype;
  const int64_t B = batch.proprio.size(0), C = dims_.chunk, D = dims_.hidden;
  at::Tensor proprio_features = proprio_(batch.proprio.to(dtype));
  at::Tensor h_memory = memory(batch.retrieved);
  // The plain path: the fused one reads raw pointers and writes in place, which autograd cannot record.
  std::vector<MolCondition> conds = conditions(batch.input, proprio_features, Backend::Reference);
  at::Tensor latent;
  if (options_.objective == Objective::L1) {
    if (!noise.latent.defined() || noise.latent.sizes() != at::IntArrayRef({C, dims_.action_dim * D}))
      fail(ErrorCode::Input, "train_forward: the L1 objective needs a [", C, ", ", dims_.action_dim * D, "] latent perturbation");
    // Reference training: the zero latent plus one perturbation shared by the batch, then layer_norm1 → fc1 → ReLU.
    latent = initial_latent(noise.latent.to(dtype).unsqueeze(0)).expand({B, C, D});
  } else {
    if (!noise.noisy_actions.defined() || !noise.timesteps.defined())
      fail(ErrorCode::Input, "train_forward: the denoise objective needs noisy actions and timesteps");
    latent = initial_latent() + (*denoise_)(noise.noisy_actions.to(dtype), noise.timesteps);
  }
  return network(latent, conds, h_memory, nullptr);
}

at::Tensor ActionHead::predict(const HeadBatch& batch, std::optional<uint64_t> seed) const {
  at::NoGradGuard no_grad;  // the fused path writes in place
  const at::ScalarType dtype = options_.dtype;
  const int64_t B = batch.proprio.size(0);
  at::Tensor proprio_features = proprio_(batch.proprio.to(dtype));
  at::Tensor h_memory = memory(batch.retrieved);
  std::vector<MolCondition> conds = conditions(batch.input, proprio_features, Backend::CpuFused);
  // From the current weights: x0_ is the latent of the weights as loaded.
  return decode(initial_latent().expand({B, dims_.chunk, dims_.hidden}), conds, h_memory, seed, nullptr).to(at::kFloat);
}

io::NamedTensors ActionHead::action_head_state_dict() const {
  const ParamDims dims = param_dims(dims_, denoise_ ? denoise_->time_embed_dim : 0);
  io::NamedTensors sd;
  if (uses_msm()) {
    // The msm_table()'s pass-through entries: the bank as it is now.
    sd.emplace_back(kBankKeys, bank_.keys());
    sd.emplace_back(kBankValues, bank_.values());
    sd.emplace_back(kBankSize, at::scalar_tensor(bank_.size(), at::kLong));
    append_state_dict(sd, "", msm_table(), dims, msm_slots(*this));
  }
  append_state_dict(sd, "", latent_table(), dims, latent_slots(*this));
  for (size_t i = 0; i < cross_blocks_.size(); ++i)
    append_state_dict(sd, kBlockPrefix + std::to_string(i) + ".", cross_block_table(), dims, CrossBlock::slots(cross_blocks_[i]));
  for (size_t i = 0; i < blocks_.size(); ++i)
    append_state_dict(sd, kBlockPrefix + std::to_string(i) + ".", mol_block_table(), dims, MolBlock::slots(blocks_[i]));
  append_state_dict(sd, "", output_table(), dims, output_slots(*this));
  if (denoise_) append_state_dict(sd, "", denoise_table(), dims, DenoiseModule::slots(*denoise_));
  return sd;
}

io::NamedTensors ActionHead::proprio_state_dict() const {
  io::NamedTensors sd;
  append_state_dict(sd, "", proprio_table(), param_dims(dims_), ProprioProjector::slots(proprio_));
  return sd;
}

}  // namespace m2vla::head
