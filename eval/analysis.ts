/**
 * The paper's analyses on a trained run directory:
 * - Fig. 6 analogue: the MoL per-layer gates (tanh(g), the static scale of each layer's vision logits, and the mean
 *   dynamic per-head query gate) averaged over observations of the demonstrations (`policy.features()`);
 * - Fig. 7 analogue: for pairs of MSM bank entries, the key distance (mean |Δkey|, the retrieval's metric) against the
 *   value distance (L2 between the stored normalized action chunks), with Pearson and Spearman correlations.
 */
import { openLibero } from '../lib/data/libero.js';
import type { MemoryBankSnapshot } from '../lib/head.js';
import { loadPolicy, type Policy } from '../lib/policy.js';

export interface GateSummary {
  layer: number;
  visionScale: number;
  queryGate: number;
}

export interface BankCorrelation {
  entries: number;
  pairs: number;
  pearson: number;
  spearman: number;
  /** A subsample of (key distance, value distance) pairs for the scatter plot. */
  points: Array<[number, number]>;
}

export interface RunAnalysis {
  ablation: string;
  gates: GateSummary[] | null;
  bank: BankCorrelation | null;
  notes: string[];
}

type BankSnapshot = Pick<MemoryBankSnapshot, 'keys' | 'values'>;

/** Seeded xorshift32 in [0, 1). */
function random(seed: number): () => number {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
}

export function pearson(x: number[], y: number[]): number {
  const n = x.length, mx = x.reduce((a, b) => a + b, 0) / n, my = y.reduce((a, b) => a + b, 0) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ** 2; syy += (y[i] - my) ** 2;
  }
  return sxx === 0 || syy === 0 ? NaN : sxy / Math.sqrt(sxx * syy);
}

/** Ranks with ties averaged, for Spearman's correlation. */
function ranks(v: number[]): number[] {
  const order = v.map((x, i) => [x, i] as const).sort((a, b) => a[0] - b[0]);
  const r = new Array<number>(v.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
    for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2;
    i = j + 1;
  }
  return r;
}

export function spearman(x: number[], y: number[]): number {
  return pearson(ranks(x), ranks(y));
}

export function bankCorrelation(bank: BankSnapshot, pairs = 4000, plotted = 600, seed = 0): BankCorrelation | null {
  const [n, keyDim] = bank.keys.shape, valueDim = bank.values.shape[1];
  if (n < 2) return null;
  const rand = random(seed), kd: number[] = [], vd: number[] = [];
  for (let p = 0; p < pairs; p++) {
    const i = Math.floor(rand() * n);
    let j = Math.floor(rand() * (n - 1));
    if (j >= i) j++;
    let k = 0, v = 0;
    for (let d = 0; d < keyDim; d++) k += Math.abs(bank.keys.data[i * keyDim + d] - bank.keys.data[j * keyDim + d]);
    for (let d = 0; d < valueDim; d++) v += (bank.values.data[i * valueDim + d] - bank.values.data[j * valueDim + d]) ** 2;
    kd.push(k / keyDim);
    vd.push(Math.sqrt(v));
  }
  const points = kd.slice(0, plotted).map((k, i) => [k, vd[i]] as [number, number]);
  return { entries: n, pairs, pearson: pearson(kd, vd), spearman: spearman(kd, vd), points };
}

/** Observations spread over the demonstrations (every task), as the client sends them (upright frames). */
async function demoObservations(demos: string, policy: Policy, count: number) {
  const { chunk, actionDim, proprioDim } = policy.metadata;
  const dataset = await openLibero(demos, { chunk, actionDim, proprioDim });
  try {
    const out = [];
    for (let k = 0; k < count; k++) {
      const s = await dataset.sample(Math.floor(((k + 0.5) * dataset.numSamples) / count));
      out.push({ images: { primary: s.images.primary, wrist: s.images.wrist }, instruction: s.instruction, state: s.state });
    }
    return out;
  } finally {
    await dataset.close();
  }
}

export async function analyzeRun(runDir: string, demos: string, observations = 32): Promise<RunAnalysis> {
  await using policy = await loadPolicy(runDir);
  const notes: string[] = [];
  const obs = await demoObservations(demos, policy, observations);
  const sums = new Map<number, { vision: number; query: number; n: number }>();
  for (const o of obs) {  // one call each: a batch needs prompts of one length
    const { gates } = await policy.features(o);
    for (const g of gates) {
      const s = sums.get(g.layer) ?? { vision: 0, query: 0, n: 0 };
      s.vision += g.visionScale;
      s.query += g.queryGate.reduce((a, b) => a + b, 0) / g.queryGate.length;
      s.n++;
      sums.set(g.layer, s);
    }
  }
  const gates = [...sums].sort((a, b) => a[0] - b[0])
    .map(([layer, s]) => ({ layer, visionScale: s.vision / s.n, queryGate: s.query / s.n }));
  if (gates.length === 0) notes.push('no MoL gates (this variant has no MoL blocks)');
  const { ablation } = policy.metadata;
  const bank = ablation === 'no-msm' ? null : bankCorrelation(await policy.memoryBank());
  if (ablation === 'no-msm') notes.push('no MSM bank (this variant has no retrieval)');
  else if (!bank) notes.push('the MSM bank holds fewer than 2 entries');
  return { ablation, gates: gates.length ? gates : null, bank, notes };
}
