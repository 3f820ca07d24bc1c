/**
 * LIBERO demonstrations in HDF5, read with h5wasm (files opened by path; frames read one step at a time).
 *
 * Layout (LIBERO scripts/create_dataset.py; OpenVLA-OFT experiments/robot/libero/regenerate_libero_dataset.py for the
 * "no_noops" files VLA-Adapter trains on): `data/demo_N/actions` (T x 7), `data/demo_N/obs/{agentview_rgb,
 * eye_in_hand_rgb}` (T x H x W x 3 uint8), `obs/ee_states` (T x 6: eef pos + axis-angle), `obs/ee_pos` + `obs/ee_ori`,
 * `obs/gripper_states` (T x 2 finger qpos). robomimic-style files name them `robot0_eef_pos`, `robot0_eef_quat`
 * (x, y, z, w), `robot0_gripper_qpos`, `agentview_image`, `robot0_eye_in_hand_image`; quaternions are converted to
 * axis-angle the way LIBERO does (robosuite transform_utils.quat2axisangle).
 *
 * Defaults reproduce what the reference trains on (the RLDS conversion in moojink/rlds_dataset_builder
 * LIBERO_*_dataset_builder.py, then prismatic/vla/datasets/rlds/oxe/transforms.py libero_dataset_transform):
 * - frames rotated by 180 degrees (`images[i][::-1, ::-1]`: LIBERO renders upside down);
 * - proprio = eef pos (3) + axis-angle (3) + gripper qpos (2), as float32;
 * - gripper action -1 (open) / +1 (close) mapped to 1 - clip(a, 0, 1): 1 open, 0 close (`invertGripper`);
 * - instruction from the file name `<words>_demo.hdf5`, words joined by spaces, everything up to a `...SCENE<n>`
 *   word dropped (LIBERO-90/100 names); else the `language_instruction` of the `data` group's `problem_info` JSON.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Dataset as H5Dataset, File as H5File, Group as H5Group } from 'h5wasm/node';
import { InputError, ShapeError } from '../errors.js';
import {
  checkFinite, checkModelDim, EpisodeDataset, invertGripper, type Dataset, type DatasetOptions, type Episode, type Frames,
} from './dataset.js';
import { checkOptions, optionKeys } from '../options.js';

export interface LiberoOptions extends DatasetOptions {
  /** Read the wrist camera (eye_in_hand) too; default true. */
  wrist?: boolean;
  /** Map the gripper action to the reference's 1 = open / 0 = close; default true. */
  invertGripper?: boolean;
}

const PRIMARY_KEYS = ['agentview_rgb', 'agentview_image'];
const WRIST_KEYS = ['eye_in_hand_rgb', 'robot0_eye_in_hand_image'];
const GRIPPER_KEYS = ['gripper_states', 'robot0_gripper_qpos'];

type H5wasm = typeof import('h5wasm/node').default;
let h5wasmLoaded: Promise<H5wasm> | undefined;

/**
 * h5wasm, loaded on first use (its wasm takes ~0.2 s to start). HDF5's own messages are thrown as JS errors instead
 * of printed once its throwing handler is active; the handler is global to the h5wasm module, which m2vla uses only
 * here.
 */
function loadH5wasm(): Promise<H5wasm> {
  h5wasmLoaded ??= import('h5wasm/node').then(async ({ default: h5wasm }) => {
    (await h5wasm.ready).activate_throwing_error_handler();
    return h5wasm;
  });
  return h5wasmLoaded;
}

/** The most specific line of an HDF5 error stack ("minor: File has been truncated"). */
function hdf5Reason(e: unknown): string {
  const text = e instanceof Error ? e.message : String(e);
  const minors = [...text.matchAll(/minor: (.*)/g)].map((m) => m[1].trim());
  return minors.length > 0 ? minors[minors.length - 1] : text.trim();
}

/**
 * A numeric dataset's values (widened to float64: exact for the float64 / float32 data of LIBERO files) and shape.
 * Stored into the episodes' Float32Arrays they round once, like the RLDS builder's `np.asarray(x, np.float32)`.
 */
function readNumbers(ds: H5Dataset, where: string): { data: Float64Array; shape: number[] } {
  const { type, shape } = ds.metadata;
  if (type !== 0 && type !== 1) throw new InputError(`${where}: expected a numeric dataset`);
  let value;
  try {
    value = ds.value;
  } catch (e) {
    throw new InputError(`${where}: cannot be read (${hdf5Reason(e)})`, { cause: e });
  }
  return { data: Float64Array.from(value as ArrayLike<number>, Number), shape: shape ?? [] };
}

/** robosuite quat2axisangle on (x, y, z, w) in float64, the same operations in the same order; stored as float32. */
function quatToAxisAngle(q: Float64Array, t: number, out: Float32Array, o: number): void {
  const w = Math.min(1, Math.max(-1, q[t * 4 + 3]));
  const den = Math.sqrt(1 - w * w);
  for (let k = 0; k < 3; k++) out[o + k] = den === 0 ? 0 : (q[t * 4 + k] * 2 * Math.acos(w)) / den;  // isclose(den, 0)
}

/** The instruction LIBERO's RLDS builder derives from a file name, or null if it is not `<task>_demo.hdf5`. */
export function liberoInstructionFromFileName(file: string): string | null {
  const base = path.basename(file);
  if (!base.endsWith('_demo.hdf5')) return null;
  const words: string[] = [];
  for (const w of base.slice(0, -'_demo.hdf5'.length).split('_')) {
    if (w.includes('SCENE')) words.length = 0;
    else words.push(w);
  }
  return words.join(' ');
}

interface Cameras {
  primary: H5Dataset;
  wrist?: H5Dataset;
}

class LiberoDataset extends EpisodeDataset {
  constructor(name: string, episodes: Episode[], actionDim: number, proprioDim: number,
    private readonly cameras: Cameras[], private readonly files: H5File[], flip: boolean, options: DatasetOptions) {
    super(name, episodes, actionDim, proprioDim, cameras[0]?.wrist !== undefined, flip, options);
  }

  protected async readFrames(episode: number, step: number): Promise<Frames> {
    const cams = this.cameras[episode];
    const read = (ds: H5Dataset) => {
      const [, height, width] = ds.metadata.shape!;
      try {
        // slice() copies the step's bytes out of h5wasm's heap into a new Uint8Array: the one copy of the frame.
        const data = ds.slice([[step, step + 1]]) as Uint8Array;
        return { data, width, height };
      } catch (e) {
        throw new InputError(`${this.episodes[episode].source}: ${ds.path} step ${step} cannot be read ` +
          `(${hdf5Reason(e)})`, { cause: e });
      }
    };
    return { primary: read(cams.primary), ...(cams.wrist && { wrist: read(cams.wrist) }) };
  }

  async close(): Promise<void> {
    for (const f of this.files.splice(0)) f.close();
  }
}

/** The `.hdf5` files of a LIBERO suite directory (name order), or the one file given. */
function liberoFiles(p: string): string[] {
  let stat;
  try {
    stat = fs.statSync(p);
  } catch (e) {
    throw new InputError(`${p}: cannot read (${(e as Error).message})`, { cause: e });
  }
  if (!stat.isDirectory()) return [p];
  const files = fs.readdirSync(p).filter((f) => /\.(hdf5|h5)$/.test(f)).sort().map((f) => path.join(p, f));
  if (files.length === 0) throw new InputError(`${p}: no .hdf5 files`);
  return files;
}

function openFile(h5wasm: H5wasm, file: string): H5File {
  try {
    fs.accessSync(file, fs.constants.R_OK);
  } catch (e) {
    throw new InputError(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  try {
    return new h5wasm.File(file, 'r');
  } catch (e) {
    throw new InputError(`${file}: not a readable HDF5 file (${hdf5Reason(e)})`, { cause: e });
  }
}

function fileInstruction(file: string, data: H5Group): string {
  const fromName = liberoInstructionFromFileName(file);
  if (fromName) return fromName;
  const info = data.attrs.problem_info?.value;
  try {
    const instruction = JSON.parse(String(info)).language_instruction;
    if (typeof instruction === 'string' && instruction) return instruction;
  } catch {
    // reported below
  }
  throw new InputError(`${file}: no instruction: the name is not <task>_demo.hdf5 and data.attrs.problem_info ` +
    `has no language_instruction`);
}

/** Opens a LIBERO HDF5 file or a directory of them (a suite); every demo is checked before this resolves. */
export async function openLibero(file: string, options: LiberoOptions = {}): Promise<Dataset> {
  checkOptions(options, optionKeys<LiberoOptions>({ chunk: true, episodeEnd: true, actionDim: true, proprioDim: true, flip: true, name: true, wrist: true, invertGripper: true }), 'openLibero');
  const h5wasm = await loadH5wasm();
  const files: H5File[] = [];
  try {
    const episodes: Episode[] = [];
    const cameras: Cameras[] = [];
    let actionDim = -1, proprioDim = -1;
    for (const f of liberoFiles(file)) {
      const h5 = openFile(h5wasm, f);
      files.push(h5);
      let data;
      try {
        data = h5.get('data');
      } catch (e) {
        throw new InputError(`${f}: cannot be read (${hdf5Reason(e)})`, { cause: e });
      }
      if (!(data instanceof h5wasm.Group)) throw new InputError(`${f}: no 'data' group (not a LIBERO file)`);
      const instruction = fileInstruction(f, data);
      const demos = data.keys().filter((k) => /^demo_\d+$/.test(k))
        .sort((x, y) => Number(x.slice(5)) - Number(y.slice(5)));
      if (demos.length === 0) throw new InputError(`${f}: no data/demo_N groups`);
      for (const demo of demos) {
        const ep = readDemo(h5wasm, h5, f, `data/${demo}`, instruction, options);
        if (actionDim >= 0 && (ep.actionDim !== actionDim || ep.proprioDim !== proprioDim))
          throw new ShapeError(`${f}: data/${demo} has ${ep.actionDim} action / ${ep.proprioDim} proprio dims, ` +
            `earlier demos ${actionDim} / ${proprioDim}`);
        ({ actionDim, proprioDim } = ep);
        episodes.push(ep.episode);
        cameras.push(ep.cameras);
      }
    }
    const name = options.name ?? path.basename(file).replace(/\.(hdf5|h5)$/, '');
    return new LiberoDataset(name, episodes, actionDim, proprioDim, cameras, files, options.flip ?? true, options);
  } catch (e) {
    for (const f of files) f.close();
    throw e;
  }
}

function readDemo(h5wasm: H5wasm, h5: H5File, file: string, group: string, instruction: string,
  options: LiberoOptions) {
  const where = `${file}: ${group}`;
  const get = (keys: string[], required: boolean): { key: string; ds: H5Dataset } | undefined => {
    for (const key of keys) {
      let ds;
      try {
        ds = h5.get(`${group}/${key}`);
      } catch (e) {
        throw new InputError(`${where}/${key}: cannot be read (${hdf5Reason(e)})`, { cause: e });
      }
      if (ds instanceof h5wasm.Dataset) return { key: `${where}/${key}`, ds };
    }
    if (required) throw new InputError(`${where}: missing ${keys.join(' or ')}`);
    return undefined;
  };
  const obs = (keys: string[]) => keys.map((k) => `obs/${k}`);

  const raw = readNumbers(get(['actions'], true)!.ds, `${where}/actions`);
  const [length, actionDim] = raw.shape;
  if (raw.shape.length !== 2 || length === 0)
    throw new ShapeError(`${where}/actions: expected T x action_dim with T > 0, got [${raw.shape}]`);
  checkModelDim(actionDim, options.actionDim, 'action', `${where}/actions`);
  const actions = Float32Array.from(raw.data);
  checkFinite(actions, actionDim, `${where}/actions`);
  if (options.invertGripper ?? true) invertGripper(actions, actionDim);  // on float32 values, as the reference

  const rows = (key: string, values: { data: Float64Array; shape: number[] }, width?: number) => {
    const [t, w] = values.shape;
    if (values.shape.length !== 2 || t !== length || (width !== undefined && w !== width))
      throw new ShapeError(`${key}: expected [${length}, ${width ?? 'n'}] (T from actions), got [${values.shape}]`);
    return values;
  };
  // eef pose (pos + axis-angle) from the first layout present
  const pose = new Float32Array(length * 6);
  const eeStates = get(obs(['ee_states']), false);
  const eePos = get(obs(['ee_pos', 'robot0_eef_pos']), false);
  if (eeStates) {
    pose.set(rows(eeStates.key, readNumbers(eeStates.ds, eeStates.key), 6).data);
  } else if (eePos) {
    const pos = rows(eePos.key, readNumbers(eePos.ds, eePos.key), 3).data;
    const ori = get(obs(eePos.key.endsWith('/ee_pos') ? ['ee_ori'] : ['robot0_eef_quat']), true)!;
    const o = rows(ori.key, readNumbers(ori.ds, ori.key));
    const quat = o.shape[1] === 4;
    if (!quat && o.shape[1] !== 3) throw new ShapeError(`${ori.key}: expected axis-angle (3) or a quaternion (4)`);
    for (let t = 0; t < length; t++) {
      pose.set(pos.subarray(t * 3, t * 3 + 3), t * 6);
      if (quat) quatToAxisAngle(o.data, t, pose, t * 6 + 3);
      else pose.set(o.data.subarray(t * 3, t * 3 + 3), t * 6 + 3);
    }
  } else {
    throw new InputError(`${where}: missing obs/ee_states, obs/ee_pos + obs/ee_ori or obs/robot0_eef_pos + ` +
      `obs/robot0_eef_quat`);
  }
  const gripperDs = get(obs(GRIPPER_KEYS), true)!;
  const gripper = rows(gripperDs.key, readNumbers(gripperDs.ds, gripperDs.key));
  const g = gripper.shape[1], proprioDim = 6 + g;
  checkModelDim(proprioDim, options.proprioDim, 'proprio (eef pose 6 + gripper)', `${where}/obs`);
  const states = new Float32Array(length * proprioDim);
  for (let t = 0; t < length; t++) {
    states.set(pose.subarray(t * 6, t * 6 + 6), t * proprioDim);
    states.set(gripper.data.subarray(t * g, t * g + g), t * proprioDim + 6);
  }
  checkFinite(states, proprioDim, `${where}/obs (proprio)`);

  const camera = (keys: string[]) => {
    const { key, ds } = get(obs(keys), true)!;
    const { shape, type, size, signed } = ds.metadata;
    if (type !== 0 || size !== 1 || signed || shape?.length !== 4 || shape[0] !== length || shape[3] !== 3)
      throw new ShapeError(`${key}: expected uint8 [${length}, H, W, 3], got ${ds.dtype} [${shape}]`);
    return ds;
  };
  const cameras: Cameras = { primary: camera(PRIMARY_KEYS) };
  if (options.wrist ?? true) cameras.wrist = camera(WRIST_KEYS);
  const episode: Episode = {
    source: where, length, actions, states, instructions: new Array<string>(length).fill(instruction),
  };
  return { episode, cameras, actionDim, proprioDim };
}
