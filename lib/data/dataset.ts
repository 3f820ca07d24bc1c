/**
 * What the trainer reads: samples of (camera frames, instruction, proprio state, action chunk), built from episodes
 * whose low-dimensional data (actions, proprio, instructions) is loaded and checked when the dataset is opened, and
 * whose frames are read one sample at a time.
 */
import { InputError, ShapeError } from '../errors.js';
import type { RawImage } from '../images.js';

/** LIBERO constants of the reference (prismatic/vla/constants.py LIBERO_CONSTANTS). */
export const LIBERO_CHUNK = 8;
export const LIBERO_ACTION_DIM = 7;
export const LIBERO_PROPRIO_DIM = 8;

export interface Frames {
  primary: RawImage;
  wrist?: RawImage;
}

export interface Sample {
  images: Frames;
  instruction: string;
  /** proprioDim values at `step`. */
  state: Float32Array;
  /** chunk x actionDim, row-major: the actions of steps `step .. step + chunk - 1` (see `EpisodeEnd`). */
  actions: Float32Array;
  episode: number;
  step: number;
}

/** One trajectory's low-dimensional data, as float32 (what the reference's RLDS pipeline holds). */
export interface Episode {
  /** Where it comes from, for messages: a file and a group, or a LeRobot episode. */
  source: string;
  length: number;
  /** length x actionDim, row-major. */
  actions: Float32Array;
  /** length x proprioDim, row-major. */
  states: Float32Array;
  /** The instruction of each step (LeRobot has one task per frame; LIBERO one per file). */
  instructions: string[];
}

/**
 * How chunks are made at the end of an episode.
 * - `drop` (default, VLA-Adapter / OpenVLA-OFT): only steps whose whole chunk lies inside the episode are samples
 *   (prismatic/vla/datasets/rlds/traj_transforms.py chunk_act_obs: effective_traj_len = traj_len -
 *   future_action_window_size); an episode shorter than the chunk gives none.
 * - `repeat` (OpenVLA, Octo, openpi on LeRobot): every step is a sample; indices past the end repeat the last action
 *   (the same file's `tf.minimum(..., traj_len - 1)`, LeRobot's `min(ep_end - 1, idx + delta)`).
 */
export type EpisodeEnd = 'drop' | 'repeat';

/** Options every reader takes. */
export interface DatasetOptions {
  /** Action chunk length of the model; default 8 (LIBERO). */
  chunk?: number;
  episodeEnd?: EpisodeEnd;
  /** The model's action / proprio sizes: a dataset that does not fit is rejected when opened (E_SHAPE). */
  actionDim?: number;
  proprioDim?: number;
  /** Rotate every frame by 180 degrees (LIBERO renders upside down); the reader picks the default. */
  flip?: boolean;
  /** Name used as the statistics' unnorm key; default: the dataset's directory or file name. */
  name?: string;
}

export interface Dataset {
  readonly name: string;
  readonly numSamples: number;
  readonly chunk: number;
  readonly actionDim: number;
  readonly proprioDim: number;
  readonly hasWrist: boolean;
  readonly episodes: readonly Episode[];
  /**
   * Reads sample `i` (0 <= i < numSamples). Frame buffers are fresh and owned by the caller: each frame's bytes are
   * copied once, out of the decoder (h5wasm's read out of its heap, sharp's or ffmpeg's output) into the buffer
   * returned here; the flip runs in place on it, and batches hold it by reference, so nothing copies it again before
   * the native side packs its input tensor.
   */
  sample(i: number): Promise<Sample>;
  close(): Promise<void>;
}

/** Checks an integer option. */
export function intOption(value: unknown, name: string, min = 1): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new InputError(`${name} must be an integer >= ${min}, got ${String(value)}`);
  return value;
}

/** Throws E_SHAPE when a dataset dimension does not match what the model expects. */
export function checkModelDim(actual: number, expected: number | undefined, what: string, where: string): void {
  if (expected !== undefined && actual !== expected)
    throw new ShapeError(`${where}: ${actual} ${what} dims, the model expects ${expected}`);
}

/** Throws E_INPUT naming the first NaN / infinity: it would poison the statistics and the loss. */
export function checkFinite(values: Float32Array, width: number, where: string): void {
  const i = values.findIndex((v) => !Number.isFinite(v));
  if (i >= 0) throw new InputError(`${where}: non-finite value ${values[i]} at step ${Math.floor(i / width)}`);
}

/**
 * LIBERO's gripper command (-1 open, +1 close) as the reference trains on it: 1 - clip(a, 0, 1), 1 open, 0 close
 * (prismatic/vla/datasets/rlds/oxe/transforms.py libero_dataset_transform), in place on the last action dim.
 */
export function invertGripper(actions: Float32Array, actionDim: number): void {
  for (let i = actionDim - 1; i < actions.length; i += actionDim) actions[i] = 1 - Math.min(1, Math.max(0, actions[i]));
}

/** Rotates HWC RGB bytes by 180 degrees in place (numpy `img[::-1, ::-1]`): the pixel order reversed. */
export function flip180(image: RawImage): RawImage {
  const d = image.data;
  for (let i = 0, j = d.length - 3; i < j; i += 3, j -= 3) {
    for (let c = 0; c < 3; c++) {
      const t = d[i + c];
      d[i + c] = d[j + c];
      d[j + c] = t;
    }
  }
  return image;
}

/** The shared part of the readers: sample indexing, chunking and flipping over in-memory episodes. */
export abstract class EpisodeDataset implements Dataset {
  readonly chunk: number;
  readonly numSamples: number;
  readonly episodeEnd: EpisodeEnd;
  /** firstSample[e] = index of episode e's first sample; one extra entry holds numSamples. */
  private readonly firstSample: number[];

  constructor(readonly name: string, readonly episodes: readonly Episode[], readonly actionDim: number,
    readonly proprioDim: number, readonly hasWrist: boolean, private readonly flip: boolean,
    options: DatasetOptions) {
    this.chunk = intOption(options.chunk ?? LIBERO_CHUNK, 'chunk');
    this.episodeEnd = options.episodeEnd ?? 'drop';
    if (this.episodeEnd !== 'drop' && this.episodeEnd !== 'repeat')
      throw new InputError(`episodeEnd must be 'drop' or 'repeat', got ${String(this.episodeEnd)}`);
    this.firstSample = [0];
    for (const ep of episodes) {
      const n = this.episodeEnd === 'drop' ? Math.max(0, ep.length - this.chunk + 1) : ep.length;
      this.firstSample.push(this.firstSample[this.firstSample.length - 1] + n);
    }
    this.numSamples = this.firstSample[episodes.length];
    if (this.numSamples === 0)
      throw new InputError(`${name}: no samples (${episodes.length} episodes, none with ${this.chunk} steps)`);
  }

  /** Reads the frames of one step into fresh buffers (the flip runs in place on them). */
  protected abstract readFrames(episode: number, step: number): Promise<Frames>;

  abstract close(): Promise<void>;

  /** The episode and step of sample i. */
  locate(i: number): { episode: number; step: number } {
    if (!Number.isInteger(i) || i < 0 || i >= this.numSamples)
      throw new InputError(`sample index must be an integer in [0, ${this.numSamples}), got ${i}`);
    let lo = 0, hi = this.episodes.length - 1;
    while (lo < hi) {  // last episode whose first sample is <= i
      const mid = (lo + hi + 1) >> 1;
      if (this.firstSample[mid] <= i) lo = mid; else hi = mid - 1;
    }
    return { episode: lo, step: i - this.firstSample[lo] };
  }

  async sample(i: number): Promise<Sample> {
    const { episode, step } = this.locate(i);
    const ep = this.episodes[episode];
    const a = this.actionDim, p = this.proprioDim;
    const actions = new Float32Array(this.chunk * a);
    for (let k = 0; k < this.chunk; k++) {
      const t = Math.min(step + k, ep.length - 1);
      actions.set(ep.actions.subarray(t * a, (t + 1) * a), k * a);
    }
    const images = await this.readFrames(episode, step);
    if (this.flip) {
      flip180(images.primary);
      if (images.wrist) flip180(images.wrist);
    }
    return {
      images, instruction: ep.instructions[step], state: ep.states.slice(step * p, (step + 1) * p), actions,
      episode, step,
    };
  }
}
