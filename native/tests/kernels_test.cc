// The custom kernels' self-check cases (head/kernel_cases.h). On the CPU: every variant's inputs have the layout the
// CUDA kernel reads, and the policy's layout rule (mol_layout_fits) says exactly when the head's projections have it;
// the check itself passes the reference and catches a perturbed one; the reference keeps the kernels' conventions
// (ties in index order, padded slots, the ring's age order). With a GPU ("cuda_variants"): every variant's CUDA
// candidate against its reference, one line per variant.
#include <ATen/ATen.h>

#include <cstdio>

#include "check.h"
#include "head/kernel_cases.h"
#include "head/mol/reference.h"
#include "head/msm/reference.h"

namespace m2vla::test {
namespace {

using head::KernelCase;
using head::Tensors;

TEST(every_mol_variant_has_the_kernel_layout) {
  for (const KernelCase& c : head::kernel_cases("molAttention")) {
    const Tensors in = c.make_inputs(0);
    const int64_t D = in[2].size(2) / 2, heads = in[1].size(2) - 2 * D;
    EXPECT_MSG(head::mol_kernel_layout(head::mol_attention_views(in[0], in[1], in[2], in[3], heads)), c.variant,
              ": the CUDA glue would refuse these views");
  }
}

TEST(layout_rule_matches_the_views_of_the_head_projections) {
  for (int64_t heads : {1, 2, 3, 4, 7, 14})
    for (int64_t head_dim : {2, 3, 16, 40, 64}) {
      head::MolAttentionSizes s;
      s.batch = 2, s.heads = heads, s.head_dim = head_dim;
      const Tensors in = head::random_mol_attention_inputs(s, 1);
      const bool views_fit = head::mol_kernel_layout(head::mol_attention_views(in[0], in[1], in[2], in[3], heads));
      EXPECT_MSG(views_fit == head::mol_layout_fits(heads, head_dim), heads, " heads x ", head_dim, ": views ",
                views_fit ? "fit" : "do not fit", " but the policy's rule says the opposite");
    }
  EXPECT(!head::mol_layout_fits(3, 40));  // the old self-check's shape: odd heads, refused by the glue
}

TEST(check_passes_the_reference_and_catches_a_perturbed_one) {
  for (const std::string& kernel : head::kKernelNames)
    for (const KernelCase& c : head::kernel_cases(kernel, c10::kCPU)) {
      const head::CheckResult same = head::check_kernel({c.make_inputs, c.reference, c.reference, c.tolerance, 3});
      EXPECT_MSG(same.ok && same.max_abs_err == 0, kernel, "/", c.variant, ": ", same.detail);
      const auto perturbed = [&](const Tensors& in) {
        Tensors out = c.reference(in);
        for (at::Tensor& t : out)
          if (at::isFloatingType(t.scalar_type()) && t.numel() > 0) {
            t = t.clone();
            t.view(-1)[t.numel() / 2] += 0.5;  // above every tolerance, bf16 rows included
            break;
          }
        return out;
      };
      const bool has_float = [&] {
        for (const at::Tensor& t : c.reference(c.make_inputs(3)))
          if (at::isFloatingType(t.scalar_type()) && t.numel() > 0) return true;
        return false;
      }();
      if (!has_float) continue;  // the empty bank: nothing to perturb
      const head::CheckResult caught = head::check_kernel({c.make_inputs, perturbed, c.reference, c.tolerance, 3});
      EXPECT_MSG(!caught.ok, kernel, "/", c.variant, ": a perturbed candidate passed");
    }
}

TEST(top_r_reference_conventions) {
  const auto find = [](const std::string& variant) {
    for (const KernelCase& c : head::kernel_cases("l1TopK"))
      if (c.variant == variant) return c;
    fail(ErrorCode::Input, "no variant ", variant);
  };
  const Tensors tie = find("tie").reference(find("tie").make_inputs(0));
  EXPECT_MSG(tie[1][0][0].item<int64_t>() == 10 && tie[1][0][1].item<int64_t>() == 200, "tied rows ", tie[1][0]);
  EXPECT(tie[0][0][0].item<float>() == tie[0][0][1].item<float>());
  const Tensors partial = find("partial-bank").reference(find("partial-bank").make_inputs(0));
  EXPECT_MSG(partial[1][0][3].item<int64_t>() == 0 && partial[0][0][3].item<float>() == 0, "padded slot ", partial[1][0]);
  const Tensors empty = find("empty-bank").reference(find("empty-bank").make_inputs(0));
  EXPECT(empty[0].abs().sum().item<float>() == 0 && empty[1].abs().sum().item<int64_t>() == 0);
  // Each query is a bank row plus noise: its best neighbour is that row, at its logical (age-order) index.
  const KernelCase edge = find("edge");
  const Tensors in = edge.make_inputs(0);
  const head::L1TopKSizes s;
  const Tensors r = edge.reference(in);
  for (int64_t b = 0; b < s.batch; ++b) {
    const int64_t logical = r[1][b][0].item<int64_t>();
    const at::Tensor row = in[1][(s.oldest + logical) % s.capacity].to(at::kFloat);
    EXPECT_MSG((row - in[0][b]).abs().max().item<float>() < 0.5, "query ", b, ": best row ", logical, " is not its source");
  }
}

TEST(cuda_variants) {
#ifndef M2VLA_WITH_CUDA
  skip("a CPU-only build (configure with -DM2VLA_CUDA=ON)");
#else
  if (!at::hasCUDA()) skip("no CUDA device on this machine");
  const c10::Device gpu(c10::kCUDA, 0);
  int failures = 0;
  for (const std::string& kernel : head::kKernelNames)
    for (const KernelCase& c : head::kernel_cases(kernel, gpu)) {
      const head::CheckResult r = head::check_kernel({c.make_inputs, c.cuda, c.reference, c.tolerance, 0});
      std::printf("  %-13s %-26s %s  max |cuda - reference| %.3e  %s\n", kernel.c_str(), c.variant.c_str(),
                  r.ok ? "ok  " : "FAIL", r.max_abs_err, r.ok ? "" : r.detail.c_str());
      std::fflush(stdout);
      failures += !r.ok;
    }
  EXPECT_MSG(failures == 0, failures, " kernel variant(s) disagree with their reference (lines above)");
#endif
}

}  // namespace
}  // namespace m2vla::test

TEST_MAIN()
