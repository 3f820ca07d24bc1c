/** Shared by the *.bench.ts suites: tinybench runs, percentiles, the machine line, results JSON, the eager reference. */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import type { BackboneConfig, VitConfig } from '../lib/config.js';
import { runtimeInfo } from '../lib/index.js';
import { ensureRandomRun, FULL_SIZE_DIMS } from '../lib/random-run.js';

export const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(BENCH_DIR, '..');
export const FIXTURE_A = path.join(REPO_ROOT, 'test', 'fixtures', 'm2vla-tiny-a');
/** Where the generated full-size random run directory lives (3.3 GB; override with M2VLA_FULLSIZE_DIR). */
export const FULLSIZE_DIR = process.env.M2VLA_FULLSIZE_DIR ?? path.join(os.tmpdir(), 'm2vla-fullsize');

/** The full-size random run directory (generated on first use, ~20 s, 3.3 GB). */
export function fullsizeRun(): Promise<string> {
  return ensureRandomRun(FULLSIZE_DIR, FULL_SIZE_DIMS);
}

export interface LatencyStats { samples: number; mean: number; p50: number; p95: number; p99: number; min: number; max: number }

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function stats(samplesMs: number[]): LatencyStats {
  const s = [...samplesMs].sort((a, b) => a - b);
  return {
    samples: s.length, mean: s.reduce((a, b) => a + b, 0) / s.length,
    p50: percentile(s, 50), p95: percentile(s, 95), p99: percentile(s, 99), min: s[0], max: s[s.length - 1],
  };
}

/** Time an async function with tinybench (fixed iteration count: full-size forwards take seconds). */
export async function timeAsync(name: string, fn: () => Promise<unknown>, iterations: number, warmupIterations = 1): Promise<LatencyStats> {
  const bench = new Bench({ name, iterations, time: 0, warmupIterations, warmupTime: 0, retainSamples: true, throws: true });
  bench.add(name, fn);
  await bench.run();
  const r = bench.tasks[0].result;
  if (!('latency' in r) || !r.latency.samples) throw new Error(`${name}: benchmark did not complete (${r.state})`);
  return stats([...r.latency.samples]);
}

export async function machine() {
  const info = await runtimeInfo();
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version, libtorch: info.libtorch.version, threads: info.threads,
    avx512bf16: info.cpu.avx512bf16, date: new Date().toISOString().slice(0, 10),
  };
}

export async function writeResults(name: string, data: unknown): Promise<string> {
  const dir = path.join(BENCH_DIR, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify({ machine: await machine(), ...data as object }, null, 2) + '\n');
  return file;
}

export interface EagerResult { mean_ms: number; p50_ms: number; p95_ms: number; p99_ms: number; min_ms: number; load_ms: number }

/**
 * Run bench/reference/eager.py (PyTorch eager, same threads). Python packages come from python3's environment, plus
 * M2VLA_PYREF (a --target folder) when set. Returns null with the reason when they are missing.
 */
export function runEager(args: string[]): EagerResult | { skipped: string } {
  const env = { ...process.env };
  if (process.env.M2VLA_PYREF) env.PYTHONPATH = [process.env.M2VLA_PYREF, env.PYTHONPATH].filter(Boolean).join(':');
  const r = spawnSync('python3', [path.join(BENCH_DIR, 'reference', 'eager.py'), ...args], { encoding: 'utf8', env, maxBuffer: 1 << 26 });
  const line = r.stdout?.trim().split('\n').pop();
  if (r.status !== 0 || !line?.startsWith('{')) {
    const why = (r.stderr || r.error?.message || '').trim().split('\n').pop();
    return { skipped: `PyTorch eager reference unavailable (${why}); install bench/reference/requirements.txt or set M2VLA_PYREF` };
  }
  return JSON.parse(line) as EagerResult;
}

export function fmt(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(ms >= 100 ? 0 : 1)} ms`;
}

/** Multiply-add FLOPs (2 per MAC) of one observation's VLM forward: linear layers and attention products. */
export function backboneFlops(cfg: BackboneConfig, promptLen: number): number {
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

/** Command-line flags of a suite: --iters N, --dtypes float32,bfloat16, --threads N, --no-eager. */
export function benchArgs(defaults: { iters: number }) {
  const argv = process.argv.slice(2);
  const flag = (name: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : undefined; };
  return {
    iters: Number(flag('iters') ?? defaults.iters),
    dtypes: (flag('dtypes') ?? 'float32,bfloat16').split(',') as Array<'float32' | 'bfloat16'>,
    dtypesGiven: flag('dtypes') !== undefined,
    threads: Number(flag('threads') ?? 2),
    device: (flag('device') ?? 'cpu') as 'cpu' | 'cuda' | `cuda:${number}`,
    eager: !argv.includes('--no-eager'),
  };
}

export function printTable(title: string, rows: Array<Record<string, string | number>>) {
  console.log(`\n${title}`);
  console.table(rows);
}
