/**
 * act() at full size (random weights; two synthetic 224×224 uint8 cameras, a 50-token prompt, 8-d state):
 * p50/p95/p99 with the stage breakdown, float32 and bfloat16, against PyTorch eager computing what the released code
 * computes (transformers Qwen2 with the LM head over every position + timm ViTs + the M²-VLA head; it starts from
 * pixel values, so it does no preprocessing). Then MSM top-4 retrieval over a 10,000 × 2688 bf16 bank: the fused
 * kernel against at::cdist(p=1) + at::topk, batch 1 and 8.
 * With --device cuda[:N] (a CUDA build and a GPU): the same act() on the GPU, dtype 'auto' unless --dtypes says
 * otherwise, with the kernel path the self-check chose and the peak GPU memory of the caching allocator; the eager
 * and CPU retrieval comparisons are skipped, results go to bench/results/policy-cuda.json.
 *   npm run bench -- policy [--iters 5] [--dtypes float32,bfloat16] [--threads 2] [--no-eager] [--device cuda]
 */
import { getBinding } from '../lib/native/binding.js';
import { runTorchJob } from '../lib/native/queue.js';
import { loadPolicy } from '../lib/index.js';
import { benchArgs, fmt, fullsizeRun, printTable, runEager, timeAsync, writeResults } from './harness.js';

const PROMPT = 50;
const { iters, dtypes: asked, dtypesGiven, threads, device, eager: eagerFlag } = benchArgs({ iters: 5 });
const onGpu = device !== 'cpu';
// A GPU runs in the dtype its compute capability calls for unless told otherwise.
const dtypes: Array<'auto' | 'float32' | 'bfloat16'> = onGpu && !dtypesGiven ? ['auto'] : asked;
const eager = eagerFlag && !onGpu;  // the eager reference runs on the CPU
const run = await fullsizeRun();
// Peak memory of one act() loop: the GPU caching allocator's on a GPU, the process's resident set on the CPU.
const gpuPeak = getBinding().gpuPeakMemory;

function image(seed: number) {
  const data = Uint8Array.from({ length: 224 * 224 * 3 }, (_, i) => (i * seed + (i >> 9)) % 256);
  return { data, width: 224, height: 224 };
}

const actRows = [];
for (const dtype of dtypes) {
  const t0 = performance.now();
  const policy = await loadPolicy(run, { dtype, threads, device });
  const loadMs = performance.now() - t0;
  gpuPeak?.({ device: policy.metadata.device, reset: true });
  const obs = {
    images: { primary: image(7), wrist: image(13) },
    inputIds: Array.from({ length: PROMPT }, (_, i) => 3 + ((i * 7919) % 151900)),
    state: Array.from({ length: 8 }, (_, i) => Math.sin(i) * 0.3),
  };
  // The timed acts run as a user's do (no stage syncs); the stage breakdown comes from synchronized acts after them.
  const s = await timeAsync(`act ${dtype}`, () => policy.act(obs), iters);
  const stages: Array<Record<string, number>> = [];
  for (let i = 0; i < Math.min(iters, 5) + 1; i++) stages.push((await policy.act(obs, { stageTimes: true })).timing);
  const peakBytes = onGpu && gpuPeak
    ? gpuPeak({ device: policy.metadata.device, reset: false }) : process.resourceUsage().maxRSS * 1024;
  const { device: where, deviceName, dtype: resolved, kernels } = policy.metadata;
  policy.dispose();
  const mean = (k: string) => stages.slice(1).reduce((a, t) => a + t[k], 0) / (stages.length - 1);
  const ref = eager ? runEager([run, '--mode', 'policy', '--dtype', dtype, '--threads', String(threads),
    '--iters', String(iters), '--prompt-len', String(PROMPT)]) : { skipped: '--no-eager' };
  const refP50 = 'p50_ms' in ref ? ref.p50_ms : undefined;
  actRows.push({
    device: `${where} (${deviceName})`, dtype: resolved, kernels: kernels.path,
    p50: fmt(s.p50), p95: fmt(s.p95), p99: fmt(s.p99), 'actions/s': +((8 * 1000) / s.p50).toFixed(2),
    preprocess: fmt(mean('preprocess')), vision: fmt(mean('vision')), projector: fmt(mean('projector')), llm: fmt(mean('llm')),
    retrieval: fmt(mean('retrieval')), head: fmt(mean('head')),
    'peak MiB': Math.round(peakBytes / 2 ** 20),
    'eager p50': refP50 ? fmt(refP50) : 'skipped', speedup: refP50 ? `${(refP50 / s.p50).toFixed(2)}×` : '-',
    raw: { m2vla: s, loadMs, eager: ref, kernels },
  });
}
printTable(`act() at full size, batch 1, ${onGpu ? device : `${threads} threads`}, 8-action chunks; peak MiB = ` +
  `${onGpu ? 'GPU caching allocator' : 'process RSS'}`, actRows.map(({ raw, ...r }) => r));
if (onGpu) {
  console.log(`results: ${await writeResults('policy-cuda', { device, promptLen: PROMPT, act: actRows })}`);
  process.exit(0);
}

// MSM retrieval: 10,000 × 2688 bank (bf16 storage), top-4.
const KEY_DIM = 2688, CAPACITY = 10000;
const binding = getBinding();
const bank = await runTorchJob(() => binding.createMemoryBank({ capacity: CAPACITY, keyDim: KEY_DIM, valueDim: 56, threads }));
let x = 12345;
const rand = (n: number) => Float32Array.from({ length: n }, () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 31 - 1; });
await runTorchJob(() => bank.append({ keys: rand(CAPACITY * KEY_DIM), values: rand(CAPACITY * 56) }));
const retrievalRows = [];
for (const batch of [1, 8]) {
  const queries = rand(batch * KEY_DIM);
  const time = (impl: 'fused' | 'reference') => timeAsync(`${impl} b${batch}`,
    () => runTorchJob(() => bank.query({ queries, topK: 4, impl })), 20, 3);
  const fused = await time('fused'), reference = await time('reference');
  retrievalRows.push({
    batch, 'fused p50': fmt(fused.p50), 'cdist+topk p50': fmt(reference.p50),
    speedup: `${(reference.p50 / fused.p50).toFixed(1)}×`, raw: { fused, reference },
  });
}
bank.dispose();
printTable(`MSM top-4 over a ${CAPACITY} × ${KEY_DIM} bf16 bank, ${threads} threads`, retrievalRows.map(({ raw, ...r }) => r));
console.log(`results: ${await writeResults('policy', { threads, promptLen: PROMPT, act: actRows, retrieval: retrievalRows })}`);
