// Training on each real dataset format overfits the fixture's handful of samples (7 chunks each): the loss of the
// last steps falls well below that of the first ones, for both objectives and with bfloat16 autocast.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { train } from '../../lib/train.js';
import { freshOut, LEROBOT, LIBERO, mean, readMetrics, tinyRun } from '../helpers/train.js';

const STEPS = 60;

async function overfit(data: string, options: { objective?: 'l1' | 'denoise'; bf16?: boolean } = {}) {
  const out = freshOut();
  const result = await train({ data, init: await tinyRun(), out, steps: STEPS, batchSize: 4, lr: 1e-3, threads: 1, ...options });
  const losses = result.metrics.map((m) => m.loss);
  expect(result.metrics.map((m) => m.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
  expect(readMetrics(out).map((m) => m.loss)).toEqual(losses);
  return { out, result, first: mean(losses.slice(0, 5)), last: mean(losses.slice(-5)) };
}

describe('training overfits a handful of samples', () => {
  it('LIBERO HDF5, L1 objective', async () => {
    const { out, result, first, last } = await overfit(LIBERO);
    expect(last).toBeLessThan(0.45 * first);  // measured: 0.54 -> 0.19
    expect(result.interrupted).toBe(false);
    expect(result.runDir).toBe(out);
    for (const f of ['model.safetensors', 'action_head.safetensors', 'action_head--checkpoint.pt', 'tokenizer.json',
      'dataset_statistics.json']) expect(fs.existsSync(path.join(out, f))).toBe(true);
    expect(Object.keys(JSON.parse(fs.readFileSync(path.join(out, 'dataset_statistics.json'), 'utf8'))))
      .toEqual(['libero_tiny_no_noops']);
  });

  it('LeRobot v2.1, L1 objective', async () => {
    const { first, last } = await overfit(LEROBOT);
    expect(last).toBeLessThan(0.45 * first);  // measured: 0.52 -> 0.18
  });

  it('LeRobot v2.1, denoise objective (ε-prediction MSE at random timesteps)', async () => {
    const { first, last } = await overfit(LEROBOT, { objective: 'denoise' });
    expect(last).toBeLessThan(0.6 * first);  // measured: 0.93 -> 0.45
  });

  it('LIBERO HDF5 with bfloat16 autocast', async () => {
    const { first, last } = await overfit(LIBERO, { bf16: true });
    expect(last).toBeLessThan(0.45 * first);  // measured: 0.55 -> 0.19
  });
});
