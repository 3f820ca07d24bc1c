// What `npm install` needs before it fetches libtorch or compiles, checked up front so that a missing tool gives one
// clear message (what, which version, how to get it) instead of a failure deep inside pip or cmake.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const run = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
const GIB = 2 ** 30;

/** python3 with pip: only for fetching the libtorch wheel. */
export function checkPip() {
  const r = run('python3', ['-m', 'pip', '--version']);
  if (r.error || r.status !== 0) {
    return 'python3 with pip is needed to fetch libtorch (the torch==2.13.0+cpu wheel): install them ' +
      '(Debian/Ubuntu: sudo apt-get install python3 python3-pip), or set LIBTORCH=<a libtorch directory> to skip the fetch';
  }
  return null;
}

/** Free space where `dir` (or its nearest existing parent) lives. */
export function checkDisk(dir, needBytes, what) {
  let at = path.resolve(dir);
  while (!fs.existsSync(at)) at = path.dirname(at);
  const s = fs.statfsSync(at);
  const free = s.bavail * s.bsize;
  if (free < needBytes) {
    return `${what} needs ~${(needBytes / GIB).toFixed(1)} GiB free at ${at}, which has ${(free / GIB).toFixed(2)} GiB`;
  }
  return null;
}

function versionOf(text) {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text ?? '');
  return m ? m.slice(1, 4).map((x) => Number(x ?? 0)) : null;
}

const atLeast = (v, min) => v[0] !== min[0] ? v[0] > min[0] : v[1] !== min[1] ? v[1] > min[1] : v[2] >= min[2];

/** cmake >= 3.20 (CMakeLists.txt's cmake_minimum_required). */
export function checkCmake(min = [3, 20, 0]) {
  const r = run('cmake', ['--version']);
  const v = r.status === 0 ? versionOf(r.stdout) : null;
  const need = `cmake >= ${min.join('.')} is needed to build the native addon`;
  const fix = 'install it (Debian/Ubuntu: sudo apt-get install cmake; or python3 -m pip install cmake)';
  if (!v) return `${need}, and none is on PATH: ${fix}`;
  if (!atLeast(v, min)) return `${need}; found ${v.join('.')}: ${fix}`;
  return null;
}

/** A C++ compiler that compiles C++20 (g++ >= 10, clang >= 12): tried on a two-line file. */
export function checkCompiler() {
  const cxx = process.env.CXX || 'c++';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cxx-'));
  try {
    const src = path.join(dir, 'probe.cc');
    fs.writeFileSync(src, '#include <concepts>\n#include <span>\nint main() { static_assert(std::integral<int>); }\n');
    const r = run(cxx, ['-std=c++20', '-fsyntax-only', src]);
    if (r.error) return `a C++20 compiler is needed to build the native addon and '${cxx}' is not on PATH: install one ` +
      '(Debian/Ubuntu: sudo apt-get install g++; g++ >= 10 or clang >= 12), or set CXX';
    if (r.status !== 0) {
      const version = run(cxx, ['--version']).stdout?.split('\n')[0] ?? cxx;
      return `${cxx} (${version}) does not compile C++20: install g++ >= 10 or clang >= 12 and set CXX to it`;
    }
    return null;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
