// createTrainer(options) -> Promise<Trainer>: loads the frozen VLM, the head and, resuming, a checkpoint's state.
// trainer.dims(); trainer.step({microBatches, stop?}) -> Promise<{step, loss, lr, gradNorm, ms, collectiveMs?, stop}>,
// with progress (after every
// micro-batch, then after the update) through the onProgress thread-safe function; trainer.gradients(microBatch) ->
// Promise<Record<name, tensor>>; trainer.predict(microBatch, {seed?}) -> Promise<{normalized, shape}>;
// trainer.saveCheckpoint({root, stateJson}) -> Promise<stepDir>; trainer.exportRun({dir}) -> Promise<void>;
// trainer.dispose(). Each call is a TorchWorker (training ones with autograd on); lib/native/queue.ts runs one at a
// time, and a call in flight keeps the trainer alive after dispose().
#include <ATen/ops/from_blob.h>

#include <memory>
#include <string>

#include "addon/addon.h"
#include "addon/config_js.h"
#include "addon/inputs_js.h"
#include "addon/js_args.h"
#include "addon/marshal.h"
#include "addon/workers.h"
#include "error.h"
#include "train/checkpoint.h"
#include "train/trainer.h"

namespace m2vla::addon {
namespace {

// What a JS Trainer holds: the native trainer and the progress callback (released with the last reference).
struct Session {
  std::unique_ptr<train::Trainer> trainer;
  Napi::ThreadSafeFunction progress;
  int threads = 0;
  ~Session() {
    if (progress) progress.Release();
  }
};
using SessionPtr = std::shared_ptr<Session>;

struct ProgressEvent {
  std::string kind;  // "micro" | "step"
  int64_t step = 0, micro = 0, micro_batches = 0;
  double loss = 0, lr = 0, grad_norm = 0, ms = 0, collective_ms = 0;
};

void report(const Session& s, ProgressEvent e) {
  if (!s.progress) return;
  s.progress.BlockingCall(new ProgressEvent(std::move(e)), [](Napi::Env env, Napi::Function fn, ProgressEvent* e) {
    std::unique_ptr<ProgressEvent> event(e);
    if (!env || !fn) return;  // the environment is shutting down
    auto o = Napi::Object::New(env);
    o.Set("kind", e->kind);
    o.Set("step", double(e->step));
    o.Set("loss", e->loss);
    if (e->kind == "micro") {
      o.Set("micro", double(e->micro));
      o.Set("microBatches", double(e->micro_batches));
    } else {
      o.Set("lr", e->lr);
      o.Set("gradNorm", e->grad_norm);
      o.Set("ms", e->ms);
      if (e->collective_ms > 0) o.Set("collectiveMs", e->collective_ms);
    }
    fn.Call({o});
  });
}

Napi::Object metrics_to_js(Napi::Env env, const train::StepMetrics& m) {
  auto o = Napi::Object::New(env);
  o.Set("step", double(m.step));
  o.Set("loss", m.loss);
  o.Set("lr", m.lr);
  o.Set("gradNorm", m.grad_norm);
  o.Set("ms", m.ms);
  if (m.collective_ms > 0) o.Set("collectiveMs", m.collective_ms);
  o.Set("stop", m.stop);
  return o;
}

// {frames: [{data, width, height}], promptIds: BigInt64Array (concatenated), promptLengths: number[],
//  proprio: Float32Array [B * proprioDim], actions: Float32Array [B * chunk * actionDim]} (normalized).
train::MicroBatch micro_batch_from_js(const Napi::Value& v, const train::Trainer& t, const std::string& what) {
  if (!v.IsObject()) fail(ErrorCode::Input, what, ": expected an object");
  auto o = v.As<Napi::Object>();
  const head::HeadDims& d = t.head_dims();
  train::MicroBatch b;
  std::vector<int64_t> lengths = integer_array_option(o, "promptLengths");
  const int64_t n = int64_t(lengths.size());
  if (n < 1) fail(ErrorCode::Input, what, ".promptLengths: no samples");
  int64_t total = 0;
  for (int64_t len : lengths) {
    if (len < 1) fail(ErrorCode::Input, what, ".promptLengths: every prompt needs at least one token");
    total += len;
  }
  at::Tensor ids = int64_from_js(o.Get("promptIds"), {total}, what + ".promptIds");
  const int64_t* p = ids.data_ptr<int64_t>();
  for (int64_t len : lengths) {
    b.prompts.emplace_back(p, p + len);
    p += len;
  }
  b.proprio = float32_from_js(o.Get("proprio"), {n, d.proprio_dim}, what + ".proprio");
  b.actions = float32_from_js(o.Get("actions"), {n, d.chunk, d.action_dim}, what + ".actions");
  Napi::Value fv = o.Get("frames");
  if (!fv.IsArray()) fail(ErrorCode::Input, what, ".frames: expected an array of {data, width, height}");
  auto frames = fv.As<Napi::Array>();
  for (uint32_t i = 0; i < frames.Length(); ++i) {
    const std::string name = what + ".frames[" + std::to_string(i) + "]";
    Napi::Value f = frames.Get(i);
    if (!f.IsObject()) fail(ErrorCode::Input, name, ": expected {data, width, height}");
    auto fo = f.As<Napi::Object>();
    Napi::Value data = fo.Get("data");
    if (!data.IsTypedArray() || data.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      fail(ErrorCode::Input, name, ".data: expected a Uint8Array of HWC RGB bytes");
    auto ta = data.As<Napi::TypedArray>();
    const auto* src = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    // Copied: the JS side may reuse its buffers while the worker runs.
    b.frames.push_back({std::vector<uint8_t>(src, src + ta.ByteLength()), integer_option(fo, "width"), integer_option(fo, "height")});
  }
  return b;
}

class TrainerWorker : public TorchWorker {
 public:
  TrainerWorker(Napi::Env env, SessionPtr session, GradMode grad)
      : TorchWorker(env, session->threads, grad), session_(std::move(session)) {}

 protected:
  train::Trainer& trainer() { return *session_->trainer; }
  SessionPtr session_;
};

class StepWorker : public TrainerWorker {
 public:
  StepWorker(Napi::Env env, SessionPtr s, std::vector<train::MicroBatch> micro, bool stop)
      : TrainerWorker(env, std::move(s), GradMode::Enabled), micro_(std::move(micro)), stop_(stop) {}

 protected:
  void Run() override {
    const int64_t step = trainer().steps_done() + 1, count = int64_t(micro_.size());
    metrics_ = trainer().step(micro_, [&](size_t i, double loss) {
      report(*session_, {"micro", step, int64_t(i), count, loss});
    }, stop_);
    micro_.clear();  // the frames are no longer needed while the promise settles
    report(*session_, {"step", metrics_.step, 0, count, metrics_.loss, metrics_.lr, metrics_.grad_norm, metrics_.ms,
                       metrics_.collective_ms});
  }
  Napi::Value Result(Napi::Env env) override { return metrics_to_js(env, metrics_); }

 private:
  std::vector<train::MicroBatch> micro_;
  bool stop_;
  train::StepMetrics metrics_;
};

class GradientsWorker : public TrainerWorker {
 public:
  GradientsWorker(Napi::Env env, SessionPtr s, train::MicroBatch batch)
      : TrainerWorker(env, std::move(s), GradMode::Enabled), batch_(std::move(batch)) {}

 protected:
  void Run() override {
    grads_ = trainer().gradients(batch_);
    for (auto& [name, g] : grads_) g = g.contiguous();
  }
  Napi::Value Result(Napi::Env env) override {
    auto out = Napi::Object::New(env);
    for (const auto& [name, g] : grads_) out.Set(name, tensor_to_js(env, g));
    return out;
  }

 private:
  train::MicroBatch batch_;
  io::NamedTensors grads_;
};

class PredictWorker : public TrainerWorker {
 public:
  PredictWorker(Napi::Env env, SessionPtr s, train::MicroBatch batch, std::optional<uint64_t> seed)
      : TrainerWorker(env, std::move(s), GradMode::NoGrad), batch_(std::move(batch)), seed_(seed) {}

 protected:
  void Run() override { out_ = trainer().predict(batch_, seed_).contiguous(); }
  Napi::Value Result(Napi::Env env) override {
    auto o = Napi::Object::New(env);
    o.Set("normalized", tensor_to_float32_array(env, out_));
    auto shape = Napi::Array::New(env, 3);
    for (uint32_t i = 0; i < 3; ++i) shape.Set(i, double(out_.size(i)));
    o.Set("shape", shape);
    return o;
  }

 private:
  train::MicroBatch batch_;
  std::optional<uint64_t> seed_;
  at::Tensor out_;
};

class SaveWorker : public TrainerWorker {
 public:
  SaveWorker(Napi::Env env, SessionPtr s, std::string root, std::string state_json)
      : TrainerWorker(env, std::move(s), GradMode::NoGrad), root_(std::move(root)), state_json_(std::move(state_json)) {}

 protected:
  void Run() override { dir_ = train::save_checkpoint(trainer(), root_, state_json_); }
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, dir_); }

 private:
  std::string root_, state_json_, dir_;
};

class ExportWorker : public TrainerWorker {
 public:
  ExportWorker(Napi::Env env, SessionPtr s, std::string dir)
      : TrainerWorker(env, std::move(s), GradMode::NoGrad), dir_(std::move(dir)) {}

 protected:
  void Run() override { train::export_run(trainer(), dir_); }
  Napi::Value Result(Napi::Env env) override { return env.Undefined(); }

 private:
  std::string dir_;
};

class AddonTrainer : public Napi::ObjectWrap<AddonTrainer> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Trainer",
                       {InstanceMethod<&AddonTrainer::Dims>("dims"), InstanceMethod<&AddonTrainer::Step>("step"),
                        InstanceMethod<&AddonTrainer::Gradients>("gradients"), InstanceMethod<&AddonTrainer::Predict>("predict"),
                        InstanceMethod<&AddonTrainer::SaveCheckpoint>("saveCheckpoint"),
                        InstanceMethod<&AddonTrainer::ExportRun>("exportRun"), InstanceMethod<&AddonTrainer::Dispose>("dispose")});
  }

  // Only createTrainer constructs instances: info[0] is an External holding the session.
  explicit AddonTrainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonTrainer>(info) {
    if (!info[0].IsExternal()) throw make_error(info.Env(), "E_INPUT", "Trainer: use createTrainer() to make one");
    session_ = *info[0].As<Napi::External<SessionPtr>>().Data();
  }

 private:
  // Runs `start` with the session, turning m2vla errors thrown on the JS thread into typed JS errors.
  template <typename F>
  Napi::Value call(const Napi::CallbackInfo& info, const char* what, F start) {
    Napi::Env env = info.Env();
    return js_method(env, !session_, std::string("Trainer: ") + what, [&]() -> Napi::Value { return start(env); });
  }

  Napi::Value Dims(const Napi::CallbackInfo& info) {
    return call(info, "dims", [&](Napi::Env env) -> Napi::Value {
      const train::Trainer& t = *session_->trainer;
      const head::HeadDims& d = t.head_dims();
      const model::BackboneConfig& cfg = t.backbone_config();
      auto o = Napi::Object::New(env);
      auto set = [&](const char* k, int64_t v) { o.Set(k, double(v)); };
      set("hidden", d.hidden);
      set("numBlocks", d.num_blocks);
      set("numHeads", d.num_heads);
      set("actionDim", d.action_dim);
      set("chunk", d.chunk);
      set("proprioDim", d.proprio_dim);
      set("bankCapacity", d.bank_capacity);
      set("numImages", cfg.num_images);
      set("numActionQueries", cfg.num_action_queries);
      set("parameters", t.num_parameters());
      set("step", t.steps_done());
      set("rank", t.rank());
      set("worldSize", t.world_size());
      return o;
    });
  }

  Napi::Value Step(const Napi::CallbackInfo& info) {
    return call(info, "step", [&](Napi::Env env) -> Napi::Value {
      Napi::Object o = object_arg(info, 0, "step");
      Napi::Value mv = o.Get("microBatches");
      if (!mv.IsArray()) fail(ErrorCode::Input, "microBatches: expected an array");
      auto arr = mv.As<Napi::Array>();
      std::vector<train::MicroBatch> micro;
      for (uint32_t i = 0; i < arr.Length(); ++i)
        micro.push_back(micro_batch_from_js(arr.Get(i), *session_->trainer, "microBatches[" + std::to_string(i) + "]"));
      return (new StepWorker(env, session_, std::move(micro), bool_option(o, "stop", false)))->Start();
    });
  }

  Napi::Value Gradients(const Napi::CallbackInfo& info) {
    return call(info, "gradients", [&](Napi::Env env) -> Napi::Value {
      return (new GradientsWorker(env, session_, micro_batch_from_js(info[0], *session_->trainer, "microBatch")))->Start();
    });
  }

  Napi::Value Predict(const Napi::CallbackInfo& info) {
    return call(info, "predict", [&](Napi::Env env) -> Napi::Value {
      std::optional<uint64_t> seed;
      if (info[1].IsObject())
        if (auto s = optional_integer(info[1].As<Napi::Object>(), "seed")) seed = uint64_t(*s);
      return (new PredictWorker(env, session_, micro_batch_from_js(info[0], *session_->trainer, "microBatch"), seed))->Start();
    });
  }

  Napi::Value SaveCheckpoint(const Napi::CallbackInfo& info) {
    return call(info, "saveCheckpoint", [&](Napi::Env env) -> Napi::Value {
      Napi::Object o = object_arg(info, 0, "saveCheckpoint");
      return (new SaveWorker(env, session_, string_option(o, "root"), string_option(o, "stateJson")))->Start();
    });
  }

  Napi::Value ExportRun(const Napi::CallbackInfo& info) {
    return call(info, "exportRun", [&](Napi::Env env) -> Napi::Value {
      Napi::Object o = object_arg(info, 0, "exportRun");
      return (new ExportWorker(env, session_, string_option(o, "dir")))->Start();
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    session_.reset();
    return info.Env().Undefined();
  }

  SessionPtr session_;
};

class CreateTrainerWorker : public TorchWorker {
 public:
  CreateTrainerWorker(Napi::Env env, Napi::FunctionReference* ctor, SessionPtr session, train::TrainerOptions options)
      : TorchWorker(env, session->threads, GradMode::NoGrad), ctor_(ctor), session_(std::move(session)),
        options_(std::move(options)) {}

 protected:
  // Not under InferenceMode: tensors made there could never take part in autograd.
  void Run() override { session_->trainer = std::make_unique<train::Trainer>(options_); }
  Napi::Value Result(Napi::Env env) override { return ctor_->New({Napi::External<SessionPtr>::New(env, &session_)}); }

 private:
  Napi::FunctionReference* ctor_;
  SessionPtr session_;
  train::TrainerOptions options_;
};

train::TrainerOptions trainer_options_from_js(Napi::Env env, const Napi::Object& o) {
  train::TrainerOptions t;
  t.model_path = string_option(o, "modelPath");
  t.backbone = backbone_config_from_js(o.Get("backbone"));
  t.preprocess = preprocess_options_from_js(env, object_option(o, "preprocess"));
  t.augment = augment_options_from_js(o.Get("imageAugmentation"));
  t.action_head_path = string_option(o, "actionHeadPath");
  t.proprio_path = string_option(o, "proprioProjectorPath");
  if (o.Get("resumeFrom").IsString()) train::resume_from(t, string_option(o, "resumeFrom"));
  t.head = head_options_from_js(object_option(o, "head"));
  t.adamw.beta1 = number_option(o, "beta1", t.adamw.beta1);
  t.adamw.beta2 = number_option(o, "beta2", t.adamw.beta2);
  t.adamw.weight_decay = number_option(o, "weightDecay", t.adamw.weight_decay);
  t.adamw.eps = number_option(o, "eps", t.adamw.eps);
  t.schedule.base_lr = number_option(o, "lr", t.schedule.base_lr);
  t.schedule.total_steps = integer_option(o, "steps");
  if (auto w = optional_integer(o, "warmup")) t.schedule.warmup_steps = *w;
  std::string kind = o.Get("schedule").IsUndefined() ? "cosine" : string_option(o, "schedule");
  if (kind == "cosine") t.schedule.kind = train::LrSchedule::Kind::Cosine;
  else if (kind == "step") t.schedule.kind = train::LrSchedule::Kind::Step;
  else fail(ErrorCode::Input, "schedule: expected 'cosine' or 'step', got '", kind, "'");
  if (!o.Get("decayAt").IsUndefined()) t.schedule.milestones = integer_array_option(o, "decayAt");
  t.schedule.gamma = number_option(o, "gamma", t.schedule.gamma);
  if (auto a = optional_integer(o, "accumulation")) t.accumulation = *a;
  t.clip_norm = number_option(o, "clipNorm", t.clip_norm);
  t.memory_sample_rate = number_option(o, "memorySampleRate", t.memory_sample_rate);
  t.bf16 = bool_option(o, "bf16", false);
  // E_CONFIG for a GPU in a CPU-only build or a missing GPU (device.h); float32: the trained weights' dtype.
  if (!o.Get("device").IsUndefined()) t.device = resolve_placement(string_option(o, "device"), "float32").device;
  t.prefix_trick = bool_option(o, "prefixTrick", true);
  if (auto s = optional_integer(o, "seed")) t.seed = uint64_t(*s);
  if (o.Get("distributed").IsObject()) {
    // {rank, worldSize, masterAddr, masterPort, timeoutMs?} (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)
    Napi::Object d = object_option(o, "distributed");
    t.distributed.rank = int(integer_option(d, "rank"));
    t.distributed.world_size = int(integer_option(d, "worldSize"));
    t.distributed.master_addr = string_option(d, "masterAddr");
    t.distributed.master_port = int(integer_option(d, "masterPort"));
    if (auto ms = optional_integer(d, "timeoutMs")) t.distributed.timeout = std::chrono::milliseconds(*ms);
  }
  return t;
}

Napi::Value CreateTrainer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return js_errors(env, [&]() -> Napi::Value {
    Napi::Object o = object_arg(info, 0, "createTrainer");
    auto session = std::make_shared<Session>();
    session->threads = threads_option(o);
    train::TrainerOptions options = trainer_options_from_js(env, o);
    Napi::Value cb = o.Get("onProgress");
    if (cb.IsFunction()) {
      session->progress = Napi::ThreadSafeFunction::New(env, cb.As<Napi::Function>(), "m2vla.train.progress", 0, 1);
      session->progress.Unref(env);  // a trainer never disposed must not keep the process alive
    } else if (!cb.IsUndefined()) {
      fail(ErrorCode::Input, "onProgress: expected a function");
    }
    auto* ctor = static_cast<Napi::FunctionReference*>(info.Data());
    return (new CreateTrainerWorker(env, ctor, std::move(session), std::move(options)))->Start();
  });
}

}  // namespace

void init_trainer(Napi::Env env, Napi::Object exports) {
  auto* ctor = new Napi::FunctionReference(Napi::Persistent(AddonTrainer::Define(env)));
  env.AddCleanupHook([ctor] { delete ctor; });
  exports.Set("createTrainer", Napi::Function::New(env, CreateTrainer, "createTrainer", ctor));
}

}  // namespace m2vla::addon
