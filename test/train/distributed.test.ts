// Data-parallel training on c10d (Gloo, loopback): 2 processes × batch 2 train as 1 process × batch 4, a checkpoint
// of the 2 processes resumes in 1, and a process that dies or hangs ends the other with a DistributedError within the
// timeout.
//
// Tolerance: the all-reduce averages two half-batch means where one process takes one mean of the whole batch (and
// the VLM runs batches of another size), so the gradients agree to float32 rounding (~1e-7 relative), not bit for
// bit. AdamW's update g / (|g| + eps) (first step) turns a gradient that is 0 on one side and 1e-10 on the other
// (an L1 output bias: a sum of ±1/N terms that cancel) into a difference of ~lr / 100 with torch's eps 1e-8, so the
// tests take eps 1e-6. Then, after 4 steps at lr 1e-3 (one step moves a weight by up to ~lr), the weights differ by
// ~1e-6 at most, asserted at 5e-3 × lr × steps = 2e-5 for every tensor (a wrong sample, draw or bank row moves
// weights by ~lr); losses and gradient norms per step at 1e-5 relative.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadStateDict, type CheckpointTensor } from '../../lib/checkpoint.js';
import { freePort } from '../../lib/cli/launch.js';
import { ConfigError, DistributedError } from '../../lib/errors.js';
import { getBinding } from '../../lib/native/binding.js';
import { train, type TrainOptions } from '../../lib/train.js';
import { freshOut, LIBERO, readMetrics, tinyRun } from '../helpers/train.js';

const TINY = await tinyRun();

const HERE = path.dirname(fileURLToPath(import.meta.url));
const RANK_SCRIPT = path.resolve(HERE, '../helpers/train-rank.ts');
const CLI_MAIN = path.resolve(HERE, '../../lib/cli/main.ts');
const available = getBinding().buildInfo().distributed;

const STEPS = 4, LR = 1e-3, ATOL = 5e-3 * LR * STEPS;
// 7 samples, a global batch of 4: one batch per epoch, so 4 steps cross 3 epoch boundaries. Seed 3 offers the bank
// 2 of the 4 batches (l1) and 3 (denoise): the coin flips must agree across the processes.
const options = (out: string, extra: Partial<TrainOptions> = {}): TrainOptions => ({
  data: LIBERO, init: TINY, out, steps: STEPS, batchSize: 4, lr: LR, eps: 1e-6, warmup: 1, threads: 1, seed: 3,
  memorySampleRate: 0.5, ...extra,
});

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
  const parts = await Promise.all(files.map((f) => loadStateDict(path.join(dir, `${f}.safetensors`), { dtype: 'float32' })));
  return Object.assign({}, ...parts);
}

function values(t: CheckpointTensor): number[] {
  const bytes = t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength);
  if (t.dtype === 'float32') return Array.from(new Float32Array(bytes));
  if (t.dtype === 'int64') return Array.from(new BigInt64Array(bytes), Number);
  throw new Error(`unexpected dtype ${t.dtype}`);
}

/** Every tensor of `a` matches `b`: the same names and shapes, max |a - b| <= atol. Returns the largest difference. */
function expectClose(a: Record<string, CheckpointTensor>, b: Record<string, CheckpointTensor>, atol: number): number {
  expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
  const diffs: Record<string, number> = {};
  for (const [name, tb] of Object.entries(b)) {
    const ta = a[name];
    expect(ta.shape, name).toEqual(tb.shape);
    const va = values(ta), vb = values(tb);
    diffs[name] = va.reduce((m, x, i) => Math.max(m, Math.abs(x - vb[i])), 0);
  }
  const worst = Math.max(...Object.values(diffs));
  expect(worst, JSON.stringify(diffs)).toBeLessThanOrEqual(atol);
  return worst;
}

describe.skipIf(available)('a build without gloo headers', () => {
  it('refuses data-parallel training with a ConfigError that says what to install', async () => {
    const distributed = { rank: 0, worldSize: 2, masterAddr: '127.0.0.1', masterPort: 29500 };
    const o = { ...options(freshOut(), { batchSize: 2 }), distributed };
    await expect(train(o)).rejects.toThrow(ConfigError);
    await expect(train(o)).rejects.toThrow(/apt-get install libgloo-dev\) and rebuild/);
  });
});

describe.skipIf(!available)('data-parallel training (c10d Gloo, 2 processes on loopback)', () => {
  it.each(['l1', 'denoise'] as const)('2 processes × batch 2 = 1 process × batch 4 (%s): weights, MSM bank, losses', async (objective) => {
    const single = freshOut(), parallel = freshOut();
    const straight = await train(options(single, { objective }));
    const exits = await Promise.all((await ranks(2, options(parallel, { objective, batchSize: 2 }))).map((c) => watch(c)));
    for (const e of exits) expect(e.code, e.output).toBe(0);

    const a = await checkpointTensors(straight.checkpoint);
    const b = await checkpointTensors(path.join(parallel, 'checkpoints', 'step-00000004'));
    // The bank received entries (the test would say nothing about the gather otherwise): the same ones on both sides.
    const initial = values((await loadStateDict(path.join(await tinyRun(), 'action_head.safetensors')))['memory_bank.size'])[0];
    expect(values(a['memory_bank.size'])[0]).toBeGreaterThan(initial);
    expect(values(b['memory_bank.size'])).toEqual(values(a['memory_bank.size']));
    const worst = expectClose(b, a, ATOL);
    console.log(`${objective}: largest weight difference ${worst.toExponential(2)}`);
    const ma = readMetrics(single), mb = readMetrics(parallel);
    expect(mb.map((m) => m.step)).toEqual(ma.map((m) => m.step));
    mb.forEach((m, i) => {
      expect(Math.abs(m.loss - ma[i].loss)).toBeLessThanOrEqual(1e-5 * Math.abs(ma[i].loss));
      expect(Math.abs(m.gradNorm - ma[i].gradNorm)).toBeLessThanOrEqual(1e-5 * Math.abs(ma[i].gradNorm));
    });
  });

  it('a checkpoint of 2 processes resumes in 1 process (the global batch kept)', async () => {
    const single = freshOut(), mixed = freshOut();
    await train(options(single));
    const exits = await Promise.all((await ranks(2, options(mixed, { batchSize: 2, steps: 2 }))).map((c) => watch(c)));
    for (const e of exits) expect(e.code, e.output).toBe(0);
    await expect(train(options(mixed, { resume: true, batchSize: 2 }))).rejects.toThrow(/batchSize was 4, now 2/);
    const resumed = await train(options(mixed, { resume: true }));
    expect(resumed.metrics.map((m) => m.step)).toEqual([3, 4]);
    expectClose(await checkpointTensors(resumed.checkpoint), await checkpointTensors(path.join(single, 'checkpoints', 'step-00000004')), ATOL);
  });

  it('a process whose peers never arrive fails the rendezvous after the timeout', async () => {
    const started = Date.now();
    const distributed = { rank: 0, worldSize: 2, masterAddr: '127.0.0.1', masterPort: await freePort(), timeoutMs: 1500 };
    const o = { ...options(freshOut(), { batchSize: 2 }), distributed };
    await expect(train(o)).rejects.toThrow(DistributedError);
    await expect(train(o)).rejects.toThrow(/rank 0 of 2: rendezvous at 127\.0\.0\.1:\d+ failed: not every process arrived within the 1\.5 s timeout/);
    expect(Date.now() - started).toBeLessThan(2 * 1500 + 5000);
  });

  it('a killed process ends the other with a DistributedError at once; a hung one within the timeout', async () => {
    const long = (out: string) => ({ ...options(out, { batchSize: 2, steps: 10_000, checkpointEvery: 10_000 }), timeoutMs: 4000 });
    // Both cases at once (4 processes), the limits leave room for a loaded machine.
    await Promise.all(([['SIGKILL', 3000], ['SIGSTOP', 4000 + 3000]] as const).map(async ([signal, limit]) => {
      const [rank0, rank1] = await ranks(2, long(freshOut()));
      const exit1 = watch(rank1);
      let sentAt = 0;
      const e = await watch(rank0, (text) => {
        if (!sentAt && /^step 3$/m.test(text)) {
          sentAt = Date.now();
          rank1.kill(signal);
        }
      });
      const after = Date.now() - sentAt;
      console.log(`${signal} of rank 1: rank 0 exited ${after} ms later`);
      if (signal === 'SIGSTOP') rank1.kill('SIGKILL');
      await exit1;
      expect(sentAt).toBeGreaterThan(0);
      expect(e.code, e.output).toBe(1);
      expect(e.output).toMatch(/DistributedError \[E_DISTRIBUTED\]: rank 0 of 2: .* failed: another process exited or did not take part within the 4 s timeout/);
      expect(after, `${signal}: rank 0 exited ${after} ms after it`).toBeLessThan(limit);
    }));
  });

  it('m2vla train --nproc 2: rank 0 reports; SIGINT stops both after the same step; a killed process stops the other', async () => {
    const out = freshOut();
    const cli = (steps: number, ...extra: string[]) => spawn(process.execPath, ['--import', 'tsx', '-e',
      `import(${JSON.stringify(CLI_MAIN)}).then((m) => m.main(process.argv.slice(1)))`, 'train', '--nproc', '2', '--data', LIBERO,
      '--init', TINY, '--out', out, '--steps', String(steps), '--batch', '2', '--lr', '1e-3', '--threads', '1',
      '--dist-timeout', '20', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });

    // SIGINT to the launcher: it passes it on, the processes agree on the step to stop after, rank 0 saves it.
    const first = cli(10_000);
    let interrupted = false;
    const stopped = await watch(first, (text) => {
      if (!interrupted && /^step 2\/10000/m.test(text)) {
        interrupted = true;
        first.kill('SIGINT');
      }
    });
    expect(stopped.code, stopped.output).toBe(130);
    const at = Number(/stopped at step (\d+)\/10000/.exec(stopped.output)?.[1]);
    expect(at).toBeGreaterThanOrEqual(2);
    const lines = stopped.output.match(/^step \d+\/10000 {2}loss/gm);  // rank 0 alone prints them
    expect(lines).toEqual(Array.from({ length: at }, (_, i) => `step ${i + 1}/10000  loss`));
    expect(readMetrics(out).map((m) => m.step)).toEqual(Array.from({ length: at }, (_, i) => i + 1));

    // Resume, then kill one process: the launcher stops the other and exits non-zero long before the 20 s timeout.
    let killedAt = 0;
    const e = await watch(cli(10_000, '--resume'), (text) => {
      const pids = /processes \(pids (\d+), (\d+)\)/.exec(text);
      if (!killedAt && pids && new RegExp(`^step ${at + 1}/10000`, 'm').test(text)) {
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
