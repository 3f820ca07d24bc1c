// Loads the native addon: preload libtorch from the shared lookup, then let node-gyp-build pick
// build/Release/*.node or prebuilds/<platform>-<arch>/*.node (or load `file`, a build in another --build-dir).
import { createRequire } from 'node:module';
import { findLibtorch, packageRoot, preloadLibtorch } from './libtorch.mjs';

const require = createRequire(import.meta.url);

export function loadAddon(file) {
  const tried = [];
  const found = findLibtorch({ tried });
  if (!found) {
    const err = new Error(`libtorch not found. Looked at:\n  ${tried.join('\n  ')}\n` +
      'Fix: run `npm install` (it fetches the CPU wheel), or set LIBTORCH=<libtorch dir>.');
    err.code = 'E_LOAD';
    throw err;
  }
  preloadLibtorch(found.dir);
  const resolved = file ?? require('node-gyp-build').resolve(packageRoot);
  return { addon: require(resolved), file: resolved, libtorch: found };
}
