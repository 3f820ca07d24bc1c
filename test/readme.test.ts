/**
 * The README runs as written: every ```js block parses as plain JavaScript on this Node (no TypeScript, no `await
 * using`) and runs to completion against the demo model; `hf://VLA-Adapter/LIBERO-Spatial` is served by a local Hub
 * (test/helpers/hub-server.mjs) holding the demo run under that name. The demo prints the lines the README quotes, and
 * examples/openpi-client.mjs talks to a server with plain `node`.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, demoRunDir, loadPolicy } from '../lib/index.js';
import { startHub, stopHubs, type Hub } from './helpers/hub.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const README = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const blocks = (lang: string) => [...README.matchAll(new RegExp('```' + lang + '\\n([\\s\\S]*?)```', 'g'))].map((m) => m[1]);
const INDEX = pathToFileURL(path.join(ROOT, 'lib', 'index.ts')).href;

function node(args: string[], env: NodeJS.ProcessEnv = {}) {
  return new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

let hub: Hub, dir: string;
beforeAll(async () => {
  hub = await startHub({ HUB_REPO: 'VLA-Adapter/LIBERO-Spatial', HUB_FOLDERS: `=${await demoRunDir()}` });
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-readme-'));
});
afterAll(() => {
  stopHubs();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('README', () => {
  const snippets = blocks('js');
  it('has JavaScript snippets and no syntax Node 20 lacks', () => {
    expect(snippets.length).toBeGreaterThanOrEqual(2);
    expect(README).not.toMatch(/await using/);
  });

  it.each(snippets.map((code, i) => [i, code]))('snippet %i parses as plain JS and runs against the demo model', async (i, code) => {
    const file = path.join(dir, `snippet-${i}.mjs`);
    fs.writeFileSync(file, code as string);
    const check = await node(['--check', file]);
    expect(check.err).toBe('');
    expect(check.code).toBe(0);
    fs.writeFileSync(file, (code as string).replaceAll("from 'm2vla'", `from '${INDEX}'`));
    const r = await node(['--import', 'tsx', file], { HF_ENDPOINT: hub.endpoint, HF_HUB_CACHE: path.join(dir, 'hub') });
    expect(r.err.replace(/\r[^\n]*/g, '').replace(/\(node:\d+\) Warning[\s\S]*$/, '').trim(), r.err).toBe('');
    expect(r.code, r.err).toBe(0);
    expect(r.out.length).toBeGreaterThan(0);
  });

  it('quotes what `m2vla demo` prints', async () => {
    const r = await node(['--import', 'tsx', '-e', "import('./lib/cli/main.ts').then((m) => m.main(process.argv.slice(1)))", 'demo']);
    expect(r.code, r.err).toBe(0);
    const quoted = blocks('text')[0].split('\n').filter((l) => l.trim());
    expect(quoted.length).toBeGreaterThan(0);
    // The dtype 'auto' picks depends on the CPU (bfloat16 with AMX-BF16 or a measured bf16 speedup, else float32): the README names one of them.
    const dtypeFree = (l: string) => l.replace(/\b(float32|bfloat16)\b/, '<dtype>');
    for (const line of quoted) expect(r.out.split('\n').map(dtypeFree)).toContain(dtypeFree(line));
  });

  it("docs/serving.md's POST /act example gets 8 actions back", async () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'serving.md'), 'utf8');
    const [code] = [...doc.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);
    await using policy = await loadPolicy(await demoRunDir());
    const server = await createServer(policy, { port: 0 });
    try {
      const file = path.join(dir, 'post-act.mjs');
      fs.writeFileSync(file, code.replace('127.0.0.1:8000', `127.0.0.1:${server.port}`).replace('console.log(await reply.json());',
        'const actions = await reply.json(); console.log(reply.status, actions.length, actions[0].dtype, actions[0].shape);'));
      const r = await node([file]);
      expect(r.code, r.err).toBe(0);
      expect(r.out.trim()).toBe("200 8 <f8 [ 7 ]");
    } finally {
      await server.close();
    }
  });

  it('examples/openpi-client.mjs runs with plain node against a server', async () => {
    await using policy = await loadPolicy(await demoRunDir());
    const server = await createServer(policy, { port: 0 });
    try {
      const r = await node([path.join(ROOT, 'examples', 'openpi-client.mjs'), `ws://127.0.0.1:${server.port}`, '--steps', '2']);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toMatch(/^metadata: \{"chunk":8,"actionDim":7/);
      expect(r.out).toMatch(/step 1: actions 8x7 in [\d.]+ ms, first action \[/);
    } finally {
      await server.close();
    }
  });
});
