// createHead({actionHeadPath, proprioProjectorPath, config, dtype, threads}) -> Promise<Head>;
// head.forward({hiddenStates, hiddenShape, promptLen, proprio, referenceCasts, intermediates, impl, seed}) ->
// Promise<{normalized, shape, retrieval, intermediates?}>; head.dims(); head.memoryBank() -> Promise<{keys, values,
// size}> (a copy of its MSM bank); head.addSkills({keys, values}) -> Promise<bank size> (rows appended to that bank);
// head.writeBank({from, to}) -> Promise<void> (checkpoint `from` rewritten as `to` with the bank as it is); head.dispose().
// normalizeBounds / unnormalizeBounds: the BOUNDS_Q99 maps (synchronous: a few numbers).
// Loading and forward run in TorchWorkers; a forward in flight keeps the head alive after dispose() (shared_ptr).
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

#include <cstring>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <utility>

#include "addon/addon.h"
#include "addon/config_js.h"
#include "addon/inputs_js.h"
#include "addon/models_js.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "head/action_head.h"
#include "head/normalize.h"

namespace m2vla::addon {
namespace {

// Marks JS objects made by this class (napi_type_tag): random, fixed.
constexpr napi_type_tag kHeadTag = {0x6d32766c610002ULL, 0xa3d92f10e85b61c2ULL};

// Not const: addSkills() grows a loaded head's bank (under the head's bank lock).
using HeadPtr = std::shared_ptr<head::ActionHead>;

Napi::Object dims_to_js(Napi::Env env, const head::ActionHead& h) {
  const head::HeadDims& d = h.dims();
  auto o = Napi::Object::New(env);
  auto set = [&](const char* k, int64_t v) { o.Set(k, Napi::Number::New(env, double(v))); };
  set("hidden", d.hidden);
  set("numBlocks", d.num_blocks);
  set("numHeads", d.num_heads);
  set("headDim", d.head_dim);
  set("actionDim", d.action_dim);
  set("chunk", d.chunk);
  set("proprioDim", d.proprio_dim);
  set("keyDim", d.key_dim);
  set("bankCapacity", d.bank_capacity);
  set("bankSize", h.bank().size());
  o.Set("ablation", head::ablation_name(h.options().ablation));
  return o;
}

class AddonHead : public Napi::ObjectWrap<AddonHead> {
 public:
  const HeadPtr& model() const { return head_; }
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Head", {InstanceMethod<&AddonHead::Forward>("forward"), InstanceMethod<&AddonHead::Dims>("dims"),
                                     InstanceMethod<&AddonHead::Bank>("memoryBank"),
                                     InstanceMethod<&AddonHead::AddSkills>("addSkills"),
                                     InstanceMethod<&AddonHead::WriteBank>("writeBank"),
                                     InstanceMethod<&AddonHead::Dispose>("dispose")});
  }

  // Only createHead constructs instances: info[0] is an External holding the loaded head, info[1] the threads.
  explicit AddonHead(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonHead>(info) {
    info.This().As<Napi::Object>().TypeTag(&kHeadTag);
    if (!info[0].IsExternal()) throw make_error(info.Env(), "E_INPUT", "Head: use createHead() to load one");
    head_ = *info[0].As<Napi::External<HeadPtr>>().Data();
    threads_ = info[1].As<Napi::Number>().Int32Value();
  }

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info);
  Napi::Value Dims(const Napi::CallbackInfo& info) {
    if (!head_) throw make_error(info.Env(), "E_DISPOSED", "Head: dims() after dispose()");
    return dims_to_js(info.Env(), *head_);
  }
  Napi::Value Bank(const Napi::CallbackInfo& info) {
    if (!head_) throw make_error(info.Env(), "E_DISPOSED", "Head: memoryBank() after dispose()");
    return start_bank_snapshot(info.Env(), threads_, std::shared_ptr<const head::MemoryBank>(head_, &head_->bank()),
                               &head_->bank_mutex());
  }
  Napi::Value AddSkills(const Napi::CallbackInfo& info);
  Napi::Value WriteBank(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    head_.reset();
    return info.Env().Undefined();
  }

  HeadPtr head_;
  int threads_ = 0;
};

class LoadHeadWorker : public TorchWorker {
 public:
  LoadHeadWorker(Napi::Env env, Napi::FunctionReference* ctor, std::string head_path, std::string proprio_path,
                 head::HeadOptions options, int threads)
      : TorchWorker(env, threads), ctor_(ctor), head_path_(std::move(head_path)), proprio_path_(std::move(proprio_path)),
        options_(std::move(options)), threads_(threads) {}

 protected:
  void Run() override { head_ = head::ActionHead::load(head_path_, proprio_path_, options_); }
  Napi::Value Result(Napi::Env env) override {
    return ctor_->New({Napi::External<HeadPtr>::New(env, &head_), Napi::Number::New(env, threads_)});
  }

 private:
  Napi::FunctionReference* ctor_;
  std::string head_path_, proprio_path_;
  head::HeadOptions options_;
  int threads_;
  HeadPtr head_;
};

// Result tensors are made float32, contiguous and host-resident on the worker thread, so Result() only copies bytes.
// Undefined ones (what an ablation does not compute) stay undefined and are left out of the JS object.
at::Tensor f32(const at::Tensor& t) { return t.defined() ? t.to(at::kCPU, at::kFloat).contiguous() : t; }

void set_defined(Napi::Env env, Napi::Object& o, const char* key, const at::Tensor& t) {
  if (t.defined()) o.Set(key, tensor_to_js(env, t));
}

// The per-block intermediates by their JS names (intermediates.blocks[i]).
using BlockField = at::Tensor head::BlockTrace::*;
constexpr std::pair<const char*, BlockField> kBlockFields[] = {
    {"in", &head::BlockTrace::in},           {"tanhG", &head::BlockTrace::tanh_g},
    {"saWeights", &head::BlockTrace::sa_weights}, {"caSWeights", &head::BlockTrace::ca_s_weights},
    {"caSGate", &head::BlockTrace::ca_s_gate},    {"caVWeights", &head::BlockTrace::ca_v_weights},
    {"attnMix", &head::BlockTrace::attn_mix},     {"oProjOut", &head::BlockTrace::o_proj_out},
    {"memWeights", &head::BlockTrace::mem_weights}, {"memContext", &head::BlockTrace::mem_context},
    {"ffnIn", &head::BlockTrace::ffn_in},         {"out", &head::BlockTrace::out},
};

}  // namespace

void prepare_head_output(head::HeadForwardOutput& out) {
  out.normalized = f32(out.normalized);
  if (out.trace) {
    head::HeadTrace& t = *out.trace;
    for (at::Tensor* p : {&t.input_aq, &t.proprio_features, &t.h_memory, &t.x0}) *p = f32(*p);
    for (auto& b : t.blocks)
      for (const auto& [name, field] : kBlockFields) b.*field = f32(b.*field);
  }
}

Napi::Object head_output_to_js(Napi::Env env, const head::HeadForwardOutput& r) {
  auto out = Napi::Object::New(env);
  out.Set("normalized", tensor_to_float32_array(env, r.normalized));
  auto shape = Napi::Array::New(env, 3);
  for (uint32_t i = 0; i < 3; ++i) shape.Set(i, Napi::Number::New(env, double(r.normalized.size(i))));
  out.Set("shape", shape);
  auto retrieval = Napi::Object::New(env);
  retrieval.Set("indices", tensor_to_int32_array(env, r.retrieval.indices));
  retrieval.Set("similarities", tensor_to_float32_array(env, r.retrieval.similarities));
  retrieval.Set("values", tensor_to_float32_array(env, r.retrieval.values));
  retrieval.Set("queryKeys", tensor_to_float32_array(env, r.query_keys));
  out.Set("retrieval", retrieval);
  if (r.trace) {
    const head::HeadTrace& t = *r.trace;
    auto tr = Napi::Object::New(env);
    set_defined(env, tr, "inputAq", t.input_aq);
    set_defined(env, tr, "proprioFeatures", t.proprio_features);
    set_defined(env, tr, "hMemory", t.h_memory);
    set_defined(env, tr, "x0", t.x0);
    auto blocks = Napi::Array::New(env, t.blocks.size());
    for (size_t i = 0; i < t.blocks.size(); ++i) {
      const head::BlockTrace& b = t.blocks[i];
      auto o = Napi::Object::New(env);
      for (const auto& [name, field] : kBlockFields) set_defined(env, o, name, b.*field);
      blocks.Set(uint32_t(i), o);
    }
    tr.Set("blocks", blocks);
    out.Set("intermediates", tr);
  }
  return out;
}

namespace {

class HeadForwardWorker : public TorchWorker {
 public:
  HeadForwardWorker(Napi::Env env, int threads, HeadPtr head, head::HeadForwardInput in)
      : TorchWorker(env, threads), head_(std::move(head)), in_(std::move(in)) {}

 protected:
  void Run() override {
    const c10::Device device = head_->options().device;
    in_.hidden = in_.hidden.to(device);
    in_.proprio = in_.proprio.to(device);
    // The fused kernels are CPU loops: a head on a GPU runs the plain libtorch ops when asked for them.
    if (!device.is_cpu() && in_.mol == head::Backend::CpuFused) in_.mol = in_.retrieval = head::Backend::Reference;
    out_ = head_->forward(in_);
    prepare_head_output(out_);
  }

  Napi::Value Result(Napi::Env env) override { return head_output_to_js(env, out_); }

 private:
  HeadPtr head_;
  head::HeadForwardInput in_;
  head::HeadForwardOutput out_;
};

Napi::Value AddonHead::Forward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_method(env, !head_, "Head: forward", [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "forward");
    std::vector<int64_t> shape = integer_array_option(o, "hiddenShape");
    if (shape.size() != 4) fail(ErrorCode::Shape, "hiddenShape: expected [L+1, B, seq, D], got ", shape.size(), " dims");
    for (int64_t s : shape)
      if (s < 1) fail(ErrorCode::Shape, "hiddenShape: every dim must be at least 1");
    head::HeadForwardInput in;
    in.hidden = float32_from_js(o.Get("hiddenStates"), shape, "hiddenStates");
    in.prompt_len = integer_option(o, "promptLen");
    in.proprio = float32_from_js(o.Get("proprio"), {shape[1], head_->dims().proprio_dim}, "proprio");
    in.reference_casts = bool_option(o, "referenceCasts", false);
    in.trace = bool_option(o, "intermediates", false);
    Napi::Value impl = o.Get("impl");
    std::string impl_name = impl.IsUndefined() ? (in.trace ? "reference" : "fused") : string_option(o, "impl");
    if (impl_name == "fused") in.mol = in.retrieval = head::Backend::CpuFused;
    else if (impl_name == "reference") in.mol = in.retrieval = head::Backend::Reference;
    else fail(ErrorCode::Input, "impl: expected 'fused' or 'reference', got '", impl_name, "'");
    if (auto seed = optional_integer(o, "seed")) in.seed = uint64_t(*seed);
    return (new HeadForwardWorker(env, threads_, head_, std::move(in)))->Start();
  });
}

// addSkills / writeBank: one bank operation on a worker thread; resolves with the bank's size after it.
class BankWorker : public TorchWorker {
 public:
  BankWorker(Napi::Env env, int threads, HeadPtr head, std::function<void(head::ActionHead&)> op)
      : TorchWorker(env, threads), head_(std::move(head)), op_(std::move(op)) {}

 protected:
  void Run() override {
    op_(*head_);
    std::shared_lock lock(head_->bank_mutex());
    size_ = head_->bank().size();
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, double(size_)); }

 private:
  HeadPtr head_;
  std::function<void(head::ActionHead&)> op_;
  int64_t size_ = 0;
};

// Float32Array of whole rows of `width` values -> [rows, width].
at::Tensor rows_from_js(const Napi::Value& v, int64_t width, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    fail(ErrorCode::Input, "addSkills: ", what, ": expected a Float32Array");
  const int64_t len = int64_t(v.As<Napi::TypedArray>().ElementLength());
  if (len % width != 0) fail(ErrorCode::Shape, "addSkills: ", what, ": expected rows of ", width, " values, got ", len, " values");
  return float32_from_js(v, {len / width, width}, what);
}

Napi::Value AddonHead::AddSkills(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_method(env, !head_, "Head: addSkills", [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "addSkills");
    const head::HeadDims& d = head_->dims();
    at::Tensor keys = rows_from_js(o.Get("keys"), d.key_dim, "keys");
    at::Tensor values = rows_from_js(o.Get("values"), d.chunk * d.action_dim, "values");
    return (new BankWorker(env, threads_, head_, [keys, values](head::ActionHead& h) { h.add_skills(keys, values); }))->Start();
  });
}

Napi::Value AddonHead::WriteBank(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_method(env, !head_, "Head: writeBank", [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "writeBank");
    std::string from = string_option(o, "from"), to = string_option(o, "to");
    return (new BankWorker(env, threads_, head_, [from, to](head::ActionHead& h) { h.write_bank(from, to); }))->Start();
  });
}

Napi::Value CreateHead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "createHead");
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new LoadHeadWorker(env, ctor, string_option(o, "actionHeadPath"), string_option(o, "proprioProjectorPath"),
                               head_options_from_js(o), threads_option(o)))
        ->Start();
  });
}

// A TypedArray of the given type copied into a tensor [len / n, n] (the rows of BOUNDS_Q99 maps).
at::Tensor rows_from_js(const Napi::Value& v, const char* key, int64_t n, napi_typedarray_type type, at::ScalarType st,
                        const char* expected) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) fail(ErrorCode::Input, key, ": expected a ", expected);
  auto a = v.As<Napi::TypedArray>();
  const int64_t len = a.ElementLength();
  if (n == 0 || len % n != 0) fail(ErrorCode::Shape, key, ": expected a multiple of ", n, " values, got ", len);
  auto* data = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  return at::from_blob(data, {len / n, n}, st).clone();
}

}  // namespace

head::BoundsStats bounds_from_js(const Napi::Object& o) {
  Napi::Value q01 = o.Get("q01");
  if (!q01.IsTypedArray()) fail(ErrorCode::Input, "q01: expected a Float64Array");
  const int64_t n = q01.As<Napi::TypedArray>().ElementLength();
  auto stat = [&](const char* key) { return rows_from_js(o.Get(key), key, n, napi_float64_array, at::kDouble, "Float64Array"); };
  head::BoundsStats stats;
  stats.q01 = stat("q01").reshape({n});
  stats.q99 = stat("q99").reshape({n});
  stats.mask = rows_from_js(o.Get("mask"), "mask", n, napi_uint8_array, at::kByte, "Uint8Array").reshape({n}).to(at::kBool);
  return stats;
}

namespace {

// {values, q01, q99, mask}: q01/q99 Float64Array of n statistics, mask Uint8Array (0 = pass through), values rows of n.
Napi::Value map_rows(const Napi::CallbackInfo& info, const char* what, bool unnormalize) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, what);
    head::BoundsStats stats = bounds_from_js(o);
    const int64_t n = stats.q01.numel();
    at::Tensor y = unnormalize
                       ? head::unnormalize_bounds_q99(rows_from_js(o.Get("values"), "values", n, napi_float32_array, at::kFloat, "Float32Array"), stats)
                       : head::normalize_bounds_q99(rows_from_js(o.Get("values"), "values", n, napi_float64_array, at::kDouble, "Float64Array"), stats);
    y = y.contiguous();
    auto out = Napi::Float64Array::New(env, y.numel());
    std::memcpy(out.Data(), y.data_ptr<double>(), y.numel() * sizeof(double));
    return out;
  });
}

Napi::Array layout_to_js(Napi::Env env, const std::vector<head::CheckpointTensor>& layout) {
  auto out = Napi::Array::New(env, layout.size());
  for (size_t i = 0; i < layout.size(); ++i) {
    const head::CheckpointTensor& t = layout[i];
    auto shape = Napi::Array::New(env, t.shape.size());
    for (size_t j = 0; j < t.shape.size(); ++j) shape.Set(j, Napi::Number::New(env, double(t.shape[j])));
    auto o = Napi::Object::New(env);
    o.Set("name", t.name);
    o.Set("shape", shape);
    o.Set("init", head::param_init_name(t.init));
    o.Set("role", head::param_role_name(t.role));
    out.Set(i, o);
  }
  return out;
}

// headCheckpointLayout({hidden, numBlocks, numHeads, actionDim, chunk, proprioDim, keyDim, bankCapacity, ablation?})
// -> {actionHead, proprio}: the tensors of the released checkpoint files, from the head's parameter tables.
Napi::Value HeadCheckpointLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "headCheckpointLayout");
    head::HeadDims d;
    d.hidden = integer_option(o, "hidden");
    d.num_blocks = integer_option(o, "numBlocks");
    d.num_heads = integer_option(o, "numHeads");
    d.action_dim = integer_option(o, "actionDim");
    d.chunk = integer_option(o, "chunk");
    d.proprio_dim = integer_option(o, "proprioDim");
    d.key_dim = integer_option(o, "keyDim");
    d.bank_capacity = integer_option(o, "bankCapacity");
    auto out = Napi::Object::New(env);
    out.Set("actionHead", layout_to_js(env, head::action_head_layout(d, ablation_from_js(o))));
    out.Set("proprio", layout_to_js(env, head::proprio_layout(d)));
    return out;
  });
}

Napi::Value NormalizeBounds(const Napi::CallbackInfo& info) { return map_rows(info, "normalizeBounds", false); }
Napi::Value UnnormalizeBounds(const Napi::CallbackInfo& info) { return map_rows(info, "unnormalizeBounds", true); }

}  // namespace

void init_head(Napi::Env env, Napi::Object exports) {
  // The class constructor lives as long as this env; createHead's workers use it to wrap loaded heads.
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(AddonHead::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createHead", Napi::Function::New(env, CreateHead, "createHead", ctor));
  exports.Set("normalizeBounds", Napi::Function::New(env, NormalizeBounds, "normalizeBounds"));
  exports.Set("unnormalizeBounds", Napi::Function::New(env, UnnormalizeBounds, "unnormalizeBounds"));
  exports.Set("headCheckpointLayout", Napi::Function::New(env, HeadCheckpointLayout, "headCheckpointLayout"));
}


std::shared_ptr<const head::ActionHead> head_from_js(const Napi::Value& v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kHeadTag))
    fail(ErrorCode::Input, what, ": expected a Head object");
  const auto& model = AddonHead::Unwrap(v.As<Napi::Object>())->model();
  if (!model) fail(ErrorCode::Disposed, what, ": the Head was disposed");
  return model;
}

}  // namespace m2vla::addon
