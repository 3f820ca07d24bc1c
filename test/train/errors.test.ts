// Data that cannot train the model is rejected with a typed error before any step runs (nothing is written to
// metrics.jsonl or checkpoints/).
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, InputError, ShapeError } from '../../lib/errors.js';
import { DEMO_DIMS } from '../../lib/random-run.js';
import { train, type TrainOptions } from '../../lib/train.js';
import { freshOut, LEROBOT, LIBERO, tinyRun } from '../helpers/train.js';

const TINY = await tinyRun();
const options = (data: string, init = TINY): TrainOptions =>
  ({ data, init, out: freshOut(), steps: 2, batchSize: 2, lr: 1e-3, threads: 1 });

async function rejectsBeforeAnyStep(o: TrainOptions, error: unknown) {
  await expect(train(o)).rejects.toThrow(error as Error);
  expect(fs.existsSync(path.join(o.out, 'metrics.jsonl'))).toBe(false);
  expect(fs.existsSync(path.join(o.out, 'checkpoints'))).toBe(false);
}

describe('training rejects, before any step,', () => {
  it('a corrupted dataset file', async () => {
    const dir = freshOut();
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'pick_up_the_red_block_and_place_it_on_the_plate_demo.hdf5');
    fs.writeFileSync(file, fs.readFileSync(path.join(LIBERO, path.basename(file))).subarray(0, 30_000));
    await rejectsBeforeAnyStep(options(dir), new InputError(`${file}: not a readable HDF5 file (File has been truncated)`));
  });

  it('a dataset whose action or proprio dims do not fit the model', async () => {
    const proprio9 = await tinyRun({ ...DEMO_DIMS, head: { ...DEMO_DIMS.head, proprioDim: 9 } }, 'proprio9');
    await rejectsBeforeAnyStep(options(LEROBOT, proprio9), ShapeError);
    await expect(train(options(LEROBOT, proprio9))).rejects.toThrow(/'observation.state': 8 proprio dims, the model expects 9/);
    const action6 = await tinyRun({ ...DEMO_DIMS, head: { ...DEMO_DIMS.head, actionDim: 6 } }, 'action6');
    await rejectsBeforeAnyStep(options(LIBERO, action6), ShapeError);
    await expect(train(options(LIBERO, action6))).rejects.toThrow(/7 action dims, the model expects 6/);
  });

  it('a dataset without the wrist camera the model takes', async () => {
    await rejectsBeforeAnyStep({ ...options(LEROBOT), dataset: { wrist: null } },
      new ShapeError('lerobot_v21_images: no wrist camera, but the model takes 2 images per observation (primary, wrist)'));
  });

  it('options that make no sense', async () => {
    await expect(train({ ...options(LIBERO), lr: 0 })).rejects.toThrow(new InputError('lr: expected a positive number, got 0'));
    await expect(train({ ...options(LIBERO), batchSize: 8 })).rejects.toThrow(/7 samples are fewer than batchSize x worldSize = 8/);
    const init = await tinyRun();
    await expect(train({ ...options(LIBERO), out: init })).rejects.toThrow(ConfigError);
  });

  it('a device this build cannot train on, or a malformed one', async () => {
    await expect(train({ ...options(LIBERO), device: 'gpu' as never })).rejects.toThrow(
      new InputError('device: expected \'cpu\', \'cuda\' or \'cuda:N\', got "gpu"'));
    // A CPU-only build says how to get a CUDA one (a CUDA build without a GPU: the runtime's reason), both E_CONFIG.
    await rejectsBeforeAnyStep({ ...options(LIBERO), device: 'cuda:0' }, ConfigError);
    await expect(train({ ...options(LIBERO), device: 'cuda:0' })).rejects.toThrow(/cuda:0/);
  });
});
