/**
 * `npm run bench -- [suite ...] [flags]`: runs bench/<suite>.bench.ts (or bench/roofline.ts), one process per suite.
 * Suites: ablation, backbone, cpu, policy, realtime, roofline, server, train, train-ddp (default: all). Flags pass through (--iters, --dtypes, --threads, --no-eager).
 * `--device cuda[:N]` runs the policy suite on the GPU (a CUDA build and a GPU); without one the roofline projection is
 * printed instead, labelled as such.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { runtimeInfo } from '../lib/index.js';
import { BENCH_DIR } from './harness.js';

const SUITES: Record<string, string> = {
  ablation: 'ablation.bench.ts', backbone: 'backbone.bench.ts', cpu: 'cpu.bench.ts', policy: 'policy.bench.ts', realtime: 'realtime.bench.ts', roofline: 'roofline.ts',
  server: 'server.bench.ts', train: 'train.bench.ts', 'train-ddp': 'train-ddp.bench.ts',
};
const argv = process.argv.slice(2);
const named = argv.filter((a) => a in SUITES);
const flags = argv.filter((a) => !(a in SUITES));
const deviceIdx = flags.indexOf('--device');
let suites = named.length ? named : Object.keys(SUITES);
if (deviceIdx >= 0 && flags[deviceIdx + 1]?.startsWith('cuda')) {
  const info = runtimeInfo();
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
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(BENCH_DIR, SUITES[suite]), ...flags], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
