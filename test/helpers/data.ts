/** The dataset fixtures of test/fixtures/make_datasets.py and what it expects. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RawImage } from '../../lib/images.js';
import type { DatasetStatistics } from '../../lib/data/stats.js';

export const DATA = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'data');

export interface ExpectedEpisode {
  instruction: string;
  length: number;
  actions: number[][];
  proprio: number[][];
}

export interface ExpectedDataset {
  episodes: ExpectedEpisode[];
  dataset_statistics: Record<string, DatasetStatistics>;
}

export interface NumpyCase {
  rows: number;
  width: number;
  data: number[];
  mean: number[];
  std: number[];
  q01: number[];
  q99: number[];
}

export const expected = JSON.parse(fs.readFileSync(path.join(DATA, 'expected.json'), 'utf8')) as
  Record<string, ExpectedDataset> & { image_size: [number, number]; fps: number; numpy_cases: NumpyCase[] };

/** make_datasets.py pattern(): the frame of (episode, step, camera 0 = primary / 1 = wrist). */
export function pattern(episode: number, step: number, camera: number): RawImage {
  const [height, width] = expected.image_size;
  const data = new Uint8Array(height * width * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const marker = x >> 4 === step % 4 && y >> 4 === (step >> 2) % 4;
      for (let c = 0; c < 3; c++) {
        const v = x * 2 + y + episode * 11 + c * 3 + camera * 20;
        data[(y * width + x) * 3 + c] = marker ? (v + 128) % 256 : v;
      }
    }
  }
  return { data, width, height };
}

/** Whether two frames have the same size and bytes (faster than a deep equality on typed arrays). */
export function sameFrame(a: RawImage | undefined, b: RawImage): boolean {
  return a !== undefined && a.width === b.width && a.height === b.height && Buffer.from(a.data).equals(Buffer.from(b.data));
}

export function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
}

/** A fresh temporary directory, removed when the process exits. */
export function tempDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-data-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
