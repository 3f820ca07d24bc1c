/**
 * The frozen VLM against fixture A (reference run of the Prismatic/Qwen2 code on a tiny model): projected patches and
 * every hidden state, with and without the reference's bf16 pixel cast; the bfloat16 dtype's error; typed errors for
 * bad inputs and damaged checkpoints; greedy VQA against HF generate (fixture m2vla-tiny-a-vqa).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBackbone, type Backbone } from '../../lib/backbone.js';
import { CheckpointError, DisposedError, InputError, ShapeError } from '../../lib/errors.js';
import { getBinding, type NativeTensor } from '../../lib/native/binding.js';
import type { Observation } from '../../lib/observation.js';
import { FIXTURE_A, loadCases, maxAbsDiff, toFloat32 } from '../helpers/fixtures.js';
import { encodeSafetensors } from '../helpers/writers.js';

const CASES = ['case0', 'case1', 'case2', 'case3'];
const TOL = 1e-4;
const NP = 32; // patches (2 images x 16)
const NT = 8; // action queries

let cases: Record<string, NativeTensor>;
let withCasts: Backbone, noCasts: Backbone, bf16: Backbone;
const measured: Record<string, number> = {};

/** The observations of a case (split along the batch): the processor's float32 pixel values and the prompt ids. */
function observations(c: string): Observation[] {
  const pv = cases[`${c}.expected.pixel_values`], ids = cases[`${c}.input.input_ids`];
  const [batch, ...chw] = pv.shape;
  const pixels = toFloat32(pv), idVals = toFloat32(ids), per = pixels.length / batch, p = ids.shape[1];
  return Array.from({ length: batch }, (_, b) => ({
    pixelValues: { data: pixels.slice(b * per, (b + 1) * per), shape: chw },
    inputIds: Array.from(idVals.slice(b * p, (b + 1) * p)),
  }));
}

/** hidden state k, rows [from, from+n) of every batch entry, as [B, n, D] values. */
function rows(h: { data: Float32Array; shape: number[] }, k: number, from: number, n: number): Float32Array {
  const [, batch, seq, d] = h.shape;
  const out = new Float32Array(batch * n * d);
  for (let b = 0; b < batch; b++) {
    const start = ((k * batch + b) * seq + from) * d;
    out.set(h.data.subarray(start, start + n * d), b * n * d);
  }
  return out;
}

/** expected_nocast.head.input_aq [B, L+1, NT, D] -> the [B, NT, D] values of hidden state k. */
function inputAq(c: string, k: number): Float32Array {
  const t = cases[`${c}.expected_nocast.head.input_aq`];
  const [batch, layers, nt, d] = t.shape, all = toFloat32(t), out = new Float32Array(batch * nt * d);
  for (let b = 0; b < batch; b++) out.set(all.subarray((b * layers + k) * nt * d, (b * layers + k + 1) * nt * d), b * nt * d);
  return out;
}

beforeAll(async () => {
  cases = await loadCases();
  withCasts = await loadBackbone(FIXTURE_A, { referenceCasts: true, threads: 1 });
  noCasts = await loadBackbone(FIXTURE_A, { threads: 1 });
  bf16 = await loadBackbone(FIXTURE_A, { dtype: 'bfloat16', threads: 1 });
});

afterAll(() => {
  withCasts?.dispose();
  noCasts?.dispose();
  bf16?.dispose();
  console.log('backbone max abs errors:\n' + Object.entries(measured).map(([k, v]) => `  ${k}: ${v.toExponential(2)}`).join('\n'));
});

describe('backbone parity (float32)', () => {
  it.each(CASES)('%s with reference casts: projected patches and every hidden state', async (c) => {
    const out = await withCasts.forward(observations(c));
    const hs = cases[`${c}.expected.hidden_states`];
    expect(out.hiddenStates.shape).toEqual(hs.shape);
    expect(out.projectedPatches.shape).toEqual(cases[`${c}.expected.projected_patches`].shape);
    const patches = maxAbsDiff(out.projectedPatches.data, toFloat32(cases[`${c}.expected.projected_patches`]));
    measured[`${c} projected_patches`] = patches;
    expect(patches).toBeLessThan(TOL);
    const [layers, batch, seq, d] = hs.shape, expected = toFloat32(hs), per = batch * seq * d;
    for (let k = 0; k < layers; k++) {
      const err = maxAbsDiff(out.hiddenStates.data.subarray(k * per, (k + 1) * per), expected.subarray(k * per, (k + 1) * per));
      measured[`${c} hidden_states[${k}]`] = err;
      expect(err, `hidden state ${k}`).toBeLessThan(TOL);
    }
  });

  it.each(CASES)('%s without casts: projected patches and the action-query slice of every hidden state', async (c) => {
    const out = await noCasts.forward(observations(c));
    const patches = maxAbsDiff(out.projectedPatches.data, toFloat32(cases[`${c}.expected_nocast.projected_patches`]));
    measured[`${c} nocast projected_patches`] = patches;
    expect(patches).toBeLessThan(TOL);
    const p = cases[`${c}.input.input_ids`].shape[1];
    let worst = 0;
    for (let k = 0; k < out.hiddenStates.shape[0]; k++) {
      worst = Math.max(worst, maxAbsDiff(rows(out.hiddenStates, k, NP + p - 1, NT), inputAq(c, k)));
    }
    measured[`${c} nocast input_aq (all hidden states)`] = worst;
    expect(worst).toBeLessThan(TOL);
  });
});

describe('backbone in bfloat16', () => {
  // bf16 weights and activations (8-bit mantissa) against the float32 reference, relative to the largest magnitude of
  // each tensor. Measured worst: 2.7% (deeper hidden states; vision/projector <= 1%); HF Qwen2 itself run in bf16 on the
  // same inputs is off by up to 2.2% (same order: this is bf16 rounding, not a bug). Bound: 4%.
  const BF16_RELATIVE_BOUND = 0.04;
  const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i])); return m; };

  it.each(CASES)('%s: error vs the float32 reference stays within 4%% of the magnitude', async (c) => {
    const out = await bf16.forward(observations(c));
    const expectedPatches = toFloat32(cases[`${c}.expected.projected_patches`]);
    const pRel = maxAbsDiff(out.projectedPatches.data, expectedPatches) / maxAbs(expectedPatches);
    measured[`${c} bf16 projected_patches (relative)`] = pRel;
    expect(pRel).toBeLessThan(BF16_RELATIVE_BOUND);
    const hs = cases[`${c}.expected.hidden_states`], expected = toFloat32(hs), per = expected.length / hs.shape[0];
    for (let k = 0; k < hs.shape[0]; k++) {
      const e = expected.subarray(k * per, (k + 1) * per);
      const rel = maxAbsDiff(out.hiddenStates.data.subarray(k * per, (k + 1) * per), e) / maxAbs(e);
      measured[`${c} bf16 hidden_states[${k}] (relative)`] = rel;
      expect(rel, `hidden state ${k}`).toBeLessThan(BF16_RELATIVE_BOUND);
    }
  });
});

describe('backbone input errors', () => {
  const one = () => observations('case0')[0];

  it('takes token ids as number[], Int32Array or BigInt64Array', async () => {
    const o = one(), ids = o.inputIds as number[];
    const ref = await noCasts.forward(o);
    for (const inputIds of [Int32Array.from(ids), BigInt64Array.from(ids, BigInt)]) {
      const out = await noCasts.forward({ ...o, inputIds });
      expect(maxAbsDiff(out.hiddenStates.data, ref.hiddenStates.data)).toBe(0);
    }
  });

  it('rejects pixel values whose size does not match their shape', async () => {
    const o = one();
    o.pixelValues = { data: o.pixelValues!.data.slice(1), shape: o.pixelValues!.shape };
    await expect(withCasts.forward(o)).rejects.toThrow(ShapeError);
    await expect(withCasts.forward(o)).rejects.toThrow(/pixelValues: shape \[12, 56, 56\] needs 37632 values, got 37631/);
  });

  it('rejects pixel values of the wrong image size, naming the expected shape', async () => {
    const o = one();
    o.pixelValues = { data: new Float32Array(12 * 64 * 64), shape: [12, 64, 64] };
    await expect(withCasts.forward(o)).rejects.toThrow(/^pixelValues: expected \[12, 56, 56\].*got \[12, 64, 64\]/);
  });

  it('rejects an image count other than the model\'s', async () => {
    const o = one();
    o.pixelValues = { data: o.pixelValues!.data.slice(0, 6 * 56 * 56), shape: [6, 56, 56] };
    const err = await withCasts.forward(o).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(/pixelValues: 6 channels are 1 image, but this model takes 2/);
  });

  it('rejects a token id outside the vocabulary, naming it and its position (native check)', async () => {
    const o = one();
    (o.inputIds as number[])[3] = 300;
    const err = await withCasts.forward(o).catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(/token id 300 at position 3 of observation 0 is outside the vocabulary \(0\.\.299\)/);
  });

  it('rejects a batch with different prompt lengths', async () => {
    const [a] = observations('case0'), [b] = observations('case1');
    await expect(withCasts.forward([a, b])).rejects.toThrow(/observations\[1\]\.inputIds: 7 tokens, but observations\[0\] has 12/);
  });

  it('names the observation of a batch whose input is wrong', async () => {
    const [a, b] = observations('case3');
    b.inputIds = [1.5];
    await expect(withCasts.forward([a, b])).rejects.toThrow(/observations\[1\]\.inputIds: position 0 is 1.5/);
  });

  it('rejects calls after dispose, also through Symbol.asyncDispose', async () => {
    const bb = await loadBackbone(FIXTURE_A, { threads: 1 });
    bb.dispose();
    await expect(bb.forward(one())).rejects.toThrow(DisposedError);
    const bb2 = await loadBackbone(FIXTURE_A, { threads: 1 });
    {
      await using scoped = bb2;
      expect((await scoped.forward(one())).hiddenStates.shape).toEqual([5, 1, 53, 64]);
    }
    await expect(bb2.forward(one())).rejects.toThrow(DisposedError);
  });
});

describe('backbone checkpoint errors', () => {
  let dir: string;
  let weights: Record<string, NativeTensor>;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-backbone-'));
    for (const f of ['config.json', 'manifest.json', 'preprocessor_config.json']) fs.copyFileSync(path.join(FIXTURE_A, f), path.join(dir, f));
    weights = await getBinding().loadStateDict(path.join(FIXTURE_A, 'model.safetensors'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const damaged = (edit: (w: Record<string, NativeTensor>) => void) => {
    const copy = { ...weights };
    edit(copy);
    fs.writeFileSync(path.join(dir, 'model.safetensors'), encodeSafetensors(copy));
    return loadBackbone(dir, { threads: 1 });
  };

  it('names a missing tensor', async () => {
    const err = await damaged((w) => { delete w['language_model.model.layers.1.mlp.up_proj.weight']; }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/missing tensor 'language_model\.model\.layers\.1\.mlp\.up_proj\.weight'/);
  });

  it('names a mis-shaped tensor with both shapes', async () => {
    const name = 'language_model.model.layers.0.self_attn.q_proj.weight';
    const err = await damaged((w) => { w[name] = { ...w[name], shape: [32, 128] }; }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/tensor 'language_model\.model\.layers\.0\.self_attn\.q_proj\.weight' has shape \[32, 128\], expected \[64, 64\]/);
  });

  it('names a position table that does not match the patch grid', async () => {
    const name = 'vision_backbone.featurizer.pos_embed';
    const err = await damaged((w) => {
      w[name] = { dtype: 'float32', shape: [1, 25, 48], data: new Uint8Array(25 * 48 * 4) };
    }).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/'vision_backbone\.featurizer\.pos_embed' has shape \[1, 25, 48\], expected \[1, 16, 48\] \(a 4x4 patch grid/);
  });

  it('loads the undamaged copy (the writer round-trips)', async () => {
    const bb = await damaged(() => {});
    const out = await bb.forward(observations('case0'));
    bb.dispose();
    expect(maxAbsDiff(out.projectedPatches.data, toFloat32(cases['case0.expected_nocast.projected_patches']))).toBeLessThan(TOL);
  });
});

describe('backbone VQA (greedy decoding with a KV cache)', () => {
  // test/fixtures/m2vla-tiny-a-vqa: HF Qwen2ForCausalLM.generate over fixture A's reference projected patches.
  let vqa: Record<string, NativeTensor>;
  beforeAll(async () => {
    vqa = await getBinding().loadStateDict(path.join(FIXTURE_A, '..', 'm2vla-tiny-a-vqa', 'vqa.safetensors'));
  });

  it.each(['case0', 'case1', 'case2'])('%s: the same 12 tokens as HF generate', async (c) => {
    expect(vqa[`${c}.min_top2_gap`].shape).toEqual([1]);
    expect(toFloat32(vqa[`${c}.min_top2_gap`])[0]).toBeGreaterThan(1e-3); // no near tie to flip
    const tokens = await withCasts.ask(observations(c)[0], { maxNewTokens: 12 });
    expect(tokens).toEqual(Array.from(toFloat32(vqa[`${c}.generated`])));
  });

  it('stops at a stop id and includes it', async () => {
    const expected = Array.from(toFloat32(vqa['case0.generated']));
    const tokens = await withCasts.ask(observations('case0')[0], { maxNewTokens: 12, stopIds: [expected[2]] });
    expect(tokens).toEqual(expected.slice(0, 3));
  });

  it('rejects a bad maxNewTokens and calls after dispose', async () => {
    await expect(withCasts.ask(observations('case0')[0], { maxNewTokens: 0 })).rejects.toThrow(InputError);
    const bb = await loadBackbone(FIXTURE_A, { threads: 1 });
    bb.dispose();
    await expect(bb.ask(observations('case0')[0])).rejects.toThrow(DisposedError);
  });
});
