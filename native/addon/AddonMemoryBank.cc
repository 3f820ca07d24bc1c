// createMemoryBank({capacity, keyDim, valueDim, threads}) -> Promise<MemoryBank>: a standalone MSM bank (the one
// inside a head is loaded with it). bank.append({keys, values}), bank.query({queries, topK, impl}),
// bank.snapshot(), bank.info(), bank.dispose(). Appends take the bank exclusively, queries and snapshots share it.
#include <ATen/core/Tensor.h>

#include <memory>
#include <mutex>
#include <shared_mutex>

#include "addon/addon.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/models_js.h"
#include "addon/workers.h"
#include "error.h"
#include "head/msm/bank.h"

namespace m2vla::addon {
namespace {

struct SharedBank {
  explicit SharedBank(head::MemoryBank b) : bank(std::move(b)) {}
  std::shared_mutex mutex;
  head::MemoryBank bank;
};
using BankPtr = std::shared_ptr<SharedBank>;

// A Float32Array of rows of `width` values as a [rows, width] tensor.
at::Tensor rows_arg(const Napi::Value& v, int64_t width, const char* what) {
  if (!v.IsTypedArray()) fail(ErrorCode::Input, what, ": expected a Float32Array");
  const int64_t len = v.As<Napi::TypedArray>().ElementLength();
  if (len % width != 0) fail(ErrorCode::Shape, what, ": expected rows of ", width, " values, got ", len, " values");
  return float32_from_js(v, {len / width, width}, what);
}

class CreateBankWorker : public TorchWorker {
 public:
  CreateBankWorker(Napi::Env env, Napi::FunctionReference* ctor, int64_t capacity, int64_t key_dim, int64_t value_dim, int threads)
      : TorchWorker(env, threads), ctor_(ctor), capacity_(capacity), key_dim_(key_dim), value_dim_(value_dim), threads_(threads) {}

 protected:
  void Run() override { bank_ = std::make_shared<SharedBank>(head::MemoryBank(capacity_, key_dim_, value_dim_)); }
  Napi::Value Result(Napi::Env env) override {
    return ctor_->New({Napi::External<BankPtr>::New(env, &bank_), Napi::Number::New(env, threads_)});
  }

 private:
  Napi::FunctionReference* ctor_;
  int64_t capacity_, key_dim_, value_dim_;
  int threads_;
  BankPtr bank_;
};

class AppendWorker : public TorchWorker {
 public:
  AppendWorker(Napi::Env env, int threads, BankPtr bank, at::Tensor keys, at::Tensor values)
      : TorchWorker(env, threads), bank_(std::move(bank)), keys_(std::move(keys)), values_(std::move(values)) {}

 protected:
  void Run() override {
    std::unique_lock lock(bank_->mutex);
    bank_->bank.append(keys_, values_);
    size_ = bank_->bank.size();
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, double(size_)); }

 private:
  BankPtr bank_;
  at::Tensor keys_, values_;
  int64_t size_ = 0;
};

class QueryWorker : public TorchWorker {
 public:
  QueryWorker(Napi::Env env, int threads, BankPtr bank, at::Tensor queries, int64_t top_k, bool reference)
      : TorchWorker(env, threads), bank_(std::move(bank)), queries_(std::move(queries)), top_k_(top_k), reference_(reference) {}

 protected:
  void Run() override {
    std::shared_lock lock(bank_->mutex);
    r_ = reference_ ? bank_->bank.query_reference(queries_, top_k_) : bank_->bank.query(queries_, top_k_);
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("indices", tensor_to_int32_array(env, r_.indices));
    out.Set("similarities", tensor_to_float32_array(env, r_.similarities));
    out.Set("values", tensor_to_float32_array(env, r_.values));
    return out;
  }

 private:
  BankPtr bank_;
  at::Tensor queries_;
  int64_t top_k_;
  bool reference_;
  head::Retrieval r_;
};

}  // namespace

// Copies every row (capacity, bfloat16) and the size. `bank` may alias its owner (a head, a SharedBank) to keep it
// alive; `mutex` guards a bank that appends can change (null for a loaded head's, which never changes).
class SnapshotWorker : public TorchWorker {
 public:
  SnapshotWorker(Napi::Env env, int threads, std::shared_ptr<const head::MemoryBank> bank, std::shared_mutex* mutex)
      : TorchWorker(env, threads), bank_(std::move(bank)), mutex_(mutex) {}

 protected:
  void Run() override {
    std::shared_lock<std::shared_mutex> lock;
    if (mutex_) lock = std::shared_lock(*mutex_);
    keys_ = bank_->keys().clone();
    values_ = bank_->values().clone();
    size_ = bank_->size();
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    out.Set("keys", tensor_to_js(env, keys_));
    out.Set("values", tensor_to_js(env, values_));
    out.Set("size", Napi::Number::New(env, double(size_)));
    return out;
  }

 private:
  std::shared_ptr<const head::MemoryBank> bank_;
  std::shared_mutex* mutex_;
  at::Tensor keys_, values_;
  int64_t size_ = 0;
};

Napi::Value start_bank_snapshot(Napi::Env env, int threads, std::shared_ptr<const head::MemoryBank> bank,
                                std::shared_mutex* mutex) {
  return (new SnapshotWorker(env, threads, std::move(bank), mutex))->Start();
}

namespace {

class AddonMemoryBank : public Napi::ObjectWrap<AddonMemoryBank> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "MemoryBank",
                       {InstanceMethod<&AddonMemoryBank::Append>("append"), InstanceMethod<&AddonMemoryBank::Query>("query"),
                        InstanceMethod<&AddonMemoryBank::Snapshot>("snapshot"), InstanceMethod<&AddonMemoryBank::Info>("info"),
                        InstanceMethod<&AddonMemoryBank::Dispose>("dispose")});
  }

  // Only createMemoryBank constructs instances: info[0] is an External holding the bank, info[1] the threads.
  explicit AddonMemoryBank(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonMemoryBank>(info) {
    if (!info[0].IsExternal()) throw make_error(info.Env(), "E_INPUT", "MemoryBank: use createMemoryBank() to make one");
    bank_ = *info[0].As<Napi::External<BankPtr>>().Data();
    threads_ = info[1].As<Napi::Number>().Int32Value();
  }

 private:
  template <typename Body>
  Napi::Value guarded(const Napi::CallbackInfo& info, const char* what, Body body) {
    Napi::Env env = info.Env();
    return js_method(env, !bank_, std::string("MemoryBank: ") + what, [&]() -> Napi::Value { return body(env); });
  }

  // Dims never change after creation, so reading them here without the lock is safe; size is read under it.
  Napi::Value Append(const Napi::CallbackInfo& info) {
    return guarded(info, "append", [&](Napi::Env env) {
      Napi::Object o = object_arg(info, 0, "append");
      at::Tensor keys = rows_arg(o.Get("keys"), bank_->bank.key_dim(), "keys");
      at::Tensor values = rows_arg(o.Get("values"), bank_->bank.value_dim(), "values");
      return (new AppendWorker(env, threads_, bank_, std::move(keys), std::move(values)))->Start();
    });
  }
  Napi::Value Query(const Napi::CallbackInfo& info) {
    return guarded(info, "query", [&](Napi::Env env) {
      Napi::Object o = object_arg(info, 0, "query");
      at::Tensor queries = rows_arg(o.Get("queries"), bank_->bank.key_dim(), "queries");
      const int64_t top_k = integer_option(o, "topK");
      if (top_k < 1) fail(ErrorCode::Input, "topK: expected at least 1, got ", top_k);
      std::string impl = o.Get("impl").IsUndefined() ? "fused" : string_option(o, "impl");
      if (impl != "fused" && impl != "reference") fail(ErrorCode::Input, "impl: expected 'fused' or 'reference', got '", impl, "'");
      return (new QueryWorker(env, threads_, bank_, std::move(queries), top_k, impl == "reference"))->Start();
    });
  }
  Napi::Value Snapshot(const Napi::CallbackInfo& info) {
    return guarded(info, "snapshot", [&](Napi::Env env) {
      return start_bank_snapshot(env, threads_, std::shared_ptr<const head::MemoryBank>(bank_, &bank_->bank), &bank_->mutex);
    });
  }
  Napi::Value Info(const Napi::CallbackInfo& info) {
    return guarded(info, "info", [&](Napi::Env env) -> Napi::Value {
      std::shared_lock lock(bank_->mutex);
      auto o = Napi::Object::New(env);
      o.Set("size", Napi::Number::New(env, double(bank_->bank.size())));
      o.Set("capacity", Napi::Number::New(env, double(bank_->bank.capacity())));
      o.Set("keyDim", Napi::Number::New(env, double(bank_->bank.key_dim())));
      o.Set("valueDim", Napi::Number::New(env, double(bank_->bank.value_dim())));
      return o;
    });
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    bank_.reset();
    return info.Env().Undefined();
  }

  BankPtr bank_;
  int threads_ = 0;
};

Napi::Value CreateMemoryBank(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "createMemoryBank");
    const int64_t capacity = integer_option(o, "capacity"), key_dim = integer_option(o, "keyDim"),
                  value_dim = integer_option(o, "valueDim");
    if (capacity < 1 || key_dim < 1 || value_dim < 1)
      fail(ErrorCode::Input, "createMemoryBank: capacity, keyDim and valueDim must be at least 1");
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new CreateBankWorker(env, ctor, capacity, key_dim, value_dim, threads_option(o)))->Start();
  });
}

}  // namespace

void init_memory_bank(Napi::Env env, Napi::Object exports) {
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(AddonMemoryBank::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createMemoryBank", Napi::Function::New(env, CreateMemoryBank, "createMemoryBank", ctor));
}

}  // namespace m2vla::addon
