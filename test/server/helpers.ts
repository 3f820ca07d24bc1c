/** Server tests: LIBERO-style observations, an openpi client in Node, a Python probe, a policy that waits. */
import { spawnSync } from 'node:child_process';
import { WebSocket } from 'ws';
import type { Observation, Policy } from '../../lib/index.js';
import { NdArray } from '../../lib/server/ndarray.js';
import { packOpenpi, unpackOpenpi } from '../../lib/server/openpi.js';

export const IMAGE = 224;
const PROMPTS = ['put the black bowl on the plate', 'open the top drawer', 'pick up the ketchup and place it in the basket'];

/**
 * Observation number `seed` as openpi's LIBERO client sends it: two 224x224x3 uint8 images, an 8-d float64 state, a
 * prompt. test/server/openpi_client.py builds the same values from the same formulas.
 */
export function liberoObservation(seed: number): Record<string, unknown> {
  const image = (offset: number) => {
    const data = new Uint8Array(IMAGE * IMAGE * 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * (seed + 1) + 7 * seed + offset) % 256;
    return NdArray.uint8(data, [IMAGE, IMAGE, 3]);
  };
  return {
    'observation/image': image(0),
    'observation/wrist_image': image(101),
    'observation/state': NdArray.float64(Float64Array.from({ length: 8 }, (_, i) => 0.1 * seed - 0.05 * i)),
    prompt: PROMPTS[seed % PROMPTS.length],
  };
}

/** The same observation as policy.act() takes it. */
export function asPolicyObservation(wire: Record<string, unknown>): Observation {
  const img = (a: unknown) => ({ data: (a as NdArray<Uint8Array>).data, width: IMAGE, height: IMAGE });
  return {
    images: { primary: img(wire['observation/image']), wrist: img(wire['observation/wrist_image']) },
    instruction: wire.prompt as string,
    state: (wire['observation/state'] as NdArray<Float64Array>).data,
  };
}

/** policy.act() on LIBERO observation `seed`, memoized per policy. */
const expectedCache = new WeakMap<object, Map<number, Float32Array>>();
export async function expectedActions(policy: Pick<Policy, 'act'>, seed: number): Promise<Float32Array> {
  let cache = expectedCache.get(policy);
  if (!cache) expectedCache.set(policy, cache = new Map());
  if (!cache.has(seed)) cache.set(seed, (await policy.act(asPolicyObservation(liberoObservation(seed)))).actions.data);
  return cache.get(seed)!;
}

/**
 * Batched forwards round differently in the last bits than single ones (measured up to 9e-8 on the demo model), so
 * replies are compared with a tolerance far below any action's meaningful precision.
 */
export const BATCH_TOLERANCE = 1e-6;

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export interface Frame { data: Buffer; binary: boolean }
export interface Closed { code: number; reason: string }

/** A websocket client speaking openpi's protocol: frames are queued, so none is missed between awaits. */
export class OpenpiClient {
  readonly metadata: Promise<Record<string, unknown>>;
  readonly closed: Promise<Closed>;
  private frames: Frame[] = [];
  private waiters: Array<(f: Frame | Closed) => void> = [];
  private closedWith?: Closed;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, binary) => this.push({ data, binary }));
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => {
      this.closedWith = { code, reason: reason.toString() };
      for (const w of this.waiters.splice(0)) w(this.closedWith);
      resolve(this.closedWith);
    }));
    ws.on('error', () => {});
    this.metadata = this.next().then((f) => {
      if (!('data' in f)) throw new Error(`closed before metadata: ${f.code}`);
      return unpackOpenpi(f.data) as Record<string, unknown>;
    });
  }

  static connect(url: string, apiKey?: string): Promise<OpenpiClient> {
    const ws = new WebSocket(url, { perMessageDeflate: false, headers: apiKey ? { authorization: `Api-Key ${apiKey}` } : {} });
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(new OpenpiClient(ws)));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  private push(f: Frame): void {
    const w = this.waiters.shift();
    if (w) w(f);
    else this.frames.push(f);
  }

  /** Frames received and not yet read. */
  get unread(): number {
    return this.frames.length;
  }

  /** The next frame, or how the connection closed. */
  next(): Promise<Frame | Closed> {
    const f = this.frames.shift();
    if (f) return Promise.resolve(f);
    if (this.closedWith) return Promise.resolve(this.closedWith);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  send(obs: unknown): void {
    this.ws.send(packOpenpi(obs));
  }

  /** Sends one observation and decodes the reply; an error frame or a close rejects with its text. */
  async infer(obs: unknown): Promise<Record<string, unknown>> {
    await this.metadata;
    this.send(obs);
    const f = await this.next();
    if (!('data' in f)) throw new Error(`closed: ${f.code} ${f.reason}`);
    if (!f.binary) throw new Error(`error frame: ${f.data.toString()}`);
    return unpackOpenpi(f.data) as Record<string, unknown>;
  }

  /** Expects an error: a text frame, then a close with `code`. Returns the text. */
  async expectError(code = 1011): Promise<string> {
    const f = await this.next();
    if (!('data' in f) || f.binary) throw new Error(`expected a text error frame, got ${JSON.stringify('code' in f ? f : 'binary')}`);
    const closed = await this.closed;
    if (closed.code !== code) throw new Error(`expected close ${code}, got ${closed.code}`);
    return f.data.toString();
  }

  close(): void {
    this.ws.close();
  }
}

/** The Python interpreter for test/server/openpi_client.py when it has msgpack, numpy and websockets (else undefined). */
export function pythonWithOpenpiDeps(): { cmd: string; env: NodeJS.ProcessEnv } | undefined {
  const env = { ...process.env };
  if (process.env.M2VLA_PYREF) env.PYTHONPATH = [process.env.M2VLA_PYREF, env.PYTHONPATH].filter(Boolean).join(':');
  const r = spawnSync('python3', ['-c', 'import msgpack, numpy, websockets.sync.client'], { env, encoding: 'utf8' });
  return r.status === 0 ? { cmd: 'python3', env } : undefined;
}

/** A Policy whose act() waits for `release()` after computing (the real result, delivered when the test says). */
export class GatedPolicy implements Pick<Policy, 'act' | 'metadata'> {
  readonly calls: Array<{ obs: Observation | Observation[]; release: () => void; done: Promise<void> }> = [];
  constructor(private readonly inner: Policy) {}
  get metadata() { return this.inner.metadata; }
  act(obs: Observation | Observation[]): ReturnType<Policy['act']> {
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    let finished!: () => void;
    const done = new Promise<void>((r) => { finished = r; });
    this.calls.push({ obs, release, done });
    return this.inner.act(obs).then(async (out) => {
      await gate;
      return out;
    }).finally(() => setImmediate(finished));
  }
}

/** A Policy whose act() takes at least `ms` longer (the real result). */
export class SlowPolicy implements Pick<Policy, 'act' | 'metadata'> {
  calls = 0;
  constructor(private readonly inner: Policy, private readonly ms: number) {}
  get metadata() { return this.inner.metadata; }
  async act(obs: Observation | Observation[]): ReturnType<Policy['act']> {
    this.calls++;
    const [out] = await Promise.all([this.inner.act(obs), new Promise((r) => setTimeout(r, this.ms))]);
    return out;
  }
}
