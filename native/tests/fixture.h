// Fixture A (test/fixtures/m2vla-tiny-a) for the C++ tests: its directory, its cases.safetensors and a case's inputs
// as an ActRequest (raw uint8 camera images, the case's token ids, the raw float64 state), as test/native/policy.test.ts
// builds them.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "io/state_dict.h"
#include "policy.h"

namespace m2vla::test {

inline std::string fixture_dir() { return std::string(M2VLA_SOURCE_DIR) + "/test/fixtures/m2vla-tiny-a"; }

inline const io::StateDict& fixture_cases() {
  static const io::StateDict cases = io::load_state_dict(fixture_dir() + "/cases.safetensors");
  return cases;
}

inline at::Tensor expected(const std::string& name) { return fixture_cases().get(name); }

// The request of case `c` (case0..case3); the images stay owned by the returned request.
inline ActRequest case_request(const std::string& c, bool reference_casts) {
  ActRequest req;
  const at::Tensor ids = expected(c + ".input.input_ids").to(at::kLong).contiguous();
  const at::Tensor primary = expected(c + ".input.raw_primary_u8").contiguous(), wrist = expected(c + ".input.raw_wrist_u8").contiguous();
  const int64_t batch = ids.size(0);
  for (int64_t b = 0; b < batch; ++b)
    for (const at::Tensor* camera : {&primary, &wrist}) {
      const at::Tensor img = (*camera)[b].contiguous();
      req.image_bytes.emplace_back(img.data_ptr<uint8_t>(), img.data_ptr<uint8_t>() + img.numel());
    }
  for (int64_t i = 0; i < int64_t(req.image_bytes.size()); ++i) {
    const at::Tensor& camera = i % 2 == 0 ? primary : wrist;
    req.images.push_back({req.image_bytes[i].data(), req.image_bytes[i].size(), camera.size(2), camera.size(1),
                          i % 2 == 0 ? "images.primary" : "images.wrist"});
  }
  req.input_ids = ids;
  req.state = expected(c + ".input.proprio_raw").to(at::kDouble).contiguous();
  req.reference_casts = reference_casts;
  return req;
}

inline double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kCPU, at::kDouble).flatten() - b.to(at::kCPU, at::kDouble).flatten()).abs().max().item<double>();
}

}  // namespace m2vla::test
