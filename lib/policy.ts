/**
 * The policy: observations in, unnormalized 8×7 action chunks out (SPEC: frozen VLM → MoL + MSM head).
 *
 *   await using policy = await loadPolicy(runDir, { dtype: 'bfloat16' });   // or { device: 'cuda:0', dtype: 'auto' }
 *   const { actions } = await policy.act({ images: { primary, wrist }, instruction: 'put the bowl on the plate', state });
 *
 * One act() is one native job (preprocess → vision → projector → Qwen2 → head → unnormalize) off the JS thread. On a
 * GPU, preprocessing and (un)normalization stay on the CPU; the inputs go over in one copy and the outputs come back
 * in one.
 */
import path from 'node:path';
import { loadBackboneFromSpec, resolvePlacement, type Backbone } from './backbone.js';
import { resolveRunSpec, type Ablation } from './config.js';
import { DisposedError, InputError, NonFiniteError } from './errors.js';
import { resolveRunDir, type PullOptions } from './hub.js';
import { probeCpuMatrix } from './runtime.js';
import { loadHeadFromSpec, type ActionHead, type DenoiseOptions, type MemoryBankSnapshot } from './head.js';
import {
  getBinding, type ModelDtype, type NativeDevice, type NativeKernelReport, type NativePlacement, type NativePolicy,
  type NativePolicyResult,
} from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { checkOptions, optionKeys } from './options.js';
import { centerCropArea } from './images.js';
import { checkObservations, packChecked, type Observation, type TensorData } from './observation.js';
import { DEMO_DIMS, ensureRandomRun, TINY_TOKENIZER_DIR, userCacheDir } from './random-run.js';
import { addSkills, saveSkills, type AddSkillsOptions, type AddSkillsResult, type SkillHost, type SkillSource } from './skills.js';

export interface PolicyOptions {
  /**
   * Where the weights live and act() computes: 'cpu' (default) or 'cuda' / 'cuda:N' (a CUDA build, see
   * docs/cuda.md; otherwise a ConfigError says how to get one).
   */
  device?: NativeDevice;
  /**
   * Weights and computation dtype of the VLM and the head. 'auto' (default): on the CPU bfloat16 where it has AMX-BF16
   * or where bfloat16 GEMMs measure >= 1.5x float32's (AVX512-BF16 CPUs without AMX: probed once per process), float32
   * elsewhere; bfloat16 on GPUs of compute capability >= 8.0, float16 below (`metadata.dtypeReason` says
   * which rule applied). float16 is for GPUs only (ConfigError on the CPU). 'int8' (CPU with AVX512-VNNI or AMX-INT8,
   * never chosen by 'auto'): the VLM's linears in W8A8 int8 with per-channel weight scales computed at load, the rest
   * of the VLM and the head in bfloat16 (docs/benchmarks.md states its error).
   */
  dtype?: 'auto' | ModelDtype;
  /** Torch threads for this policy's jobs (default: libtorch's choice). */
  threads?: number;
  /** Reproduce the reference's hard-coded bfloat16 roundings (pixel values, action-query slice, proprio). Default false. */
  referenceCasts?: boolean;
  /** Which dataset_statistics.json entry unnormalizes the actions (required when it holds several). */
  unnormKey?: string;
  /** LIBERO-style center crop of raw images (true = 0.9 of the area, or an area fraction). Default off. */
  centerCrop?: boolean | number;
  /** Head objective override ('l1' = the released single pass; 'denoise' = DDIM sampling) and its options. */
  objective?: 'l1' | 'denoise';
  denoise?: DenoiseOptions;
  /**
   * The ablation to load as (default: what the run directory records, 'none' for released runs). It must be the
   * checkpoint's variant: a mismatch is a CheckpointError, an unknown value an InputError.
   */
  ablation?: Ablation;
  /** How an `hf://owner/repo[/subfolder]` run directory is pulled (cache, endpoint, token, offline; see pull()). */
  hub?: PullOptions;
}

const ACT_KEYS = optionKeys<ActOptions>({ seed: true, stageTimes: true, maxPromptTokens: true });

const POLICY_KEYS = optionKeys<PolicyOptions>({
  device: true, dtype: true, threads: true, referenceCasts: true, unnormKey: true, centerCrop: true,
  objective: true, denoise: true, ablation: true, hub: true,
});

export interface ActOptions {
  /** Seed of the denoising objective's noise. */
  seed?: number;
  /**
   * Synchronized per-stage times in `timing` (default false). On a GPU this waits for the device after every stage
   * (about 7 host round trips per call), so leave it off where only latency matters; off, a GPU's stage fields are
   * the host's dispatch time and only `timing.total` is the call's. On the CPU the stages are exact either way.
   */
  stageTimes?: boolean;
  /** Refuse (InputError) prompts of more tokens than this, before any model work; the model's positions always bound them. */
  maxPromptTokens?: number;
}

export interface ActOutput {
  /** Unnormalized actions [chunk, actionDim], or [batch, chunk, actionDim] for an array of observations. */
  actions: TensorData;
  /** The head's output (normalized to [-1, 1]), same shape. */
  normalized: TensorData;
  /** MSM neighbours per observation: row indices into the bank and their similarities (-10000·mean |Δkey|). */
  retrieval: { indices: Int32Array; similarities: Float32Array; shape: [number, number] };
  /**
   * Milliseconds per stage, summed over the native calls of the batch; total = their wall time (no queue wait). On a
   * GPU the stage fields are each stage's execution time only with act({ stageTimes: true }) (metadata.stageTimes).
   */
  timing: { preprocess: number; vision: number; projector: number; llm: number; head: number; retrieval: number; total: number };
}

export interface LayerGates {
  /** Hidden-state index this MoL block reads (block i reads layer i+1). */
  layer: number;
  /** tanh(g): the static scale of the vision logits. */
  visionScale: number;
  /** sigmoid(mean over [AQ; proprio] tokens of k_adapter's gate outputs): the dynamic per-head factor, [batch * heads]. */
  queryGate: Float32Array;
}

export interface PolicyFeatures {
  /** The action-query slice the head reads, [batch, layers+1, numActionQueries, hidden] (off-by-one slicing). */
  actionQueries: TensorData;
  /** ProprioProjector output [batch, hidden]. */
  proprioFeatures: TensorData;
  /** The state after q01/q99 normalization [batch, proprioDim]. */
  normalizedState: Float64Array;
  /** MSM query keys [batch, keyDim] and the retrieved rows (no-msm: [batch, 0], no rows). */
  queryKeys: TensorData;
  retrieval: ActOutput['retrieval'];
  /** One entry per MoL block; empty for the no-mol ablation, which has no gates. */
  gates: LayerGates[];
}

export interface PolicyMetadata {
  chunk: number;
  actionDim: number;
  proprioDim: number;
  numImages: number;
  imageSize: number;
  hidden: number;
  layers: number;
  /** The device the models are on ('cpu', 'cuda:0') and its name ('CPU' or the GPU's). */
  device: string;
  deviceName: string;
  /** The resolved computation dtype ('auto' decided), and why ('auto: this CPU has AMX-BF16, ...', the measured GEMM rates, or 'asked for'). */
  dtype: ModelDtype;
  dtypeReason: string;
  /**
   * Which implementation of the head's custom kernels act() runs: 'cpu-fused' (the fused CPU loops), 'cuda-kernels'
   * (native/cuda, each passed its self-check on this GPU at load) or 'libtorch-ops' (plain ops on the GPU: a kernel
   * disagreed with its reference, see `kernels.warnings`, or the model is outside the kernels' limits).
   */
  kernels: NativeKernelReport;
  objective: 'l1' | 'denoise';
  unnormKey: string;
  /** MSM bank rows in use, and rows it holds (the released layout stores a fixed-size bank, partly filled). */
  bankSize: number;
  bankCapacity: number;
  /** The head variant: 'none' (full model), 'no-mol' or 'no-msm' (the paper's ablation). */
  ablation: Ablation;
  /**
   * When act()'s `timing` stages are each stage's execution time: 'always' on the CPU (exact at no cost), 'on request'
   * on a GPU (only with act({ stageTimes: true }), which synchronizes the device after every stage; by default there
   * are no per-stage syncs and the stage fields are dispatch times).
   */
  stageTimes: 'always' | 'on request';
}

export class Policy implements AsyncDisposable {
  #native: NativePolicy | undefined;
  readonly metadata: PolicyMetadata;

  #skills: SkillHost['added'] = [];

  constructor(native: NativePolicy, private readonly backbone: Backbone, private readonly head: ActionHead,
    private readonly options: PolicyOptions, placement: NativePlacement, kernels: NativeKernelReport,
    /** The run directory it was loaded from. */
    readonly runDir: string) {
    this.#native = native;
    const d = head.dims;
    this.metadata = {
      chunk: d.chunk, actionDim: d.actionDim, proprioDim: d.proprioDim, numImages: backbone.config.numImages,
      imageSize: backbone.config.imageSize, hidden: d.hidden, layers: backbone.config.llm.numLayers,
      device: placement.device, deviceName: placement.name, dtype: placement.dtype, dtypeReason: placement.reason, kernels,
      objective: options.objective ?? 'l1', unnormKey: head.statistics!.key, bankSize: d.bankSize, bankCapacity: d.bankCapacity,
      ablation: head.ablation, stageTimes: placement.device === 'cpu' ? 'always' : 'on request',
    };
  }

  /**
   * One observation → actions [chunk, actionDim]; an array → one batch, [batch, chunk, actionDim]. Observations whose
   * prompts differ in length run as separate native calls (grouped by length), each exact.
   */
  async act(observations: Observation | Observation[], options: ActOptions = {}): Promise<ActOutput> {
    checkOptions(options, ACT_KEYS, 'act');
    const { stageTimes = false } = options;
    if (typeof stageTimes !== 'boolean') throw new InputError(`act: stageTimes: expected a boolean, got ${JSON.stringify(stageTimes)}`);
    const results = await this.#run(observations, false, options.seed, options.maxPromptTokens, stageTimes);
    return checkFinite(this.#merge(results, Array.isArray(observations)), this.head.dims.chunk * this.head.dims.actionDim);
  }

  /** The head's inputs and the per-layer MoL gates for one observation or a batch (runs the plain MoL path). */
  async features(observations: Observation | Observation[]): Promise<PolicyFeatures> {
    const [{ result: r, batch }] = await this.#run(observations, true);
    const it = r.intermediates!;
    const H = this.head.dims.numHeads;
    return {
      actionQueries: asTensor(it.inputAq), proprioFeatures: asTensor(it.proprioFeatures), normalizedState: r.proprio,
      queryKeys: { data: r.retrieval.queryKeys, shape: [batch, r.retrieval.queryKeys.length / batch] },
      retrieval: retrievalOf(r, batch),
      gates: this.head.ablation === 'no-mol' ? [] : it.blocks.map((b, i) => ({
        layer: i + 1, visionScale: asTensor(b.tanhG!).data[0], queryGate: asTensor(b.caSGate!).data.slice(0, batch * H),
      })),
    };
  }

  /**
   * A snapshot copy of the MSM bank (float32 rows in use: keys [size, keyDim], values [size, chunk × actionDim]),
   * e.g. to relate key distances to value distances. act()'s retrieval indices are rows of it. Empty for 'no-msm'.
   */
  memoryBank(): Promise<MemoryBankSnapshot> {
    if (!this.#native) return Promise.reject(new DisposedError('Policy: memoryBank() after dispose()'));
    return this.head.memoryBank();
  }

  /**
   * Appends skills to the MSM bank without training (lib/skills.ts): from a LIBERO/LeRobot path, a Dataset or episodes
   * in memory, keys as act() computes them and values the normalized action chunks, FIFO within the bank's capacity.
   * Bad input (action/proprio dims, camera layout, NaN) is a typed error and leaves the bank as it was.
   */
  async addSkills(source: SkillSource, options?: AddSkillsOptions): Promise<AddSkillsResult> {
    return addSkills(this.#skillHost('addSkills'), source, options);
  }

  /** Writes the run directory with the grown bank to `out` (a new directory, or this policy's runDir). See lib/skills.ts. */
  async saveSkills(out: string): Promise<string> {
    return saveSkills(this.#skillHost('saveSkills'), out);
  }

  #skillHost(what: string): SkillHost {
    if (!this.#native) throw new DisposedError(`Policy: ${what}() after dispose()`);
    return {
      runDir: this.runDir, head: this.head, numImages: this.metadata.numImages, added: this.#skills,
      bankChanged: (size) => { this.metadata.bankSize = size; },
      queryKeys: async (observations) => {
        const groups = await this.#run(observations, false);
        const width = this.head.dims.keyDim;
        const keys = new Float32Array(observations.length * width);
        for (const { indices, result } of groups) {
          indices.forEach((row, j) => keys.set(result.retrieval.queryKeys.subarray(j * width, (j + 1) * width), row * width));
        }
        return keys;
      },
    };
  }

  /**
   * Validates every observation once (errors name its index), groups them by prompt length and runs one native call
   * per group. `intermediates` (features()) needs a single group: its per-block tensors are not split per observation.
   */
  async #run(observations: Observation | Observation[], intermediates: boolean, seed?: number, maxPromptTokens?: number,
    stageTimes = false) {
    const native = this.#native;
    if (!native) throw new DisposedError('Policy: act() after dispose()');
    const batched = Array.isArray(observations);
    const ctx = {
      config: this.backbone.config, tokenizer: this.backbone.tokenizer, proprioDim: this.head.dims.proprioDim, maxPromptTokens,
    };
    const checked = await checkObservations(batched ? observations : [observations], ctx, batched);
    const groups = new Map<number, number[]>();
    checked.forEach((c, i) => groups.set(c.ids.length, [...(groups.get(c.ids.length) ?? []), i]));
    if (intermediates && groups.size > 1) throw new InputError('features(): observations of one call need prompts of the same length');
    return Promise.all([...groups.values()].map(async (indices) => {
      const packed = packChecked(indices.map((i) => checked[i]));
      let ms = 0;  // measured inside the job: groups queue one after another, their waits must not add up
      const result = await runTorchJob(async () => {
        const started = performance.now();
        const r = await native.act({
          ...packed, state: packed.state!, referenceCasts: this.options.referenceCasts ?? false, intermediates, stageTimes, seed,
        });
        ms = performance.now() - started;
        return r;
      });
      return { indices, result, batch: packed.batch, ms };
    }));
  }

  #merge(groups: Array<{ indices: number[]; result: NativePolicyResult; batch: number; ms: number }>, batched: boolean): ActOutput {
    const { chunk, actionDim } = this.head.dims;
    const per = chunk * actionDim;
    const batch = groups.reduce((n, g) => n + g.batch, 0);
    const R = groups[0].result.retrieval.indices.length / groups[0].batch;
    const actions = new Float32Array(batch * per), normalized = new Float32Array(batch * per);
    const indices = new Int32Array(batch * R), similarities = new Float32Array(batch * R);
    const timing = { preprocess: 0, vision: 0, projector: 0, llm: 0, head: 0, retrieval: 0, total: 0 };
    for (const { indices: rows, result: r, ms } of groups) {
      rows.forEach((row, j) => {
        actions.set(r.actions.subarray(j * per, (j + 1) * per), row * per);
        normalized.set(r.normalized.subarray(j * per, (j + 1) * per), row * per);
        indices.set(r.retrieval.indices.subarray(j * R, (j + 1) * R), row * R);
        similarities.set(r.retrieval.similarities.subarray(j * R, (j + 1) * R), row * R);
      });
      for (const k of Object.keys(r.timing) as Array<keyof typeof r.timing>) timing[k] += r.timing[k];
      timing.total += ms;
    }
    const shape = batched ? [batch, chunk, actionDim] : [chunk, actionDim];
    return {
      actions: { data: actions, shape }, normalized: { data: normalized, shape },
      retrieval: { indices, similarities, shape: [batch, R] }, timing,
    };
  }

  /** Releases the native models; a call already running finishes. Later calls reject with DisposedError. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
    this.backbone.dispose();
    this.head.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

/** NaN/Inf actions must never reach a robot: the whole call fails, naming the observations that produced them. */
function checkFinite(out: ActOutput, per: number): ActOutput {
  const bad: number[] = [];
  const a = out.actions.data;
  for (let i = 0; i < a.length; i++) {
    if (!Number.isFinite(a[i])) {
      bad.push(Math.floor(i / per));
      i = (bad.at(-1)! + 1) * per - 1;
    }
  }
  if (bad.length) {
    throw new NonFiniteError(`act(): the model produced NaN/Inf actions for observation${bad.length > 1 ? 's' : ''} ` +
      `${bad.join(', ')} (check the weights, dataset_statistics.json and the inputs); nothing was returned`, { observations: bad });
  }
  return out;
}

function asTensor(t: { data: Uint8Array; shape: number[] }): TensorData {
  const bytes = t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength);
  return { data: new Float32Array(bytes), shape: t.shape };
}

function retrievalOf(r: NativePolicyResult, batch: number): ActOutput['retrieval'] {
  const R = r.retrieval.indices.length / batch;
  return { indices: r.retrieval.indices, similarities: r.retrieval.similarities, shape: [batch, R] };
}

/**
 * Loads a VLA-Adapter / M²-VLA run directory as released (model.safetensors, action_head--checkpoint.pt or
 * .safetensors, proprio_projector--checkpoint.pt, dataset_statistics.json, tokenizer, preprocessor_config.json), a
 * local path or `hf://owner/repo[@revision][/subfolder]` on the Hugging Face Hub (pulled into its cache first).
 */
export async function loadPolicy(runDir: string, options: PolicyOptions = {}): Promise<Policy> {
  checkOptions(options, POLICY_KEYS, 'loadPolicy');
  runDir = await resolveRunDir(runDir, options.hub);
  await probeCpuMatrix();  // so that 'auto' never measures on this thread
  const placement = resolvePlacement(options.device, options.dtype ?? 'auto');
  const run = resolveRunSpec(runDir, { unnormKey: options.unnormKey });  // the one read of the run directory
  const centerCrop = centerCropArea(options.centerCrop);
  const on = { dtype: placement.dtype, device: placement.device as NativeDevice, threads: options.threads };
  const backbone = await loadBackboneFromSpec(run, { ...on, referenceCasts: options.referenceCasts, centerCrop: options.centerCrop });
  try {
    const head = await loadHeadFromSpec(run, {
      ...on, dtype: placement.dtype === 'int8' ? 'bfloat16' : placement.dtype,
      head: {
        ...(options.objective && { objective: options.objective }), ...(options.denoise && { denoise: options.denoise }),
        ...(options.ablation !== undefined && { ablation: options.ablation }),
      },
    });
    const stats = head.statistics!;
    const native = getBinding().createPolicy({
      backbone: backbone.native, head: head.native, threads: options.threads,
      preprocess: { ...run.backbone.preprocessing, centerCrop },
      stats: {
        proprio: { q01: stats.proprio.q01, q99: stats.proprio.q99, mask: Uint8Array.from(stats.proprio.mask, Number) },
        action: { q01: stats.action.q01, q99: stats.action.q99, mask: Uint8Array.from(stats.action.mask, Number) },
      },
    });
    // The first use of the device: on a GPU the CUDA kernels are checked against their references here.
    const kernels = await runTorchJob(() => native.kernels());
    for (const w of kernels.warnings) process.emitWarning(w, { code: 'M2VLA_KERNEL_FALLBACK' });
    return new Policy(native, backbone, head, options, placement, kernels, path.resolve(runDir));
  } catch (e) {
    backbone.dispose();
    throw e;
  }
}

/**
 * The embedded demo model: a small M²-VLA (DINOv2/SigLIP towers of 3 blocks, a 4-layer Qwen2, 4 MoL blocks, a
 * 64-entry skill bank) with deterministic random weights in the released layout, written on first use to this user's
 * cache folder (`~/.cache/m2vla/demo-v1`, see userCacheDir; ~3 MB, ~30 ms) and reused while its files keep their
 * recorded SHA-256. Untrained: its actions exercise the engine, they do not solve tasks.
 */
export function demoRunDir(): Promise<string> {
  return ensureRandomRun(path.join(userCacheDir(), 'demo-v1'), DEMO_DIMS, { seed: 7, tokenizerDir: TINY_TOKENIZER_DIR });
}
