/**
 * The M²-VLA action head on its own: the VLM's hidden states and the robot state in, an action chunk out.
 *
 *   await using head = await loadHead(runDir);
 *   const { actions } = await head.predict({ hiddenStates, hiddenShape, promptLen, state });
 *
 * TypeScript validates and packs; the addon computes (normalization, retrieval, the MoL blocks, unnormalization).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseAblation, readRunConfig, type Ablation, type HeadConfig } from './config.js';
import { readJson } from './json.js';
import { CheckpointError, ConfigError, DisposedError, InputError, ShapeError } from './errors.js';
import {
  getBinding, type ModelDtype, type NativeDenoiseConfig, type NativeDevice, type NativeHead, type NativeHeadDims,
  type NativeHeadForwardInput, type NativeHeadTrace, type NativeTensor,
} from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import type { TensorData } from './observation.js';
import { checkOptions, optionKeys } from './options.js';

/** BOUNDS_Q99 statistics of one quantity (dataset_statistics.json[key].action / .proprio). */
export interface NormStats {
  q01: Float64Array;
  q99: Float64Array;
  /** true = normalize this dimension; false = pass it through (the gripper of LIBERO actions). */
  mask: boolean[];
}

export interface NormalizationStatistics {
  /** The unnorm key the statistics were taken from. */
  key: string;
  action: NormStats;
  proprio: NormStats;
}

export type DenoiseOptions = NativeDenoiseConfig;

export interface HeadCreateOptions {
  actionHeadPath: string;
  proprioProjectorPath: string;
  config: HeadConfig & { numPatches: number; numActionQueries: number; denoise?: DenoiseOptions };
  /** Weights and activations (the memory bank stays bfloat16, retrieval float32). Default float32. */
  dtype?: ModelDtype;
  /** Where the weights, the bank and the computation live ('cuda:N' needs a CUDA build). Default 'cpu'. */
  device?: NativeDevice;
  /** Torch threads for this head's jobs (default: libtorch's choice). */
  threads?: number;
  /** Needed by predict() (normalize the state, unnormalize the actions). */
  statistics?: NormalizationStatistics;
}

/** Hidden states + normalized proprio in (see NativeHeadForwardInput for each field). */
export type HeadForwardInput = NativeHeadForwardInput;

export interface HeadRetrieval {
  /** [B, topK] bank rows by descending similarity; 0-padded when the bank has fewer rows, -1 when it is empty. */
  indices: Int32Array;
  /** [B, topK] -10000 × mean |query - key|. */
  similarities: Float32Array;
  /** [B, topK, chunk × actionDim] the retrieved value rows. */
  values: Float32Array;
  /** [B, keyDim] the query keys. */
  queryKeys: Float32Array;
}

export interface HeadForwardOutput {
  /** [B, chunk, actionDim] in the normalized action space. */
  normalized: Float32Array;
  shape: [number, number, number];
  retrieval: HeadRetrieval;
  intermediates?: NativeHeadTrace;
}

export interface HeadPredictInput extends Omit<HeadForwardInput, 'proprio' | 'intermediates'> {
  /** [B, proprioDim] raw robot state (e.g. LIBERO's 8 values per sample). */
  state: ArrayLike<number>;
}

export interface HeadPredictOutput extends HeadForwardOutput {
  /** [B, chunk, actionDim] unnormalized actions (float64, like the reference's numpy result). */
  actions: Float64Array;
  /** [B, proprioDim] the normalized state fed to the head (float64, before the float32 conversion). */
  proprio: Float64Array;
}

/** Far above any robot quantity; ±1e308 would turn (q99 - q01) into Inf and every action into NaN. */
const MAX_STATISTIC = 1e9;

function numbers(value: unknown, what: string): number[] {
  if (!Array.isArray(value)) throw new ConfigError(`${what}: expected an array of finite numbers`);
  const bad = value.findIndex((v) => typeof v !== 'number' || !(Math.abs(v) <= MAX_STATISTIC));
  if (bad >= 0) throw new ConfigError(`${what}[${bad}]: expected a finite number within ±${MAX_STATISTIC}, got ${JSON.stringify(value[bad])}`);
  return value as number[];
}

function normStats(entry: unknown, what: string): NormStats {
  const e = (entry ?? {}) as Record<string, unknown>;
  const q01 = numbers(e.q01, `${what}.q01`), q99 = numbers(e.q99, `${what}.q99`);
  if (q99.length !== q01.length) throw new ConfigError(`${what}: q01 and q99 have different lengths`);
  const crossed = q01.findIndex((lo, i) => q99[i] < lo);
  if (crossed >= 0) throw new ConfigError(`${what}: q99[${crossed}] = ${q99[crossed]} is below q01[${crossed}] = ${q01[crossed]}`);
  const mask = e.mask === undefined ? q01.map(() => true) : e.mask;
  if (!Array.isArray(mask) || mask.length !== q01.length || mask.some((m) => typeof m !== 'boolean')) {
    throw new ConfigError(`${what}.mask: expected ${q01.length} booleans`);
  }
  return { q01: Float64Array.from(q01), q99: Float64Array.from(q99), mask: mask as boolean[] };
}

/**
 * dataset_statistics.json → the statistics of one dataset. Without `unnormKey` the file must hold exactly one; like
 * the LIBERO eval script, "<key>_no_noops" is used when only that exists.
 */
export function readNormalizationStatistics(file: string, unnormKey?: string): NormalizationStatistics {
  const all = readJson(file);
  const keys = Object.keys(all);
  let key = unnormKey;
  if (key === undefined) {
    if (keys.length !== 1) throw new ConfigError(`${file}: holds ${keys.length} datasets; pass unnormKey, one of: ${keys.join(', ')}`);
    key = keys[0];
  } else if (!(key in all) && `${key}_no_noops` in all) {
    key = `${key}_no_noops`;
  }
  if (!(key in all)) throw new ConfigError(`unnormKey: "${unnormKey}" is not in ${file}; available: ${keys.join(', ')}`);
  const entry = all[key] as Record<string, unknown>;
  return { key, action: normStats(entry.action, `${file}: ${key}.action`), proprio: normStats(entry.proprio, `${file}: ${key}.proprio`) };
}

function nativeStats(s: NormStats) {
  return { q01: s.q01, q99: s.q99, mask: Uint8Array.from(s.mask, (m) => (m ? 1 : 0)) };
}

/** The rows of an MSM bank in use, as float32 (the bank stores bfloat16: the conversion is exact). */
export interface MemoryBankSnapshot {
  /** [size, keyDim]: per row, the mean vision features of the key layers, concatenated (SPEC §3.2). */
  keys: TensorData;
  /** [size, chunk × actionDim]: the normalized action chunk stored with each key. */
  values: TensorData;
  size: number;
}

/** The first `rows` rows of a [capacity, width] bfloat16 tensor as float32. */
function bf16Rows(t: NativeTensor, rows: number): TensorData {
  const width = t.shape[1];
  const halves = new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + rows * width * 2));
  const bits = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) bits[i] = halves[i] << 16;
  return { data: new Float32Array(bits.buffer), shape: [rows, width] };
}

export class ActionHead implements AsyncDisposable {
  #native: NativeHead | undefined;

  /** The native object (for composing models natively, e.g. createPolicy). */
  get native(): NativeHead {
    if (!this.#native) throw new DisposedError('ActionHead: disposed');
    return this.#native;
  }
  /** Read off the checkpoint. */
  readonly dims: NativeHeadDims;

  constructor(native: NativeHead, readonly statistics?: NormalizationStatistics) {
    this.#native = native;
    this.dims = native.dims();
  }

  /** The ablation this head was loaded as (the checkpoint's variant). */
  get ablation(): Ablation {
    return this.dims.ablation;
  }

  /**
   * A copy of the MSM bank's rows in use (a loaded head's bank never changes). Without MSM (ablation 'no-msm') the
   * bank is empty: size 0, shapes [0, keyDim] and [0, chunk × actionDim].
   */
  memoryBank(): Promise<MemoryBankSnapshot> {
    const native = this.#native;
    if (!native) return Promise.reject(new DisposedError('ActionHead: memoryBank() after dispose()'));
    return runTorchJob(async () => {
      const { keys, values, size } = await native.memoryBank();
      if (keys.dtype !== 'bfloat16' || values.dtype !== 'bfloat16') throw new CheckpointError('memoryBank: expected bfloat16 buffers');
      return { keys: bf16Rows(keys, size), values: bf16Rows(values, size), size };
    });
  }

  /** Normalized proprio in, normalized actions out (plus the retrieval, and intermediates on request). */
  forward(input: HeadForwardInput): Promise<HeadForwardOutput> {
    const native = this.#native;
    if (!native) return Promise.reject(new DisposedError('ActionHead: forward() after dispose()'));
    const { hiddenStates, hiddenShape, promptLen, proprio, referenceCasts, intermediates, impl, seed } = input;
    return runTorchJob(() => native.forward({
      hiddenStates, hiddenShape: [...hiddenShape], promptLen, proprio, referenceCasts, intermediates, impl, seed,
    }));
  }

  /** Raw state in, unnormalized actions out, with the run's dataset statistics. */
  async predict(input: HeadPredictInput): Promise<HeadPredictOutput> {
    const stats = this.statistics;
    if (!stats) throw new ConfigError('ActionHead.predict: no dataset statistics (pass `statistics` when creating the head)');
    const { state, ...rest } = input;
    const batch = input.hiddenShape[1];
    const expected = batch * this.dims.proprioDim;
    if (state.length !== expected) {
      throw new ShapeError(`state: expected ${expected} values (batch ${batch} × proprio dim ${this.dims.proprioDim}), got ${state.length}`);
    }
    for (let i = 0; i < state.length; i++) {
      if (!Number.isFinite(state[i])) throw new InputError(`state: value ${i} is ${state[i]}; expected finite numbers`);
    }
    if (stats.proprio.q01.length !== this.dims.proprioDim || stats.action.q01.length !== this.dims.actionDim) {
      throw new ConfigError(`statistics "${stats.key}": proprio/action have ${stats.proprio.q01.length}/${stats.action.q01.length} ` +
        `dimensions, the head ${this.dims.proprioDim}/${this.dims.actionDim}`);
    }
    const binding = getBinding();
    const proprio = binding.normalizeBounds({ values: Float64Array.from(state), ...nativeStats(stats.proprio) });
    // torch.Tensor(normalized) in the reference: float64 → float32.
    const out = await this.forward({ ...rest, proprio: Float32Array.from(proprio) });
    const actions = binding.unnormalizeBounds({ values: out.normalized, ...nativeStats(stats.action) });
    return { ...out, actions, proprio };
  }

  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

const CREATE_HEAD_KEYS = optionKeys<HeadCreateOptions>({
  actionHeadPath: true, proprioProjectorPath: true, config: true, dtype: true, device: true, threads: true, statistics: true,
});
const LOAD_HEAD_KEYS = optionKeys<LoadHeadOptions>({ dtype: true, device: true, threads: true, unnormKey: true, head: true });

export function createHead(options: HeadCreateOptions): Promise<ActionHead> {
  try {
    checkOptions(options, CREATE_HEAD_KEYS, 'createHead');
  } catch (e) {
    return Promise.reject(e);
  }
  const { actionHeadPath, proprioProjectorPath, config, dtype = 'float32', device, threads, statistics } = options;
  return runTorchJob(async () => {
    const native = await getBinding().createHead({ actionHeadPath, proprioProjectorPath, config, dtype, device, threads });
    return new ActionHead(native, statistics);
  });
}

/** A head checkpoint of a run directory: `<stem>.safetensors`, else the one `<stem>--*checkpoint.pt`. */
export function headFile(runDir: string, stem: string): string {
  const safetensors = path.join(runDir, `${stem}.safetensors`);
  if (fs.existsSync(safetensors)) return safetensors;
  const pt = fs.readdirSync(runDir).filter((f) => f.startsWith(`${stem}--`) && f.endsWith('checkpoint.pt'));
  if (pt.length === 1) return path.join(runDir, pt[0]);
  throw new CheckpointError(pt.length === 0
    ? `${runDir}: no ${stem}.safetensors or ${stem}--*checkpoint.pt`
    : `${runDir}: several ${stem} checkpoints (${pt.join(', ')}); pass the file explicitly to createHead()`);
}

export interface LoadHeadOptions {
  dtype?: ModelDtype;
  device?: NativeDevice;
  threads?: number;
  /** dataset_statistics.json entry; required when the file holds several datasets. */
  unnormKey?: string;
  /** Overrides of the run directory's head config. */
  head?: Partial<HeadConfig> & { denoise?: DenoiseOptions };
}

/** The action head of a run directory (checkpoints, config.json/manifest.json, dataset_statistics.json). */
export async function loadHead(runDir: string, options: LoadHeadOptions = {}): Promise<ActionHead> {
  checkOptions(options, LOAD_HEAD_KEYS, 'loadHead');
  if (options.head?.ablation !== undefined) parseAblation(options.head.ablation, 'head.ablation');
  const run = readRunConfig(runDir, { keyLayerIndices: options.head?.keyLayerIndices });
  const { backbone } = run;
  const patchesPerImage = (backbone.imageSize / backbone.featurizer.patchSize) ** 2;
  return createHead({
    actionHeadPath: headFile(runDir, 'action_head'),
    proprioProjectorPath: headFile(runDir, 'proprio_projector'),
    config: {
      ...run.head,
      ...options.head,
      numPatches: backbone.numImages * patchesPerImage,
      numActionQueries: backbone.numActionQueries,
    },
    dtype: options.dtype,
    device: options.device,
    threads: options.threads,
    statistics: readNormalizationStatistics(path.join(runDir, 'dataset_statistics.json'), options.unnormKey),
  });
}
