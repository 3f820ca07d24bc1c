// `npm install` step: find (or fetch) libtorch, then use a prebuild if one loads, else compile with cmake-js.
// Flags: --force (always compile), --portable (no libtorch RPATH; used by scripts/prebuild.mjs), --build-dir <dir>.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fetchWheel, findLibtorch, packageRoot, recordLibtorch } from './libtorch.mjs';
import { checkCmake, checkCompiler, checkDisk, checkPip } from './prereqs.mjs';

const args = process.argv.slice(2);
const force = args.includes('--force') || args.includes('--portable');
const portable = args.includes('--portable');
const buildDir = args.includes('--build-dir') ? args[args.indexOf('--build-dir') + 1] : 'build';

/** Stops with one message per missing prerequisite. */
function stopUnless(problems) {
  const found = problems.filter(Boolean);
  if (found.length === 0) return;
  for (const p of found) console.error(`m2vla: ${p}`);
  process.exit(1);
}

const tried = [];
let found = findLibtorch({ tried, useRecord: false });
if (!found) {
  stopUnless([checkPip(), checkDisk(packageRoot, 1.2 * 2 ** 30, 'fetching libtorch (the wheel, ~450 MB unpacked to ~510 MB)')]);
  found = fetchWheel();
}
recordLibtorch(found);
console.log(`m2vla: libtorch ${found.version} from ${found.source}: ${found.dir}`);

// The binary a --build-dir other than build/ produced (node-gyp-build only looks in build/ and prebuilds/).
const builtFile = buildDir === 'build' ? undefined : path.join(packageRoot, buildDir, 'Release', 'm2vla.node');

function addonLoads(file) {
  // A child process, so a broken binary cannot take the installer down (node-gyp-build-test, with libtorch preloaded).
  const probe = `import('${path.join(packageRoot, 'scripts', 'load-addon.mjs').replace(/\\/g, '/')}')` +
    `.then(m => { m.loadAddon(${file ? JSON.stringify(file) : ''}); process.exit(0); }, ` +
    'e => { console.error(e.message); process.exit(1); })';
  return spawnSync(process.execPath, ['-e', probe], { stdio: 'ignore', cwd: packageRoot }).status === 0;
}

if (!force && addonLoads(builtFile)) {
  console.log('m2vla: an existing build or prebuild loads; skipping compilation (npm run build:native forces it)');
  process.exit(0);
}

stopUnless([checkCmake(), checkCompiler(), checkDisk(packageRoot, 0.5 * 2 ** 30, 'building the addon')]);
const cmakeJs = path.join(packageRoot, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const cmakeArgs = [cmakeJs, 'compile', '--out', buildDir,
  `--CDTorch_DIR=${path.join(found.dir, 'share', 'cmake', 'Torch')}`];
if (portable) cmakeArgs.push('--CDM2VLA_PORTABLE_RPATH=ON');
if (process.env.M2VLA_CUDA === '1') cmakeArgs.push('--CDM2VLA_CUDA=ON');
const jobs = String(Math.max(1, Math.min(os.availableParallelism(), Math.floor(os.totalmem() / 2 ** 31))));
const started = Date.now();
const r = spawnSync(process.execPath, cmakeArgs, {
  stdio: 'inherit', cwd: packageRoot, env: { CMAKE_BUILD_PARALLEL_LEVEL: jobs, ...process.env },
});
if (r.status !== 0) {
  console.error('m2vla: building the native addon failed (see above). `npx m2vla doctor` explains the libtorch lookup.');
  process.exit(r.status ?? 1);
}
console.log(`m2vla: native addon built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
if (!portable && !addonLoads(builtFile)) {
  console.error('m2vla: the freshly built addon does not load; run `npx m2vla doctor`.');
  process.exit(1);
}
fs.rmSync(path.join(packageRoot, buildDir, '.cmake-js-probe'), { force: true });
