/**
 * Training throughput and memory: steps/s and peak RSS of the demo-size model and of the full-size head on the frozen
 * full-size VLM (float32, and bfloat16 autocast), with and without the frozen-prefix trick (prompt prefix once without
 * autograd vs the whole sequence under autograd), against the PyTorch eager training step of
 * bench/reference/eager.py (--mode train: the same weights, micro-batch, batch size, threads, clipping and AdamW).
 * Each configuration runs in its own process, so the peaks do not mix; the LIBERO fixture feeds it. m2vla's first
 * step writes its micro-batch for the eager step, which draws the same latent perturbation: their first losses must
 * agree (float32: to 1e-4 relative), which the bench checks and prints.
 *   npm run bench -- train [--iters N (full-size steps, default 2)] [--batch B (default 2)] [--threads N]
 *                          [--dtypes float32,bfloat16] [--no-eager]
 * Results: bench/results/train.json.
 */
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pixelValues, readPreprocessorConfig } from '../lib/images.js';
import { DEMO_DIMS, ensureRandomRun, TINY_TOKENIZER_DIR } from '../lib/random-run.js';
import { Trainer, type PackedBatch } from '../lib/train.js';
import { benchArgs, fmt, fullsizeRun, REPO_ROOT, runEager, writeResults } from './harness.js';

const LIBERO = path.join(REPO_ROOT, 'test', 'fixtures', 'data', 'libero_tiny_no_noops');

interface Config {
  name: string; init: string; prefixTrick: boolean; steps: number; batch: number; threads: number; bf16: boolean;
  /** Where the first micro-batch goes for the eager step. */
  dumpBatch?: string;
}

/** Clipping and AdamW as both sides run them. */
const CLIP = 1.0, LR = 1e-4;

function status(key: 'VmRSS' | 'VmHWM'): number {
  const line = fs.readFileSync('/proc/self/status', 'utf8').split('\n').find((l) => l.startsWith(`${key}:`));
  return Number(line?.split(/\s+/)[1]) * 1024;
}

/** The micro-batch as eager.py --batch-dir reads it: float32 files and their shapes, the prompts. */
async function dumpBatch(packed: PackedBatch, trainer: Trainer, dir: string) {
  const { frames, promptIds, promptLengths, proprio, actions } = packed.batch;
  const n = promptLengths.length, { chunk, actionDim, proprioDim } = trainer.dims;
  const pixels = await pixelValues(frames, await readPreprocessorConfig(trainer.options.init), { imagesPerSample: frames.length / n });
  fs.mkdirSync(dir, { recursive: true });
  for (const [name, data] of [['pixels', pixels.data], ['proprio', proprio], ['actions', actions]] as const)
    fs.writeFileSync(path.join(dir, `${name}.f32`), data);
  fs.writeFileSync(path.join(dir, 'batch.json'), JSON.stringify({
    pixels: pixels.shape, proprio: [n, proprioDim], actions: [n, chunk, actionDim], promptLengths,
    promptIds: Array.from(promptIds, Number),
  }));
}

/** Child: load, one warmup step (its batch dumped for the eager step), then `steps` timed ones; peak RSS from after loading. */
async function child(c: Config) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-bench-train-'));
  try {
    await using trainer = await Trainer.create({ data: LIBERO, init: c.init, out, steps: c.steps + 1, batchSize: c.batch,
      lr: LR, clipNorm: CLIP, threads: c.threads, prefixTrick: c.prefixTrick, bf16: c.bf16 });
    const loadedRss = status('VmRSS');
    fs.writeFileSync('/proc/self/clear_refs', '5');  // resets VmHWM to the current RSS
    const first = await trainer.readStep();
    if (c.dumpBatch) await dumpBatch(first[0], trainer, c.dumpBatch);
    const firstLoss = (await trainer.step(first)).loss;
    const ms: number[] = [];
    for (let i = 0; i < c.steps; i++) ms.push((await trainer.step()).ms);
    const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
    return { ...c, engine: 'm2vla', parameters: trainer.dims.parameters, firstLoss, msPerStep: mean, stepsPerSecond: 1000 / mean,
      loadedGiB: loadedRss / 2 ** 30, peakGiB: status('VmHWM') / 2 ** 30, trainingGiB: (status('VmHWM') - loadedRss) / 2 ** 30 };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** The harness's full-size random run has no tokenizer: a directory of links to it plus the demo tokenizer. */
async function fullsizeWithTokenizer(): Promise<string> {
  const run = await fullsizeRun(), dir = path.join(os.tmpdir(), 'm2vla-fullsize-train');
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(run)) if (!fs.existsSync(path.join(dir, f))) fs.symlinkSync(path.join(run, f), path.join(dir, f));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(TINY_TOKENIZER_DIR, f), path.join(dir, f));
  return dir;
}

if (process.argv[2] === '--child') {
  console.log(JSON.stringify(await child(JSON.parse(process.argv[3]) as Config)));
} else {
  const { iters, threads, dtypes, eager } = benchArgs({ iters: 2 });
  // Not strict: the dispatcher passes every suite's flags.
  const batch = Number(parseArgs({ strict: false, options: { batch: { type: 'string', default: '2' } } }).values.batch);
  const tiny = await ensureRandomRun(path.join(os.tmpdir(), 'm2vla-demo-train'), DEMO_DIMS, { tokenizerDir: TINY_TOKENIZER_DIR });
  const full = await fullsizeWithTokenizer();
  const models = [{ name: 'demo', init: tiny, steps: 20, dtype: 'float32' as const },
    ...dtypes.map((dtype) => ({ name: `full-size ${dtype}`, init: full, steps: iters, dtype }))];
  const self = fileURLToPath(import.meta.url);
  const results = [], rows = [], mismatches: string[] = [];
  for (const model of models) {
    const dumpBatch = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-bench-train-batch-'));
    const m2vla: Record<string, { msPerStep: number; firstLoss: number }> = {};
    for (const prefixTrick of [true, false]) {
      const c: Config = { name: model.name, init: model.init, prefixTrick, steps: model.steps, batch, threads,
        bf16: model.dtype === 'bfloat16', dumpBatch: prefixTrick ? dumpBatch : undefined };
      const r = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', JSON.stringify(c)], { encoding: 'utf8', maxBuffer: 1 << 24 });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      if (r.status !== 0 || !line.startsWith('{')) throw new Error(`${c.name}: ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
      const result = JSON.parse(line);
      results.push(result);
      m2vla[prefixTrick ? 'on' : 'off'] = result;
      rows.push({ model: model.name, engine: `m2vla, prefix trick ${prefixTrick ? 'on' : 'off'}`, perStep: fmt(result.msPerStep),
        stepsPerSecond: result.stepsPerSecond.toFixed(3), peakGiB: result.peakGiB.toFixed(2), addedGiB: result.trainingGiB.toFixed(2) });
      console.log(`${c.name.padEnd(18)} prefix trick ${c.prefixTrick ? 'on ' : 'off'}  ${result.msPerStep.toFixed(0).padStart(7)} ms/step ` +
        `(${result.stepsPerSecond.toFixed(3)} steps/s)  peak RSS ${result.peakGiB.toFixed(2)} GiB, ` +
        `${result.trainingGiB.toFixed(2)} GiB over the loaded model, first loss ${result.firstLoss.toPrecision(8)}`);
    }
    if (eager) {
      const ref = runEager([model.init, '--mode', 'train', '--dtype', model.dtype, '--threads', String(threads),
        '--iters', String(model.steps), '--warmup', '1', '--batch-dir', dumpBatch, '--lr', String(LR), '--clip', String(CLIP)]);
      if ('skipped' in ref) {
        console.log(`${model.name}: ${ref.skipped}`);
      } else {
        const r = ref as typeof ref & { losses: number[]; peak_gib: number; training_gib: number; loaded_gib: number; parameters: number };
        const lossDiff = Math.abs(r.losses[0] - m2vla.on.firstLoss) / Math.abs(r.losses[0]);
        const ratio = { prefixOn: r.mean_ms / m2vla.on.msPerStep, prefixOff: r.mean_ms / m2vla.off.msPerStep };
        results.push({ name: model.name, engine: 'pytorch-eager', bf16: model.dtype === 'bfloat16', batch, threads,
          steps: model.steps, parameters: r.parameters, msPerStep: r.mean_ms, stepsPerSecond: 1000 / r.mean_ms,
          loadedGiB: r.loaded_gib, peakGiB: r.peak_gib, trainingGiB: r.training_gib, firstLoss: r.losses[0],
          firstLossRelDiff: lossDiff, speedup: ratio });
        rows.push({ model: model.name, engine: 'PyTorch eager', perStep: fmt(r.mean_ms), stepsPerSecond: (1000 / r.mean_ms).toFixed(3),
          peakGiB: r.peak_gib.toFixed(2), addedGiB: r.training_gib.toFixed(2) });
        console.log(`${model.name.padEnd(18)} PyTorch eager     ${r.mean_ms.toFixed(0).padStart(7)} ms/step ` +
          `(${(1000 / r.mean_ms).toFixed(3)} steps/s)  peak RSS ${r.peak_gib.toFixed(2)} GiB, ${r.training_gib.toFixed(2)} GiB over ` +
          `the loaded model, first loss ${r.losses[0].toPrecision(8)} (m2vla's: relative difference ${lossDiff.toExponential(1)})`);
        console.log(`${model.name.padEnd(18)} m2vla vs eager: ${ratio.prefixOn.toFixed(2)}x (prefix trick on), ` +
          `${ratio.prefixOff.toFixed(2)}x (off); goal >= 1.3x`);
        if (model.dtype === 'float32' && !(lossDiff < 1e-4))
          mismatches.push(`${model.name}: the eager step's first loss ${r.losses[0]} is not m2vla's ${m2vla.on.firstLoss}`);
      }
    }
    fs.rmSync(dumpBatch, { recursive: true, force: true });
  }
  console.table(rows);
  console.log(`results: ${await writeResults('train', { batch, threads, clipNorm: CLIP, lr: LR, results })}`);
  if (mismatches.length) {
    console.error(mismatches.join('\n'));
    process.exitCode = 1;
  }
}
