/**
 * Data-parallel training on this machine: steps/s of one process with the global batch (all cores, and one thread)
 * against N processes with a share of it each (c10d Gloo on loopback, one thread per process by default), and the
 * share of a step spent in collectives (the gradient all-reduce, the MSM bank all-gather, the batch-size check and the
 * loss/stop agreement). A collective also waits for the slower process; the process that arrives last waits least,
 * so the smallest share over the processes is the one reported (the transfer and its synchronization). Models: the
 * demo-size one, and with `--wide` the full-size head (181 M trainable values: 724 MB of gradients to average per
 * step) on the full-size LLM's 24 layers with the demo's vision towers and 56 px images (the full-size VLM, ~12 GiB
 * per training process, does not fit twice on the 24 GiB VM). The LIBERO fixture feeds it.
 *   npm run bench -- train-ddp [--iters N (timed steps, default 20; --wide 3)] [--batch B (global, default 4)]
 *                              [--nproc N (default 2)] [--wide]
 * Results: bench/results/train-ddp.json.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort } from '../lib/cli/launch.js';
import { DEMO_DIMS, ensureRandomRun, FULL_SIZE_DIMS, TINY_TOKENIZER_DIR, type RandomRunDims } from '../lib/random-run.js';
import { Trainer, distributedFromEnv } from '../lib/train.js';
import { REPO_ROOT, writeResults } from './harness.js';

const LIBERO = path.join(REPO_ROOT, 'test', 'fixtures', 'data', 'libero_tiny_no_noops');

/** The full-size head and LLM depth/width (the demo tokenizer's vocabulary), the demo's vision towers and images. */
const WIDE_DIMS: RandomRunDims = {
  ...DEMO_DIMS, llm: { ...FULL_SIZE_DIMS.llm, vocab: DEMO_DIMS.llm.vocab }, numActionQueries: FULL_SIZE_DIMS.numActionQueries,
  head: FULL_SIZE_DIMS.head,
};

interface Config { name: string; init: string; nproc: number; batch: number; threads: number; steps: number }
interface RankResult { parameters: number; msPerStep: number; collectiveMsPerStep: number }

/** Child (one process of a configuration): load, one warmup step, then `steps` timed ones. */
async function child(c: Config): Promise<RankResult> {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-bench-ddp-'));
  try {
    await using trainer = await Trainer.create({ data: LIBERO, init: c.init, out, steps: c.steps + 1, batchSize: c.batch / c.nproc,
      lr: 1e-4, threads: c.threads, distributed: distributedFromEnv() });
    await trainer.step();
    let ms = 0, collective = 0;
    for (let i = 0; i < c.steps; i++) {
      const m = await trainer.step();
      ms += m.ms;
      collective += m.collectiveMs ?? 0;
    }
    return { parameters: trainer.dims.parameters, msPerStep: ms / c.steps, collectiveMsPerStep: collective / c.steps };
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

/** Runs a configuration's processes together; the slowest rank's step time is the configuration's. */
async function run(c: Config): Promise<RankResult[]> {
  const port = String(await freePort()), self = fileURLToPath(import.meta.url);
  return Promise.all(Array.from({ length: c.nproc }, (_, rank) => new Promise<RankResult>((resolve, reject) => {
    const env = c.nproc > 1 ? { RANK: String(rank), WORLD_SIZE: String(c.nproc), MASTER_ADDR: '127.0.0.1', MASTER_PORT: port } : {};
    const p = spawn(process.execPath, ['--import', 'tsx', self, '--child', JSON.stringify(c)], { env: { ...process.env, ...env } });
    let stdout = '', stderr = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => { stderr += d; });
    p.on('close', (code) => {
      const line = stdout.trim().split('\n').pop() ?? '';
      if (code === 0 && line.startsWith('{')) resolve(JSON.parse(line));
      else reject(new Error(`${c.name} rank ${rank}: ${stderr.trim().split('\n').slice(-5).join('\n')}`));
    });
  })));
}

if (process.argv[2] === '--child') {
  console.log(JSON.stringify(await child(JSON.parse(process.argv[3]) as Config)));
} else {
  const { values: v } = parseArgs({ strict: false, options: {
    iters: { type: 'string' }, batch: { type: 'string', default: '4' }, nproc: { type: 'string', default: '2' },
    wide: { type: 'boolean', default: false },
  } });
  const batch = Number(v.batch), nproc = Number(v.nproc), cores = os.availableParallelism();
  const randomRun = (name: string, dims: RandomRunDims) =>
    ensureRandomRun(path.join(os.tmpdir(), `m2vla-${name}-train`), dims, { tokenizerDir: TINY_TOKENIZER_DIR });
  const models = [{ name: 'demo', init: await randomRun('demo', DEMO_DIMS), steps: Number(v.iters ?? 20) }];
  if (v.wide) models.push({ name: 'wide', init: await randomRun('wide', WIDE_DIMS), steps: Number(v.iters ?? 3) });
  const results = [];
  for (const m of models) {
    const configs: Config[] = [
      { name: m.name, init: m.init, nproc: 1, batch, threads: cores, steps: m.steps },
      { name: m.name, init: m.init, nproc: 1, batch, threads: 1, steps: m.steps },
      { name: m.name, init: m.init, nproc, batch, threads: Math.max(1, Math.floor(cores / nproc)), steps: m.steps },
    ];
    for (const c of configs) {
      const ranks = await run(c);
      const ms = Math.max(...ranks.map((r) => r.msPerStep));
      const least = ranks.reduce((a, b) => (b.collectiveMsPerStep / b.msPerStep < a.collectiveMsPerStep / a.msPerStep ? b : a));
      const collective = least.collectiveMsPerStep;
      const r = { ...c, parameters: ranks[0].parameters, msPerStep: ms, stepsPerSecond: 1000 / ms, samplesPerSecond: (1000 * batch) / ms,
        collectiveMsPerStep: collective, collectiveShare: collective / least.msPerStep, ranks };
      results.push(r);
      console.log(`${c.name.padEnd(10)} ${c.nproc} process(es) x ${c.batch / c.nproc} samples, ${c.threads} thread(s) each: ` +
        `${ms.toFixed(0).padStart(7)} ms/step (${r.stepsPerSecond.toFixed(3)} steps/s, ${r.samplesPerSecond.toFixed(2)} samples/s)` +
        (c.nproc > 1 ? `; collectives ${collective.toFixed(1)} ms/step = ${(100 * r.collectiveShare).toFixed(1)}% of a step ` +
          `(per rank: ${ranks.map((x) => `${x.collectiveMsPerStep.toFixed(1)} ms`).join(', ')})` : ''));
    }
  }
  console.log(`results: ${await writeResults('train-ddp', { batch, nproc, results })}`);
}
