// A small strict JSON reader for checkpoint headers (safetensors header, sharded index). Not for user options:
// those are parsed in TypeScript and packed into structs.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace m2vla::io {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object } type = Type::Null;
  bool boolean = false;
  double number = 0;
  std::string string;
  std::vector<Json> array;
  std::map<std::string, Json> object;

  const Json* find(const std::string& key) const;
  bool is(Type t) const { return type == t; }
};

// Throws std::runtime_error with the byte offset of the first syntax error.
Json parse_json(std::string_view text);

}  // namespace m2vla::io
