/**
 * LeRobot datasets (codebase v2.x and v3.x), read with hyparquet; video-backed cameras decoded with the ffmpeg CLI.
 *
 * - `meta/info.json`: `codebase_version`, `fps`, `features` (dtype `image` | `video` for cameras, shapes),
 *   `data_path` / `video_path` templates (Python format strings).
 * - v2.x: one parquet file per episode (`data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet`),
 *   `meta/episodes.jsonl` (episode_index, tasks, length), `meta/tasks.jsonl` (task_index, task), one mp4 per episode
 *   and camera.
 * - v3.x: many episodes per file (`data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet`), episodes in
 *   `meta/episodes/chunk-NNN/file-NNN.parquet` (data/chunk_index, data/file_index, dataset_from_index, dataset_to_index,
 *   videos/<key>/{chunk_index, file_index, from_timestamp}), tasks in `meta/tasks.parquet` (task, task_index); a
 *   camera's mp4 holds many episodes back to back, the frame of a step is at from_timestamp + timestamp (as
 *   lerobot's dataset_reader.py `_query_videos`).
 * Inline images are the Hugging Face `Image` feature: struct<bytes: PNG/JPEG, path>. int64 columns come back from
 * hyparquet as BigInt.
 *
 * Defaults: the state is `observation.state` (or `state`), the action `action` (or `actions`), the instruction the
 * step's task (`task_index`). Cameras: the wrist one is the first whose key says wrist/hand, else, with exactly two
 * cameras, the second (LeRobot's LIBERO sets name them `image` and `image2`); the primary one is the first other.
 * Frames are used as stored (no flip: LeRobot LIBERO sets were converted from the already flipped RLDS data) and
 * actions too (`invertGripper` maps a LIBERO gripper command to the reference's 1 = open / 0 = close).
 */
import fs from 'node:fs';
import path from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, type AsyncBuffer, type FileMetaData } from 'hyparquet';
import { compressors } from 'hyparquet-compressors';
import { InputError, ShapeError } from '../errors.js';
import { decodeImage, type RawImage } from '../images.js';
import { readJson, type Json } from '../json.js';
import {
  checkFinite, checkModelDim, EpisodeDataset, intOption, invertGripper, type Dataset, type DatasetOptions, type Episode, type Frames,
} from './dataset.js';
import { decodeVideoFrame, ffmpegAvailable } from './video.js';
import { checkOptions, optionKeys } from '../options.js';

export interface LeRobotOptions extends DatasetOptions {
  /** Camera feature keys; `wrist: null` reads no wrist camera. */
  primary?: string;
  wrist?: string | null;
  stateKey?: string;
  actionKey?: string;
  /** Map the last action dim from -1 open / +1 close to 1 - clip(a, 0, 1) (the reference's LIBERO gripper); default false. */
  invertGripper?: boolean;
  /** The ffmpeg command for video-backed cameras; default `ffmpeg` (from PATH). */
  ffmpeg?: string;
}

interface Feature {
  dtype: string;
  shape: number[];
  names?: unknown;
}

interface Camera {
  key: string;
  video: boolean;
  width: number;
  height: number;
}

/** Where one episode lives. */
interface EpisodeLocation {
  index: number;
  length: number;
  dataFile: string;
  firstRow: number;
  /** Per video camera key: the mp4 and the time of the episode's first frame in it. */
  videos: Map<string, { file: string; from: number }>;
}

function readMeta(file: string): Json {
  try {
    return readJson(file);
  } catch (e) {
    throw new InputError((e as Error).message, { cause: e });
  }
}

function readJsonLines(file: string): Json[] {
  let text;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new InputError(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  return text.split('\n').filter((l) => l.trim()).map((line, i) => {
    try {
      return JSON.parse(line) as Json;
    } catch (e) {
      throw new InputError(`${file}: line ${i + 1} is not JSON (${(e as Error).message})`, { cause: e });
    }
  });
}

/** A Python format template (`data/chunk-{chunk_index:03d}/...`) filled in. */
function formatPath(template: unknown, values: Record<string, string | number>, where: string): string {
  if (typeof template !== 'string') throw new InputError(`${where}: missing path template`);
  return template.replace(/\{(\w+)(?::0?(\d+)d)?\}/g, (_, key: string, width?: string) => {
    if (!(key in values)) throw new InputError(`${where}: unknown field {${key}} in '${template}'`);
    return width ? String(values[key]).padStart(Number(width), '0') : String(values[key]);
  });
}

/** A non-negative integer from a JSON or parquet value (int64 parquet columns are BigInt). */
function int(value: unknown, where: string): number {
  const n = typeof value === 'bigint' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 0)
    throw new InputError(`${where}: expected a non-negative integer, got ${String(value)}`);
  return n;
}

interface ParquetFile {
  file: AsyncBuffer;
  metadata: FileMetaData;
}

/** Parquet files opened once (footer parsed), for metadata and per-sample reads. */
class ParquetFiles {
  private readonly open = new Map<string, Promise<ParquetFile>>();

  get(file: string): Promise<ParquetFile> {
    let p = this.open.get(file);
    if (!p) {
      p = (async () => {
        try {
          const buffer = await asyncBufferFromFile(file);
          return { file: buffer, metadata: await parquetMetadataAsync(buffer) };
        } catch (e) {
          throw new InputError(`${file}: not a readable parquet file (${(e as Error).message})`, { cause: e });
        }
      })();
      this.open.set(file, p);
    }
    return p;
  }

  async requireColumns(file: string, columns: string[]): Promise<ParquetFile> {
    const opened = await this.get(file);
    const present = new Set(opened.metadata.schema.map((s) => s.name));
    const missing = columns.filter((c) => !present.has(c));
    if (missing.length > 0) throw new InputError(`${file}: no column ${missing.join(', ')}`);
    return opened;
  }

  async read(file: string, columns: string[], rowStart: number, rowEnd: number): Promise<Record<string, unknown>[]> {
    const { file: buffer, metadata } = await this.requireColumns(file, columns);
    try {
      return await parquetReadObjects({ file: buffer, metadata, columns, rowStart, rowEnd, compressors, utf8: false });
    } catch (e) {
      throw new InputError(`${file}: rows ${rowStart}..${rowEnd - 1} cannot be read (${(e as Error).message})`,
        { cause: e });
    }
  }

  async numRows(file: string): Promise<number> {
    return Number((await this.get(file)).metadata.num_rows);
  }
}

function pickKey(features: Record<string, Feature>, chosen: string | undefined, defaults: string[], what: string,
  where: string): string {
  const key = chosen ?? defaults.find((k) => k in features);
  if (!key || !(key in features))
    throw new InputError(`${where}: no ${what} feature (${chosen ? `'${chosen}'` : defaults.join(' or ')})`);
  return key;
}

function vectorSize(features: Record<string, Feature>, key: string, where: string): number {
  const { shape } = features[key];
  if (!Array.isArray(shape) || shape.length !== 1 || !Number.isInteger(shape[0]))
    throw new ShapeError(`${where}: feature '${key}' must be a vector, its shape is ${JSON.stringify(shape)}`);
  return shape[0];
}

function pickCameras(features: Record<string, Feature>, options: LeRobotOptions, where: string) {
  const cams = Object.keys(features).filter((k) => features[k].dtype === 'image' || features[k].dtype === 'video');
  const isWrist = (k: string) => /wrist|hand/i.test(k);
  const primaryKey = options.primary ?? cams.find((k) => !isWrist(k)) ?? cams[0];
  const others = cams.filter((k) => k !== primaryKey);
  const wristKey = options.wrist === null ? undefined
    : options.wrist ?? others.find(isWrist) ?? (cams.length === 2 ? others[0] : undefined);
  const camera = (key: string | undefined): Camera => {
    if (!key || !cams.includes(key))
      throw new InputError(`${where}: '${key ?? '(none)'}' is not a camera feature (cameras: ${cams.join(', ') || 'none'})`);
    const { shape, names, dtype } = features[key];
    if (!Array.isArray(shape) || shape.length !== 3 || !shape.every((n) => Number.isInteger(n) && n > 0))
      throw new ShapeError(`${where}: camera '${key}' has shape ${JSON.stringify(shape)}, expected H x W x 3`);
    // shapes are [height, width, channels] unless `names` says otherwise
    const named = Array.isArray(names) && names.includes('height') && names.includes('width');
    const height = named ? shape[names.indexOf('height')] : shape[0];
    const width = named ? shape[names.indexOf('width')] : shape[1];
    return { key, video: dtype === 'video', width, height };
  };
  return { primary: camera(primaryKey), wrist: wristKey === undefined ? undefined : camera(wristKey) };
}

function episodesV2(root: string, info: Json, videoKeys: string[], where: string): EpisodeLocation[] {
  const chunksSize = intOption(info.chunks_size ?? 1000, `${where} chunks_size`);
  const file = path.join(root, 'meta/episodes.jsonl');
  return readJsonLines(file).map((e) => {
    const index = int(e.episode_index, `${file} episode_index`);
    const values = { episode_chunk: Math.floor(index / chunksSize), episode_index: index };
    const videos = new Map(videoKeys.map((key) => [key, {
      file: path.join(root, formatPath(info.video_path, { ...values, video_key: key }, `${where} video_path`)),
      from: 0,
    }]));
    return {
      index, length: int(e.length, `${file} episode ${index} length`),
      dataFile: path.join(root, formatPath(info.data_path, values, `${where} data_path`)), firstRow: 0, videos,
    };
  }).sort((a, b) => a.index - b.index);
}

async function episodesV3(root: string, info: Json, videoKeys: string[], files: ParquetFiles, where: string):
  Promise<EpisodeLocation[]> {
  const dir = path.join(root, 'meta/episodes');
  let metaFiles: string[];
  try {
    metaFiles = (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith('.parquet')).sort();
  } catch (e) {
    throw new InputError(`${dir}: cannot read (${(e as Error).message})`, { cause: e });
  }
  if (metaFiles.length === 0) throw new InputError(`${dir}: no episode metadata (.parquet)`);
  const videoColumns = videoKeys.flatMap((k) => ['chunk_index', 'file_index', 'from_timestamp'].map((c) => `videos/${k}/${c}`));
  const columns = ['episode_index', 'length', 'data/chunk_index', 'data/file_index', 'dataset_from_index',
    'dataset_to_index', ...videoColumns];
  const episodes: (EpisodeLocation & { from: number })[] = [];
  for (const f of metaFiles) {
    const file = path.join(dir, f);
    for (const row of await files.read(file, columns, 0, await files.numRows(file))) {
      const index = int(row.episode_index, `${file} episode_index`);
      const at = `${file} episode ${index}`;
      const from = int(row.dataset_from_index, `${at} dataset_from_index`);
      const length = int(row.length, `${at} length`);
      if (int(row.dataset_to_index, `${at} dataset_to_index`) - from !== length)
        throw new InputError(`${at}: dataset_to_index - dataset_from_index differs from length ${length}`);
      const dataFile = path.join(root, formatPath(info.data_path, {
        chunk_index: int(row['data/chunk_index'], `${at} data/chunk_index`),
        file_index: int(row['data/file_index'], `${at} data/file_index`),
      }, `${where} data_path`));
      const videos = new Map(videoKeys.map((key) => {
        const v = (c: string) => row[`videos/${key}/${c}`];
        const file = path.join(root, formatPath(info.video_path, {
          video_key: key, chunk_index: int(v('chunk_index'), `${at} videos/${key}/chunk_index`),
          file_index: int(v('file_index'), `${at} videos/${key}/file_index`),
        }, `${where} video_path`));
        const start = v('from_timestamp');
        if (typeof start !== 'number' || !(start >= 0)) throw new InputError(`${at}: bad videos/${key}/from_timestamp`);
        return [key, { file, from: start }];
      }));
      episodes.push({ index, length, dataFile, firstRow: 0, videos, from });
    }
  }
  // Rows of a data file are its episodes in order: an episode's first row is its offset from the file's first.
  const fileStart = new Map<string, number>();
  for (const e of episodes) fileStart.set(e.dataFile, Math.min(fileStart.get(e.dataFile) ?? Infinity, e.from));
  for (const e of episodes) e.firstRow = e.from - fileStart.get(e.dataFile)!;
  return episodes.sort((a, b) => a.index - b.index);
}

async function tasksOf(root: string, v3: boolean, files: ParquetFiles): Promise<Map<number, string>> {
  const where = path.join(root, v3 ? 'meta/tasks.parquet' : 'meta/tasks.jsonl');
  const rows = v3 ? await files.read(where, ['task_index', 'task'], 0, await files.numRows(where)) : readJsonLines(where);
  return new Map(rows.map((r) => {
    if (typeof r.task !== 'string') throw new InputError(`${where}: task_index ${String(r.task_index)} has no task`);
    return [int(r.task_index, `${where} task_index`), r.task];
  }));
}

/** A row's vector cell (a JS array or typed array from hyparquet) copied into `out` at `offset`. */
function putVector(value: unknown, size: number, out: Float32Array, offset: number, where: string): void {
  const v = value as ArrayLike<number> | null;
  if (v === null || typeof v !== 'object' || v.length !== size)
    throw new ShapeError(`${where}: expected ${size} values, got ${v === null ? 'null' : (v.length ?? typeof v)}`);
  for (let k = 0; k < size; k++) out[offset + k] = v[k];
}

class LeRobotDataset extends EpisodeDataset {
  constructor(name: string, episodes: Episode[], actionDim: number, proprioDim: number,
    private readonly cameras: { primary: Camera; wrist?: Camera }, private readonly locations: EpisodeLocation[],
    private readonly timestamps: Float32Array[], private readonly files: ParquetFiles, private readonly fps: number,
    private readonly ffmpeg: string, flip: boolean, options: DatasetOptions) {
    super(name, episodes, actionDim, proprioDim, cameras.wrist !== undefined, flip, options);
  }

  private async frame(camera: Camera, episode: number, step: number): Promise<RawImage> {
    const loc = this.locations[episode];
    if (camera.video) {
      const { file, from } = loc.videos.get(camera.key)!;
      return decodeVideoFrame(this.ffmpeg, file, from + this.timestamps[episode][step], this.fps, camera.width,
        camera.height);
    }
    const row = loc.firstRow + step;
    const [cell] = await this.files.read(loc.dataFile, [camera.key], row, row + 1);
    const bytes = (cell?.[camera.key] as { bytes?: unknown } | null)?.bytes;
    const where = `${loc.dataFile} row ${row} ${camera.key}`;
    if (!(bytes instanceof Uint8Array)) throw new InputError(`${where}: no embedded image bytes`);
    return decodeImage(bytes, where);  // sharp's output buffer is the frame's one copy
  }

  protected async readFrames(episode: number, step: number): Promise<Frames> {
    const { primary, wrist } = this.cameras;
    const [p, w] = await Promise.all([this.frame(primary, episode, step),
      wrist ? this.frame(wrist, episode, step) : undefined]);
    return { primary: p, ...(w && { wrist: w }) };
  }

  async close(): Promise<void> {}
}

/** Opens a LeRobot dataset directory; metadata, low-dimensional data and file presence are checked before this resolves. */
export async function openLeRobot(root: string, options: LeRobotOptions = {}): Promise<Dataset> {
  checkOptions(options, optionKeys<LeRobotOptions>({
    chunk: true, episodeEnd: true, actionDim: true, proprioDim: true, flip: true, name: true, primary: true, wrist: true, stateKey: true, actionKey: true, invertGripper: true, ffmpeg: true,
  }), 'openLeRobot');
  const infoFile = path.join(root, 'meta/info.json');
  const info = readMeta(infoFile);
  const version = String(info.codebase_version ?? '');
  const v3 = /^v3\./.test(version);
  if (!v3 && !/^v2\./.test(version))
    throw new InputError(`${infoFile}: codebase_version '${version}' is not supported (v2.x, v3.x)`);
  const features = info.features as Record<string, Feature> | undefined;
  if (!features || typeof features !== 'object') throw new InputError(`${infoFile}: no features`);
  const fps = info.fps;
  if (typeof fps !== 'number' || !(fps > 0)) throw new InputError(`${infoFile}: fps must be a positive number`);

  const cameras = pickCameras(features, options, infoFile);
  const stateKey = pickKey(features, options.stateKey, ['observation.state', 'state'], 'state', infoFile);
  const actionKey = pickKey(features, options.actionKey, ['action', 'actions'], 'action', infoFile);
  const proprioDim = vectorSize(features, stateKey, infoFile);
  const actionDim = vectorSize(features, actionKey, infoFile);
  checkModelDim(actionDim, options.actionDim, 'action', `${infoFile} '${actionKey}'`);
  checkModelDim(proprioDim, options.proprioDim, 'proprio', `${infoFile} '${stateKey}'`);

  const camList = [cameras.primary, ...(cameras.wrist ? [cameras.wrist] : [])];
  const videoKeys = camList.filter((c) => c.video).map((c) => c.key);
  const ffmpeg = options.ffmpeg ?? 'ffmpeg';
  if (videoKeys.length > 0 && !(await ffmpegAvailable(ffmpeg)))
    throw new InputError(`${root}: camera ${videoKeys.join(', ')} is video-backed and is decoded with ffmpeg, but ` +
      `'${ffmpeg}' cannot be run: install ffmpeg (e.g. apt-get install ffmpeg) or pass the ffmpeg option`);

  const files = new ParquetFiles();
  const locations = v3 ? await episodesV3(root, info, videoKeys, files, infoFile)
    : episodesV2(root, info, videoKeys, infoFile);
  if (locations.length === 0) throw new InputError(`${root}: no episodes`);
  const tasks = await tasksOf(root, v3, files);
  for (const loc of locations) {
    for (const { file } of loc.videos.values())
      if (!fs.existsSync(file)) throw new InputError(`${file}: missing (episode ${loc.index})`);
  }

  // Every data file must hold exactly the rows of its episodes, and the inline camera columns (read per sample).
  const rowsPerFile = new Map<string, number>();
  for (const loc of locations) rowsPerFile.set(loc.dataFile, (rowsPerFile.get(loc.dataFile) ?? 0) + loc.length);
  for (const [file, rows] of rowsPerFile) {
    await files.requireColumns(file, camList.filter((c) => !c.video).map((c) => c.key));
    const n = await files.numRows(file);
    if (n !== rows) throw new InputError(`${file}: ${n} rows, the episodes metadata says ${rows}`);
  }

  const video = videoKeys.length > 0;  // frames are located by `timestamp`
  const columns = [stateKey, actionKey, 'task_index', ...(video ? ['timestamp'] : [])];
  const episodes: Episode[] = [];
  const timestamps: Float32Array[] = [];
  for (const loc of locations) {
    const where = `${loc.dataFile} episode ${loc.index}`;
    const rows = await files.read(loc.dataFile, columns, loc.firstRow, loc.firstRow + loc.length);
    const actions = new Float32Array(loc.length * actionDim);
    const states = new Float32Array(loc.length * proprioDim);
    const ts = new Float32Array(video ? loc.length : 0);
    const instructions = rows.map((r, t) => {
      putVector(r[actionKey], actionDim, actions, t * actionDim, `${where} step ${t} '${actionKey}'`);
      putVector(r[stateKey], proprioDim, states, t * proprioDim, `${where} step ${t} '${stateKey}'`);
      if (video) ts[t] = Number(r.timestamp);
      const task = tasks.get(int(r.task_index, `${where} step ${t} task_index`));
      if (task === undefined) throw new InputError(`${where} step ${t}: task_index ${r.task_index} is not in the tasks`);
      return task;
    });
    checkFinite(actions, actionDim, `${where} '${actionKey}'`);
    checkFinite(states, proprioDim, `${where} '${stateKey}'`);
    if (options.invertGripper) invertGripper(actions, actionDim);
    episodes.push({ source: where, length: loc.length, actions, states, instructions });
    timestamps.push(ts);
  }
  return new LeRobotDataset(options.name ?? path.basename(path.resolve(root)), episodes, actionDim, proprioDim,
    cameras, locations, timestamps, files, fps, ffmpeg, options.flip ?? false, options);
}

