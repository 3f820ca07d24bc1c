/**
 * `npm run bench -- <suite ...> [flags]`: runs bench/<suite>.bench.ts (or bench/roofline.ts), one process per suite;
 * `all` runs every suite. Without a suite (or with --help) it lists the suites and what each costs, and runs nothing:
 * the full-size ones generate a 3.3 GB run directory and need up to ~17 GiB of memory and an hour.
 * Flags pass through (--iters, --dtypes, --threads, --no-eager).
 * `--device cuda[:N]` runs the policy suite on the GPU (a CUDA build and a GPU); without one the roofline projection is
 * printed instead, labelled as such.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runtimeInfo } from '../lib/index.js';
import { BENCH_DIR } from './harness.js';

/** Each suite's file and its cost as measured on the project's 2-core, 24 GiB VM (docs/benchmarks.md has the results). */
const SUITES: Record<string, { file: string; cost: string }> = {
  roofline: { file: 'roofline.ts', cost: 'seconds; analytical GPU projection, nothing heavy' },
  server: { file: 'server.bench.ts', cost: '~1 min, <1 GiB; the demo model under 32 websocket clients' },
  soak: { file: 'soak.bench.ts', cost: '~3 min, ~1 GiB; 10,000 raw/PNG/JPEG requests to `m2vla serve`, its RSS, stalled frames' },
  ablation: { file: 'ablation.bench.ts', cost: '~3 min, ~3 GiB; the full-size head in each ablation layout' },
  backbone: { file: 'backbone.bench.ts', cost: '~10 min, ~9 GiB, 3.3 GB on disk; full-size VLM forward, fp32 + bf16 (+ PyTorch eager with M2VLA_PYREF)' },
  cpu: { file: 'cpu.bench.ts', cost: '~10-15 min idle, ~8 GiB, 3.3 GB on disk; full-size act() per dtype (fp32, bf16, int8) vs PyTorch eager (+logits) and torch.compile, GEMM peak, CPU flags' },
  realtime: { file: 'realtime.bench.ts', cost: '~3 min, ~4 GiB, 3.3 GB on disk; PolicyRunner at 20 Hz on the full-size model, bf16 and int8' },
  policy: { file: 'policy.bench.ts', cost: '~10 min, ~10 GiB, 3.3 GB on disk; full-size act(), fp32 + bf16 (+ eager); --device cuda on a GPU' },
  train: { file: 'train.bench.ts', cost: '~45 min, up to ~17 GiB, 3.3 GB on disk; full-size training steps (+ eager)' },
  'train-ddp': { file: 'train-ddp.bench.ts', cost: '~20 min, ~8 GiB; data-parallel over loopback (needs the Gloo build, see m2vla doctor)' },
};
const argv = process.argv.slice(2);
const named = argv.filter((a) => a in SUITES);
const flags = argv.filter((a) => !(a in SUITES) && a !== 'all');
const deviceIdx = flags.indexOf('--device');
const cudaProjection = deviceIdx >= 0 && flags[deviceIdx + 1]?.startsWith('cuda');
const unknown = flags.filter((a) => !a.startsWith('-') && flags[flags.indexOf(a) - 1]?.startsWith('--') !== true);
if (argv.includes('--help') || argv.includes('-h') || unknown.length > 0 || (!named.length && !argv.includes('all') && !cudaProjection)) {
  if (unknown.length) console.log(`unknown suite ${unknown.map((u) => `'${u}'`).join(', ')}\n`);
  console.log('usage: npm run bench -- <suite ...> | all [flags]   (results: bench/results/*.json, docs/benchmarks.md)\n\nsuites:');
  for (const [name, { cost }] of Object.entries(SUITES)) console.log(`  ${name.padEnd(10)} ${cost}`);
  console.log('\nflags pass through to the suites: --iters N, --dtypes float32,bfloat16, --threads N, --no-eager, --device cuda');
  process.exit(unknown.length ? 2 : 0);
}
let suites = named.length ? named : Object.keys(SUITES);
if (cudaProjection) {
  const info = await runtimeInfo();
  if (!info.cudaAvailable) {
    console.log(`--device ${flags[deviceIdx + 1]}: this ${info.cuda ? 'CUDA build sees no usable GPU' : 'build is CPU-only'}; ` +
      'printing the roofline projection for RTX 3090 and A800 instead (labelled PROJECTION).');
    suites = ['roofline'];
    flags.splice(deviceIdx, 2);
  } else if (!named.length) {
    suites = ['policy'];  // the other suites measure the CPU engine
  }
}
for (const suite of suites) {
  console.log(`\n=== bench ${suite} ===`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(BENCH_DIR, SUITES[suite].file), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
