/**
 * Does the head generalize beyond its demonstrations? Trains it with the eval's optimizer settings (batch 16, lr 1e-3,
 * x0.1 at 80 %, seed 0) on <train demos> and prints, every --every steps, the normalized L1 of its predicted chunks
 * (position dims, gripper dim) on 192 fixed training samples and on 192 samples of <held-out demos> (other seeds, so
 * other scenes), computed as inference does (the bank read-only).
 *
 *   node --import tsx eval/heldout-l1.ts <train demos> <held-out demos> <init run> <out> --steps 2400 --every 400 [--ablation no-msm]
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Trainer } from '../lib/train.js';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { steps: { type: 'string', default: '2400' }, every: { type: 'string', default: '400' }, ablation: { type: 'string' } },
});
if (positionals.length !== 4) throw new Error('usage: heldout-l1.ts <train demos> <held-out demos> <init run> <out> [--steps N] [--every K] [--ablation A]');
const [trainDir, heldDir, init, out] = positionals.map((p) => path.resolve(p));
const steps = Number(v.steps), every = Number(v.every);
const HELD = 'val_';  // sorts after the training files' names (put_..., pick_...)

// One dataset (one set of statistics) over both, the held-out files marked by their name; only training files train.
fs.rmSync(out, { recursive: true, force: true });
const data = path.join(out, 'data');
fs.mkdirSync(data, { recursive: true });
for (const [dir, prefix] of [[trainDir, ''], [heldDir, HELD]])
  for (const f of fs.readdirSync(dir).filter((n) => n.endsWith('.hdf5'))) fs.symlinkSync(path.join(dir, f), path.join(data, prefix + f));

const trainer = await Trainer.create({
  data, init, out: path.join(out, 'run'), steps, batchSize: 16, lr: 1e-3, seed: 0, threads: 2, schedule: 'step',
  decayAt: [Math.round(steps * 0.8)], checkpointEvery: steps, ...(v.ablation && { ablation: v.ablation as 'no-mol' | 'no-msm' }),
});
const train: number[] = [], held: number[] = [];
let first = 0;
for (const ep of trainer.dataset.episodes) {
  const n = Math.max(0, ep.length - trainer.dataset.chunk + 1);  // the 'drop' episode end: whole chunks only
  for (let i = first; i < first + n; i++) (ep.source.startsWith(path.join(data, HELD)) ? held : train).push(i);
  first += n;
}
// The probe samples are drawn with replacement, and each epoch's order comes from sorting by this generator.
let seed = 12345;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const pick = (a: number[], n: number) => Array.from({ length: n }, () => a[Math.floor(rand() * a.length)]);
const probeTrain = pick(train, 192), probeHeld = pick(held, 192);

async function l1(indices: number[]): Promise<string> {
  let pos = 0, grip = 0, rows = 0;
  for (let b = 0; b < indices.length; b += 32) {
    const batch = await trainer.readBatch(indices.slice(b, b + 32));
    const p = (await trainer.predict(batch, 0)).normalized, target = batch.batch.actions;
    for (let k = 0; k < p.length; k++) {
      if (k % 7 < 3) pos += Math.abs(p[k] - target[k]);
      if (k % 7 === 6) grip += Math.abs(p[k] - target[k]);
    }
    rows += p.length / 7;
  }
  return `position ${(pos / rows / 3).toFixed(3)} gripper ${(grip / rows).toFixed(3)}`;
}

console.log(`${train.length} training samples, ${held.length} held-out samples`);
let order: number[] = [];
for (let step = 1; step <= steps; step++) {
  if (order.length < 16) order = order.concat(train.slice().sort(() => rand() - 0.5));
  const m = await trainer.step([await trainer.readBatch(order.splice(0, 16))]);
  if (step % every === 0 || step === steps)
    console.log(`step ${step} loss ${m.loss.toFixed(4)} | train ${await l1(probeTrain)} | held-out ${await l1(probeHeld)}`);
}
await trainer.dispose();
