// What the head reads from the VLM's hidden states, with the reference's off-by-one slicing (SPEC §1.5): per
// hidden state k, "vision" = h_k[:, 0:NP] (tok0 + the first NP-1 patches) and "action queries" =
// h_k[:, NP+P-1 : NP+P-1+NT] (the last prompt token + the first NT-1 AQ tokens). Both are shifted by -1 from the
// real positions; checkpoints were trained on exactly this, so it is reproduced, not fixed.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

namespace m2vla::head {

struct HeadInput {
  std::vector<at::Tensor> vision;          // per hidden state: [B, NP, D] (views into the hidden states)
  std::vector<at::Tensor> action_queries;  // per hidden state: [B, NT, D]
};

// `hidden`: [L+1, B, seq, D]. `round_aq_bf16` applies the reference's hard-coded `.to(torch.bfloat16)` of the AQ
// slice (values rounded, dtype kept). Everything is converted to `dtype`. E_SHAPE names promptLen / hiddenStates
// when the slices do not fit the sequence.
HeadInput slice_head_input(const at::Tensor& hidden, int64_t num_patches, int64_t prompt_len, int64_t num_action_queries,
                           bool round_aq_bf16, at::ScalarType dtype);

}  // namespace m2vla::head
