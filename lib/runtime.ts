/** Process-level facts about the engine: which libtorch, which build, which CPU features; GEMM peak. */
import { getBinding, loadBinding, type BuildInfo, type NativeDtype } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { checkOptions } from './options.js';

export interface RuntimeInfo extends BuildInfo {
  addonPath: string;
  libtorch: { dir: string; source: string; version: string };
}

/**
 * What was loaded and built, and this CPU's features. Async because dtype 'auto' on a CPU with AVX512-BF16 and no AMX
 * rests on a one-time GEMM probe whose first run includes oneDNN's initialisation (~150-250 ms): it runs on the torch
 * worker, never on the JS thread. Rejects with the addon's load error when the addon does not load.
 */
export async function runtimeInfo(): Promise<RuntimeInfo> {
  const { addon, file, libtorch } = loadBinding();
  await probeCpuMatrix();
  return { ...addon.buildInfo(), addonPath: file, libtorch };
}

let cpuMatrixProbe: Promise<void> | undefined;

/**
 * The GEMM probe behind dtype 'auto' (measured once per process natively), on the torch worker. Queued once: a later
 * caller does not wait behind whatever torch job runs then.
 */
export function probeCpuMatrix(): Promise<void> {
  cpuMatrixProbe ??= runTorchJob(() => getBinding().probeCpuMatrix());
  return cpuMatrixProbe;
}

/** Measured square-GEMM throughput (GFLOP/s) of this machine for a dtype: the roofline benchmarks compare to. */
export function measureGemmPeak(options: { n?: number; iters?: number; dtype?: NativeDtype; threads?: number } = {}) {
  try {
    checkOptions(options, ['n', 'iters', 'dtype', 'threads'], 'measureGemmPeak');
  } catch (e) {
    return Promise.reject(e);
  }
  const { n = 1024, iters = 10, dtype = 'float32', threads } = options;
  return runTorchJob(() => getBinding().measureGemm({ n, iters, dtype, threads }));
}
