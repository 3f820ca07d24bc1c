#include "train/trainer.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <map>
#include <set>

#include "error.h"
#include "head/msm/bank.h"
#include "timing.h"

namespace m2vla::train {
namespace {

// torch.autocast(<device type>, dtype=torch.bfloat16) for one forward. Its cache of cast weights is cleared on exit:
// the weights change after every step.
class Autocast {
 public:
  explicit Autocast(c10::DeviceType type)
      : type_(type), was_enabled_(at::autocast::is_autocast_enabled(type)), was_dtype_(at::autocast::get_autocast_dtype(type)) {
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, was_enabled_);
    at::autocast::set_autocast_dtype(type_, was_dtype_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  c10::DeviceType type_;
  bool was_enabled_;
  at::ScalarType was_dtype_;
};

void check_options(const TrainerOptions& o) {
  o.schedule.check();
  if (o.augment.enabled) o.augment.check();
  if (o.accumulation < 1) fail(ErrorCode::Input, "accum: expected at least 1 micro-batch per step, got ", o.accumulation);
  if (!(o.clip_norm >= 0)) fail(ErrorCode::Input, "clipNorm: expected 0 (off) or a positive norm, got ", o.clip_norm);
  if (!(o.memory_sample_rate >= 0 && o.memory_sample_rate <= 1))
    fail(ErrorCode::Input, "memorySampleRate: expected a probability in [0, 1], got ", o.memory_sample_rate);
  const AdamWOptions& a = o.adamw;
  if (!(a.beta1 >= 0 && a.beta1 < 1 && a.beta2 >= 0 && a.beta2 < 1))
    fail(ErrorCode::Input, "betas: expected values in [0, 1), got ", a.beta1, ", ", a.beta2);
  if (!(a.eps > 0) || !(a.weight_decay >= 0)) fail(ErrorCode::Input, "eps must be positive and weightDecay non-negative");
  if (o.distributed.world_size > 1) require_distributed(o.device);  // before any weight moves to the device
}

// Checkpoints are written from the host.
io::NamedTensors on_host(io::NamedTensors tensors) {
  for (auto& [name, t] : tensors) t = t.detach().to(at::kCPU);
  return tensors;
}

}  // namespace

Trainer::Trainer(const TrainerOptions& options)
    : options_(options), vlm_(io::load_state_dict(options.model_path)), generator_(at::detail::createCPUGenerator(options.seed)) {
  check_options(options_);
  backbone_ = std::make_shared<const model::Backbone>(options_.backbone,
                                                      model::Weights{vlm_, options_.bf16 ? at::kBFloat16 : at::kFloat,
                                                                     options_.device});
  const model::BackboneConfig& cfg = backbone_->config();
  head::HeadOptions head_options = options_.head;
  head_options.dtype = at::kFloat;
  head_options.device = options_.device;
  head_options.num_patches = cfg.num_patches();
  head_options.num_action_queries = cfg.num_action_queries;
  io::StateDict head_sd = io::load_state_dict(options_.action_head_path);
  head_ = head::ActionHead::load(head_sd, io::load_state_dict(options_.proprio_path), head_options, /*from_full=*/true);
  const head::HeadDims& d = head_->dims();
  if (d.hidden != cfg.llm.hidden_size)
    fail(ErrorCode::Shape, options_.action_head_path, ": the head's hidden size ", d.hidden, " does not fit the VLM's ",
         cfg.llm.hidden_size);
  if (d.num_blocks > cfg.llm.num_layers)
    fail(ErrorCode::Shape, options_.action_head_path, ": ", d.num_blocks, " head blocks read hidden states 1..", d.num_blocks,
         " but the VLM has ", cfg.llm.num_layers, " layers");
  for (int64_t k : head_options.key_layer_indices)
    if (k > cfg.llm.num_layers) fail(ErrorCode::Config, "keyLayerIndices: ", k, " is past the VLM's last hidden state ", cfg.llm.num_layers);

  // An ablation saves only its own tensors (the checkpoint's variant is read off them): nothing is passed through.
  std::set<std::string> trained;
  for (const auto& [name, t] : head_->action_head_state_dict()) trained.insert(name);
  for (const auto& [name, t] : head_sd.tensors)
    if (!trained.count(name) && head_options.ablation == head::Ablation::None) head_unused_.emplace_back(name, t);

  const std::vector<int64_t> aq_shape{cfg.num_action_queries, cfg.llm.hidden_size};
  const at::Tensor aq = options_.resume_action_queries_path.empty()
                             ? vlm_.get("action_queries.weight", aq_shape)
                             : io::load_state_dict(options_.resume_action_queries_path).get("action_queries.weight", aq_shape);
  action_queries_ = aq.to(options_.device, at::kFloat).clone();

  std::vector<Parameter> params{{"action_queries.weight", action_queries_}};
  for (const head::HeadParameter& p : head_->parameters()) params.push_back({p.name, p.tensor});
  for (Parameter& p : params) p.tensor.requires_grad_(true);
  if (head_options.objective == head::Objective::Denoise)
    noise_schedule_ = head::NoiseSchedule::squaredcos_cap_v2(head_options.denoise.train_steps);
  optimizer_ = std::make_unique<AdamW>(std::move(params), options_.adamw);
  if (!options_.resume_state_path.empty()) restore(io::load_state_dict(options_.resume_state_path));
  if (options_.distributed.world_size > 1) {
    options_.distributed.device = options_.device;  // Gloo on the CPU, NCCL on a GPU
    group_ = std::make_unique<ProcessGroup>(options_.distributed);
    std::vector<at::Tensor> weights;
    for (const Parameter& p : optimizer_->parameters()) weights.push_back(p.tensor);
    group_->broadcast(weights);
  }
}

int64_t Trainer::num_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : optimizer_->parameters()) n += p.tensor.numel();
  return n;
}

void Trainer::check(const MicroBatch& b) const {
  const model::BackboneConfig& cfg = backbone_->config();
  const head::HeadDims& d = head_->dims();
  const int64_t n = int64_t(b.prompts.size());
  if (n < 1) fail(ErrorCode::Input, "microBatch: no samples");
  if (int64_t(b.frames.size()) != n * cfg.num_images)
    fail(ErrorCode::Shape, "microBatch.frames: expected ", n * cfg.num_images, " (", cfg.num_images, " per sample), got ", b.frames.size());
  for (int64_t i = 0; i < n; ++i)
    if (b.prompts[i].empty()) fail(ErrorCode::Input, "microBatch.promptIds: sample ", i, " has an empty prompt");
  if (b.proprio.sizes() != at::IntArrayRef({n, d.proprio_dim}))
    fail(ErrorCode::Shape, "microBatch.proprio: expected [", n, ", ", d.proprio_dim, "], got ", b.proprio.sizes());
  if (b.actions.sizes() != at::IntArrayRef({n, d.chunk, d.action_dim}))
    fail(ErrorCode::Shape, "microBatch.actions: expected [", n, ", ", d.chunk, ", ", d.action_dim, "], got ", b.actions.sizes());
}

at::Tensor Trainer::pixels(const MicroBatch& batch, bool augment) {
  const model::BackboneConfig& cfg = backbone_->config();
  at::NoGradGuard no_grad;
  std::vector<model::ImageView> views;
  for (size_t i = 0; i < batch.frames.size(); ++i) {
    const Frame& f = batch.frames[i];
    const std::string camera = i % cfg.num_images == 0 ? "primary" : "wrist";
    views.push_back({f.rgb.data(), f.rgb.size(), f.width, f.height,
                     "sample " + std::to_string(i / cfg.num_images) + " " + camera + " frame"});
  }
  if (!augment || !options_.augment.enabled) return model::preprocess_images(views, cfg.num_images, options_.preprocess);
  // Drawn in frame order on this thread (the generator's sequence must not depend on scheduling), applied in parallel.
  const int64_t n = int64_t(views.size()), size = options_.preprocess.size;
  for (const model::ImageView& v : views) model::check_image(v);  // a bad frame fails here, not inside a worker thread
  const std::vector<AugmentParams> draws = draw_augmentations(options_.augment, n, generator_);
  std::vector<std::vector<uint8_t>> augmented(views.size());
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) augmented[i] = augment_frame(views[i], size, draws[i]);
  });
  for (int64_t i = 0; i < n; ++i) views[i] = {augmented[i].data(), augmented[i].size(), size, size, views[i].name};
  return model::preprocess_images(views, cfg.num_images, options_.preprocess);
}

head::HeadBatch Trainer::head_batch(const MicroBatch& batch, bool augment, at::Tensor& query_keys) {
  const model::BackboneConfig& cfg = backbone_->config();
  const int64_t n = int64_t(batch.prompts.size()), np = cfg.num_patches(), nt = cfg.num_action_queries;
  const std::vector<int64_t>& key_layers = options_.head.key_layer_indices;
  const at::Tensor pixels = this->pixels(batch, augment);

  // The VLM runs a batch only over prompts of one length (there is no padding mask): one pass per length.
  std::map<size_t, std::vector<int64_t>> by_length;
  for (int64_t i = 0; i < n; ++i) by_length[batch.prompts[i].size()].push_back(i);
  std::vector<at::Tensor> vision, queries, keys;
  std::vector<int64_t> order;
  for (const auto& [length, members] : by_length) {
    const int64_t g = int64_t(members.size()), p = int64_t(length);
    at::Tensor ids = at::empty({g, p}, at::kLong);
    for (int64_t j = 0; j < g; ++j)
      std::copy(batch.prompts[members[j]].begin(), batch.prompts[members[j]].end(), ids[j].data_ptr<int64_t>());
    at::Tensor px = pixels.index_select(0, at::tensor(members, at::kLong)).to(options_.device);
    ids = ids.to(options_.device);
    const int64_t last_prompt = np + p - 1;  // the first position of the shifted action-query slice
    if (options_.prefix_trick) {
      model::Backbone::Prefix prefix;
      {
        at::NoGradGuard no_grad;
        prefix = backbone_->prefix(px, ids);
      }
      vision.push_back(prefix.hidden_states.narrow(2, 0, np));
      at::Tensor q = prefix.hidden_states.narrow(2, last_prompt, 1);
      if (nt > 1) {
        at::Tensor embeds = action_queries_.narrow(0, 0, nt - 1).unsqueeze(0).expand({g, nt - 1, cfg.llm.hidden_size});
        q = at::cat({q, backbone_->hidden_states_after(prefix, embeds)}, 2);
      }
      queries.push_back(q);
      keys.push_back(head::msm_query_keys(prefix.hidden_states, np, key_layers));
    } else {
      at::Tensor hs = backbone_->hidden_states(px, ids, action_queries_);
      vision.push_back(hs.narrow(2, 0, np));
      queries.push_back(hs.narrow(2, last_prompt, nt));
      keys.push_back(head::msm_query_keys(hs, np, key_layers).detach());
    }
    order.insert(order.end(), members.begin(), members.end());
  }

  // Back to the micro-batch's order (targets and bank rows follow it).
  at::Tensor inverse = at::empty({n}, at::kLong);
  for (int64_t i = 0; i < n; ++i) inverse.data_ptr<int64_t>()[order[i]] = i;
  inverse = inverse.to(options_.device);
  head::HeadBatch out;
  out.input.vision = at::cat(vision, 1).index_select(1, inverse).unbind(0);
  out.input.action_queries = at::cat(queries, 1).index_select(1, inverse).unbind(0);
  out.proprio = batch.proprio.to(options_.device);
  query_keys = at::cat(keys, 0).index_select(0, inverse);
  return out;
}

at::Tensor Trainer::loss(const MicroBatch& batch, bool fill_bank) {
  check(batch);
  const head::HeadDims& d = head_->dims();
  const int64_t n = int64_t(batch.prompts.size());
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  const at::Tensor actions = batch.actions.to(options_.device);
  at::Tensor query_keys, prediction, target;
  {
    std::optional<Autocast> autocast;
    if (options_.bf16) autocast.emplace(options_.device.type());
    head::HeadBatch hb = head_batch(batch, /*augment=*/true, query_keys);
    hb.retrieved = head_->retrieve_values(query_keys);
    head::TrainingNoise noise;
    if (options_.head.objective == head::Objective::L1) {
      // The reference's learnable_random_perturbations: a fresh N(0, 0.02) tensor, never optimized.
      // Every draw comes from the CPU generator (then moves): a seed gives the same run on any device.
      noise.latent = at::randn({d.chunk, d.action_dim * d.hidden}, generator_, f32).mul_(0.02).to(options_.device);
      target = actions;
    } else {
      const int64_t rows = n * world_size();  // the global batch's draws, then this rank's rows (trainer.h)
      noise.timesteps = own_rows(at::randint(0, noise_schedule_->train_steps(), {rows}, generator_, at::TensorOptions().dtype(at::kLong)), n)
                            .to(options_.device);
      target = own_rows(at::randn({rows, d.chunk, d.action_dim}, generator_, f32), n).to(options_.device);
      noise.noisy_actions = noise_schedule_->add_noise(actions, target, noise.timesteps);
    }
    prediction = head_->train_forward(hb, noise);
  }
  at::Tensor diff = prediction.to(at::kFloat) - target;
  at::Tensor value = options_.head.objective == head::Objective::L1 ? diff.abs().mean() : diff.pow(2).mean();
  // The reference offers the batch to the bank after querying it, so a sample never retrieves itself.
  const bool offer = at::rand({1}, generator_, f32).item<double>() < options_.memory_sample_rate;
  if (fill_bank && offer && head_->uses_msm()) {
    at::Tensor keys = query_keys, values = actions.reshape({n, -1});
    if (group_) {  // every rank appends the global batch's entries, in rank order
      keys = group_->all_gather(keys);
      values = group_->all_gather(values);
    }
    head_->mutable_bank().append(keys, values);
  }
  return value;
}

StepMetrics Trainer::step(const std::vector<MicroBatch>& micro, const std::function<void(size_t, double)>& on_micro,
                          bool stop_requested) {
  if (int64_t(micro.size()) != options_.accumulation)
    fail(ErrorCode::Input, "step: expected ", options_.accumulation, " micro-batches (accum), got ", micro.size());
  Stopwatch watch;
  if (group_) check_same_sizes(micro);
  double total = 0;
  for (size_t i = 0; i < micro.size(); ++i) {
    at::Tensor value = loss(micro[i], /*fill_bank=*/true);
    (value / double(micro.size())).backward();
    const double v = value.item<double>();
    total += v;
    if (on_micro) on_micro(i, v);
  }
  StepMetrics m;
  m.loss = total / double(micro.size());
  m.stop = stop_requested;
  if (group_) {
    std::vector<at::Tensor> grads;
    for (const Parameter& p : optimizer_->parameters())
      if (p.tensor.grad().defined()) grads.push_back(p.tensor.mutable_grad());
    at::Tensor agreed = at::tensor({m.loss, stop_requested ? 1.0 : 0.0}, at::kDouble);
    grads.push_back(agreed);  // its own bucket (float64): one more collective, not one per value
    group_->average(grads);
    m.loss = agreed[0].item<double>();
    m.stop = agreed[1].item<double>() > 0;
  }
  if (!std::isfinite(m.loss)) {
    optimizer_->zero_grad();
    fail(ErrorCode::Native, "step ", step_ + 1, ": the loss is ", m.loss, "; the weights were not updated");
  }
  m.grad_norm = optimizer_->clip_grad_norm(options_.clip_norm);
  m.lr = options_.schedule.lr(step_);
  optimizer_->step(m.lr);
  m.step = ++step_;
  m.ms = watch.lap();
  if (group_) m.collective_ms = group_->take_collective_ms();
  return m;
}

void Trainer::check_same_sizes(const std::vector<MicroBatch>& micro) {
  // The collectives need the same shapes on every rank (lib/train.ts's loader gives every rank b samples).
  at::Tensor sizes = at::empty({int64_t(micro.size())}, at::kLong);
  for (size_t i = 0; i < micro.size(); ++i) sizes.data_ptr<int64_t>()[i] = int64_t(micro[i].prompts.size());
  at::Tensor all = group_->all_gather(sizes).view({world_size(), -1});
  if (!all.eq(sizes.unsqueeze(0)).all().item<bool>())
    fail(ErrorCode::Input, "step: the ranks' micro-batches differ in size (samples per micro-batch and rank: ", all, ")");
}

io::NamedTensors Trainer::gradients(const MicroBatch& batch) {
  optimizer_->zero_grad();
  loss(batch, /*fill_bank=*/false).backward();
  io::NamedTensors out;
  for (const Parameter& p : optimizer_->parameters())
    out.emplace_back(p.name, (p.tensor.grad().defined() ? p.tensor.grad().clone() : at::zeros_like(p.tensor)).to(at::kCPU));
  optimizer_->zero_grad();
  return out;
}

at::Tensor Trainer::predict(const MicroBatch& batch, std::optional<uint64_t> seed) {
  check(batch);
  at::NoGradGuard no_grad;
  at::Tensor query_keys;
  head::HeadBatch hb = head_batch(batch, /*augment=*/false, query_keys);
  hb.retrieved = head_->retrieve_values(query_keys);
  return head_->predict(hb, seed).to(at::kCPU);
}

io::NamedTensors Trainer::action_head_state_dict() const {
  io::NamedTensors sd = on_host(head_->action_head_state_dict());
  sd.insert(sd.end(), head_unused_.begin(), head_unused_.end());
  return sd;
}

io::NamedTensors Trainer::proprio_state_dict() const { return on_host(head_->proprio_state_dict()); }

io::NamedTensors Trainer::action_queries_state_dict() const { return {{"action_queries.weight", action_queries_.detach().to(at::kCPU)}}; }

io::NamedTensors Trainer::vlm_state_dict() const {
  io::NamedTensors sd;
  for (const auto& [name, t] : vlm_.tensors)
    sd.emplace_back(name, name == "action_queries.weight" ? action_queries_.detach().to(at::kCPU, t.scalar_type()) : t);
  return sd;
}

io::NamedTensors Trainer::training_state() const {
  io::NamedTensors state = on_host(optimizer_->state());
  state.emplace_back("step", at::scalar_tensor(step_, at::kLong));
  state.emplace_back("generator", generator_.get_state());
  return state;
}

void Trainer::restore(const io::StateDict& state) {
  optimizer_->load_state(state);
  step_ = state.get("step", {}).item<int64_t>();
  const at::Tensor& g = state.get("generator");
  try {
    generator_.set_state(g.contiguous());
  } catch (const c10::Error& e) {
    fail(ErrorCode::Checkpoint, state.source, ": tensor 'generator' is not a CPU generator state (", e.what_without_backtrace(), ")");
  }
}

}  // namespace m2vla::train
