/** Test-side access to test/fixtures/preprocess (written by test/fixtures/make_preprocess_fixture.py). */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBinding, type NativeTensor } from '../../lib/native/binding.js';

export const PREPROCESS_FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'preprocess');

export interface ResizeCase {
  name: string; height: number; width: number; size: number; seed: number; centerCrop: number;
  inputChecksum: number; reference: string;
}
export interface DecodeCase { name: string; height: number; width: number }

export const preprocessCases: { resize: ResizeCase[]; decode: DecodeCase[] } =
  JSON.parse(fs.readFileSync(path.join(PREPROCESS_FIXTURE, 'cases.json'), 'utf8'));

let tensors: Promise<Record<string, NativeTensor>> | undefined;
export function loadPreprocessTensors(): Promise<Record<string, NativeTensor>> {
  tensors ??= getBinding().loadStateDict(path.join(PREPROCESS_FIXTURE, 'cases.safetensors'));
  return tensors;
}

/** The generator's `pattern()`: 8x8 blocks alternating hashed noise and a smooth ramp, uint8 HWC RGB. */
export function pattern(h: number, w: number, seed: number): Uint8Array {
  const out = new Uint8Array(h * w * 3);
  const s = Math.imul(seed, 0x9e3779b9) >>> 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        const i = (y * w + x) * 3 + c;
        let v = Math.imul((i + s) >>> 0, 0x85ebca6b) >>> 0;
        v = (v ^ (v >>> 13)) >>> 0;
        v = Math.imul(v, 0xc2b2ae35) >>> 0;
        v = (v ^ (v >>> 16)) >>> 0;
        const ramp = (Math.floor((x * 255) / Math.max(w - 1, 1)) + Math.floor((y * 128) / Math.max(h - 1, 1)) + c * 40) % 256;
        out[i] = ((x >> 3) + (y >> 3)) % 2 === 0 ? v & 255 : ramp;
      }
    }
  }
  return out;
}

export function checksum(a: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * ((i % 251) + 1);
  return s;
}

/** uint8 HWC RGB -> [1, 3 * sets, H, W] float32 exactly as to_tensor + normalize compute it (float32 ops). */
export function normalizeLikeTorch(rgb: Uint8Array, h: number, w: number, means: number[][], stds: number[][]): Float32Array {
  const f = Math.fround, plane = h * w;
  const out = new Float32Array(3 * means.length * plane);
  means.forEach((mean, k) => {
    for (let c = 0; c < 3; c++) {
      const m = f(mean[c]), s = f(stds[k][c]);
      for (let p = 0; p < plane; p++) out[(k * 3 + c) * plane + p] = f(f(f(rgb[p * 3 + c] / 255) - m) / s);
    }
  });
  return out;
}
