/**
 * Training the M²-VLA head on a frozen VLM (SPEC §2, §3.2).
 *
 *   const result = await train({ data: 'libero_10_no_noops/', init: 'runs/base', out: 'runs/mine', steps: 15000,
 *                                batchSize: 8, lr: 1e-4 });
 *
 * TypeScript reads the dataset, tokenizes each instruction with the run directory's tokenizer, normalizes states and
 * action chunks with the dataset's statistics (through the addon's BOUNDS_Q99 map, the one inference uses) and packs
 * micro-batches; the addon preprocesses the frames, runs the frozen VLM (the prompt prefix without autograd, the
 * action queries with it), the head, the MSM bank, AdamW and the schedule (native/train/trainer.h). The next step's
 * batches are read while the current one trains.
 *
 * `out` receives dataset_statistics.json, metrics.jsonl (one line per step), checkpoints/ (exact resume with
 * `resume: true`) and, when training completes, the exported run directory: the init run's configuration and
 * tokenizer files, model.safetensors with the trained action queries, the head as .safetensors and as the reference's
 * --checkpoint.pt files. loadHead(out) / loadPolicy(out) read it.
 *
 * Data-parallel (`distributed`, one call per process; `m2vla train --nproc N` starts them): `batchSize` samples per
 * process and micro-batch, each process reading its own slice of every global batch of batchSize × worldSize
 * samples (BatchLoader's sharding); the native trainer averages the gradients over the processes on c10d
 * (native/train/distributed.h), so N processes × b samples train as one process × N·b. Rank 0 alone writes `out`;
 * every process needs the same `data`, `init` and, resuming, `out` (a shared file system across machines).
 */
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { HEAD_CONFIG_KEY, parseAblation, resolveRunSpec, type Ablation, type RecordedHeadConfig, type RunSpec } from './config.js';
import { openLeRobot, type LeRobotOptions } from './data/lerobot.js';
import { openLibero, type LiberoOptions } from './data/libero.js';
import { BatchLoader, type Batch, type LoaderPosition } from './data/loader.js';
import { computeStatistics, writeDatasetStatistics, type DatasetStatistics, type FeatureStatistics } from './data/stats.js';
import type { Dataset } from './data/dataset.js';
import { ConfigError, DisposedError, InputError, ShapeError } from './errors.js';
import {
  getBinding, type ImageAugmentation, type NativeDevice, type NativeDistributedOptions, type NativeMicroBatch, type NativeStepMetrics,
  type NativeTensor, type NativeTrainer, type NativeTrainerDims, type NativeTrainProgress,
} from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { readJson } from './json.js';
import { checkOptions, optionKeys } from './options.js';
import { PromptTokenizer } from './tokenizer.js';

export interface TrainOptions {
  /** A LIBERO .hdf5 file or a directory of them, or a LeRobot dataset root (the one holding meta/info.json). */
  data: string;
  /** The run directory training starts from: config, tokenizer, model.safetensors, the head's checkpoints. */
  init: string;
  /** Where metrics, checkpoints and the trained run directory go (not the init directory). */
  out: string;
  /** Optimizer steps in all (a resumed run continues up to this count). */
  steps: number;
  /** Samples per micro-batch. */
  batchSize: number;
  /** Base learning rate (finetune.py: 5e-4 default, 2e-4 in its README; the paper's Table F1: 1e-4). */
  lr: number;
  /** 'l1' (the released code) or 'denoise' (ε-prediction). Default 'l1'. */
  objective?: 'l1' | 'denoise';
  /**
   * The paper's ablation (Table V): 'no-mol' (each head block: one cross-attention to the last layer's features) or
   * 'no-msm' (no retrieval, bank or memory context). Default 'none', the full model. Starts from the init run's full
   * head (the tensors the variant does not use are dropped); the exported run records the variant in config.json.
   */
  ablation?: Ablation;
  /** Continue the run saved in `out` (its latest checkpoint); without one, start from the beginning. */
  resume?: boolean;
  /** Micro-batches per optimizer step (gradient accumulation). Default 1. */
  accum?: number;
  /** Warmup steps, from 10% to 100% of lr (finetune.py). Default 0. */
  warmup?: number;
  /** 'cosine' (to 0 at the last step, default) or 'step' (×gamma at each of `decayAt`). */
  schedule?: 'cosine' | 'step';
  /** Step schedule: the steps from which the rate is multiplied by `gamma` once more. Default [steps / 2]. */
  decayAt?: number[];
  /** Step schedule factor. Default 0.1 (MultiStepLR in finetune.py). */
  gamma?: number;
  /** Seeds the shuffles, the latent perturbation / timesteps / noise and the bank fills. Default 0. */
  seed?: number;
  /** VLM in bfloat16 and the head under bfloat16 autocast on the device (float32 master weights). Default false. */
  bf16?: boolean;
  /**
   * Where the weights, optimizer state and MSM bank live and the steps compute: 'cpu' (default) or 'cuda' / 'cuda:N'
   * (a CUDA build; otherwise a ConfigError says how to get one). Checkpoints and exact resume are the same on any
   * device (random draws come from the CPU generator). Data-parallel runs are CPU-only (ConfigError otherwise).
   */
  device?: NativeDevice;
  /** Clip the global gradient norm to this value; 0 (default) = no clipping, as finetune.py. */
  clipNorm?: number;
  /** AdamW. Defaults: torch's (betas 0.9 / 0.999, weight decay 0.01, eps 1e-8). */
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  /** Probability that a micro-batch is added to the MSM bank after its query (reference 0.2). */
  memorySampleRate?: number;
  /** Save a checkpoint every this many steps (and always at the end or when stopped). Default 1000. */
  checkpointEvery?: number;
  /**
   * Keep every checkpoint (in `out/checkpoints/kept/step-N/`, hard links, for exportCheckpoint(out, { step })) instead
   * of only the latest. Default false.
   */
  keepCheckpoints?: boolean;
  /** Run the prompt prefix once without autograd (default true); false runs the whole sequence with it. */
  prefixTrick?: boolean;
  /**
   * Augment the training frames as the reference's `image_aug` does (random 90% crop, brightness, contrast,
   * saturation, hue; primary and wrist independently): true for its parameters, or some of them changed. Default off.
   */
  imageAugmentation?: boolean | ImageAugmentation;
  /** Torch threads (default: libtorch's choice). */
  threads?: number;
  /** This process's place in a data-parallel run (see distributedFromEnv); omitted or worldSize 1: one process. */
  distributed?: DistributedOptions;
  /** Options of the dataset reader (chunk and dims come from the model). */
  dataset?: ReaderOptions<LiberoOptions> | ReaderOptions<LeRobotOptions>;
  /** Aborting stops after the step in progress, saves a checkpoint and resolves with `interrupted: true`. */
  signal?: AbortSignal;
  /** Called after every micro-batch and every optimizer step. */
  onProgress?: (event: TrainProgress) => void;
  /**
   * Called with a line at each stage before the first step (loading the model, resuming from step N and what changed,
   * opening the dataset, reading the first batch) and for warnings (short episodes dropped). Without it, warnings go
   * to process.emitWarning (code M2VLA_TRAIN).
   */
  onStatus?: (message: string) => void;
}

const TRAIN_KEYS = optionKeys<TrainOptions>({
  data: true, init: true, out: true, steps: true, batchSize: true, lr: true, objective: true, ablation: true,
  resume: true, accum: true, warmup: true, schedule: true, decayAt: true, gamma: true, seed: true, bf16: true,
  clipNorm: true, weightDecay: true, betas: true, eps: true, memorySampleRate: true, checkpointEvery: true,
  prefixTrick: true, imageAugmentation: true, keepCheckpoints: true, device: true, threads: true, distributed: true, dataset: true, signal: true,
  onProgress: true, onStatus: true,
});

type ReaderOptions<T> = Omit<T, 'chunk' | 'actionDim' | 'proprioDim'>;

/**
 * A data-parallel process: `rank` in [0, worldSize); rank 0 hosts the rendezvous at masterAddr:masterPort.
 * `timeoutMs` (default 300000): how long the rendezvous and every collective wait for the other processes before
 * failing with a DistributedError (a process that exits makes the others fail at once).
 */
export type DistributedOptions = NativeDistributedOptions;

/** torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT); undefined when WORLD_SIZE is unset. */
export function distributedFromEnv(env: NodeJS.ProcessEnv = process.env, timeoutMs?: number): DistributedOptions | undefined {
  if (env.WORLD_SIZE === undefined) return undefined;
  const read = (name: string, fallback?: string) => {
    const value = env[name] ?? fallback;
    if (value === undefined || !/^\d+$/.test(value)) throw new InputError(`${name}: expected a non-negative integer, got ${String(value)}`);
    return Number(value);
  };
  return {
    rank: read('RANK'), worldSize: read('WORLD_SIZE'), masterAddr: env.MASTER_ADDR ?? '127.0.0.1',
    masterPort: read('MASTER_PORT', '29500'), ...(timeoutMs !== undefined && { timeoutMs }),
  };
}

export type TrainProgress = NativeTrainProgress;

export interface StepMetrics extends NativeStepMetrics {
  /** The loader's epoch after this step's batches. */
  epoch: number;
}

export interface TrainResult {
  /** Optimizer steps done in all (resumed runs count the earlier ones). */
  steps: number;
  /** The steps this call ran. */
  metrics: StepMetrics[];
  interrupted: boolean;
  /** The last checkpoint's step directory. */
  checkpoint: string;
  /** The exported run directory (`out`), when training completed. */
  runDir?: string;
}

/** A micro-batch read from the dataset and packed for the addon, with the loader position after it. */
export interface PackedBatch {
  batch: NativeMicroBatch;
  position: LoaderPosition;
  indices: number[];
}

/** What a checkpoint's trainer_state.json holds besides the tensors. */
interface TrainerState {
  format: 'm2vla-train/1';
  step: number;
  loader: LoaderPosition;
  /** Options an exact resume needs unchanged. */
  fixed: Record<string, unknown>;
  /** Options a resume may change (the schedule continues with the new values); a resume says which changed. */
  adjustable?: Record<string, unknown>;
  /** Head dims an ablated checkpoint does not show (see #recordHeadConfig). */
  head: { numHeads: number; chunk: number };
  savedAt: string;
}

const STATE_FORMAT = 'm2vla-train/1';
const RUN_FILES = ['config.json', 'preprocessor_config.json', 'manifest.json', 'tokenizer.json', 'tokenizer_config.json',
  'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt', 'generation_config.json'];

interface Resolved extends Required<Omit<TrainOptions, 'decayAt' | 'threads' | 'dataset' | 'signal' | 'onProgress' | 'onStatus' | 'distributed'>> {
  decayAt: number[];
  threads?: number;
  distributed?: DistributedOptions;
  dataset: NonNullable<TrainOptions['dataset']>;
}

function integer(value: unknown, name: string, min: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min)
    throw new InputError(`${name}: expected an integer >= ${min}, got ${String(value)}`);
  return value;
}

function positive(value: unknown, name: string, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0))
    throw new InputError(`${name}: expected a ${allowZero ? 'non-negative' : 'positive'} number, got ${String(value)}`);
  return value;
}

function resolve(o: TrainOptions): Resolved {
  checkOptions(o, TRAIN_KEYS, 'train');
  for (const key of ['data', 'init', 'out'] as const)
    if (typeof o[key] !== 'string' || o[key] === '') throw new InputError(`${key}: expected a path`);
  const steps = integer(o.steps, 'steps', 1);
  const objective = o.objective ?? 'l1';
  const ablation = parseAblation(o.ablation ?? 'none');
  if (objective !== 'l1' && objective !== 'denoise') throw new InputError(`objective: expected 'l1' or 'denoise', got '${objective}'`);
  const schedule = o.schedule ?? 'cosine';
  if (schedule !== 'cosine' && schedule !== 'step') throw new InputError(`schedule: expected 'cosine' or 'step', got '${schedule}'`);
  const decayAt = o.decayAt ?? [Math.floor(steps / 2)];
  decayAt.forEach((s, i) => integer(s, `decayAt[${i}]`, 0));
  const betas = o.betas ?? [0.9, 0.999];
  if (!Array.isArray(betas) || betas.length !== 2) throw new InputError('betas: expected [beta1, beta2]');
  const out = path.resolve(o.out), init = path.resolve(o.init);
  if (out === init) throw new ConfigError(`out: ${out} is the init run directory; train into another directory`);
  return {
    data: path.resolve(o.data), init, out, steps, objective, ablation, schedule, decayAt, betas,
    batchSize: integer(o.batchSize, 'batchSize', 1),
    lr: positive(o.lr, 'lr'),
    resume: o.resume ?? false,
    accum: integer(o.accum ?? 1, 'accum', 1),
    warmup: integer(o.warmup ?? 0, 'warmup', 0),
    gamma: positive(o.gamma ?? 0.1, 'gamma'),
    seed: integer(o.seed ?? 0, 'seed', 0),
    bf16: o.bf16 ?? false,
    device: trainDevice(o.device),
    clipNorm: positive(o.clipNorm ?? 0, 'clipNorm', true),
    weightDecay: positive(o.weightDecay ?? 0.01, 'weightDecay', true),
    eps: positive(o.eps ?? 1e-8, 'eps'),
    memorySampleRate: positive(o.memorySampleRate ?? 0.2, 'memorySampleRate', true),
    checkpointEvery: integer(o.checkpointEvery ?? 1000, 'checkpointEvery', 1),
    keepCheckpoints: o.keepCheckpoints ?? false,
    prefixTrick: o.prefixTrick ?? true,
    imageAugmentation: imageAugmentation(o.imageAugmentation),
    threads: o.threads,
    distributed: resolveDistributed(o.distributed),
    dataset: o.dataset ?? {},
  };
}

/** A malformed device string is an InputError here; what this build or machine cannot run, a ConfigError natively. */
function trainDevice(value: unknown): NativeDevice {
  if (value === undefined) return 'cpu';
  if (typeof value !== 'string' || !/^(cpu|cuda(:\d{1,3})?)$/.test(value))
    throw new InputError(`device: expected 'cpu', 'cuda' or 'cuda:N', got ${JSON.stringify(value)}`);
  return value as NativeDevice;
}

const AUGMENTATION_KEYS = optionKeys<ImageAugmentation>({
  cropArea: true, brightness: true, contrast: true, saturation: true, hue: true, independent: true,
});

/** Shape checks (the addon checks the ranges): false when off. */
function imageAugmentation(value: unknown): boolean | ImageAugmentation {
  if (value === undefined || typeof value === 'boolean') return value ?? false;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new InputError(`imageAugmentation: expected a boolean or an object, got ${JSON.stringify(value)}`);
  checkOptions(value, AUGMENTATION_KEYS, 'train: imageAugmentation');
  return value as ImageAugmentation;
}

const DISTRIBUTED_KEYS = optionKeys<DistributedOptions>({ rank: true, worldSize: true, masterAddr: true, masterPort: true, timeoutMs: true });

function resolveDistributed(d: DistributedOptions | undefined): DistributedOptions | undefined {
  if (d === undefined) return undefined;
  checkOptions(d, DISTRIBUTED_KEYS, 'train: distributed');
  const worldSize = integer(d.worldSize, 'distributed.worldSize', 1), rank = integer(d.rank, 'distributed.rank', 0);
  if (rank >= worldSize) throw new InputError(`distributed.rank: ${rank} is not below worldSize ${worldSize}`);
  if (worldSize === 1) return undefined;
  if (typeof d.masterAddr !== 'string' || d.masterAddr === '') throw new InputError('distributed.masterAddr: expected a host');
  const masterPort = integer(d.masterPort, 'distributed.masterPort', 1);
  if (masterPort > 65535) throw new InputError(`distributed.masterPort: ${masterPort} is not a TCP port`);
  const timeoutMs = integer(d.timeoutMs ?? 300_000, 'distributed.timeoutMs', 1);
  return { rank, worldSize, masterAddr: d.masterAddr, masterPort, timeoutMs };
}

/** LeRobot when `data` holds meta/info.json, LIBERO HDF5 otherwise. */
export function openDataset(data: string, options: LiberoOptions | LeRobotOptions): Promise<Dataset> {
  return fs.existsSync(path.join(data, 'meta', 'info.json'))
    ? openLeRobot(data, options as LeRobotOptions) : openLibero(data, options as LiberoOptions);
}

function boundsStats(s: FeatureStatistics) {
  return { q01: Float64Array.from(s.q01), q99: Float64Array.from(s.q99), mask: Uint8Array.from(s.q01, (_, i) => (s.mask?.[i] ?? true) ? 1 : 0) };
}

/** The latest checkpoint's step directory under `root`, if any. */
function latestCheckpoint(root: string): string | undefined {
  const pointer = path.join(root, 'latest');
  if (!fs.existsSync(pointer)) return undefined;
  const dir = path.join(root, fs.readFileSync(pointer, 'utf8').trim());
  if (fs.existsSync(path.join(dir, 'trainer_state.json'))) return dir;
  // A re-save of the same step on a filesystem without RENAME_EXCHANGE moves the old copy aside first
  // (native/train/checkpoint.cc); a crash right then leaves only that copy.
  if (fs.existsSync(path.join(`${dir}.old`, 'trainer_state.json'))) return `${dir}.old`;
  throw new ConfigError(`${pointer} names ${dir}, which holds no trainer_state.json`);
}

/**
 * Hard-links the latest checkpoint into `root/kept/` before the next save, which removes every other step directory
 * of `root` (the native saver keeps one): the kept copy costs no space and survives.
 */
function keepLatest(root: string): void {
  const latest = latestCheckpoint(root);
  if (!latest) return;
  const kept = path.join(root, 'kept', path.basename(latest));
  if (fs.existsSync(kept)) return;
  fs.mkdirSync(`${kept}.tmp`, { recursive: true });
  for (const f of fs.readdirSync(latest)) fs.linkSync(path.join(latest, f), path.join(`${kept}.tmp`, f));
  fs.renameSync(`${kept}.tmp`, kept);
}

/**
 * A training run opened on its dataset and model: step by step control (train() loops over it), plus the gradients
 * and predictions of a micro-batch for tests and tools.
 */
export class Trainer implements AsyncDisposable {
  #native: NativeTrainer | undefined;
  #position: LoaderPosition;
  readonly #metricsFile: string;

  private constructor(native: NativeTrainer, readonly options: Resolved, readonly dims: NativeTrainerDims,
    readonly dataset: Dataset, readonly statistics: DatasetStatistics, private readonly loader: BatchLoader,
    private readonly tokenizer: PromptTokenizer, private readonly progress: ProgressRelay) {
    this.#native = native;
    this.#position = loader.position;
    this.#metricsFile = path.join(options.out, 'metrics.jsonl');
  }

  /** Loads the model (or the latest checkpoint of `out` with `resume`), opens the dataset and checks they fit. */
  static async create(options: TrainOptions): Promise<Trainer> {
    const o = resolve(options);
    const status = (line: string) => options.onStatus?.(line);
    const checkpoints = path.join(o.out, 'checkpoints');
    const latest = latestCheckpoint(checkpoints);
    if (latest && !o.resume)
      throw new ConfigError(`${o.out} holds a training run (${latest}); pass resume (--resume) to continue it, or another out`);
    const state = o.resume && latest ? readState(latest, o) : undefined;
    if (state) {
      status(`resuming from step ${state.step} of ${o.steps} (${latest})`);
      const changes = adjustedOptions(state, o);
      if (changes) status(`resume: ${changes}; the learning-rate schedule continues with the new values from step ` +
        `${state.step} (an uninterrupted run with them would differ)`);
    } else if (o.resume) status(`resume: no checkpoint in ${checkpoints}; starting at step 0`);
    status(`loading ${o.init} (frozen VLM, head${state ? ', checkpoint' : ''})`);

    const run = resolveRunSpec(o.init, { statistics: false });  // the init run's own statistics are not used
    const tokenizer = await PromptTokenizer.load(o.init, { vocabSize: run.backbone.llm.vocabSize });
    const progress = new ProgressRelay(options.onProgress);
    const native = await createNativeTrainer(o, run, state && { dir: latest!, state }, options.onProgress && progress.deliver);
    try {
      const dims = native.dims();
      if (dims.numImages > 2) throw new ConfigError(`${o.init}: ${dims.numImages} images per observation; datasets give a primary and a wrist camera`);
      status(`opening ${o.data}`);
      const dataset = await openDataset(o.data, { ...o.dataset, chunk: dims.chunk, actionDim: dims.actionDim, proprioDim: dims.proprioDim });
      try {
        const short = (o.dataset.episodeEnd ?? 'drop') === 'drop' ? dataset.episodes.filter((e) => e.length < dims.chunk).length : 0;
        if (short > 0) {
          const warning = `${dataset.name}: ${short} of ${dataset.episodes.length} episodes are shorter than the ` +
            `${dims.chunk}-step action chunk and give no samples (dataset: { episodeEnd: 'repeat' } pads them instead)`;
          if (options.onStatus) status(`warning: ${warning}`);
          else process.emitWarning(warning, { code: 'M2VLA_TRAIN' });
        }
        if (dims.numImages === 2 && !dataset.hasWrist)
          throw new ShapeError(`${dataset.name}: no wrist camera, but the model takes 2 images per observation (primary, wrist)`);
        const loader = new BatchLoader(dataset, {
          batchSize: o.batchSize, seed: o.seed, position: state?.loader, rank: dims.rank, worldSize: dims.worldSize,
        });
        const statistics = computeStatistics(dataset);
        status(`dataset ${dataset.name}: ${dataset.episodes.length} episodes, ${dataset.numSamples} samples; statistics computed`);
        const trainer = new Trainer(native, o, dims, dataset, statistics, loader, tokenizer, progress);
        if (trainer.writes) {
          fs.mkdirSync(o.out, { recursive: true });
          writeDatasetStatistics(path.join(o.out, 'dataset_statistics.json'), dataset.name, statistics);
          trainer.#keepMetricsUpTo(dims.step);
        }
        return trainer;
      } catch (e) {
        await dataset.close();
        throw e;
      }
    } catch (e) {
      native.dispose();
      throw e;
    }
  }

  #trainer(what: string): NativeTrainer {
    if (!this.#native) throw new DisposedError(`Trainer: ${what}() after dispose()`);
    return this.#native;
  }

  /** Whether this process writes `out` (metrics, checkpoints, the run directory): rank 0, or the only process. */
  get writes(): boolean {
    return this.dims.rank === 0;
  }

  /** Whether the last step ended with a stop request (of any process, when data-parallel). */
  get stopAgreed(): boolean {
    return this.#stopAgreed;
  }
  #stopAgreed = false;

  /** Optimizer steps done (a resumed run starts at its checkpoint's). */
  get stepsDone(): number {
    return this.dims.step + this.#stepsHere;
  }
  #stepsHere = 0;

  /** The loader position after the batches of the last completed step (what a checkpoint saves). */
  get position(): LoaderPosition {
    return this.#position;
  }

  /** The next micro-batch from the shuffled loader, or the given sample indices. */
  async readBatch(indices?: number[]): Promise<PackedBatch> {
    if (indices) {
      const samples = await Promise.all(indices.map((i) => this.dataset.sample(i)));
      const batch: Batch = {
        images: {
          primary: samples.map((s) => s.images.primary),
          ...(this.dataset.hasWrist && { wrist: samples.map((s) => s.images.wrist!) }),
        },
        instructions: samples.map((s) => s.instruction), indices, position: this.#position,
        states: Float32Array.from(samples.flatMap((s) => Array.from(s.state))),
        actions: Float32Array.from(samples.flatMap((s) => Array.from(s.actions))),
      };
      return this.#pack(batch);
    }
    return this.#pack(await this.loader.next());
  }

  /** The micro-batches of the next optimizer step. */
  async readStep(): Promise<PackedBatch[]> {
    const out: PackedBatch[] = [];
    for (let i = 0; i < this.options.accum; i++) out.push(await this.readBatch());
    return out;
  }

  #promptIds = new Map<string, number[]>();

  #pack(batch: Batch): PackedBatch {
    const n = batch.indices.length, withWrist = this.dims.numImages === 2;
    const frames = [];
    for (let b = 0; b < n; b++) {
      frames.push(batch.images.primary[b]);
      if (withWrist) frames.push(batch.images.wrist![b]);
    }
    const prompts = batch.instructions.map((text) => {
      let ids = this.#promptIds.get(text);
      if (!ids) this.#promptIds.set(text, ids = this.tokenizer.promptIds(text));
      return ids;
    });
    const promptIds = BigInt64Array.from(prompts.flat(), (id) => BigInt(id));
    const binding = getBinding();
    const normalize = (values: Float32Array, stats: FeatureStatistics) =>
      Float32Array.from(binding.normalizeBounds({ values: Float64Array.from(values), ...boundsStats(stats) }));
    return {
      batch: {
        frames, promptIds, promptLengths: prompts.map((p) => p.length),
        proprio: normalize(batch.states, this.statistics.proprio), actions: normalize(batch.actions, this.statistics.action),
      },
      position: batch.position,
      indices: batch.indices,
    };
  }

  /**
   * One optimizer step over `batches` (default: the next ones); appends its line to metrics.jsonl. Data-parallel,
   * every process calls it for every step; `stop` asks all of them to stop after this step (see stopAgreed).
   */
  async step(batches?: PackedBatch[], options: { stop?: boolean } = {}): Promise<StepMetrics> {
    checkOptions(options, ['stop'], 'Trainer.step');
    const native = this.#trainer('step');
    const micro = batches ?? await this.readStep();
    const { stop, ...result } = await runTorchJob(() => native.step({ microBatches: micro.map((m) => m.batch), stop: options.stop }));
    this.#stepsHere++;
    this.#stopAgreed = stop;
    this.#position = micro[micro.length - 1].position;
    const metrics: StepMetrics = { ...result, epoch: this.#position.epoch };
    if (this.writes) fs.appendFileSync(this.#metricsFile, `${JSON.stringify(metrics)}\n`);
    await this.progress.delivered(result.step);
    this.progress.rethrow();
    return metrics;
  }

  /** Gradients of one micro-batch's loss by parameter name (nothing updated; the generator advances). */
  gradients(batch: PackedBatch): Promise<Record<string, NativeTensor>> {
    const native = this.#trainer('gradients');
    return runTorchJob(() => native.gradients(batch.batch));
  }

  /** Normalized actions [B, chunk, actionDim] of the model as it is now, computed as inference does. */
  predict(batch: PackedBatch, seed?: number): Promise<{ normalized: Float32Array; shape: [number, number, number] }> {
    const native = this.#trainer('predict');
    return runTorchJob(() => native.predict(batch.batch, { seed }));
  }

  /** Saves a checkpoint of the state after the last step (rank 0 only: the ranks' states are the same); returns its directory. */
  async checkpoint(): Promise<string> {
    const native = this.#trainer('checkpoint');
    const state: TrainerState = {
      format: STATE_FORMAT, step: this.stepsDone, loader: this.#position, fixed: fixedOptions(this.options),
      adjustable: adjustableOptions(this.options),
      head: { numHeads: this.dims.numHeads, chunk: this.dims.chunk },
      savedAt: new Date().toISOString(),
    };
    const root = path.join(this.options.out, 'checkpoints');
    if (!this.writes) return path.join(root, `step-${String(this.stepsDone).padStart(8, '0')}`);
    if (this.options.keepCheckpoints) keepLatest(root);
    return runTorchJob(() => native.saveCheckpoint({ root, stateJson: `${JSON.stringify(state, null, 2)}\n` }));
  }

  /** Writes the run directory `out` (rank 0 only): configuration and tokenizer files of the init run, the trained weights. */
  async exportRun(): Promise<string> {
    const native = this.#trainer('exportRun');
    const { out } = this.options;
    if (!this.writes) return out;
    await writeRunDir(native, this.options, this.dims, out,
      (file) => writeDatasetStatistics(file, this.dataset.name, this.statistics));
    return out;
  }

  /** A resumed run's metrics.jsonl keeps the lines of the steps its checkpoint had done. */
  #keepMetricsUpTo(step: number): void {
    if (!fs.existsSync(this.#metricsFile)) return;
    // A line torn by a crash mid-append (or any unreadable one) is dropped: the metrics of the steps kept are whole.
    const stepOf = (line: string): number | undefined => {
      try {
        const v = JSON.parse(line) as { step?: unknown } | null;
        return typeof v?.step === 'number' ? v.step : undefined;
      } catch {
        return undefined;
      }
    };
    const lines = fs.readFileSync(this.#metricsFile, 'utf8').split('\n').filter((l) => (stepOf(l) ?? Infinity) <= step);
    writeFileAtomic(this.#metricsFile, lines.map((l) => `${l}\n`).join(''));
  }

  async dispose(): Promise<void> {
    this.#native?.dispose();
    this.#native = undefined;
    await this.dataset.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** The native trainer for resolved options, from the init run or (`resume`) a checkpoint's step directory. */
function createNativeTrainer(o: Resolved, run: RunSpec, resume: { dir: string; state: TrainerState } | undefined,
  onProgress: ((e: NativeTrainProgress) => void) | undefined): Promise<NativeTrainer> {
  const { backbone } = run;
  return runTorchJob(() => getBinding().createTrainer({
    modelPath: run.files.model,
    backbone,
    preprocess: backbone.preprocessing,
    actionHeadPath: run.files.actionHead,
    proprioProjectorPath: run.files.proprioProjector,
    resumeFrom: resume?.dir,
    head: {
      config: {
        ...run.head, ...resume?.state.head, objective: o.objective, ablation: o.ablation, numPatches: backbone.numImages * (backbone.imageSize / backbone.featurizer.patchSize) ** 2,
        numActionQueries: backbone.numActionQueries, denoise: { initSeed: o.seed },
      },
    },
    lr: o.lr, steps: o.steps, warmup: o.warmup, schedule: o.schedule, decayAt: o.decayAt, gamma: o.gamma,
    beta1: o.betas[0], beta2: o.betas[1], weightDecay: o.weightDecay, eps: o.eps, accumulation: o.accum,
    clipNorm: o.clipNorm, memorySampleRate: o.memorySampleRate, bf16: o.bf16, device: o.device, prefixTrick: o.prefixTrick,
    imageAugmentation: o.imageAugmentation, seed: o.seed,
    threads: o.threads, distributed: o.distributed, onProgress,
  }));
}

/**
 * A run directory in `dir`: the trained weights, the init run's configuration and tokenizer files, the statistics,
 * and for an ablation config.json's "m2vla_head" (an ablated head's checkpoint cannot show every dim: no-mol has no
 * k_adapter for the head count, no-msm no memory_value_proj for the chunk; and loaders must know the variant).
 */
async function writeRunDir(native: NativeTrainer, o: Resolved, dims: NativeTrainerDims, dir: string,
  writeStatistics: (file: string) => void): Promise<void> {
  await runTorchJob(() => native.exportRun({ dir }));
  for (const file of RUN_FILES) {
    const from = path.join(o.init, file);
    if (fs.existsSync(from)) fs.copyFileSync(from, path.join(dir, file));
  }
  writeStatistics(path.join(dir, 'dataset_statistics.json'));
  if (o.ablation === 'none') return;
  const file = path.join(dir, 'config.json');
  const config = readJson(file);
  const recorded: RecordedHeadConfig = { ablation: o.ablation, num_heads: dims.numHeads, chunk: dims.chunk };
  writeFileAtomic(file, `${JSON.stringify({ ...config, [HEAD_CONFIG_KEY]: recorded }, null, 2)}\n`);
}

export interface ExportOptions {
  /** The checkpoint's step (default: the latest). */
  step?: number;
  /** Where the run directory goes (default: <out>/export/step-NNNNNNNN). */
  to?: string;
  threads?: number;
}

const EXPORT_KEYS = optionKeys<ExportOptions>({ step: true, to: true, threads: true });

/**
 * Turns a checkpoint of the training run in `out` (an interrupted run's too) into a run directory that loadPolicy and
 * `m2vla serve` load: the same files a finished train() writes into `out`. Returns its path.
 */
export async function exportCheckpoint(out: string, options: ExportOptions = {}): Promise<string> {
  checkOptions(options, EXPORT_KEYS, 'exportCheckpoint');
  const root = path.join(path.resolve(out), 'checkpoints');
  const stepDirs = (at: string) => (fs.existsSync(at) ? fs.readdirSync(at).filter((d) => /^step-\d{8}$/.test(d)).map((d) => path.join(at, d)) : []);
  const all = [...stepDirs(root), ...stepDirs(path.join(root, 'kept'))];
  if (all.length === 0) throw new ConfigError(`${out}: no checkpoints (expected ${root}/step-NNNNNNNN from train())`);
  let dir: string;
  if (options.step === undefined) dir = latestCheckpoint(root) ?? all[0];
  else {
    const name = `step-${String(integer(options.step, 'step', 0)).padStart(8, '0')}`;
    const found = all.find((d) => path.basename(d) === name);
    if (!found) {
      const have = [...new Set(all.map((d) => Number(path.basename(d).slice(5))))].sort((a, b) => a - b);
      throw new ConfigError(`${out}: no checkpoint of step ${options.step}; it has ${have.join(', ')} ` +
        '(training keeps only its latest checkpoint unless keepCheckpoints / --keep-checkpoints)');
    }
    dir = found;
  }
  const state = readStateFile(dir);
  const f = state.fixed as Record<string, never>, a = (state.adjustable ?? {}) as Record<string, never>;
  const o = resolve({
    data: f.data, init: f.init, out, steps: Math.max(1, a.steps ?? state.step), batchSize: f.batchSize, lr: a.lr ?? 1e-4,
    objective: f.objective, ablation: f.ablation, accum: f.accum, seed: f.seed, bf16: f.bf16,
    memorySampleRate: f.memorySampleRate, imageAugmentation: f.imageAugmentation, threads: options.threads,
  });
  const statistics = path.join(o.out, 'dataset_statistics.json');
  if (!fs.existsSync(statistics)) throw new ConfigError(`${statistics}: missing (train() writes it when it starts)`);
  const to = path.resolve(options.to ?? path.join(o.out, 'export', path.basename(dir)));
  const native = await createNativeTrainer(o, resolveRunSpec(o.init, { statistics: false }), { dir, state }, undefined);
  try {
    fs.mkdirSync(to, { recursive: true });
    await writeRunDir(native, o, native.dims(), to, (target) => fs.copyFileSync(statistics, target));
  } finally {
    native.dispose();
  }
  return to;
}

/**
 * Hands the addon's progress events (a thread-safe function, queued from the worker thread) to the user's callback.
 * They can reach the JS thread after the step's promise settles: step() waits for the step's event, so the callback
 * has seen step N (and could abort) before step N+1 starts. An error the callback throws is rethrown by step().
 */
class ProgressRelay {
  #error: unknown;
  #delivered = 0;
  #waiting: { step: number; resolve: () => void } | undefined;

  constructor(private readonly callback?: (event: TrainProgress) => void) {}

  deliver = (event: NativeTrainProgress): void => {
    try {
      this.callback?.(event);
    } catch (e) {
      this.#error ??= e;
    }
    if (event.kind !== 'step') return;
    this.#delivered = event.step;
    if (this.#waiting && this.#waiting.step <= event.step) {
      this.#waiting.resolve();
      this.#waiting = undefined;
    }
  };

  delivered(step: number): Promise<void> {
    if (!this.callback || this.#delivered >= step) return Promise.resolve();
    return new Promise((resolve) => { this.#waiting = { step, resolve }; });
  }

  rethrow(): void {
    const error = this.#error;
    this.#error = undefined;
    if (error !== undefined) throw error;
  }
}

/**
 * Options a resumed run must share with the run it continues, or its trajectory would differ. `batchSize` is the
 * global batch (batchSize × processes): a run can resume with another number of processes that keeps it.
 */
function fixedOptions(o: Resolved): Record<string, unknown> {
  return {
    data: o.data, init: o.init, batchSize: o.batchSize * (o.distributed?.worldSize ?? 1), accum: o.accum, seed: o.seed,
    objective: o.objective, bf16: o.bf16, memorySampleRate: o.memorySampleRate, imageAugmentation: o.imageAugmentation,
    ablation: o.ablation,
  };
}

/** Options a resume may change: the schedule is rebuilt from them (so the trajectory then differs from an uninterrupted run). */
function adjustableOptions(o: Resolved): Record<string, unknown> {
  return {
    steps: o.steps, lr: o.lr, warmup: o.warmup, schedule: o.schedule, decayAt: o.decayAt, gamma: o.gamma, clipNorm: o.clipNorm,
    weightDecay: o.weightDecay, betas: o.betas, eps: o.eps, prefixTrick: o.prefixTrick,
  };
}

/** "lr 0.0001 -> 0.0002, steps 100 -> 200" for the adjustable options a resume changes (undefined: none). */
function adjustedOptions(state: TrainerState, o: Resolved): string | undefined {
  if (!state.adjustable) return undefined;
  const now = adjustableOptions(o);
  const changed = Object.keys(now).filter((k) => JSON.stringify(now[k]) !== JSON.stringify(state.adjustable![k]));
  return changed.length ? changed.map((k) => `${k} ${JSON.stringify(state.adjustable![k])} -> ${JSON.stringify(now[k])}`).join(', ') : undefined;
}

/** A checkpoint's trainer_state.json, checked for its format (torn or foreign files are ConfigErrors). */
function readStateFile(dir: string): TrainerState {
  const file = path.join(dir, 'trainer_state.json');
  const state = readJson(file) as unknown as TrainerState;
  if (!state.fixed || typeof state.fixed !== 'object') throw new ConfigError(`${file}: no "fixed" options (not a trainer_state.json)`);
  if (state.format !== STATE_FORMAT) throw new ConfigError(`${file}: format '${state.format}' is not ${STATE_FORMAT}`);
  return state;
}

function readState(dir: string, o: Resolved): TrainerState {
  const state = readStateFile(dir);
  const file = path.join(dir, 'trainer_state.json');
  const now = fixedOptions(o);
  const changed = Object.keys(now).filter((k) => JSON.stringify(now[k]) !== JSON.stringify(state.fixed[k]));
  if (changed.length > 0) {
    throw new ConfigError(`resume: ${changed.map((k) => `${k} was ${JSON.stringify(state.fixed[k])}, now ${JSON.stringify(now[k])}`)
      .join('; ')} (${file}); an exact resume needs them unchanged`);
  }
  return state;
}

/**
 * Trains to `steps` (resuming `out`'s checkpoint with `resume`), saving a checkpoint every `checkpointEvery` steps
 * and at the end, then exports the run directory. Resolves with the steps' metrics.
 */
export async function train(options: TrainOptions): Promise<TrainResult> {
  await using trainer = await Trainer.create(options);
  const { steps, checkpointEvery } = trainer.options;
  const { signal } = options;
  const metrics: StepMetrics[] = [];
  // Data-parallel processes stop together, after the step in which one of them asked to (an abort while a step runs
  // is asked for with the next one); a single process stops as soon as it is aborted.
  const alone = trainer.dims.worldSize === 1;
  const stopping = () => (alone ? signal?.aborted === true : trainer.stopAgreed);
  if (trainer.stepsDone < steps) options.onStatus?.(`reading the first batch; training steps ${trainer.stepsDone + 1}-${steps}`);
  let next = trainer.stepsDone < steps ? trainer.readStep() : undefined;
  try {
    while (next && !stopping()) {
      const batches = await next;
      next = trainer.stepsDone + 1 < steps ? trainer.readStep() : undefined;
      const m = await trainer.step(batches, { stop: signal?.aborted });
      metrics.push(m);
      if (m.step % checkpointEvery === 0 && m.step < steps && !stopping()) await trainer.checkpoint();
    }
  } finally {
    await next?.catch(() => undefined);  // a read ahead still in flight must finish before the dataset closes
  }
  const interrupted = trainer.stepsDone < steps;
  const checkpoint = await trainer.checkpoint();
  const runDir = interrupted ? undefined : await trainer.exportRun();
  return { steps: trainer.stepsDone, metrics, interrupted, checkpoint, runDir };
}
