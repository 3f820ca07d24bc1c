// A run stopped and resumed from its checkpoint repeats the uninterrupted run exactly: the same loss at every step
// (tolerance 0: same seed, one torch thread, and a checkpoint holds every bit of state — weights, AdamW moments and
// steps, the MSM bank, the generator, the loader position). Stopping through the CLI: SIGINT saves a checkpoint and
// exits 130; --resume continues.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../lib/errors.js';
import { train, type TrainOptions } from '../../lib/train.js';
import { freshOut, LIBERO, readMetrics, tinyRun } from '../helpers/train.js';

const TINY = await tinyRun();

const STEPS = 8;
const base = (out: string): TrainOptions => ({
  data: LIBERO, init: TINY, out, steps: STEPS, batchSize: 2, lr: 1e-3, warmup: 2, threads: 1, seed: 7,
  checkpointEvery: 3, memorySampleRate: 0.5,
});

describe('kill and resume', () => {
  it('gives the loss trajectory of an uninterrupted run', async () => {
    const straight = await train(base(freshOut()));
    expect(straight.metrics).toHaveLength(STEPS);  // 7 samples, 3 batches per epoch: crosses two epoch boundaries

    const out = freshOut(), stop = new AbortController();
    const first = await train({
      ...base(out), signal: stop.signal,
      onProgress: (e) => { if (e.kind === 'step' && e.step === 5) stop.abort(); },
    });
    expect(first).toMatchObject({ steps: 5, interrupted: true, runDir: undefined });
    expect(path.basename(first.checkpoint)).toBe('step-00000005');
    // Only the latest checkpoint is kept (step 3's was replaced).
    expect(fs.readdirSync(path.join(out, 'checkpoints')).sort()).toEqual(['latest', 'step-00000005']);
    await expect(train(base(out))).rejects.toThrow(ConfigError);  // no resume flag: refuses to overwrite
    await expect(train({ ...base(out), resume: true, batchSize: 3 })).rejects.toThrow(/batchSize was 2, now 3/);

    const second = await train({ ...base(out), resume: true });
    expect(second.metrics.map((m) => m.step)).toEqual([6, 7, 8]);
    const resumed = [...first.metrics, ...second.metrics];
    expect(resumed.map((m) => m.loss)).toEqual(straight.metrics.map((m) => m.loss));
    expect(resumed.map((m) => m.lr)).toEqual(straight.metrics.map((m) => m.lr));
    expect(readMetrics(out).map((m) => m.loss)).toEqual(straight.metrics.map((m) => m.loss));
    expect(second.runDir).toBe(out);
  });

  it('SIGINT through the CLI saves a checkpoint that --resume continues', async () => {
    const out = freshOut();
    const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../lib/cli/main.ts');
    const args = (steps: number, ...extra: string[]) => ['--import', 'tsx', '-e',
      `import(${JSON.stringify(main)}).then((m) => m.main(process.argv.slice(1)))`, 'train', '--data', LIBERO,
      '--init', TINY, '--out', out, '--steps', String(steps), '--batch', '2', '--lr', '1e-3', '--threads', '1', ...extra];
    const run = (argv: string[], interruptAfter?: number) => new Promise<{ code: number | null; stdout: string }>((resolve) => {
      const child = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '', stderr = '', sent = false;
      child.stdout.on('data', (d) => {
        stdout += d;
        if (interruptAfter !== undefined && !sent && new RegExp(`^step ${interruptAfter}/`, 'm').test(stdout)) {
          sent = true;
          child.kill('SIGINT');
        }
      });
      child.stderr.on('data', (d) => { stderr += d; });
      child.on('close', (code, signal) => resolve({ code, stdout: `${stdout}${stderr}${signal ?? ''}` }));
    });

    const stopped = await run(args(1000), 2);
    expect(stopped.code).toBe(130);
    const at = Number(/stopped at step (\d+)\/1000/.exec(stopped.stdout)?.[1]);
    expect(at).toBeGreaterThanOrEqual(2);
    const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoints', `step-${String(at).padStart(8, '0')}`,
      'trainer_state.json'), 'utf8'));
    expect(state.step).toBe(at);
    expect(readMetrics(out).map((m) => m.step)).toEqual(Array.from({ length: at }, (_, i) => i + 1));

    const resumed = await run(args(at + 2, '--resume'));
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(new RegExp(`step ${at + 2}/${at + 2}  loss`));
    expect(readMetrics(out).map((m) => m.step)).toEqual(Array.from({ length: at + 2 }, (_, i) => i + 1));
  });
});
