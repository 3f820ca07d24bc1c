/**
 * Observations → what the native models take, validated on the JS thread (cheap checks only) and packed into one
 * batch: raw camera images (decoded from PNG/JPEG by sharp if needed; resized natively) or preprocessed pixel
 * values, prompt token ids (from the instruction through the run's tokenizer, or given), and the raw state.
 * Errors name the observation and the field (`observations[1].images.wrist: ...`).
 */
import type { BackboneConfig } from './config.js';
import { ConfigError, formatShape, InputError, ShapeError } from './errors.js';
import { toRawImage, type ImageInput, type RawImage } from './images.js';
import type { PromptTokenizer } from './tokenizer.js';

export interface TensorData {
  data: Float32Array;
  shape: number[];
}

export interface Observation {
  /** Camera images: RGB uint8 HWC of any size, or encoded PNG/JPEG bytes. The wrist camera is needed by 2-camera models. */
  images?: { primary: ImageInput; wrist?: ImageInput };
  /** Preprocessed pixels [6*numImages, S, S] (or [1, 6*numImages, S, S]): per image [DINO RGB, SigLIP RGB], primary first. Overrides `images`. */
  pixelValues?: TensorData;
  /** Task instruction: templated (SPEC §1.4) and tokenized by the engine. */
  instruction?: string;
  /** Prompt token ids including the first token, without action-query placeholders or the stop id. Overrides `instruction`. */
  inputIds?: Int32Array | BigInt64Array | number[];
  /** Raw proprio state (normalized by the engine with the run's statistics); used by the policy, not by the VLM. */
  state?: Float32Array | Float64Array | number[];
}

/** One batch as the native act()/forward() take it. */
export interface PackedBatch {
  batch: number;
  promptLen: number;
  inputIds: BigInt64Array;
  /** Sample-major [s0 primary, s0 wrist, s1 primary, ...], or undefined when pixelValues are given. */
  images?: Array<RawImage & { name: string }>;
  pixelValues?: Float32Array;
  /** [batch * proprioDim] float64 when a state dimension is given. */
  state?: Float64Array;
}

export interface PackContext {
  config: BackboneConfig;
  tokenizer?: PromptTokenizer;
  /** Proprio dim when the caller needs `state` (the policy); omitted for the VLM alone. */
  proprioDim?: number;
  /** A caller's bound on prompt tokens (the server's); the model's positions bound them anyway. */
  maxPromptTokens?: number;
}

function checkPixelValues(pv: TensorData, cfg: BackboneConfig, name: string): Float32Array {
  const s = cfg.imageSize, c = 6 * cfg.numImages;
  const expected = `${formatShape([c, s, s])} (6 channels per image x ${cfg.numImages} images, ${s}x${s})`;
  if (!(pv.data instanceof Float32Array)) throw new InputError(`${name}: expected data to be a Float32Array`);
  const shape = pv.shape.length === 4 && pv.shape[0] === 1 ? pv.shape.slice(1) : pv.shape;
  if (shape.length !== 3) throw new ShapeError(`${name}: expected ${expected}, got ${formatShape(pv.shape)}`);
  const [channels, h, w] = shape;
  if (channels !== c && channels > 0 && channels % 6 === 0 && h === s && w === s) {
    const n = channels / 6;
    throw new InputError(`${name}: ${channels} channels are ${n} image${n === 1 ? '' : 's'}, but this model takes ` +
      `${cfg.numImages} (6 channels each, primary first)`);
  }
  if (channels !== c || h !== s || w !== s) throw new ShapeError(`${name}: expected ${expected}, got ${formatShape(pv.shape)}`);
  if (pv.data.length !== c * s * s) {
    throw new ShapeError(`${name}: shape ${formatShape(pv.shape)} needs ${c * s * s} values, got ${pv.data.length}`);
  }
  return pv.data;
}

/**
 * Token ids: integers (native code checks them against the vocabulary), at most as many as fit the model's positions
 * (prompt, vision patches, action queries, stop token) and the caller's bound: a 1 MB prompt costs minutes otherwise.
 */
function checkInputIds(ids: Int32Array | BigInt64Array | number[], name: string, ctx: PackContext): BigInt64Array {
  if (ids.length === 0) throw new InputError(`${name}: expected at least one token id`);
  const cfg = ctx.config;
  const fit = cfg.llm.maxPositions - cfg.numImages * (cfg.imageSize / cfg.featurizer.patchSize) ** 2 - cfg.numActionQueries - 1;
  const limit = Math.min(fit, ctx.maxPromptTokens ?? Infinity);
  if (ids.length > limit) {
    throw new InputError(`${name}: ${ids.length} prompt tokens; at most ${limit} are accepted ` +
      `(${limit === fit ? `the model's ${cfg.llm.maxPositions} positions` : 'maxPromptTokens'})`);
  }
  if (ids instanceof BigInt64Array) return ids;
  const out = new BigInt64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v)) throw new InputError(`${name}: position ${i} is ${v}, not an integer token id`);
    out[i] = BigInt(v);
  }
  return out;
}

function promptIds(obs: Observation, ctx: PackContext, field: (f: string) => string): BigInt64Array {
  if (obs.inputIds) return checkInputIds(obs.inputIds, field('inputIds'), ctx);
  if (typeof obs.instruction !== 'string') {
    throw new InputError(`${field('instruction')}: required (a string), or give inputIds`);
  }
  if (!ctx.tokenizer) {
    throw new ConfigError(`${field('instruction')}: this run directory has no tokenizer.json; give inputIds instead`);
  }
  if (obs.instruction.trim() === '') {
    throw new InputError(`${field('instruction')}: empty; give the task in words (e.g. 'put the black bowl on the plate')`);
  }
  return checkInputIds(ctx.tokenizer.promptIds(obs.instruction), field('instruction'), ctx);
}

const CAMERAS = ['primary', 'wrist'] as const;

async function cameraImages(obs: Observation, cfg: BackboneConfig, field: (f: string) => string) {
  if (!obs.images || typeof obs.images !== 'object') {
    throw new InputError(`${field('images')}: required ({ primary, wrist }), or give pixelValues`);
  }
  const names = CAMERAS.slice(0, cfg.numImages);
  if (cfg.numImages > CAMERAS.length) throw new ConfigError(`numImages ${cfg.numImages}: at most ${CAMERAS.length} cameras are supported`);
  return Promise.all(names.map(async (cam) => {
    const name = field(`images.${cam}`);
    const input = obs.images![cam];
    if (input === undefined) {
      throw new InputError(`${name}: missing; this model takes ${cfg.numImages} camera image(s): ${names.join(', ')}`);
    }
    const raw = await toRawImage(input, name);
    warnAspect(raw, cam, cfg.imageSize);
    return { ...raw, name };
  }));
}

const warnedAspects = new Set<string>();

/**
 * The one rule for image shapes: every camera image is resized to S x S (bicubic) without keeping its aspect ratio,
 * as the Prismatic processor's `resize-naive` does for training, so a non-square image is squashed, not cropped or
 * padded. A warning (code M2VLA_IMAGE_ASPECT, once per camera and size) says so for images that are not square.
 */
function warnAspect(image: RawImage, camera: string, size: number): void {
  const { width, height } = image;
  if (Math.abs(width / height - 1) < 0.02) return;
  const key = `${camera}:${width}x${height}`;
  if (warnedAspects.has(key)) return;
  warnedAspects.add(key);
  process.emitWarning(`images.${camera}: ${width}x${height} is not square; it is resized to ${size}x${size} without keeping ` +
    'its aspect ratio (resize-naive, as the model was trained). Crop or pad it to a square first if the training ' +
    'images were square crops of your camera.', { code: 'M2VLA_IMAGE_ASPECT' });
}

function stateValues(obs: Observation, dim: number, field: (f: string) => string): Float64Array {
  const s = obs.state;
  const name = field('state');
  if (s === undefined) throw new InputError(`${name}: required (${dim} proprio values)`);
  if (!(s instanceof Float32Array || s instanceof Float64Array || Array.isArray(s))) {
    throw new InputError(`${name}: expected a Float32Array, Float64Array or number[]`);
  }
  if (s.length !== dim) throw new ShapeError(`${name}: expected ${dim} values (the model's proprio dim), got ${s.length}`);
  const out = Float64Array.from(s as ArrayLike<number>);
  for (let i = 0; i < dim; i++) {
    if (!Number.isFinite(out[i])) throw new InputError(`${name}: value ${i} is ${out[i]}; expected finite numbers`);
  }
  return out;
}

/** One observation after validation: its prompt ids, and its pixels or decoded camera images, and its state. */
export interface CheckedObservation {
  ids: BigInt64Array;
  /** The field the ids came from, for errors (`observations[1].instruction`). */
  idsField: string;
  pixels?: Float32Array;
  images?: Array<RawImage & { name: string }>;
  state?: Float64Array;
}

/** Validates every observation (decoding encoded images once); errors name the observation and the field. */
export async function checkObservations(list: Observation[], ctx: PackContext, batched: boolean): Promise<CheckedObservation[]> {
  if (list.length === 0) throw new InputError('observations: expected at least one');
  const cfg = ctx.config;
  const usePixels = list.some((o) => o?.pixelValues);
  return Promise.all(list.map(async (obs, i) => {
    if (obs === null || typeof obs !== 'object') throw new InputError(`${batched ? `observations[${i}]` : 'observation'}: expected an object`);
    const field = (f: string) => (batched ? `observations[${i}].${f}` : f);
    if (usePixels && !obs.pixelValues) throw new InputError(`${field('pixelValues')}: a batch gives pixelValues for all observations or for none`);
    return {
      ids: promptIds(obs, ctx, field),
      idsField: field(obs.inputIds ? 'inputIds' : 'instruction'),
      pixels: usePixels ? checkPixelValues(obs.pixelValues!, cfg, field('pixelValues')) : undefined,
      images: usePixels ? undefined : await cameraImages(obs, cfg, field),
      state: ctx.proprioDim !== undefined ? stateValues(obs, ctx.proprioDim, field) : undefined,
    };
  }));
}

/**
 * Packs checked observations into one batch. Every prompt of a batch must have the same length (the reference pads
 * and masks, which this engine does not do); callers group observations by prompt length first.
 */
export function packChecked(per: CheckedObservation[]): PackedBatch {
  const promptLen = per[0].ids.length;
  per.forEach((p) => {
    if (p.ids.length !== promptLen) {
      throw new InputError(`${p.idsField}: ${p.ids.length} tokens, but observations[0] has ${promptLen}; ` +
        'a batch needs prompts of the same length (padded batches are not supported)');
    }
  });
  const inputIds = new BigInt64Array(promptLen * per.length);
  per.forEach((p, i) => inputIds.set(p.ids, i * promptLen));
  const packed: PackedBatch = { batch: per.length, promptLen, inputIds };
  if (per[0].pixels) {
    const n = per[0].pixels.length;
    packed.pixelValues = new Float32Array(n * per.length);
    per.forEach((p, i) => packed.pixelValues!.set(p.pixels!, i * n));
  } else {
    packed.images = per.flatMap((p) => p.images!);
  }
  if (per[0].state) {
    const n = per[0].state.length;
    packed.state = new Float64Array(n * per.length);
    per.forEach((p, i) => packed.state!.set(p.state!, i * n));
  }
  return packed;
}

/** Validates and packs observations into one batch of equal prompt lengths. */
export async function packObservations(list: Observation[], ctx: PackContext, batched: boolean): Promise<PackedBatch> {
  return packChecked(await checkObservations(list, ctx, batched));
}
