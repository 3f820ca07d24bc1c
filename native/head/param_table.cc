#include "head/param_table.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "error.h"

namespace m2vla::head {

using K = ParamKind;
using R = ParamRole;
using I = ParamInit;

const char* const kBankKeys = "memory_bank.keys";
const char* const kBankValues = "memory_bank.values";
const char* const kBankSize = "memory_bank.size";

// ---- The tables (SPEC §3: the reference MLPResNetBlock_Pro, L1RegressionActionHead, MemoryBank, ProprioProjector) ----

const ParamTable& mol_block_table() {
  static const ParamTable t{"MoL block", {
      {"q_proj", K::Linear, {"D", "D"}, R::Trained, "qkv_self", 0},
      {"k_self", K::Linear, {"D", "D"}, R::Trained, "qkv_self", 1},
      {"v_self", K::Linear, {"D", "D"}, R::Trained, "qkv_self", 2},
      {"v_adapter", K::Linear, {"D", "D"}, R::Trained, "kv_adapter", 1},
      {"k_task", K::Linear, {"D", "D"}, R::Trained, "kv_task", 0},
      {"v_task", K::Linear, {"D", "D"}, R::Trained, "kv_task", 1},
      {"k_memory", K::Linear, {"D", "D"}, R::Unused},
      {"v_memory", K::Linear, {"D", "D"}, R::Unused},
      {"o_proj", K::Linear, {"D", "D"}, R::Trained},
      // D key rows, then one gate row per head (the head-wise gate): the head count is read off its rows.
      {"k_adapter", K::Linear, {"D+H", "D"}, R::Trained, "kv_adapter", 0},
      {"film_gen.0", K::Linear, {"2*D", "D"}, R::Unused},
      {"ffn.0", K::LayerNorm, {"D"}, R::Trained, nullptr, 0, I::One},
      {"ffn.1", K::Linear, {"D", "D"}},
      {"gating_factor", K::Tensor, {"1"}, R::Trained, nullptr, 0, I::Small, I::Zero, true},
  }};
  return t;
}

const ParamTable& cross_block_table() {
  static const ParamTable t{"cross block", {
      {"q_proj", K::Linear, {"D", "D"}},
      {"k_last", K::Linear, {"D", "D"}, R::Trained, "kv_last", 0, I::W, I::Zero, false, "k_task"},
      {"v_last", K::Linear, {"D", "D"}, R::Trained, "kv_last", 1, I::W, I::Zero, false, "v_task"},
      {"o_proj", K::Linear, {"D", "D"}},
      {"ffn.1", K::Linear, {"D", "D"}},
      {"ffn.0", K::LayerNorm, {"D"}, R::Trained, nullptr, 0, I::One},
  }};
  return t;
}

const ParamTable& latent_table() {
  // layer_norm1's bias is the whole initial latent (LN(0) = bias): random runs draw it so the latent is not constant.
  static const ParamTable t{"initial latent", {
      {"model.layer_norm1", K::LayerNorm, {"A*D"}, R::Trained, nullptr, 0, I::One, I::Small},
      {"model.fc1", K::Linear, {"D", "A*D"}},
  }};
  return t;
}

const ParamTable& output_table() {
  static const ParamTable t{"output", {
      {"model.layer_norm2", K::LayerNorm, {"D"}, R::Trained, nullptr, 0, I::One},
      {"model.fc2", K::Linear, {"A", "D"}},
  }};
  return t;
}

const ParamTable& msm_table() {
  static const ParamTable t{"MSM", {
      {"memory_value_proj", K::Linear, {"C*D", "C*A"}},
      {kBankKeys, K::Tensor, {"N", "K"}, R::Passed, nullptr, 0, I::Bank},
      {kBankValues, K::Tensor, {"N", "C*A"}, R::Passed, nullptr, 0, I::Bank},
      {kBankSize, K::Tensor, {}, R::Passed, nullptr, 0, I::Count},
  }};
  return t;
}

const ParamTable& proprio_table() {
  static const ParamTable t{"proprio projector", {
      {"fc1", K::Linear, {"D", "P"}},
      {"fc2", K::Linear, {"D", "D"}},
  }};
  return t;
}

const ParamTable& denoise_table() {
  static const ParamTable t{"denoise", {
      {"denoise.action_in", K::Linear, {"D", "A"}, R::Trained},
      {"denoise.time_mlp.0", K::Linear, {"D", "T"}, R::Trained},
      {"denoise.time_mlp.2", K::Linear, {"D", "D"}, R::Trained},
  }};
  return t;
}

// ---- Shapes ----

ParamDims param_dims(const HeadDims& d, int64_t time_embed_dim) {
  return {d.hidden, d.num_heads, d.action_dim, d.chunk, d.proprio_dim, d.key_dim, d.bank_capacity, time_embed_dim};
}

namespace {

int64_t symbol(char c, const ParamDims& d) {
  switch (c) {
    case 'D': return d.D;
    case 'H': return d.H;
    case 'A': return d.A;
    case 'C': return d.C;
    case 'P': return d.P;
    case 'K': return d.K;
    case 'N': return d.N;
    case 'T': return d.T;
  }
  fail(ErrorCode::Native, "parameter table: unknown shape symbol '", c, "'");
}

// A sum of products of symbols and integers, e.g. "D+H", "2*D", "C*A".
int64_t eval(const std::string& expr, const ParamDims& d) {
  int64_t sum = 0, product = 1;
  for (size_t i = 0; i < expr.size();) {
    const char c = expr[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t n = 0;
      product *= std::stoll(expr.substr(i), &n);
      i += n;
      continue;
    }
    if (c == '+') sum += product, product = 1;
    else if (c != '*') product *= symbol(c, d);
    ++i;
  }
  return sum + product;
}

// The Trained entries of `group`, in stacking order.
std::vector<const ParamEntry*> members(const ParamTable& table, const char* group) {
  std::vector<const ParamEntry*> out;
  for (const ParamEntry& e : table.entries)
    if (e.role == R::Trained && group == std::string(e.group ? e.group : e.name)) out.push_back(&e);
  std::stable_sort(out.begin(), out.end(), [](const ParamEntry* a, const ParamEntry* b) { return a->part < b->part; });
  return out;
}

}  // namespace

std::vector<int64_t> param_shape(const ParamEntry& e, const ParamDims& dims) {
  std::vector<int64_t> s;
  for (const char* x : e.shape) s.push_back(eval(x, dims));
  return s;
}

// ---- Loading, parameters, export ----

void load_params(const io::StateDict& sd, const std::string& prefix, const ParamTable& table, const ParamDims& dims,
                 at::ScalarType dtype, const ParamSlots& slots, bool from_full) {
  for (const auto& [group, slot] : slots) {
    std::vector<Linear> parts;
    for (const ParamEntry* e : members(table, group)) {
      const std::string name = prefix + (from_full && e->from_full ? e->from_full : e->name);
      const std::vector<int64_t> shape = param_shape(*e, dims);
      if (e->kind == K::Linear) parts.push_back(Linear::load(sd, name, shape[0], shape[1], dtype));
      else if (e->kind == K::LayerNorm) *std::get<LayerNorm*>(slot) = LayerNorm::load(sd, name, shape[0], dtype);
      else *std::get<at::Tensor*>(slot) = sd.get(name, shape).to(e->float32 ? at::kFloat : dtype).contiguous();
    }
    if (parts.size() == 1) *std::get<Linear*>(slot) = parts[0];
    else if (!parts.empty()) *std::get<Linear*>(slot) = Linear::stack(parts);
  }
}

void append_parameters(std::vector<HeadParameter>& out, const std::string& name_prefix, const ParamTable& table,
                       const ConstParamSlots& slots) {
  for (const auto& [group, slot] : slots) {
    if (members(table, group).empty()) continue;
    const std::string name = name_prefix + group;
    if (auto* l = std::get_if<const Linear*>(&slot)) out.push_back({name + ".weight", (*l)->weight}), out.push_back({name + ".bias", (*l)->bias});
    else if (auto* n = std::get_if<const LayerNorm*>(&slot)) out.push_back({name + ".weight", (*n)->weight}), out.push_back({name + ".bias", (*n)->bias});
    else out.push_back({name, *std::get<const at::Tensor*>(slot)});
  }
}

void append_state_dict(io::NamedTensors& out, const std::string& prefix, const ParamTable& table, const ParamDims& dims,
                       const ConstParamSlots& slots) {
  for (const auto& [group, slot] : slots) {
    int64_t row = 0;  // a stack's rows, entry after entry in part order
    for (const ParamEntry* e : members(table, group)) {
      const std::string name = prefix + e->name;
      if (auto* l = std::get_if<const Linear*>(&slot)) {
        const int64_t rows = param_shape(*e, dims)[0];
        out.emplace_back(name + ".weight", (*l)->weight.detach().narrow(0, row, rows));
        out.emplace_back(name + ".bias", (*l)->bias.detach().narrow(0, row, rows));
        row += rows;
      } else if (auto* m = std::get_if<const LayerNorm*>(&slot)) {
        out.emplace_back(name + ".weight", (*m)->weight.detach());
        out.emplace_back(name + ".bias", (*m)->bias.detach());
      } else {
        out.emplace_back(name, std::get<const at::Tensor*>(slot)->detach());
      }
    }
  }
}

// ---- The released layout, for random runs ----

namespace {

void add_layout(std::vector<CheckpointTensor>& out, const std::string& prefix, const ParamTable& table, const ParamDims& dims) {
  for (const ParamEntry& e : table.entries) {
    const std::vector<int64_t> shape = param_shape(e, dims);
    if (e.kind == K::Tensor) {
      out.push_back({prefix + e.name, shape, e.init, e.role});
    } else {
      out.push_back({prefix + e.name + ".weight", shape, e.init, e.role});
      out.push_back({prefix + e.name + ".bias", {shape[0]}, e.bias_init, e.role});
    }
  }
}

}  // namespace

std::vector<CheckpointTensor> action_head_layout(const HeadDims& d, Ablation ablation) {
  const ParamDims dims = param_dims(d);
  std::vector<CheckpointTensor> out;
  add_layout(out, "", latent_table(), dims);
  const ParamTable& block = ablation == Ablation::NoMol ? cross_block_table() : mol_block_table();
  for (int64_t i = 0; i < d.num_blocks; ++i) add_layout(out, "model.mlp_resnet_blocks." + std::to_string(i) + ".", block, dims);
  add_layout(out, "", output_table(), dims);
  if (ablation != Ablation::NoMsm) add_layout(out, "", msm_table(), dims);
  return out;
}

std::vector<CheckpointTensor> proprio_layout(const HeadDims& d) {
  std::vector<CheckpointTensor> out;
  add_layout(out, "", proprio_table(), param_dims(d));
  return out;
}

const char* param_init_name(ParamInit i) {
  switch (i) {
    case I::W: return "w";
    case I::Zero: return "zero";
    case I::One: return "one";
    case I::Small: return "small";
    case I::Bank: return "bank";
    case I::Count: return "count";
  }
  return "?";
}

const char* param_role_name(ParamRole r) {
  switch (r) {
    case R::Trained: return "trained";
    case R::Passed: return "passed";
    case R::Unused: return "unused";
  }
  return "?";
}

}  // namespace m2vla::head
