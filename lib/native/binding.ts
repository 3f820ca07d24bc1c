/**
 * The raw addon, typed. Never exported publicly: lib/*.ts wrap it. Loading preloads libtorch from the same lookup
 * the installer used (scripts/libtorch.mjs), so build/ and prebuilds/ binaries both find it without LD_LIBRARY_PATH.
 */
import { loadAddon } from '../../scripts/load-addon.mjs';
import type { FoundLibtorch } from '../../scripts/libtorch.mjs';
import type { BackboneConfig, ImagePreprocessing, NormalizationStatistics, RunSpec } from '../run-spec.js';
import { LoadError, M2vlaError } from '../errors.js';

export interface GpuInfo {
  device: string;
  name: string;
  /** Compute capability, e.g. '8.6'. */
  capability: string;
  freeBytes: number;
  totalBytes: number;
  /** CUDA versions as the runtime API reports them (13000 = 13.0). */
  driverVersion: number;
  runtimeVersion: number;
}

export interface BuildInfo {
  torchVersion: string;
  /** Compiled with the CUDA kernels (M2VLA_CUDA=1). */
  cuda: boolean;
  /** A CUDA build that sees at least one GPU (always false in a CPU-only build, which never probes). */
  cudaAvailable: boolean;
  /** Built with c10d's Gloo process group (data-parallel training on the CPU). */
  distributed: boolean;
  /** Built with c10d's NCCL process group (data-parallel training on GPUs; CUDA builds against a libtorch with NCCL). */
  nccl: boolean;
  /** CUDA builds: every GPU the runtime sees, and why it sees none. */
  gpus?: GpuInfo[];
  gpuError?: string;
  /** CPU-only builds: how to build with CUDA. */
  cudaBuildHint?: string;
  threads: number;
  parallelInfo: string;
  /** CPU features; amxUsable: the kernel granted this process the AMX tile state (oneDNN uses AMX). */
  cpu: Record<'avx2' | 'avx512f' | 'avx512bf16' | 'amx-bf16' | 'amx-int8' | 'avx512vnni' | 'amxUsable', boolean>;
  /** What dtype 'auto' picks on this CPU and why; whether dtype 'int8' can run here (AVX512-VNNI or AMX-INT8). */
  /** bf16Gflops/fp32Gflops: the GEMM probe behind 'auto' on CPUs with AVX512-BF16 and no AMX (absent elsewhere). */
  cpuDtype: {
    auto: 'float32' | 'bfloat16'; reason: string; int8: boolean; bf16Gflops?: number; fp32Gflops?: number;
    /** Whether oneDNN runs bfloat16 here (AVX512-BW/VL/DQ or AVX-NE-CONVERT); without it ATen's fallback is ~50x slower than float32. */
    onednnBf16: boolean;
  };
  napiVersion: number;
}

export type NativeDtype = 'float32' | 'bfloat16';
/**
 * What models can be loaded in: float16 only on a CUDA device; int8 only on a CPU with AVX512-VNNI or AMX-INT8 (the
 * VLM's linears in W8A8 int8, everything else in bfloat16).
 */
export type ModelDtype = NativeDtype | 'float16' | 'int8';
export type NativeDevice = 'cpu' | 'cuda' | `cuda:${number}`;

/** Where loadPolicy puts the models, after 'auto' and the build and GPU checks. */
export interface NativePlacement {
  device: string;
  dtype: ModelDtype;
  /** Why this dtype: what 'auto' saw on this machine, or "asked for". */
  reason: string;
  /** Set when the dtype runs far below this CPU's float32 speed (bfloat16 on a CPU without AVX-512). */
  warning?: string;
  /** 'CPU' or the GPU's name. */
  name: string;
  /** CUDA compute capability (8.6), 0 on the CPU. */
  capability: number;
}

/** Which implementation of the head's custom kernels a policy runs, and the GPU self-checks that decided it. */
export interface NativeKernelReport {
  device: string;
  path: 'cpu-fused' | 'cuda-kernels' | 'libtorch-ops';
  checks: Array<{ kernel: string; ok: boolean; maxAbsErr: number; detail: string }>;
  warnings: string[];
}

/** A tensor as it crosses the boundary: raw little-endian bytes + dtype + shape. */
export interface NativeTensor {
  dtype: 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';
  shape: number[];
  data: Uint8Array;
}

export interface NativeDenoiseConfig {
  trainSteps?: number;
  inferenceSteps?: number;
  clipSample?: boolean;
  timeEmbedDim?: number;
  initSeed?: number;
}

export interface NativeHeadConfig {
  keyLayerIndices: number[];
  topK: number;
  objective: 'l1' | 'denoise';
  numPatches: number;
  numActionQueries: number;
  denoise?: NativeDenoiseConfig;
  /** The paper's ablation; must match the checkpoint's variant (E_CHECKPOINT otherwise). */
  ablation: NativeAblation;
  /** Dims an ablated checkpoint does not show (no-mol: head count, no-msm: chunk); checked when it does. */
  numHeads?: number;
  chunk?: number;
}

/** 'none' = the full model; 'no-mol' = one cross-attention to the last layer per block; 'no-msm' = no MSM. */
export type NativeAblation = 'none' | 'no-mol' | 'no-msm';

/** One tensor of a head checkpoint: how random runs draw it ('count': the int64 bank size) and what the head does with it. */
export interface NativeCheckpointTensor {
  name: string; shape: number[]; init: 'w' | 'zero' | 'one' | 'small' | 'bank' | 'count'; role: 'trained' | 'passed' | 'unused';
}

export interface NativeHeadDims {
  hidden: number;
  numBlocks: number;
  numHeads: number;
  headDim: number;
  actionDim: number;
  chunk: number;
  proprioDim: number;
  keyDim: number;
  bankCapacity: number;
  bankSize: number;
  ablation: NativeAblation;
}

export interface NativeHeadForwardInput {
  /** [L+1, B, seq, D] hidden states of the VLM, index 0 = embeddings. */
  hiddenStates: Float32Array;
  hiddenShape: number[];
  /** Prompt tokens including the first one (P): the action queries start at NP + P - 1 after the off-by-one. */
  promptLen: number;
  /** [B, proprioDim] normalized proprio. */
  proprio: Float32Array;
  /**
   * Round the action-query slice of every hidden state and the normalized proprio to bfloat16, as the reference's
   * hard-coded `.to(torch.bfloat16)` does (computation continues in the head's dtype). Default false.
   */
  referenceCasts?: boolean;
  /** Per-block intermediates (runs the op-by-op reference path). */
  intermediates?: boolean;
  /** 'fused' (default) or 'reference' (op by op, and retrieval by cdist + topk). */
  impl?: 'fused' | 'reference';
  /** Denoise objective: seed of the initial noise (random when absent). */
  seed?: number;
}

export interface NativeRetrieval {
  indices: Int32Array;
  similarities: Float32Array;
  values: Float32Array;
}

/**
 * What an ablation does not compute is absent: no-mol has no tanhG / saWeights / caSWeights / caSGate (its single
 * cross-attention's weights are caVWeights, [B, heads, chunk, NP+NT+1]); no-msm has no memWeights / memContext / hMemory.
 */
export interface NativeBlockTrace {
  in: NativeTensor; tanhG?: NativeTensor; saWeights?: NativeTensor; caSWeights?: NativeTensor; caSGate?: NativeTensor;
  caVWeights: NativeTensor; attnMix: NativeTensor; oProjOut: NativeTensor; memWeights?: NativeTensor;
  memContext?: NativeTensor; ffnIn: NativeTensor; out: NativeTensor;
}

export interface NativeHeadTrace {
  inputAq: NativeTensor;
  proprioFeatures: NativeTensor;
  hMemory?: NativeTensor;
  x0: NativeTensor;
  blocks: NativeBlockTrace[];
}

export interface NativeHeadOutput {
  normalized: Float32Array;
  shape: [number, number, number];
  retrieval: NativeRetrieval & { queryKeys: Float32Array };
  intermediates?: NativeHeadTrace;
}

export interface NativeBounds { q01: Float64Array; q99: Float64Array; mask: Uint8Array }

export interface NativePolicyResult extends NativeHeadOutput {
  /** [B, chunk, A] unnormalized. */
  actions: Float64Array;
  /** [B, proprioDim] the state after normalization. */
  proprio: Float64Array;
  timing: { preprocess: number; vision: number; projector: number; llm: number; head: number; retrieval: number };
}

export interface NativePolicy {
  act(input: {
    images?: Array<{ data: Uint8Array; width: number; height: number; name?: string }>;
    pixelValues?: Float32Array;
    batch: number;
    inputIds: BigInt64Array;
    promptLen: number;
    state: Float64Array;
    referenceCasts?: boolean;
    intermediates?: boolean;
    /** Synchronize the GPU after each stage (ActOptions.stageTimes). */
    stageTimes?: boolean;
    seed?: number;
  }): Promise<NativePolicyResult>;
  /** The kernel path; the first call on a GPU self-checks the CUDA kernels there. */
  kernels(): Promise<NativeKernelReport>;
  dispose(): void;
}

export interface NativeHead {
  forward(input: NativeHeadForwardInput): Promise<NativeHeadOutput>;
  dims(): NativeHeadDims;
  /** A copy of the head's MSM bank: every row (capacity, bfloat16) and the number in use. */
  memoryBank(): Promise<{ keys: NativeTensor; values: NativeTensor; size: number }>;
  /** Appends rows (keys [N, keyDim], normalized chunks [N, chunk × actionDim]) to the bank FIFO; resolves with its size. */
  addSkills(rows: { keys: Float32Array; values: Float32Array }): Promise<number>;
  /** Rewrites the action-head checkpoint `from` as `to` (same format) with the bank as it is now; resolves with its size. */
  writeBank(files: { from: string; to: string }): Promise<number>;
  dispose(): void;
}

export interface NativeMemoryBank {
  append(rows: { keys: Float32Array; values: Float32Array }): Promise<number>;
  query(options: { queries: Float32Array; topK: number; impl?: 'fused' | 'reference' }): Promise<NativeRetrieval>;
  snapshot(): Promise<{ keys: NativeTensor; values: NativeTensor; size: number }>;
  info(): { size: number; capacity: number; keyDim: number; valueDim: number };
  dispose(): void;
}

export interface NativeBoundsStats {
  q01: Float64Array;
  q99: Float64Array;
  /** 1 = normalize this dimension, 0 = pass it through. */
  mask: Uint8Array;
}

/** A loaded frozen VLM (native/addon/AddonBackbone.cc). */
export interface NativeBackbone {
  /** pixelValues: [batch, 6*numImages, S, S]; inputIds: [batch, promptLen] (same prompt length for every row). */
  forward(args: {
    pixelValues: Float32Array; batch: number; inputIds: BigInt64Array; promptLen: number; referenceCasts: boolean;
  }): Promise<{ hiddenStates: Float32Array; hiddenShape: number[]; projectedPatches: Float32Array; patchesShape: number[] }>;
  /** Greedy VQA decoding of one prompt; the generated ids (ending with a stop id if one was produced). */
  generate(args: {
    pixelValues: Float32Array; inputIds: BigInt64Array; promptLen: number; maxNewTokens: number; stopIds: number[];
    referenceCasts: boolean;
  }): Promise<number[]>;
  /** Releases the model (a call in flight finishes first); later calls reject with E_DISPOSED. */
  dispose(): void;
}

/** A micro-batch as the native trainer takes it (lib/train.ts packs it). */
export interface NativeMicroBatch {
  /** Sample-major: numImages frames per sample (primary, then wrist), HWC RGB. */
  frames: Array<{ data: Uint8Array; width: number; height: number }>;
  /** Every sample's prompt ids back to back; promptLengths says where each ends (lengths may differ). */
  promptIds: BigInt64Array;
  promptLengths: number[];
  /** [B, proprioDim] normalized. */
  proprio: Float32Array;
  /** [B, chunk, actionDim] normalized. */
  actions: Float32Array;
}

export interface NativeStepMetrics {
  /** Optimizer steps done, this one included. */
  step: number;
  /** Mean loss of the step's micro-batches. */
  loss: number;
  lr: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  ms: number;
  /** Data-parallel: the part of `ms` spent in collectives (gradient all-reduce, bank all-gather, agreement). */
  collectiveMs?: number;
}

export type NativeTrainProgress =
  | { kind: 'micro'; step: number; micro: number; microBatches: number; loss: number }
  | ({ kind: 'step' } & NativeStepMetrics);

/**
 * Training image augmentation (native/train/augment.h); what is left out takes the reference's value (OpenVLA /
 * VLA-Adapter `image_aug`).
 */
export interface ImageAugmentation {
  /** Area fraction of the random square crop, resized back (default 0.9). */
  cropArea?: number;
  /** Brightness delta drawn from [-brightness, brightness] (default 0.2). */
  brightness?: number;
  /** Contrast factor range (default [0.8, 1.2]). */
  contrast?: [number, number];
  /** Saturation factor range (default [0.8, 1.2]). */
  saturation?: [number, number];
  /** Hue shift drawn from [-hue, hue] of a full turn (default 0.05). */
  hue?: number;
  /** Draw every parameter on its own; default false: one draw per image sets them all, as the reference does. */
  independent?: boolean;
}

/** One image's augmentation: the crop box [y1, x1, y2, x2] (fractions of the image) and the color changes. */
export interface AugmentationDraw {
  crop: [number, number, number, number];
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
}

export interface NativeTrainerOptions {
  modelPath: string;
  backbone: BackboneConfig;
  preprocess: { size: number; means: number[][]; stds: number[][] };
  actionHeadPath: string;
  proprioProjectorPath: string;
  /** A checkpoint step directory to resume from (its head, action queries, optimizer state and generator). */
  resumeFrom?: string;
  head: { config: NativeHeadConfig };
  lr: number;
  steps: number;
  warmup?: number;
  schedule?: 'cosine' | 'step';
  decayAt?: number[];
  gamma?: number;
  beta1?: number;
  beta2?: number;
  weightDecay?: number;
  eps?: number;
  accumulation?: number;
  clipNorm?: number;
  memorySampleRate?: number;
  bf16?: boolean;
  device?: NativeDevice;
  prefixTrick?: boolean;
  imageAugmentation?: ImageAugmentation | boolean;
  seed?: number;
  threads?: number;
  distributed?: NativeDistributedOptions;
  onProgress?: (event: NativeTrainProgress) => void;
}

/** A data-parallel process's place (torchrun's RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). */
export interface NativeDistributedOptions {
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** How long a collective (and the rendezvous) waits for the other processes. */
  timeoutMs?: number;
}

export interface NativeTrainerDims {
  hidden: number;
  numBlocks: number;
  numHeads: number;
  actionDim: number;
  chunk: number;
  proprioDim: number;
  bankCapacity: number;
  numImages: number;
  numActionQueries: number;
  /** Trainable values (action queries + head + proprio projector). */
  parameters: number;
  /** Optimizer steps done (non-zero when resumed). */
  step: number;
  /** Data-parallel rank and number of processes (0 and 1 without). */
  rank: number;
  worldSize: number;
}

/** The native trainer (native/addon/AddonTrainer.cc). */
export interface NativeTrainer {
  dims(): NativeTrainerDims;
  /** `stop`: this process asks to stop after the step; the result's `stop` says whether any process did. */
  step(args: { microBatches: NativeMicroBatch[]; stop?: boolean }): Promise<NativeStepMetrics & { stop: boolean }>;
  gradients(batch: NativeMicroBatch): Promise<Record<string, NativeTensor>>;
  predict(batch: NativeMicroBatch, options?: { seed?: number }): Promise<{ normalized: Float32Array; shape: [number, number, number] }>;
  /** Writes <root>/step-NNNNNNNN (with trainer_state.json = stateJson) and <root>/latest; returns the directory. */
  saveCheckpoint(args: { root: string; stateJson: string }): Promise<string>;
  /** model.safetensors, action_head / proprio_projector .safetensors and --checkpoint.pt into dir. */
  exportRun(args: { dir: string }): Promise<void>;
  dispose(): void;
}

/** The verdict of a custom kernel's self-check (native/head/kernel_check.h) and the path it leads to. */
export interface KernelCheckResult {
  ok: boolean;
  maxAbsErr: number;
  detail: string;
  /** 'candidate' when the fast kernel is trusted, 'reference' after a failed check (the fallback). */
  path: 'candidate' | 'reference';
  /** Checks the process-wide registry has run so far (a kernel is checked once). */
  checksRun: number;
  /** The warning printed when this call's check failed. */
  warning?: string;
}

export interface BindingModule {
  buildInfo(): BuildInfo;
  /** native/run_dir.cc: the run directory resolved once (config, preprocessing, statistics, checkpoint names). */
  resolveRunDir(dir: string, options: { keyLayerIndices?: number[]; unnormKey?: string; statistics: boolean; head: boolean }): RunSpec;
  parsePreprocessorConfig(jsonText: string, source: string): ImagePreprocessing;
  readPreprocessorConfig(file: string): ImagePreprocessing;
  readNormalizationStatistics(file: string, unnormKey?: string): NormalizationStatistics;
  measureGemm(options: { n: number; iters: number; dtype: NativeDtype; threads?: number }): Promise<{ gflops: number; seconds: number }>;
  createBackbone(options: {
    modelPath: string; config: BackboneConfig; dtype: ModelDtype; device?: NativeDevice; threads?: number;
  }): Promise<NativeBackbone>;
  /** The one-time GEMM measurement behind dtype 'auto' on CPUs with AVX512-BF16 and no AMX, on a worker (~2-6 ms). */
  probeCpuMatrix(): Promise<void>;
  /** E_INPUT for a bad string, E_CONFIG for what this build or GPU cannot run (a CPU-only build never probes). */
  /** cpuFeatures: decide for another CPU than this one (tests of the rule). */
  resolvePlacement(options: {
    device?: string; dtype?: string;
    cpuFeatures?: { amxBf16: boolean; amxInt8: boolean; avx512Bf16: boolean; avx512Vnni: boolean; bf16Gflops?: number; fp32Gflops?: number;
      /** Default true (a CPU with AVX-512). */ onednnBf16?: boolean };
  }): NativePlacement;
  /** CUDA builds only: peak bytes of libtorch's caching allocator on a GPU since the last reset. */
  gpuPeakMemory?(options: { device: string; reset: boolean }): number;
  loadStateDict(path: string, options?: { dtype?: 'float32' | 'bfloat16' | 'float16' | 'float64'; threads?: number }): Promise<Record<string, NativeTensor>>;
  /**
   * Writes the tensors, in this order, as one safetensors file (native/io/safetensors_write.cc: temp file, fsync,
   * rename). Their bytes are read where they lie, so they must not change before the Promise settles.
   */
  saveSafetensors(path: string, tensors: Array<[name: string, tensor: NativeTensor]>): Promise<void>;
  /** [images / imagesPerSample, 3 * means.length * imagesPerSample, size, size] float32, channels [set][RGB] per image. */
  preprocessImages(options: {
    images: Array<{ data: Uint8Array; width: number; height: number; name?: string }>;
    size: number;
    means: number[][];
    stds: number[][];
    /** The crop's area fraction, 0 = off (lib/images.ts centerCropArea). */
    centerCrop?: number;
    imagesPerSample?: number;
    threads?: number;
  }): Promise<Float32Array>;
  /** `count` training augmentations of one image, drawn in turn from a generator seeded with `seed` (native/train/augment.h). */
  augmentImage(options: {
    image: { data: Uint8Array; width: number; height: number }; size: number; augmentation: ImageAugmentation | boolean;
    seed: number; count: number; threads?: number;
  }): Promise<Array<{ data: Uint8Array; params: AugmentationDraw }>>;
  createPolicy(options: {
    backbone: NativeBackbone; head: NativeHead; threads?: number;
    preprocess: { size: number; means: number[][]; stds: number[][]; centerCrop?: number };
    stats: { proprio: NativeBounds; action: NativeBounds };
  }): NativePolicy;
  createHead(options: {
    actionHeadPath: string; proprioProjectorPath: string; config: NativeHeadConfig; dtype?: ModelDtype; device?: NativeDevice;
    threads?: number;
  }): Promise<NativeHead>;
  normalizeBounds(args: NativeBoundsStats & { values: Float64Array }): Float64Array;
  unnormalizeBounds(args: NativeBoundsStats & { values: Float32Array }): Float64Array;
  /** The released checkpoint layout, from the head's parameter tables (native/head/param_table.cc). */
  headCheckpointLayout(dims: {
    hidden: number; numBlocks: number; numHeads: number; actionDim: number; chunk: number; proprioDim: number; keyDim: number;
    bankCapacity: number; ablation: NativeAblation;
  }): { actionHead: NativeCheckpointTensor[]; proprio: NativeCheckpointTensor[] };
  createMemoryBank(options: { capacity: number; keyDim: number; valueDim: number; threads?: number }): Promise<NativeMemoryBank>;
  ddimSchedule(options: { trainSteps: number; inferenceSteps: number }): { alphasCumprod: Float64Array; timesteps: Int32Array };
  ddimStep(options: {
    sample: Float32Array; modelOutput: Float32Array; timestep: number; prevTimestep: number; trainSteps: number; clipSample?: boolean;
  }): Float32Array;
  ddimAddNoise(options: { sample: Float32Array; noise: Float32Array; timesteps: number[]; trainSteps: number }): Float32Array;
  /**
   * Self-check of a custom kernel against its libtorch reference on random inputs. candidate 'reference' must pass,
   * 'perturbed' (reference + 1e-2) must fail, 'cuda' runs the CUDA kernel (CUDA builds only).
   */
  kernelSelfCheck(options: {
    kernel: 'molAttention' | 'l1TopK';
    candidate: 'reference' | 'perturbed' | 'cuda';
    seed?: number;
    atol?: number;
    rtol?: number;
    threads?: number;
  }): Promise<KernelCheckResult>;
  createTrainer(options: NativeTrainerOptions): Promise<NativeTrainer>;
}

let cached: { addon: BindingModule; file: string; libtorch: FoundLibtorch } | undefined;

export function getBinding(): BindingModule {
  return loadBinding().addon;
}

export function loadBinding(): { addon: BindingModule; file: string; libtorch: FoundLibtorch } {
  if (cached) return cached;
  try {
    const loaded = loadAddon();
    cached = { addon: loaded.addon as BindingModule, file: loaded.file, libtorch: loaded.libtorch };
    return cached;
  } catch (e) {
    if (e instanceof M2vlaError) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    throw new LoadError(`the m2vla native addon could not be loaded: ${msg}\n` +
      'Fix: run `npm install` (or `npm run build:native`) in the m2vla package; `npx m2vla doctor` shows the libtorch lookup.',
    { cause: e });
  }
}
