// The one AsyncWorker base every heavy addon call uses. Execute() runs on a libuv worker thread and sets what
// libtorch keeps per thread (OpenMP thread count, InferenceMode/NoGradGuard) before Run(); errors of any kind
// (m2vla::Error, c10::Error, std::exception) become a rejected Promise with an error `code` that lib/errors.ts
// turns into a typed class. Subclasses copy their inputs into plain C++ members on the JS thread (constructor)
// and never touch JS from Run().
#pragma once
#include <napi.h>

#include <string>
#include <utility>

#include "error.h"

namespace m2vla::addon {

enum class GradMode { Inference, NoGrad, Enabled };

class TorchWorker : public Napi::AsyncWorker {
 public:
  TorchWorker(Napi::Env env, int threads, GradMode grad = GradMode::Inference);
  Napi::Promise Promise() { return deferred_.Promise(); }
  // Queue the worker and return its promise (the worker deletes itself after OnOK/OnError).
  Napi::Promise Start();

 protected:
  virtual void Run() = 0;                          // worker thread: torch work only
  virtual Napi::Value Result(Napi::Env env) = 0;   // JS thread: marshal the result

 private:
  void Execute() final;
  void OnOK() final;
  void OnError(const Napi::Error& e) final;

  Napi::Promise::Deferred deferred_;
  int threads_;
  GradMode grad_;
  std::string code_ = "E_NATIVE";
};

// Rejection helper for argument errors detected on the JS thread (before any worker starts).
Napi::Error make_error(Napi::Env env, const char* code, const std::string& message);

// The JS-thread part of every addon call (argument checks, copies into workers, synchronous results) runs in here:
// an m2vla::Error thrown by `body` becomes the JS error make_error builds, with its code, as a worker's would.
template <typename Body>
auto js_errors(Napi::Env env, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const m2vla::Error& e) {
    throw make_error(env, error_code_name(e.code()), e.what());
  }
}

// The same for a method of a wrapped object: once dispose() released its native part (`disposed`), the call is an
// E_DISPOSED error "<what>() after dispose()" (what: "Class: method") and `body` does not run.
template <typename Body>
auto js_method(Napi::Env env, bool disposed, const std::string& what, Body&& body) -> decltype(body()) {
  if (disposed) throw make_error(env, "E_DISPOSED", what + "() after dispose()");
  return js_errors(env, std::forward<Body>(body));
}

// Reads an optional numeric `threads` field of an options object (0 = libtorch's default).
int threads_option(const Napi::Object& options);

}  // namespace m2vla::addon
