/**
 * Run-directory configuration: the one place that reads config.json / manifest.json / preprocessor_config.json
 * and turns them into the plain dims the native model is built from. Vision dims come from the timm ids in
 * config.json (table below, the real DINOv2-L/reg4 and SigLIP-so400m) unless a manifest.json states them
 * explicitly (tiny test models).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, InputError } from './errors.js';
import { parsePreprocessorConfig, type ImagePreprocessing } from './images.js';
import { readJson, type Json } from './json.js';

export interface VitConfig {
  kind: 'dinov2' | 'siglip';
  embedDim: number;
  depth: number;
  numHeads: number;
  mlpHidden: number;
  patchSize: number;
  classToken: boolean;
  regTokens: number;
  layerScale: boolean;
  /** Block whose output is used (timm get_intermediate_layers(n={depth-2})): the second-to-last. */
  takeBlock: number;
}

export interface LlmConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  vocabSize: number;
}

export interface BackboneConfig {
  imageSize: number;
  numImages: number;
  featurizer: VitConfig;
  fusedFeaturizer: VitConfig;
  /** preprocessor_config.json: resize size and the [DINO, SigLIP] normalization. */
  preprocessing: ImagePreprocessing;
  llm: LlmConfig;
  numActionQueries: number;
  /** Token id used as the placeholder of action-query positions and the appended stop id (SPEC §1.4). */
  aqPlaceholderId: number;
  stopTokenId: number;
}

export interface HeadConfig {
  /** Hidden-state indices whose vision means form the MSM key (reference: [3, 11, 23]). */
  keyLayerIndices: number[];
  topK: number;
  objective: 'l1' | 'denoise';
  /** The paper's ablation the head was trained as (config.json "m2vla_head"; default 'none', released runs). */
  ablation?: Ablation;
  /** Dims an ablated checkpoint does not show, as the run directory states them (no-mol: heads; no-msm: chunk). */
  numHeads?: number;
  chunk?: number;
}

/**
 * The paper's ablation (Table V): 'none' = the full model; 'no-mol' = "without MoL", each head block has a single
 * cross-attention to the last layer's [vision; action-query; proprio] tokens (native/head/cross_block.h); 'no-msm' =
 * "without MSM", no retrieval, no bank, no memory context.
 */
export type Ablation = 'none' | 'no-mol' | 'no-msm';
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

/** The real towers, by the timm ids a VLA-Adapter/M²-VLA config.json names. */
export const TIMM_VISION_TABLE: Record<string, Omit<VitConfig, 'takeBlock'>> = {
  'vit_large_patch14_reg4_dinov2.lvd142m': {
    kind: 'dinov2', embedDim: 1024, depth: 24, numHeads: 16, mlpHidden: 4096, patchSize: 14,
    classToken: true, regTokens: 4, layerScale: true,
  },
  'vit_so400m_patch14_siglip_224': {
    kind: 'siglip', embedDim: 1152, depth: 27, numHeads: 16, mlpHidden: 4304, patchSize: 14,
    classToken: false, regTokens: 0, layerScale: false,
  },
};

function num(obj: Json, key: string, file: string, fallback?: number): number {
  const v = obj[key];
  if (typeof v === 'number' && Number.isFinite(v)) return v;
  if (fallback !== undefined) return fallback;
  throw new ConfigError(`${file}: expected a number at "${key}", got ${JSON.stringify(v)}`);
}

function vitFromManifest(m: Json, file: string): VitConfig {
  const depth = num(m, 'depth', file);
  return {
    kind: m.kind === 'siglip' ? 'siglip' : 'dinov2',
    embedDim: num(m, 'embed_dim', file),
    depth,
    numHeads: num(m, 'num_heads', file),
    mlpHidden: num(m, 'mlp_hidden', file),
    patchSize: 14,
    classToken: m.class_token === true,
    regTokens: num(m, 'reg_tokens', file, 0),
    layerScale: m.layerscale === true,
    takeBlock: num(m, 'take_block_index', file, depth - 2),
  };
}

function vitFromTimmId(id: unknown, file: string): VitConfig {
  const row = typeof id === 'string' ? TIMM_VISION_TABLE[id] : undefined;
  if (!row) {
    throw new ConfigError(`${file}: unknown timm_model_ids entry ${JSON.stringify(id)}; known: ` +
      `${Object.keys(TIMM_VISION_TABLE).join(', ')} (or give explicit dims in manifest.json "vision")`);
  }
  return { ...row, takeBlock: row.depth - 2 };
}

export interface RunConfig {
  dir: string;
  backbone: BackboneConfig;
  head: HeadConfig;
  /** Parsed manifest.json of a tiny fixture model, if present. */
  manifest?: Json;
}

/** Options that override what a run directory does not state (the number of cameras, MSM key layers). */
export interface RunConfigOverrides {
  numImages?: number;
  keyLayerIndices?: number[];
}

export function readRunConfig(dir: string, overrides: RunConfigOverrides = {}): RunConfig {
  const cfgFile = path.join(dir, 'config.json');
  const cfg = readJson(cfgFile);
  const tc = cfg.text_config as Json | undefined;
  if (!tc) throw new ConfigError(`${cfgFile}: no "text_config" (expected a VLA-Adapter/M²-VLA OpenVLAConfig)`);
  const manifestFile = path.join(dir, 'manifest.json');
  const manifest = fs.existsSync(manifestFile) ? readJson(manifestFile) : undefined;
  const mv = manifest?.vision as Json | undefined;

  const ids = cfg.timm_model_ids as unknown[] | undefined;
  const featurizer = mv?.featurizer ? vitFromManifest(mv.featurizer as Json, manifestFile) : vitFromTimmId(ids?.[0], cfgFile);
  const fusedFeaturizer = mv?.fused_featurizer
    ? vitFromManifest(mv.fused_featurizer as Json, manifestFile) : vitFromTimmId(ids?.[1], cfgFile);
  if (cfg.use_fused_vision_backbone === false) {
    throw new ConfigError(`${cfgFile}: use_fused_vision_backbone=false (single tower) is not supported; M²-VLA uses DINOv2+SigLIP`);
  }
  const sizes = cfg.image_sizes as number[] | undefined;
  const imageSize = sizes?.[0] ?? 224;
  const prepFile = path.join(dir, 'preprocessor_config.json');
  const preprocessing = parsePreprocessorConfig(readJson(prepFile), prepFile);
  if (preprocessing.size !== imageSize || preprocessing.means.length !== 2) {
    throw new ConfigError(`${prepFile}: expects ${preprocessing.size}px images for ${preprocessing.means.length} backbone(s); ` +
      `config.json image_sizes says ${imageSize}px for the DINOv2 + SigLIP pair`);
  }

  const hiddenSize = num(tc, 'hidden_size', cfgFile);
  const numHeads = num(tc, 'num_attention_heads', cfgFile);
  const rope = (tc.rope_parameters ?? {}) as Json;
  const llm: LlmConfig = {
    hiddenSize,
    numLayers: num(tc, 'num_hidden_layers', cfgFile),
    numHeads,
    numKvHeads: num(tc, 'num_key_value_heads', cfgFile, numHeads),
    headDim: num(tc, 'head_dim', cfgFile, hiddenSize / numHeads),
    intermediateSize: num(tc, 'intermediate_size', cfgFile),
    ropeTheta: num(tc, 'rope_theta', cfgFile, num(rope, 'rope_theta', cfgFile, 1e6)),
    rmsNormEps: num(tc, 'rms_norm_eps', cfgFile, 1e-6),
    vocabSize: num(tc, 'vocab_size', cfgFile),
  };

  const ms = manifest?.sequence as Json | undefined;
  const mh = (manifest?.action_head as Json | undefined)?.memory as Json | undefined;
  const numImages = overrides.numImages ?? (mv ? num(mv, 'num_images', manifestFile) : 2);
  if (!Number.isInteger(numImages) || numImages < 1) throw new ConfigError(`numImages: expected a positive integer, got ${numImages}`);

  const backbone: BackboneConfig = {
    imageSize,
    numImages,
    featurizer,
    fusedFeaturizer,
    preprocessing,
    llm,
    numActionQueries: ms ? num(ms, 'num_action_queries_NT', manifestFile) : 64,
    aqPlaceholderId: ms ? num(ms, 'aq_placeholder_token_id', manifestFile) : 1,
    stopTokenId: ms ? num(ms, 'stop_token_id', manifestFile) : 2,
  };
  const keyLayerIndices = overrides.keyLayerIndices ?? (mh?.key_layer_indices as number[] | undefined) ?? [3, 11, 23];
  for (const k of keyLayerIndices) {
    if (!Number.isInteger(k) || k < 0 || k > llm.numLayers) {
      throw new ConfigError(`keyLayerIndices: ${k} is not a hidden-state index in 0..${llm.numLayers}`);
    }
  }
  const recorded = cfg[HEAD_CONFIG_KEY] as Json | undefined;
  let ablation: Ablation = 'none';
  if (recorded !== undefined) {
    try {
      ablation = parseAblation(recorded.ablation, `${cfgFile}: ${HEAD_CONFIG_KEY}.ablation`);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  }
  const head: HeadConfig = {
    keyLayerIndices,
    topK: mh ? num(mh, 'top_k', manifestFile) : 4,
    objective: 'l1',
    ablation,
    ...(recorded && { numHeads: num(recorded, 'num_heads', cfgFile), chunk: num(recorded, 'chunk', cfgFile) }),
  };
  return { dir, backbone, head, manifest };
}
