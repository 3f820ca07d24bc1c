/**
 * Camera images in: raw HWC RGB bytes, or encoded PNG/JPEG bytes decoded with sharp (libvips threadpool, off the JS
 * thread). Then the Prismatic processor's preprocessing, natively (native/model/preprocess.cc): PIL bicubic resize to
 * S x S, optional LIBERO center crop, (x / 255 - mean) / std per vision backbone.
 */
import sharp from 'sharp';
import { InputError, ShapeError } from './errors.js';
import { getBinding, type AugmentationDraw, type ImageAugmentation } from './native/binding.js';
import { runTorchJob } from './native/queue.js';
import { checkOptions, optionKeys } from './options.js';
import type { ImagePreprocessing } from './preprocessor-config.js';

/** Raw pixels: `data` holds height * width * 3 bytes, row-major, RGB. */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** A raw image, or the bytes of an encoded image (PNG, JPEG, or anything else sharp decodes). */
export type ImageInput = RawImage | Uint8Array;

/** Checks a raw image (E_SHAPE / E_INPUT naming `name`, e.g. `images.wrist`) and returns it. */
export function checkRawImage(image: RawImage, name: string): RawImage {
  const { data, width, height } = image;
  if (!(data instanceof Uint8Array)) throw new InputError(`${name}: data must be a Uint8Array of HWC RGB bytes`);
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0)
    throw new InputError(`${name}: width and height must be non-negative integers, got ${width}x${height}`);
  if (width === 0 || height === 0) throw new ShapeError(`${name}: zero-size image (${width}x${height})`);
  const pixels = width * height;
  if (data.length === pixels * 3) return image;
  if (data.length % pixels === 0)
    throw new ShapeError(`${name}: expected 3 channels (RGB, ${width}x${height}x3 = ${pixels * 3} bytes), got ` +
      `${data.length / pixels} channels (${data.length} bytes); pass RGB, or the encoded PNG/JPEG bytes`);
  throw new ShapeError(`${name}: expected ${width}x${height}x3 = ${pixels * 3} bytes (HWC RGB), got ${data.length}`);
}

/**
 * Most pixels an encoded image may declare (8192 x 8192, 192 MiB decoded): a 776 KB PNG can declare 16000 x 16000
 * and decode to gigabytes. The server's `maxImagePixels` is usually much lower.
 */
export const MAX_DECODED_PIXELS = 8192 * 8192;

/** Width and height an encoded image declares in its header (nothing is decoded); InputError if unreadable. */
export async function imageSize(bytes: Uint8Array, name: string): Promise<{ width: number; height: number }> {
  try {
    const { width, height } = await sharp(bytes).metadata();
    if (width && height) return { width, height };
  } catch (e) {
    throw new InputError(`${name}: could not decode the image bytes (${(e as Error).message})`, { cause: e });
  }
  throw new InputError(`${name}: the image header states no size`);
}

/**
 * Decodes PNG/JPEG/... bytes to 8-bit RGB the way PIL's `Image.open(f).convert('RGB')` does: alpha dropped (not
 * composited), grayscale and palettes expanded, no EXIF rotation, embedded ICC profile ignored. An image declaring
 * more than `maxPixels` (default MAX_DECODED_PIXELS) is refused before decoding.
 */
export async function decodeImage(bytes: Uint8Array, name: string, maxPixels = MAX_DECODED_PIXELS): Promise<RawImage> {
  if (bytes.length === 0) throw new ShapeError(`${name}: empty image bytes`);
  let decoded;
  try {
    // toBuffer, not toUint8Array: sharp 0.35's toUint8Array never frees the decoded pixels (~150 KB per 224 x 224
    // image, the server grew by ~1 GB over 3000 requests).
    decoded = await sharp(bytes, { ignoreIcc: true, failOn: 'error', limitInputPixels: maxPixels })
      .removeAlpha().toColourspace('srgb').raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
  } catch (e) {
    const msg = (e as Error).message;
    if (/pixel limit/i.test(msg)) throw new InputError(`${name}: the image declares more than ${maxPixels} pixels (${msg})`, { cause: e });
    throw new InputError(`${name}: could not decode the image bytes (${msg})`, { cause: e });
  }
  const { data, info: { width, height, channels } } = decoded;
  if (channels !== 3) throw new ShapeError(`${name}: decoded to ${channels} channels, expected 3 (RGB)`);
  return checkRawImage({ data, width, height }, name);
}

/** Raw images are checked; byte arrays are decoded. */
export async function toRawImage(input: ImageInput, name: string): Promise<RawImage> {
  if (input instanceof Uint8Array) return decodeImage(input, name);
  if (input === null || typeof input !== 'object')
    throw new InputError(`${name}: expected {data, width, height} or encoded image bytes (Uint8Array)`);
  return checkRawImage(input, name);
}

// The run directory's preprocessor_config.json rules live with the run-directory readers (no import circle through the
// binding); re-exported for callers of this module.
export { parsePreprocessorConfig, readPreprocessorConfig, type ImagePreprocessing } from './preprocessor-config.js';

export interface PixelValuesOptions {
  /** Images per sample (primary, wrist, ...); default: all images form one sample. */
  imagesPerSample?: number;
  /** LIBERO center crop: true = area 0.9, or an area fraction in (0, 1]. */
  centerCrop?: boolean | number;
  /** Names for error messages, default `images[i]`. */
  names?: string[];
  threads?: number;
}

export interface PixelValues {
  data: Float32Array;
  shape: [number, number, number, number];  // [batch, 3 * backbones * imagesPerSample, size, size]
}

/** LIBERO's crop: 0.9 of the image area. */
const LIBERO_CROP_AREA = 0.9;

/**
 * The centerCrop option as the area fraction the native preprocessing takes: 0 (off: undefined, false or 0), 0.9
 * (true) or a fraction in (0, 1]; anything else is an InputError.
 */
export function centerCropArea(value: unknown): number {
  if (value === undefined || value === false) return 0;
  if (value === true) return LIBERO_CROP_AREA;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1))
    throw new InputError(`centerCrop: expected true, false or an area fraction in (0, 1] (0 = off), got ${JSON.stringify(value)}`);
  return value;
}

const PIXEL_KEYS = optionKeys<PixelValuesOptions>({ imagesPerSample: true, centerCrop: true, names: true, threads: true });

/** Decodes/validates the images and returns the model's pixel values (one torch job). */
export async function pixelValues(images: ImageInput[], prep: ImagePreprocessing,
  options: PixelValuesOptions = {}): Promise<PixelValues> {
  checkOptions(options, PIXEL_KEYS, 'pixelValues');
  const centerCrop = centerCropArea(options.centerCrop);
  const perSample = options.imagesPerSample ?? images.length;
  if (images.length === 0) throw new InputError('images: at least one image is needed');
  if (!Number.isInteger(perSample) || perSample <= 0 || images.length % perSample !== 0)
    throw new ShapeError(`images: ${images.length} images do not split into samples of ${perSample}`);
  const names = images.map((_, i) => options.names?.[i] ?? `images[${i}]`);
  const raw = await Promise.all(images.map((img, i) => toRawImage(img, names[i])));
  const data = await runTorchJob(() => getBinding().preprocessImages({
    images: raw.map((r, i) => ({ ...r, name: names[i] })),
    size: prep.size, means: prep.means, stds: prep.stds,
    centerCrop, imagesPerSample: perSample, threads: options.threads,
  }));
  const shape: PixelValues['shape'] = [images.length / perSample, 3 * prep.means.length * perSample, prep.size, prep.size];
  return { data, shape };
}

/**
 * What training with `imageAugmentation` feeds the model for `image`: `count` draws (a generator seeded with `seed`,
 * used in turn), each the image resized to `size` x `size` and augmented, with the parameters drawn. For looking at
 * the augmentation and for tests; the trainer runs the same native code.
 */
export async function augmentImage(image: ImageInput, options: {
  size: number; seed?: number; count?: number; augmentation?: ImageAugmentation; threads?: number;
}): Promise<Array<{ image: RawImage; params: AugmentationDraw }>> {
  checkOptions(options, ['size', 'seed', 'count', 'augmentation', 'threads'], 'augmentImage');
  const raw = await toRawImage(image, 'image');
  const { size } = options;
  const out = await runTorchJob(() => getBinding().augmentImage({
    image: raw, size, augmentation: options.augmentation ?? true, seed: options.seed ?? 0, count: options.count ?? 1,
    threads: options.threads,
  }));
  return out.map(({ data, params }) => ({ image: { data, width: size, height: size }, params }));
}
