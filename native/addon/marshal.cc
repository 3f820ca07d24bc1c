#include "addon/marshal.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include "error.h"

namespace m2vla::addon {

std::string dtype_name(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kByte: return "uint8";
    case at::kChar: return "int8";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
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

Napi::Float32Array tensor_to_float32_array(Napi::Env env, const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  auto arr = Napi::Float32Array::New(env, c.numel());
  if (c.numel()) std::memcpy(arr.Data(), c.data_ptr<float>(), c.numel() * sizeof(float));
  return arr;
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
