// The MoL attention's self-check cases (head/kernel_cases.h): the CUDA kernel against mol_attention_reference.
#include <ATen/ATen.h>

#include "head/kernel_cases.h"
#include "head/mol/reference.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {
namespace {

KernelCase mol_attention_case(const std::string& variant, const MolAttentionSizes& s, at::ScalarType out_dtype,
                              const c10::Device& gpu) {
  KernelCase c;
  c.variant = variant;
  const auto views = [heads = s.heads](const Tensors& in) { return mol_attention_views(in[0], in[1], in[2], in[3], heads); };
  c.make_inputs = [s](uint64_t seed) { return random_mol_attention_inputs(s, seed); };
  c.reference = [views](const Tensors& in) { return Tensors{mol_attention_reference(views(in)).contiguous()}; };
#ifdef M2VLA_WITH_CUDA
  c.cuda = [views, out_dtype, gpu](const Tensors& in) {
    return Tensors{cuda::mol_attention(views(to_device(in, gpu)), out_dtype).cpu()};
  };
#endif
  // float32 output: only the accumulation order differs. bfloat16 output (what production writes): plus the rounding
  // of each value to 8 significant bits (half an ulp is 2^-9 relative).
  c.tolerance = out_dtype == at::kFloat ? Tolerance{1e-4, 1e-4} : Tolerance{1e-4, 4e-3};
  return c;
}

}  // namespace

std::vector<KernelCase> mol_attention_cases(const c10::Device& gpu) {
  MolAttentionSizes one_token{1, 2, 2, 1, 1, 1};  // the smallest shapes: one query, one key per branch, head_dim 2
  MolAttentionSizes production_b2 = kMolProductionSizes;
  production_b2.batch = 2;
  return {mol_attention_case("edge", {}, at::kFloat, gpu), mol_attention_case("edge-bf16", {}, at::kBFloat16, gpu),
          mol_attention_case("one-token", one_token, at::kFloat, gpu),
          mol_attention_case("production-bf16", kMolProductionSizes, at::kBFloat16, gpu),
          mol_attention_case("production-batch2-bf16", production_b2, at::kBFloat16, gpu),
          mol_attention_case("production-float32", kMolProductionSizes, at::kFloat, gpu)};
}

}  // namespace m2vla::head
