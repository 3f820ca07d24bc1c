// The head's checkpoint layout, declared once per module (as llama.cpp's tensor-name table drives its loader): every
// tensor's checkpoint name, its shape in terms of the dims, the in-memory stack it is loaded into, and its role.
// Loading (MolBlock::load, CrossBlock::load, ...), ActionHead::parameters(), the state-dict export and the random-run
// generator (lib/random-run.ts, through the addon's headCheckpointLayout) all read these tables, so renaming,
// reshaping or restacking a tensor is one edit in param_table.cc.
//
// Shapes are expressions over the dims: D hidden, H heads, A action dim, C chunk, P proprio dim, K key dim
// (|key layers| * D), N bank capacity, T denoise time-embedding width; "+" and "*" of symbols and integers.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "head/config.h"
#include "head/layers.h"
#include "io/state_dict.h"

namespace m2vla::head {

enum class ParamKind { Linear, LayerNorm, Tensor };  // Linear/LayerNorm: `<name>.weight` + `<name>.bias`

enum class ParamRole {
  Trained,  // loaded, learned, exported
  Passed,   // loaded and exported, not learned (the MSM bank, which MemoryBank::load reads by these names)
  Unused,   // in released checkpoints, never loaded (the reference forward does not read it); random runs write it
};

// How a random run draws it (lib/random-run.ts fill()): 'w' N(0,.02)-like, 'zero', 'one', 'small' (std .1),
// 'bank' (std .5, the first bankFill rows), 'count' (the int64 bank size).
enum class ParamInit { W, Zero, One, Small, Bank, Count };

struct ParamEntry {
  const char* name;  // under the module's prefix
  ParamKind kind;
  std::vector<const char*> shape;  // Linear: {out, in}; LayerNorm: {dim}; Tensor: its shape ({} = a scalar)
  ParamRole role = ParamRole::Trained;
  // The in-memory tensor it goes to, named as parameters() names it: Linears of one group are stacked by `part`;
  // nullptr = its own (the group is `name`).
  const char* group = nullptr;
  int part = 0;
  ParamInit init = ParamInit::W;  // Tensor's values or Linear/LayerNorm weight (their bias: zero; see bias_init)
  ParamInit bias_init = ParamInit::Zero;
  bool float32 = false;  // kept float32 whatever the head's dtype (gating_factor feeds tanh(g) in float)
  const char* from_full = nullptr;  // training an ablation from a full head: the full checkpoint's tensor it starts from
};

struct ParamTable {
  const char* module;
  std::vector<ParamEntry> entries;  // the order random runs write them in (which fixes their random values)
};

const ParamTable& mol_block_table();    // prefix model.mlp_resnet_blocks.<i>.
const ParamTable& cross_block_table();  // prefix model.mlp_resnet_blocks.<i>. (no-mol ablation)
const ParamTable& latent_table();       // model.layer_norm1, model.fc1: the initial latent
const ParamTable& output_table();       // model.layer_norm2, model.fc2: after the blocks
const ParamTable& msm_table();          // memory_value_proj and the bank
const ParamTable& proprio_table();      // proprio_projector--checkpoint (no prefix)
const ParamTable& denoise_table();      // denoise.* (the ε objective; not in released checkpoints)

// The names MemoryBank::load reads (entries of msm_table()).
extern const char* const kBankKeys;
extern const char* const kBankValues;
extern const char* const kBankSize;

// Values of the shape symbols.
struct ParamDims {
  int64_t D = 0, H = 0, A = 0, C = 0, P = 0, K = 0, N = 0, T = 0;
};
ParamDims param_dims(const HeadDims& d, int64_t time_embed_dim = 0);
std::vector<int64_t> param_shape(const ParamEntry& e, const ParamDims& dims);

// A module's in-memory tensors by group name (the table's groups), in the order parameters() and the state-dict export list them.
using ParamSlot = std::variant<Linear*, LayerNorm*, at::Tensor*>;
using ParamSlots = std::vector<std::pair<const char*, ParamSlot>>;
// The same slots read-only: what the readers (parameters(), the export) take from a const head.
using ConstParamSlot = std::variant<const Linear*, const LayerNorm*, const at::Tensor*>;
using ConstParamSlots = std::vector<std::pair<const char*, ConstParamSlot>>;
// A module writes its slot list once, as a template over its constness: SlotsOf<const M> is ConstParamSlots.
template <class Module>
using SlotsOf = std::conditional_t<std::is_const_v<Module>, ConstParamSlots, ParamSlots>;

// Loads every Trained entry of `table` into its slot (stacked by part), shape-checked; `from_full` reads the
// entries' from_full names instead (an ablation started from a full head).
void load_params(const io::StateDict& sd, const std::string& prefix, const ParamTable& table, const ParamDims& dims,
                 at::ScalarType dtype, const ParamSlots& slots, bool from_full = false);
// A learnable tensor of the head, named for the trainer's optimizer state (stacked projections keep their stacked
// shape under the name of the stack, e.g. "model.mlp_resnet_blocks.0.qkv_self.weight").
struct HeadParameter {
  std::string name;
  at::Tensor tensor;
};
// The learnable tensors (the slots of Trained groups) under `name_prefix` + group (+ ".weight"/".bias").
void append_parameters(std::vector<HeadParameter>& out, const std::string& name_prefix, const ParamTable& table,
                       const ConstParamSlots& slots);
// The Trained entries under their checkpoint names, stacks split again (detached views).
void append_state_dict(io::NamedTensors& out, const std::string& prefix, const ParamTable& table, const ParamDims& dims,
                       const ConstParamSlots& slots);

// One tensor a checkpoint file of the head holds.
struct CheckpointTensor {
  std::string name;
  std::vector<int64_t> shape;
  ParamInit init;
  ParamRole role;
};
// The released layout of action_head--checkpoint (for `blocks` blocks of `ablation`) and proprio_projector--checkpoint.
std::vector<CheckpointTensor> action_head_layout(const HeadDims& d, Ablation ablation);
std::vector<CheckpointTensor> proprio_layout(const HeadDims& d);
const char* param_init_name(ParamInit i);
const char* param_role_name(ParamRole r);

}  // namespace m2vla::head
