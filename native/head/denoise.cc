#include "head/denoise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "error.h"

namespace m2vla::head {
namespace {

Linear init_linear(int64_t out, int64_t in, at::Generator& gen, at::ScalarType dtype) {
  const double bound = 1.0 / std::sqrt(double(in));
  at::Tensor w = at::empty({out, in}, at::kFloat).uniform_(-bound, bound, gen);
  at::Tensor b = at::empty({out}, at::kFloat).uniform_(-bound, bound, gen);
  return {w.to(dtype), b.to(dtype)};
}

}  // namespace

at::Tensor timestep_embedding(const at::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  at::Tensor freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / double(half));
  at::Tensor args = t.to(at::kFloat).unsqueeze(-1) * freqs;
  return at::cat({at::cos(args), at::sin(args)}, -1);
}

DenoiseModule DenoiseModule::load_or_init(const io::StateDict& sd, int64_t hidden, int64_t action_dim,
                                          const DenoiseConfig& config, at::ScalarType dtype, c10::Device device) {
  if (config.time_embed_dim < 2 || config.time_embed_dim % 2 != 0)
    fail(ErrorCode::Config, "denoise.timeEmbedDim: expected a positive even number, got ", config.time_embed_dim);
  DenoiseModule m;
  m.time_embed_dim = config.time_embed_dim;
  if (sd.has(std::string(denoise_table().entries[0].name) + ".weight")) {
    load_params(sd, "", denoise_table(), {.D = hidden, .A = action_dim, .T = config.time_embed_dim}, dtype, slots(m));
    return m;
  }
  at::Generator gen = at::detail::createCPUGenerator(config.init_seed);
  m.action_in = init_linear(hidden, action_dim, gen, dtype);
  m.time_fc1 = init_linear(hidden, config.time_embed_dim, gen, dtype);
  m.time_fc2 = init_linear(hidden, hidden, gen, dtype);
  for (Linear* l : {&m.action_in, &m.time_fc1, &m.time_fc2}) l->weight = l->weight.to(device), l->bias = l->bias.to(device);
  return m;
}

at::Tensor DenoiseModule::operator()(const at::Tensor& noisy_actions, const at::Tensor& t) const {
  at::Tensor emb = timestep_embedding(t, time_embed_dim).to(noisy_actions.scalar_type());
  at::Tensor time = time_fc2(at::silu(time_fc1(emb)));  // [B or 1, D]
  return action_in(noisy_actions) + time.unsqueeze(1);
}

}  // namespace m2vla::head
