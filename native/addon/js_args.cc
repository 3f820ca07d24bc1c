#include "addon/js_args.h"

#include <cmath>

#include "error.h"

namespace m2vla::addon {

Napi::Object object_arg(const Napi::CallbackInfo& info, size_t index, const char* what) {
  if (!info[index].IsObject()) fail(ErrorCode::Input, what, ": expected an options object");
  return info[index].As<Napi::Object>();
}

Napi::Object object_option(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsObject()) fail(ErrorCode::Input, key, ": expected an object");
  return v.As<Napi::Object>();
}

std::string string_option(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsString()) fail(ErrorCode::Input, key, ": expected a string");
  return v.As<Napi::String>().Utf8Value();
}

namespace {
int64_t to_integer(const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) fail(ErrorCode::Input, what, ": expected an integer");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > 9007199254740991.0)
    fail(ErrorCode::Input, what, ": expected an integer, got ", d);
  return int64_t(d);
}
}  // namespace

int64_t integer_option(const Napi::Object& o, const char* key) { return to_integer(o.Get(key), key); }

std::optional<int64_t> optional_integer(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return std::nullopt;
  return to_integer(v, key);
}

bool bool_option(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsBoolean()) fail(ErrorCode::Input, key, ": expected a boolean");
  return v.As<Napi::Boolean>().Value();
}

double number_option(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) fail(ErrorCode::Input, key, ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

std::vector<int64_t> integer_array_option(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsArray()) fail(ErrorCode::Input, key, ": expected an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); ++i) out.push_back(to_integer(a.Get(i), std::string(key) + "[" + std::to_string(i) + "]"));
  return out;
}

}  // namespace m2vla::addon
