/** Reading checkpoints as name -> tensor, for inspection, conversion tools and tests (models load theirs natively). */
import { getBinding, type NativeTensor } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { checkOptions, optionKeys } from './options.js';

/** A tensor read from a checkpoint: little-endian bytes, dtype and shape. */
export type CheckpointTensor = NativeTensor;

export interface LoadStateDictOptions {
  /** Convert floating-point tensors to this dtype (integer and bool tensors are left alone). */
  dtype?: 'float32' | 'bfloat16' | 'float16' | 'float64';
  /** libtorch threads for the job (default: libtorch's own). */
  threads?: number;
}

/**
 * Reads a `.safetensors` file, a sharded `*.safetensors.index.json` (shards next to it) or a `torch.save` state
 * dict (`.pt`/`.bin`; only tensors and OrderedDicts are unpickled, no code runs). A leading `module.` is stripped
 * from every name. A missing, truncated or corrupt file rejects with a `CheckpointError` naming the file.
 */
const KEYS = optionKeys<LoadStateDictOptions>({ dtype: true, threads: true });

export function loadStateDict(path: string, options: LoadStateDictOptions = {}): Promise<Record<string, CheckpointTensor>> {
  try {
    checkOptions(options, KEYS, 'loadStateDict');
  } catch (e) {
    return Promise.reject(e);
  }
  return runTorchJob(() => getBinding().loadStateDict(path, options));
}
