// The one AsyncWorker base every heavy addon call uses. Execute() runs on a libuv worker thread and sets what
// libtorch keeps per thread (OpenMP thread count, InferenceMode/NoGradGuard) before Run(); errors of any kind
// (m2vla::Error, c10::Error, std::exception) become a rejected Promise with an error `code` that lib/errors.ts
// turns into a typed class. Subclasses copy their inputs into plain C++ members on the JS thread (constructor)
// and never touch JS from Run().
#pragma once
#include <napi.h>

#include <string>

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

// Reads an optional numeric `threads` field of an options object (0 = libtorch's default).
int threads_option(const Napi::Object& options);

}  // namespace m2vla::addon
