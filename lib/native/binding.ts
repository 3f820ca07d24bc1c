/**
 * The raw addon, typed. Never exported publicly: lib/*.ts wrap it. Loading preloads libtorch from the same lookup
 * the installer used (scripts/libtorch.mjs), so build/ and prebuilds/ binaries both find it without LD_LIBRARY_PATH.
 */
import { loadAddon } from '../../scripts/load-addon.mjs';
import type { FoundLibtorch } from '../../scripts/libtorch.mjs';
import type { BackboneConfig } from '../config.js';
import { LoadError, M2vlaError } from '../errors.js';

export interface BuildInfo {
  torchVersion: string;
  cuda: boolean;
  cudaAvailable: boolean;
  threads: number;
  parallelInfo: string;
  cpu: Record<'avx2' | 'avx512f' | 'avx512bf16' | 'amx-bf16', boolean>;
  napiVersion: number;
}

export type NativeDtype = 'float32' | 'bfloat16';

/** A tensor as it crosses the boundary: raw little-endian bytes + dtype + shape. */
export interface NativeTensor {
  dtype: 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'uint8' | 'bool';
  shape: number[];
  data: Uint8Array;
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

export interface BindingModule {
  buildInfo(): BuildInfo;
  measureGemm(options: { n: number; iters: number; dtype: NativeDtype; threads?: number }): Promise<{ gflops: number; seconds: number }>;
  createBackbone(options: { modelPath: string; config: BackboneConfig; dtype: NativeDtype; threads?: number }): Promise<NativeBackbone>;
  loadStateDict(path: string, options?: { dtype?: 'float32' | 'bfloat16' | 'float16' | 'float64'; threads?: number }): Promise<Record<string, NativeTensor>>;
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
