/**
 * pull() / loadPolicy('hf://…') / `m2vla pull` against a local Hub: test/helpers/hub-server.mjs, a real HTTP server
 * process on 127.0.0.1 serving fixture A in the Hub's API layout, read by the real @huggingface/hub client.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { DownloadError, InputError, loadPolicy, parseHubSpec, pull, type PullProgress } from '../lib/index.js';
import { FIXTURE_A } from './helpers/fixtures.js';
import { startHub as startHubWith, stopHubs, type Hub } from './helpers/hub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const REPO = 'm2vla-test/tiny';
const FOLDERS = `libero-spatial=${FIXTURE_A},libero-object=${FIXTURE_A}`;
const temps: string[] = [];

function tempCache(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-hub-'));
  temps.push(dir);
  return dir;
}

const startHub = (env: Record<string, string> = {}) => startHubWith({ HUB_REPO: REPO, HUB_FOLDERS: FOLDERS, ...env });

afterEach(() => {
  stopHubs();
  for (const d of temps.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const fixtureFiles = () => fs.readdirSync(FIXTURE_A).sort();
const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const downloads = (hub: Hub, file: string) => hub.requests.filter((r) => r.url.includes(`/resolve/`) && r.url.endsWith(file) && r.range !== 'bytes=0-0');

describe('parseHubSpec', () => {
  it('reads owner/repo[@revision][/subfolder], with or without hf://', () => {
    expect(parseHubSpec('hf://VLA-Adapter/LIBERO-Spatial')).toEqual({ repo: 'VLA-Adapter/LIBERO-Spatial', subfolder: '', revision: 'main' });
    expect(parseHubSpec('owner/repo@v1.0/a/b/')).toEqual({ repo: 'owner/repo', subfolder: 'a/b', revision: 'v1.0' });
    for (const bad of ['hf://only-owner', 'a/b/../c', 'a/b@', 'a//b', '/a/b'])
      expect(() => parseHubSpec(bad), bad).toThrow(InputError);
  });
});

describe('pull() from a local Hub', () => {
  it('downloads a folder into the Hub cache layout, checked, then reuses it without downloading again', async () => {
    const hub = await startHub();
    const cacheDir = tempCache();
    const events: PullProgress[] = [];
    const r = await pull(`hf://${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir, onProgress: (p) => events.push({ ...p }) });
    expect(r).toMatchObject({ repo: REPO, subfolder: 'libero-spatial', revision: 'main', files: fixtureFiles().length, offline: false });
    const total = fixtureFiles().reduce((s, f) => s + fs.statSync(path.join(FIXTURE_A, f)).size, 0);
    expect(r.totalBytes).toBe(total);
    expect(r.downloadedBytes).toBe(total);
    expect(fs.readdirSync(r.dir).sort()).toEqual(fixtureFiles());
    for (const f of fixtureFiles()) expect(fs.readFileSync(path.join(r.dir, f)).equals(fs.readFileSync(path.join(FIXTURE_A, f))), f).toBe(true);
    // huggingface_hub's layout: LFS blobs named by their sha256, snapshot links, refs/main = the commit.
    const storage = path.join(cacheDir, 'models--m2vla-test--tiny');
    expect(fs.readFileSync(path.join(storage, 'refs', 'main'), 'utf8')).toBe(r.commit);
    expect(r.dir).toBe(path.join(storage, 'snapshots', r.commit, 'libero-spatial'));
    const model = path.join(r.dir, 'model.safetensors');
    expect(fs.lstatSync(model).isSymbolicLink()).toBe(true);
    expect(path.basename(fs.realpathSync(model))).toBe(sha256(path.join(FIXTURE_A, 'model.safetensors')));
    // progress: monotone, ends with every byte and file
    for (let i = 1; i < events.length; i++) expect(events[i].bytes).toBeGreaterThanOrEqual(events[i - 1].bytes);
    expect(events.at(-1)).toMatchObject({ bytes: total, totalBytes: total, files: r.files, totalFiles: r.files });

    const before = hub.requests.length;
    const again = await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir });
    expect(again).toMatchObject({ dir: r.dir, downloadedBytes: 0 });
    expect(hub.requests.slice(before).filter((q) => q.url.includes('/resolve/'))).toEqual([]);
  });

  it('continues a dropped connection with a Range request and checks the result', async () => {
    const hub = await startHub({ HUB_CUT: 'libero-spatial/model.safetensors:600000' });
    const cacheDir = tempCache();
    const r = await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir });
    expect(sha256(path.join(r.dir, 'model.safetensors'))).toBe(sha256(path.join(FIXTURE_A, 'model.safetensors')));
    const ranges = downloads(hub, 'model.safetensors').map((q) => q.range);
    expect(ranges).toEqual([null, `bytes=600000-${fs.statSync(path.join(FIXTURE_A, 'model.safetensors')).size - 1}`]);
  });

  it('an aborted pull keeps the partial file; the next pull continues from its end', async () => {
    const hub = await startHub();
    const cacheDir = tempCache();
    const controller = new AbortController();
    let startedAt: number | undefined;  // progress bytes when model.safetensors started; abort once some of it arrived
    const pending = pull(`${REPO}/libero-spatial`, {
      endpoint: hub.endpoint, cacheDir, signal: controller.signal,
      onProgress: (p) => {
        if (!p.file.endsWith('model.safetensors')) return;
        startedAt ??= p.bytes;
        if (p.bytes > startedAt) controller.abort();
      },
    });
    await expect(pending).rejects.toThrow(/aborted after \d+ of \d+ bytes; pull again to continue/);
    const blobs = path.join(cacheDir, 'models--m2vla-test--tiny', 'blobs');
    const partial = fs.readdirSync(blobs).find((f) => f.endsWith('.incomplete'));
    expect(partial).toBeDefined();
    const have = fs.statSync(path.join(blobs, partial!)).size;
    expect(have).toBeGreaterThan(0);
    const r = await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir });
    expect(sha256(path.join(r.dir, 'model.safetensors'))).toBe(sha256(path.join(FIXTURE_A, 'model.safetensors')));
    expect(downloads(hub, 'model.safetensors').at(-1)!.range).toMatch(new RegExp(`^bytes=${have}-`));
  });

  it('a file whose bytes do not match the listed hash is rejected and not kept', async () => {
    const hub = await startHub({ HUB_CORRUPT: 'libero-spatial/config.json' });
    const cacheDir = tempCache();
    const err = await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir }).catch((e) => e);
    expect(err).toBeInstanceOf(DownloadError);
    expect(err.message).toMatch(/config\.json: checksum mismatch/);
    const blobs = path.join(cacheDir, 'models--m2vla-test--tiny', 'blobs');
    expect(fs.readdirSync(blobs).filter((f) => f.endsWith('.incomplete'))).toEqual([]);
  });

  it('honours HF_TOKEN and HF_ENDPOINT; a missing token says how to set one', async () => {
    const hub = await startHub({ HUB_TOKEN: 'hf_testtoken' });
    const cacheDir = tempCache();
    const saved = { ...process.env };
    try {
      process.env.HF_ENDPOINT = hub.endpoint;
      delete process.env.HF_TOKEN;
      process.env.HF_HOME = cacheDir;  // no token file there
      const err = await pull(`${REPO}/libero-spatial`, { cacheDir }).catch((e) => e);
      expect(err).toBeInstanceOf(DownloadError);
      expect(err.message).toMatch(/HTTP 401.*set HF_TOKEN/);
      process.env.HF_TOKEN = 'hf_testtoken';
      expect((await pull(`${REPO}/libero-spatial`, { cacheDir })).files).toBe(fixtureFiles().length);
    } finally {
      process.env = saved;
    }
  });

  it('offline, or with the Hub unreachable, uses a complete cached pull; what was never pulled is an error', async () => {
    const hub = await startHub();
    const cacheDir = tempCache();
    const first = await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir });
    await hub.stop();
    expect(await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir, offline: true }))
      .toMatchObject({ dir: first.dir, commit: first.commit, offline: true, downloadedBytes: 0 });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      expect((await pull(`${REPO}/libero-spatial`, { endpoint: hub.endpoint, cacheDir })).dir).toBe(first.dir);
      await new Promise((r) => setImmediate(r));
      expect(warnings.join('\n')).toMatch(/unreachable; using the cached commit/);
    } finally {
      process.off('warning', onWarning);
    }
    await expect(pull(`${REPO}/libero-object`, { endpoint: hub.endpoint, cacheDir, offline: true }))
      .rejects.toThrow(/no complete copy; pull it once with network access/);
  });

  it('a repo root without config.json names the run directories inside it; bad options are InputErrors', async () => {
    const hub = await startHub();
    await expect(pull(REPO, { endpoint: hub.endpoint, cacheDir: tempCache() }))
      .rejects.toThrow(`its run directories: ${REPO}/libero-object, ${REPO}/libero-spatial`);
    await expect(pull(REPO, { endpoint: hub.endpoint, cachedir: 'x' } as never)).rejects.toThrow(/unknown option 'cachedir' \(did you mean 'cacheDir'\?\)/);
  });
});

describe("loadPolicy('hf://…') and m2vla pull", () => {
  it('loads the pulled run and acts as the local directory does', async () => {
    const hub = await startHub();
    const cacheDir = tempCache();
    const saved = { ...process.env };
    process.env.HF_ENDPOINT = hub.endpoint;
    process.env.HF_HUB_CACHE = cacheDir;
    try {
      await using remote = await loadPolicy(`hf://${REPO}/libero-spatial`);
      await using local = await loadPolicy(FIXTURE_A);
      const obs = {
        images: { primary: { data: new Uint8Array(32 * 32 * 3).fill(90), width: 32, height: 32 },
          wrist: { data: new Uint8Array(32 * 32 * 3).fill(30), width: 32, height: 32 } },
        inputIds: [1, 2, 3, 4, 5], state: [0.1, 0, 0, 0, 0, 0, 0.02, -0.02],
      };
      expect(Array.from((await remote.act(obs)).actions.data)).toEqual(Array.from((await local.act(obs)).actions.data));
    } finally {
      process.env = saved;
    }
  });

  it('`m2vla pull` prints progress on stderr and the directory on stdout; a bad flag prints usage and exits 2', async () => {
    const hub = await startHub();
    const cacheDir = tempCache();
    const cli = (args: string[]) => new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', '-e',
        "import('./lib/cli/main.ts').then((m) => m.main(process.argv.slice(1)))", ...args],
        { cwd: ROOT, env: { ...process.env, HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: cacheDir }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '', err = '';
      child.stdout.on('data', (b) => { out += b; });
      child.stderr.on('data', (b) => { err += b; });
      child.on('exit', (code) => resolve({ code, out, err }));
    });
    const ok = await cli(['pull', `${REPO}/libero-spatial`]);
    expect(ok.code).toBe(0);
    expect(ok.out.trim()).toMatch(/models--m2vla-test--tiny\/snapshots\/[0-9a-f]{40}\/libero-spatial$/);
    expect(ok.err).toMatch(/12\/12 files/);
    expect(ok.err).toMatch(/downloaded/);
    const bad = await cli(['pull', `${REPO}/libero-spatial`, '--ofline']);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/unknown flag --ofline \(did you mean --offline\?\)[\s\S]*usage: m2vla pull/);
  });
});
