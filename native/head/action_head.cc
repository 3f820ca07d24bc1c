#include "head/action_head.h"
#include "timing.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <random>

#include "error.h"
#include "head/head_input.h"

namespace m2vla::head {
namespace {

const at::Tensor& matrix(const io::StateDict& sd, const std::string& name) {
  const at::Tensor& t = sd.get(name);
  if (t.dim() != 2) fail(ErrorCode::Checkpoint, sd.source, ": tensor '", name, "' should be a matrix, got shape ", t.sizes());
  return t;
}

// The checkpoint's tensors on `device`, each copied once, so everything built from them is there too.
io::StateDict placed(const io::StateDict& sd, const c10::Device& device) {
  io::StateDict out{sd.source, {}};
  for (const auto& [name, t] : sd.tensors) out.tensors.emplace(name, t.to(device));
  return out;
}

void check_options(const HeadOptions& o) {
  if (o.key_layer_indices.empty()) fail(ErrorCode::Config, "keyLayerIndices: expected at least one hidden-state index");
  for (int64_t k : o.key_layer_indices)
    if (k < 0) fail(ErrorCode::Config, "keyLayerIndices: ", k, " is not a hidden-state index");
  if (o.top_k < 1) fail(ErrorCode::Config, "topK: expected at least 1, got ", o.top_k);
  if (o.num_patches < 1) fail(ErrorCode::Config, "numPatches: expected at least 1, got ", o.num_patches);
  if (o.num_action_queries < 1) fail(ErrorCode::Config, "numActionQueries: expected at least 1, got ", o.num_action_queries);
}

// Which variant a checkpoint holds: MoL blocks have k_adapter, the MSM has memory_value_proj.
Ablation checkpoint_ablation(const io::StateDict& sd) {
  const bool mol = sd.has("model.mlp_resnet_blocks.0.k_adapter.weight"), msm = sd.has("memory_value_proj.weight");
  if (!mol && !msm)
    fail(ErrorCode::Checkpoint, sd.source, ": neither MoL blocks (model.mlp_resnet_blocks.0.k_adapter) nor an MSM ",
         "(memory_value_proj): not an M²-VLA head or one of its ablations");
  return !mol ? Ablation::NoMol : !msm ? Ablation::NoMsm : Ablation::None;
}

// A dim the checkpoint shows (`found`, 0 if it does not) and the run directory may state (`stated`, 0 if not).
int64_t stated_dim(const io::StateDict& sd, const char* what, int64_t found, int64_t stated, Ablation ablation) {
  if (found > 0 && stated > 0 && found != stated)
    fail(ErrorCode::Checkpoint, sd.source, ": the checkpoint's ", what, " is ", found, " but the run configuration states ", stated);
  if (found > 0) return found;
  if (stated < 1)
    fail(ErrorCode::Config, sd.source, ": a '", ablation_name(ablation), "' head does not show its ", what,
         "; the run directory must state it (config.json \"m2vla_head\")");
  return stated;
}

}  // namespace

const char* ablation_name(Ablation a) {
  switch (a) {
    case Ablation::NoMol: return "no-mol";
    case Ablation::NoMsm: return "no-msm";
    default: return "none";
  }
}

std::shared_ptr<ActionHead> ActionHead::load(const std::string& action_head_path, const std::string& proprio_path,
                                             const HeadOptions& options) {
  return load(io::load_state_dict(action_head_path), io::load_state_dict(proprio_path), options);
}

std::shared_ptr<ActionHead> ActionHead::load(const io::StateDict& sd_in, const io::StateDict& proprio_in,
                                             const HeadOptions& options, bool from_full) {
  check_options(options);
  const bool on_cpu = options.device.is_cpu();
  const io::StateDict sd = on_cpu ? sd_in : placed(sd_in, options.device);
  const io::StateDict proprio = on_cpu ? proprio_in : placed(proprio_in, options.device);
  const at::ScalarType dtype = options.dtype;
  std::shared_ptr<ActionHead> head(new ActionHead());
  head->options_ = options;
  HeadDims& d = head->dims_;

  const at::Tensor& fc2 = matrix(sd, "model.fc2.weight");
  d.action_dim = fc2.size(0);
  d.hidden = fc2.size(1);
  const int64_t D = d.hidden;
  while (sd.has("model.mlp_resnet_blocks." + std::to_string(d.num_blocks) + ".q_proj.weight")) ++d.num_blocks;
  if (d.num_blocks == 0) fail(ErrorCode::Checkpoint, sd.source, ": no 'model.mlp_resnet_blocks.0.*' (not an M²-VLA action head?)");
  const Ablation found = checkpoint_ablation(sd), ablation = options.ablation;
  if (found != ablation && !(from_full && found == Ablation::None))
    fail(ErrorCode::Checkpoint, sd.source, ": holds a '", ablation_name(found), "' head (ablation), but '", ablation_name(ablation),
         "' was requested; load it with ablation '", ablation_name(found), "'");
  const bool mol_tensors = found != Ablation::NoMol, msm_tensors = found != Ablation::NoMsm;
  d.num_heads = stated_dim(sd, "head count", mol_tensors ? matrix(sd, "model.mlp_resnet_blocks.0.k_adapter.weight").size(0) - D : 0,
                           options.num_heads, found);
  d.head_dim = d.num_heads > 0 ? D / d.num_heads : 0;
  int64_t chunk = 0;
  if (msm_tensors) {
    const at::Tensor& mem_proj = matrix(sd, "memory_value_proj.weight");
    if (mem_proj.size(0) % D != 0)
      fail(ErrorCode::Checkpoint, sd.source, ": 'memory_value_proj.weight' has ", mem_proj.size(0), " rows, expected chunk x ", D);
    chunk = mem_proj.size(0) / D;
  }
  d.chunk = stated_dim(sd, "chunk", chunk, options.chunk, found);
  d.key_dim = int64_t(options.key_layer_indices.size()) * D;

  load_params(sd, "", latent_table(), param_dims(d), dtype, latent_slots(*head));
  load_params(sd, "", output_table(), param_dims(d), dtype, output_slots(*head));
  // The initial latent is zeros, so layer_norm1's output is its bias: the latent is one constant row.
  head->x0_ = head->initial_latent();
  for (int64_t i = 0; i < d.num_blocks; ++i) {
    const std::string prefix = "model.mlp_resnet_blocks." + std::to_string(i) + ".";
    if (ablation != Ablation::NoMol)
      head->blocks_.push_back(MolBlock::load(sd, prefix, D, d.num_heads, dtype));
    else if (found == Ablation::None)
      head->cross_blocks_.push_back(CrossBlock::from_mol(sd, prefix, D, d.num_heads, dtype));
    else
      head->cross_blocks_.push_back(CrossBlock::load(sd, prefix, D, d.num_heads, dtype));
  }
  const auto table = [&](int64_t positions) {
    return RopeTable::make(positions, d.head_dim, at::TensorOptions().device(options.device).dtype(dtype));
  };
  head->tables_ = {table(d.chunk), table(options.num_action_queries + 1), table(options.num_patches)};
  if (ablation == Ablation::NoMol)
    head->token_rope_ = table(options.num_patches + options.num_action_queries + 1);
  if (ablation != Ablation::NoMsm) {
    load_params(sd, "", msm_table(), param_dims(d), dtype, msm_slots(*head));
    head->bank_ = MemoryBank::load(sd, d.key_dim, d.chunk * d.action_dim);
  } else {
    head->bank_ = MemoryBank(0, d.key_dim, d.chunk * d.action_dim);
  }
  d.bank_capacity = head->bank_.capacity();
  if (options.objective == Objective::Denoise) {
    head->denoise_ = DenoiseModule::load_or_init(sd, D, d.action_dim, options.denoise, dtype, options.device);
    head->schedule_ = NoiseSchedule::squaredcos_cap_v2(options.denoise.train_steps);
    head->ddim_steps_ = head->schedule_->ddim_timesteps(options.denoise.inference_steps);
  }

  head->proprio_ = ProprioProjector::load(proprio, D, dtype);
  d.proprio_dim = head->proprio_.proprio_dim();
  return head;
}

at::Tensor ActionHead::initial_latent(const at::Tensor& z) const {
  return at::relu(fc1(layer_norm1(z.defined() ? z : at::zeros({1, 1, layer_norm1.weight.size(0)}, layer_norm1.weight.options()))));
}

at::Tensor ActionHead::memory(const at::Tensor& retrieved) const {
  return uses_msm() ? memory_value_proj(retrieved.to(options_.dtype)) : at::Tensor();
}

at::Tensor ActionHead::retrieve_values(const at::Tensor& query_keys) const {
  return uses_msm() ? bank_.query(query_keys, options_.top_k).values : at::Tensor();
}

void ActionHead::check_input(const HeadForwardInput& in) const {
  const at::Tensor& h = in.hidden;
  if (h.dim() != 4) fail(ErrorCode::Shape, "hiddenShape: expected [L+1, B, seq, D], got ", h.sizes());
  if (h.size(3) != dims_.hidden)
    fail(ErrorCode::Shape, "hiddenStates: hidden size ", h.size(3), " does not fit this head, whose checkpoint has hidden size ",
         dims_.hidden);
  if (h.size(0) < dims_.num_blocks + 1)
    fail(ErrorCode::Shape, "hiddenStates: the head has ", dims_.num_blocks, " blocks reading hidden states 1..", dims_.num_blocks,
         ", got only ", h.size(0), " hidden states");
  for (int64_t k : options_.key_layer_indices)
    if (k >= h.size(0))
      fail(ErrorCode::Shape, "hiddenStates: keyLayerIndices has ", k, " but there are only ", h.size(0), " hidden states");
  if (h.size(1) < 1) fail(ErrorCode::Shape, "hiddenStates: batch is empty");
  if (in.proprio.dim() != 2 || in.proprio.size(0) != h.size(1) || in.proprio.size(1) != dims_.proprio_dim)
    fail(ErrorCode::Shape, "proprio: expected [", h.size(1), ", ", dims_.proprio_dim, "], got ", in.proprio.sizes());
  if (in.trace && in.mol != Backend::Reference)
    fail(ErrorCode::Input, "intermediates: only the reference implementation records them");
}

at::Tensor ActionHead::network(const at::Tensor& latent, const std::vector<MolCondition>& conds, const at::Tensor& h_memory,
                               HeadTrace* trace) const {
  at::Tensor x = latent;
  if (trace) {
    trace->x0 = latent;
    trace->blocks.assign(dims_.num_blocks, BlockTrace());
  }
  for (int64_t i = 0; i < dims_.num_blocks; ++i) {
    BlockTrace* bt = trace ? &trace->blocks[i] : nullptr;
    x = options_.ablation == Ablation::NoMol
            ? cross_forward(cross_blocks_[i], x, conds[i].task, conds[i].task_tokens, h_memory, tables_.chunk, bt)
            : mol_forward(blocks_[i], x, conds[i], h_memory, tables_, bt);
  }
  return fc2(layer_norm2(x));
}

std::vector<MolCondition> ActionHead::conditions(const HeadInput& input, const at::Tensor& proprio_features,
                                                 Backend backend) const {
  const at::ScalarType dtype = options_.dtype;
  std::vector<MolCondition> conds;
  if (options_.ablation == Ablation::NoMol) {
    // Every block reads the hidden state MoL's last block reads (index = number of blocks).
    const size_t last = cross_blocks_.size();
    at::Tensor tokens = at::cat({input.vision[last].to(dtype), input.action_queries[last].to(dtype), proprio_features.unsqueeze(1)}, 1);
    for (const CrossBlock& b : cross_blocks_) conds.push_back({backend, {}, cross_keys(b, tokens, token_rope_), {}, tokens});
    return conds;
  }
  for (size_t i = 0; i < blocks_.size(); ++i) {
    at::Tensor h_adapter = at::cat({input.action_queries[i + 1].to(dtype), proprio_features.unsqueeze(1)}, 1);
    conds.push_back(mol_condition(blocks_[i], h_adapter, input.vision[i + 1].to(dtype), tables_, backend));
  }
  return conds;
}

at::Tensor ActionHead::decode(const at::Tensor& x0, const std::vector<MolCondition>& conds, const at::Tensor& h_memory,
                              std::optional<uint64_t> seed, HeadTrace* trace) const {
  if (options_.objective == Objective::L1) return network(x0, conds, h_memory, trace);
  const at::ScalarType dtype = options_.dtype;
  at::Generator gen = at::detail::createCPUGenerator(seed ? *seed : std::random_device{}());
  // The sample stays float32 across steps; only the network runs in the head's dtype.
  // Drawn on the CPU whatever the device, so a seed gives the same sample everywhere.
  at::Tensor actions =
      at::randn({x0.size(0), dims_.chunk, dims_.action_dim}, gen, at::TensorOptions().dtype(at::kFloat)).to(x0.device());
  const std::vector<int64_t>& steps = ddim_steps_;
  for (size_t s = 0; s < steps.size(); ++s) {
    at::Tensor t = at::full({1}, steps[s], x0.options().dtype(at::kLong));
    at::Tensor eps = network(x0 + (*denoise_)(actions.to(dtype), t), conds, h_memory, trace).to(at::kFloat);
    const int64_t prev = s + 1 < steps.size() ? steps[s + 1] : -1;
    actions = schedule_->ddim_step(actions, eps, steps[s], prev, options_.denoise.clip_sample);
  }
  return actions;
}

HeadForwardOutput ActionHead::forward(const HeadForwardInput& in) const {
  check_input(in);
  const at::ScalarType dtype = options_.dtype;
  const int64_t B = in.hidden.size(1);
  HeadInput input = slice_head_input(in.hidden, options_.num_patches, in.prompt_len, options_.num_action_queries,
                                     in.reference_casts, dtype);
  at::Tensor proprio = in.reference_casts ? in.proprio.to(at::kBFloat16) : in.proprio;
  at::Tensor proprio_features = proprio_(proprio.to(dtype));

  HeadForwardOutput out;
  Stopwatch watch(options_.device);
  at::Tensor h_memory;
  if (uses_msm()) {
    out.query_keys = msm_query_keys(in.hidden, options_.num_patches, options_.key_layer_indices);
    std::shared_lock lock(bank_mutex_);
    out.retrieval = in.retrieval == Backend::CpuFused ? bank_.query(out.query_keys, options_.top_k)
                    : in.retrieval == Backend::Cuda   ? bank_.query_cuda(out.query_keys, options_.top_k)
                                                      : bank_.query_reference(out.query_keys, options_.top_k);
    h_memory = memory(out.retrieval.values);
  } else {
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(options_.device);
    out.query_keys = at::zeros({B, 0}, f32);
    out.retrieval = {at::zeros({B, 0}, f32.dtype(at::kLong)), at::zeros({B, 0}, f32), at::zeros({B, 0, bank_.value_dim()}, f32)};
  }
  out.retrieval_ms = watch.lap();

  std::vector<MolCondition> conds = conditions(input, proprio_features, in.mol);
  HeadTrace trace;
  HeadTrace* tp = in.trace ? &trace : nullptr;
  out.normalized = decode(x0_.expand({B, dims_.chunk, dims_.hidden}), conds, h_memory, in.seed, tp).to(at::kFloat);
  if (tp) {
    trace.input_aq = at::stack(input.action_queries, 1);
    trace.proprio_features = proprio_features;
    trace.h_memory = h_memory;
    out.trace = std::move(trace);
  }
  return out;
}

}  // namespace m2vla::head
