/**
 * Normalization statistics in the reference's `dataset_statistics.json` format:
 * `{unnorm_key: {action: {mean, std, max, min, q01, q99, mask}, proprio: {mean, std, max, min, q01, q99},
 * num_transitions, num_trajectories}}`.
 *
 * Computed as VLA-Adapter does (prismatic/vla/datasets/rlds/utils/data_utils.py get_dataset_statistics): over every
 * transition of every trajectory (before chunking, so `drop`ped end steps count too), on float32 arrays, with numpy's
 * semantics reproduced bit for bit: `mean(0)` / `std(0)` accumulate row by row in float32 (numpy reduces axis 0 of a
 * C-ordered array without pairwise summation), `np.quantile(x, q, axis=0)` is the default "linear" method with
 * numpy's index arithmetic and its float32 lerp. The action mask is the reference's LIBERO
 * `action_normalization_mask` (prismatic/vla/datasets/rlds/oxe/materialize.py: `[True] * 6 + [False]`): every dim but
 * the last (gripper) is normalized. The reference writes no proprio mask (normalize_proprio then normalizes all dims).
 */
import { writeFileAtomic } from '../atomic-file.js';
import { InputError } from '../errors.js';
import type { Episode } from './dataset.js';

export interface FeatureStatistics {
  mean: number[];
  std: number[];
  max: number[];
  min: number[];
  q01: number[];
  q99: number[];
  mask?: boolean[];
}

export interface DatasetStatistics {
  action: FeatureStatistics & { mask: boolean[] };
  proprio: FeatureStatistics;
  num_transitions: number;
  num_trajectories: number;
}

const f32 = Math.fround;

/** numpy.quantile(sorted, q) (method "linear") for a sorted float32 column. */
function quantile(sorted: Float32Array, q: number): number {
  const n = sorted.length;
  const virtual = n * q + (1 + q * -1) - 1;  // _compute_virtual_index with alpha = beta = 1, as numpy computes it
  let prev = Math.floor(virtual), next = prev + 1;
  if (virtual >= n - 1) prev = next = n - 1;
  if (virtual < 0) prev = next = 0;
  const gamma = virtual - prev;
  // _lerp on float32 values with a Python-float weight (cast to float32 by numpy's weak promotion)
  const a = sorted[prev], b = sorted[next], diff = f32(b - a);
  return gamma >= 0.5 ? f32(b - f32(diff * f32(1 - gamma))) : f32(a + f32(diff * f32(gamma)));
}

/** mean/std/max/min/q01/q99 of the columns of a (rows x width) float32 matrix, as numpy computes them. */
export function columnStatistics(values: Float32Array, width: number): FeatureStatistics {
  const n = values.length / width;
  if (!Number.isInteger(n) || n === 0) throw new InputError(`statistics need a non-empty rows x ${width} matrix`);
  const out: FeatureStatistics = { mean: [], std: [], max: [], min: [], q01: [], q99: [] };
  const column = new Float32Array(n);
  for (let j = 0; j < width; j++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum = f32(sum + values[i * width + j]);
    const mean = f32(sum / n);
    let sq = 0;
    for (let i = 0; i < n; i++) {
      const d = f32(values[i * width + j] - mean);
      sq = f32(sq + f32(d * d));
    }
    for (let i = 0; i < n; i++) column[i] = values[i * width + j];
    column.sort();
    out.mean.push(mean);
    out.std.push(f32(Math.sqrt(f32(sq / n))));
    out.max.push(column[n - 1]);
    out.min.push(column[0]);
    out.q01.push(quantile(column, 0.01));
    out.q99.push(quantile(column, 0.99));
  }
  return out;
}

/** Statistics of a dataset's episodes (actions and proprio of every step). */
export function computeStatistics(dataset: { episodes: readonly Episode[]; actionDim: number; proprioDim: number }):
  DatasetStatistics {
  const concat = (part: (e: Episode) => Float32Array) => {
    const all = new Float32Array(dataset.episodes.reduce((n, e) => n + part(e).length, 0));
    let o = 0;
    for (const e of dataset.episodes) {
      all.set(part(e), o);
      o += part(e).length;
    }
    return all;
  };
  const action = columnStatistics(concat((e) => e.actions), dataset.actionDim);
  return {
    action: { ...action, mask: action.mean.map((_, j) => j !== dataset.actionDim - 1) },
    proprio: columnStatistics(concat((e) => e.states), dataset.proprioDim),
    num_transitions: dataset.episodes.reduce((n, e) => n + e.length, 0),
    num_trajectories: dataset.episodes.length,
  };
}

/** Writes `{[unnormKey]: stats}` to `file` (the reference's save_dataset_statistics: JSON, indent 2). */
export function writeDatasetStatistics(file: string, unnormKey: string, stats: DatasetStatistics): void {
  writeFileAtomic(file, JSON.stringify({ [unnormKey]: stats }, null, 2));
}
