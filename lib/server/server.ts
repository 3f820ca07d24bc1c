/**
 * The policy server: openpi's websocket protocol (any path) and VLA-Adapter's `POST /act` on one port, plus
 * `GET /healthz`. Requests from all clients go through one Batcher; replies keep each connection's request order.
 *
 * openpi protocol: on connect the server sends one binary msgpack frame with the policy metadata; then each binary
 * msgpack observation gets a binary msgpack result `{actions, policy_timing, server_timing}`. An error is sent as a
 * text frame and the connection (only that one) is closed with 1011 (1013 when the queue is full).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { BusyError, InputError, M2vlaError } from '../errors.js';
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
  /** Where connection errors are reported (default: nowhere). */
  log?: (line: string) => void;
}

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
    host: true, port: true, keys: true, apiKey: true, maxBatch: true, maxWaitMs: true, maxQueue: true, maxFrameBytes: true, log: true,
  }), 'createServer');
  const { host = '127.0.0.1', port = 8000, apiKey, maxFrameBytes = 16 << 20, log = () => {} } = options;
  const readObservation = observationReader(resolveKeys(options.keys ?? 'libero'), policy.metadata);
  const readAct = observationReader(PRESETS['vla-adapter'], policy.metadata);
  const batcher = new Batcher(policy, {
    maxBatch: options.maxBatch ?? 8, maxWaitMs: options.maxWaitMs ?? 0, maxQueue: options.maxQueue ?? 64,
  });
  const metadataFrame = packOpenpi(policy.metadata);
  // Replies not yet sent, awaited by close().
  const replies = new Set<Promise<unknown>>();
  let closing: Promise<void> | undefined;

  const track = (p: Promise<unknown>) => {
    replies.add(p);
    void p.finally(() => replies.delete(p));
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

  wss.on('connection', (ws: OpenpiSocket) => {
    ws.maxBytes = maxFrameBytes;
    ws.on('error', (e) => log(`websocket error: ${e.message}`));
    const gone = new AbortController();
    ws.on('close', () => gone.abort(new InputError('client disconnected')));
    ws.send(metadataFrame);
    let tail: Promise<void> = Promise.resolve();
    let prevTotalMs: number | undefined;

    ws.on('message', (data: RawData, isBinary: boolean) => {
      const received = performance.now();
      if (ws.readyState !== WebSocket.OPEN) return;
      if (closing) {
        // After the replies to what came before.
        tail = tail.then(() => fail(ws, new ShuttingDown('server is shutting down')));
        return;
      }
      let reply: Promise<BatchResult>;
      try {
        if (!isBinary) throw new InputError('expected a binary msgpack frame, got a text frame');
        // ws's default binaryType: one Buffer per message.
        reply = batcher.submit(readObservation(unpackOpenpi(data as Buffer)), gone.signal);
        // Handled in turn below; until then a rejection must not count as unhandled.
        reply.catch(() => {});
      } catch (e) {
        fail(ws, e);
        return;
      }
      // Chained: replies leave in the order the requests came in, even when a client pipelines them.
      tail = tail.then(() => reply).then((r) => {
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
      }, (e) => fail(ws, e));
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
    if (apiKey !== undefined && !sameKey(req.headers.authorization, apiKey)) return send(401, 'invalid or missing API key\n');
    if (closing) return send(503, 'server shutting down\n');
    track(postAct(req).then(
      (body) => send(200, body, 'application/json'),
      (e) => {
        const status = e instanceof BusyError ? 503 : e instanceof PayloadTooLarge ? 413 : e instanceof M2vlaError ? 400 : 500;
        if (status >= 500 && !(e instanceof BusyError)) log(`POST /act failed: ${describeError(e)}`);
        // An oversized body was left unread: close the connection rather than read the rest.
        if (status === 413) res.once('finish', () => req.socket.destroy());
        send(status, JSON.stringify({ error: describeError(e) }) + '\n', 'application/json',
          status === 503 ? { 'retry-after': '1' } : status === 413 ? { connection: 'close' } : {});
      }));
  });

  /** VLA-Adapter's deploy.py: `{instruction, full_image, wrist_image, state}` or `{encoded: "<that as JSON>"}`. */
  async function postAct(req: http.IncomingMessage): Promise<string> {
    let payload = parseJsonNumpy(await readBody(req, maxFrameBytes));
    const encoded = !!payload && typeof payload === 'object' && 'encoded' in payload;
    if (encoded) {
      const inner = (payload as { encoded: unknown }).encoded;
      if (typeof inner !== 'string') throw new InputError('encoded: expected a JSON string');
      payload = parseJsonNumpy(inner);
    }
    const r = await batcher.submit(readAct(payload));
    // As deploy.py returns it: a list with one float64 array per step; JSON text inside a JSON string when `encoded`.
    const [chunk, dim] = r.actions.shape, data = Float64Array.from(r.actions.data);
    const steps = Array.from({ length: chunk }, (_, i) => toJsonNumpy(NdArray.float64(data.slice(i * dim, (i + 1) * dim))));
    return encoded ? JSON.stringify(JSON.stringify(steps)) : JSON.stringify(steps);
  }

  httpServer.on('upgrade', (req, socket, head) => {
    const refuse = (status: string) => {
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    };
    if (apiKey !== undefined && !sameKey(req.headers.authorization, apiKey)) return refuse('401 Unauthorized');
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
