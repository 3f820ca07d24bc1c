/**
 * Run-directory configuration. The addon resolves a run directory once (native/run_dir.cc: config.json /
 * manifest.json / preprocessor_config.json / dataset_statistics.json / the checkpoint names, with every rule and
 * bound, errors naming the file and field); this module hands that spec to the loaders and keeps the user-facing
 * option rules (the ablation names) that TypeScript checks.
 */
import { ConfigError, InputError, toTypedError } from './errors.js';
import { getBinding } from './native/binding.js';
import type { Ablation, RunSpec } from './run-spec.js';

export type {
  Ablation, BackboneConfig, HeadConfig, LlmConfig, NormalizationStatistics, NormStats, RunSpec, VitConfig,
} from './run-spec.js';

export const ABLATIONS: readonly Ablation[] = ['none', 'no-mol', 'no-msm'];

/** `value` as an Ablation; anything else is an InputError naming `what`. */
export function parseAblation(value: unknown, what = 'ablation'): Ablation {
  if (!ABLATIONS.includes(value as Ablation))
    throw new InputError(`${what}: expected one of ${ABLATIONS.map((a) => `'${a}'`).join(', ')}, got ${JSON.stringify(value)}`);
  return value as Ablation;
}

/** The key of config.json that records how a trained run's head differs from the released layout. */
export const HEAD_CONFIG_KEY = 'm2vla_head';

/** What a trained run directory records under config.json "m2vla_head" (written by train's export). */
export interface RecordedHeadConfig {
  ablation: Ablation;
  num_heads: number;
  chunk: number;
}

/** What overrides what a run directory states: the MSM key layers and the statistics entry. */
export interface RunSpecOptions {
  keyLayerIndices?: number[];
  /** dataset_statistics.json entry; required when the file holds several datasets. */
  unnormKey?: string;
  /** Read dataset_statistics.json (default true; a training init run's entries are not used). */
  statistics?: boolean;
  /** Find the head's checkpoints (default true; the VLM alone needs only model.safetensors). */
  head?: boolean;
}

/** The run directory `dir` resolved by the addon: ConfigError / CheckpointError naming the file and field. */
export function resolveRunSpec(dir: string, options: RunSpecOptions = {}): RunSpec {
  const { keyLayerIndices, unnormKey, statistics = true, head = true } = options;
  if (unnormKey !== undefined && typeof unnormKey !== 'string')
    throw new InputError(`unnormKey: expected a string, got ${JSON.stringify(unnormKey)}`);
  if (keyLayerIndices !== undefined && !(Array.isArray(keyLayerIndices) && keyLayerIndices.every(Number.isInteger)))
    throw new ConfigError(`keyLayerIndices: expected an array of integers, got ${JSON.stringify(keyLayerIndices)}`);
  try {
    return getBinding().resolveRunDir(dir, {
      ...(keyLayerIndices && { keyLayerIndices }), ...(unnormKey !== undefined && { unnormKey }), statistics, head,
    });
  } catch (e) {
    throw toTypedError(e);
  }
}
