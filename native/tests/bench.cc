// m2vla_bench: the policy and the custom kernels timed on a device, without Node (scripts/gpu-acceptance.sh runs it).
//
//   m2vla_bench act <run_dir> [--device cpu|cuda:N] [--dtype auto|float32|bfloat16|int8] [--iters 20] [--warmup 3]
//                   [--batch 1] [--prompt-len 50] [--kernels on|off] [--graph on|off] [--json <file>]
//                   [--expect-path cuda-kernels|cpu-fused|libtorch-ops] [--profile <file>]
//     Loads the run directory (resolve_run_dir), acts once (the first act: kernel choice and self-checks, cuBLAS
//     set-up), then `iters` timed acts without stage syncs (p50/p95/p99, chunks/s, actions/s), 5 acts with
//     synchronized stages (the breakdown), the peak device memory, the dense GEMM peak of the device in the same run,
//     and on CUDA the whole device part captured as one CUDA graph on its own stream with preallocated I/O.
//     --expect-path: exit 1 (after writing the numbers) when the kernel path is another.
//     --profile: one more act under libtorch's (Kineto) profiler: per stage (the m2vla::* scopes) its time, its GEMM
//     FLOPs (from the ops' input shapes) and their floor at the GEMM peak, and the ops by self time; written to <file>.
//   m2vla_bench kernels [--device cuda:N] [--iters 50] [--json <file>]
//     Each CUDA kernel at its production shapes against its libtorch reference on the same GPU.
//   m2vla_bench train <run_dir> [--device cpu|cuda:N] [--steps 5] [--bf16 on|off] [--json <file>]
//     A training smoke run without Node: `steps` optimizer steps on one micro-batch made of fixture A's case1 inputs
//     (its camera frames, prompts and state; random normalized target actions), on the device, and the first step's
//     loss on the CPU from the same seed, which the device's must match (relative 1e-3 with --bf16 on, 1e-4 off).
//   m2vla_bench make-run <out_dir> [--seed 0]
//     Writes a full-size run directory in the released layout (VLA-Adapter/M²-VLA tensor names, bf16, random values,
//     ~3.3 GB, no manifest: vision dims come from the timm ids): DINOv2-L/14-reg4 + SigLIP-so400m/14, projector
//     2176 -> 8704 -> 896 -> 896, Qwen2.5-0.5B (896, 24 layers, 14/2 heads, 4864, vocab 151936), 64 action queries,
//     a head of 24 MoL blocks (14 heads x 64) and a 10,000 x 2688 bank holding 9,000 rows. The same layout as
//     ../shared/tools/make_fullsize_rundir.py, with libtorch only.
// Inputs are random (seeded): raw 256x256 camera images, prompt ids in [3, vocab), a state inside the statistics.
// Prints a table; --json writes the numbers. Exit 0, or 1 with the error on stderr.
#include <ATen/ATen.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <filesystem>

#include "error.h"
#include "head/kernel_cases.h"
#include "fixture.h"
#include "io/write.h"
#include "train/trainer.h"
#include "head/mol/reference.h"
#include "head/msm/reference.h"
#include "head/param_table.h"
#include "policy.h"
#include "run_dir.h"
#include "timing.h"
#include "transfer.h"
#include <torch/csrc/autograd/profiler_kineto.h>
#ifdef M2VLA_WITH_CUDA
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/cuda_glue.h"
#endif

namespace m2vla {
namespace {

using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;

  std::string get(const std::string& key, const std::string& fallback) const {
    auto it = options.find(key);
    return it == options.end() ? fallback : it->second;
  }
  int64_t integer(const std::string& key, int64_t fallback) const { return std::stoll(get(key, std::to_string(fallback))); }
};

Args parse(int argc, char** argv, const std::vector<std::string>& known) {
  Args a;
  for (int i = 2; i < argc; ++i) {
    const std::string s = argv[i];
    if (s.rfind("--", 0) != 0) {
      a.positional.push_back(s);
      continue;
    }
    const std::string key = s.substr(2);
    if (std::find(known.begin(), known.end(), key) == known.end()) fail(ErrorCode::Input, "unknown option --", key);
    if (i + 1 >= argc) fail(ErrorCode::Input, "--", key, ": expected a value");
    a.options[key] = argv[++i];
  }
  return a;
}

// A JSON object written by hand: keys in insertion order, values already formatted.
class JsonObject {
 public:
  JsonObject& num(const std::string& k, double v) {
    std::ostringstream os;
    os.precision(6);
    os << v;
    return raw(k, std::isfinite(v) ? os.str() : "null");
  }
  JsonObject& str(const std::string& k, const std::string& v) { return raw(k, quote(v)); }
  JsonObject& boolean(const std::string& k, bool v) { return raw(k, v ? "true" : "false"); }
  JsonObject& raw(const std::string& k, const std::string& v) {
    fields_.emplace_back(k, v);
    return *this;
  }
  std::string dump() const {
    std::string s = "{";
    for (size_t i = 0; i < fields_.size(); ++i) s += (i ? ", " : "") + quote(fields_[i].first) + ": " + fields_[i].second;
    return s + "}";
  }
  static std::string quote(const std::string& v) {
    std::string q = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') q += '\\', q += c;
      else if (c == '\n') q += "\\n";
      else if (static_cast<unsigned char>(c) < 0x20) q += ' ';
      else q += c;
    }
    return q + "\"";
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, size_t(std::llround(p / 100 * double(v.size() - 1))))];
}

void sync(const c10::Device& d) {
  if (!d.is_cpu()) at::accelerator::synchronizeDevice(d.index());
}

// Milliseconds per call of `f`, averaged over `iters` calls after `warmup`, waiting for the device at both ends.
double time_ms(const c10::Device& d, int64_t warmup, int64_t iters, const std::function<void()>& f) {
  for (int64_t i = 0; i < warmup; ++i) f();
  sync(d);
  const auto t = Clock::now();
  for (int64_t i = 0; i < iters; ++i) f();
  sync(d);
  return ms_since(t) / double(iters);
}

// Dense GEMM throughput of the device in `dtype` (TFLOP/s): the roofline the act() numbers are read against.
double gemm_tflops(const c10::Device& d, at::ScalarType dtype) {
  const int64_t n = d.is_cpu() ? 2048 : 8192;
  const auto opts = at::TensorOptions().device(d).dtype(dtype);
  const at::Tensor a = at::randn({n, n}, opts), b = at::randn({n, n}, opts);
  at::Tensor c = at::empty({n, n}, opts);
  const double ms = time_ms(d, 2, d.is_cpu() ? 3 : 20, [&] { at::matmul_out(c, a, b); });
  return 2.0 * double(n) * double(n) * double(n) / (ms * 1e-3) / 1e12;
}

int64_t peak_rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  return 0;
}

int64_t peak_device_bytes(const c10::Device& d) {
#ifdef M2VLA_WITH_CUDA
  if (d.is_cuda())
    return c10::cuda::CUDACachingAllocator::getDeviceStats(d.index()).allocated_bytes[0].peak;  // 0: aggregate
#endif
  return peak_rss_bytes();
}

struct RandomObservations {
  std::vector<std::vector<uint8_t>> images;
  at::Tensor ids, state;
};

RandomObservations random_observations(const RunSpec& spec, int64_t batch, int64_t prompt_len, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  RandomObservations o;
  for (int64_t i = 0; i < batch * spec.backbone.num_images; ++i) {
    const at::Tensor img = at::randint(256, {256 * 256 * 3}, gen, at::TensorOptions().dtype(at::kByte));
    o.images.emplace_back(img.data_ptr<uint8_t>(), img.data_ptr<uint8_t>() + img.numel());
  }
  o.ids = at::randint(3, std::min<int64_t>(spec.backbone.llm.vocab_size, 150000), {batch, prompt_len}, gen);
  const at::Tensor q01 = spec.stats->proprio.q01, q99 = spec.stats->proprio.q99;
  o.state = q01 + (q99 - q01) * at::rand({batch, q01.numel()}, gen, at::TensorOptions().dtype(at::kDouble));
  return o;
}

ActRequest request(const RandomObservations& o, bool time_stages) {
  ActRequest r;
  for (const auto& bytes : o.images) r.images.push_back({bytes.data(), bytes.size(), 256, 256, "images"});
  r.input_ids = o.ids;
  r.state = o.state;
  r.time_stages = time_stages;
  return r;
}

std::string checks_json(const KernelReport& k) {
  std::string s = "[";
  for (size_t i = 0; i < k.checks.size(); ++i)
    s += (i ? ", " : "") + JsonObject()
                               .str("kernel", k.checks[i].first)
                               .boolean("ok", k.checks[i].second.ok)
                               .num("max_abs_err", k.checks[i].second.max_abs_err)
                               .str("detail", k.checks[i].second.detail)
                               .dump();
  return s + "]";
}

// ---- act --profile: where one act()'s time goes ----------------------------------------------------------------

// 2·M·K·N of the GEMM-like ops (0 for the rest), from their recorded input shapes; composite ops (aten::linear,
// aten::matmul) are left out, their GEMM child counts.
double op_flops(const std::string& name, c10::ArrayRef<std::vector<int64_t>> s) {
  const auto numel = [](const std::vector<int64_t>& v, size_t drop) {
    double n = 1;
    for (size_t i = 0; i + drop < v.size(); ++i) n *= double(v[i]);
    return n;
  };
  const auto ok = [&](size_t i, size_t rank) { return s.size() > i && s[i].size() >= rank; };
  if ((name == "aten::mm") && ok(1, 2)) return 2 * numel(s[0], 0) * double(s[1][1]);
  if ((name == "aten::addmm") && ok(2, 2)) return 2 * numel(s[1], 0) * double(s[2][1]);
  if (name == "aten::bmm" && ok(1, 3)) return 2 * numel(s[0], 0) * double(s[1][2]);
  if (name == "aten::baddbmm" && ok(2, 3)) return 2 * numel(s[1], 0) * double(s[2][2]);
  if (name == "mkldnn::_linear_pointwise") {  // X [.., K], W [N, K]; .binary: X, other, W
    const size_t w = s.size() >= 4 && ok(2, 2) && s[1].size() == s[0].size() ? 2 : 1;
    if (ok(w, 2)) return 2 * numel(s[0], 0) * double(s[w][0]);
  }
  if (name == "onednn::qlinear_pointwise" && ok(4, 1)) return 2 * numel(s[0], 0) * double(s[4][0]);  // qx, .., w_scale [N]
  if (name.find("scaled_dot_product") != std::string::npos && name.find("flash") != std::string::npos && ok(2, 4))
    return 4 * numel(s[0], 0) * double(s[1][2]);  // q [B,H,T,hd], k [B,Hk,S,hd]: QK^T and PV (no causal discount)
  return 0;
}

struct OpStat {
  double self_ms = 0, gflop = 0;
  int64_t calls = 0;
};

JsonObject profile_act(const Policy& policy, const RandomObservations& obs, double gemm_tflops_peak) {
  namespace prof = torch::autograd::profiler;
  using torch::profiler::impl::ActivityType;
  const torch::profiler::impl::ProfilerConfig config(torch::profiler::impl::ProfilerState::KINETO, /*report_input_shapes=*/true);
  const std::set<ActivityType> activities{ActivityType::CPU};
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
  const auto t = Clock::now();
  policy.act(request(obs, false));
  const double wall = ms_since(t);
  const std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();

  // Ops of the calling thread (oneDNN / OpenMP workers record none), nested by their intervals: self = own - children.
  struct Ev {
    uint64_t start, end;
    std::string name, stage;
    double flops, child_ns = 0;
  };
  std::vector<Ev> evs;
  uint64_t main_thread = 0;
  for (const auto& e : result->events())
    if (e.name() == "m2vla::llm") main_thread = e.startThreadId();
  for (const auto& e : result->events())
    if (e.startThreadId() == main_thread && e.deviceType() == c10::DeviceType::CPU)
      evs.push_back({e.startNs(), e.endNs(), e.name(), "", op_flops(e.name(), e.hasShapes() ? e.shapes() : c10::ArrayRef<std::vector<int64_t>>{})});
  std::sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) { return a.start != b.start ? a.start < b.start : a.end > b.end; });
  std::vector<size_t> stack;
  std::map<std::string, double> stage_ms, stage_gflop;
  std::map<std::string, std::map<std::string, OpStat>> ops;  // stage -> op -> stat
  for (size_t i = 0; i < evs.size(); ++i) {
    while (!stack.empty() && evs[stack.back()].end <= evs[i].start) stack.pop_back();
    Ev& e = evs[i];
    if (!stack.empty()) {
      evs[stack.back()].child_ns += double(e.end - e.start);
      e.stage = evs[stack.back()].stage;
    }
    if (e.name.rfind("m2vla::", 0) == 0) e.stage = e.name.substr(7), stage_ms[e.stage] += double(e.end - e.start) * 1e-6;
    if (e.stage.empty()) e.stage = "other";
    stack.push_back(i);
  }
  for (const Ev& e : evs) {
    if (e.name.rfind("m2vla::", 0) == 0) continue;
    OpStat& o = ops[e.stage][e.name];
    o.self_ms += (double(e.end - e.start) - e.child_ns) * 1e-6, o.calls += 1, o.gflop += e.flops * 1e-9;
    stage_gflop[e.stage] += e.flops * 1e-9;
  }
  double scoped = 0;
  for (const auto& [k, v] : stage_ms) scoped += v;
  stage_ms["other"] = wall - scoped;
  // "head" holds retrieval; its own scopes nest in it (the head's stage keeps their self time).
  std::printf("\nprofile of one act(): %.1f ms wall (profiler on); GEMM peak %.0f GFLOP/s\n", wall, gemm_tflops_peak * 1e3);
  std::printf("%-10s %10s %10s %12s %12s\n", "stage", "ms", "GEMM GFLOP", "floor ms", "above floor");
  std::string stages_json = "[", ops_json = "[";
  for (const auto& [stage, ms] : stage_ms) {
    const double gf = stage_gflop[stage], floor = gf / (gemm_tflops_peak * 1e3) * 1e3;
    std::printf("%-10s %10.1f %10.1f %12.1f %12.1f\n", stage.c_str(), ms, gf, floor, ms - floor);
    stages_json += (stages_json.size() > 1 ? ", " : "") +
                   JsonObject().str("stage", stage).num("ms", ms).num("gemm_gflop", gf).num("floor_ms", floor).dump();
  }
  for (auto& [stage, by_op] : ops) {
    std::vector<std::pair<std::string, OpStat>> sorted(by_op.begin(), by_op.end());
    std::sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second.self_ms > b.second.self_ms; });
    std::printf("\n%s: top ops by self time\n%-52s %8s %10s %10s %10s\n", stage.c_str(), "op", "calls", "self ms", "GFLOP", "GFLOP/s");
    for (size_t i = 0; i < sorted.size() && i < 12; ++i) {
      const auto& [name, o] = sorted[i];
      std::printf("%-52s %8lld %10.2f %10.2f %10.0f\n", name.c_str(), (long long)o.calls, o.self_ms, o.gflop,
                  o.gflop > 0 ? o.gflop / o.self_ms * 1e3 : 0.0);
    }
    for (const auto& [name, o] : sorted)
      if (o.self_ms >= 0.05)
        ops_json += (ops_json.size() > 1 ? ", " : "") + JsonObject().str("stage", stage).str("op", name).num("calls", double(o.calls))
                                                            .num("self_ms", o.self_ms).num("gflop", o.gflop).dump();
  }
  return JsonObject().num("wall_ms", wall).raw("stages", stages_json + "]").raw("ops", ops_json + "]");
}

#ifdef M2VLA_WITH_CUDA
// The device part of act() (Policy::forward) captured once as a CUDA graph on a stream of its own, inputs and outputs
// in preallocated device buffers: a replay = copy the new inputs in, replay, copy the actions out.
JsonObject graph_bench(const Policy& policy, const RandomObservations& o, const RunSpec& spec, int64_t iters) {
  JsonObject j;
  const c10::Device d = policy.device();
  // The inputs as act() makes them, once (preprocessing and normalization are host work outside the graph).
  const at::Tensor pixels = model::preprocess_images(request(o, false).images, spec.backbone.num_images, spec.preprocess);
  const at::Tensor proprio = head::normalize_bounds_q99(o.state, spec.stats->proprio).to(at::kFloat);
  const at::Tensor host_pixels = pixels.pin_memory(), host_ids = o.ids.pin_memory(), host_proprio = proprio.pin_memory();
  const c10::cuda::CUDAStream stream = c10::cuda::getStreamFromPool(false, d.index());
  const c10::cuda::CUDAStreamGuard guard(stream);
  const StageSyncScope no_syncs(false);
  at::Tensor in_pixels = host_pixels.to(d), in_ids = host_ids.to(d), in_proprio = host_proprio.to(d);
  for (int i = 0; i < 3; ++i) policy.forward(in_pixels, in_ids, in_proprio);  // allocator pool, cuBLAS handles
  stream.synchronize();
  at::cuda::CUDAGraph graph;
  graph.capture_begin();
  const head::HeadForwardOutput out = policy.forward(in_pixels, in_ids, in_proprio);
  graph.capture_end();
  at::Tensor host_out = at::empty(out.normalized.sizes(), out.normalized.options().device(at::kCPU)).pin_memory();
  std::vector<double> ms;
  for (int64_t i = 0; i < iters + 3; ++i) {
    const auto t = Clock::now();
    in_pixels.copy_(host_pixels, true), in_ids.copy_(host_ids, true), in_proprio.copy_(host_proprio, true);
    graph.replay();
    host_out.copy_(out.normalized, true);
    stream.synchronize();
    if (i >= 3) ms.push_back(ms_since(t));
  }
  // The graph's result against an eager act() on the same inputs.
  ActRequest r = request(o, false);
  const double diff = (policy.act(r).normalized - host_out.to(at::kFloat)).abs().max().item<double>();
  j.num("p50_ms", percentile(ms, 50)).num("p95_ms", percentile(ms, 95)).num("p99_ms", percentile(ms, 99));
  j.num("max_abs_diff_vs_eager", diff);
  return j;
}
#endif

int bench_act(const Args& a) {
  if (a.positional.size() != 1) fail(ErrorCode::Input, "act: expected one run directory");
  const c10::InferenceMode inference;  // as the addon's workers run act(): no autograd records, in-place epilogues
  const Placement placement = resolve_placement(a.get("device", "cpu"), a.get("dtype", "auto"));
  const c10::Device d = placement.device;
  const char* dtype_name = placement.int8 ? "int8" : c10::toString(placement.dtype);  // int8: its activations are bf16
  const int64_t iters = a.integer("iters", 20), warmup = a.integer("warmup", 3), batch = a.integer("batch", 1);
  const int64_t prompt_len = a.integer("prompt-len", 50);
  const bool kernels_on = a.get("kernels", "on") == "on";
  const bool graph_on = a.get("graph", "on") == "on";

  auto t = Clock::now();
  const RunSpec spec = resolve_run_dir(a.positional[0]);
  const auto policy = load_policy(spec, placement, kernels_on);
  sync(d);
  const double load_ms = ms_since(t);
  const RandomObservations obs = random_observations(spec, batch, prompt_len, 0);

  t = Clock::now();
  ActResult first = policy->act(request(obs, false));
  const double first_ms = ms_since(t);
  const KernelReport& k = policy->kernels();
  std::printf("device %s (%s), dtype %s, batch %lld, prompt %lld: kernel path %s\n", d.str().c_str(), placement.name.c_str(),
              dtype_name, (long long)batch, (long long)prompt_len, k.path().c_str());
  for (const auto& w : k.warnings) std::printf("  warning: %s\n", w.c_str());
  for (const auto& [name, r] : k.checks) std::printf("  self-check %s: %s\n", name.c_str(), r.detail.c_str());

  for (int64_t i = 0; i < warmup; ++i) policy->act(request(obs, false));
#ifdef M2VLA_WITH_CUDA
  if (d.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(d.index());
#endif
  std::vector<double> ms;
  for (int64_t i = 0; i < iters; ++i) {
    t = Clock::now();
    policy->act(request(obs, false));
    ms.push_back(ms_since(t));
  }
  const int64_t peak = peak_device_bytes(d);
  StageTimes stages;
  constexpr int kStageRuns = 5;
  for (int i = 0; i < kStageRuns; ++i) {
    const StageTimes s = policy->act(request(obs, true)).times;
    stages.preprocess += s.preprocess / kStageRuns, stages.vision += s.vision / kStageRuns;
    stages.projector += s.projector / kStageRuns, stages.llm += s.llm / kStageRuns;
    stages.head += s.head / kStageRuns, stages.retrieval += s.retrieval / kStageRuns;
  }
  const double gemm = gemm_tflops(d, placement.dtype);
  const double p50 = percentile(ms, 50);
  const int64_t chunk = first.normalized.size(1);

  JsonObject j;
  j.str("run_dir", spec.dir).str("device", d.str()).str("device_name", placement.name).str("dtype", dtype_name);
  j.num("batch", double(batch)).num("prompt_len", double(prompt_len)).str("kernel_path", k.path()).raw("checks", checks_json(k));
  j.num("load_ms", load_ms).num("first_act_ms", first_ms).num("iters", double(iters));
  j.num("p50_ms", p50).num("p95_ms", percentile(ms, 95)).num("p99_ms", percentile(ms, 99)).num("min_ms", percentile(ms, 0));
  j.num("chunks_per_s", 1000.0 * double(batch) / p50).num("actions_per_s", 1000.0 * double(batch * chunk) / p50);
  j.raw("stages_ms", JsonObject()
                         .num("preprocess", stages.preprocess).num("vision", stages.vision).num("projector", stages.projector)
                         .num("llm", stages.llm).num("head", stages.head).num("retrieval", stages.retrieval).dump());
  j.num("peak_device_bytes", double(peak)).num("gemm_peak_tflops", gemm);
  std::printf("  act: p50 %.2f ms, p95 %.2f, p99 %.2f (%lld acts); first act %.0f ms; load %.0f ms\n", p50,
              percentile(ms, 95), percentile(ms, 99), (long long)iters, first_ms, load_ms);
  std::printf("  stages (synchronized, mean of %d): preprocess %.2f, vision %.2f, projector %.2f, llm %.2f, head %.2f, "
              "retrieval %.2f ms\n", kStageRuns, stages.preprocess, stages.vision, stages.projector, stages.llm, stages.head,
              stages.retrieval);
  std::printf("  %.1f chunks/s, %.0f actions/s; peak %s memory %.2f GiB; %s GEMM peak %.1f TFLOP/s\n", 1000.0 * batch / p50,
              1000.0 * batch * chunk / p50, d.is_cpu() ? "host (RSS)" : "device", double(peak) / double(1 << 30),
              c10::toString(placement.dtype), gemm);
#ifdef M2VLA_WITH_CUDA
  if (d.is_cuda() && graph_on) {
    try {
      const JsonObject g = graph_bench(*policy, obs, spec, iters);
      j.raw("graph", g.dump());
      std::printf("  CUDA graph: %s\n", g.dump().c_str());
    } catch (const std::exception& e) {
      j.raw("graph", JsonObject().str("error", e.what()).dump());
      std::printf("  CUDA graph: failed: %s\n", e.what());
    }
  }
#endif
  (void)graph_on;
  if (a.options.count("profile")) {
    const JsonObject p = profile_act(*policy, obs, gemm);
    std::ofstream(a.get("profile", "")) << p.dump() << "\n";
  }
  const std::string json = j.dump();
  if (a.options.count("json")) std::ofstream(a.get("json", "")) << json << "\n";
  else std::printf("%s\n", json.c_str());
  if (a.options.count("expect-path") && k.path() != a.get("expect-path", "")) {
    std::fprintf(stderr, "kernel path is %s, expected %s%s%s\n", k.path().c_str(), a.get("expect-path", "").c_str(),
                 k.warnings.empty() ? "" : ": ", k.warnings.empty() ? "" : k.warnings[0].c_str());
    return 1;
  }
  return 0;
}

int bench_kernels(const Args& a) {
#ifndef M2VLA_WITH_CUDA
  (void)a;
  fail(ErrorCode::Config, "kernels: the CUDA kernels are not in this CPU-only build (configure with -DM2VLA_CUDA=ON)");
#else
  const Placement placement = resolve_placement(a.get("device", "cuda:0"), "bfloat16");
  const c10::Device d = placement.device;
  const int64_t iters = a.integer("iters", 50);
  std::string rows = "[";
  std::printf("%-13s %-26s %12s %12s %8s\n", "kernel", "shape", "cuda ms", "libtorch ms", "speed-up");
  const auto row = [&](const std::string& kernel, const std::string& variant, const std::function<void()>& cuda_fn,
                       const std::function<void()>& ref_fn) {
    const double c = time_ms(d, 3, iters, cuda_fn), r = time_ms(d, 3, iters, ref_fn);
    std::printf("%-13s %-26s %12.4f %12.4f %7.1fx\n", kernel.c_str(), variant.c_str(), c, r, r / c);
    rows += (rows.size() > 1 ? ", " : "") +
            JsonObject().str("kernel", kernel).str("variant", variant).num("cuda_ms", c).num("libtorch_ms", r).dump();
  };
  for (const head::KernelCase& c : head::kernel_cases("molAttention", d)) {
    if (c.variant.rfind("production", 0) != 0) continue;
    head::Tensors in = c.make_inputs(0);
    for (auto& t : in) t = t.to(d);
    const int64_t D = in[2].size(2) / 2, heads = in[1].size(2) - 2 * D;
    const head::MolAttentionInputs v = head::mol_attention_views(in[0], in[1], in[2], in[3], heads);
    const at::ScalarType out = c.variant.find("bf16") != std::string::npos ? at::kBFloat16 : at::kFloat;
    row("molAttention", c.variant, [&] { cuda::mol_attention(v, out); }, [&] { head::mol_attention_reference(v); });
  }
  for (const head::KernelCase& c : head::kernel_cases("l1TopK", d)) {
    if (c.variant.rfind("production", 0) != 0) continue;
    head::Tensors in = c.make_inputs(0);
    for (auto& t : in) t = t.to(d);
    const head::L1TopKSizes s = c.variant == "production-batch1" ? head::kL1ProductionSizes
                                                                 : head::L1TopKSizes{2, 2688, 10000, 10000, 4321, 4};
    row("l1TopK", c.variant, [&] { cuda::l1_topk(in[0], in[1], s.size, s.oldest, s.top_k); },
        [&] { head::l1_topk_reference(in[0], in[1], s.size, s.oldest, s.top_k); });
  }
  const std::string json = JsonObject().str("device", d.str()).str("device_name", placement.name).raw("kernels", rows + "]").dump();
  if (a.options.count("json")) std::ofstream(a.get("json", "")) << json << "\n";
  return 0;
#endif
}

// ---- train: a few optimizer steps on a device --------------------------------------------------------------------

train::MicroBatch fixture_micro_batch(const RunSpec& spec, int64_t chunk, int64_t action_dim) {
  const ActRequest r = test::case_request("case1", false);
  train::MicroBatch b;
  for (size_t i = 0; i < r.images.size(); ++i) b.frames.push_back({r.image_bytes[i], r.images[i].width, r.images[i].height});
  for (int64_t i = 0; i < r.input_ids.size(0); ++i) {
    const at::Tensor row = r.input_ids[i].contiguous();
    b.prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + row.numel());
  }
  b.proprio = head::normalize_bounds_q99(r.state, spec.stats->proprio).to(at::kFloat);
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(7);
  b.actions = at::rand({r.input_ids.size(0), chunk, action_dim}, gen) * 2 - 1;
  return b;
}

std::vector<double> train_losses(const RunSpec& spec, c10::Device device, bool bf16, int64_t steps) {
  train::TrainerOptions o;
  o.model_path = spec.model_file, o.backbone = spec.backbone, o.preprocess = spec.preprocess;
  o.action_head_path = spec.action_head_file, o.proprio_path = spec.proprio_projector_file;
  o.head = spec.head, o.schedule.total_steps = steps, o.bf16 = bf16, o.device = device, o.seed = 3;
  o.memory_sample_rate = 1;  // every step appends to the bank: the device's bank append runs too
  train::Trainer trainer(o);
  const train::MicroBatch batch = fixture_micro_batch(spec, trainer.head_dims().chunk, trainer.head_dims().action_dim);
  std::vector<double> losses;
  for (int64_t i = 0; i < steps; ++i) {
    losses.push_back(trainer.step({batch}, nullptr).loss);
  }
  // What a checkpoint holds comes back to the host.
  for (const auto& [name, t] : trainer.training_state())
    if (!t.device().is_cpu()) fail(ErrorCode::Native, "training state '", name, "' is not on the host");
  return losses;
}

int bench_train(const Args& a) {
  if (a.positional.size() != 1) fail(ErrorCode::Input, "train: expected one run directory");
  const c10::Device device = resolve_placement(a.get("device", "cpu"), "float32").device;
  const bool bf16 = a.get("bf16", "on") == "on";
  const int64_t steps = a.integer("steps", 5);
  const RunSpec spec = resolve_run_dir(a.positional[0]);
  auto t = Clock::now();
  const std::vector<double> losses = train_losses(spec, device, bf16, steps);
  const double device_ms = ms_since(t);
  const double cpu_first = train_losses(spec, c10::kCPU, bf16, 1)[0];
  const double rel = std::abs(losses[0] - cpu_first) / std::max(std::abs(cpu_first), 1e-12);
  const double tol = bf16 ? 1e-3 : 1e-4;
  std::string list = "[";
  for (size_t i = 0; i < losses.size(); ++i) list += (i ? ", " : "") + std::to_string(losses[i]);
  list += "]";
  std::printf("train on %s (%s): losses %s in %.0f ms; first loss on the CPU %.6f, relative difference %.2e (limit %.0e)\n",
              device.str().c_str(), bf16 ? "bf16" : "float32", list.c_str(), device_ms, cpu_first, rel, tol);
  const std::string json = JsonObject().str("device", device.str()).boolean("bf16", bf16).raw("losses", list)
                               .num("cpu_first_loss", cpu_first).num("relative_difference", rel).num("ms", device_ms).dump();
  if (a.options.count("json")) std::ofstream(a.get("json", "")) << json << "\n";
  for (double l : losses)
    if (!std::isfinite(l)) fail(ErrorCode::Native, "a loss is not finite: ", list);
  if (!(rel <= tol)) fail(ErrorCode::Native, "the first loss on ", device.str(), " (", losses[0], ") differs from the CPU's (",
                          cpu_first, ") by ", rel, " relative, over ", tol);
  return 0;
}

// ---- make-run: a full-size run directory with random weights -----------------------------------------------------

enum class Init { Normal, Zero, One, LayerScale, Small, Bank };

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  Init init;
};

std::vector<TensorSpec> vlm_tensors() {
  std::vector<TensorSpec> t;
  const auto lin = [&](const std::string& n, int64_t o, int64_t i, bool bias = true) {
    t.push_back({n + ".weight", {o, i}, Init::Normal});
    if (bias) t.push_back({n + ".bias", {o}, Init::Zero});
  };
  const auto ln = [&](const std::string& n, int64_t d, bool bias = true) {
    t.push_back({n + ".weight", {d}, Init::One});
    if (bias) t.push_back({n + ".bias", {d}, Init::Zero});
  };
  const auto vit = [&](const std::string& p, int64_t d, int64_t depth, int64_t mlp, int64_t reg, bool cls, bool ls, bool pool) {
    if (cls) t.push_back({p + "cls_token", {1, 1, d}, Init::Normal});
    if (reg) t.push_back({p + "reg_token", {1, reg, d}, Init::Normal});
    t.push_back({p + "pos_embed", {1, 256, d}, Init::Normal});
    t.push_back({p + "patch_embed.proj.weight", {d, 3, 14, 14}, Init::Normal});
    t.push_back({p + "patch_embed.proj.bias", {d}, Init::Zero});
    for (int64_t b = 0; b < depth; ++b) {
      const std::string q = p + "blocks." + std::to_string(b) + ".";
      ln(q + "norm1", d), lin(q + "attn.qkv", 3 * d, d), lin(q + "attn.proj", d, d), ln(q + "norm2", d);
      lin(q + "mlp.fc1", mlp, d), lin(q + "mlp.fc2", d, mlp);
      if (ls) t.push_back({q + "ls1.scale_factor", {d}, Init::LayerScale}), t.push_back({q + "ls2.scale_factor", {d}, Init::LayerScale});
    }
    ln(p + "norm", d);
    if (pool) {
      t.push_back({p + "attn_pool.latent", {1, 1, d}, Init::Normal});
      lin(p + "attn_pool.q", d, d), lin(p + "attn_pool.kv", 2 * d, d), lin(p + "attn_pool.proj", d, d);
      ln(p + "attn_pool.norm", d), lin(p + "attn_pool.mlp.fc1", mlp, d), lin(p + "attn_pool.mlp.fc2", d, mlp);
    }
  };
  vit("vision_backbone.featurizer.", 1024, 24, 4096, 4, true, true, false);
  vit("vision_backbone.fused_featurizer.", 1152, 27, 4304, 0, false, false, true);
  lin("projector.fc1", 8704, 2176), lin("projector.fc2", 896, 8704), lin("projector.fc3", 896, 896);
  t.push_back({"language_model.model.embed_tokens.weight", {151936, 896}, Init::Normal});
  for (int l = 0; l < 24; ++l) {
    const std::string q = "language_model.model.layers." + std::to_string(l) + ".";
    ln(q + "input_layernorm", 896, false), ln(q + "post_attention_layernorm", 896, false);
    lin(q + "self_attn.q_proj", 896, 896), lin(q + "self_attn.k_proj", 128, 896), lin(q + "self_attn.v_proj", 128, 896);
    lin(q + "self_attn.o_proj", 896, 896, false);
    lin(q + "mlp.gate_proj", 4864, 896, false), lin(q + "mlp.up_proj", 4864, 896, false), lin(q + "mlp.down_proj", 896, 4864, false);
  }
  ln("language_model.model.norm", 896, false);
  t.push_back({"action_queries.weight", {64, 896}, Init::Normal});
  return t;
}

// The head's checkpoint files as its parameter tables declare them (head/param_table.h); the bank's int64 size is
// written by the caller.
std::vector<TensorSpec> head_tensors(const std::vector<head::CheckpointTensor>& layout) {
  std::vector<TensorSpec> t;
  for (const head::CheckpointTensor& e : layout) {
    using I = head::ParamInit;
    const Init init = e.init == I::Zero ? Init::Zero : e.init == I::One ? Init::One : e.init == I::Small ? Init::Small
                      : e.init == I::Bank ? Init::Bank : Init::Normal;
    if (e.init != I::Count) t.push_back({e.name, e.shape, init});
  }
  return t;
}

io::NamedTensors materialize(const std::vector<TensorSpec>& spec, at::Generator& gen) {
  io::NamedTensors out;
  for (const TensorSpec& s : spec) {
    const auto f32 = at::TensorOptions().dtype(at::kFloat);
    at::Tensor v;
    switch (s.init) {
      case Init::Normal: v = at::randn(s.shape, gen, f32) * 0.02; break;
      case Init::Zero: v = at::zeros(s.shape, f32); break;
      case Init::One: v = at::ones(s.shape, f32); break;
      case Init::LayerScale: v = at::full(s.shape, 1e-5, f32); break;
      case Init::Small: v = at::randn(s.shape, gen, f32) * 0.1; break;
      case Init::Bank: v = at::randn(s.shape, gen, f32) * 0.5; break;
    }
    out.emplace_back(s.name, v.to(at::kBFloat16));
  }
  return out;
}

// What resolve_run_dir and bench/reference/eager.py read of a released config.json (Qwen2.5-0.5B text config).
const char* const kFullSizeConfig = R"({
  "architectures": ["OpenVLAForActionPrediction"], "model_type": "openvla", "dtype": "bfloat16", "torch_dtype": "bfloat16",
  "image_sizes": [224, 224], "use_fused_vision_backbone": true, "image_resize_strategy": "resize-naive",
  "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
  "timm_override_act_layers": [null, null], "hf_llm_id": "Qwen/Qwen2.5-0.5B", "pad_token_id": 151643,
  "text_config": {
    "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768, "max_window_layers": 24,
    "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "vocab_size": 151936, "tie_word_embeddings": true,
    "bos_token_id": 151643, "eos_token_id": 151643, "use_sliding_window": false, "sliding_window": null,
    "attention_dropout": 0.0, "use_cache": true, "dtype": "bfloat16"
  }
}
)";

std::string preprocessor_config() {
  const std::string dino = R"({"inplace": false, "mean": [0.484375, 0.455078125, 0.40625], "std": [0.228515625, 0.2236328125, 0.224609375]})";
  const std::string siglip = R"({"inplace": false, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})";
  const std::string resize = R"({"antialias": true, "interpolation": 3, "max_size": null, "size": [224, 224]})";
  const std::string crop = R"({"output_size": [224, 224]})";
  return std::string("{\n") +
         R"(  "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",)" "\n"
         R"(  "input_sizes": [[3, 224, 224], [3, 224, 224]], "interpolations": ["bicubic", "bicubic"],)" "\n"
         R"(  "means": [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], "stds": [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],)" "\n"
         R"(  "tvf_crop_params": [)" + crop + ", " + crop + R"(], "tvf_do_letterbox": false, "tvf_letterbox_fill": null,)" "\n"
         R"(  "tvf_normalize_params": [)" + dino + ", " + siglip + "],\n" +
         R"(  "tvf_resize_params": [)" + resize + ", " + resize + R"(], "use_fused_vision_backbone": true)" "\n}\n";
}

int make_run(const Args& a) {
  if (a.positional.size() != 1) fail(ErrorCode::Input, "make-run: expected the output directory");
  namespace fs = std::filesystem;
  const fs::path out(a.positional[0]);
  fs::create_directories(out);
  const auto t = Clock::now();
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(uint64_t(a.integer("seed", 0)));
  io::write_safetensors((out / "model.safetensors").string(), materialize(vlm_tensors(), gen));
  head::HeadDims dims;  // the released head: Qwen2.5-0.5B's 24 layers of 896, 14 heads, LIBERO's 7-dof chunk of 8
  dims.hidden = 896, dims.num_blocks = 24, dims.num_heads = 14, dims.action_dim = 7, dims.chunk = 8, dims.proprio_dim = 8;
  dims.key_dim = 3 * 896, dims.bank_capacity = 10000;
  io::NamedTensors head = materialize(head_tensors(head::action_head_layout(dims, head::Ablation::None)), gen);
  head.emplace_back(head::kBankSize, at::scalar_tensor(int64_t(9000), at::TensorOptions().dtype(at::kLong)));
  io::write_safetensors((out / "action_head.safetensors").string(), head);
  io::write_safetensors((out / "proprio_projector.safetensors").string(),
                        materialize(head_tensors(head::proprio_layout(dims)), gen));
  io::write_text((out / "config.json").string(), kFullSizeConfig);
  io::write_text((out / "preprocessor_config.json").string(), preprocessor_config());
  fs::copy_file(std::string(M2VLA_SOURCE_DIR) + "/test/fixtures/m2vla-tiny-a/dataset_statistics.json",
                out / "dataset_statistics.json", fs::copy_options::overwrite_existing);
  std::printf("wrote %s in %.1f s\n", out.string().c_str(), ms_since(t) / 1000);
  return 0;
}

}  // namespace
}  // namespace m2vla

int main(int argc, char** argv) {
  using namespace m2vla;
  const std::string cmd = argc > 1 ? argv[1] : "";
  try {
    if (cmd == "act")
      return bench_act(parse(argc, argv, {"device", "dtype", "iters", "warmup", "batch", "prompt-len", "kernels", "graph", "json", "expect-path", "profile"}));
    if (cmd == "kernels") return bench_kernels(parse(argc, argv, {"device", "iters", "json"}));
    if (cmd == "make-run") return make_run(parse(argc, argv, {"seed"}));
    if (cmd == "train") return bench_train(parse(argc, argv, {"device", "steps", "bf16", "json"}));
    std::fprintf(stderr, "usage: m2vla_bench act <run_dir> [options] | kernels [options] | train <run_dir> [options] | make-run <out_dir> (see bench.cc)\n");
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "m2vla_bench %s: %s: %s\n", cmd.c_str(), error_code_name(e.code()), e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "m2vla_bench %s: libtorch: %s\n", cmd.c_str(), e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "m2vla_bench %s: %s\n", cmd.c_str(), e.what());
  }
  return 1;
}
