// Tensors across the boundary. JS -> C++ happens on the JS thread (copy into a tensor the worker owns);
// C++ -> JS happens in Result() (copy into a fresh ArrayBuffer). Nothing here runs on a worker thread.
#pragma once
#include <ATen/core/Tensor.h>
#include <napi.h>

#include <string>
#include <vector>

namespace m2vla::addon {

// {dtype, shape, data: Uint8Array} (raw little-endian bytes of a contiguous copy).
Napi::Object tensor_to_js(Napi::Env env, const at::Tensor& t);
// A Float32Array holding the tensor converted to float32.
Napi::Float32Array tensor_to_float32_array(Napi::Env env, const at::Tensor& t);
// An integer tensor copied into an Int32Array (indices, for JS consumers that index arrays with them).
Napi::Int32Array tensor_to_int32_array(Napi::Env env, const at::Tensor& t);
std::string dtype_name(at::ScalarType t);
// The reverse of tensor_to_js, without a copy: a tensor over the Uint8Array's bytes (dtype and byte count checked,
// E_INPUT / E_SHAPE name `what`). It is valid only while that array is alive and unchanged: keep a reference to it.
at::Tensor tensor_view_from_js(const Napi::Value& v, const std::string& what);

// A copy of a TypedArray as a tensor of `shape` (element count checked; E_SHAPE names `what`).
at::Tensor float32_from_js(const Napi::Value& v, const std::vector<int64_t>& shape, const std::string& what);
at::Tensor int64_from_js(const Napi::Value& v, const std::vector<int64_t>& shape, const std::string& what);

}  // namespace m2vla::addon
