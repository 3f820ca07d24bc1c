/**
 * Commands that ask first: `npm run bench` without a suite lists the suites and runs nothing; `npm run eval` without
 * its Python side says how to install it and writes nothing; the installer's prerequisite checks give one message each.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { checkCmake, checkCompiler, checkDisk, checkPip } from '../scripts/prereqs.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsx = (script: string, args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, ['--import', 'tsx', script, ...args], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env } });

describe('commands that ask first', () => {
  it('npm run bench without a suite lists every suite with its cost and runs none; an unknown suite exits 2', () => {
    const r = tsx('bench/run.ts', []);
    expect(r.status).toBe(0);
    for (const suite of ['roofline', 'server', 'ablation', 'backbone', 'policy', 'train', 'train-ddp'])
      expect(r.stdout).toMatch(new RegExp(`^  ${suite} +\\S`, 'm'));
    expect(r.stdout).not.toContain('=== bench');
    const bad = tsx('bench/run.ts', ['polcy']);
    expect(bad.status).toBe(2);
    expect(bad.stdout).toContain("unknown suite 'polcy'");
  });

  it('npm run eval without its Python side says how to install it and writes no results', () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-eval-')), 'results');
    const r = tsx('eval/run.ts', ['--quick', '--out', out], { M2VLA_EVAL_PYTHON: '/nonexistent/python3' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/the simulator side cannot run: .*\nInstall it with `bash eval\/setup.sh`.*or pass --setup/s);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.existsSync(`${out}.incomplete`)).toBe(false);
  });
});

describe('install prerequisites', () => {
  it('pass here and fail with one clear message each', () => {
    expect(checkCmake()).toBeNull();
    expect(checkCompiler()).toBeNull();
    expect(checkPip()).toBeNull();
    expect(checkCmake([99, 0, 0])).toMatch(/^cmake >= 99\.0\.0 is needed to build the native addon; found \d+\.\d+\.\d+: install it/);
    expect(checkDisk(ROOT, 2 ** 60, 'fetching libtorch')).toMatch(/^fetching libtorch needs ~\d+\.\d GiB free at .*, which has [\d.]+ GiB$/);
    const saved = process.env.CXX;
    process.env.CXX = '/nonexistent/c++';
    try {
      expect(checkCompiler()).toMatch(/a C\+\+20 compiler is needed .* '\/nonexistent\/c\+\+' is not on PATH/);
    } finally {
      if (saved === undefined) delete process.env.CXX; else process.env.CXX = saved;
    }
  });
});
