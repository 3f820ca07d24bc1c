/**
 * Run-directory configuration: the one place that reads config.json / manifest.json / preprocessor_config.json
 * and turns them into the plain dims the native model is built from. Vision dims come from the timm ids in
 * config.json (table below, the real DINOv2-L/reg4 and SigLIP-so400m) unless a manifest.json states them
 * explicitly (tiny test models).
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, InputError } from './errors.js';
import { parsePreprocessorConfig, type ImagePreprocessing } from './preprocessor-config.js';
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
  /** Positions the model was trained for (max_position_embeddings): the whole sequence must fit. */
  maxPositions: number;
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

/**
 * Numbers of one JSON object, read with the file and the field's path in every error. Every dimension is bounded
 * here, before native code sees it: a zero head count divides by zero there, a huge one allocates without limit.
 */
function fields(obj: Json, file: string, prefix = '') {
  const where = (key: string) => `${file}: ${prefix}${key}`;
  const num = (key: string, fallback?: number): number => {
    const v = obj[key];
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (v == null && fallback !== undefined) return fallback;
    throw new ConfigError(`${where(key)}: expected a finite number, got ${JSON.stringify(v)}`);
  };
  return {
    num,
    /** An integer in min..max. */
    int(key: string, min: number, max: number, fallback?: number): number {
      const v = num(key, fallback);
      if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${where(key)}: expected an integer in ${min}..${max}, got ${v}`);
      return v;
    },
    /** A finite number > 0. */
    positive(key: string, fallback?: number): number {
      const v = num(key, fallback);
      if (!(v > 0)) throw new ConfigError(`${where(key)}: expected a number > 0, got ${v}`);
      return v;
    },
    fail(key: string, msg: string): never {
      throw new ConfigError(`${where(key)}: ${msg}`);
    },
  };
}

// Bounds far above any released model (DINOv2-L 1024 wide, SigLIP 27 blocks, Qwen2.5-0.5B 896 / 151936 ids).
const MAX_WIDTH = 16384, MAX_DEPTH = 256, MAX_MLP = 65536, MAX_VOCAB = 1 << 22, MAX_IMAGE = 1008;
/** observation.ts reads at most these cameras (primary, wrist). */
export const MAX_CAMERAS = 2;

function vitFromManifest(m: Json, file: string, prefix: string): VitConfig {
  const f = fields(m, file, prefix);
  const depth = f.int('depth', 2, MAX_DEPTH);
  const embedDim = f.int('embed_dim', 1, MAX_WIDTH);
  const numHeads = f.int('num_heads', 1, embedDim);
  if (embedDim % numHeads !== 0) f.fail('num_heads', `${numHeads} does not divide embed_dim ${embedDim}`);
  return {
    kind: m.kind === 'siglip' ? 'siglip' : 'dinov2',
    embedDim,
    depth,
    numHeads,
    mlpHidden: f.int('mlp_hidden', 1, MAX_MLP),
    patchSize: 14,
    classToken: m.class_token === true,
    regTokens: f.int('reg_tokens', 0, 64, 0),
    layerScale: m.layerscale === true,
    takeBlock: f.int('take_block_index', 0, depth - 1, depth - 2),
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
  const featurizer = mv?.featurizer ? vitFromManifest(mv.featurizer as Json, manifestFile, 'vision.featurizer.') : vitFromTimmId(ids?.[0], cfgFile);
  const fusedFeaturizer = mv?.fused_featurizer
    ? vitFromManifest(mv.fused_featurizer as Json, manifestFile, 'vision.fused_featurizer.') : vitFromTimmId(ids?.[1], cfgFile);
  if (cfg.use_fused_vision_backbone === false) {
    throw new ConfigError(`${cfgFile}: use_fused_vision_backbone=false (single tower) is not supported; M²-VLA uses DINOv2+SigLIP`);
  }
  const sizes = cfg.image_sizes;
  const imageSize = sizes === undefined ? 224 : Array.isArray(sizes) ? (sizes[0] as number) : NaN;
  if (!Number.isInteger(imageSize) || imageSize < 14 || imageSize > MAX_IMAGE || imageSize % 14 !== 0)
    throw new ConfigError(`${cfgFile}: image_sizes: expected a multiple of the patch size 14 in 14..${MAX_IMAGE}, got ${JSON.stringify(sizes)}`);
  const prepFile = path.join(dir, 'preprocessor_config.json');
  const preprocessing = parsePreprocessorConfig(readJson(prepFile), prepFile);
  if (preprocessing.size !== imageSize || preprocessing.means.length !== 2) {
    throw new ConfigError(`${prepFile}: expects ${preprocessing.size}px images for ${preprocessing.means.length} backbone(s); ` +
      `config.json image_sizes says ${imageSize}px for the DINOv2 + SigLIP pair`);
  }

  const t = fields(tc, cfgFile, 'text_config.');
  const hiddenSize = t.int('hidden_size', 1, MAX_WIDTH);
  const numHeads = t.int('num_attention_heads', 1, hiddenSize);
  const numKvHeads = t.int('num_key_value_heads', 1, numHeads, numHeads);
  if (numHeads % numKvHeads !== 0) t.fail('num_key_value_heads', `${numKvHeads} does not divide num_attention_heads ${numHeads}`);
  const headDim = t.int('head_dim', 2, MAX_WIDTH, hiddenSize / numHeads);
  if (headDim % 2 !== 0) t.fail('head_dim', `${headDim} is odd (rotary embeddings rotate pairs)`);
  const rope = (tc.rope_parameters ?? {}) as Json;
  const llm: LlmConfig = {
    hiddenSize,
    numLayers: t.int('num_hidden_layers', 1, MAX_DEPTH),
    numHeads,
    numKvHeads,
    headDim,
    intermediateSize: t.int('intermediate_size', 1, MAX_MLP),
    ropeTheta: t.positive('rope_theta', fields(rope, cfgFile, 'text_config.rope_parameters.').positive('rope_theta', 1e6)),
    rmsNormEps: t.positive('rms_norm_eps', 1e-6),
    vocabSize: t.int('vocab_size', 3, MAX_VOCAB),
    maxPositions: t.int('max_position_embeddings', 1, 1 << 20, 32768),
  };

  const ms = manifest?.sequence as Json | undefined;
  const mh = (manifest?.action_head as Json | undefined)?.memory as Json | undefined;
  const numImages = overrides.numImages ?? (mv ? fields(mv, manifestFile, 'vision.').int('num_images', 1, MAX_CAMERAS) : 2);
  if (!Number.isInteger(numImages) || numImages < 1 || numImages > MAX_CAMERAS)
    throw new ConfigError(`numImages: expected an integer in 1..${MAX_CAMERAS}, got ${numImages}`);
  const seq = ms ? fields(ms, manifestFile, 'sequence.') : undefined;
  const tokenId = (key: string, fallback: number) => seq ? seq.int(key, 0, llm.vocabSize - 1) : fallback;

  const backbone: BackboneConfig = {
    imageSize,
    numImages,
    featurizer,
    fusedFeaturizer,
    preprocessing,
    llm,
    numActionQueries: seq ? seq.int('num_action_queries_NT', 1, 1024) : 64,
    aqPlaceholderId: tokenId('aq_placeholder_token_id', 1),
    stopTokenId: tokenId('stop_token_id', 2),
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
    topK: mh ? fields(mh, manifestFile, 'action_head.memory.').int('top_k', 1, 1024) : 4,
    objective: 'l1',
    ablation,
    ...(recorded && {
      numHeads: fields(recorded, cfgFile, `${HEAD_CONFIG_KEY}.`).int('num_heads', 1, 1024),
      chunk: fields(recorded, cfgFile, `${HEAD_CONFIG_KEY}.`).int('chunk', 1, 1024),
    }),
  };
  return { dir, backbone, head, manifest };
}
