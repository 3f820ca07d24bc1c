/**
 * Shuffled, sharded, resumable batches over a Dataset.
 *
 * Each epoch visits a permutation of the sample indices that depends only on (seed, epoch). The permutation is cut
 * into global batches of batchSize x worldSize indices; rank r takes the r-th slice of batchSize from each, so ranks
 * never share a sample within an epoch, and every rank sees the same number of full batches (the epoch's last
 * numSamples mod (batchSize x worldSize) indices, different ones each epoch, are skipped). The position
 * `{epoch, index}` (index = permutation entries consumed by all ranks) is the same on every rank: save it with a
 * checkpoint and pass it back to resume exactly where training stopped.
 */
import { InputError } from '../errors.js';
import type { RawImage } from '../images.js';
import { intOption, type Dataset, type Sample } from './dataset.js';
import { checkOptions, optionKeys } from '../options.js';

export interface LoaderPosition {
  epoch: number;
  index: number;
}

export interface BatchLoaderOptions {
  batchSize: number;
  /** Seed of the shuffles (a uint32); default 0. */
  seed?: number;
  /** Shuffle each epoch; default true (false: index order, e.g. for evaluation). */
  shuffle?: boolean;
  /** This process's rank and the number of data-parallel processes; default 0 / 1. */
  rank?: number;
  worldSize?: number;
  /** Where to start, e.g. the `position` of the last batch of a run being resumed; default the start. */
  position?: LoaderPosition;
  /** Samples read at the same time (frame decoding is async: ffmpeg, sharp); default 4. */
  concurrency?: number;
}

export interface Batch {
  images: { primary: RawImage[]; wrist?: RawImage[] };
  instructions: string[];
  /** batchSize x proprioDim. */
  states: Float32Array;
  /** batchSize x chunk x actionDim. */
  actions: Float32Array;
  /** Dataset sample indices. */
  indices: number[];
  /** The position after this batch (where the next one starts). */
  position: LoaderPosition;
}

/** splitmix32: a small PRNG whose sequence is the same on every platform. */
function splitmix32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
}

/** The order of the sample indices in one epoch: a Fisher-Yates shuffle seeded from (seed, epoch), or 0..n-1. */
export function epochOrder(numSamples: number, seed: number, epoch: number, shuffle = true): Uint32Array {
  const order = new Uint32Array(numSamples);
  for (let i = 0; i < numSamples; i++) order[i] = i;
  if (!shuffle) return order;
  const next = splitmix32(splitmix32(seed)() ^ epoch);
  for (let i = numSamples - 1; i > 0; i--) {
    const j = Math.floor((next() / 2 ** 32) * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  return order;
}

/** Maps `items` through `fn` with at most `limit` calls in flight, keeping the order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export class BatchLoader {
  private readonly batchSize: number;
  private readonly seed: number;
  private readonly shuffle: boolean;
  private readonly rank: number;
  private readonly worldSize: number;
  private readonly concurrency: number;
  private epoch: number;
  private index: number;
  private order?: { epoch: number; indices: Uint32Array };

  constructor(readonly dataset: Dataset, options: BatchLoaderOptions) {
    checkOptions(options, optionKeys<BatchLoaderOptions>({
      batchSize: true, seed: true, shuffle: true, rank: true, worldSize: true, position: true, concurrency: true,
    }), 'BatchLoader');
    this.batchSize = intOption(options.batchSize, 'batchSize');
    this.seed = intOption(options.seed ?? 0, 'seed', 0);
    if (this.seed > 0xffffffff) throw new InputError(`seed must be a uint32, got ${this.seed}`);
    this.shuffle = options.shuffle ?? true;
    this.worldSize = intOption(options.worldSize ?? 1, 'worldSize');
    this.rank = intOption(options.rank ?? 0, 'rank', 0);
    if (this.rank >= this.worldSize) throw new InputError(`rank ${this.rank} is not below worldSize ${this.worldSize}`);
    this.concurrency = intOption(options.concurrency ?? 4, 'concurrency');
    if (this.globalBatch > dataset.numSamples)
      throw new InputError(`${dataset.name}: ${dataset.numSamples} samples are fewer than batchSize x worldSize = ` +
        `${this.globalBatch}`);
    const start = options.position ?? { epoch: 0, index: 0 };
    this.epoch = intOption(start.epoch, 'position.epoch', 0);
    this.index = intOption(start.index, 'position.index', 0);
  }

  private get globalBatch(): number {
    return this.batchSize * this.worldSize;
  }

  /** Where the next batch starts. */
  get position(): LoaderPosition {
    return { epoch: this.epoch, index: this.index };
  }

  /** This rank's sample indices of the next batch; advances the position. */
  nextIndices(): number[] {
    if (this.index + this.globalBatch > this.dataset.numSamples) {
      this.epoch += 1;
      this.index = 0;
    }
    if (this.order?.epoch !== this.epoch)
      this.order = { epoch: this.epoch, indices: epochOrder(this.dataset.numSamples, this.seed, this.epoch, this.shuffle) };
    const from = this.index + this.rank * this.batchSize;
    this.index += this.globalBatch;
    return Array.from(this.order.indices.subarray(from, from + this.batchSize));
  }

  /** Reads the next batch: frames by reference (see Dataset.sample), states and actions packed. */
  async next(): Promise<Batch> {
    const indices = this.nextIndices();
    const position = this.position;
    const samples: Sample[] = await mapLimit(indices, this.concurrency, (i) => this.dataset.sample(i));
    const { proprioDim, actionDim, chunk } = this.dataset;
    const states = new Float32Array(samples.length * proprioDim);
    const actions = new Float32Array(samples.length * chunk * actionDim);
    samples.forEach((s, b) => {
      states.set(s.state, b * proprioDim);
      actions.set(s.actions, b * chunk * actionDim);
    });
    const primary = samples.map((s) => s.images.primary);
    const wrist = this.dataset.hasWrist ? samples.map((s) => s.images.wrist!) : undefined;
    return {
      images: { primary, ...(wrist && { wrist }) }, instructions: samples.map((s) => s.instruction), states, actions,
      indices, position,
    };
  }
}
