import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../lib/errors.js';
import type { Dataset, Sample } from '../../lib/data/dataset.js';
import { openLibero } from '../../lib/data/libero.js';
import { BatchLoader, epochOrder, type BatchLoaderOptions } from '../../lib/data/loader.js';
import { DATA } from '../helpers/data.js';

/** A dataset of n samples whose state is the sample index (no files). */
function counting(n: number): Dataset {
  return {
    name: 'counting', numSamples: n, chunk: 1, actionDim: 1, proprioDim: 1, hasWrist: false, episodes: [],
    sample: async (i): Promise<Sample> => ({
      images: { primary: { data: new Uint8Array(3), width: 1, height: 1 } }, instruction: `sample ${i}`,
      state: Float32Array.of(i), actions: Float32Array.of(-i), episode: 0, step: i,
    }),
    close: async () => {},
  };
}

function take(loader: BatchLoader, batches: number): number[][] {
  return Array.from({ length: batches }, () => loader.nextIndices());
}

describe('batch order', () => {
  it('shuffles deterministically per (seed, epoch)', () => {
    const a = epochOrder(50, 7, 0);
    expect(Array.from(a).sort((x, y) => x - y)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(epochOrder(50, 7, 0)).toEqual(a);
    expect(epochOrder(50, 7, 1)).not.toEqual(a);
    expect(epochOrder(50, 8, 0)).not.toEqual(a);
    expect(Array.from(epochOrder(5, 7, 0, false))).toEqual([0, 1, 2, 3, 4]);
  });

  it('gives each rank disjoint batches that cover the epoch but its last partial global batch', () => {
    const dataset = counting(23);
    const options: BatchLoaderOptions = { batchSize: 2, worldSize: 3, seed: 11 };
    const ranks = [0, 1, 2].map((rank) => new BatchLoader(dataset, { ...options, rank }));
    const perRank = ranks.map((loader) => take(loader, 3));  // floor(23 / 6) = 3 batches per epoch
    const seen = perRank.flat(2);
    expect(new Set(seen).size).toBe(18);
    expect(ranks.map((l) => l.position)).toEqual([0, 1, 2].map(() => ({ epoch: 0, index: 18 })));
    expect(perRank[1][0]).toEqual(Array.from(epochOrder(23, 11, 0).subarray(2, 4)));
    // the next batch starts epoch 1, in a new order
    expect(ranks[0].nextIndices()).toEqual(Array.from(epochOrder(23, 11, 1).subarray(0, 2)));
    expect(ranks[0].position).toEqual({ epoch: 1, index: 6 });
  });

  it('resumes from a saved position with the same batches', () => {
    const dataset = counting(10);
    const first = new BatchLoader(dataset, { batchSize: 3, seed: 5 });
    const before = take(first, 4);  // crosses into epoch 1 (3 batches per epoch)
    const saved = first.position;
    const rest = take(first, 5);
    const resumed = new BatchLoader(dataset, { batchSize: 3, seed: 5, position: saved });
    expect(saved).toEqual({ epoch: 1, index: 3 });
    expect(take(resumed, 5)).toEqual(rest);
    expect(before.flat()).toEqual([...epochOrder(10, 5, 0).subarray(0, 9), ...epochOrder(10, 5, 1).subarray(0, 3)]);
  });

  it('rejects options that cannot work', () => {
    const dataset = counting(10);
    expect(() => new BatchLoader(dataset, { batchSize: 0 })).toThrow(new InputError('batchSize must be an integer >= 1, got 0'));
    expect(() => new BatchLoader(dataset, { batchSize: 2, rank: 2, worldSize: 2 })).toThrow(/rank 2 is not below worldSize 2/);
    expect(() => new BatchLoader(dataset, { batchSize: 6, worldSize: 2 })).toThrow(
      new InputError('counting: 10 samples are fewer than batchSize x worldSize = 12'));
    expect(() => new BatchLoader(dataset, { batchSize: 2, position: { epoch: -1, index: 0 } })).toThrow(InputError);
  });
});

describe('batches', () => {
  it('pack states and action chunks and hold the frames of each sample', async () => {
    const ds = await openLibero(path.join(DATA, 'libero_tiny_no_noops'), { episodeEnd: 'repeat' });
    const loader = new BatchLoader(ds, { batchSize: 4, seed: 3, concurrency: 2 });
    const batch = await loader.next();
    expect(batch.position).toEqual({ epoch: 0, index: 4 });
    expect(batch.indices).toEqual(Array.from(epochOrder(26, 3, 0).subarray(0, 4)));
    expect(batch.states.length).toBe(4 * 8);
    expect(batch.actions.length).toBe(4 * 8 * 7);
    expect(batch.images.primary.length).toBe(4);
    expect(batch.images.wrist?.length).toBe(4);
    for (const [b, i] of batch.indices.entries()) {
      const s = await ds.sample(i);
      expect(Array.from(batch.states.subarray(b * 8, (b + 1) * 8))).toEqual(Array.from(s.state));
      expect(Array.from(batch.actions.subarray(b * 56, (b + 1) * 56))).toEqual(Array.from(s.actions));
      expect(batch.instructions[b]).toBe(s.instruction);
      expect(Buffer.from(batch.images.wrist![b].data).equals(Buffer.from(s.images.wrist!.data))).toBe(true);
    }
    await ds.close();
  });
});
