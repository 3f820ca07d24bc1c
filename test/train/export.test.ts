// The exported run directory reloads (loadBackbone + loadHead, or the torch.save files) and gives the actions of the
// model as it was trained; it keeps the reference's tensor names, the bank the training filled, and the head tensors
// training never touches.
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBackbone } from '../../lib/backbone.js';
import { loadStateDict, type CheckpointTensor } from '../../lib/checkpoint.js';
import { createHead, loadHead, type ActionHead } from '../../lib/head.js';
import { pixelValues, readPreprocessorConfig } from '../../lib/images.js';
import { Trainer, type PackedBatch } from '../../lib/train.js';
import { freshOut, LIBERO, tinyRun } from '../helpers/train.js';

const bytes = (t: CheckpointTensor) => Buffer.from(t.data);

/** The exported run's actions for a packed batch: preprocessing, the VLM, then `head`. */
async function reloaded(runDir: string, batch: PackedBatch, head: ActionHead, seed?: number): Promise<Float32Array> {
  await using backbone = await loadBackbone(runDir, { threads: 1 });
  const { frames, promptIds, promptLengths, proprio } = batch.batch;
  const pixels = await pixelValues(frames, await readPreprocessorConfig(runDir), { imagesPerSample: 2 });
  const perSample = pixels.data.length / promptLengths.length, p = promptLengths[0];
  const observations = promptLengths.map((_, i) => ({
    pixelValues: { data: pixels.data.slice(i * perSample, (i + 1) * perSample), shape: pixels.shape.slice(1) },
    inputIds: promptIds.slice(i * p, (i + 1) * p),
  }));
  const { hiddenStates } = await backbone.forward(observations);
  const out = await head.forward({ hiddenStates: hiddenStates.data, hiddenShape: hiddenStates.shape, promptLen: p, proprio, seed });
  return out.normalized;
}

function expectClose(a: Float32Array, b: Float32Array, tolerance: number) {
  expect(a.length).toBe(b.length);
  expect(Math.max(...a.map((v, i) => Math.abs(v - b[i])))).toBeLessThan(tolerance);
}

describe('an exported run', () => {
  const out = freshOut();
  let trainer: Trainer, batch: PackedBatch, trained: Float32Array;
  beforeAll(async () => {
    trainer = await Trainer.create({ data: LIBERO, init: await tinyRun(), out, steps: 3, batchSize: 2, lr: 1e-3, threads: 1,
      memorySampleRate: 1 });
    for (let i = 0; i < 3; i++) await trainer.step();
    await trainer.exportRun();
    batch = await trainer.readBatch([0, 3]);
    trained = (await trainer.predict(batch)).normalized;
  });
  afterAll(() => trainer.dispose());

  it('reloads with loadHead and gives the trained model\'s actions', async () => {
    await using head = await loadHead(out, { threads: 1 });
    // The trainer runs the prompt prefix and the action queries separately; the reload runs the whole sequence.
    expectClose(await reloaded(out, batch, head), trained, 1e-5);
    expect(head.statistics?.key).toBe('libero_tiny_no_noops');
  });

  it('writes torch.save files with the same tensors', async () => {
    const config = { keyLayerIndices: [1, 2, 4], topK: 4, objective: 'l1' as const, numPatches: 32, numActionQueries: 8 };
    await using pt = await createHead({ actionHeadPath: path.join(out, 'action_head--checkpoint.pt'),
      proprioProjectorPath: path.join(out, 'proprio_projector--checkpoint.pt'), config, threads: 1 });
    expectClose(await reloaded(out, batch, pt), trained, 1e-5);
    const [fromPt, fromSafetensors] = await Promise.all([loadStateDict(path.join(out, 'action_head--checkpoint.pt')),
      loadStateDict(path.join(out, 'action_head.safetensors'))]);
    expect(Object.keys(fromPt).sort()).toEqual(Object.keys(fromSafetensors).sort());
    for (const name of Object.keys(fromPt)) expect(bytes(fromPt[name]).equals(bytes(fromSafetensors[name])), name).toBe(true);
  });

  it('keeps the reference names, fills the bank and leaves the unused tensors as they were', async () => {
    const [init, exported] = await Promise.all([loadStateDict(path.join(await tinyRun(), 'action_head.safetensors')),
      loadStateDict(path.join(out, 'action_head.safetensors'))]);
    expect(Object.keys(exported).sort()).toEqual(Object.keys(init).sort());
    for (const name of Object.keys(init).filter((n) => /\.(k_memory|v_memory|film_gen\.0)\./.test(n)))
      expect(bytes(exported[name]).equals(bytes(init[name])), name).toBe(true);
    expect(bytes(exported['model.fc2.weight']).equals(bytes(init['model.fc2.weight']))).toBe(false);
    // 50 rows to start with, every micro-batch of 2 added (memorySampleRate 1)
    expect(new BigInt64Array(exported['memory_bank.size'].data.slice().buffer)[0]).toBe(56n);

    const [vlmInit, vlm] = await Promise.all([loadStateDict(path.join(await tinyRun(), 'model.safetensors')),
      loadStateDict(path.join(out, 'model.safetensors'))]);
    expect(Object.keys(vlm).sort()).toEqual(Object.keys(vlmInit).sort());
    for (const name of Object.keys(vlm))
      expect(bytes(vlm[name]).equals(bytes(vlmInit[name])), name).toBe(name !== 'action_queries.weight');
  });
});

describe('an exported denoise run', () => {
  it('reloads and samples the trained model\'s actions', async () => {
    const out = freshOut();
    await using trainer = await Trainer.create({ data: LIBERO, init: await tinyRun(), out, steps: 2, batchSize: 2, lr: 1e-3,
      threads: 1, objective: 'denoise' });
    for (let i = 0; i < 2; i++) await trainer.step();
    await trainer.exportRun();
    const batch = await trainer.readBatch([1, 2]);
    const trained = (await trainer.predict(batch, 5)).normalized;
    await using head = await loadHead(out, { threads: 1, head: { objective: 'denoise' } });
    expectClose(await reloaded(out, batch, head, 5), trained, 1e-5);
  });
});
