/**
 * Full-size frozen-VLM forward: wall time per observation and achieved GFLOP/s against this machine's measured GEMM
 * peak (the same dtype and thread count). Random inputs; the run directory can hold random weights
 * (../shared/tools/make_fullsize_rundir.py).
 *   node --import tsx bench/backbone.bench.ts <runDir> [float32|bfloat16] [threads] [iters] [promptLen]
 */
import { loadBackbone } from '../lib/backbone.js';
import type { BackboneConfig, VitConfig } from '../lib/config.js';
import { measureGemmPeak } from '../lib/runtime.js';

/** Multiply-add FLOPs (2 per MAC) of one observation's forward: linear layers and attention score/value products. */
function forwardFlops(cfg: BackboneConfig, promptLen: number): number {
  const grid = (cfg.imageSize / cfg.featurizer.patchSize) ** 2;
  const vit = (v: VitConfig) => {
    const t = grid + (v.classToken ? 1 : 0) + v.regTokens, d = v.embedDim;
    const perBlock = 2 * t * (4 * d * d + 2 * d * v.mlpHidden) + 4 * t * t * d;
    return cfg.numImages * (v.takeBlock + 1) * perBlock + cfg.numImages * 2 * grid * 3 * v.patchSize ** 2 * d;
  };
  const np = cfg.numImages * grid, dv = cfg.featurizer.embedDim + cfg.fusedFeaturizer.embedDim, l = cfg.llm;
  const projector = 2 * np * (dv * 4 * dv + 4 * dv * l.hiddenSize + l.hiddenSize ** 2);
  const seq = np + promptLen + cfg.numActionQueries + 1;
  const qkvOut = (l.numHeads + 2 * l.numKvHeads) * l.headDim;
  const perLayer = 2 * seq * (l.hiddenSize * qkvOut + l.numHeads * l.headDim * l.hiddenSize + 3 * l.hiddenSize * l.intermediateSize)
    + 2 * seq * seq * l.numHeads * l.headDim;  // causal: half of the 4*T^2*D of full attention
  return vit(cfg.featurizer) + vit(cfg.fusedFeaturizer) + projector + l.numLayers * perLayer;
}

const [runDir, dtypeArg = 'float32', threadsArg = '2', itersArg = '3', promptArg = '40'] = process.argv.slice(2);
if (!runDir) {
  console.error('usage: bench/backbone.bench.ts <runDir> [float32|bfloat16] [threads] [iters] [promptLen]');
  process.exit(2);
}
const dtype = dtypeArg === 'bfloat16' ? 'bfloat16' : 'float32';
const threads = Number(threadsArg), iters = Number(itersArg), promptLen = Number(promptArg);

let t0 = performance.now();
await using backbone = await loadBackbone(runDir, { dtype, threads });
const loadMs = performance.now() - t0;
const cfg = backbone.config;
const pixels = new Float32Array(6 * cfg.numImages * cfg.imageSize ** 2).map(() => Math.random() * 2 - 1);
const inputIds = Array.from({ length: promptLen }, (_, i) => (i * 7919) % cfg.llm.vocabSize);
const obs = { pixelValues: { data: pixels, shape: [6 * cfg.numImages, cfg.imageSize, cfg.imageSize] }, inputIds };

await backbone.forward(obs);  // warm-up: first-touch of weights, oneDNN primitive caches
// The GEMM peak is measured right before and after every forward: on a shared machine both move together, so
// their ratio stays meaningful when other processes compete for the cores.
const gemm = async () => (await measureGemmPeak({ n: 2048, iters: 3, dtype, threads })).gflops;
const gflop = forwardFlops(cfg, promptLen) / 1e9;
const runs: { seconds: number; peak: number }[] = [];
const cpu0 = process.cpuUsage();
let cpuForward = 0;
for (let i = 0; i < iters; i++) {
  const before = await gemm();
  const c0 = process.cpuUsage();
  t0 = performance.now();
  await backbone.forward(obs);
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  cpuForward += c.user + c.system;
  runs.push({ seconds, peak: (before + await gemm()) / 2 });
}
const cpu = process.cpuUsage(cpu0);
const fastest = runs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
console.log(JSON.stringify({
  dtype, threads, promptLen, loadSeconds: +(loadMs / 1000).toFixed(2), gflop: +gflop.toFixed(1),
  forwardSeconds: runs.map((r) => +r.seconds.toFixed(3)), gemmPeakGflops: runs.map((r) => +r.peak.toFixed(1)),
  fractionOfPeak: runs.map((r) => +(gflop / r.seconds / r.peak).toFixed(3)),
  fastest: { seconds: +fastest.seconds.toFixed(3), achievedGflops: +(gflop / fastest.seconds).toFixed(1) },
  // CPU seconds per forward: a large system share means page faults from fresh large allocations.
  cpuSecondsPerForward: +(cpuForward / 1e6 / iters).toFixed(2), systemShare: +(cpu.system / (cpu.user + cpu.system)).toFixed(3),
}));
