// Data-parallel training on c10d (Gloo, loopback): 2 processes × batch 2 train as 1 process × batch 4, a checkpoint
// of the 2 processes resumes in 1, and a process that dies or hangs ends the other with a DistributedError within the
// timeout. Tolerance of the comparisons: the averaged all-reduce sums the two halves' gradients in another order
// than one batch mean (and the VLM runs batches of another size), so values agree to float32 rounding, not bit for
// bit; measured max |a - b| / max|b| per tensor ~1e-7, asserted at 1e-5.
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadStateDict, type CheckpointTensor } from '../../lib/checkpoint.js';
import { getBinding } from '../../lib/native/binding.js';
import { train, type TrainOptions } from '../../lib/train.js';
import { freshOut, LIBERO, readMetrics, tinyRun } from '../helpers/train.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RANK_SCRIPT = path.resolve(HERE, '../helpers/train-rank.ts');
const CLI_MAIN = path.resolve(HERE, '../../lib/cli/main.ts');
const available = getBinding().buildInfo().distributed;

const STEPS = 4;
// 7 samples, a global batch of 4: one batch per epoch, so 4 steps cross 3 epoch boundaries.
const options = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  data: LIBERO, init: tinyRun(), out, steps: STEPS, batchSize: 4, lr: 1e-3, warmup: 1, threads: 1, seed: 7,
  memorySampleRate: 0.5, ...extra,
});

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

interface Exit { code: number | null; signal: NodeJS.Signals | null; output: string; ms: number }

function watch(child: ChildProcess, onOutput?: (text: string) => void): Promise<Exit> {
  const started = Date.now();
  let output = '';
  const add = (d: Buffer) => {
    output += d;
    onOutput?.(output);
  };
  child.stdout?.on('data', add);
  child.stderr?.on('data', add);
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, output, ms: Date.now() - started })));
}

/** `worldSize` processes of test/helpers/train-rank.ts on a free loopback port. */
async function ranks(worldSize: number, o: TrainOptions & { timeoutMs?: number }) {
  const port = await freePort();
  return Array.from({ length: worldSize }, (_, rank) => spawn(process.execPath, ['--import', 'tsx', RANK_SCRIPT, JSON.stringify(o)], {
    env: { ...process.env, RANK: String(rank), WORLD_SIZE: String(worldSize), MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe'],
  }));
}

async function checkpointTensors(dir: string): Promise<Record<string, CheckpointTensor>> {
  const files = ['action_head', 'proprio_projector', 'action_queries'];
  const parts = await Promise.all(files.map((f) => loadStateDict(path.join(dir, `${f}.safetensors`))));
  return Object.assign({}, ...parts);
}

function values(t: CheckpointTensor): number[] {
  const bytes = t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength);
  if (t.dtype === 'float32') return Array.from(new Float32Array(bytes));
  if (t.dtype === 'int64') return Array.from(new BigInt64Array(bytes), Number);
  throw new Error(`unexpected dtype ${t.dtype}`);
}

/** Every tensor of `a` matches `b`: the same names and shapes, max |a - b| <= tol × max |b|. */
function expectClose(a: Record<string, CheckpointTensor>, b: Record<string, CheckpointTensor>, tol: number): number {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  let worst = 0;
  for (const [name, tb] of Object.entries(b)) {
    const ta = a[name];
    expect(ta.shape, name).toEqual(tb.shape);
    const va = values(ta), vb = values(tb);
    const scale = Math.max(1e-12, ...vb.map(Math.abs));
    const diff = va.reduce((m, x, i) => Math.max(m, Math.abs(x - vb[i])), 0) / scale;
    worst = Math.max(worst, diff);
    expect(diff, name).toBeLessThanOrEqual(tol);
  }
  return worst;
}

describe.skipIf(!available)('data-parallel training (c10d Gloo, 2 processes on loopback)', () => {
  it.each(['l1', 'denoise'] as const)('2 processes × batch 2 = 1 process × batch 4 (%s): weights, MSM bank, losses', async (objective) => {
    const single = freshOut(), parallel = freshOut();
    const straight = await train(options(single, { objective }));
    const exits = await Promise.all((await ranks(2, options(parallel, { objective, batchSize: 2 }))).map((c) => watch(c)));
    for (const e of exits) expect(e.code, e.output).toBe(0);

    const a = await checkpointTensors(straight.checkpoint);
    const b = await checkpointTensors(path.join(parallel, 'checkpoints', 'step-00000004'));
    // The bank received entries (the test would say nothing about the gather otherwise): the same ones on both sides.
    expect(values(a['memory_bank.size'])[0]).toBeGreaterThan(0);
    expect(values(b['memory_bank.size'])).toEqual(values(a['memory_bank.size']));
    const worst = expectClose(b, a, 1e-5);
    console.log(`${objective}: max relative difference ${worst.toExponential(2)}`);
    const la = readMetrics(single).map((m) => m.loss), lb = readMetrics(parallel).map((m) => m.loss);
    expect(lb).toHaveLength(STEPS);
    lb.forEach((l, i) => expect(Math.abs(l - la[i])).toBeLessThanOrEqual(1e-5 * Math.abs(la[i])));
  });

  it('a checkpoint of 2 processes resumes in 1 process (the global batch kept)', async () => {
    const single = freshOut(), mixed = freshOut();
    await train(options(single));
    const exits = await Promise.all((await ranks(2, options(mixed, { batchSize: 2, steps: 2 }))).map((c) => watch(c)));
    for (const e of exits) expect(e.code, e.output).toBe(0);
    await expect(train(options(mixed, { resume: true, batchSize: 2 }))).rejects.toThrow(/batchSize was 4, now 2/);
    const resumed = await train(options(mixed, { resume: true }));
    expect(resumed.metrics.map((m) => m.step)).toEqual([3, 4]);
    expectClose(await checkpointTensors(resumed.checkpoint), await checkpointTensors(path.join(single, 'checkpoints', 'step-00000004')), 1e-5);
  });

  it('a killed process ends the other with a DistributedError at once; a hung one within the timeout', async () => {
    const long = (out: string) => ({ ...options(out, { batchSize: 2, steps: 10_000, checkpointEvery: 10_000 }), timeoutMs: 4000 });
    for (const [signal, limit] of [['SIGKILL', 4000], ['SIGSTOP', 4000 + 3000]] as const) {
      const [rank0, rank1] = await ranks(2, long(freshOut()));
      const exit1 = watch(rank1);
      let sent = false;
      const exit0 = watch(rank0, (text) => {
        if (!sent && /^step 3$/m.test(text)) {
          sent = true;
          rank1.kill(signal);
        }
      });
      const sentAt = await new Promise<number>((resolve) => {
        const timer = setInterval(() => { if (sent) { clearInterval(timer); resolve(Date.now()); } }, 5);
      });
      const e = await exit0;
      if (signal === 'SIGSTOP') rank1.kill('SIGKILL');
      await exit1;
      expect(e.code, e.output).toBe(1);
      expect(e.output).toMatch(/DistributedError \[E_DISTRIBUTED\]: rank 0 of 2: .* failed: another process exited or did not take part within the 4 s timeout/);
      expect(Date.now() - sentAt, `${signal}: rank 0 exited ${Date.now() - sentAt} ms after it`).toBeLessThan(limit);
    }
  });

  it('m2vla train --nproc 2: rank 0 reports, a failing process stops the others', async () => {
    const cli = (out: string, steps: number) => spawn(process.execPath, ['--import', 'tsx', '-e',
      `import(${JSON.stringify(CLI_MAIN)}).then((m) => m.main(process.argv.slice(1)))`, 'train', '--nproc', '2', '--data', LIBERO,
      '--init', tinyRun(), '--out', out, '--steps', String(steps), '--batch', '2', '--lr', '1e-3', '--threads', '1',
      '--dist-timeout', '20'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const out = freshOut();
    const done = await watch(cli(out, 2));
    expect(done.code, done.output).toBe(0);
    expect(done.output.match(/^step \d\/2 {2}loss/gm)).toEqual(['step 1/2  loss', 'step 2/2  loss']);  // rank 0 only
    expect(readMetrics(out).map((m) => m.step)).toEqual([1, 2]);

    // Kill one worker: the launcher stops the other and exits non-zero, long before the 20 s timeout.
    let killedAt = 0;
    const e = await watch(cli(freshOut(), 10_000), (text) => {
      const pids = /processes \(pids (\d+), (\d+)\)/.exec(text);
      if (!killedAt && pids && /^step 2\/10000/m.test(text)) {
        killedAt = Date.now();
        process.kill(Number(pids[2]), 'SIGKILL');
      }
    });
    expect(killedAt).toBeGreaterThan(0);
    expect(e.code, e.output).not.toBe(0);
    expect(e.output).toMatch(/rank 1 exited with SIGKILL; stopping the other processes/);
    expect(Date.now() - killedAt).toBeLessThan(10_000);
  });
});
