// safetensors: [u64 LE header length][JSON header][data]. Tensors are views into a private (copy-on-write) mmap
// of the file; every offset and size is checked against the file before a view is made.
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstring>

#include "error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "io/state_dict.h"

namespace m2vla::io {
namespace {

struct DtypeInfo {
  at::ScalarType type;
  size_t bytes;
};

DtypeInfo safetensors_dtype(const std::string& path, const std::string& name, const std::string& dtype) {
  if (dtype == "F32") return {at::kFloat, 4};
  if (dtype == "F16") return {at::kHalf, 2};
  if (dtype == "BF16") return {at::kBFloat16, 2};
  if (dtype == "F64") return {at::kDouble, 8};
  if (dtype == "I64") return {at::kLong, 8};
  if (dtype == "I32") return {at::kInt, 4};
  if (dtype == "U8") return {at::kByte, 1};
  if (dtype == "I8") return {at::kChar, 1};
  if (dtype == "BOOL") return {at::kBool, 1};
  fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has unsupported dtype ", dtype,
       " (expected F32, F16, BF16, F64, I64, I32, U8, I8 or BOOL)");
}

}  // namespace

StateDict load_safetensors(const std::string& path) {
  auto map = map_file(path);
  const uint8_t* base = map->data;
  if (map->size < 8) fail(ErrorCode::Checkpoint, path, ": truncated (", map->size, " bytes; a safetensors file starts with an 8-byte header length)");
  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);
  if (header_len > map->size - 8)
    fail(ErrorCode::Checkpoint, path, ": truncated or not safetensors (header length ", header_len, " exceeds file size ", map->size, ")");
  Json header;
  try {
    header = parse_json(std::string_view(reinterpret_cast<const char*>(base + 8), header_len));
  } catch (const std::exception& e) {
    fail(ErrorCode::Checkpoint, path, ": corrupt safetensors header (", e.what(), ")");
  }
  if (!header.is(Json::Type::Object)) fail(ErrorCode::Checkpoint, path, ": corrupt safetensors header (not a JSON object)");
  const size_t data_start = 8 + header_len;
  const size_t data_size = map->size - data_start;

  StateDict sd;
  sd.source = path;
  for (const auto& [name, entry] : header.object) {
    if (name == "__metadata__") continue;
    const Json* dtype = entry.find("dtype");
    const Json* shape = entry.find("shape");
    const Json* offsets = entry.find("data_offsets");
    if (!dtype || !shape || !offsets || !dtype->is(Json::Type::String) || !shape->is(Json::Type::Array) ||
        !offsets->is(Json::Type::Array) || offsets->array.size() != 2)
      fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has a malformed header entry");
    auto info = safetensors_dtype(path, name, dtype->string);
    // Every dimension is checked against the data section as it is multiplied in, so a crafted shape can neither
    // overflow numel nor make a view larger than the bytes that back it.
    std::vector<int64_t> sizes;
    size_t numel = 1;
    for (const auto& d : shape->array) {
      bool integer = d.is(Json::Type::Number) && d.number >= 0 && d.number <= 0x1p53 && d.number == double(int64_t(d.number));
      if (!integer || (d.number > 0 && numel > data_size / size_t(d.number)))
        fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has a bad shape");
      sizes.push_back(static_cast<int64_t>(d.number));
      numel *= static_cast<size_t>(d.number);
    }
    if (!offsets->array[0].is(Json::Type::Number) || !offsets->array[1].is(Json::Type::Number))
      fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has a malformed header entry");
    double b = offsets->array[0].number, e = offsets->array[1].number;
    if (b < 0 || e < b || e > static_cast<double>(data_size))
      fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' lies outside the file (offsets [", int64_t(b), ", ", int64_t(e),
           "), data section holds ", data_size, " bytes; truncated file?)");
    size_t begin = static_cast<size_t>(b), end = static_cast<size_t>(e);
    if (end - begin != numel * info.bytes)
      fail(ErrorCode::Checkpoint, path, ": tensor '", name, "' has ", end - begin, " bytes for ", numel, " elements of ",
           dtype->string);
    auto* ptr = const_cast<uint8_t*>(base + data_start + begin);
    at::Tensor t;
    const bool view = reinterpret_cast<uintptr_t>(ptr) % info.bytes == 0;
    if (view) {
      auto keep = map;
      t = at::from_blob(ptr, sizes, [keep](void*) {}, at::TensorOptions().dtype(info.type));
    } else {  // misaligned (odd header length): copy out
      t = at::empty(sizes, at::TensorOptions().dtype(info.type));
      std::memcpy(t.data_ptr(), ptr, end - begin);
    }
    check_finite(path, name, t);
    // The check read every page of the file, tensors no model uses included (the LM head copy, SigLIP's pooling head,
    // blocks after the one taken): out of the resident set again, a reader faults in what it reads.
    if (view) map->release(ptr, end - begin);
    sd.tensors.emplace(name, std::move(t));
  }
  return sd;
}

}  // namespace m2vla::io
