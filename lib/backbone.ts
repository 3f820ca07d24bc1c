/**
 * The frozen VLM on its own: observations in, every Qwen2 hidden state and the projected image patches out
 * (what the action head consumes, and what parity tests compare against the reference).
 *
 *   await using backbone = await loadBackbone(runDir, { dtype: 'bfloat16' });
 *   const { hiddenStates } = await backbone.forward({ pixelValues, inputIds });
 */
import fs from 'node:fs';
import path from 'node:path';
import { resolveRunSpec, type BackboneConfig, type RunSpec } from './config.js';
import { centerCropArea } from './images.js';
import { ConfigError, DisposedError, InputError, toTypedError } from './errors.js';
import { getBinding, type ModelDtype, type NativeBackbone, type NativeDevice, type NativePlacement } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { packObservations, type Observation, type PackedBatch, type TensorData } from './observation.js';
import { PromptTokenizer } from './tokenizer.js';
import { probeCpuMatrix } from './runtime.js';
import { checkOptions, optionKeys } from './options.js';

export interface BackboneOptions {
  /**
   * Weights and computation dtype (float16 on CUDA only; int8 = W8A8 linears, the rest bfloat16, on a CPU with
   * AVX512-VNNI or AMX-INT8; 'auto' = what loadPolicy's 'auto' picks on this machine, `backbone.dtype` says which).
   * Default float32.
   */
  dtype?: 'auto' | ModelDtype;
  /** Where the weights live and forward() runs ('cuda:N' needs a CUDA build). Default 'cpu'. */
  device?: NativeDevice;
  /** Torch threads for this model's jobs (default: libtorch's choice). */
  threads?: number;
  /**
   * Round pixel values to bfloat16 before the vision towers, as the reference's `.to(torch.bfloat16)` does; the rest
   * stays in `dtype`. Matches the float32 analog of the bf16 deployment. Default false.
   */
  referenceCasts?: boolean;
  /** LIBERO-style center crop of raw images (true = 0.9 of the area, or an area fraction). Default off. */
  centerCrop?: boolean | number;
}

export interface BackboneOutput {
  /** [layers+1, batch, seq, hidden]: 0 = input embeddings, 1..layers-1 = layer outputs, layers = final RMSNorm. */
  hiddenStates: TensorData;
  /** [batch, numPatches, hidden]: projector output, primary image patches then wrist. */
  projectedPatches: TensorData;
}

export interface AskOptions {
  maxNewTokens?: number;
  /** Token ids that end the answer (e.g. Qwen's <|im_end|> 151645 and <|endoftext|> 151643). */
  stopIds?: number[];
}

export class Backbone implements AsyncDisposable {
  #native: NativeBackbone | undefined;

  /** The native object (for composing models natively, e.g. createPolicy). */
  get native(): NativeBackbone {
    if (!this.#native) throw new DisposedError('Backbone: disposed');
    return this.#native;
  }

  constructor(native: NativeBackbone, readonly config: BackboneConfig, readonly dtype: ModelDtype,
    private readonly referenceCasts: boolean, readonly tokenizer?: PromptTokenizer, private readonly centerCrop = 0) {
    this.#native = native;
  }

  /**
   * One observation, or a batch of them (raw images or pixelValues; instruction or inputIds). Every prompt of a batch must have the same length: the reference right-pads
   * shorter prompts and masks the pads, which this engine does not reproduce (there is no attention mask), so such
   * batches are rejected with an InputError rather than computed differently.
   */
  async forward(observations: Observation | Observation[]): Promise<BackboneOutput> {
    const native = this.#native;
    if (!native) throw new DisposedError('Backbone: forward() after dispose()');
    const list = Array.isArray(observations) ? observations : [observations];
    const packed = await packObservations(list, { config: this.config, tokenizer: this.tokenizer }, Array.isArray(observations));
    const pixelValues = await this.#pixels(packed);
    return runTorchJob(async () => {
      const r = await native.forward({ ...packed, pixelValues, referenceCasts: this.referenceCasts });
      return {
        hiddenStates: { data: r.hiddenStates, shape: r.hiddenShape },
        projectedPatches: { data: r.projectedPatches, shape: r.patchesShape },
      };
    });
  }

  /** Pixel values of a packed batch: given, or preprocessed natively from its raw images (one torch job). */
  #pixels(packed: PackedBatch): Promise<Float32Array> {
    if (packed.pixelValues) return Promise.resolve(packed.pixelValues);
    const { size, means, stds } = this.config.preprocessing;
    return runTorchJob(() => getBinding().preprocessImages({
      images: packed.images!, size, means, stds, centerCrop: this.centerCrop, imagesPerSample: this.config.numImages,
    }));
  }

  /**
   * Visual question answering with the VLM's own language head: greedy decoding (KV cache, tied LM head) over
   * [first prompt token] + image patches + the rest of the prompt, without action queries. Returns the generated
   * token ids, ending with a stop id if one was produced within `maxNewTokens` (default 64).
   */
  async ask(observation: Observation, options: AskOptions = {}): Promise<number[]> {
    checkOptions(options, ASK_KEYS, 'ask');
    const native = this.#native;
    if (!native) throw new DisposedError('Backbone: ask() after dispose()');
    const { maxNewTokens = 64, stopIds = [] } = options;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new InputError(`maxNewTokens: expected a positive integer, got ${maxNewTokens}`);
    }
    const packed = await packObservations([observation], { config: this.config, tokenizer: this.tokenizer }, false);
    const pixelValues = await this.#pixels(packed);
    return runTorchJob(() => native.generate({
      pixelValues, inputIds: packed.inputIds, promptLen: packed.promptLen, maxNewTokens, stopIds, referenceCasts: this.referenceCasts,
    }));
  }

  /** Releases the native model; a call already running finishes. Later calls reject with DisposedError. */
  dispose(): void {
    this.#native?.dispose();
    this.#native = undefined;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.dispose();
  }
}

/** Loads the frozen VLM of a run directory (config.json, preprocessor_config.json, model.safetensors). */
const BACKBONE_KEYS = optionKeys<BackboneOptions>({ dtype: true, device: true, threads: true, referenceCasts: true, centerCrop: true });
const ASK_KEYS = optionKeys<AskOptions>({ maxNewTokens: true, stopIds: true });

export async function loadBackbone(runDir: string, options: BackboneOptions = {}): Promise<Backbone> {
  checkOptions(options, BACKBONE_KEYS, 'loadBackbone');
  await probeCpuMatrix();  // resolvePlacement reads the CPU's features: their first read measures GEMMs, never on this thread
  const placement = resolvePlacement(options.device, options.dtype ?? 'float32');
  return loadBackboneFromSpec(resolveRunSpec(runDir, { statistics: false, head: false }),
    { ...options, dtype: placement.dtype, device: placement.device as NativeDevice });
}

/**
 * The checked device and dtype: the rules (which strings, 'auto', what a build or GPU can run) are native/device.cc's
 * alone; here only the types are checked. InputError for a malformed value, ConfigError for what cannot run here. A
 * dtype far below this CPU's float32 speed is a process warning (code M2VLA_SLOW_DTYPE). Callers await
 * probeCpuMatrix() first: the rules read the CPU's features, whose first read measures GEMMs.
 */
export function resolvePlacement(device: unknown = 'cpu', dtype: unknown): NativePlacement {
  if (typeof device !== 'string') throw new InputError(`device: expected a string ('cpu', 'cuda' or 'cuda:N'), got ${JSON.stringify(device)}`);
  if (typeof dtype !== 'string') throw new InputError(`dtype: expected a string ('auto', 'float32', 'bfloat16', 'float16', 'int8'), got ${JSON.stringify(dtype)}`);
  let placement: NativePlacement;
  try {
    placement = getBinding().resolvePlacement({ device, dtype });
  } catch (e) {
    throw toTypedError(e);
  }
  if (placement.warning) process.emitWarning(placement.warning, { code: 'M2VLA_SLOW_DTYPE' });
  return placement;
}

/**
 * Why `dtype` cannot run on `device` in this build and on this CPU (the ConfigError message of native/device.cc's
 * rules, which say what works instead), or undefined when it can. Callers await probeCpuMatrix() first.
 */
export function placementRefusal(device: string, dtype: string): string | undefined {
  try {
    getBinding().resolvePlacement({ device, dtype });
    return undefined;
  } catch (e) {
    const error = toTypedError(e);
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
}

/**
 * loadBackbone over an already resolved run directory and placement (loadPolicy resolves both once for the VLM and
 * the head).
 */
export async function loadBackboneFromSpec(spec: RunSpec, options: BackboneOptions & { dtype: ModelDtype }): Promise<Backbone> {
  const { dir: runDir, backbone: config } = spec;
  const centerCrop = centerCropArea(options.centerCrop);  // checked at load, not at the first act
  const dtype = options.dtype;
  const modelPath = spec.files.model;
  const tokenizer = fs.existsSync(path.join(runDir, 'tokenizer.json')) ? await PromptTokenizer.load(runDir, { vocabSize: config.llm.vocabSize }) : undefined;
  const native = await runTorchJob(() => getBinding().createBackbone({
    modelPath, config, dtype, device: options.device, threads: options.threads,
  }));
  return new Backbone(native, config, dtype, options.referenceCasts ?? false, tokenizer, centerCrop);
}
