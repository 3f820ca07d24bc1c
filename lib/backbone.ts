/**
 * The frozen VLM on its own: observations in, every Qwen2 hidden state and the projected image patches out
 * (what the action head consumes, and what parity tests compare against the reference).
 *
 *   await using backbone = await loadBackbone(runDir, { dtype: 'bfloat16' });
 *   const { hiddenStates } = await backbone.forward({ pixelValues, inputIds });
 */
import fs from 'node:fs';
import path from 'node:path';
import { readRunConfig, type BackboneConfig } from './config.js';
import { CheckpointError, DisposedError, InputError } from './errors.js';
import { getBinding, type NativeBackbone, type NativeDtype } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { toModelInputs, type Observation, type TensorData } from './observation.js';

export interface BackboneOptions {
  /** Weights and computation dtype (RMSNorm and softmax still run in float32). Default float32. */
  dtype?: NativeDtype;
  /** Torch threads for this model's jobs (default: libtorch's choice). */
  threads?: number;
  /**
   * Round pixel values to bfloat16 before the vision towers, as the reference's `.to(torch.bfloat16)` does; the rest
   * stays in `dtype`. Matches the float32 analog of the bf16 deployment. Default false.
   */
  referenceCasts?: boolean;
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

/** The VLM checkpoint of a run directory: a single safetensors file or a sharded index. */
export function modelFile(runDir: string): string {
  for (const name of ['model.safetensors', 'model.safetensors.index.json']) {
    const file = path.join(runDir, name);
    if (fs.existsSync(file)) return file;
  }
  throw new CheckpointError(`${runDir}: no model.safetensors or model.safetensors.index.json`);
}

export class Backbone implements AsyncDisposable {
  #native: NativeBackbone | undefined;

  constructor(native: NativeBackbone, readonly config: BackboneConfig, readonly dtype: NativeDtype,
    private readonly referenceCasts: boolean) {
    this.#native = native;
  }

  /**
   * One observation, or a batch of them. Every prompt of a batch must have the same length: the reference right-pads
   * shorter prompts and masks the pads, which this engine does not reproduce (there is no attention mask), so such
   * batches are rejected with an InputError rather than computed differently.
   */
  async forward(observations: Observation | Observation[]): Promise<BackboneOutput> {
    const native = this.#native;
    if (!native) throw new DisposedError('Backbone: forward() after dispose()');
    const list = Array.isArray(observations) ? observations : [observations];
    if (list.length === 0) throw new InputError('observations: expected at least one');
    const packed = this.#pack(list, Array.isArray(observations));
    return runTorchJob(async () => {
      const r = await native.forward({ ...packed, referenceCasts: this.referenceCasts });
      return {
        hiddenStates: { data: r.hiddenStates, shape: r.hiddenShape },
        projectedPatches: { data: r.projectedPatches, shape: r.patchesShape },
      };
    });
  }

  #pack(list: Observation[], batched: boolean) {
    const inputs = list.map((o, i) => toModelInputs(o, this.config, batched ? `observations[${i}]` : ''));
    const promptLen = inputs[0].inputIds.length;
    inputs.forEach((inp, i) => {
      if (inp.inputIds.length !== promptLen) {
        throw new InputError(`observations[${i}].inputIds: ${inp.inputIds.length} tokens, but observations[0] has ` +
          `${promptLen}; a batch needs prompts of the same length (padded batches are not supported)`);
      }
    });
    const perObservation = inputs[0].pixelValues.length;
    const pixelValues = new Float32Array(perObservation * inputs.length);
    const inputIds = new BigInt64Array(promptLen * inputs.length);
    inputs.forEach((inp, i) => {
      pixelValues.set(inp.pixelValues, i * perObservation);
      inputIds.set(inp.inputIds, i * promptLen);
    });
    return { pixelValues, inputIds, batch: inputs.length, promptLen };
  }

  /**
   * Visual question answering with the VLM's own language head: greedy decoding (KV cache, tied LM head) over
   * [first prompt token] + image patches + the rest of the prompt, without action queries. Returns the generated
   * token ids, ending with a stop id if one was produced within `maxNewTokens` (default 64).
   */
  async ask(observation: Observation, options: AskOptions = {}): Promise<number[]> {
    const native = this.#native;
    if (!native) throw new DisposedError('Backbone: ask() after dispose()');
    const { maxNewTokens = 64, stopIds = [] } = options;
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new InputError(`maxNewTokens: expected a positive integer, got ${maxNewTokens}`);
    }
    const inputs = toModelInputs(observation, this.config);
    return runTorchJob(() => native.generate({
      ...inputs, promptLen: inputs.inputIds.length, maxNewTokens, stopIds, referenceCasts: this.referenceCasts,
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
export async function loadBackbone(runDir: string, options: BackboneOptions = {}): Promise<Backbone> {
  const { backbone: config } = readRunConfig(runDir);
  const dtype = options.dtype ?? 'float32';
  const modelPath = modelFile(runDir);
  const native = await runTorchJob(() => getBinding().createBackbone({ modelPath, config, dtype, threads: options.threads }));
  return new Backbone(native, config, dtype, options.referenceCasts ?? false);
}
