/**
 * Policy server under load: C websocket clients (openpi protocol, LIBERO-sized observations: two 224x224 images) each
 * sending R requests back to back, with and without dynamic batching. Throughput and per-request latency (send →
 * reply) on loopback; the clients share the process (their frames are encoded beforehand, so they cost little).
 * Each setting runs `rounds` times, interleaved (shared machines drift); the round with the median throughput counts.
 *   npm run bench -- server [--run <dir> (default: the demo model)] [--clients 32] [--requests 20] [--rounds 3] [--threads N]
 */
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { demoRunDir, loadPolicy, NdArray, packOpenpi, unpackOpenpi } from '../lib/index.js';
import { createServer, type ServerOptions } from '../lib/server/server.js';
import { fmt, stats, writeResults, type LatencyStats } from './harness.js';

// Not strict: the dispatcher passes every suite's flags (--dtypes, --no-eager, ...).
const { values } = parseArgs({
  strict: false,
  options: {
    run: { type: 'string' }, clients: { type: 'string', default: '32' }, requests: { type: 'string', default: '20' },
    rounds: { type: 'string', default: '3' }, threads: { type: 'string' },
  },
});
const runDir = typeof values.run === 'string' ? values.run : await demoRunDir();
const [clients, requests, rounds] = [values.clients, values.requests, values.rounds].map(Number);

await using policy = await loadPolicy(runDir, { threads: values.threads ? Number(values.threads) : undefined });
const { proprioDim } = policy.metadata;

function frame(seed: number): Buffer {
  const image = (offset: number) => {
    const data = new Uint8Array(224 * 224 * 3);
    for (let i = 0; i < data.length; i++) data[i] = (i * (seed + 1) + offset) % 256;
    return NdArray.uint8(data, [224, 224, 3]);
  };
  return packOpenpi({
    'observation/image': image(0), 'observation/wrist_image': image(101),
    'observation/state': NdArray.float64(Float64Array.from({ length: proprioDim }, (_, i) => 0.01 * seed - 0.05 * i)),
    prompt: 'put the black bowl on the plate',
  });
}
const frames = Array.from({ length: clients }, (_, c) => frame(c));

interface Result { name: string; maxBatch: number; maxWaitMs: number; clients: number; requests: number;
  throughput: number; latency: LatencyStats; meanBatch: number }

async function run(name: string, options: ServerOptions, nClients = clients, nRequests = requests): Promise<Result> {
  const server = await createServer(policy, { port: 0, maxQueue: 1024, ...options });
  const url = `ws://127.0.0.1:${server.port}`;
  const latencies: number[] = [], batches: number[] = [];
  const client = async (c: number, n: number) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    const replies: Buffer[] = [];
    let wake: (() => void) | undefined;
    ws.on('message', (data: Buffer) => { replies.push(data); wake?.(); });
    const next = async () => {
      while (!replies.length) await new Promise<void>((r) => { wake = r; });
      return replies.shift()!;
    };
    await new Promise((r) => ws.once('open', r));
    await next(); // metadata
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      ws.send(frames[c]);
      const reply = unpackOpenpi(await next()) as { server_timing: { batch_size: number } };
      latencies.push(performance.now() - t0);
      batches.push(reply.server_timing.batch_size);
    }
    ws.close();
  };
  await Promise.all(Array.from({ length: nClients }, (_, c) => client(c, 2))); // warm-up
  latencies.length = batches.length = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: nClients }, (_, c) => client(c, nRequests)));
  const seconds = (performance.now() - t0) / 1000;
  await server.close();
  return {
    name, maxBatch: options.maxBatch ?? 8, maxWaitMs: options.maxWaitMs ?? 0, clients: nClients, requests: nClients * nRequests,
    throughput: (nClients * nRequests) / seconds, latency: stats(latencies), meanBatch: batches.reduce((a, b) => a + b, 0) / batches.length,
  };
}

const settings: Array<[string, ServerOptions, number?, number?]> = [
  ['1 client, no batching', { maxBatch: 1 }, 1, 50],
  [`${clients} clients, no batching`, { maxBatch: 1 }],
  [`${clients} clients, batch <= 8`, { maxBatch: 8 }],
  [`${clients} clients, batch <= 32`, { maxBatch: 32 }],
  [`${clients} clients, batch <= 32, wait 5 ms`, { maxBatch: 32, maxWaitMs: 5 }],
];
const runs: Result[][] = settings.map(() => []);
for (let round = 0; round < rounds; round++) {
  for (const [i, [name, options, c, r]] of settings.entries()) runs[i].push(await run(name, options, c, r));
}
const results = runs.map((rs) => [...rs].sort((a, b) => a.throughput - b.throughput)[rs.length >> 1]);

console.log(`policy server, ${values.run ?? 'demo model'}, LIBERO-sized observations (2 x 224x224 images), ` +
  `median of ${rounds} rounds`);
console.log('| setting | requests | throughput (req/s) | p50 | p95 | mean batch |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
for (const r of results) {
  console.log(`| ${r.name} | ${r.requests} | ${r.throughput.toFixed(1)} | ${fmt(r.latency.p50)} | ${fmt(r.latency.p95)} | ${r.meanBatch.toFixed(1)} |`);
}
console.log(`wrote ${await writeResults('server', { runDir: values.run ?? 'demo', rounds, results })}`);
