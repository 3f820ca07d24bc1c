/**
 * The shapes of a resolved run directory, as the addon returns them (native/run_dir.cc resolves config.json,
 * manifest.json, preprocessor_config.json, dataset_statistics.json and the checkpoint names once, with every rule and
 * bound). Types only: lib/config.ts, lib/native/binding.ts and the loaders share them without importing each other.
 */

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

/** What the image processor does, per vision backbone (one mean/std set each: [DINOv2, SigLIP] for the fused backbone). */
export interface ImagePreprocessing {
  size: number;
  means: number[][];
  stds: number[][];
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

/**
 * The paper's ablation (Table V): 'none' = the full model; 'no-mol' = "without MoL", each head block has a single
 * cross-attention to the last layer's [vision; action-query; proprio] tokens (native/head/cross_block.h); 'no-msm' =
 * "without MSM", no retrieval, no bank, no memory context.
 */
export type Ablation = 'none' | 'no-mol' | 'no-msm';

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

/** A run directory resolved by the addon (resolveRunDir). */
export interface RunSpec {
  dir: string;
  backbone: BackboneConfig;
  head: HeadConfig;
  /** dataset_statistics.json's entry (absent when resolved with `statistics: false`). */
  statistics?: NormalizationStatistics;
  /** The checkpoints: model.safetensors (or its index), the action head's and the proprio projector's ('' when resolved with `head: false`). */
  files: { model: string; actionHead: string; proprioProjector: string };
}
