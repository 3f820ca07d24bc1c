/**
 * PROJECTION, not a measurement: roofline bounds for one act() of full-size M²-VLA (batch 1, one chunk of 8 actions)
 * on an RTX 3090 and an A800 80GB, from FLOPs and bytes counted analytically from the model's shapes.
 *
 *   time >= max(FLOPs / peak bf16 tensor FLOP/s, bytes / peak memory bandwidth)
 *
 * What is counted (batch 1):
 * - FLOPs: every matmul (2·M·K·N: linear layers, patch embeddings, attention QKᵀ and PV over the full L×L even where
 *   the LLM is causal) plus the MSM's L1 scan (2 per key element). Norms, activations, softmax, RoPE and residual adds
 *   are left out (well under 1% of the matmul FLOPs).
 * - Bytes: the weights the forward uses, once, in bf16 (not the LM head and embedding table, the last block of each
 *   ViT, SigLIP's MAP head or the head's unused k_memory/v_memory/film_gen); the full MSM key bank once; and
 *   activations as if each matmul read its inputs and wrote its output once in bf16 (attention reads Q, K, V and
 *   writes O, never an L×L matrix), i.e. elementwise ops fused into their neighbours.
 * Run: `npx tsx bench/roofline.ts` (prints the table, writes bench/results/roofline.json).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const BF16 = 2;

export const FULL_SIZE = {
  images: 2,
  patch: 14,
  patches: 256, // (224 / 14)² per image
  dino: { dim: 1024, blocksRun: 23, blocks: 24, mlp: 4096, prefixTokens: 5 }, // CLS + 4 registers; 2nd-to-last block
  siglip: { dim: 1152, blocksRun: 26, blocks: 27, mlp: 4304, prefixTokens: 0 },
  projector: [2176, 8704, 896, 896],
  llm: { dim: 896, layers: 24, heads: 14, kvHeads: 2, headDim: 64, mlp: 4864 },
  // tok0 + 512 patches + ~50 prompt tokens + 64 action queries + STOP (SPEC §1.4)
  sequence: { first: 1, promptTokens: 50, actionQueries: 64, stop: 1 },
  head: { blocks: 24, dim: 896, heads: 8, chunk: 8, actionDim: 7, proprioDim: 8, taskTokens: 512, adapterTokens: 65 },
  msm: { bankRows: 10_000, keyDim: 2688, topK: 4 },
};
export type Dims = typeof FULL_SIZE;

export function sequenceLength(d: Dims = FULL_SIZE): number {
  const s = d.sequence;
  return s.first + d.images * d.patches + s.promptTokens + s.actionQueries + s.stop;
}

export type Component = 'dinov2' | 'siglip' | 'projector' | 'llm' | 'head';

/** One operation of act(): its FLOPs and the bytes it moves, by kind. */
export interface Op {
  component: Component;
  name: string;
  flops: number;
  weightBytes: number;
  bankBytes: number;
  activationBytes: number;
}

class Inventory {
  readonly ops: Op[] = [];
  constructor(private component: Component) {}
  in(component: Component): this {
    this.component = component;
    return this;
  }
  private add(name: string, op: Partial<Op>) {
    this.ops.push({ component: this.component, name, flops: 0, weightBytes: 0, bankBytes: 0, activationBytes: 0, ...op });
  }
  /** y[tokens, out] = x[tokens, in] · Wᵀ (+ b) */
  linear(name: string, tokens: number, inF: number, outF: number, bias = true) {
    this.add(name, {
      flops: 2 * tokens * inF * outF,
      weightBytes: (inF * outF + (bias ? outF : 0)) * BF16,
      activationBytes: tokens * (inF + outF) * BF16,
    });
  }
  /** softmax(Q Kᵀ) V over all heads: `dim` = heads × head_dim of the queries (and of the values). */
  attention(name: string, queries: number, keys: number, dim: number, kvDim = dim) {
    this.add(name, {
      flops: 2 * 2 * queries * keys * dim,
      activationBytes: (2 * queries * dim + 2 * keys * kvDim) * BF16,
    });
  }
  /** Parameters read without matmul FLOPs (norms, position embeddings, tokens, gates). */
  params(name: string, count: number) {
    this.add(name, { weightBytes: count * BF16 });
  }
  l1Scan(name: string, rows: number, keyDim: number) {
    this.add(name, { flops: 2 * rows * keyDim, bankBytes: rows * keyDim * BF16 });
  }
  /** Rows gathered from a table (embedding lookups, retrieved bank values). */
  gather(name: string, rows: number, width: number) {
    this.add(name, { activationBytes: rows * width * BF16 });
  }
}

// Both images go through a ViT as one batch: its weights are read once, attention stays within an image.
function vit(inv: Inventory, name: 'dino' | 'siglip', d: Dims) {
  const v = d[name];
  const tokens = d.images * (d.patches + v.prefixTokens);
  const pixels = 3 * d.patch * d.patch;
  inv.linear('patch_embed', d.images * d.patches, pixels, v.dim);
  inv.params('pos_embed', d.patches * v.dim);
  if (v.prefixTokens) inv.params('cls + register tokens', v.prefixTokens * v.dim);
  for (let b = 0; b < v.blocksRun; b++) {
    inv.params(`block${b}.norm1+norm2`, 4 * v.dim);
    if (name === 'dino') inv.params(`block${b}.layerscale`, 2 * v.dim);
    inv.linear(`block${b}.qkv`, tokens, v.dim, 3 * v.dim);
    for (let i = 0; i < d.images; i++)
      inv.attention(`block${b}.attention.image${i}`, d.patches + v.prefixTokens, d.patches + v.prefixTokens, v.dim);
    inv.linear(`block${b}.proj`, tokens, v.dim, v.dim);
    inv.linear(`block${b}.fc1`, tokens, v.dim, v.mlp);
    inv.linear(`block${b}.fc2`, tokens, v.mlp, v.dim);
  }
}

/** Every operation of one act() at batch 1. */
export function actOps(d: Dims = FULL_SIZE): Op[] {
  const inv = new Inventory('dinov2');
  vit(inv, 'dino', d);
  vit(inv.in('siglip'), 'siglip', d);

  inv.in('projector');
  const patches = d.images * d.patches;
  const p = d.projector;
  for (let i = 0; i + 1 < p.length; i++) inv.linear(`fc${i + 1}`, patches, p[i], p[i + 1]);

  inv.in('llm');
  const l = d.llm, S = sequenceLength(d), kv = l.kvHeads * l.headDim;
  inv.gather('text token embeddings', S - patches - d.sequence.actionQueries, l.dim);
  inv.params('action_queries', d.sequence.actionQueries * l.dim);
  for (let i = 0; i < l.layers; i++) {
    inv.params(`layer${i}.norms`, 2 * l.dim);
    inv.linear(`layer${i}.q_proj`, S, l.dim, l.heads * l.headDim);
    inv.linear(`layer${i}.k_proj`, S, l.dim, kv);
    inv.linear(`layer${i}.v_proj`, S, l.dim, kv);
    inv.attention(`layer${i}.attention`, S, S, l.heads * l.headDim, kv);
    inv.linear(`layer${i}.o_proj`, S, l.heads * l.headDim, l.dim, false);
    inv.linear(`layer${i}.gate_proj`, S, l.dim, l.mlp, false);
    inv.linear(`layer${i}.up_proj`, S, l.dim, l.mlp, false);
    inv.linear(`layer${i}.down_proj`, S, l.mlp, l.dim, false);
  }
  inv.params('final norm', l.dim);

  inv.in('head');
  const h = d.head, m = d.msm, T = h.chunk, D = h.dim;
  inv.linear('proprio.fc1', 1, h.proprioDim, D);
  inv.linear('proprio.fc2', 1, D, D);
  inv.l1Scan('msm.l1_topk', m.bankRows, m.keyDim);
  inv.gather('msm.values', m.topK, T * h.actionDim);
  inv.linear('memory_value_proj', m.topK, T * h.actionDim, T * D);
  inv.params('layer_norm1', 2 * h.actionDim * D);
  inv.linear('fc1', T, h.actionDim * D, D);
  for (let b = 0; b < h.blocks; b++) {
    for (const n of ['q_proj', 'k_self', 'v_self']) inv.linear(`block${b}.${n}`, T, D, D);
    inv.linear(`block${b}.k_adapter`, h.adapterTokens, D, D + h.heads); // keys | head-wise gate logits
    inv.linear(`block${b}.v_adapter`, h.adapterTokens, D, D);
    inv.linear(`block${b}.k_task`, h.taskTokens, D, D);
    inv.linear(`block${b}.v_task`, h.taskTokens, D, D);
    inv.attention(`block${b}.mol_attention`, T, T + h.adapterTokens + h.taskTokens, D);
    inv.linear(`block${b}.o_proj`, T, D, D);
    // MSM injection: one query of T·D against the R retrieved entries.
    inv.attention(`block${b}.msm_attention`, 1, m.topK, T * D);
    inv.params(`block${b}.ffn_norm+gating_factor`, 2 * D + 1);
    inv.linear(`block${b}.ffn`, T, D, D);
  }
  inv.params('layer_norm2', 2 * D);
  inv.linear('fc2', T, D, h.actionDim);
  return inv.ops;
}

export interface Gpu {
  name: string;
  bf16TensorTflops: number;
  memoryGBs: number;
  source: string;
}

export const GPUS: Gpu[] = [
  {
    name: 'RTX 3090',
    bf16TensorTflops: 71,
    memoryGBs: 936,
    source: 'NVIDIA Ampere GA102 GPU Architecture whitepaper (v2), Appendix A, GeForce RTX 3090: Peak BF16 Tensor ' +
      'TFLOPS with FP32 Accumulate 71 dense (142 with 2:4 sparsity), = 328 tensor cores x 1695 MHz boost x 64 ' +
      'FMA/clock x 2. The 142 dense figure is FP16 with FP16 accumulate; bf16 always accumulates in FP32, which ' +
      'GeForce Ampere runs at half rate. Memory 936 GB/s GDDR6X',
  },
  {
    name: 'A800 80GB',
    bf16TensorTflops: 312,
    memoryGBs: 2039,
    source: 'A100 80GB SXM datasheet figures (A800 differs only in NVLink, 400 vs 600 GB/s): BF16 Tensor Core 312 ' +
      'TFLOPS dense (624 sparse), HBM2e 2,039 GB/s (the PCIe A800/A100 80GB: 1,935 GB/s)',
  },
];

export const ACTIONS_PER_ACT = FULL_SIZE.head.chunk;

export interface Totals { flops: number; weightBytes: number; bankBytes: number; activationBytes: number; bytes: number }

export function totals(ops: Op[]): Totals {
  const t = { flops: 0, weightBytes: 0, bankBytes: 0, activationBytes: 0, bytes: 0 };
  for (const o of ops) {
    t.flops += o.flops;
    t.weightBytes += o.weightBytes;
    t.bankBytes += o.bankBytes;
    t.activationBytes += o.activationBytes;
  }
  t.bytes = t.weightBytes + t.bankBytes + t.activationBytes;
  return t;
}

export interface Projection {
  gpu: string;
  computeMs: number;
  memoryMs: number;
  boundMs: number;
  bound: 'compute' | 'memory';
  actsPerSecond: number;
  actionsPerSecond: number;
}

export function project(t: Totals, gpu: Gpu): Projection {
  const computeMs = t.flops / (gpu.bf16TensorTflops * 1e12) * 1e3;
  const memoryMs = t.bytes / (gpu.memoryGBs * 1e9) * 1e3;
  const boundMs = Math.max(computeMs, memoryMs);
  return {
    gpu: gpu.name, computeMs, memoryMs, boundMs, bound: computeMs >= memoryMs ? 'compute' : 'memory',
    actsPerSecond: 1e3 / boundMs, actionsPerSecond: ACTIONS_PER_ACT * 1e3 / boundMs,
  };
}

function byComponent(ops: Op[]) {
  const out: Record<string, Totals> = {};
  for (const c of ['dinov2', 'siglip', 'projector', 'llm', 'head'] as const) out[c] = totals(ops.filter((o) => o.component === c));
  return out;
}

function main() {
  const ops = actOps();
  const t = totals(ops);
  const rows = GPUS.map((g) => project(t, g));
  const G = 1e9;
  console.log('PROJECTION (roofline bound from analytical FLOPs/bytes; not a measurement)');
  console.log(`one act(): batch 1, ${ACTIONS_PER_ACT}-action chunk, LLM sequence ${sequenceLength()} tokens`);
  console.log(`  FLOPs ${(t.flops / G).toFixed(1)} G | bytes ${(t.bytes / G).toFixed(3)} GB = weights ` +
    `${(t.weightBytes / G).toFixed(3)} + MSM bank ${(t.bankBytes / G).toFixed(3)} + activations ${(t.activationBytes / G).toFixed(3)}`);
  for (const [c, x] of Object.entries(byComponent(ops)))
    console.log(`  ${c.padEnd(9)} ${(x.flops / G).toFixed(1).padStart(7)} GFLOP  ${(x.weightBytes / G).toFixed(3)} GB weights`);
  console.log('');
  console.log('| GPU (PROJECTION) | compute-bound ms | memory-bound ms | bound ms | acts/s | actions/s (8/chunk) |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows)
    console.log(`| ${r.gpu} | ${r.computeMs.toFixed(2)} | ${r.memoryMs.toFixed(2)} | ${r.boundMs.toFixed(2)} (${r.bound}) | ` +
      `${r.actsPerSecond.toFixed(0)} | ${r.actionsPerSecond.toFixed(0)} |`);
  for (const g of GPUS) console.log(`${g.name}: ${g.source}`);

  const file = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', 'roofline.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({
    kind: 'PROJECTION', note: 'roofline bound from analytical FLOPs and bytes (see bench/roofline.ts); not a measurement',
    batch: 1, actionsPerAct: ACTIONS_PER_ACT, sequenceLength: sequenceLength(), dims: FULL_SIZE,
    totals: t, components: byComponent(ops), gpus: GPUS, projections: rows,
  }, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), file)}`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) main();
