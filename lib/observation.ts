/**
 * What one observation gives the frozen VLM, validated and packed: pixel values [6*numImages, S, S] and the prompt's
 * token ids. Today an observation must carry both already preprocessed (`pixelValues`, `inputIds`); raw camera images
 * and the instruction are turned into them by the image preprocessing and the tokenizer, which plug in here.
 */
import type { BackboneConfig } from './config.js';
import { InputError, ShapeError } from './errors.js';

export interface TensorData {
  data: Float32Array;
  shape: number[];
}

export interface Observation {
  /** Preprocessed pixels [6*numImages, S, S] (or [1, 6*numImages, S, S]): per image [DINO RGB, SigLIP RGB], primary first. */
  pixelValues?: TensorData;
  /** Prompt token ids including the first token, without action-query placeholders or the stop id. */
  inputIds?: Int32Array | BigInt64Array | number[];
  /** Raw camera images (primary, wrist): turned into pixelValues by the image preprocessing. */
  images?: unknown;
  /** Task instruction: turned into inputIds by the tokenizer. */
  instruction?: string;
  /** Proprio state: fed to the action head, not to the VLM. */
  state?: ArrayLike<number>;
}

export interface ModelInputs {
  pixelValues: Float32Array;
  inputIds: BigInt64Array;
}

const fmt = (shape: readonly number[]) => `[${shape.join(', ')}]`;

function checkPixelValues(pv: TensorData, cfg: BackboneConfig, name: string): Float32Array {
  const s = cfg.imageSize, c = 6 * cfg.numImages;
  const expected = `${fmt([c, s, s])} (6 channels per image x ${cfg.numImages} images, ${s}x${s})`;
  if (!(pv.data instanceof Float32Array)) throw new InputError(`${name}: expected data to be a Float32Array`);
  const shape = pv.shape.length === 4 && pv.shape[0] === 1 ? pv.shape.slice(1) : pv.shape;
  if (shape.length !== 3) throw new ShapeError(`${name}: expected ${expected}, got ${fmt(pv.shape)}`);
  const [channels, h, w] = shape;
  if (channels !== c && channels > 0 && channels % 6 === 0 && h === s && w === s) {
    const n = channels / 6;
    throw new InputError(`${name}: ${channels} channels are ${n} image${n === 1 ? '' : 's'}, but this model takes ` +
      `${cfg.numImages} (6 channels each, primary first)`);
  }
  if (channels !== c || h !== s || w !== s) throw new ShapeError(`${name}: expected ${expected}, got ${fmt(pv.shape)}`);
  if (pv.data.length !== c * s * s) {
    throw new ShapeError(`${name}: shape ${fmt(pv.shape)} needs ${c * s * s} values, got ${pv.data.length}`);
  }
  return pv.data;
}

function checkInputIds(ids: Int32Array | BigInt64Array | number[], name: string): BigInt64Array {
  if (ids.length === 0) throw new InputError(`${name}: expected at least one token id`);
  if (ids instanceof BigInt64Array) return ids;
  const out = new BigInt64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v)) throw new InputError(`${name}: position ${i} is ${v}, not an integer token id`);
    out[i] = BigInt(v);
  }
  return out;
}

/** Validates one observation against the model's dims; `name` prefixes every error ("observations[1]"). */
export function toModelInputs(obs: Observation, cfg: BackboneConfig, name = ''): ModelInputs {
  const field = (f: string) => (name ? `${name}.${f}` : f);
  if (!obs.pixelValues) {
    throw new InputError(`${field('pixelValues')}: required` +
      (obs.images !== undefined ? ' (raw images are not preprocessed here yet; pass preprocessed pixelValues)' : ''));
  }
  if (!obs.inputIds) {
    throw new InputError(`${field('inputIds')}: required` +
      (obs.instruction !== undefined ? ' (instructions are not tokenized here yet; pass inputIds)' : ''));
  }
  return {
    pixelValues: checkPixelValues(obs.pixelValues, cfg, field('pixelValues')),
    inputIds: checkInputIds(obs.inputIds, field('inputIds')),
  };
}
