/** Process-level facts about the engine: which libtorch, which build, which CPU features; GEMM peak. */
import { getBinding, loadBinding, type BuildInfo, type NativeDtype } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { checkOptions } from './options.js';

export interface RuntimeInfo extends BuildInfo {
  addonPath: string;
  libtorch: { dir: string; source: string; version: string };
}

/** What was loaded and built, and this CPU's features. Its first call may measure a few ms of GEMMs for dtype 'auto'. */
export function runtimeInfo(): RuntimeInfo {
  const { addon, file, libtorch } = loadBinding();
  return { ...addon.buildInfo(), addonPath: file, libtorch };
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
