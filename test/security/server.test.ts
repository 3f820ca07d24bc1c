/**
 * Issue #18 findings 1, 3, 6, 7 and 12 (server side), and #16 item 5: every request is bounded before any work, each
 * refusal is a typed error to that client only, browser origins are refused, replies keep each connection's order
 * with errors included, and one access-log line is written per request.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';
import { WebSocket } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoRunDir, InputError, loadPolicy, type Policy } from '../../lib/index.js';
import { NdArray } from '../../lib/server/ndarray.js';
import { unpackOpenpi } from '../../lib/server/openpi.js';
import { createServer, type PolicyServer, type ServerOptions } from '../../lib/server/server.js';
import { BATCH_TOLERANCE, expectedActions, liberoObservation, maxAbsDiff, OpenpiClient } from '../server/helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
let policy: Policy;
beforeAll(async () => { policy = await loadPolicy(await demoRunDir()); });
afterAll(() => policy?.dispose());

const servers: PolicyServer[] = [];
afterAll(async () => { await Promise.all(servers.map((s) => s.close())); });
async function serve(options: ServerOptions = {}): Promise<{ url: string; port: number; lines: string[] }> {
  const lines: string[] = [];
  const s = await createServer(policy, { port: 0, accessLog: (l) => lines.push(l), ...options });
  servers.push(s);
  return { url: `ws://127.0.0.1:${s.port}`, port: s.port, lines };
}

async function expectCorrect(reply: Record<string, unknown>, seed: number): Promise<void> {
  const actions = reply.actions as NdArray;
  expect(maxAbsDiff(actions.data as Float64Array, await expectedActions(policy, seed))).toBeLessThanOrEqual(BATCH_TOLERANCE);
}

/** A valid PNG that declares width x height but holds one row of pixels: a few hundred bytes. */
function pngDeclaring(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (b: Buffer) => { let c = 0xffffffff; for (const x of b) c = crcTable[(c ^ x) & 0xff] ^ (c >>> 8); return (c ^ 0xffffffff) >>> 0; };
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type), data]);
    const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
    const sum = Buffer.alloc(4); sum.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, sum]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0); ihdr.writeUInt32BE(height, 4); ihdr[8] = 8; ihdr[9] = 2;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(1 + width * 3))), chunk('IEND', Buffer.alloc(0))]);
}

describe('per-request bounds, checked before any work, refused to that client only', () => {
  it('a 1 MB prompt is refused at once (it made the server unresponsive for minutes); another client is served', async () => {
    const { url } = await serve();
    const c = await OpenpiClient.connect(url);
    const other = await OpenpiClient.connect(url);
    c.send({ ...liberoObservation(0), prompt: 'a '.repeat(524288) });
    expect(await c.expectError()).toMatch(/^InputError \[E_INPUT\]: prompt: 1048576 characters; this server takes prompts of up to 256 tokens/);
    await expectCorrect(await other.infer(liberoObservation(1)), 1);
    other.close();
  });

  it('a prompt over the token cap (but not over the character bound) is refused naming the cap', async () => {
    const { url } = await serve({ maxPromptTokens: 40 });
    const c = await OpenpiClient.connect(url);
    c.send({ ...liberoObservation(0), prompt: 'pick up the bowl and '.repeat(12) });
    expect(await c.expectError()).toMatch(/InputError \[E_INPUT\]: observations\[0\]\.instruction: \d+ prompt tokens; at most 40 are accepted \(maxPromptTokens\)/);
  });

  it('a PNG declaring 16000 x 16000 pixels (a decompression bomb) is refused from its header', async () => {
    const { url } = await serve({ keys: { primary: 'observation/image', wrist: 'observation/wrist_image', state: 'observation/state', prompt: 'prompt' } });
    const c = await OpenpiClient.connect(url);
    const bomb = pngDeclaring(16000, 16000);
    expect(bomb.length).toBeLessThan(200_000);
    c.send({ ...liberoObservation(0), 'observation/image': bomb });
    expect(await c.expectError()).toMatch(/observation\/image: 16000x16000 = 256000000 pixels; this server takes up to 16777216/);
    // Without the server's bound the decoder's own limit still refuses it before decoding.
    const { decodeImage } = await import('../../lib/images.js');
    await expect(decodeImage(bomb, 'bomb')).rejects.toThrow(/bomb: the image declares more than 67108864 pixels/);
  });

  it('raw images over --max-image-pixels are refused', async () => {
    const { url } = await serve({ maxImagePixels: 100 * 100 });
    const c = await OpenpiClient.connect(url);
    c.send(liberoObservation(0));
    expect(await c.expectError()).toMatch(/224x224 = 50176 pixels; this server takes up to 10000/);
  });

  it('connections beyond --max-connections get 503 with a BusyError; the ones open keep working', async () => {
    const { url } = await serve({ maxConnections: 2 });
    const a = await OpenpiClient.connect(url), b = await OpenpiClient.connect(url);
    const refused = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.once('unexpected-response', (_req, res) => {
        let body = '';
        res.on('data', (d) => { body += d; }).on('end', () => resolve({ status: res.statusCode!, body }));
      });
      ws.once('open', () => reject(new Error('a third connection was accepted')));
      ws.once('error', () => {});
    });
    expect(refused.status).toBe(503);
    expect(refused.body).toMatch(/^BusyError \[E_BUSY\]: too many connections \(limit 2/);
    await expectCorrect(await a.infer(liberoObservation(2)), 2);
    b.close();
    await b.closed;
    const c = await OpenpiClient.connect(url);  // a slot is free again
    await expectCorrect(await c.infer(liberoObservation(0)), 0);
    a.close(); c.close();
  });

  it('a half-sent frame is cut after the frame timeout (it held memory for ever); an idle connection after the idle timeout', async () => {
    const { url, port } = await serve({ frameTimeoutMs: 300, idleTimeoutMs: 600 });
    // A raw websocket handshake, then the header of a 1 MiB masked binary frame and 1000 of its bytes.
    const sock = net.connect(port, '127.0.0.1');
    let received = Buffer.alloc(0);
    sock.on('data', (d) => { received = Buffer.concat([received, d]); });
    const ended = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await new Promise((r) => setTimeout(r, 100));
    const header = Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0x10, 0, 0, 1, 2, 3, 4]);
    sock.write(Buffer.concat([header, Buffer.alloc(1000)]));
    await ended;
    expect(received.toString('latin1')).toContain('InputError [E_INPUT]: a frame was not completed within 300 ms');

    const idle = await OpenpiClient.connect(url);
    await idle.metadata;
    expect(await idle.expectError()).toMatch(/idle for 600 ms/);
    // A client that keeps asking is never idle, even when a request takes longer than the idle timeout to queue.
    const busy = await OpenpiClient.connect(url);
    for (let i = 0; i < 6; i++) {
      await expectCorrect(await busy.infer(liberoObservation(i % 3)), i % 3);
      await new Promise((r) => setTimeout(r, 150));
    }
    busy.close();
  });
});

describe('origin policy and the API key', () => {
  it('refuses websocket upgrades from a browser origin (403) unless allowed', async () => {
    const { url } = await serve();
    const status = await new Promise<number>((resolve) => {
      const ws = new WebSocket(url, { origin: 'http://evil.example' });
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.once('open', () => resolve(101));
      ws.once('error', () => {});
    });
    expect(status).toBe(403);
    const allowed = await serve({ allowOrigins: ['http://localhost:3000'] });
    const ws = new WebSocket(allowed.url, { origin: 'http://localhost:3000' });
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
    ws.close();
  });

  it('refuses POST /act as text/plain (415) or from a browser origin (403)', async () => {
    const { port } = await serve();
    const post = (headers: Record<string, string>) => fetch(`http://127.0.0.1:${port}/act`, { method: 'POST', body: '{}', headers });
    const plain = await post({ 'content-type': 'text/plain' });
    expect(plain.status).toBe(415);
    expect(((await plain.json()) as { error: string }).error).toMatch(/content-type "text\/plain": expected application\/json/);
    const browser = await post({ 'content-type': 'application/json', origin: 'http://evil.example' });
    expect(browser.status).toBe(403);
    expect(((await browser.json()) as { error: string }).error).toMatch(/origin "http:\/\/evil.example" refused/);
  });

  it('an empty API key is an error (it silently locked out every client)', async () => {
    await expect(createServer(policy, { port: 0, apiKey: '' })).rejects.toBeInstanceOf(InputError);
    await expect(createServer(policy, { port: 0, apiKey: '  ' })).rejects.toThrow(/apiKey: empty/);
  });

  it('serve takes the key from a file or M2VLA_API_KEY only: --api-key (visible in ps) and an empty key are refused', () => {
    const run = (args: string[], env: Record<string, string> = {}) => spawnSync(process.execPath, ['--import', 'tsx', '-e',
      "import('./lib/cli/main.ts').then((m) => m.main(process.argv.slice(1)))", 'serve', ...args],
    { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
    const onCommandLine = run(['--api-key', 's3cret', '--port', '0']);
    expect(onCommandLine.status).toBe(2); // a usage error, like any other refused flag
    expect(onCommandLine.stderr).toMatch(/--api-key: a key on the command line is visible to every local user/);
    const empty = run(['--port', '0'], { M2VLA_API_KEY: '' });
    expect(empty.status).not.toBe(0);
    expect(empty.stderr).toMatch(/M2VLA_API_KEY: the API key is empty/);
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-key-')), 'key');
    fs.writeFileSync(file, '\n');
    const emptyFile = run(['--port', '0', '--api-key-file', file]);
    expect(emptyFile.status).not.toBe(0);
    expect(emptyFile.stderr).toMatch(/--api-key-file .*: the API key is empty/);
  });
});

describe('order and access log (#16 item 5)', () => {
  it('pipelined good / bad / good: the first reply, then the error, in order; then the close', async () => {
    const { url, lines } = await serve();
    const c = await OpenpiClient.connect(url);
    await c.metadata;
    c.send(liberoObservation(0));
    c.ws.send('not msgpack');  // refused before any work, yet answered after the first
    c.send(liberoObservation(1));
    const first = await c.next();
    if (!('data' in first) || !first.binary) throw new Error(`expected the first reply, got ${JSON.stringify(first)}`);
    await expectCorrect(unpackOpenpi(first.data) as Record<string, unknown>, 0);
    expect(await c.expectError()).toMatch(/^InputError \[E_INPUT\]: expected a binary msgpack frame, got a text frame/);
    await new Promise((r) => setTimeout(r, 50));
    expect(lines.filter((l) => / ws #0 ok /.test(l))).toHaveLength(1);
    expect(lines.filter((l) => / ws #1 E_INPUT /.test(l))).toHaveLength(1);
  });

  it('writes one line per request: time, client, request, outcome, latency, batch size', async () => {
    const { url, port, lines } = await serve();
    const c = await OpenpiClient.connect(url);
    await c.infer(liberoObservation(0));
    await c.infer(liberoObservation(1));
    const res = await fetch(`http://127.0.0.1:${port}/act`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json' } });
    expect(res.status).toBe(400);
    await fetch(`http://127.0.0.1:${port}/healthz`);
    c.close();
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z 127\.0\.0\.1:\d+ ws #0 ok \d+\.\dms batch=1$/);
    expect(lines[1]).toMatch(/ ws #1 ok \d+\.\dms batch=1$/);
    expect(lines[2]).toMatch(/ 127\.0\.0\.1:\d+ POST \/act E_INPUT \d+\.\dms batch=-$/);
  });
});
