/**
 * Training throughput and memory: steps/s and peak RSS of the demo-size model and of the full-size head on the frozen
 * full-size VLM (float32, and bfloat16 autocast), with and without the frozen-prefix trick (prompt prefix once without
 * autograd vs the whole sequence under autograd). Each configuration runs in its own process, so the peaks do not mix;
 * the LIBERO fixture feeds it.
 *   npm run bench -- train [--iters N (full-size steps, default 2)] [--batch B (default 2)] [--threads N]
 *                          [--dtypes float32,bfloat16]
 * Results: bench/results/train.json.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEMO_DIMS, ensureRandomRun, TINY_TOKENIZER_DIR } from '../lib/random-run.js';
import { Trainer } from '../lib/train.js';
import { benchArgs, fullsizeRun, REPO_ROOT, writeResults } from './harness.js';

const LIBERO = path.join(REPO_ROOT, 'test', 'fixtures', 'data', 'libero_tiny_no_noops');

interface Config { name: string; init: string; prefixTrick: boolean; steps: number; batch: number; threads: number; bf16: boolean }

function status(key: 'VmRSS' | 'VmHWM'): number {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(`${key}:`));
  return Number(line?.split(/\s+/)[1]) * 1024;
}

/** Child: load, one warmup step, then `steps` timed ones; peak RSS from after loading. */
async function child(c: Config) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-bench-train-'));
  try {
    await using trainer = await Trainer.create({ data: LIBERO, init: c.init, out, steps: c.steps + 1, batchSize: c.batch,
      lr: 1e-4, threads: c.threads, prefixTrick: c.prefixTrick, bf16: c.bf16 });
    const loadedRss = status('VmRSS');
    fs.writeFileSync('/proc/self/clear_refs', '5');  // resets VmHWM to the current RSS
    await trainer.step();
    const ms: number[] = [];
    for (let i = 0; i < c.steps; i++) ms.push((await trainer.step()).ms);
    const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
    return { ...c, parameters: trainer.dims.parameters, msPerStep: mean, stepsPerSecond: 1000 / mean,
      loadedGiB: loadedRss / 2 ** 30, peakGiB: status('VmHWM') / 2 ** 30, trainingGiB: (status('VmHWM') - loadedRss) / 2 ** 30 };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** The harness's full-size random run has no tokenizer: a directory of links to it plus the demo tokenizer. */
function fullsizeWithTokenizer(): string {
  const run = fullsizeRun(), dir = path.join(os.tmpdir(), 'm2vla-fullsize-train');
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(run)) if (!fs.existsSync(path.join(dir, f))) fs.symlinkSync(path.join(run, f), path.join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(TINY_TOKENIZER_DIR, f), path.join(dir, f));
  return dir;
}

if (process.argv[2] === '--child') {
  console.log(JSON.stringify(await child(JSON.parse(process.argv[3]) as Config)));
} else {
  const { iters, threads, dtypes } = benchArgs({ iters: 2 });
  // Not strict: the dispatcher passes every suite's flags.
  const batch = Number(parseArgs({ strict: false, options: { batch: { type: 'string', default: '2' } } }).values.batch);
  const tiny = ensureRandomRun(path.join(os.tmpdir(), 'm2vla-demo-train'), DEMO_DIMS, { tokenizerDir: TINY_TOKENIZER_DIR });
  const full = fullsizeWithTokenizer();
  const configs: Config[] = [];
  for (const prefixTrick of [true, false]) {
    configs.push({ name: 'demo', init: tiny, prefixTrick, steps: 20, batch, threads, bf16: false });
    for (const dtype of dtypes)
      configs.push({ name: `full-size ${dtype}`, init: full, prefixTrick, steps: iters, batch, threads, bf16: dtype === 'bfloat16' });
  }
  const self = fileURLToPath(import.meta.url);
  const results = [];
  for (const c of configs) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', JSON.stringify(c)], { encoding: 'utf8', maxBuffer: 1 << 24 });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) throw new Error(`${c.name}: ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
    const result = JSON.parse(line);
    results.push(result);
    console.log(`${c.name.padEnd(18)} prefix trick ${c.prefixTrick ? 'on ' : 'off'}  ${result.msPerStep.toFixed(0).padStart(7)} ms/step ` +
      `(${result.stepsPerSecond.toFixed(3)} steps/s)  peak RSS ${result.peakGiB.toFixed(2)} GiB, ` +
      `${result.trainingGiB.toFixed(2)} GiB over the loaded model`);
  }
  console.log(`results: ${writeResults('train', { batch, threads, results })}`);
}
