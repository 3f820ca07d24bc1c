/**
 * The closed loop a robot runs: PolicyRunner at 20 Hz re-planning every 4 actions, overlapped inference, driving the
 * full-size model (random weights) on a stream of changing synthetic observations for 60 s per dtype, each dtype in
 * its own process (its peak RSS is its own). Per row: stale ticks (no planned action), late ticks (the loop itself
 * ran behind), chunks, late and dropped chunks, act() p50/p99, and the delay from the observation a chunk was inferred
 * from to each of its executed actions (p50/p99).
 *   npm run bench -- realtime [--dtypes bfloat16,int8] [--seconds 60] [--hz 20] [--replan 4] [--threads 2]
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadPolicy, PolicyRunner, type RunnerEvent } from '../lib/index.js';
import { fmt, fullsizeRun, printTable, stats, writeResults } from './harness.js';

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : fallback; };
const seconds = Number(flag('seconds', '60')), hz = Number(flag('hz', '20')), replan = Number(flag('replan', '4'));
const threads = Number(flag('threads', '2'));

async function child(dtype: 'bfloat16' | 'int8' | 'float32') {
  const policy = await loadPolicy(await fullsizeRun(), { dtype, threads });
  const latencies: number[] = [];
  const onEvent = (e: RunnerEvent) => { if (e.type === 'chunk' || e.type === 'dropped-chunk') latencies.push(e.latencyMs); };
  const runner = new PolicyRunner(policy, { hz, replanSteps: replan, onEvent });
  const image = (seed: number) => ({ data: Uint8Array.from({ length: 224 * 224 * 3 }, (_, i) => (i * seed + (i >> 9)) % 256), width: 224, height: 224 });
  const frames = [image(7), image(11), image(13), image(17)];
  const period = 1000 / hz, tickAt: number[] = [], delays: number[] = [];
  const observe = (t: number) => ({ images: { primary: frames[t % 4], wrist: frames[(t + 1) % 4] },
    inputIds: Array.from({ length: 50 }, (_, i) => 3 + ((i * 7919 + t) % 151900)), state: Array.from({ length: 8 }, (_, i) => Math.sin(i + t / 10) * 0.3) });
  await policy.act(observe(0));  // warm-up, outside the loop
  let start = performance.now(), t = 0;
  while (performance.now() - start < seconds * 1000) {
    tickAt[t] = performance.now();
    const step = await runner.tick(observe(t));
    if (t === 0) start = performance.now();  // the first tick waits for the first chunk: the fixed-rate clock starts after it
    // The action of tick t came from the observation given at tick t - index (the chunk's first tick).
    if (!step.stale && t > 0) delays.push(performance.now() - tickAt[t - step.index]);
    t++;
    const wait = start + t * period - performance.now();  // a fixed-rate schedule: lateness does not accumulate
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  const s = runner.stats();
  policy.dispose();
  const act = stats(latencies.slice(1)), delay = stats(delays);  // the first chunk was awaited: not the loop's
  console.log(JSON.stringify({
    dtype, ticks: s.ticks, hz: s.hz, staleTicks: s.staleTicks, lateTicks: s.lateTicks, chunks: s.chunks, lateChunks: s.lateChunks,
    droppedChunks: s.droppedChunks, act, delay, peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
  }));
}

if (argv.includes('--child')) {
  await child(flag('dtype', 'bfloat16') as 'bfloat16');
} else {
  const rows = [];
  const ms = (v: number | null) => (v == null ? '-' : fmt(v));  // NaN (no samples) comes back as null
  for (const dtype of flag('dtypes', 'bfloat16,int8').split(',')) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--dtype', dtype, ...argv],
      { encoding: 'utf8', maxBuffer: 1 << 26, stdio: ['ignore', 'pipe', 'inherit'] });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) throw new Error(`realtime ${dtype}: child failed (${r.status})`);
    rows.push(JSON.parse(line));
  }
  printTable(`PolicyRunner at ${hz} Hz, re-plan every ${replan} actions, ${seconds} s per dtype, full-size model, ${threads} threads`,
    rows.map((r) => ({
      dtype: r.dtype, ticks: r.ticks, 'achieved Hz': +r.hz.toFixed(2), 'stale ticks': r.staleTicks, 'late ticks': r.lateTicks,
      chunks: r.chunks, 'late chunks': r.lateChunks, dropped: r.droppedChunks, 'act p50': ms(r.act.p50), 'act p99': ms(r.act.p99),
      'obs→action p50': ms(r.delay.p50), 'obs→action p99': ms(r.delay.p99), 'peak MiB': r.peakRssMiB,
    })));
  console.log(`results: ${await writeResults('realtime', { hz, replanSteps: replan, seconds, threads, rows })}`);
}
