#include "io/state_dict.h"

#include <ATen/core/Tensor.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "error.h"
#include "io/json.h"
#include "io/mapped_file.h"

namespace m2vla::io {
namespace {

std::string shape_str(at::IntArrayRef s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// `*.safetensors.index.json`: {"weight_map": {tensor: shard file}}; shards are read from the index's directory.
StateDict load_sharded(const std::string& path) {
  auto file = map_file(path);  // a regular file only (a FIFO would block a stream read for ever)
  Json index;
  try {
    index = parse_json(std::string_view(reinterpret_cast<const char*>(file->data), file->size));
  } catch (const std::exception& e) {
    fail(ErrorCode::Checkpoint, path, ": corrupt index (", e.what(), ")");
  }
  const Json* map = index.find("weight_map");
  if (!map || !map->is(Json::Type::Object)) fail(ErrorCode::Checkpoint, path, ": no \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : map->object) {
    if (!shard.is(Json::Type::String)) fail(ErrorCode::Checkpoint, path, ": weight_map entry '", name, "' is not a file name");
    by_shard[shard.string].push_back(name);
  }
  auto dir = std::filesystem::path(path).parent_path();
  StateDict out;
  out.source = path;
  // Errors about the layout name the index (what the user passed) and the shard; a damaged shard names itself.
  for (const auto& [shard, names] : by_shard) {
    const std::string file = (dir / shard).string();
    if (shard.find('/') != std::string::npos || shard == "..")
      fail(ErrorCode::Checkpoint, path, ": shard '", shard, "' is not a file name next to the index");
    if (!std::filesystem::exists(file)) fail(ErrorCode::Checkpoint, path, ": shard '", shard, "' does not exist (", file, ")");
    StateDict part = load_safetensors(file);
    for (const auto& name : names) {
      if (!part.has(name)) fail(ErrorCode::Checkpoint, path, ": weight_map puts '", name, "' in shard '", shard, "', which lacks it");
      out.tensors.emplace(name, part.tensors.at(name));
    }
  }
  return out;
}

}  // namespace

// One float sum per tensor (no copy) finds them; only a non-finite sum (NaN, Inf, or an overflow of huge finite
// values) pays for the exact element-wise test.
void check_finite(const std::string& source, const std::string& name, const at::Tensor& t) {
  if (!at::isFloatingType(t.scalar_type()) || t.numel() == 0) return;
  if (std::isfinite(t.sum(at::kFloat).item<double>())) return;
  const int64_t bad = t.numel() - t.isfinite().sum().item<int64_t>();
  if (bad > 0) fail(ErrorCode::Checkpoint, source, ": tensor '", name, "' holds ", bad, " NaN/Inf value(s) of ", t.numel());
}

const at::Tensor& StateDict::get(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) fail(ErrorCode::Checkpoint, source, ": missing tensor '", name, "'");
  return it->second;
}

const at::Tensor& StateDict::get(const std::string& name, const std::vector<int64_t>& shape) const {
  const at::Tensor& t = get(name);
  // Weights are floating point; the byte length cannot tell a float tensor relabelled I32 in the header, this can.
  if (!shape.empty() && !at::isFloatingType(t.scalar_type()))
    fail(ErrorCode::Checkpoint, source, ": tensor '", name, "' has dtype ", c10::toString(t.scalar_type()),
         ", expected a floating-point weight");
  if (t.sizes() != at::IntArrayRef(shape))
    fail(ErrorCode::Checkpoint, source, ": tensor '", name, "' has shape ", shape_str(t.sizes()), ", expected ", shape_str(shape));
  return t;
}

StateDict load_state_dict(const std::string& path, std::optional<at::ScalarType> dtype) {
  if (!std::filesystem::exists(path)) fail(ErrorCode::Checkpoint, path, ": no such file");
  StateDict raw = ends_with(path, ".index.json")    ? load_sharded(path)
                  : ends_with(path, ".safetensors") ? load_safetensors(path)
                                                    : load_torch_zip(path);
  StateDict out;
  out.source = raw.source;
  for (auto& [name, t] : raw.tensors) {
    std::string key = name.rfind("module.", 0) == 0 ? name.substr(7) : name;
    at::Tensor v = (dtype && at::isFloatingType(t.scalar_type())) ? t.to(*dtype) : t;
    out.tensors.emplace(std::move(key), std::move(v));
  }
  return out;
}

}  // namespace m2vla::io
