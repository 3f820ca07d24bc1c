// Reading plain JS option objects on the JS thread with errors that name the option (E_INPUT), shared by the
// Addon*.cc files.
#pragma once
#include <ATen/core/Tensor.h>
#include <napi.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace m2vla::addon {

Napi::Object object_arg(const Napi::CallbackInfo& info, size_t index, const char* what);
Napi::Object object_option(const Napi::Object& o, const char* key);
std::string string_option(const Napi::Object& o, const char* key);
int64_t integer_option(const Napi::Object& o, const char* key);
std::optional<int64_t> optional_integer(const Napi::Object& o, const char* key);
bool bool_option(const Napi::Object& o, const char* key, bool fallback);
double number_option(const Napi::Object& o, const char* key, double fallback);
std::vector<int64_t> integer_array_option(const Napi::Object& o, const char* key);

}  // namespace m2vla::addon
