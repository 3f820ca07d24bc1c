#include "head/kernel_cases.h"

#include <ATen/ATen.h>

#include "error.h"
#include "head/kernel_reference.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {
namespace {

constexpr MolAttentionSizes kMolSizes{};
constexpr L1TopKSizes kL1Sizes{};
constexpr BankAppendSizes kAppendSizes{};

#ifdef M2VLA_WITH_CUDA
Tensors to_gpu(const Tensors& ts, const c10::Device& gpu) {
  Tensors out;
  for (const auto& t : ts) out.push_back(t.to(gpu));
  return out;
}
#endif

MolAttentionInputs mol_views(const Tensors& in) { return mol_attention_views(in[0], in[1], in[2], in[3], kMolSizes.heads); }

KernelCase mol_attention_case(const c10::Device& gpu) {
  KernelCase c;
  c.make_inputs = [](uint64_t seed) { return random_mol_attention_inputs(kMolSizes, seed); };
  c.reference = [](const Tensors& in) { return Tensors{mol_attention_reference(mol_views(in))}; };
#ifdef M2VLA_WITH_CUDA
  c.cuda = [gpu](const Tensors& in) { return Tensors{cuda::mol_attention(mol_views(to_gpu(in, gpu)), at::kFloat).cpu()}; };
#endif
  c.tolerance = {1e-4, 1e-4};  // fp32 output: only accumulation order differs
  return c;
}

KernelCase l1_topk_case(const c10::Device& gpu) {
  KernelCase c;
  c.make_inputs = [](uint64_t seed) { return random_l1_topk_inputs(kL1Sizes, seed); };
  c.reference = [](const Tensors& in) {
    const TopK r = l1_topk_reference(in[0], in[1], kL1Sizes.size, kL1Sizes.oldest, kL1Sizes.top_k);
    return Tensors{r.similarities, r.indices};
  };
#ifdef M2VLA_WITH_CUDA
  c.cuda = [gpu](const Tensors& in) {
    const Tensors g = to_gpu(in, gpu);
    const TopK r = cuda::l1_topk(g[0], g[1], kL1Sizes.size, kL1Sizes.oldest, kL1Sizes.top_k);
    return Tensors{r.similarities.cpu(), r.indices.cpu()};
  };
#endif
  // Similarities are about -1e4 * mean |q - k|: the summation order moves them by a few float32 ulps of that.
  c.tolerance = {1e-2, 1e-5};
  return c;
}

KernelCase bank_append_case(const c10::Device& gpu) {
  KernelCase c;
  c.make_inputs = [](uint64_t seed) { return random_bank_append_inputs(kAppendSizes, seed); };
  c.reference = [](const Tensors& in) {
    at::Tensor keys = in[0].clone(), values = in[1].clone();
    bank_append_reference(keys, values, kAppendSizes.offset, in[2], in[3]);
    return Tensors{keys, values};
  };
#ifdef M2VLA_WITH_CUDA
  c.cuda = [gpu](const Tensors& in) {
    Tensors g = to_gpu(in, gpu);
    cuda::bank_append(g[0], g[1], kAppendSizes.offset, g[2], g[3]);
    return Tensors{g[0].cpu(), g[1].cpu()};
  };
#endif
  c.tolerance = {0, 0};  // the same bf16 rounding of the same floats
  return c;
}

}  // namespace

KernelCase kernel_case(const std::string& kernel, c10::Device gpu) {
  if (kernel == "molAttention") return mol_attention_case(gpu);
  if (kernel == "l1TopK") return l1_topk_case(gpu);
  if (kernel == "bankAppend") return bank_append_case(gpu);
  fail(ErrorCode::Input, "kernel must be molAttention, l1TopK or bankAppend, got '", kernel, "'");
}

}  // namespace m2vla::head
