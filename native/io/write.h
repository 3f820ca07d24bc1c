// Writing checkpoints. Every file goes to "<path>.tmp", is flushed to disk, then renamed over <path>: a reader (or a
// crash) sees the old file or the new one, never a torn one. Errors are E_CHECKPOINT naming the file.
#pragma once
#include <string>

#include "io/state_dict.h"

namespace m2vla::io {

// safetensors, tensors stored in the given order (contiguous little-endian data, `{"format": "pt"}` metadata): what
// load_safetensors and Python's safetensors read.
void write_safetensors(const std::string& path, const NamedTensors& tensors);

// torch.save(OrderedDict(tensors)) as torch 2.x writes it: a stored zip of `archive/data.pkl` (pickle protocol 2:
// collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch.<Type>Storage only, so torch.load(...,
// weights_only=True) and load_torch_zip accept it), one storage record per tensor aligned to 64 bytes, `byteorder`
// and `version`. Files up to 4 GiB (no zip64).
void write_torch_zip(const std::string& path, const NamedTensors& tensors);

void write_text(const std::string& path, const std::string& text);

// Makes a rename in `dir` durable (fsync of the directory).
void sync_directory(const std::string& dir);

}  // namespace m2vla::io
