// The training side of ActionHead (declared in action_head.h): its learnable tensors, the training-mode forward the
// trainer differentiates, inference from already sliced inputs, and the reference state dicts checkpoints store.
#include <ATen/ATen.h>
#include <c10/core/GradMode.h>

#include "error.h"
#include "head/action_head.h"

namespace m2vla::head {
namespace {

void add(std::vector<HeadParameter>& out, const std::string& name, const at::Tensor& weight, const at::Tensor& bias) {
  out.push_back({name + ".weight", weight});
  out.push_back({name + ".bias", bias});
}

// Rows [offset, offset + rows) of a stacked Linear under the name of the checkpoint tensor they came from.
void add_rows(io::NamedTensors& out, const std::string& name, const Linear& stack, int64_t offset, int64_t rows) {
  out.emplace_back(name + ".weight", stack.weight.detach().narrow(0, offset, rows));
  out.emplace_back(name + ".bias", stack.bias.detach().narrow(0, offset, rows));
}

void add_linear(io::NamedTensors& out, const std::string& name, const Linear& l) { add_rows(out, name, l, 0, l.out_features()); }

void add_norm(io::NamedTensors& out, const std::string& name, const LayerNorm& n) {
  out.emplace_back(name + ".weight", n.weight.detach());
  out.emplace_back(name + ".bias", n.bias.detach());
}

}  // namespace

std::vector<HeadParameter> ActionHead::parameters() const {
  std::vector<HeadParameter> p;
  add(p, "model.layer_norm1", layer_norm1.weight, layer_norm1.bias);
  add(p, "model.fc1", fc1.weight, fc1.bias);
  for (size_t i = 0; i < cross_blocks_.size(); ++i) {
    const CrossBlock& b = cross_blocks_[i];
    const std::string prefix = "model.mlp_resnet_blocks." + std::to_string(i) + ".";
    add(p, prefix + "q_proj", b.q_proj.weight, b.q_proj.bias);
    add(p, prefix + "kv_last", b.kv_last.weight, b.kv_last.bias);
    add(p, prefix + "o_proj", b.o_proj.weight, b.o_proj.bias);
    add(p, prefix + "ffn.0", b.ffn_norm.weight, b.ffn_norm.bias);
    add(p, prefix + "ffn.1", b.ffn_fc.weight, b.ffn_fc.bias);
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const MolBlock& b = blocks_[i];
    const std::string prefix = "model.mlp_resnet_blocks." + std::to_string(i) + ".";
    add(p, prefix + "qkv_self", b.qkv_self.weight, b.qkv_self.bias);
    add(p, prefix + "kv_adapter", b.kv_adapter.weight, b.kv_adapter.bias);
    add(p, prefix + "kv_task", b.kv_task.weight, b.kv_task.bias);
    add(p, prefix + "o_proj", b.o_proj.weight, b.o_proj.bias);
    p.push_back({prefix + "gating_factor", b.gating_factor});
    add(p, prefix + "ffn.0", b.ffn_norm.weight, b.ffn_norm.bias);
    add(p, prefix + "ffn.1", b.ffn_fc.weight, b.ffn_fc.bias);
  }
  add(p, "model.layer_norm2", layer_norm2.weight, layer_norm2.bias);
  add(p, "model.fc2", fc2.weight, fc2.bias);
  if (uses_msm()) add(p, "memory_value_proj", memory_value_proj.weight, memory_value_proj.bias);
  add(p, "proprio_projector.fc1", proprio_.fc1.weight, proprio_.fc1.bias);
  add(p, "proprio_projector.fc2", proprio_.fc2.weight, proprio_.fc2.bias);
  if (denoise_) {
    add(p, "denoise.action_in", denoise_->action_in.weight, denoise_->action_in.bias);
    add(p, "denoise.time_mlp.0", denoise_->time_fc1.weight, denoise_->time_fc1.bias);
    add(p, "denoise.time_mlp.2", denoise_->time_fc2.weight, denoise_->time_fc2.bias);
  }
  return p;
}

at::Tensor ActionHead::train_forward(const HeadBatch& batch, const TrainingNoise& noise) const {
  const at::ScalarType dtype = options_.dtype;
  const int64_t B = batch.proprio.size(0), C = dims_.chunk, D = dims_.hidden;
  at::Tensor proprio_features = proprio_(batch.proprio.to(dtype));
  at::Tensor h_memory = memory(batch.retrieved);
  // The plain path: the fused one reads raw pointers and writes in place, which autograd cannot record.
  std::vector<MolCondition> conds = conditions(batch.input, proprio_features, MolImpl::Reference);
  at::Tensor latent;
  if (options_.objective == Objective::L1) {
    if (!noise.latent.defined() || noise.latent.sizes() != at::IntArrayRef({C, dims_.action_dim * D}))
      fail(ErrorCode::Input, "train_forward: the L1 objective needs a [", C, ", ", dims_.action_dim * D, "] latent perturbation");
    // Reference training: the zero latent plus one perturbation shared by the batch, then layer_norm1 → fc1 → ReLU.
    latent = at::relu(fc1(layer_norm1(noise.latent.to(dtype).unsqueeze(0)))).expand({B, C, D});
  } else {
    if (!noise.noisy_actions.defined() || !noise.timesteps.defined())
      fail(ErrorCode::Input, "train_forward: the denoise objective needs noisy actions and timesteps");
    at::Tensor x0 = at::relu(fc1(layer_norm1(at::zeros({1, 1, dims_.action_dim * D}, dtype))));
    latent = x0 + (*denoise_)(noise.noisy_actions.to(dtype), noise.timesteps);
  }
  return network(latent, conds, h_memory, nullptr);
}

at::Tensor ActionHead::predict(const HeadBatch& batch, std::optional<uint64_t> seed) const {
  at::NoGradGuard no_grad;  // the fused path writes in place
  const at::ScalarType dtype = options_.dtype;
  const int64_t B = batch.proprio.size(0);
  at::Tensor proprio_features = proprio_(batch.proprio.to(dtype));
  at::Tensor h_memory = memory(batch.retrieved);
  std::vector<MolCondition> conds = conditions(batch.input, proprio_features, MolImpl::Fused);
  // From the current weights: x0_ is the latent of the weights as loaded.
  at::Tensor x0 = at::relu(fc1(layer_norm1(at::zeros({1, 1, dims_.action_dim * dims_.hidden}, dtype))));
  return decode(x0.expand({B, dims_.chunk, dims_.hidden}), conds, h_memory, seed, nullptr).to(at::kFloat);
}

io::NamedTensors ActionHead::action_head_state_dict() const {
  const int64_t D = dims_.hidden, H = dims_.num_heads;
  io::NamedTensors sd;
  if (uses_msm()) {
    sd.emplace_back("memory_bank.keys", bank_.keys());
    sd.emplace_back("memory_bank.values", bank_.values());
    sd.emplace_back("memory_bank.size", at::scalar_tensor(bank_.size(), at::kLong));
    add_linear(sd, "memory_value_proj", memory_value_proj);
  }
  add_norm(sd, "model.layer_norm1", layer_norm1);
  add_linear(sd, "model.fc1", fc1);
  for (size_t i = 0; i < cross_blocks_.size(); ++i) {
    const CrossBlock& b = cross_blocks_[i];
    const std::string prefix = "model.mlp_resnet_blocks." + std::to_string(i) + ".";
    add_linear(sd, prefix + "q_proj", b.q_proj);
    add_rows(sd, prefix + "k_last", b.kv_last, 0, D);
    add_rows(sd, prefix + "v_last", b.kv_last, D, D);
    add_linear(sd, prefix + "o_proj", b.o_proj);
    add_norm(sd, prefix + "ffn.0", b.ffn_norm);
    add_linear(sd, prefix + "ffn.1", b.ffn_fc);
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    const MolBlock& b = blocks_[i];
    const std::string prefix = "model.mlp_resnet_blocks." + std::to_string(i) + ".";
    add_rows(sd, prefix + "q_proj", b.qkv_self, 0, D);
    add_rows(sd, prefix + "k_self", b.qkv_self, D, D);
    add_rows(sd, prefix + "v_self", b.qkv_self, 2 * D, D);
    add_rows(sd, prefix + "k_adapter", b.kv_adapter, 0, D + H);
    add_rows(sd, prefix + "v_adapter", b.kv_adapter, D + H, D);
    add_rows(sd, prefix + "k_task", b.kv_task, 0, D);
    add_rows(sd, prefix + "v_task", b.kv_task, D, D);
    add_linear(sd, prefix + "o_proj", b.o_proj);
    sd.emplace_back(prefix + "gating_factor", b.gating_factor.detach());
    add_norm(sd, prefix + "ffn.0", b.ffn_norm);
    add_linear(sd, prefix + "ffn.1", b.ffn_fc);
  }
  add_norm(sd, "model.layer_norm2", layer_norm2);
  add_linear(sd, "model.fc2", fc2);
  if (denoise_) {
    add_linear(sd, "denoise.action_in", denoise_->action_in);
    add_linear(sd, "denoise.time_mlp.0", denoise_->time_fc1);
    add_linear(sd, "denoise.time_mlp.2", denoise_->time_fc2);
  }
  return sd;
}

io::NamedTensors ActionHead::proprio_state_dict() const {
  io::NamedTensors sd;
  add_linear(sd, "fc1", proprio_.fc1);
  add_linear(sd, "fc2", proprio_.fc2);
  return sd;
}

}  // namespace m2vla::head
