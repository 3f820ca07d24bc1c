#include "addon/workers.h"

#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>

#include <optional>

#include "error.h"

namespace m2vla::addon {

TorchWorker::TorchWorker(Napi::Env env, int threads, GradMode grad)
    : Napi::AsyncWorker(env, "m2vla.torch"), deferred_(Napi::Promise::Deferred::New(env)), threads_(threads), grad_(grad) {}

Napi::Promise TorchWorker::Start() {
  auto promise = deferred_.Promise();
  Queue();
  return promise;
}

void TorchWorker::Execute() {
  try {
    // OpenMP's thread count and autograd's mode are thread-local: set them on this worker thread.
    at::init_num_threads();
    if (threads_ > 0) at::set_num_threads(threads_);
    std::optional<c10::InferenceMode> inference;
    std::optional<c10::AutoGradMode> grad;
    if (grad_ == GradMode::Inference) inference.emplace(true);
    else grad.emplace(grad_ == GradMode::Enabled);
    Run();
  } catch (const m2vla::Error& e) {
    code_ = error_code_name(e.code());
    SetError(e.what());
  } catch (const c10::Error& e) {
    code_ = "E_NATIVE";
    SetError(std::string("libtorch: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    code_ = "E_NATIVE";
    SetError(e.what());
  }
}

void TorchWorker::OnOK() {
  Napi::HandleScope scope(Env());
  try {
    deferred_.Resolve(Result(Env()));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (const std::exception& e) {
    deferred_.Reject(make_error(Env(), "E_NATIVE", e.what()).Value());
  }
}

void TorchWorker::OnError(const Napi::Error& e) {
  Napi::HandleScope scope(Env());
  deferred_.Reject(make_error(Env(), code_.c_str(), e.Message()).Value());
}

Napi::Error make_error(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

int threads_option(const Napi::Object& options) {
  if (!options.Has("threads")) return 0;
  auto v = options.Get("threads");
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : 0;
}

}  // namespace m2vla::addon
