/**
 * `m2vla train`: train the head on a frozen VLM (lib/train.ts). A progress bar on a terminal, one line per step
 * otherwise; metrics go to <out>/metrics.jsonl either way. SIGINT / SIGTERM stop after the step in progress, save a
 * checkpoint and exit (130 / 143); a second signal exits at once, without one.
 *
 * Data-parallel: `--nproc N` starts N processes on this machine (lib/cli/launch.ts); on several machines, run
 * `m2vla train` once per process with torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Rank 0
 * prints the progress and writes --out.
 */
import { InputError } from '../errors.js';
import { resolveRunDir } from '../hub.js';
import { distributedFromEnv, train, type TrainOptions, type TrainProgress } from '../train.js';
import { choiceFlag, numberFlag, parseFlags, requiredFlag } from './args.js';
import { launch } from './launch.js';
import { pullProgress } from './pull.js';

const USAGE = `usage: m2vla train --data <path> --init <runDir> --out <dir> --steps N --batch-size B --lr X [options]

  --data <path>           LIBERO .hdf5 file or directory, or a LeRobot dataset root
  --init <runDir>         run directory to start from (config, tokenizer, model, head checkpoints), or
                          hf://owner/repo[/folder] (pulled first, see m2vla pull)
  --out <dir>             metrics.jsonl, checkpoints/, and the trained run directory
  --steps N               optimizer steps in all
  --batch-size B          samples per micro-batch (per process with --nproc); also --batch
  --lr X                  base learning rate
  --objective l1|denoise  default l1 (the released code's L1 regression)
  --ablation no-mol|no-msm  the paper's ablation: one cross-attention to the last layer per head block (no-mol),
                          or no MSM retrieval/bank (no-msm); default: the full model
  --resume                continue the run in --out from its latest checkpoint (prints the step; a changed --steps,
                          --lr, --warmup or schedule is applied from there and said so; a changed --batch-size,
                          --accum, --seed, --objective, --bf16 or data is refused)
  --accum K               micro-batches per optimizer step (default 1)
  --warmup W              warmup steps, 10% -> 100% of lr (default 0)
  --schedule cosine|step  default cosine; step multiplies the rate by 0.1 at --decay-at
  --decay-at S[,S...]     step schedule milestones (default steps/2)
  --seed S                default 0
  --bf16                  VLM in bfloat16, head under bfloat16 autocast
  --image-augmentation    augment the frames as the reference's image_aug (90% random crop, brightness 0.2,
                          contrast and saturation 0.8-1.2, hue 0.05)
                          (also --image-aug)
  --clip-norm N           clip the global gradient norm to N (default: no clipping; also --clip)
  --checkpoint-every N    checkpoint every N steps (default 1000, and always at the end; also --save-every);
                          m2vla export <out> makes the latest a run directory
  --keep-checkpoints      keep every checkpoint, not only the latest (m2vla export <out> --step N)
  --threads N             torch threads (with --nproc: the cores shared out by default)
  --nproc N               data-parallel: N processes on this machine, --batch-size samples each (global batch N x B)
  --dist-timeout S        data-parallel: seconds a process waits for the others (rendezvous, each collective)
                          before failing (default 300)

  Several machines: run m2vla train once per process with RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set
  (torchrun's variables; rank 0 hosts the rendezvous); GLOO_SOCKET_IFNAME picks the network interface.`;

const FLAGS = {
  data: { type: 'string' }, init: { type: 'string' }, out: { type: 'string' }, steps: { type: 'string' },
  'batch-size': { type: 'string', aliases: ['batch'] }, lr: { type: 'string' }, objective: { type: 'string' },
  resume: { type: 'boolean' }, ablation: { type: 'string' }, accum: { type: 'string' }, warmup: { type: 'string' },
  schedule: { type: 'string' }, 'decay-at': { type: 'string' }, seed: { type: 'string' }, bf16: { type: 'boolean' },
  'image-augmentation': { type: 'boolean', aliases: ['image-aug'] }, 'clip-norm': { type: 'string', aliases: ['clip'] },
  'checkpoint-every': { type: 'string', aliases: ['save-every'] }, 'keep-checkpoints': { type: 'boolean' }, threads: { type: 'string' }, nproc: { type: 'string' },
  'dist-timeout': { type: 'string' },
} as const;

function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`
    : s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

/** A one-line bar rewritten in place on a terminal; one plain line per step elsewhere (logs, CI). */
function progressPrinter(total: number, tty: boolean) {
  let last = '';
  return {
    update(e: TrainProgress) {
      if (e.kind === 'micro') {
        if (tty && e.microBatches > 1) process.stderr.write(`\r${last}  micro ${e.micro + 1}/${e.microBatches}\x1b[K`);
        return;
      }
      const stats = `loss ${e.loss.toFixed(5)}  lr ${e.lr.toExponential(2)}  ${e.ms.toFixed(0)} ms/step`;
      if (!tty) {
        console.log(`step ${e.step}/${total}  ${stats}`);
        return;
      }
      const width = 24, done = Math.round((e.step / total) * width);
      last = `step ${e.step}/${total} [${'#'.repeat(done)}${'.'.repeat(width - done)}] ${stats}  ETA ${duration((total - e.step) * e.ms)}`;
      process.stderr.write(`\r${last}\x1b[K`);
    },
    end() {
      if (tty && last) process.stderr.write('\n');
      last = '';
    },
  };
}

export const trainCommand = {
  summary: 'train the action head (and action queries) on a frozen VLM',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values } = parseFlags(argv, FLAGS);
    const v = values as Record<string, string | undefined> & {
      resume?: boolean; bf16?: boolean; 'image-augmentation'?: boolean; 'keep-checkpoints'?: boolean; help?: boolean;
    };
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    const int = (name: keyof typeof FLAGS, min: number) => numberFlag(v[name], name, { integer: true, min });
    const num = (name: keyof typeof FLAGS) => numberFlag(v[name], name);
    const nproc = int('nproc', 1) ?? 1;
    const timeout = num('dist-timeout');
    if (timeout !== undefined && !(timeout > 0)) throw new InputError(`--dist-timeout: expected a positive number of seconds, got ${timeout}`);
    if (nproc > 1) {
      if (process.env.WORLD_SIZE !== undefined) throw new InputError('--nproc starts the processes itself: unset WORLD_SIZE, or drop --nproc');
      const init = v.init && await resolveRunDir(v.init, { onProgress: pullProgress() });  // pulled once, not per process
      const args = argv.filter((a, i) => !(a === '--nproc' || argv[i - 1] === '--nproc' || a.startsWith('--nproc=')));
      return launch({ nproc, argv: init && init !== v.init ? [...args, '--init', init] : args });
    }
    const distributed = distributedFromEnv(process.env, timeout === undefined ? undefined : Math.round(timeout * 1000));
    const rank = distributed?.rank ?? 0;
    if (distributed && process.channel) {
      // Started by --nproc: end with the launcher (an IPC channel that closes), and do not keep the process alive.
      process.on('disconnect', () => process.exit(1));
      process.channel.unref();
    }
    for (const name of ['data', 'init', 'out', 'steps', 'batch-size', 'lr'] as const) requiredFlag(v[name], name);
    const steps = int('steps', 1)!;
    const init = await resolveRunDir(v.init!, { onProgress: rank === 0 ? pullProgress() : undefined });
    const options: TrainOptions = {
      data: v.data!, init, out: v.out!, steps, batchSize: int('batch-size', 1)!, lr: num('lr')!,
      objective: choiceFlag(v.objective, 'objective', ['l1', 'denoise'] as const),
      ablation: choiceFlag(v.ablation, 'ablation', ['none', 'no-mol', 'no-msm'] as const), resume: v.resume,
      accum: int('accum', 1), warmup: int('warmup', 0), schedule: choiceFlag(v.schedule, 'schedule', ['cosine', 'step'] as const),
      decayAt: v['decay-at']?.split(',').map((s) => numberFlag(s, 'decay-at', { integer: true, min: 0 })!),
      seed: int('seed', 0), bf16: v.bf16, imageAugmentation: v['image-augmentation'], clipNorm: num('clip-norm'),
      checkpointEvery: int('checkpoint-every', 1), keepCheckpoints: v['keep-checkpoints'], threads: int('threads', 1), distributed,
      onStatus: rank === 0 ? (line) => console.error(`m2vla train: ${line}`) : undefined,
    };

    const controller = new AbortController();
    let signalled: NodeJS.Signals | undefined;
    const onSignal = (signal: NodeJS.Signals) => {
      if (signalled) {
        console.error(`\nm2vla train: ${signal} again, exiting without a checkpoint`);
        process.exit(1);
      }
      signalled = signal;
      console.error(`\nm2vla train: ${signal}, stopping after the current step and saving a checkpoint`);
      controller.abort();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const printer = progressPrinter(steps, process.stderr.isTTY === true);
    const started = Date.now();
    try {
      const result = await train({ ...options, signal: controller.signal, onProgress: rank === 0 ? (e) => printer.update(e) : undefined });
      printer.end();
      if (rank !== 0) return result.interrupted ? (signalled === 'SIGTERM' ? 143 : 130) : 0;
      const last = result.metrics[result.metrics.length - 1];
      const loss = last ? `, last loss ${last.loss.toFixed(5)}` : '';
      if (result.interrupted) {
        console.log(`m2vla train: stopped at step ${result.steps}/${steps}${loss}; checkpoint ${result.checkpoint}; ` +
          'continue with --resume');
        return signalled === 'SIGTERM' ? 143 : 130;
      }
      console.log(`m2vla train: ${result.metrics.length} steps in ${duration(Date.now() - started)}${loss}; ` +
        `run directory ${result.runDir}`);
      return 0;
    } finally {
      printer.end();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    }
  },
};
