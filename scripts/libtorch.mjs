// Where libtorch comes from, shared by the installer (scripts/install.mjs) and the runtime loader
// (lib/native/binding.ts), so a prebuild finds libtorch exactly as a local build does.
// Order: $LIBTORCH, then the `torch` package of python3, then the CPU wheel fetched into <package>/.libtorch.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const packageRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const localTorchDir = path.join(packageRoot, '.libtorch', 'torch');
export const WHEEL_SPEC = 'torch==2.13.0+cpu';
/**
 * `+cpu` wheels exist only on PyTorch's own index: it is added with --extra-index-url, so pip's configured indexes
 * (a mirror, a local index) still count. M2VLA_TORCH_INDEX_URL replaces it ('' adds none).
 */
export const TORCH_INDEX_URL = process.env.M2VLA_TORCH_INDEX_URL ?? 'https://download.pytorch.org/whl/cpu';
const RECORD = path.join(packageRoot, '.libtorch', 'location.json');

/** A libtorch directory has lib/libtorch_cpu.so and share/cmake/Torch (a libtorch zip and torch/ of a wheel both do). */
export function isLibtorchDir(dir) {
  return !!dir && fs.existsSync(path.join(dir, 'lib', 'libtorch_cpu.so')) &&
    fs.existsSync(path.join(dir, 'share', 'cmake', 'Torch', 'TorchConfig.cmake'));
}

/** The version string of a libtorch directory: build-version (libtorch zip) or version.py (wheel). */
export function libtorchVersion(dir) {
  const bv = path.join(dir, 'build-version');
  if (fs.existsSync(bv)) return fs.readFileSync(bv, 'utf8').trim();
  const vp = path.join(dir, 'version.py');
  if (fs.existsSync(vp)) return /__version__\s*=\s*'([^']+)'/.exec(fs.readFileSync(vp, 'utf8'))?.[1] ?? 'unknown';
  return 'unknown';
}

function pythonTorchDir() {
  const r = spawnSync('python3', ['-c', 'import os, torch; print(os.path.dirname(torch.__file__))'],
    { encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) return null;
  const dir = r.stdout.trim().split('\n').pop();
  return isLibtorchDir(dir) ? dir : null;
}

/**
 * Find libtorch without installing anything. Returns { dir, source, version } or null.
 * `tried` collects a line per place looked at, for error messages and `m2vla doctor`.
 * At run time the installer's record is consulted before spawning python3 (which costs ~1 s).
 */
export function findLibtorch({ tried = [], useRecord = true } = {}) {
  const env = process.env.LIBTORCH;
  if (env) {
    if (isLibtorchDir(env)) return { dir: path.resolve(env), source: 'LIBTORCH', version: libtorchVersion(env) };
    tried.push(`LIBTORCH=${env}: no lib/libtorch_cpu.so and share/cmake/Torch there`);
  } else tried.push('LIBTORCH: not set');
  if (useRecord && fs.existsSync(RECORD)) {
    try {
      const rec = JSON.parse(fs.readFileSync(RECORD, 'utf8'));
      if (isLibtorchDir(rec.dir)) return { ...rec, version: libtorchVersion(rec.dir) };
      tried.push(`${RECORD}: recorded ${rec.dir} no longer holds libtorch`);
    } catch { tried.push(`${RECORD}: unreadable`); }
  }
  const py = pythonTorchDir();
  if (py) return { dir: py, source: 'python3 torch', version: libtorchVersion(py) };
  tried.push('python3: no importable torch package');
  if (isLibtorchDir(localTorchDir)) return { dir: localTorchDir, source: 'fetched wheel', version: libtorchVersion(localTorchDir) };
  tried.push(`${localTorchDir}: not fetched (npm install fetches ${WHEEL_SPEC} there)`);
  return null;
}

/** Fetch the CPU wheel with pip into <package>/.libtorch (no deps; fails fast on unreachable indexes). */
export function fetchWheel(log = console.log) {
  const target = path.dirname(localTorchDir);
  log(`m2vla: fetching ${WHEEL_SPEC} with pip into ${target}`);
  const env = { PIP_RETRIES: '0', PIP_TIMEOUT: '15', PIP_DISABLE_PIP_VERSION_CHECK: '1', ...process.env };
  const index = TORCH_INDEX_URL ? ['--extra-index-url', TORCH_INDEX_URL] : [];
  const r = spawnSync('python3', ['-m', 'pip', 'install', '--no-deps', '--upgrade', '--target', target, ...index, WHEEL_SPEC],
    { stdio: 'inherit', env });
  if (r.status !== 0 || !isLibtorchDir(localTorchDir)) {
    throw new Error(`pip could not fetch ${WHEEL_SPEC} (indexes: pip's configured ones${TORCH_INDEX_URL ? ` and ${TORCH_INDEX_URL}` : ''}; ` +
      'M2VLA_TORCH_INDEX_URL sets another). Or install libtorch yourself (https://pytorch.org/get-started/locally/, ' +
      '"LibTorch", cxx11 ABI) and set LIBTORCH=<dir with lib/ include/ share/>, or `pip install torch` for python3; ' +
      'then run `npm rebuild m2vla`.');
  }
  return { dir: localTorchDir, source: 'fetched wheel', version: libtorchVersion(localTorchDir) };
}

export function recordLibtorch(found) {
  fs.mkdirSync(path.dirname(RECORD), { recursive: true });
  fs.writeFileSync(RECORD, JSON.stringify({ dir: found.dir, source: found.source }, null, 2) + '\n');
}

/**
 * Load libtorch's shared libraries with RTLD_GLOBAL so that an addon built without an RPATH (a prebuild) resolves
 * them by soname. process.dlopen reports "did not self-register" for a plain library, but the library stays
 * loaded (RTLD_NODELETE), which is all we need.
 */
export function preloadLibtorch(dir) {
  // RTLD_NODELETE (glibc 0x1000; not in os.constants) keeps even a library without unique symbols (libtorch.so)
  // mapped after process.dlopen's failed registration closes it.
  const RTLD_NODELETE = process.platform === 'linux' ? 0x1000 : 0;
  const flags = os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | RTLD_NODELETE;
  for (const name of ['libc10.so', 'libtorch_cpu.so', 'libtorch.so']) {
    const file = path.join(dir, 'lib', name);
    if (!fs.existsSync(file)) continue;
    try {
      process.dlopen({ exports: {} }, file, flags);
    } catch (e) {
      if (!/did not self-register/.test(String(e?.message))) throw e;
    }
  }
}
