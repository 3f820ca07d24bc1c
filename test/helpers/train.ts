/** What the training tests share: the tiny random run directory, the fixture datasets, fresh output directories. */
import fs from 'node:fs';
import path from 'node:path';
import { DEMO_DIMS, ensureRandomRun, TINY_TOKENIZER_DIR, type RandomRunDims } from '../../lib/random-run.js';
import type { NativeTensor } from '../../lib/native/binding.js';
import { DATA, tempDir } from './data.js';

export const LIBERO = path.join(DATA, 'libero_tiny_no_noops');
export const LEROBOT = path.join(DATA, 'lerobot_v21_images');

const root = tempDir();
let outs = 0;

/** The demo-size random run (DEMO_DIMS: 7 action / 8 proprio dims, chunk 8, two 56 px images), made once per file. */
export function tinyRun(dims: RandomRunDims = DEMO_DIMS, name = 'tiny'): Promise<string> {
  return ensureRandomRun(path.join(root, name), dims, { tokenizerDir: TINY_TOKENIZER_DIR });
}

/** A new, not yet existing output directory. */
export function freshOut(): string {
  return path.join(root, `out-${++outs}`);
}

export function float32(t: NativeTensor): Float32Array {
  return new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
}

export function readMetrics(out: string): Array<{ step: number; loss: number; lr: number; gradNorm: number }> {
  return fs.readFileSync(path.join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
}

export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
