// The MSM top-R's self-check cases (head/kernel_cases.h): the CUDA kernel against l1_topk_reference.
#include <ATen/ATen.h>

#include "head/kernel_cases.h"
#include "head/msm/reference.h"
#ifdef M2VLA_WITH_CUDA
#include "cuda/cuda_glue.h"
#endif

namespace m2vla::head {
namespace {

// `tie`: bank rows at logical indices 10 and 200 are made equal and query 0 sits next to them, so its two best
// neighbours tie exactly and must come back in index order.
KernelCase l1_topk_case(const std::string& variant, const L1TopKSizes& s, bool tie, const c10::Device& gpu) {
  KernelCase c;
  c.variant = variant;
  c.make_inputs = [s, tie](uint64_t seed) {
    Tensors in = random_l1_topk_inputs(s, seed);
    if (tie) {
      const int64_t a = (s.oldest + 10) % s.capacity, b = (s.oldest + 200) % s.capacity;
      in[1][a].copy_(in[1][b]);
      in[0][0].copy_(in[1][b].to(at::kFloat) + 1e-3);
    }
    return in;
  };
  c.reference = [s](const Tensors& in) {
    const TopK r = l1_topk_reference(in[0], in[1], s.size, s.oldest, s.top_k);
    return Tensors{r.similarities, r.indices};
  };
#ifdef M2VLA_WITH_CUDA
  c.cuda = [s, gpu](const Tensors& in) {
    const Tensors g = to_device(in, gpu);
    const TopK r = cuda::l1_topk(g[0], g[1], s.size, s.oldest, s.top_k);
    return Tensors{r.similarities.cpu(), r.indices.cpu()};
  };
#endif
  // Similarities are about -1e4 * mean |q - k|: the summation order moves them by a few float32 ulps of that.
  c.tolerance = {1e-2, 1e-5};
  return c;
}

}  // namespace

std::vector<KernelCase> l1_topk_cases(const c10::Device& gpu) {
  // Batch 1, 2, 5 and 9 take the kernel's 1-, 2-, 4- and 8-query blocks (the last with a partial block).
  L1TopKSizes batch1, batch2, batch9, partial, empty, production_b2 = kL1ProductionSizes;
  batch1.batch = 1, batch2.batch = 2, batch9.batch = 9;
  partial.size = 3, partial.oldest = 299;  // fewer rows than R: padded slots
  empty.size = 0;
  production_b2.batch = 2, production_b2.oldest = 4321;
  return {l1_topk_case("edge", {}, false, gpu),          l1_topk_case("batch1", batch1, false, gpu),
          l1_topk_case("batch2", batch2, false, gpu),     l1_topk_case("batch9", batch9, false, gpu),
          l1_topk_case("tie", {}, true, gpu),             l1_topk_case("partial-bank", partial, false, gpu),
          l1_topk_case("empty-bank", empty, false, gpu),
          l1_topk_case("production-batch1", kL1ProductionSizes, false, gpu),
          l1_topk_case("production-batch2-wrapped", production_b2, false, gpu)};
}

}  // namespace m2vla::head
