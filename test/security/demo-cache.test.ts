/**
 * Issue #18 finding 12 (local): the demo model lives in a per-user cache folder that nobody else can write, and is
 * reused only while its files keep the SHA-256 recorded when they were written (a `.complete` marker in the shared
 * temp folder used to make any planted directory trusted).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../lib/errors.js';
import { DEMO_DIMS, ensureRandomRun } from '../../lib/random-run.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** demoRunDir() in a child process with M2VLA_CACHE=cache: its result, or its error message. */
function demoRunDir(cache: string): { dir?: string; error?: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '-e',
    "import('./lib/policy.ts').then(async (m) => console.log(JSON.stringify({ dir: await m.demoRunDir() }))).catch((e) => console.log(JSON.stringify({ error: e.message })))"],
  { cwd: ROOT, encoding: 'utf8', env: { ...process.env, M2VLA_CACHE: cache } });
  try {
    return JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  } catch {
    return { error: `${r.stdout}${r.stderr}` };
  }
}

describe('demo model cache', () => {
  it('is created private (0700) under the user cache folder, and a tampered file is regenerated', () => {
    const cache = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cache-')), 'm2vla');
    const { dir } = demoRunDir(cache);
    expect(dir).toBe(path.join(cache, 'demo-v1'));
    expect(fs.statSync(cache).mode & 0o777).toBe(0o700);
    const head = path.join(dir!, 'action_head.safetensors');
    const original = fs.readFileSync(head);
    const planted = Buffer.from(original);
    planted[planted.length - 1] ^= 0xff;  // another weight, same size, same names: no marker would notice
    fs.writeFileSync(head, planted);
    fs.writeFileSync(path.join(dir!, 'action_head--checkpoint.pt'), 'planted');
    expect(demoRunDir(cache).dir).toBe(dir);
    expect(fs.readFileSync(head).equals(original)).toBe(true);
    expect(fs.existsSync(path.join(dir!, 'action_head--checkpoint.pt'))).toBe(false);
  });

  it('refuses a cache folder others can write, or a symlink in its place', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cache-'));
    const open = path.join(root, 'open');
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    expect(demoRunDir(open).error).toMatch(/the m2vla cache folder is writable by others \(mode 777\)/);
    const link = path.join(root, 'link');
    fs.symlinkSync(fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-elsewhere-')), link);
    expect(demoRunDir(link).error).toMatch(/is not a directory \(a symlink\?\)/);
  });

  it.skipIf(process.getuid?.() !== 0)('refuses a cache folder owned by another user', () => {
    const other = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cache-')), 'theirs');
    fs.mkdirSync(other, { mode: 0o700 });
    fs.chownSync(other, 12345, 12345);
    expect(demoRunDir(other).error).toMatch(/belongs to uid 12345, not to this user \(0\)/);
  });

  it("never replaces a folder it did not write (a user's checkpoint named as the run directory)", async () => {
    const theirs = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-theirs-'));
    fs.writeFileSync(path.join(theirs, 'model.safetensors'), 'their weights');
    const err = await ensureRandomRun(theirs, DEMO_DIMS).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/not a generated random run \(no m2vla-random-run\.json\) and not empty; refusing to replace it/);
    expect(fs.readFileSync(path.join(theirs, 'model.safetensors'), 'utf8')).toBe('their weights');
    // An empty folder is filled.
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-empty-'));
    expect(await ensureRandomRun(empty, DEMO_DIMS)).toBe(empty);
    expect(fs.existsSync(path.join(empty, 'm2vla-random-run.json'))).toBe(true);
  });
});
