/**
 * Soak: `m2vla serve` (the demo model, or --run) as its own process on loopback, sent 10,000 openpi requests by 4
 * websocket clients, cycling the image encodings: raw uint8 arrays, PNG bytes, JPEG bytes (two 224x224 cameras
 * each). The server's RSS (/proc/<pid>/status) is read at the start (after 100 warm-up requests), every 1,000
 * requests and at the end: flat means no per-request leak (the sharp toUint8Array path grew it ~300 MiB per 1,000
 * PNG requests). Then 30 connections each stall with 14 MiB of a 16 MiB frame: RSS while they are held, and after the
 * frame timeout (2 s here) cut them.
 *   npm run bench -- soak [--run <dir>] [--requests 10000] [--clients 4]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { WebSocket } from 'ws';
import { NdArray, packOpenpi } from '../lib/index.js';
import { printTable, REPO_ROOT, writeResults } from './harness.js';

const { values } = parseArgs({
  strict: false,
  options: { run: { type: 'string' }, requests: { type: 'string', default: '10000' }, clients: { type: 'string', default: '4' } },
});
const total = Number(values.requests), clients = Number(values.clients);
const WARMUP = 100, EVERY = 1000, FRAME_TIMEOUT_S = 2;

const server = spawn(process.execPath, ['--import', 'tsx', '-e', "import('./lib/cli/main.ts').then((m) => m.main(process.argv.slice(1)))",
  'serve', '--port', '0', '--quiet', '--frame-timeout-s', String(FRAME_TIMEOUT_S), '--max-frame-mb', '16',
  ...(typeof values.run === 'string' ? ['--run', values.run] : [])], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
const port = await new Promise<number>((resolve, reject) => {
  let out = '';
  server.stdout!.on('data', (b) => {
    out += b;
    const m = /on ws:\/\/127\.0\.0\.1:(\d+)/.exec(out);
    if (m) resolve(Number(m[1]));
  });
  server.once('exit', () => reject(new Error(`server exited:\n${out}`)));
});
const rssMiB = () => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${server.pid}/status`, 'utf8'))![1]) / 1024;

// Three encodings of the same two cameras.
const pixels = (offset: number) => Buffer.alloc(224 * 224 * 3).map((_, i) => (i * 7 + offset) % 251);
const raw = { raw: { width: 224, height: 224, channels: 3 as const } };
const cams = [pixels(0), pixels(101)];
const encodings = {
  raw: cams.map((p) => NdArray.uint8(p, [224, 224, 3])),
  png: await Promise.all(cams.map((p) => sharp(p, raw).png().toBuffer())),
  jpeg: await Promise.all(cams.map((p) => sharp(p, raw).jpeg({ quality: 90 }).toBuffer())),
};
const kinds = Object.keys(encodings) as Array<keyof typeof encodings>;
const frames = kinds.map((k) => packOpenpi({
  'observation/image': encodings[k][0], 'observation/wrist_image': encodings[k][1],
  'observation/state': NdArray.float64(new Float64Array(8).fill(0.1)), prompt: 'put the black bowl on the plate',
}));

let sent = 0, done = 0, failed = 0;
const samples: Array<{ requests: number; rssMiB: number }> = [];
async function client(): Promise<void> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}`, { perMessageDeflate: false });
  const replies: Array<(ok: boolean) => void> = [];
  let first = true;
  ws.on('message', (_data, binary) => {
    if (first) { first = false; return; }  // the metadata frame
    replies.shift()?.(binary);
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  while (sent < WARMUP + total) {
    const i = sent++;
    const ok = await new Promise<boolean>((resolve) => { replies.push(resolve); ws.send(frames[i % frames.length]); });
    if (!ok) failed++;
    done++;
    if (done === WARMUP) samples.push({ requests: 0, rssMiB: rssMiB() });
    else if (done > WARMUP && (done - WARMUP) % EVERY === 0) samples.push({ requests: done - WARMUP, rssMiB: rssMiB() });
  }
  ws.close();
}
const t0 = performance.now();
await Promise.all(Array.from({ length: clients }, client));
const seconds = (performance.now() - t0) / 1000;
if (samples.at(-1)!.requests !== total) samples.push({ requests: total, rssMiB: rssMiB() });
console.log(`${total} requests in ${seconds.toFixed(1)} s; stalling 30 connections...`);

// Stalled frames: 30 connections, each 14 MiB into a 16 MiB frame, then silent.
const stalled = await Promise.all(Array.from({ length: 30 }, () => new Promise<net.Socket>((resolve) => {
  const s = net.connect(port, '127.0.0.1', () => {
    s.write('GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    s.write(Buffer.concat([Buffer.from([0x82, 0xff, 0, 0, 0, 0, 0, 0xff, 0xff, 0xf0, 1, 2, 3, 4]), Buffer.alloc(14 << 20)]), () => resolve(s));
  });
  s.on('error', () => {});
  s.resume();  // read, or the server's close is never seen
})));
await new Promise((r) => setTimeout(r, 500));
const heldMiB = rssMiB();
const stallStart = performance.now();
await Promise.all(stalled.map((s) => new Promise((r) => (s.destroyed ? r(null) : s.once('close', r)))));
const closedAfterS = (performance.now() - stallStart) / 1000 + 0.5;
await new Promise((r) => setTimeout(r, 1000));
const afterStallMiB = rssMiB();
server.stdout!.resume();
server.kill('SIGTERM');
await new Promise((r) => server.once('exit', r));

const start = samples[0].rssMiB, end = samples.at(-1)!.rssMiB, peak = Math.max(...samples.map((s) => s.rssMiB));
printTable(`soak: ${total} requests (raw / PNG / JPEG in turn), ${clients} clients, ${(total / seconds).toFixed(0)} req/s, ` +
  `${failed} failed`, samples.map((s) => ({ requests: s.requests, 'server RSS MiB': s.rssMiB.toFixed(1) })));
console.log(`RSS start ${start.toFixed(1)} MiB, end ${end.toFixed(1)} MiB (growth ${(end - start).toFixed(1)} MiB, peak ${peak.toFixed(1)})`);
console.log(`30 stalled 14 MiB frames: all 30 closed by the server ${closedAfterS.toFixed(1)} s after they were sent ` +
  `(frame timeout ${FRAME_TIMEOUT_S} s); server RSS ${heldMiB.toFixed(1)} MiB while held, ${afterStallMiB.toFixed(1)} MiB 1 s ` +
  'later (freed buffers stay in the allocator until reused)');
const file = await writeResults('soak', {
  requests: total, clients, seconds, failed, encodings: kinds, samples,
  growthMiB: end - start, stalledFrames: { connections: 30, bytesEach: 14 << 20, frameTimeoutS: FRAME_TIMEOUT_S, allClosedAfterS: closedAfterS, heldMiB, afterTimeoutMiB: afterStallMiB },
  cpuFlags: (/^flags\s*:\s*(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').split(' ')
    .filter((f) => /^(avx|amx|fma|sse4)/.test(f)),
});
console.log(`wrote ${file}`);
if (failed > 0) process.exitCode = 1;
