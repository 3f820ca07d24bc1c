// A checkpoint as name -> tensor, read from safetensors (single file or sharded index) or from a torch.save zip.
// Every failure is an m2vla::Error(ErrorCode::Checkpoint) naming the file and, where it applies, the tensor.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace m2vla::io {

// Tensors in the order a writer should store them (io/write.h).
using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct StateDict {
  std::string source;                        // file the tensors came from (for error messages)
  std::map<std::string, at::Tensor> tensors;

  bool has(const std::string& name) const { return tensors.count(name) != 0; }
  // The tensor, or an E_CHECKPOINT error "<source>: missing tensor '<name>'".
  const at::Tensor& get(const std::string& name) const;
  // The tensor with its shape checked: E_CHECKPOINT "<source>: tensor '<name>' has shape [..], expected [..]".
  const at::Tensor& get(const std::string& name, const std::vector<int64_t>& shape) const;
};

// Reads `.safetensors`, `.safetensors.index.json` (shards next to it) or a torch.save `.pt`/`.bin` zip.
// A leading "module." (DDP) is stripped from every name. With `dtype`, floating tensors are converted to it.
StateDict load_state_dict(const std::string& path, std::optional<at::ScalarType> dtype = std::nullopt);

// E_CHECKPOINT "<source>: tensor '<name>' holds N NaN/Inf value(s)": such weights make every action NaN. The readers
// below check every floating tensor they return.
void check_finite(const std::string& source, const std::string& name, const at::Tensor& t);

StateDict load_safetensors(const std::string& path);  // one file, mmap-backed
StateDict load_torch_zip(const std::string& path);    // restricted unpickler, state dicts only

}  // namespace m2vla::io
