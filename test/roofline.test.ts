/**
 * bench/roofline.ts must not drift: its FLOPs are recounted here two other ways (closed-form per-layer formulas with
 * the published dims written out, and 2 × tokens × weight size over the full-size checkpoint's tensor list), and its
 * weight bytes must equal the used tensors of that checkpoint (lib/random-run.ts).
 */
import { describe, expect, it } from 'vitest';
import { FULL_SIZE_DIMS, headSpec, proprioSpec, vlmSpec, type Spec } from '../lib/random-run.js';
import { actOps, GPUS, project, sequenceLength, totals } from '../bench/roofline.js';

const t = totals(actOps());
const S = 1 + 512 + 50 + 64 + 1; // tok0 + 2 × 256 patches + prompt + action queries + STOP

// Attention FLOPs (QKᵀ and PV): 4 · queries · keys · width.
const attn = (q: number, k: number, width: number) => 4 * q * k * width;

describe('roofline FLOP count', () => {
  it('uses the expected LLM sequence', () => {
    expect(sequenceLength()).toBe(S);
  });

  it('matches closed-form per-layer formulas', () => {
    // ViT block on N tokens of width D: qkv + proj = 4D², MLP = 2·D·mlp, per token; attention over the N tokens.
    const vitBlock = (N: number, D: number, mlp: number) => 2 * N * (4 * D * D + 2 * D * mlp) + attn(N, N, D);
    const patchEmbed = (D: number) => 2 * 256 * (3 * 14 * 14) * D;
    const dino = 2 * (patchEmbed(1024) + 23 * vitBlock(261, 1024, 4096));
    const siglip = 2 * (patchEmbed(1152) + 26 * vitBlock(256, 1152, 4304));
    const projector = 2 * 512 * (2176 * 8704 + 8704 * 896 + 896 * 896);
    // Qwen2 layer: q and o 896², k and v 896·128 (2 KV heads × 64), SwiGLU 3 · 896 · 4864.
    const llm = 24 * (2 * S * (2 * 896 * 896 + 2 * 896 * 128 + 3 * 896 * 4864) + attn(S, S, 896));
    // Head block: 5 square projections of the 8 latent tokens (q, k_self, v_self, o_proj, ffn), k_adapter (+8 gate
    // columns) and v_adapter on 65 tokens, k_task and v_task on 512, attention over 8 + 65 + 512 keys, MSM over 4.
    const headBlock = 2 * 8 * 5 * 896 * 896 + 2 * 65 * 896 * (904 + 896) + 2 * 512 * 896 * 2 * 896 +
      attn(8, 8 + 65 + 512, 896) + attn(1, 4, 8 * 896);
    const head = 24 * headBlock + 2 * 8 * 6272 * 896 + 2 * 8 * 896 * 7 + 2 * 4 * 56 * 7168 +
      2 * (8 * 896 + 896 * 896) + 2 * 10_000 * 2688;
    expect(t.flops).toBe(dino + siglip + projector + llm + head);
  });

  it('matches 2 × tokens × weights over the checkpoint\'s matmul weights, plus attention and the L1 scan', () => {
    // Tokens each checkpoint matrix is applied to in one act() (both images in one batch).
    const tokensFor = (name: string): number => {
      if (name.includes('patch_embed')) return 512;
      if (name.startsWith('vision_backbone.featurizer.')) return 2 * 261;
      if (name.startsWith('vision_backbone.fused_featurizer.') || name.startsWith('projector.')) return 512;
      if (name.startsWith('language_model.')) return S;
      if (/\.(k_adapter|v_adapter)\./.test(name)) return 65;
      if (/\.(k_task|v_task)\./.test(name)) return 512;
      if (name.startsWith('memory_value_proj.')) return 4;
      if (name.startsWith('proprio.')) return 1;
      return 8; // the action latent: fc1, q/k_self/v_self/o_proj/ffn.1, fc2
    };
    let matmul = 0;
    for (const [name, shape] of usedTensors())
      if (name.endsWith('.weight') && shape.length >= 2 && !name.startsWith('action_queries'))
        matmul += 2 * tokensFor(name) * numel(shape);
    const attention = 2 * 23 * attn(261, 261, 1024) + 2 * 26 * attn(256, 256, 1152) + 24 * attn(S, S, 896) +
      24 * (attn(8, 585, 896) + attn(1, 4, 7168));
    expect(t.flops).toBe(matmul + attention + 2 * 10_000 * 2688);
  });
});

describe('roofline bytes and projection', () => {
  it('reads exactly the weights the forward uses, once, in bf16', () => {
    let params = 0;
    for (const [, shape] of usedTensors()) params += numel(shape);
    expect(t.weightBytes).toBe(2 * params);
    expect(t.bankBytes).toBe(2 * 10_000 * 2688);
  });

  it('projects time as the larger of the compute and memory bounds', () => {
    for (const gpu of GPUS) {
      const p = project(t, gpu);
      expect(p.computeMs).toBeCloseTo(t.flops / (gpu.bf16TensorTflops * 1e9), 9);
      expect(p.memoryMs).toBeCloseTo(t.bytes / (gpu.memoryGBs * 1e6), 9);
      expect(p.boundMs).toBe(Math.max(p.computeMs, p.memoryMs));
      expect(p.actionsPerSecond).toBeCloseTo(8 * p.actsPerSecond, 9);
    }
  });
});

function numel(shape: number[]) {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The full-size checkpoint's tensors that one act() reads, by name: not the last block of either ViT (the
 * second-to-last block's output is used) nor their final norms or SigLIP's MAP head, not the LLM's embedding table
 * (a lookup of a few rows) or LM head, not the head's unused k_memory/v_memory/film_gen, not the MSM bank (counted
 * apart). Proprio projector names get a `proprio.` prefix.
 */
function usedTensors(): Spec {
  const unused = [
    /^vision_backbone\.featurizer\.blocks\.23\./, /^vision_backbone\.fused_featurizer\.blocks\.26\./,
    /^vision_backbone\.(featurizer|fused_featurizer)\.norm\./, /\.attn_pool\./,
    /^language_model\.model\.embed_tokens\./, /^language_model\.lm_head\./,
    /\.(k_memory|v_memory|film_gen)\./, /^memory_bank\./,
  ];
  const all: Spec = [...vlmSpec(FULL_SIZE_DIMS), ...headSpec(FULL_SIZE_DIMS), ...proprioSpec(FULL_SIZE_DIMS).map(([n, s, i]) => [`proprio.${n}`, s, i] as Spec[number])];
  return all.filter(([name]) => !unused.some((re) => re.test(name)));
}
