/**
 * `npm run eval -- --quick|--full [--run <dir>] [--out <dir>]`: the closed-loop evaluation as one command.
 *
 * 1. scripted-expert demonstrations of the 5 training tasks (eval/make_demos.py, LIBERO HDF5);
 * 2. the frozen VLM: EVAL_DIMS' tiny Prismatic layout pretrained on the simulator's world (eval/pretrain_vlm.py,
 *    cached by the hash of its recipe; its ask() accuracy on held-out questions measured, eval/vqa.ts), and the same
 *    layout with random weights as the comparison row (`--vlm random` makes the random one the main backbone);
 * 3. `m2vla train` of the full head and of the two ablations (--ablation no-mol | no-msm) with identical budgets and
 *    seeds, in stages so that intermediate checkpoints are evaluated too (success vs training steps);
 * 4. each trained run served by `m2vla serve` on a free port and evaluated by eval/client.py (N episodes per task
 *    with fixed seeds, the held-out task included), plus the mean-action baseline;
 * 5. the MoL gates and the MSM key/value distance correlation of each final run (eval/analysis.ts); for the full
 *    model also rephrased instructions, the language probe, and the held-out task with its demonstrations added to the
 *    MSM bank without training (`m2vla add-skills`);
 * 6. eval/results/<date>/report.md + report.json + SVG plots + a few videos.
 *
 * `--run <dir>` evaluates an existing run directory instead of training (demos are still generated for the baseline).
 * It checks the Python side first and says how to install it (`bash eval/setup.sh`, or `--setup` to run it). Everything
 * is written to `<out>.incomplete/` and moved to `<out>` only when the report is done, so a stopped run leaves no
 * half-written results folder (the next run reuses the incomplete folder's demonstrations).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { placementRefusal } from '../lib/backbone.js';
import { runtimeInfo } from '../lib/runtime.js';
import { ensureRandomRun, TINY_TOKENIZER_DIR } from '../lib/random-run.js';
import { analyzeRun, type RunAnalysis } from './analysis.js';
import { EVAL_DIMS } from './dims.js';
import { languageProbe } from './language-probe.js';
import { log, m2vla, python, run, withServer } from './processes.js';
import { EVAL_DIR, evalRequirementsMissing, PYTHON, pythonEnv } from './python.js';
import { writeReport, type BackboneReport, type EvalResult, type Report, type VariantReport } from './report.js';
import { askAccuracy } from './vqa.js';

interface Profile {
  demosPerTask: number;
  /** Training stages: cumulative optimizer steps at which the run is exported and evaluated. */
  stages: number[];
  batch: number;
  lr: number;
  /** Steps of linear warmup to `lr` (the rate is 10 % of it at step 0). */
  warmup: number;
  /** Episodes per task at the last stage, and at the earlier ones. */
  episodes: number;
  curveEpisodes: number;
  replan: number;
  maxSteps: number;
}

// lr 2e-3 with 200 warmup steps: at 2400 steps it was the recipe whose policy followed the instruction (2026-12-02,
// eval/language-probe.ts 29/36 scenes vs 0/36 at lr 1e-3 without warmup, and 0/36 at 3e-3 with gradient clipping).
const PROFILES: Record<'quick' | 'full', Profile> = {
  quick: { demosPerTask: 36, stages: [800, 1600, 2400], batch: 16, lr: 2e-3, warmup: 200, episodes: 10, curveEpisodes: 4, replan: 4, maxSteps: 100 },
  full: { demosPerTask: 40, stages: [1000, 2000, 4000, 6000], batch: 16, lr: 2e-3, warmup: 200, episodes: 20, curveEpisodes: 10, replan: 4, maxSteps: 100 },
};

/**
 * The trainings run side by side, each on its own cores: the eval's tiny model runs many small ops, which one torch
 * thread runs about as fast as two (measured 2026-12-02, 2 cores: ~0.17 s/step on 2 threads alone, 0.16-0.22 s/step
 * each for two at once on 1 thread), so two trainings at once take about the time of one.
 */
const TRAINING_SLOTS = Math.min(4, os.availableParallelism());
const TRAINING_THREADS = Math.max(1, Math.floor(os.availableParallelism() / TRAINING_SLOTS));

/** The VLM's pretraining budget in optimizer steps (part of its recipe hash: the same steps, the same cached VLM). */
const PRETRAIN_STEPS = 6000;

export const VARIANTS = [
  { name: 'full', label: 'M²-VLA (full)', ablation: null },
  { name: 'no-mol', label: 'w/o MoL', ablation: 'no-mol' },
  { name: 'no-msm', label: 'w/o MSM', ablation: 'no-msm' },
] as const;

interface Context {
  profile: Profile;
  /** torch threads of each training and server process: the cores shared out among the trainings that run at once. */
  threads: number;
  work: string;
  out: string;
  demos: string;
  logs: string;
}

/** Runs the jobs in order, at most `limit` at a time; rejects on the first failure. */
async function inParallel(limit: number, jobs: Array<() => Promise<void>>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < jobs.length) await jobs[next++]();
  };
  await Promise.all(Array.from({ length: Math.min(limit, jobs.length) }, worker));
}

async function evaluate(ctx: Context, source: { url?: string; baseline?: boolean }, episodes: number, name: string,
  videos: boolean, extra: string[] = []): Promise<EvalResult> {
  const file = path.join(ctx.work, 'episodes', `${name}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const args = [source.url ? '--url' : '--baseline-demos', source.url ?? ctx.demos, '--episodes', String(episodes),
    '--replan', String(ctx.profile.replan), '--max-steps', String(ctx.profile.maxSteps),
    '--image-size', String(EVAL_DIMS.imageSize), '--out', file];
  if (videos) args.push('--videos', path.join(ctx.out, 'videos', name));
  args.push(...extra);
  await python('client.py', args, path.join(ctx.logs, `client-${name}.log`));
  return JSON.parse(fs.readFileSync(file, 'utf8')) as EvalResult;
}

interface TrainedVariant {
  report: VariantReport;
  runDir: string;
}

type Variant = { name: string; label: string; ablation: string | null };

async function trainAndEvaluate(ctx: Context, base: string, variant: Variant): Promise<TrainedVariant> {
  const { profile } = ctx;
  const runDir = path.join(ctx.work, 'runs', variant.name);
  fs.rmSync(runDir, { recursive: true, force: true });
  const last = profile.stages[profile.stages.length - 1];
  const curve: VariantReport['curve'] = [];
  let trainSeconds = 0, result: EvalResult | undefined;
  for (const [i, steps] of profile.stages.entries()) {
    log(`${variant.name}: training to step ${steps}`);
    const started = Date.now();
    // A constant rate with one x0.1 decay at 80 %: the same schedule whatever stage a resumed run stops at.
    await m2vla(['train', '--data', ctx.demos, '--init', base, '--out', runDir, '--steps', String(steps),
      '--batch-size', String(profile.batch), '--lr', String(profile.lr), '--warmup', String(profile.warmup), '--seed', '0', '--schedule', 'step',
      '--decay-at', String(Math.round(last * 0.8)), '--checkpoint-every', String(last), '--threads', String(ctx.threads),
      ...(variant.ablation ? ['--ablation', variant.ablation] : []), ...(i > 0 ? ['--resume'] : [])],
    path.join(ctx.logs, `train-${variant.name}.log`));
    trainSeconds += (Date.now() - started) / 1000;
    const final = steps === last;
    log(`${variant.name}: evaluating step ${steps} (${final ? profile.episodes : profile.curveEpisodes} episodes per task)`);
    const r = await withServer(runDir, path.join(ctx.logs, `serve-${variant.name}.log`), (url) =>
      evaluate(ctx, { url }, final ? profile.episodes : profile.curveEpisodes, `${variant.name}-step${steps}`, final), [], ctx.threads);
    curve.push({ steps, successSeen: r.success_rate_seen ?? 0, episodesPerTask: r.episodes_per_task });
    if (final) result = r;
  }
  const metrics = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const tail = metrics.slice(-20);
  return {
    runDir,
    report: {
      name: variant.name, label: variant.label, ablation: variant.ablation, result: result!, curve, trainSeconds,
      finalLoss: tail.reduce((a, m) => a + m.loss, 0) / tail.length, analysis: null,
    },
  };
}

type FullRunExtras = Pick<Report, 'rephrased' | 'probe' | 'skills' | 'dtypes'>;

/**
 * The trained full model's other rows: served with the backbone dtypes 'auto' did not pick, with rephrased
 * instructions, the language probe, and the held-out task with its demonstrations added to the MSM bank (no training).
 */
async function evaluateFullRun(ctx: Context, fullRun: string): Promise<FullRunExtras> {
  const { profile, logs, threads } = ctx;
  const { cpuDtype } = await runtimeInfo();  // what dtype 'auto' picks here (its GEMM probe runs on the torch worker)
  // A dtype this CPU cannot run (int8 without AVX512-VNNI or AMX-INT8): its row says why instead of failing the eval.
  const int8Refusal = placementRefusal('cpu', 'int8');
  const notRun = int8Refusal ? [{ dtype: 'int8', reason: int8Refusal }] : [];
  const dtypes: NonNullable<FullRunExtras['dtypes']> = { auto: `${cpuDtype.auto} (${cpuDtype.reason})`, rows: [], notRun };
  const runnable = ['float32', 'bfloat16', 'int8'].filter((d) => d !== cpuDtype.auto && !notRun.some((n) => n.dtype === d));
  for (const dtype of runnable) {
    log(`full: served with --dtype ${dtype}`);
    dtypes.rows.push({ dtype, result: await withServer(fullRun, path.join(logs, `serve-full-${dtype}.log`), (url) =>
      evaluate(ctx, { url }, profile.episodes, `full-${dtype}`, false), ['--dtype', dtype], threads) });
  }
  log('full: rephrased instructions');
  const rephrased = await withServer(fullRun, path.join(logs, 'serve-full.log'), (url) =>
    evaluate(ctx, { url }, profile.episodes, 'full-rephrased', false, ['--rephrase']), [], threads);
  log('full: language probe');
  const probe = await languageProbe(fullRun, ctx.demos);
  log('full: held-out task with its demonstrations added to the skill bank, no training');
  const heldDemos = path.join(ctx.work, 'demos-held-out');
  fs.rmSync(heldDemos, { recursive: true, force: true });
  await python('make_demos.py', ['--out', heldDemos, '--per-task', String(profile.demosPerTask), '--tasks', 'yellow_bowl',
    '--image-size', String(EVAL_DIMS.imageSize)], path.join(logs, 'demos-held-out.log'));
  const skillsRun = path.join(ctx.work, 'runs', 'full-skills');
  fs.rmSync(skillsRun, { recursive: true, force: true });
  await m2vla(['add-skills', fullRun, '--data', heldDemos, '--out', skillsRun], path.join(logs, 'add-skills.log'));
  const added = fs.readFileSync(path.join(logs, 'add-skills.log'), 'utf8').trim().split('\n').filter((l) => l.startsWith('m2vla add-skills')).pop() ?? '';
  const withSkills = await withServer(skillsRun, path.join(logs, 'serve-skills.log'), (url) =>
    evaluate(ctx, { url }, profile.episodes, 'full-skills', true, ['--tasks', 'yellow_bowl']), [], threads);
  return { dtypes, rephrased, probe, skills: { with: withSkills, log: added } };
}

/**
 * The pretrained backbone: eval/pretrain_vlm.py over the random base's layout (PyTorch on the CPU, from M2VLA_PYREF or
 * .pyref/), reused when its recipe's directory exists. Returns the run directory and what pretraining recorded.
 */
async function pretrainedBackbone(ctx: Context, base: string, steps: number, robotAnswer: string): Promise<{ dir: string; info: Record<string, unknown> }> {
  const torchDir = process.env.M2VLA_PYREF ?? path.join(EVAL_DIR, '..', '.pyref');
  const env = pythonEnv();
  env.PYTHONPATH = `${env.PYTHONPATH}${path.delimiter}${torchDir}`;
  const cache = path.join(EVAL_DIR, 'results', '.vlm-cache');
  const logFile = path.join(ctx.logs, 'pretrain-vlm.log');
  fs.rmSync(logFile, { force: true });
  await run(PYTHON, [path.join(EVAL_DIR, 'pretrain_vlm.py'), '--base', base, '--out-root', cache, '--steps', String(steps),
    '--heldout', '40', '--robot-answer', robotAnswer],
    logFile, env).catch((e: Error) => {
    throw new Error(`${e.message}\n(pretraining needs torch, transformers, safetensors and tokenizers on M2VLA_PYREF=${torchDir})`);
  });
  const dir = fs.readFileSync(logFile, 'utf8').trim().split('\n').pop()!;
  return { dir, info: JSON.parse(fs.readFileSync(path.join(dir, 'pretrain.json'), 'utf8')) };
}

async function main() {
  const { values: v } = parseArgs({
    args: process.argv.slice(2), strict: true,
    options: {
      quick: { type: 'boolean' }, full: { type: 'boolean' }, run: { type: 'string' }, out: { type: 'string' },
      episodes: { type: 'string' }, setup: { type: 'boolean' }, vlm: { type: 'string', default: 'pretrained' },
      'pretrain-steps': { type: 'string', default: String(PRETRAIN_STEPS) }, 'robot-answer': { type: 'string', default: 'where' },
      'no-random-row': { type: 'boolean' }, help: { type: 'boolean' },
    },
  });
  if (v.help || (!v.quick && !v.full && !v.run)) {
    console.log('usage: npm run eval -- --quick|--full [--run <runDir>] [--out <dir>] [--episodes N] [--setup]\n' +
      '       [--vlm pretrained|random] [--pretrain-steps N] [--robot-answer where|target] [--no-random-row]\n' +
      '  --quick  36 demos per task, 3 x 2400 training steps, 10 episodes per task: ~26 min on 2 idle cores with the\n' +
      '           VLM and demos cached (22 min with --no-random-row, 2026-12-08; +30 min to pretrain the VLM once,\n' +
      '           +3 min to record the demos)\n' +
      '  --full   40 demos per task, 3 x 6000 steps, 20 episodes per task: a few hours\n' +
      '  --robot-answer  what the VLM learns to answer to the robot\'s prompt (eval/pretrain_vlm.py, docs/eval.md)\n' +
      '  --setup  install the Python side first (bash eval/setup.sh: pip --target eval/.venv-target, and\n' +
      '           apt-get install libosmesa6 with sudo when OSMesa is missing)');
    return;
  }
  const missing = evalRequirementsMissing();
  if (missing && !v.setup) {
    console.error(`eval: the simulator side cannot run: ${missing}.\n` +
      'Install it with `bash eval/setup.sh` (mujoco, numpy, h5py, msgpack, websockets, pillow into eval/.venv-target with ' +
      'pip; libosmesa6 with apt-get, through sudo, for CPU rendering), or pass --setup to run that first.');
    process.exitCode = 1;
    return;
  }
  if (v.vlm !== 'pretrained' && v.vlm !== 'random') throw new Error(`--vlm: expected pretrained or random, got ${v.vlm}`);
  if (v['robot-answer'] !== 'where' && v['robot-answer'] !== 'target') throw new Error(`--robot-answer: expected where or target, got ${v['robot-answer']}`);
  const profileName = v.full ? 'full' : 'quick';
  const profile = { ...PROFILES[profileName] };
  if (v.episodes) profile.episodes = Number(v.episodes);
  const started = Date.now();
  const date = new Date().toISOString().slice(0, 10);
  const final = path.resolve(v.out ?? path.join(EVAL_DIR, 'results', date));
  const out = `${final}.incomplete`;
  const work = path.join(out, 'work');
  const logs = path.join(work, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  const ctx: Context = { profile, threads: TRAINING_THREADS, work, out, demos: path.join(work, 'demos'), logs };
  log(`profile ${profileName}; results in ${final} when done (until then in ${out})`);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      console.error(`\neval: ${signal}: stopped; nothing was written to ${final} (the partial work stays in ${out} and ` +
        'the next run reuses its demonstrations)');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    });
  }

  if (missing) {
    log('installing the evaluation requirements (eval/setup.sh)');
    await run('bash', [path.join(EVAL_DIR, 'setup.sh')], path.join(logs, 'setup.log'));
    const still = evalRequirementsMissing();
    if (still) throw new Error(`eval requirements: ${still}`);
  }

  const demoStamp = path.join(ctx.demos, '.complete');
  const demoKey = JSON.stringify({ perTask: profile.demosPerTask, imageSize: EVAL_DIMS.imageSize });
  let demoSeconds = 0;
  if (!fs.existsSync(demoStamp) || fs.readFileSync(demoStamp, 'utf8') !== demoKey) {
    log(`recording ${profile.demosPerTask} expert demonstrations per task`);
    const t = Date.now();
    fs.rmSync(ctx.demos, { recursive: true, force: true });
    await python('make_demos.py', ['--out', ctx.demos, '--per-task', String(profile.demosPerTask),
      '--image-size', String(EVAL_DIMS.imageSize)], path.join(logs, 'demos.log'));
    fs.writeFileSync(demoStamp, demoKey);
    demoSeconds = (Date.now() - t) / 1000;
  }

  log('expert check and mean-action baseline');
  const expertFile = path.join(work, 'experts.json');
  await python('expert.py', ['--episodes', '20', '--seed-base', '1000000', '--json-out', expertFile], path.join(logs, 'experts.log'));
  const experts = JSON.parse(fs.readFileSync(expertFile, 'utf8'));
  const baseline = await evaluate(ctx, { baseline: true }, profile.episodes, 'baseline', false);

  const variants: VariantReport[] = [];
  const analyses: Array<[VariantReport, string]> = [];
  let backbone: BackboneReport = { kind: v.run ? 'given' : 'random', dir: null, pretrain: null, seconds: 0, ask: null };
  const extras: FullRunExtras = { rephrased: null, probe: null, skills: null, dtypes: null };
  if (v.run) {
    const runDir = path.resolve(v.run);
    log(`evaluating ${runDir}`);
    const result = await withServer(runDir, path.join(logs, 'serve-run.log'), (url) =>
      evaluate(ctx, { url }, profile.episodes, 'run', true));
    const report: VariantReport = { name: 'run', label: path.basename(runDir), ablation: null, result, curve: [],
      trainSeconds: 0, finalLoss: NaN, analysis: null };
    variants.push(report);
    analyses.push([report, runDir]);
  } else {
    const randomBase = await ensureRandomRun(path.join(work, 'base'), EVAL_DIMS, { seed: 0, tokenizerDir: TINY_TOKENIZER_DIR });
    // The random-VLM row needs no pretrained VLM: it trains while the VLM pretrains (another process).
    const withRandomRow = v.vlm === 'pretrained' && !v['no-random-row'];
    const base = v.vlm === 'random' ? Promise.resolve(randomBase) : (async () => {
      log('pretrained VLM (eval/pretrain_vlm.py; cached by its recipe)');
      const t = Date.now();
      const pre = await pretrainedBackbone(ctx, randomBase, Number(v['pretrain-steps']), v['robot-answer']!);
      log(`VLM at ${pre.dir}; measuring ask() on its held-out questions`);
      backbone = { kind: 'pretrained', dir: pre.dir, pretrain: pre.info, seconds: (Date.now() - t) / 1000, ask: await askAccuracy(pre.dir) };
      return pre.dir;
    })();
    // Each training (and its evaluations) is one job on ctx.threads torch threads; the full model's job goes on to the
    // evaluations of its run (other dtypes, rephrasings, probe, skills) while the other trainings run.
    const trained: Array<TrainedVariant | undefined> = [];
    const jobs: Array<() => Promise<void>> = VARIANTS.map((variant, i) => async () => {
      trained[i] = await trainAndEvaluate(ctx, await base, variant);
      if (i === 0) Object.assign(extras, await evaluateFullRun(ctx, trained[i]!.runDir));
    });
    if (withRandomRow) {
      jobs.splice(1, 0, async () => {
        trained[VARIANTS.length] = await trainAndEvaluate(ctx, randomBase, { name: 'full-random-vlm', label: 'M²-VLA (full), random VLM', ablation: null });
      });
    }
    await Promise.all([base, inParallel(TRAINING_SLOTS, jobs)]);
    for (const t of trained.filter((x) => x !== undefined)) {
      variants.push(t.report);
      analyses.push([t.report, t.runDir]);
    }
  }
  for (const [report, runDir] of analyses) {
    log(`${report.name}: MoL gates and MSM bank analysis`);
    try {
      report.analysis = await analyzeRun(runDir, ctx.demos);
    } catch (e) {
      report.analysis = { ablation: report.ablation ?? 'none', gates: null, bank: null, notes: [`analysis failed: ${(e as Error).message}`] } satisfies RunAnalysis;
    }
  }
  const report: Report = {
    date, profile: profileName, profileSettings: profile, dims: EVAL_DIMS, command: `npm run eval -- ${process.argv.slice(2).join(' ')}`,
    experts, baseline, variants, demoSeconds, totalSeconds: (Date.now() - started) / 1000, runDir: v.run ?? null,
    backbone, ...extras,
  };
  writeReport(out, report);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(out, final);
  log(`done in ${(report.totalSeconds / 60).toFixed(1)} min: ${path.join(final, 'report.md')}`);
}

main().catch((e) => {
  console.error(`eval: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
