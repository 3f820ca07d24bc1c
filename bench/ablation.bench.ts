/**
 * The paper's ablation variants at full size (random weights in each variant's layout, lib/random-run.ts; 24 blocks,
 * hidden 896, MSM bank of 9,000 filled rows): the head alone, from given hidden states of a 50-token prompt, per
 * variant and dtype: the cost of MoL (no-mol swaps its three-branch blocks for one cross-attention to the last layer)
 * and of the MSM (no-msm drops the query keys, the top-4 retrieval and the memory context).
 *   npm run bench -- ablation [--iters 10] [--dtypes float32,bfloat16] [--threads 2]
 */
import { loadHead, type Ablation } from '../lib/index.js';
import { ensureRandomRun, FULL_SIZE_DIMS } from '../lib/random-run.js';
import { benchArgs, fmt, FULLSIZE_DIR, printTable, stats, writeResults } from './harness.js';

const PROMPT = 50;
const { iters, dtypes, threads } = benchArgs({ iters: 10 });
const VARIANTS: Ablation[] = ['none', 'no-mol', 'no-msm'];

const { llm, numActionQueries: NT, numImages, imageSize } = FULL_SIZE_DIMS;
const NP = numImages * (imageSize / 14) ** 2;
const seq = 1 + NP + (PROMPT - 1) + NT + 1;
const hiddenShape = [llm.layers + 1, 1, seq, llm.hidden];
let x = 2024;
const hiddenStates = Float32Array.from({ length: hiddenShape.reduce((a, b) => a * b, 1) }, () => {
  x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
  return (x >>> 0) / 2 ** 32 - 0.5;
});
const proprio = Float32Array.from({ length: 8 }, (_, i) => Math.sin(i) * 0.5);

// The variants take turns within every iteration, so load from other jobs on a shared machine hits them alike.
const rows = [];
for (const dtype of dtypes) {
  const heads = await Promise.all(VARIANTS.map(async (ablation) => loadHead(
    await ensureRandomRun(ablation === 'none' ? FULLSIZE_DIR : `${FULLSIZE_DIR}-${ablation}`, { ...FULL_SIZE_DIMS, ablation }), { dtype, threads })));
  const samples: number[][] = VARIANTS.map(() => []);
  for (let i = 0; i <= iters; i++) {
    for (const [v, head] of heads.entries()) {
      const t0 = performance.now();
      const out = await head.forward({ hiddenStates, hiddenShape, promptLen: PROMPT, proprio });
      if (out.normalized.length !== 56) throw new Error('unexpected head output');
      if (i > 0) samples[v].push(performance.now() - t0);  // iteration 0 warms up
    }
  }
  for (const [v, head] of heads.entries()) {
    const s = stats(samples[v]);
    rows.push({ ablation: VARIANTS[v], dtype, p50: fmt(s.p50), p95: fmt(s.p95), blocks: head.dims.numBlocks,
      'bank rows': head.dims.bankSize, raw: s });
    head.dispose();
  }
}
printTable(`head.forward at full size (hidden states given, ${PROMPT}-token prompt), batch 1, ${threads} threads`,
  rows.map(({ raw, ...r }) => r));
await writeResults('ablation', { threads, iters, prompt: PROMPT, rows });
