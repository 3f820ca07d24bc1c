/**
 * The policy server: openpi's websocket protocol (any path) and VLA-Adapter's `POST /act` on one port, plus
 * `GET /healthz`. Requests from all clients go through one Batcher; replies keep each connection's request order.
 *
 * openpi protocol: on connect the server sends one binary msgpack frame with the policy metadata; then each binary
 * msgpack observation gets a binary msgpack result `{actions, policy_timing, server_timing}`. An error is sent as a
 * text frame and the connection (only that one) is closed with 1011 (1013 when the queue is full), after the replies
 * to the requests before it.
 *
 * Every request is bounded before any work (see ServerOptions and docs/threat-model.md): frame size, prompt length,
 * declared image pixels, connections, unfinished frames and idle connections; browser origins are refused.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { BusyError, InputError, M2vlaError } from '../errors.js';
import { imageSize, type ImageInput } from '../images.js';
import type { Observation } from '../observation.js';
import type { Policy } from '../policy.js';
import { Batcher, type BatchResult } from './batcher.js';
import { parseJsonNumpy, toJsonNumpy } from './json-numpy.js';
import { NdArray } from './ndarray.js';
import { packOpenpi, unpackOpenpi } from './openpi.js';
import { observationReader, PRESETS, resolveKeys, type ObservationKeys, type PresetName } from './observations.js';
import { checkOptions, optionKeys } from '../options.js';

/** A Policy, or a wrapper with the same act() and metadata. */
export type ServedPolicy = Pick<Policy, 'act' | 'metadata'>;

export interface ServerOptions {
  /** Default 127.0.0.1: serving to other machines is a decision (use 0.0.0.0 and an apiKey). */
  host?: string;
  /** Default 8000 (openpi's); 0 picks a free port. */
  port?: number;
  /** Which observation keys hold what (default 'libero'). */
  keys?: PresetName | ObservationKeys;
  /** Require `Authorization: Api-Key <key>` (openpi's client header) on websocket upgrades and POST /act. */
  apiKey?: string;
  /** Dynamic batching (default 8 per batch, no wait; 1 disables) and the queue bound (default 64). */
  maxBatch?: number;
  maxWaitMs?: number;
  maxQueue?: number;
  /** Largest websocket message / HTTP body accepted (default 16 MiB). */
  maxFrameBytes?: number;
  /**
   * Most prompt tokens per request (default 256; the model's positions bound it too). Prompts longer than 16 characters
   * per allowed token are refused before they are tokenized.
   */
  maxPromptTokens?: number;
  /** Most pixels (width x height) an image may have or, encoded, declare in its header (default 4096 x 4096). */
  maxImagePixels?: number;
  /** Most open connections (HTTP and websocket together, default 64); more get 503 at once. */
  maxConnections?: number;
  /** A frame or HTTP request must arrive in full within this many ms of its first byte (default 30 s). */
  frameTimeoutMs?: number;
  /** A websocket with no request in flight that sends nothing for this long is closed (default 5 min). */
  idleTimeoutMs?: number;
  /**
   * Origins (as browsers send them, `http://host:port`) allowed to open the websocket or POST /act; '*' allows any.
   * Default none: any request with an Origin header comes from a web page and is refused (403).
   */
  allowOrigins?: string[];
  /** Where connection errors are reported (default: nowhere). */
  log?: (line: string) => void;
  /** One line per request: client address, protocol, outcome, latency, batch size (default: none). */
  accessLog?: (line: string) => void;
}

export const SERVER_DEFAULTS = {
  maxFrameBytes: 16 << 20, maxPromptTokens: 256, maxImagePixels: 4096 * 4096, maxConnections: 64,
  frameTimeoutMs: 30_000, idleTimeoutMs: 300_000, maxBatch: 8, maxWaitMs: 0, maxQueue: 64,
};
/** Characters a prompt may have per allowed token: refused before the tokenizer runs on it. */
const CHARS_PER_TOKEN = 16;

export interface PolicyServer {
  readonly host: string;
  readonly port: number;
  /** Stop accepting, finish the requests already received, then close every socket (websockets with 1001). */
  close(): Promise<void>;
}

// openpi's websocket server uses this reason with 1011.
const ERROR_REASON = 'Internal server error. Traceback included in previous frame.';
const CLOSE_ERROR = 1011, CLOSE_BUSY = 1013, CLOSE_GOING_AWAY = 1001, CLOSE_TOO_BIG = 1009;

/**
 * ws closes a connection with 1009 by itself when a frame exceeds maxPayload (it checks the frame header, so the
 * payload is never buffered). openpi clients surface only a text frame as an error message: send one, and close with
 * 1011 like every other per-client error.
 */
class OpenpiSocket extends WebSocket {
  override close(code?: number, reason?: string | Buffer): void {
    if (code === CLOSE_TOO_BIG && this.readyState === WebSocket.OPEN) {
      this.send(`InputError [E_INPUT]: message too big: this server accepts frames up to ${this.maxBytes} bytes`);
      return super.close(CLOSE_ERROR, ERROR_REASON);
    }
    super.close(code, reason);
  }
  maxBytes = 0;
}

class PayloadTooLarge extends InputError {}
class Forbidden extends InputError {}
class UnsupportedMediaType extends InputError {}
class ShuttingDown extends Error {
  override name = 'ShuttingDown';
}

function describeError(e: unknown): string {
  if (e instanceof M2vlaError) return `${e.name} [${e.code}]: ${e.message}`;
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function sameKey(header: string | undefined, apiKey: string): boolean {
  // Compare digests: constant time, and equal lengths whatever the header holds.
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(header ?? ''), digest(`Api-Key ${apiKey}`));
}

export async function createServer(policy: ServedPolicy, options: ServerOptions = {}): Promise<PolicyServer> {
  checkOptions(options, optionKeys<ServerOptions>({
    host: true, port: true, keys: true, apiKey: true, maxBatch: true, maxWaitMs: true, maxQueue: true, maxFrameBytes: true,
    maxPromptTokens: true, maxImagePixels: true, maxConnections: true, frameTimeoutMs: true, idleTimeoutMs: true,
    allowOrigins: true, log: true, accessLog: true,
  }), 'createServer');
  const o = { ...SERVER_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined)) };
  const { host = '127.0.0.1', port = 8000, apiKey, maxFrameBytes, log = () => {}, accessLog } = o as typeof o & ServerOptions;
  for (const k of ['maxFrameBytes', 'maxPromptTokens', 'maxImagePixels', 'maxConnections', 'frameTimeoutMs', 'idleTimeoutMs'] as const) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new InputError(`${k}: expected a positive integer, got ${o[k]}`);
  }
  if (apiKey !== undefined && (typeof apiKey !== 'string' || apiKey.trim() === ''))
    throw new InputError('apiKey: empty; it would lock out every client (unset it to serve without a key)');
  const allowOrigins = new Set(options.allowOrigins ?? []);
  const wireKeys = resolveKeys(options.keys ?? 'libero');
  const readObservation = observationReader(wireKeys, policy.metadata);
  const readAct = observationReader(PRESETS['vla-adapter'], policy.metadata);
  const batcher = new Batcher(policy, {
    maxBatch: o.maxBatch, maxWaitMs: o.maxWaitMs, maxQueue: o.maxQueue, act: { maxPromptTokens: o.maxPromptTokens },
  });
  const metadataFrame = packOpenpi(policy.metadata);
  // Replies not yet sent, awaited by close().
  const replies = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;

  const track = (p: Promise<unknown>) => {
    replies.add(p);
    void p.finally(() => replies.delete(p));
  };

  /** The bounds that need no model: prompt length before tokenizing, image pixels from the header before decoding. */
  async function bounded(obs: Observation, keys: ObservationKeys): Promise<Observation> {
    const prompt = obs.instruction ?? '';
    if (prompt.length > o.maxPromptTokens * CHARS_PER_TOKEN) {
      throw new InputError(`${keys.prompt}: ${prompt.length} characters; this server takes prompts of up to ${o.maxPromptTokens} ` +
        `tokens (--max-prompt-tokens), so at most ${o.maxPromptTokens * CHARS_PER_TOKEN} characters`);
    }
    const images = Object.entries(obs.images ?? {}) as Array<[string, ImageInput]>;
    await Promise.all(images.map(async ([camera, image]) => {
      const key = camera === 'wrist' ? keys.wrist! : keys.primary;
      const { width, height } = image instanceof Uint8Array ? await imageSize(image, key) : image;
      if (width * height > o.maxImagePixels) {
        throw new InputError(`${key}: ${width}x${height} = ${width * height} pixels; this server takes up to ` +
          `${o.maxImagePixels} (--max-image-pixels)`);
      }
    }));
    return obs;
  }

  /** Whether a request may come from where it says: no Origin (not a browser), or an allowed one. */
  const originAllowed = (req: http.IncomingMessage) => {
    const origin = req.headers.origin;
    return origin === undefined || allowOrigins.has('*') || allowOrigins.has(origin);
  };
  const originError = (req: http.IncomingMessage) => new Forbidden(`origin ${JSON.stringify(req.headers.origin)} refused: ` +
    'requests from web pages are not accepted unless the server allows their origin (--allow-origin)');
  const clientOf = (req: http.IncomingMessage) => `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  const outcomeOf = (e: unknown) => (e instanceof M2vlaError ? e.code : e instanceof ShuttingDown ? 'E_SHUTDOWN' : 'E_INTERNAL');
  const logRequest = (client: string, what: string, started: number, outcome: string, batchSize?: number) => {
    accessLog?.(`${new Date().toISOString()} ${client} ${what} ${outcome} ${(performance.now() - started).toFixed(1)}ms ` +
      `batch=${batchSize ?? '-'}`);
  };

  const wss = new WebSocketServer({
    noServer: true, perMessageDeflate: false, maxPayload: maxFrameBytes, WebSocket: OpenpiSocket,
  });

  const fail = (ws: WebSocket, e: unknown) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    log(`client error: ${describeError(e)}`);
    ws.send(describeError(e));
    if (e instanceof BusyError) ws.close(CLOSE_BUSY, 'server busy, retry later');
    else if (e instanceof ShuttingDown) ws.close(CLOSE_GOING_AWAY, 'server shutting down');
    else ws.close(CLOSE_ERROR, ERROR_REASON);
  };

  /**
   * Unfinished frames and idle connections. `partialSince` is when the first byte of a message not yet complete
   * arrived: our data listener runs before ws's (prepended), and ws emits 'message' (or 'ping'/'pong') synchronously
   * from its own, which clears it again when the chunk completed the message.
   */
  interface Watched { ws: OpenpiSocket; partialSince?: number; lastActive: number; inFlight: number }
  const watched = new Set<Watched>();
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const w of watched) {
      const unfinished = w.partialSince !== undefined && now - w.partialSince > o.frameTimeoutMs;
      const idle = w.inFlight === 0 && now - w.lastActive > o.idleTimeoutMs;
      if (!unfinished && !idle) continue;
      watched.delete(w);
      fail(w.ws, new InputError(unfinished ? `a frame was not completed within ${o.frameTimeoutMs} ms (--frame-timeout-s)`
        : `idle for ${o.idleTimeoutMs} ms (--idle-timeout-s); reconnect to continue`));
      // A client stalled mid-frame will not answer the close handshake: its buffered bytes go with the socket.
      setTimeout(() => w.ws.terminate(), 1000).unref();
    }
  }, Math.max(20, Math.min(1000, Math.min(o.frameTimeoutMs, o.idleTimeoutMs) / 4)));
  sweep.unref();

  wss.on('connection', (ws: OpenpiSocket, req: http.IncomingMessage) => {
    ws.maxBytes = maxFrameBytes;
    ws.on('error', (e) => log(`websocket error: ${e.message}`));
    const client = clientOf(req);
    const w: Watched = { ws, lastActive: performance.now(), inFlight: 0 };
    watched.add(w);
    const socket = req.socket as Socket;
    socket.prependListener('data', () => {
      w.lastActive = performance.now();
      w.partialSince ??= w.lastActive;
    });
    const complete = () => { w.partialSince = undefined; };
    ws.on('ping', complete);
    ws.on('pong', complete);
    const gone = new AbortController();
    ws.on('close', () => {
      watched.delete(w);
      gone.abort(new InputError('client disconnected'));
    });
    ws.send(metadataFrame);
    let tail: Promise<void> = Promise.resolve();
    let prevTotalMs: number | undefined;
    let seq = 0;

    async function answer(data: RawData, isBinary: boolean): Promise<BatchResult> {
      if (!isBinary) throw new InputError('expected a binary msgpack frame, got a text frame');
      // ws's default binaryType: one Buffer per message.
      const obs = await bounded(readObservation(unpackOpenpi(data as Buffer)), wireKeys);
      return batcher.submit(obs, gone.signal);
    }

    ws.on('message', (data: RawData, isBinary: boolean) => {
      complete();
      const received = performance.now();
      const what = `ws #${seq++}`;
      if (ws.readyState !== WebSocket.OPEN) return;
      if (closing) {
        // After the replies to what came before.
        tail = tail.then(() => fail(ws, new ShuttingDown('server is shutting down')));
        return;
      }
      w.inFlight++;
      const reply = answer(data, isBinary);
      // Handled in turn below; until then a rejection must not count as unhandled.
      reply.catch(() => {});
      // Chained, errors included: replies leave in the order the requests came in, even when a client pipelines them.
      tail = tail.then(() => reply).then((r) => {
        logRequest(client, what, received, 'ok', r.batchSize);
        if (ws.readyState !== WebSocket.OPEN) return;
        const serverTiming: Record<string, number> = { infer_ms: r.inferMs, queue_ms: r.queueMs, batch_size: r.batchSize };
        if (prevTotalMs !== undefined) serverTiming.prev_total_ms = prevTotalMs;
        ws.send(packOpenpi({
          // float64, as openpi's LIBERO policy returns them (its unnormalization uses float64 statistics).
          actions: NdArray.float64(Float64Array.from(r.actions.data), r.actions.shape),
          policy_timing: { infer_ms: r.policyTiming.total },
          server_timing: serverTiming,
        }));
        prevTotalMs = performance.now() - received;
      }, (e) => {
        logRequest(client, what, received, outcomeOf(e));
        fail(ws, e);
      }).finally(() => {
        w.inFlight--;
        w.lastActive = performance.now();
      });
      track(tail);
    });
  });

  const httpServer = http.createServer((req, res) => {
    const send = (status: number, body: string, type = 'text/plain; charset=utf-8', headers: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, ...headers }).end(body);
    };
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/healthz') return send(closing ? 503 : 200, closing ? 'shutting down\n' : 'OK\n');
    if (req.method !== 'POST' || path !== '/act') {
      return send(404, 'This server speaks the openpi websocket protocol on any path, VLA-Adapter JSON on POST /act, ' +
        'and GET /healthz.\n');
    }
    const started = performance.now(), client = clientOf(req);
    const refuse = (status: number, e: M2vlaError) => {
      logRequest(client, 'POST /act', started, e.code);
      // The body is left unread: close the connection rather than read the rest.
      res.once('finish', () => req.socket.destroy());
      send(status, JSON.stringify({ error: describeError(e) }) + '\n', 'application/json', { connection: 'close' });
    };
    if (apiKey !== undefined && !sameKey(req.headers.authorization, apiKey)) return send(401, 'invalid or missing API key\n');
    if (!originAllowed(req)) return refuse(403, originError(req));
    // A web page can POST text/plain (or a typeless body) without a CORS preflight; JSON clients say what they send.
    if (!/^application\/json\s*(;|$)/i.test(req.headers['content-type'] ?? ''))
      return refuse(415, new UnsupportedMediaType(`content-type ${JSON.stringify(req.headers['content-type'] ?? '')}: expected application/json`));
    if (closing) return send(503, 'server shutting down\n');
    let batchSize: number | undefined;
    track(postAct(req, (n) => { batchSize = n; }).then(
      (body) => {
        logRequest(client, 'POST /act', started, 'ok', batchSize);
        send(200, body, 'application/json');
      },
      (e) => {
        const status = e instanceof BusyError ? 503 : e instanceof PayloadTooLarge ? 413 : e instanceof M2vlaError ? 400 : 500;
        logRequest(client, 'POST /act', started, outcomeOf(e));
        if (status >= 500 && !(e instanceof BusyError)) log(`POST /act failed: ${describeError(e)}`);
        // An oversized body was left unread: close the connection rather than read the rest.
        if (status === 413) res.once('finish', () => req.socket.destroy());
        send(status, JSON.stringify({ error: describeError(e) }) + '\n', 'application/json',
          status === 503 ? { 'retry-after': '1' } : status === 413 ? { connection: 'close' } : {});
      }));
  });
  // A request (headers and body) must arrive within the frame timeout; idle keep-alive connections close after 5 s.
  httpServer.requestTimeout = o.frameTimeoutMs;
  httpServer.headersTimeout = o.frameTimeoutMs;

  /** VLA-Adapter's deploy.py: `{instruction, full_image, wrist_image, state}` or `{encoded: "<that as JSON>"}`. */
  async function postAct(req: http.IncomingMessage, onBatch: (n: number) => void): Promise<string> {
    let payload = parseJsonNumpy(await readBody(req, maxFrameBytes));
    const encoded = !!payload && typeof payload === 'object' && 'encoded' in payload;
    if (encoded) {
      const inner = (payload as { encoded: unknown }).encoded;
      if (typeof inner !== 'string') throw new InputError('encoded: expected a JSON string');
      payload = parseJsonNumpy(inner);
    }
    const r = await batcher.submit(await bounded(readAct(payload), PRESETS['vla-adapter']));
    onBatch(r.batchSize);
    // As deploy.py returns it: a list with one float64 array per step; JSON text inside a JSON string when `encoded`.
    const [chunk, dim] = r.actions.shape, data = Float64Array.from(r.actions.data);
    const steps = Array.from({ length: chunk }, (_, i) => toJsonNumpy(NdArray.float64(data.slice(i * dim, (i + 1) * dim))));
    return encoded ? JSON.stringify(JSON.stringify(steps)) : JSON.stringify(steps);
  }

  // Connections are counted from the TCP accept, so a refusal costs nothing but the reply; websockets count too.
  let connections = 0;
  httpServer.on('connection', (socket: Socket) => {
    if (connections >= o.maxConnections) {
      const body = `${describeError(new BusyError(`too many connections (limit ${o.maxConnections}, --max-connections); retry later`))}\n`;
      log(`refused a connection from ${socket.remoteAddress}: ${o.maxConnections} open`);
      socket.end(`HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n` +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      socket.destroySoon?.();
      return;
    }
    connections++;
    socket.once('close', () => connections--);
  });

  httpServer.on('upgrade', (req, socket, head) => {
    const refuse = (status: string, e?: M2vlaError) => {
      const body = e ? `${describeError(e)}\n` : '';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    };
    if (apiKey !== undefined && !sameKey(req.headers.authorization, apiKey)) return refuse('401 Unauthorized');
    if (!originAllowed(req)) return refuse('403 Forbidden', originError(req));
    if (closing) return refuse('503 Service Unavailable');
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
  });

  await new Promise<void>((resolve, reject) => {
    httpServer.once('error', reject);
    httpServer.listen(port, host, () => {
      httpServer.off('error', reject);
      resolve();
    });
  });
  const address = httpServer.address() as AddressInfo;

  async function shutdown(): Promise<void> {
    clearInterval(sweep);
    const stopped = new Promise<void>((resolve) => httpServer.close(() => resolve()));
    await batcher.drain();
    while (replies.size) await Promise.allSettled([...replies]);
    const sockets = [...wss.clients];
    for (const ws of sockets) ws.close(CLOSE_GOING_AWAY, 'server shutting down');
    httpServer.closeIdleConnections();
    // Wait for the clients' close frames and the last HTTP responses to flush, but not for ever.
    const deadline = setTimeout(() => {
      sockets.forEach((ws) => ws.terminate());
      httpServer.closeAllConnections();
    }, 2000);
    await Promise.all(sockets.map((ws) => ws.readyState === WebSocket.CLOSED ? undefined : new Promise((r) => ws.once('close', r))));
    await stopped;
    clearTimeout(deadline);
  }

  return {
    host: address.address, port: address.port,
    close: () => (closing ??= shutdown()),
  };
}

function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new PayloadTooLarge(`request body over ${limit} bytes (the server's frame limit)`);
    if (Number(req.headers['content-length']) > limit) return reject(tooLarge());
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (b: Buffer) => {
      size += b.length;
      if (size <= limit) parts.push(b);
      else {
        req.pause();
        reject(tooLarge());
      }
    });
    req.on('end', () => resolve(Buffer.concat(parts).toString('utf8')));
    req.on('error', reject);
  });
}
