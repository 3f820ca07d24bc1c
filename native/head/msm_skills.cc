// Skills added to a loaded head without training (action_head.h, "Skills"): rows appended to its MSM bank, and the
// grown bank written back into the reference checkpoint layout.
#include <ATen/ATen.h>

#include <mutex>
#include <string>

#include "error.h"
#include "head/action_head.h"
#include "io/write.h"

namespace m2vla::head {

void ActionHead::add_skills(const at::Tensor& keys, const at::Tensor& values) {
  if (!uses_msm()) fail(ErrorCode::Config, "addSkills: this head is the 'no-msm' ablation, which has no skill bank");
  const int64_t key_dim = bank_.key_dim(), value_dim = bank_.value_dim();
  if (keys.dim() != 2 || keys.size(1) != key_dim)
    fail(ErrorCode::Shape, "addSkills: keys: expected [N, ", key_dim, "] (key layers x hidden), got ", keys.sizes());
  if (values.dim() != 2 || values.size(0) != keys.size(0) || values.size(1) != value_dim)
    fail(ErrorCode::Shape, "addSkills: values: expected [", keys.size(0), ", ", value_dim, "] (chunk ", dims_.chunk,
         " x action dim ", dims_.action_dim, "), got ", values.sizes());
  if (!at::isfinite(keys).all().item<bool>()) fail(ErrorCode::Input, "addSkills: keys contain NaN or Inf");
  if (!at::isfinite(values).all().item<bool>()) fail(ErrorCode::Input, "addSkills: values contain NaN or Inf");
  std::unique_lock lock(bank_mutex_);
  bank_.append(keys.to(options_.device), values.to(options_.device));
}

void ActionHead::write_bank(const std::string& from, const std::string& to) const {
  if (!uses_msm()) fail(ErrorCode::Config, "saveSkills: this head is the 'no-msm' ablation, which has no skill bank");
  const io::StateDict sd = io::load_state_dict(from);
  const at::Tensor& old_keys = sd.get("memory_bank.keys");
  io::NamedTensors out;
  {
    std::shared_lock lock(bank_mutex_);
    // The checkpoint's own dtypes (the reference keeps the bank in bfloat16, its size as int64).
    out.emplace_back("memory_bank.keys", bank_.keys().to(at::kCPU, old_keys.scalar_type()).contiguous());
    out.emplace_back("memory_bank.values",
                     bank_.values().to(at::kCPU, sd.get("memory_bank.values").scalar_type()).contiguous());
    const at::Tensor& old_size = sd.get("memory_bank.size");
    out.emplace_back("memory_bank.size", at::full(old_size.sizes(), bank_.size(), at::TensorOptions().dtype(old_size.scalar_type())));
  }
  for (const auto& [name, t] : sd.tensors)
    if (name.rfind("memory_bank.", 0) != 0) out.emplace_back(name, t);
  const bool safetensors = to.size() >= 12 && to.compare(to.size() - 12, 12, ".safetensors") == 0;
  if (safetensors) io::write_safetensors(to, out);
  else io::write_torch_zip(to, out);
}

}  // namespace m2vla::head
