/**
 * Skills added without training: demonstrations become (key, action chunk) rows of a loaded policy's MSM bank,
 * built the way training builds them (SPEC §3.2): the key is the query key act() computes for the step's
 * observation (per key layer, the mean over the vision positions of that hidden state, concatenated), the value
 * the chunk of the next `chunk` actions normalized with the run's q01/q99 statistics. Rows are appended FIFO into the
 * bounded bank, as the trainer does; retrieval finds them from the next act() on.
 *
 *   const added = await policy.addSkills('demos/new_task.hdf5');   // or a Dataset, or SkillEpisode[]
 *   await policy.saveSkills('runs/with-new-task');                // a run directory loadPolicy reads back
 */
import fs from 'node:fs';
import path from 'node:path';
import { EpisodeDataset, type Dataset, type Frames } from './data/dataset.js';
import { ConfigError, InputError, ShapeError } from './errors.js';
import type { NormalizationStatistics } from './head.js';
import type { ImageInput } from './images.js';
import { getBinding, type NativeHead } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import type { Observation } from './observation.js';

/** One demonstration in memory: per step the cameras, and the rows of raw state and action. */
export interface SkillEpisode {
  /** The task instruction (templated and tokenized as act() does), or the prompt's token ids as Observation.inputIds. */
  instruction?: string;
  inputIds?: Observation['inputIds'];
  /** One entry per step (the wrist camera is needed by two-camera models, refused by one-camera models). */
  images: Array<{ primary: ImageInput; wrist?: ImageInput }>;
  /** steps × proprioDim raw states, row-major. */
  states: ArrayLike<number>;
  /** steps × actionDim actions in the space the run's statistics describe (as the dataset readers give them). */
  actions: ArrayLike<number>;
}

/** A LIBERO HDF5 file / LeRobot directory path, an opened Dataset, or episodes in memory. */
export type SkillSource = string | Dataset | readonly SkillEpisode[];

export interface AddSkillsOptions {
  /** Use every stride-th step of each episode (default 1: every step whose whole chunk lies in the episode). */
  stride?: number;
  /** Observations per native call while computing keys (default 8). */
  batchSize?: number;
}

export interface AddSkillsResult {
  /** Entries appended (at most the bank's capacity: beyond it only the newest stay, FIFO). */
  added: number;
  /** Entries the source gave (before the capacity bound). */
  offered: number;
  /** Older rows dropped to make room (FIFO). */
  evicted: number;
  /** The bank's rows in use after the call, and its capacity. */
  bankSize: number;
  capacity: number;
  /** Bank rows of the new entries: [firstRow, firstRow + added) (act()'s retrieval indices). */
  firstRow: number;
}

/** What the Policy lends this module (lib/policy.ts). */
export interface SkillHost {
  runDir: string;
  head: { native: NativeHead; statistics?: NormalizationStatistics; dims: { chunk: number; actionDim: number; proprioDim: number; keyDim: number; bankCapacity: number; ablation: string } };
  numImages: number;
  /** act()'s query keys for these observations, [n, keyDim] row-major. */
  queryKeys(observations: Observation[]): Promise<Float32Array>;
  /** Called with the bank size after a change. */
  bankChanged(size: number): void;
  /** Sources added since the run was loaded (recorded in the saved run's skills.json). */
  added: Array<{ source: string; entries: number }>;
}

/** One bank entry to be: reads its observation (frames from disk for datasets) and raw action chunk when called. */
type SkillStep = () => Promise<{ observation: Observation; actions: Float32Array }>;

/** The steps a source offers, each with its raw action chunk; dims and the camera layout are checked first. */
async function stepsOf(host: SkillHost, source: SkillSource, stride: number): Promise<{ steps: SkillStep[]; name: string; close?: () => Promise<void> }> {
  const { chunk, actionDim, proprioDim } = host.head.dims;
  const twoCameras = host.numImages === 2;
  if (typeof source === 'string' || !Array.isArray(source)) {
    let dataset: Dataset, close: (() => Promise<void>) | undefined;
    if (typeof source === 'string') {
      const { openDataset } = await import('./train.js');
      dataset = await openDataset(source, { chunk, actionDim, proprioDim });
      close = () => dataset.close();
    } else {
      dataset = source as Dataset;
      if (dataset.chunk !== chunk) throw new ShapeError(`addSkills: dataset "${dataset.name}" makes chunks of ${dataset.chunk} steps, the model ${chunk}`);
      if (dataset.actionDim !== actionDim) throw new ShapeError(`addSkills: dataset "${dataset.name}": ${dataset.actionDim} action dims, the model expects ${actionDim}`);
      if (dataset.proprioDim !== proprioDim) throw new ShapeError(`addSkills: dataset "${dataset.name}": ${dataset.proprioDim} proprio dims, the model expects ${proprioDim}`);
    }
    try {
      checkCameras(dataset.hasWrist, twoCameras, `dataset "${dataset.name}"`);
    } catch (e) {
      await close?.();
      throw e;
    }
    if (stride > 1 && !(dataset instanceof EpisodeDataset)) {
      await close?.();
      throw new InputError('addSkills: stride > 1 needs a dataset of episodes (the LIBERO and LeRobot readers)');
    }
    const steps: SkillStep[] = [];
    for (let i = 0; i < dataset.numSamples; i++) {
      // The stride counts steps within each episode.
      if (stride > 1 && (dataset as EpisodeDataset).locate(i).step % stride !== 0) continue;
      steps.push(() => sampleStep(dataset, i, twoCameras));
    }
    return { steps, name: typeof source === 'string' ? source : dataset.name, close };
  }
  const episodes = source as readonly SkillEpisode[];
  if (episodes.length === 0) throw new InputError('addSkills: no episodes given');
  const steps: SkillStep[] = [];
  episodes.forEach((ep, e) => {
    const where = `addSkills: episodes[${e}]`;
    if (!ep || (ep.inputIds === undefined && (typeof ep.instruction !== 'string' || ep.instruction.trim() === ''))) {
      throw new InputError(`${where}.instruction: expected a non-empty string (or inputIds)`);
    }
    const prompt = ep.inputIds !== undefined ? { inputIds: ep.inputIds } : { instruction: ep.instruction };
    if (!Array.isArray(ep.images)) throw new InputError(`${where}.images: expected one entry per step`);
    const n = ep.images.length;
    if (ep.states?.length !== n * proprioDim) throw new ShapeError(`${where}.states: expected ${n} steps × ${proprioDim} proprio dims = ${n * proprioDim} values, got ${ep.states?.length}`);
    if (ep.actions?.length !== n * actionDim) throw new ShapeError(`${where}.actions: expected ${n} steps × ${actionDim} action dims = ${n * actionDim} values, got ${ep.actions?.length}`);
    finite(ep.states, `${where}.states`);
    finite(ep.actions, `${where}.actions`);
    ep.images.forEach((im, t) => checkCameras(im?.wrist !== undefined, twoCameras, `${where}.images[${t}]`));
    for (let t = 0; t + chunk <= n; t += stride) {
      const actions = Float32Array.from({ length: chunk * actionDim }, (_, k) => ep.actions[t * actionDim + k]);
      const state = Float32Array.from({ length: proprioDim }, (_, k) => ep.states[t * proprioDim + k]);
      const images = twoCameras ? { primary: ep.images[t].primary, wrist: ep.images[t].wrist } : { primary: ep.images[t].primary };
      steps.push(async () => ({ observation: { images, ...prompt, state }, actions }));
    }
  });
  return { steps, name: `${episodes.length} episode${episodes.length === 1 ? '' : 's'} in memory` };
}

function checkCameras(hasWrist: boolean, twoCameras: boolean, where: string): void {
  if (twoCameras && !hasWrist) throw new ShapeError(`addSkills: ${where} has no wrist camera; this model takes two cameras (primary + wrist)`);
  if (!twoCameras && hasWrist) {
    throw new ShapeError(`addSkills: ${where} has a wrist camera; this model takes one camera (its skill keys would not describe the same view)`);
  }
}

function finite(values: ArrayLike<number>, where: string): void {
  for (let i = 0; i < values.length; i++) {
    if (!Number.isFinite(values[i])) throw new InputError(`${where}: value ${i} is ${values[i]}; expected finite numbers`);
  }
}

async function sampleStep(dataset: Dataset, i: number, twoCameras: boolean) {
  const s = await dataset.sample(i);
  const frames: Frames = s.images;
  const observation: Observation = {
    images: twoCameras ? { primary: frames.primary, wrist: frames.wrist } : { primary: frames.primary },
    instruction: s.instruction, state: s.state,
  };
  return { observation, actions: s.actions };
}

function option(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw new InputError(`addSkills: ${name}: expected an integer >= 1, got ${String(value)}`);
  return value;
}

export async function addSkills(host: SkillHost, source: SkillSource, options: AddSkillsOptions = {}): Promise<AddSkillsResult> {
  if (options === null || typeof options !== 'object') throw new InputError('addSkills: options: expected an object');
  for (const key of Object.keys(options)) {
    if (key !== 'stride' && key !== 'batchSize') throw new InputError(`addSkills: unknown option '${key}' (options: stride, batchSize)`);
  }
  const stride = option(options.stride, 'stride', 1), batchSize = option(options.batchSize, 'batchSize', 8);
  const { dims, statistics } = host.head;
  if (dims.ablation === 'no-msm') throw new ConfigError("addSkills: this policy is the 'no-msm' ablation, which has no skill bank");
  if (!statistics) throw new ConfigError('addSkills: the policy has no dataset statistics to normalize actions with');
  const { steps, name, close } = await stepsOf(host, source, stride);
  let keys: Float32Array, values: Float32Array, kept: SkillStep[];
  try {
    if (steps.length === 0) throw new InputError(`addSkills: ${name} gives no step with a whole chunk of ${dims.chunk} actions`);
    // Beyond the capacity only the newest rows would stay (FIFO): the older ones are not computed at all.
    kept = steps.slice(Math.max(0, steps.length - dims.bankCapacity));
    const per = dims.chunk * dims.actionDim;
    keys = new Float32Array(kept.length * dims.keyDim);
    const raw = new Float32Array(kept.length * per);
    for (let b = 0; b < kept.length; b += batchSize) {
      const group = kept.slice(b, b + batchSize);
      const loaded = await Promise.all(group.map((step) => step()));
      keys.set(await host.queryKeys(loaded.map((l) => l.observation)), b * dims.keyDim);
      loaded.forEach((l, j) => raw.set(l.actions, (b + j) * per));
    }
    finite(raw, `addSkills: ${name}: actions`);
    const bounds = statistics.action;
    values = Float32Array.from(getBinding().normalizeBounds({
      values: Float64Array.from(raw), q01: bounds.q01, q99: bounds.q99, mask: Uint8Array.from(bounds.mask, Number),
    }));
  } finally {
    await close?.();
  }
  const before = host.head.native.dims().bankSize;
  const size = await runTorchJob(() => host.head.native.addSkills({ keys, values }));
  host.bankChanged(size);
  host.added.push({ source: name, entries: kept.length });
  const evicted = before + kept.length - size;
  return { added: kept.length, offered: steps.length, evicted, bankSize: size, capacity: dims.bankCapacity, firstRow: size - kept.length };
}

/** The action-head checkpoints of a run directory (both formats when both are there: each gets the grown bank). */
function headCheckpoints(runDir: string): string[] {
  const files = fs.readdirSync(runDir).filter((f) => f === 'action_head.safetensors' || (f.startsWith('action_head--') && f.endsWith('checkpoint.pt')));
  if (files.length === 0) throw new ConfigError(`saveSkills: ${runDir} holds no action_head checkpoint`);
  return files;
}

/** Hard links where the file system allows them (the VLM weights are large and never rewritten in place), else copies. */
function linkTree(from: string, to: string, skip: Set<string>): void {
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const a = path.join(from, entry.name), b = path.join(to, entry.name);
    if (entry.isDirectory()) linkTree(a, b, new Set());
    else {
      try {
        fs.linkSync(a, b);
      } catch {
        fs.copyFileSync(a, b);
      }
    }
  }
}

function writeSkillsLog(dir: string, from: string, host: SkillHost): void {
  const file = path.join(from, 'skills.json');
  const log = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as { added: unknown[] }) : { added: [] };
  const at = new Date().toISOString();
  log.added.push(...host.added.map((a) => ({ ...a, at })));
  const out = path.join(dir, 'skills.json');
  fs.rmSync(out, { force: true });  // a hard link to the source's log must not be written through
  fs.writeFileSync(`${out}.tmp`, `${JSON.stringify(log, null, 2)}\n`);
  fs.renameSync(`${out}.tmp`, out);
}

/**
 * Writes the policy's run directory with the bank as it is now into `out`: a new directory (every other file linked
 * or copied from the loaded run, made under a temporary name and renamed when complete), or the loaded run itself
 * (its action-head checkpoints replaced, each atomically). skills.json lists the sources added. Returns `out`.
 */
export async function saveSkills(host: SkillHost, out: string): Promise<string> {
  if (typeof out !== 'string' || out === '') throw new InputError('saveSkills: out: expected a directory path');
  const from = path.resolve(host.runDir), to = path.resolve(out);
  const files = headCheckpoints(from);
  const rewrite = (dir: string) => runTorchJob(async () => {
    for (const f of files) await host.head.native.writeBank({ from: path.join(from, f), to: path.join(dir, f) });
  });
  if (to === from) {
    await rewrite(from);
    writeSkillsLog(from, from, host);
    return to;
  }
  if (fs.existsSync(to)) throw new InputError(`saveSkills: ${to} exists; give a new directory, or the loaded run (${from}) to update it`);
  const tmp = `${to}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    linkTree(from, tmp, new Set([...files, 'skills.json']));
    await rewrite(tmp);
    writeSkillsLog(tmp, from, host);
    fs.renameSync(tmp, to);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return to;
}
