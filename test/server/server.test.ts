/** The policy server on loopback with the demo policy: openpi protocol, errors, load, backpressure, auth, shutdown. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoRunDir, loadPolicy, type Policy } from '../../lib/index.js';
import { NdArray } from '../../lib/server/ndarray.js';
import { unpackOpenpi } from '../../lib/server/openpi.js';
import { createServer, type PolicyServer } from '../../lib/server/server.js';
import {
  BATCH_TOLERANCE, expectedActions, liberoObservation, maxAbsDiff, OpenpiClient,
  pythonWithOpenpiDeps, SlowPolicy,
} from './helpers.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'openpi_client.py');
const MAX_FRAME = 1 << 20;

let policy: Policy;
let server: PolicyServer;
let url: string;
beforeAll(async () => {
  policy = await loadPolicy(await demoRunDir());
  server = await createServer(policy, { port: 0, maxFrameBytes: MAX_FRAME });
  url = `ws://127.0.0.1:${server.port}`;
});
afterAll(async () => {
  await server?.close();
  policy?.dispose();
});

async function expectCorrect(reply: Record<string, unknown>, seed: number, tolerance = 0): Promise<void> {
  const actions = reply.actions as NdArray;
  expect(actions).toBeInstanceOf(NdArray);
  expect(actions.dtype).toBe('<f8');
  expect(actions.shape).toEqual([8, 7]);
  expect(maxAbsDiff(actions.data as Float64Array, await expectedActions(policy, seed))).toBeLessThanOrEqual(tolerance);
}

/** A client that keeps asking while the test misbehaves elsewhere; resolves with its reply count. */
function steadyClient(stop: () => boolean): Promise<number> {
  return (async () => {
    const c = await OpenpiClient.connect(url);
    let n = 0;
    for (; !stop() || n < 3; n++) await expectCorrect(await c.infer(liberoObservation(n % 3)), n % 3, BATCH_TOLERANCE);
    c.close();
    return n;
  })();
}

describe('openpi websocket protocol', () => {
  it('sends the metadata first, then replies with the actions act() gives and openpi timing fields', async () => {
    const c = await OpenpiClient.connect(`${url}/any/path`);
    expect(await c.metadata).toEqual({ ...policy.metadata });
    const first = await c.infer(liberoObservation(0));
    await expectCorrect(first, 0);
    expect(first.policy_timing).toEqual({ infer_ms: expect.any(Number) });
    expect(first.server_timing).toEqual({ infer_ms: expect.any(Number), queue_ms: expect.any(Number), batch_size: 1 });
    const second = await c.infer(liberoObservation(1));
    await expectCorrect(second, 1);
    expect((second.server_timing as Record<string, number>).prev_total_ms).toBeGreaterThan(0);
    c.close();
  });

  it('answers GET /healthz with 200 OK and other plain requests with 404', async () => {
    const res = await fetch(`http://127.0.0.1:${server.port}/healthz`);
    expect([res.status, await res.text()]).toEqual([200, 'OK\n']);
    expect((await fetch(`http://127.0.0.1:${server.port}/other`)).status).toBe(404);
  });

  it('replies in request order when a client pipelines', async () => {
    const c = await OpenpiClient.connect(url);
    await c.metadata;
    const seeds = [5, 3, 4, 3, 6, 5];
    for (const s of seeds) c.send(liberoObservation(s));
    for (const s of seeds) {
      const f = await c.next();
      if (!('data' in f)) throw new Error('closed');
      await expectCorrect(unpackOpenpi(f.data) as Record<string, unknown>, s, BATCH_TOLERANCE);
    }
    c.close();
  });

  it('maps other robots\' keys (DROID: joint + gripper positions concatenated)', async () => {
    const droid = await createServer(policy, { port: 0, keys: 'droid' });
    const c = await OpenpiClient.connect(`ws://127.0.0.1:${droid.port}`);
    const o = liberoObservation(2), state = (o['observation/state'] as NdArray<Float64Array>).data;
    const reply = await c.infer({
      'observation/exterior_image_1_left': o['observation/image'], 'observation/wrist_image_left': o['observation/wrist_image'],
      'observation/joint_position': NdArray.float64(state.slice(0, 7)), 'observation/gripper_position': NdArray.float64(state.slice(7)),
      prompt: o.prompt,
    });
    await expectCorrect(reply, 2);
    c.close();
    await droid.close();
  });
});

describe.skipIf(!pythonWithOpenpiDeps())('a Python client on openpi\'s wire format', () => {
  const py = (args: string[]) => new Promise<Record<string, any>>((resolve, reject) => {
    const { cmd, env } = pythonWithOpenpiDeps()!;
    const child = spawn(cmd, [CLIENT, ...args], { env });
    let out = '', err = '';
    child.stdout.on('data', (b) => { out += b; });
    child.stderr.on('data', (b) => { err += b; });
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(err))));
  });

  it('gets the metadata and the same actions as act()', async () => {
    const out = await py(['infer', url, '0,1,2']);
    expect(out.metadata).toEqual({ ...policy.metadata });
    for (const r of out.results) {
      expect([r.dtype, r.shape]).toEqual(['<f8', [8, 7]]);
      expect(maxAbsDiff(r.actions.flat(), await expectedActions(policy, r.seed))).toBe(0);
      expect(Object.keys(r.server_timing)).toContain('infer_ms');
    }
    expect(Object.keys(out.results[1].server_timing)).toContain('prev_total_ms');
  });

  it('gets a text error frame and close 1011 for a float32 image', async () => {
    const out = await py(['bad', url]);
    expect(out).toMatchObject({ text_frame: true, close_code: 1011 });
    expect(out.error).toMatch(/observation\/image: expected uint8 pixels \(H, W, 3\), got float32 \(224, 224, 3\)/);
  });
});

describe('bad input never takes the server down', () => {
  const o = liberoObservation(0);
  const bad: Array<[string, (c: OpenpiClient) => void, RegExp]> = [
    ['malformed msgpack', (c) => c.ws.send(Buffer.from([0xc6, 0xff, 0xff, 0xff, 0xff, 1])), /malformed msgpack/],
    ['a text frame', (c) => c.ws.send('hello'), /expected a binary msgpack frame/],
    ['not a dict', (c) => c.send([1, 2, 3]), /observation: expected a dict/],
    ['a missing key', (c) => c.send({ ...o, prompt: undefined }), /prompt: required/],
    ['a float32 image', (c) => c.send({ ...o, 'observation/image': NdArray.float32(new Float32Array(12), [2, 2, 3]) }),
      /observation\/image: expected uint8 pixels \(H, W, 3\), got float32 \(2, 2, 3\)/],
    ['a bool state', (c) => c.send({ ...o, 'observation/state': new NdArray('|b1', [8], new Uint8Array(8)) }),
      /observation\/state: expected a 1-d numeric array, got bool \(8,\)/],
    ['a wrong state size', (c) => c.send({ ...o, 'observation/state': NdArray.float64(new Float64Array(7)) }),
      /observation\/state: the model takes a 8-d state, got 7 values/],
    ['a NaN in the state', (c) => c.send({ ...o, 'observation/state': NdArray.float64(Float64Array.of(0, 0, 0, NaN, 0, 0, 0, 0)) }),
      /observation\/state: value 3 is NaN/],
    ['a 2-d image', (c) => c.send({ ...o, 'observation/wrist_image': NdArray.uint8(new Uint8Array(16), [4, 4]) }),
      /observation\/wrist_image: expected an \(H, W, 3\) HWC RGB image, got uint8 \(4, 4\)/],
    ['undecodable image bytes', (c) => c.send({ ...o, 'observation/image': Uint8Array.of(1, 2, 3) }), /could not decode the image bytes/],
    ['an oversized frame', (c) => c.ws.send(Buffer.alloc(MAX_FRAME + 1)), /message too big: this server accepts frames up to 1048576 bytes/],
  ];

  it('each bad request gets an error frame and close 1011 on its own connection; another client is unaffected', async () => {
    let done = false;
    const steady = steadyClient(() => done);
    for (const [name, send, message] of bad) {
      const c = await OpenpiClient.connect(url);
      await c.metadata;
      send(c);
      expect(await c.expectError(1011), name).toMatch(message);
    }
    // A client that hangs up with its request in flight.
    for (let i = 0; i < 3; i++) {
      const c = await OpenpiClient.connect(url);
      await c.metadata;
      c.send(liberoObservation(i));
      c.ws.terminate();
    }
    done = true;
    expect(await steady).toBeGreaterThanOrEqual(3);
    const after = await OpenpiClient.connect(url);
    await expectCorrect(await after.infer(liberoObservation(1)), 1);
    after.close();
  });
});

describe('load, batching and backpressure', () => {
  it('32 concurrent clients x 20 requests: every reply correct, in order, none lost or duplicated', async () => {
    const clients = await Promise.all(Array.from({ length: 32 }, () => OpenpiClient.connect(url)));
    const seedOf = (c: number, r: number) => (c * 7 + r) % 24;
    for (let s = 0; s < 24; s++) await expectedActions(policy, s);
    const batchSizes: number[] = [];
    await Promise.all(clients.map(async (client, c) => {
      for (let r = 0; r < 20; r++) {
        const reply = await client.infer(liberoObservation(seedOf(c, r)));
        await expectCorrect(reply, seedOf(c, r), BATCH_TOLERANCE);
        batchSizes.push((reply.server_timing as Record<string, number>).batch_size);
      }
    }));
    expect(batchSizes).toHaveLength(640);
    expect(Math.max(...batchSizes)).toBeGreaterThan(1);
    // No duplicate reply trails behind.
    await new Promise((r) => setTimeout(r, 50));
    expect(clients.map((c) => c.unread)).toEqual(Array(32).fill(0));
    for (const client of clients) client.close();
  });

  it('an idle server waits up to maxWaitMs for company, and not at all once a batch is full', async () => {
    for (const [maxBatch, waited] of [[8, true], [3, false]] as const) {
      const s = await createServer(policy, { port: 0, maxBatch, maxWaitMs: 400 });
      const clients = await Promise.all(Array.from({ length: 3 }, () => OpenpiClient.connect(`ws://127.0.0.1:${s.port}`)));
      await Promise.all(clients.map((c) => c.metadata));
      const replies = await Promise.all(clients.map((c, i) => c.infer(liberoObservation(i))));
      for (const [i, r] of replies.entries()) {
        await expectCorrect(r, i, BATCH_TOLERANCE);
        const timing = r.server_timing as Record<string, number>;
        expect(timing.batch_size).toBe(3);
        expect(timing.queue_ms >= 300, `maxBatch ${maxBatch}: queued ${timing.queue_ms} ms`).toBe(waited);
      }
      for (const c of clients) c.close();
      await s.close();
    }
  });

  it('refuses requests beyond the queue bound with an error frame and close 1013', async () => {
    const slow = new SlowPolicy(policy, 300);
    const busy = await createServer(slow, { port: 0, maxBatch: 1, maxQueue: 2 });
    const clients = await Promise.all(Array.from({ length: 5 }, () => OpenpiClient.connect(`ws://127.0.0.1:${busy.port}`)));
    await Promise.all(clients.map((c) => c.metadata));
    const first = clients[0].infer(liberoObservation(0));
    while (slow.calls === 0) await new Promise((r) => setTimeout(r, 5));
    const rest = clients.slice(1).map((c, i) => c.infer(liberoObservation(i + 1)).then(
      (reply) => ({ ok: reply, seed: i + 1 }), (e: Error) => ({ error: e.message })));
    const results = await Promise.all(rest);
    await expectCorrect(await first, 0);
    const ok = results.filter((r) => 'ok' in r) as Array<{ ok: Record<string, unknown>; seed: number }>;
    expect(ok).toHaveLength(2);
    for (const r of ok) await expectCorrect(r.ok, r.seed);
    const refused = clients.filter((_, i) => i > 0 && 'error' in results[i - 1]);
    expect(refused).toHaveLength(2);
    for (const c of refused) expect(await c.closed).toMatchObject({ code: 1013 });
    expect(results.filter((r) => 'error' in r).map((r) => (r as { error: string }).error))
      .toEqual(Array(2).fill(expect.stringMatching(/BusyError \[E_BUSY\]: server busy: 2 requests already queued \(limit 2\)/)));
    for (const c of clients) c.close();
    await busy.close();
  });
});

describe('API key', () => {
  it('refuses websocket upgrades and POST /act without the right Authorization header (401); /healthz stays open', async () => {
    const keyed = await createServer(policy, { port: 0, apiKey: 's3cret' });
    const at = `ws://127.0.0.1:${keyed.port}`;
    await expect(OpenpiClient.connect(at)).rejects.toThrow('HTTP 401');
    await expect(OpenpiClient.connect(at, 'wrong')).rejects.toThrow('HTTP 401');
    const c = await OpenpiClient.connect(at, 's3cret');
    await expectCorrect(await c.infer(liberoObservation(1)), 1);
    c.close();
    expect((await fetch(`http://127.0.0.1:${keyed.port}/act`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect((await fetch(`http://127.0.0.1:${keyed.port}/healthz`)).status).toBe(200);
    await keyed.close();
  });
});

describe('VLA-Adapter POST /act (json_numpy)', () => {
  const arr = (a: NdArray) => ({ __numpy__: a.bytes().toString('base64'), dtype: a.dtype, shape: a.shape });
  const payload = (seed: number) => {
    const o = liberoObservation(seed);
    return {
      instruction: o.prompt, full_image: arr(o['observation/image'] as NdArray), wrist_image: arr(o['observation/wrist_image'] as NdArray),
      state: arr(o['observation/state'] as NdArray),
    };
  };
  const post = (body: string) => fetch(`http://127.0.0.1:${server.port}/act`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
  type JsonNumpy = { __numpy__: string; dtype: string; shape: number[] };
  const steps = async (list: JsonNumpy[], seed: number) => {
    expect(list).toHaveLength(8);
    for (const s of list) expect([s.dtype, s.shape]).toEqual(['<f8', [7]]);
    const values = list.flatMap((s) => Array.from(new Float64Array(Uint8Array.from(Buffer.from(s.__numpy__, 'base64')).buffer)));
    expect(maxAbsDiff(values, await expectedActions(policy, seed))).toBe(0);
  };

  it('returns one json_numpy float64 array per step, as deploy.py does', async () => {
    const res = await post(JSON.stringify(payload(0)));
    expect(res.status).toBe(200);
    await steps(await res.json() as JsonNumpy[], 0);
  });

  it('accepts the double-encoded form {"encoded": "<json>"} and answers in kind', async () => {
    const res = await post(JSON.stringify({ encoded: JSON.stringify(payload(1)) }));
    expect(res.status).toBe(200);
    const inner = await res.json() as string;
    expect(typeof inner).toBe('string');
    await steps(JSON.parse(inner), 1);
  });

  it('answers bad input with 400 naming the key, and an oversized body with 413', async () => {
    const { state, ...noState } = payload(0);
    expect(state).toBeDefined();
    const res = await post(JSON.stringify(noState));
    expect(res.status).toBe(400);
    expect((await res.json() as { error: string }).error).toMatch(/state: required/);
    expect((await post('{"instruction": ')).status).toBe(400);
    expect((await post(' '.repeat(MAX_FRAME + 10))).status).toBe(413);
    const ok = await post(JSON.stringify(payload(2)));
    await steps(await ok.json() as JsonNumpy[], 2);
  });
});

describe('graceful shutdown', () => {
  it('close() stops accepting, finishes the requests received (running and queued), then closes sockets with 1001', async () => {
    const slow = new SlowPolicy(policy, 500);
    const s = await createServer(slow, { port: 0, maxBatch: 1 });
    const at = `ws://127.0.0.1:${s.port}`;
    const c = await OpenpiClient.connect(at);
    const idle = await OpenpiClient.connect(at);
    await Promise.all([c.metadata, idle.metadata]);
    const o = liberoObservation(4), arr = (a: NdArray) => ({ __numpy__: a.bytes().toString('base64'), dtype: a.dtype, shape: a.shape });
    const posted = fetch(`http://127.0.0.1:${s.port}/act`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({
        instruction: o.prompt, full_image: arr(o['observation/image'] as NdArray),
        wrist_image: arr(o['observation/wrist_image'] as NdArray), state: arr(o['observation/state'] as NdArray),
      }),
    });
    while (slow.calls === 0) await new Promise((r) => setTimeout(r, 5));
    const reply = c.infer(liberoObservation(3)); // queued behind the POST
    await new Promise((r) => setTimeout(r, 100));
    const t0 = performance.now();
    const closed = s.close();
    c.send(liberoObservation(5)); // too late: refused, after the reply to the one before
    await expect(OpenpiClient.connect(at)).rejects.toThrow();
    expect((await posted).status).toBe(200);
    await expectCorrect(await reply, 3);
    expect(await c.expectError(1001)).toBe('ShuttingDown: server is shutting down');
    expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    expect((await idle.closed).code).toBe(1001);
    await closed;
    // Well within the 2 s grace period: the sockets closed cleanly, none was cut.
    expect(performance.now() - t0).toBeLessThan(1800);
  });
});
