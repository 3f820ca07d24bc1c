/**
 * The frozen VLM at full size (Qwen2.5-0.5B + DINOv2-L/reg4 + SigLIP-so400m, two 224 px cameras, 50 prompt tokens,
 * random weights): p50/p95 of one forward, achieved GFLOP/s against this machine's GEMM peak measured in the same
 * run, float32 and bfloat16, and the same forward in PyTorch eager (transformers + timm, same threads) as a ratio.
 *   npm run bench -- backbone [--iters 5] [--dtypes float32,bfloat16] [--threads 2] [--no-eager]
 */
import { loadBackbone, measureGemmPeak } from '../lib/index.js';
import { backboneFlops, benchArgs, fmt, fullsizeRun, printTable, runEager, timeAsync, writeResults } from './harness.js';

const PROMPT = 50;
const { iters, dtypes, threads, eager } = benchArgs({ iters: 5 });
const run = await fullsizeRun();
const rows = [];
for (const dtype of dtypes) {
  const peak = await measureGemmPeak({ n: 2048, iters: 4, dtype, threads });
  const t0 = performance.now();
  const backbone = await loadBackbone(run, { dtype, threads });
  const loadMs = performance.now() - t0;
  const cfg = backbone.config;
  const pixels = Float32Array.from({ length: 6 * cfg.numImages * cfg.imageSize ** 2 }, (_, i) => Math.sin(i) * 1.5);
  const obs = { pixelValues: { data: pixels, shape: [6 * cfg.numImages, cfg.imageSize, cfg.imageSize] },
    inputIds: Array.from({ length: PROMPT }, (_, i) => 3 + ((i * 7919) % (cfg.llm.vocabSize - 3))) };
  const s = await timeAsync(`backbone ${dtype}`, () => backbone.forward(obs), iters);
  backbone.dispose();
  const gflop = backboneFlops(cfg, PROMPT) / 1e9;
  const ref = eager ? runEager([run, '--mode', 'backbone', '--dtype', dtype, '--threads', String(threads),
    '--iters', String(iters), '--prompt-len', String(PROMPT)]) : { skipped: '--no-eager' };
  const refP50 = 'p50_ms' in ref ? ref.p50_ms : undefined;
  rows.push({
    dtype, 'm2vla p50': fmt(s.p50), 'm2vla p95': fmt(s.p95), GFLOP: +gflop.toFixed(0),
    'GFLOP/s': +(gflop / (s.p50 / 1000)).toFixed(0), 'GEMM peak': +peak.gflops.toFixed(0),
    'of peak': `${((100 * gflop) / (s.p50 / 1000) / peak.gflops).toFixed(0)}%`,
    'eager p50': refP50 ? fmt(refP50) : 'skipped', speedup: refP50 ? `${(refP50 / s.p50).toFixed(2)}×` : '-',
    _raw: JSON.stringify({ m2vla: s, loadMs, eager: ref }),
  });
}
printTable(`full-size VLM forward, batch 1, ${threads} threads`, rows.map(({ _raw, ...r }) => r));
console.log(`results: ${await writeResults('backbone', { threads, promptLen: PROMPT, rows: rows.map((r) => ({ ...r, _raw: JSON.parse(r._raw) })) })}`);
