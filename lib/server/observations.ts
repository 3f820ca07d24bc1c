/**
 * Robot-side observation dicts (flat keys, as openpi's clients send them) → the policy's Observation. A mapping names
 * which keys hold the cameras, the proprio state (several keys are concatenated in order) and the prompt.
 */
import { ConfigError, InputError, ShapeError } from '../errors.js';
import type { ImageInput } from '../images.js';
import type { Observation } from '../observation.js';
import { NdArray } from './ndarray.js';

export interface ObservationKeys {
  primary: string;
  /** Used when the model takes a second (wrist) camera. */
  wrist?: string;
  state: string | string[];
  prompt: string;
}

export const PRESETS = {
  // openpi examples/libero/main.py: (224, 224, 3) uint8 images, (8,) float64 eef pos + axis-angle + gripper.
  libero: { primary: 'observation/image', wrist: 'observation/wrist_image', state: 'observation/state', prompt: 'prompt' },
  // openpi examples/droid: 7 joint positions + 1 gripper position.
  droid: {
    primary: 'observation/exterior_image_1_left', wrist: 'observation/wrist_image_left',
    state: ['observation/joint_position', 'observation/gripper_position'], prompt: 'prompt',
  },
  // VLA-Adapter vla-scripts/deploy.py (POST /act).
  'vla-adapter': { primary: 'full_image', wrist: 'wrist_image', state: 'state', prompt: 'instruction' },
} satisfies Record<string, ObservationKeys>;
export type PresetName = keyof typeof PRESETS;

export function resolveKeys(keys: PresetName | ObservationKeys): ObservationKeys {
  if (typeof keys !== 'string') return keys;
  if (!(keys in PRESETS)) throw new ConfigError(`unknown observation preset '${keys}' (known: ${Object.keys(PRESETS).join(', ')})`);
  return PRESETS[keys];
}

export interface ModelDims {
  numImages: number;
  proprioDim: number;
}

/**
 * A function from wire messages to policy observations for this mapping and model; it checks dtypes, shapes and
 * keys, with errors naming the offending key.
 */
export function observationReader(keys: ObservationKeys, dims: ModelDims): (msg: unknown) => Observation {
  if (dims.numImages > 2 || (dims.numImages === 2 && !keys.wrist))
    throw new ConfigError(`the model takes ${dims.numImages} cameras; the observation mapping names ${keys.wrist ? 2 : 1}`);
  return (msg) => {
    if (!msg || typeof msg !== 'object' || Array.isArray(msg) || msg instanceof NdArray || msg instanceof Uint8Array)
      throw new InputError(`observation: expected a dict of named inputs, got ${kind(msg)}`);
    const obs = msg as Record<string, unknown>;
    const get = (k: string) => {
      if (!(k in obs)) {
        const got = Object.keys(obs);
        throw new InputError(`${k}: required (got keys: ${got.slice(0, 20).join(', ') || 'none'}${got.length > 20 ? ', ...' : ''})`);
      }
      return obs[k];
    };
    const prompt = get(keys.prompt);
    if (typeof prompt !== 'string') throw new InputError(`${keys.prompt}: expected a string, got ${kind(prompt)}`);
    const images: { primary: ImageInput; wrist?: ImageInput } = { primary: image(get(keys.primary), keys.primary) };
    if (dims.numImages === 2) images.wrist = image(get(keys.wrist!), keys.wrist!);
    return { images, instruction: prompt, state: state(keys.state, get, dims.proprioDim) };
  };
}

function image(v: unknown, key: string): ImageInput {
  if (v instanceof NdArray) {
    const [h, w, c] = v.shape;
    if (v.dtype !== '|u1') throw new InputError(`${key}: expected uint8 pixels (H, W, 3), got ${v.describe()}`);
    if (v.shape.length !== 3 || c !== 3)
      throw new ShapeError(`${key}: expected an (H, W, 3) HWC RGB image, got ${v.describe()}`);
    return { data: v.data as Uint8Array, width: w, height: h };
  }
  // Raw msgpack bytes: an encoded PNG/JPEG, decoded by the policy.
  if (v instanceof Uint8Array) return v;
  throw new InputError(`${key}: expected a uint8 (H, W, 3) array or PNG/JPEG bytes, got ${kind(v)}`);
}

function state(keys: string | string[], get: (k: string) => unknown, dim: number): Float64Array {
  const parts: Array<ArrayLike<number | bigint>> = [];
  for (const key of typeof keys === 'string' ? [keys] : keys) {
    const v = get(key);
    if (typeof v === 'number') parts.push([v]);
    else if (v instanceof NdArray && v.dtype !== '|b1' && v.shape.length <= 1) parts.push(v.data);
    else if (Array.isArray(v) && v.every((x) => typeof x === 'number')) parts.push(v);
    else throw new InputError(`${key}: expected a 1-d numeric array, got ${kind(v)}`);
  }
  const names = typeof keys === 'string' ? keys : keys.join(' + ');
  const total = parts.reduce((n, p) => n + p.length, 0);
  if (total !== dim) throw new ShapeError(`${names}: the model takes a ${dim}-d state, got ${total} values`);
  const out = new Float64Array(dim);
  let i = 0;
  for (const p of parts) for (let j = 0; j < p.length; j++) out[i++] = Number(p[j]);
  const bad = out.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new InputError(`${names}: value ${bad} is ${out[bad]}`);
  return out;
}

function kind(v: unknown): string {
  if (v instanceof NdArray) return v.describe();
  if (v instanceof Uint8Array) return 'bytes';
  if (Array.isArray(v)) return 'a list';
  return v === null ? 'None' : typeof v;
}
