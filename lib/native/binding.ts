/**
 * The raw addon, typed. Never exported publicly: lib/*.ts wrap it. Loading preloads libtorch from the same lookup
 * the installer used (scripts/libtorch.mjs), so build/ and prebuilds/ binaries both find it without LD_LIBRARY_PATH.
 */
import { loadAddon } from '../../scripts/load-addon.mjs';
import type { FoundLibtorch } from '../../scripts/libtorch.mjs';
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
  dtype: 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int8' | 'uint8' | 'bool';
  shape: number[];
  data: Uint8Array;
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
  measureGemm(options: { n: number; iters: number; dtype: NativeDtype; threads?: number }): Promise<{ gflops: number; seconds: number }>;
  loadStateDict(path: string, options?: { dtype?: 'float32' | 'bfloat16' | 'float16' | 'float64'; threads?: number }): Promise<Record<string, NativeTensor>>;
  /** [images / imagesPerSample, 3 * means.length * imagesPerSample, size, size] float32, channels [set][RGB] per image. */
  preprocessImages(options: {
    images: Array<{ data: Uint8Array; width: number; height: number; name?: string }>;
    size: number;
    means: number[][];
    stds: number[][];
    centerCrop?: boolean | number;
    imagesPerSample?: number;
    threads?: number;
  }): Promise<Float32Array>;
  /**
   * Self-check of a custom kernel against its libtorch reference on random inputs. candidate 'reference' must pass,
   * 'perturbed' (reference + 1e-2) must fail, 'cuda' runs the CUDA kernel (CUDA builds only).
   */
  kernelSelfCheck(options: {
    kernel: 'molAttention' | 'l1TopK' | 'bankAppend';
    candidate: 'reference' | 'perturbed' | 'cuda';
    seed?: number;
    atol?: number;
    rtol?: number;
    threads?: number;
  }): Promise<KernelCheckResult>;
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
