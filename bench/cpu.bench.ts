/**
 * Full-size act() on this CPU against PyTorch, in one run (the numbers of docs/benchmarks.md): the CPU model and its
 * matrix-engine flags, the 2048³ GEMM peak per dtype, m2vla act() p50 per stage for each dtype (each in its own
 * process, so its peak RSS is its own), and the VLM in PyTorch (transformers + timm, same threads) eager with the
 * LM-head logits (as released), eager without them, and torch.compile (Inductor, freezing) without them; and the
 * error of each dtype's normalized actions against float32 on the same observation (float32 runs 2 timed acts: it
 * is the slow reference on an AMX machine).
 * The PyTorch side runs in the dtype 'auto' picks here (bfloat16 on a CPU with AMX-BF16 or AVX512-BF16, float32 on
 * one without, where PyTorch's bfloat16 is as slow as ours): the comparison a user of this CPU would make.
 *   npm run bench -- cpu [--iters 10] [--dtypes float32,bfloat16,int8] [--eager-dtype auto|float32|bfloat16]
 *                        [--threads 2] [--no-eager] [--no-compile]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { loadPolicy, measureGemmPeak, runtimeInfo } from '../lib/index.js';
import { placementRefusal } from '../lib/backbone.js';
import { fmt, fullsizeRun, printTable, runEager, stats, writeResults } from './harness.js';

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : fallback; };
const iters = Number(flag('iters', '10')), threads = Number(flag('threads', '2'));
const PROMPT = 50;
const STAGES = ['preprocess', 'vision', 'projector', 'llm', 'head', 'retrieval'] as const;

async function child(dtype: string) {
  const t0 = performance.now();
  const policy = await loadPolicy(await fullsizeRun(), { dtype: dtype as 'bfloat16', threads });
  const loadMs = performance.now() - t0;
  const image = (seed: number) => ({ data: Uint8Array.from({ length: 224 * 224 * 3 }, (_, i) => (i * seed + (i >> 9)) % 256), width: 224, height: 224 });
  const obs = { images: { primary: image(7), wrist: image(13) }, inputIds: Array.from({ length: PROMPT }, (_, i) => 3 + ((i * 7919) % 151900)),
    state: Array.from({ length: 8 }, (_, i) => Math.sin(i) * 0.3) };
  const timings: Array<Record<string, number>> = [];
  let normalized: number[] = [];
  for (let i = 0; i < (dtype === 'float32' ? Math.min(iters, 2) : iters) + 1; i++) {
    const t = performance.now();
    const out = await policy.act(obs, { stageTimes: true });  // the CPU: exact stages at no cost
    if (i > 0) timings.push({ ...out.timing, wall: performance.now() - t });  // the first act() is the warm-up
    normalized = Array.from(out.normalized.data);
  }
  const p50 = (k: string) => stats(timings.map((t) => t[k])).p50;
  console.log(JSON.stringify({
    dtype: policy.metadata.dtype, reason: policy.metadata.dtypeReason, loadMs, act: stats(timings.map((t) => t.wall)),
    stages: Object.fromEntries(STAGES.map((k) => [k, p50(k)])), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
    normalized,
  }));
  policy.dispose();
}

/** /proc/cpuinfo's model name and the flags that decide the dtypes (Linux; empty elsewhere). */
function cpuFlags() {
  const text = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const flags = new Set((/^flags\s*:(.*)$/m.exec(text)?.[1] ?? '').trim().split(/\s+/));
  const wanted = ['amx_tile', 'amx_bf16', 'amx_int8', 'amx_fp16', 'avx512f', 'avx512_bf16', 'avx512_vnni', 'avx512_fp16', 'avx2'];
  return { model: /^model name\s*:(.*)$/m.exec(text)?.[1].trim() ?? os.cpus()[0]?.model, flags: wanted.filter((f) => flags.has(f)) };
}

if (argv.includes('--child')) {
  await child(flag('dtype', 'bfloat16'));
} else {
  const run = await fullsizeRun();
  const cpu = cpuFlags(), loadBefore = os.loadavg();
  const { cpuDtype } = await runtimeInfo();
  const eagerFlag = flag('eager-dtype', 'auto');
  const eagerDtype = eagerFlag === 'auto' ? cpuDtype.auto : eagerFlag;
  if (eagerDtype !== 'float32' && eagerDtype !== 'bfloat16') throw new Error(`--eager-dtype: expected auto, float32 or bfloat16, got ${eagerDtype}`);
  const gemm: Record<string, number> = {};
  // Without AVX-512 bfloat16 GEMMs run on ATen's fallback at ~1 GFLOP/s: a 2048³ one would take minutes, 512³ tells.
  const gemmSize = (dtype: string) => (dtype === 'bfloat16' && !cpuDtype.onednnBf16 ? 512 : 2048);
  for (const dtype of ['float32', 'bfloat16'] as const) {
    gemm[dtype] = (await measureGemmPeak({ n: gemmSize(dtype), iters: gemmSize(dtype) === 2048 ? 8 : 2, dtype, threads })).gflops;
  }
  const m2vla = [];
  // By default each dtype only where it runs at speed: int8 needs AVX512-VNNI or AMX-INT8 (elsewhere a ConfigError),
  // bfloat16 oneDNN's kernels (without AVX-512 one full-size act() would take tens of minutes); --dtypes overrides.
  const int8Refusal = placementRefusal('cpu', 'int8');
  const defaults = ['float32', ...(cpuDtype.onednnBf16 ? ['bfloat16'] : []), ...(int8Refusal ? [] : ['int8'])];
  if (!argv.includes('--dtypes')) {
    if (!cpuDtype.onednnBf16) console.log('bfloat16: not run, this CPU has no AVX-512 (ATen\'s fallback bfloat16 GEMM)');
    if (int8Refusal) console.log(`int8: not run: ${int8Refusal}`);
  }
  for (const dtype of flag('dtypes', defaults.join(',')).split(',')) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--dtype', dtype, ...argv],
      { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) throw new Error(`cpu bench ${dtype}: child failed (${r.status})`);
    m2vla.push(JSON.parse(line));
  }
  const eager = argv.includes('--no-eager') ? { skipped: '--no-eager' }
    : runEager([run, '--mode', 'stages', '--dtype', eagerDtype, '--threads', String(threads), '--iters', String(iters),
      '--prompt-len', String(PROMPT), ...(argv.includes('--no-compile') ? [] : ['--compile'])]);
  const loadAfter = os.loadavg();
  type Stages = { vision: number; projector: number; llm: number; total: number; compile_s?: number };
  const ref = eager as unknown as Record<string, Stages>;
  const base = ref.eager_logits?.total;
  const f32 = m2vla.find((r) => r.dtype === 'float32')?.normalized as number[] | undefined;
  for (const r of m2vla) {
    const d = f32 ? r.normalized.map((v: number, i: number) => Math.abs(v - f32[i])) : [];
    r.errorVsFloat32 = f32 ? { max: Math.max(...d), mean: d.reduce((a: number, b: number) => a + b, 0) / d.length } : null;
  }
  const rows: Array<Record<string, string | number>> = m2vla.map((r) => ({
    engine: `m2vla act() ${r.dtype}`, vision: fmt(r.stages.vision), projector: fmt(r.stages.projector), llm: fmt(r.stages.llm),
    'head+retrieval': fmt(r.stages.head + r.stages.retrieval), total: fmt(r.act.p50), p99: fmt(r.act.p99),
    'vs eager+logits': base ? `${(base / r.act.p50).toFixed(2)}×` : '-', 'peak MiB': r.peakRssMiB,
    'max|Δ| vs f32': r.errorVsFloat32 ? r.errorVsFloat32.max.toFixed(4) : '-', 'mean|Δ| vs f32': r.errorVsFloat32 ? r.errorVsFloat32.mean.toFixed(4) : '-',
  }));
  for (const [key, label] of [['eager_logits', 'PyTorch eager, LM-head logits'], ['eager', 'PyTorch eager, no logits'],
    ['compile', 'torch.compile, no logits']] as const) {
    const s = ref[key];
    if (!s) continue;
    rows.push({ engine: label + (s.compile_s ? ` (compile ${s.compile_s.toFixed(0)} s)` : ''), vision: fmt(s.vision),
      projector: fmt(s.projector), llm: fmt(s.llm), 'head+retrieval': '-', total: fmt(s.total), p99: '-',
      'vs eager+logits': base ? `${(base / s.total).toFixed(2)}×` : '-', 'peak MiB': key === 'eager_logits' ? Math.round((ref as never as { peak_gib: number }).peak_gib * 1024) : '-',
      'max|Δ| vs f32': '-', 'mean|Δ| vs f32': '-' });
  }
  console.log(`\nCPU: ${cpu.model}, ${os.cpus().length} cores; flags: ${cpu.flags.join(' ')}`);
  console.log(`GEMM peak, ${threads} threads: float32 ${gemm.float32.toFixed(0)} GFLOP/s (${gemmSize('float32')}³), ` +
    `bfloat16 ${gemm.bfloat16.toFixed(1)} GFLOP/s (${gemmSize('bfloat16')}³)`);
  console.log(`load average before/after: ${loadBefore.map((l) => l.toFixed(2)).join(' ')} / ${loadAfter.map((l) => l.toFixed(2)).join(' ')}`);
  printTable(`full-size VLM + head, batch 1, ${threads} threads, p50 of ${iters} (PyTorch: the VLM only, ${eagerDtype}, ${(eager as { impl?: string }).impl ?? '-'} implementation: 'released' = timm + transformers, 'torch' = bench/reference/torch_only.py)`, rows);
  console.log(`results: ${await writeResults('cpu', { cpu, threads, iters, promptLen: PROMPT, gemmPeakGflops: gemm, gemmSize: { float32: gemmSize('float32'), bfloat16: gemmSize('bfloat16') }, eagerDtype, loadavg: { before: loadBefore, after: loadAfter }, m2vla, pytorch: eager })}`);
}
