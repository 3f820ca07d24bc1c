// `npm run check:cuda`: compile every native/**/*.cu with nvcc alone for the GPUs m2vla targets, so a kernel that
// does not build is caught on machines without a GPU (CI). One nvcc call per file covers all architectures; files
// compile in parallel. Exits 0 with a "skipped" line when no nvcc is found (PATH, then /usr/local/cuda/bin).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = path.join(packageRoot, 'native');
// A800/A100 (sm_80), RTX 3090 (sm_86), RTX 40xx/L40 (sm_89), H100 (sm_90): the same list as CMakeLists.txt.
export const CUDA_ARCHS = ['80', '86', '89', '90'];

/** The nvcc to use: the first in `env.PATH`, else in one of `extraDirs`; null when there is none. */
export function findNvcc({ env = process.env, extraDirs = ['/usr/local/cuda/bin'] } = {}) {
  const dirs = [...(env.PATH ?? '').split(path.delimiter).filter(Boolean), ...extraDirs];
  for (const dir of dirs) {
    const file = path.join(dir, process.platform === 'win32' ? 'nvcc.exe' : 'nvcc');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return null;
}

export function nvccArgs(source, output, archs = CUDA_ARCHS) {
  return [
    '-c', '-std=c++17', '-O3',
    // nvcc's own and the device front end's warnings (all-warnings), and the host compiler's, are errors.
    '-Werror', 'all-warnings', '-Xcompiler', '-Wall,-Wextra,-Werror',
    ...archs.flatMap((a) => ['-gencode', `arch=compute_${a},code=sm_${a}`]),
    // PTX of the newest architecture (JIT-compiled by the driver on newer GPUs) and source lines, as CMakeLists.txt.
    '-gencode', `arch=compute_${archs.at(-1)},code=compute_${archs.at(-1)}`, '-lineinfo',
    // The kernels include "cuda/kernels.h" from native/, as the CMake build does.
    '-I', nativeDir, '-o', output, source,
  ];
}

function run(nvcc, args) {
  return new Promise((resolve) => {
    const started = performance.now();
    const child = spawn(nvcc, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d) => { output += d; });
    child.stderr.on('data', (d) => { output += d; });
    child.on('error', (e) => resolve({ status: -1, output: e.message, seconds: 0 }));
    child.on('close', (status) => resolve({ status, output: output.trim(), seconds: (performance.now() - started) / 1000 }));
  });
}

/**
 * Compile `files` (default: every .cu file below native/) into a temporary directory. Resolves to
 * { skipped: reason } without nvcc, else { ok, nvcc, results: [{ file, command, status, seconds, output }] }.
 */
export async function checkCuda({ files, nvcc = findNvcc(), archs = CUDA_ARCHS, jobs = os.availableParallelism() } = {}) {
  if (!nvcc) return { skipped: 'nvcc not found in PATH or /usr/local/cuda/bin; the CUDA kernels were not compiled' };
  const sources = files ?? fs.readdirSync(nativeDir, { recursive: true }).filter((f) => f.endsWith('.cu')).sort()
    .map((f) => path.join(nativeDir, f));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cuda-'));
  try {
    const results = [];
    let next = 0;
    const worker = async () => {
      while (next < sources.length) {
        const source = sources[next++];
        const args = nvccArgs(source, path.join(tmp, `${path.basename(source)}.o`), archs);
        const r = await run(nvcc, args);
        results.push({ file: path.relative(packageRoot, source), command: [nvcc, ...args].join(' '), ...r });
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, sources.length)) }, worker));
    results.sort((a, b) => a.file.localeCompare(b.file));
    return { ok: results.every((r) => r.status === 0), nvcc, results };
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const r = await checkCuda();
  if ('skipped' in r) {
    console.log(`m2vla: CUDA compile check skipped: ${r.skipped}`);
  } else {
    for (const x of r.results) {
      console.log(`${x.status === 0 ? 'ok  ' : 'FAIL'} ${x.file} (${x.seconds.toFixed(1)} s, sm_${CUDA_ARCHS.join('/')})`);
      if (x.status !== 0) console.log(`  $ ${x.command}\n${x.output.replace(/^/gm, '  ')}`);
    }
    if (!r.ok) process.exit(1);
  }
}
