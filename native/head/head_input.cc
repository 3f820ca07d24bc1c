#include "head/head_input.h"

#include "error.h"

namespace m2vla::head {

HeadInput slice_head_input(const at::Tensor& hidden, int64_t num_patches, int64_t prompt_len, int64_t num_action_queries,
                           bool round_aq_bf16, at::ScalarType dtype) {
  if (hidden.dim() != 4) fail(ErrorCode::Shape, "hiddenStates: expected [L+1, B, seq, D], got ", hidden.sizes());
  if (prompt_len < 1) fail(ErrorCode::Input, "promptLen: expected at least 1, got ", prompt_len);
  const int64_t seq = hidden.size(2);
  const int64_t aq_start = num_patches + prompt_len - 1;
  if (aq_start + num_action_queries > seq)
    fail(ErrorCode::Shape, "promptLen: ", prompt_len, " with ", num_patches, " patches and ", num_action_queries,
         " action queries needs at least ", aq_start + num_action_queries, " positions, but hiddenStates has seq = ", seq);
  HeadInput in;
  for (int64_t k = 0; k < hidden.size(0); ++k) {
    at::Tensor h = hidden.select(0, k);
    in.vision.push_back(h.narrow(1, 0, num_patches).to(dtype));
    at::Tensor aq = h.narrow(1, aq_start, num_action_queries);
    if (round_aq_bf16) aq = aq.to(at::kBFloat16);
    in.action_queries.push_back(aq.to(dtype));
  }
  return in;
}

}  // namespace m2vla::head
