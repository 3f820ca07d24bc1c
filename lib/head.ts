/**
 * The M²-VLA action head on its own: the VLM's hidden states and the robot state in, an action chunk out.
 *
 *   await using head = await loadHead(runDir);
 *   const { actions } = await head.predict({ hiddenStates, hiddenShape, promptLen, state });
 *
 * TypeScript validates and packs; the addon computes (normalization, retrieval, the MoL blocks, unnormalization).
 */
import { parseAblation, resolveRunSpec, type Ablation, type HeadConfig, type NormalizationStatistics, type NormStats, type RunSpec } from './config.js';
import { CheckpointError, ConfigError, DisposedError, InputError, ShapeError, toTypedError } from './errors.js';
import {
  getBinding, type ModelDtype, type NativeDenoiseConfig, type NativeDevice, type NativeHead, type NativeHeadDims,
  type NativeHeadForwardInput, type NativeHeadTrace, type NativeTensor,
} from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import type { TensorData } from './observation.js';
import { checkOptions, optionKeys } from './options.js';

export type { NormalizationStatistics, NormStats } from './run-spec.js';

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

/**
 * dataset_statistics.json → the statistics of one dataset. Without `unnormKey` the file must hold exactly one; like
 * the LIBERO eval script, "<key>_no_noops" is used when only that exists (native/run_dir.cc's rules: values within
 * ±1e9, q99 >= q01, an optional boolean mask; ConfigError naming the entry).
 */
export function readNormalizationStatistics(file: string, unnormKey?: string): NormalizationStatistics {
  if (unnormKey !== undefined && typeof unnormKey !== 'string')
    throw new InputError(`unnormKey: expected a string, got ${JSON.stringify(unnormKey)}`);
  try {
    return getBinding().readNormalizationStatistics(file, unnormKey);
  } catch (e) {
    throw toTypedError(e);
  }
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
    const native = await getBinding().createHead({
      actionHeadPath, proprioProjectorPath, dtype, device, threads,
      config: { ...config, objective: config.objective ?? 'l1', ablation: config.ablation ?? 'none' },  // the defaults, decided here
    });
    return new ActionHead(native, statistics);
  });
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
  return loadHeadFromSpec(resolveRunSpec(runDir, { keyLayerIndices: options.head?.keyLayerIndices, unnormKey: options.unnormKey }), options);
}

/** loadHead over an already resolved run directory (loadPolicy resolves it once for the VLM and the head). */
export function loadHeadFromSpec(spec: RunSpec, options: Omit<LoadHeadOptions, 'unnormKey'>): Promise<ActionHead> {
  const { backbone } = spec;
  const patchesPerImage = (backbone.imageSize / backbone.featurizer.patchSize) ** 2;
  return createHead({
    actionHeadPath: spec.files.actionHead,
    proprioProjectorPath: spec.files.proprioProjector,
    config: {
      ...spec.head,
      ...options.head,
      numPatches: backbone.numImages * patchesPerImage,
      numActionQueries: backbone.numActionQueries,
    },
    dtype: options.dtype,
    device: options.device,
    threads: options.threads,
    statistics: spec.statistics,
  });
}
