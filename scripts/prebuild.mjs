// `npm run build:prebuild`: compile without a baked libtorch path and place the binary where node-gyp-build looks
// (prebuilds/<platform>-<arch>/m2vla.napi.node). At load time lib/native/binding.ts preloads libtorch.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { packageRoot } from './libtorch.mjs';

const buildDir = 'build-prebuild';
const r = spawnSync(process.execPath, [path.join(packageRoot, 'scripts', 'install.mjs'), '--portable', '--build-dir', buildDir],
  { stdio: 'inherit', cwd: packageRoot });
if (r.status !== 0) process.exit(r.status ?? 1);
const dest = path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(dest, { recursive: true });
const out = path.join(dest, 'm2vla.napi.node');
fs.copyFileSync(path.join(packageRoot, buildDir, 'Release', 'm2vla.node'), out);
const rpath = spawnSync('readelf', ['-d', out], { encoding: 'utf8' }).stdout?.split('\n').filter((l) => /RPATH|RUNPATH/.test(l));
console.log(`m2vla: wrote ${path.relative(packageRoot, out)} (${(fs.statSync(out).size / 1e6).toFixed(1)} MB)` +
  (rpath?.length ? `\n  ${rpath.join('\n  ')}` : ', no RPATH: libtorch is preloaded from the shared lookup'));
