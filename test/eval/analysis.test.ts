/** The report's statistics: correlations and the MSM key/value distance pairs, on data with known answers. */
import { describe, expect, it } from 'vitest';
import { bankCorrelation, pearson, spearman } from '../../eval/analysis.js';

describe('eval analysis', () => {
  it('pearson and spearman match hand-computed values', () => {
    expect(pearson([1, 2, 3, 4], [2, 4, 6, 8])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3, 4], [8, 6, 4, 2])).toBeCloseTo(-1, 12);
    // x = 1..5, y = 2 1 4 3 5: sxy = 8, sxx = syy = 10
    expect(pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])).toBeCloseTo(0.8, 12);
    // monotone but not linear: rank correlation 1, Pearson below 1
    expect(spearman([1, 2, 3, 4, 5], [1, 4, 9, 16, 1000])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3, 4, 5], [1, 4, 9, 16, 1000])).toBeLessThan(0.8);
    // ties take the mean rank: ranks (0.5, 0.5, 2) vs (0, 1, 2)
    expect(spearman([1, 1, 2], [1, 2, 3])).toBeCloseTo(0.8660254037844386, 12);
    expect(pearson([1, 1, 1], [1, 2, 3])).toBeNaN();
  });

  it('bank pairs: values that are a function of the keys correlate, independent ones do not', () => {
    const n = 200, keyDim = 6, valueDim = 4;
    const keys = new Float32Array(n * keyDim), related = new Float32Array(n * valueDim), noise = new Float32Array(n * valueDim);
    let s = 12345;
    const rand = () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let i = 0; i < n; i++) {
      const t = rand();
      for (let d = 0; d < keyDim; d++) keys[i * keyDim + d] = t * (d + 1);
      for (let d = 0; d < valueDim; d++) {
        related[i * valueDim + d] = 2 * t;
        noise[i * valueDim + d] = rand();
      }
    }
    const shape = (dim: number) => [n, dim];
    const a = bankCorrelation({ keys: { data: keys, shape: shape(keyDim) }, values: { data: related, shape: shape(valueDim) } }, 1000, 50)!;
    expect(a.entries).toBe(n);
    expect(a.pairs).toBe(1000);
    expect(a.points).toHaveLength(50);
    // |Δkey| mean = 3.5 |Δt|, value distance = 4 |Δt|: exactly linear
    expect(a.pearson).toBeCloseTo(1, 5);
    expect(a.points[0][1] / a.points[0][0]).toBeCloseTo(4 / 3.5, 4);
    const b = bankCorrelation({ keys: { data: keys, shape: shape(keyDim) }, values: { data: noise, shape: shape(valueDim) } }, 1000)!;
    expect(Math.abs(b.pearson)).toBeLessThan(0.15);
    expect(bankCorrelation({ keys: { data: keys.slice(0, keyDim), shape: [1, keyDim] }, values: { data: noise.slice(0, 4), shape: [1, 4] } })).toBeNull();
  });
});
