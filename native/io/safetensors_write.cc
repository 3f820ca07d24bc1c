// write_safetensors: [u64 LE header length][JSON header, space-padded to 8 bytes][tensor bytes, back to back].
#include <ATen/core/Tensor.h>

#include <cstring>
#include <sstream>

#include "error.h"
#include "io/atomic_file.h"
#include "io/write.h"

namespace m2vla::io {
namespace {

const char* safetensors_dtype(const std::string& path, const std::string& name, at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "F32";
    case at::kBFloat16: return "BF16";
    case at::kHalf: return "F16";
    case at::kDouble: return "F64";
    case at::kLong: return "I64";
    case at::kInt: return "I32";
    case at::kByte: return "U8";
    case at::kChar: return "I8";
    case at::kBool: return "BOOL";
    default: fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has dtype ", c10::toString(t), ", which safetensors cannot hold");
  }
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

void write_safetensors(const std::string& path, const NamedTensors& tensors) {
  std::vector<at::Tensor> data;
  std::ostringstream header;
  header << "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    at::Tensor t = tensor.detach().cpu().contiguous();
    const uint64_t bytes = t.numel() * t.element_size();
    header << "," << json_string(name) << ":{\"dtype\":\"" << safetensors_dtype(path, name, t.scalar_type()) << "\",\"shape\":[";
    for (int64_t d = 0; d < t.dim(); ++d) header << (d ? "," : "") << t.size(d);
    header << "],\"data_offsets\":[" << offset << "," << offset + bytes << "]}";
    offset += bytes;
    data.push_back(std::move(t));
  }
  header << "}";
  std::string text = header.str();
  text.append((8 - text.size() % 8) % 8, ' ');  // keeps every tensor 8-byte aligned in the file

  AtomicFile f(path);
  const uint64_t length = text.size();
  f.write(&length, 8);
  f.write(text.data(), text.size());
  for (const at::Tensor& t : data) f.write(t.data_ptr(), t.numel() * t.element_size());
  f.commit();
}

}  // namespace m2vla::io
