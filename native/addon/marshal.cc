#include "addon/marshal.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <iterator>
#include <utility>

#include "error.h"

namespace m2vla::addon {

namespace {
// The names NativeTensor's `dtype` uses (lib/native/binding.ts), both ways.
constexpr std::pair<at::ScalarType, const char*> kDtypeNames[] = {
    {at::kFloat, "float32"}, {at::kDouble, "float64"}, {at::kHalf, "float16"}, {at::kBFloat16, "bfloat16"},
    {at::kLong, "int64"},    {at::kInt, "int32"},      {at::kByte, "uint8"},   {at::kChar, "int8"},
    {at::kBool, "bool"},
};
}  // namespace

std::string dtype_name(at::ScalarType t) {
  for (const auto& [type, name] : kDtypeNames)
    if (type == t) return name;
  return c10::toString(t);
}

at::Tensor tensor_view_from_js(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) fail(ErrorCode::Input, what, ": expected a {dtype, shape, data} object");
  auto o = v.As<Napi::Object>();
  const std::string dtype = o.Get("dtype").IsString() ? o.Get("dtype").As<Napi::String>().Utf8Value() : "";
  const auto* entry = std::find_if(std::begin(kDtypeNames), std::end(kDtypeNames), [&](const auto& e) { return dtype == e.second; });
  if (entry == std::end(kDtypeNames)) fail(ErrorCode::Input, what, ".dtype: expected one of float32, float64, float16, bfloat16, int64, int32, uint8, int8, bool, got '", dtype, "'");
  if (!o.Get("shape").IsArray()) fail(ErrorCode::Input, what, ".shape: expected an array of sizes");
  auto a = o.Get("shape").As<Napi::Array>();
  std::vector<int64_t> shape;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value d = a.Get(i);
    const double size = d.IsNumber() ? d.As<Napi::Number>().DoubleValue() : -1;
    if (!(size >= 0 && size == std::floor(size))) fail(ErrorCode::Input, what, ".shape[", i, "]: expected a size (a whole number >= 0)");
    shape.push_back(int64_t(size));
  }
  Napi::Value data = o.Get("data");
  if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    fail(ErrorCode::Input, what, ".data: expected a Uint8Array");
  auto bytes = data.As<Napi::Uint8Array>();
  const auto options = at::TensorOptions().dtype(entry->first);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  const size_t expected = size_t(numel) * options.dtype().itemsize();
  if (bytes.ByteLength() != expected)
    fail(ErrorCode::Shape, what, ".data: expected ", expected, " bytes (", dtype, " ", at::IntArrayRef(shape), "), got ", bytes.ByteLength());
  return at::from_blob(bytes.Data(), shape, options);
}

Napi::Object tensor_to_js(Napi::Env env, const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  auto out = Napi::Object::New(env);
  out.Set("dtype", dtype_name(c.scalar_type()));
  auto shape = Napi::Array::New(env, c.dim());
  for (int64_t i = 0; i < c.dim(); ++i) shape.Set(uint32_t(i), Napi::Number::New(env, double(c.size(i))));
  out.Set("shape", shape);
  size_t bytes = c.numel() * c.element_size();
  auto buf = Napi::ArrayBuffer::New(env, bytes);
  if (bytes) std::memcpy(buf.Data(), c.data_ptr(), bytes);
  out.Set("data", Napi::Uint8Array::New(env, bytes, buf, 0));
  return out;
}

namespace {
template <typename T, typename Array>
Array typed_array_from_tensor(Napi::Env env, const at::Tensor& t, at::ScalarType type) {
  at::Tensor c = t.to(type).contiguous();
  auto arr = Array::New(env, c.numel());
  if (c.numel()) std::memcpy(arr.Data(), c.data_ptr<T>(), c.numel() * sizeof(T));
  return arr;
}
}  // namespace

Napi::Float32Array tensor_to_float32_array(Napi::Env env, const at::Tensor& t) {
  return typed_array_from_tensor<float, Napi::Float32Array>(env, t, at::kFloat);
}

Napi::Int32Array tensor_to_int32_array(Napi::Env env, const at::Tensor& t) {
  return typed_array_from_tensor<int32_t, Napi::Int32Array>(env, t, at::kInt);
}

namespace {
template <typename T, napi_typedarray_type... Accepted>
at::Tensor typed_from_js(const Napi::Value& v, const std::vector<int64_t>& shape, const std::string& what,
                         at::ScalarType st, const char* expected) {
  if (!v.IsTypedArray()) fail(ErrorCode::Input, what, ": expected a ", expected);
  auto ta = v.As<Napi::TypedArray>();
  napi_typedarray_type type = ta.TypedArrayType();
  if (((type != Accepted) && ...)) fail(ErrorCode::Input, what, ": expected a ", expected);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  if (int64_t(ta.ElementLength()) != numel) {
    std::string s;
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    fail(ErrorCode::Shape, what, ": expected ", numel, " values (shape [", s, "]), got ", ta.ElementLength());
  }
  at::Tensor t = at::empty(shape, at::TensorOptions().dtype(st));
  auto* src = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  if (numel) std::memcpy(t.data_ptr(), src, numel * sizeof(T));
  return t;
}
}  // namespace

at::Tensor float32_from_js(const Napi::Value& v, const std::vector<int64_t>& shape, const std::string& what) {
  return typed_from_js<float, napi_float32_array>(v, shape, what, at::kFloat, "Float32Array");
}

at::Tensor int64_from_js(const Napi::Value& v, const std::vector<int64_t>& shape, const std::string& what) {
  return typed_from_js<int64_t, napi_bigint64_array>(v, shape, what, at::kLong, "BigInt64Array");
}

}  // namespace m2vla::addon
