import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, ShapeError } from '../lib/errors.js';
import { parsePreprocessorConfig, pixelValues, type RawImage } from '../lib/images.js';
import { getBinding } from '../lib/native/binding.js';
import { runTorchJob } from '../lib/native/queue.js';
import { FIXTURE_A, loadCases, maxAbsDiff, toFloat32 } from './helpers/fixtures.js';
import { checksum, loadPreprocessTensors, normalizeLikeTorch, pattern, preprocessCases } from './helpers/preprocess.js';

const prepA = parsePreprocessorConfig(
  JSON.parse(fs.readFileSync(path.join(FIXTURE_A, 'preprocessor_config.json'), 'utf8')), 'fixture A');

/** Sample b of a (B, H, W, 3) uint8 fixture tensor. */
function rawOf(t: { shape: number[]; data: Uint8Array }, b: number): RawImage {
  const [, height, width] = t.shape, n = height * width * 3;
  return { data: t.data.subarray(b * n, (b + 1) * n), width, height };
}

describe('image preprocessing (native) vs the reference processor', () => {
  it('reads fixture A\'s preprocessor config (tvf_normalize_params override means/stds)', () => {
    expect(prepA.size).toBe(56);
    expect(prepA.means).toEqual([[0.484375, 0.455078125, 0.40625], [0.5, 0.5, 0.5]]);
    expect(prepA.stds).toEqual([[0.228515625, 0.2236328125, 0.224609375], [0.5, 0.5, 0.5]]);
  });

  it('reproduces fixture A pixel_values bit for bit, batch 1 and batch 2 ([primary, wrist] x [DINO, SigLIP])', async () => {
    const cases = await loadCases();
    for (const c of ['case0', 'case1', 'case2', 'case3']) {
      const primary = cases[`${c}.input.raw_primary_u8`], wrist = cases[`${c}.input.raw_wrist_u8`];
      const expected = cases[`${c}.expected.pixel_values`];
      const batch = primary.shape[0];
      const images: RawImage[] = [];
      for (let b = 0; b < batch; b++) images.push(rawOf(primary, b), rawOf(wrist, b));
      const out = await pixelValues(images, prepA, { imagesPerSample: 2, names: images.map((_, i) => `${c}[${i}]`) });
      expect(out.shape).toEqual(expected.shape);
      expect(maxAbsDiff(out.data, toFloat32(expected)), c).toBe(0);
    }
  });

  it('matches PIL bicubic resizes (up/down, extreme aspect ratios, 1 px, 224 from 256 and 480x640) and the '
    + 'LIBERO center crop transcription exactly', async () => {
    const tensors = await loadPreprocessTensors();
    expect(preprocessCases.resize.length).toBeGreaterThanOrEqual(15);
    for (const rc of preprocessCases.resize) {
      const input = pattern(rc.height, rc.width, rc.seed);
      expect(checksum(input), `${rc.name}: generated input`).toBe(rc.inputChecksum);
      const expectedU8 = tensors[`resize.${rc.name}.expected_u8`];
      expect(expectedU8.shape).toEqual([rc.size, rc.size, 3]);
      const prep = { ...prepA, size: rc.size };
      const out = await pixelValues([{ data: input, width: rc.width, height: rc.height }], prep,
        { centerCrop: rc.centerCrop, names: [rc.name] });
      expect(out.shape).toEqual([1, 6, rc.size, rc.size]);
      const expected = normalizeLikeTorch(expectedU8.data, rc.size, rc.size, prep.means, prep.stds);
      expect(maxAbsDiff(out.data, expected), `${rc.name} (${rc.reference})`).toBe(0);
    }
  });

  it('center crop: `true` is LIBERO\'s area 0.9, a constant image stays constant, and it changes a textured one', async () => {
    const rc = preprocessCases.resize.find((r) => r.name === 'crop_224_libero')!;
    const img = { data: pattern(rc.height, rc.width, rc.seed), width: rc.width, height: rc.height };
    const prep = { ...prepA, size: 224 };
    const asBool = await pixelValues([img], prep, { centerCrop: true });
    const asArea = await pixelValues([img], prep, { centerCrop: 0.9 });
    const none = await pixelValues([img], prep);
    expect(maxAbsDiff(asBool.data, asArea.data)).toBe(0);
    expect(maxAbsDiff(none.data, asArea.data)).toBeGreaterThan(0.5);
    const flat = { data: new Uint8Array(30 * 20 * 3).fill(77), width: 20, height: 30 };
    const cropped = await pixelValues([flat], { ...prepA, size: 16 }, { centerCrop: 0.9 });
    const expected = normalizeLikeTorch(new Uint8Array(16 * 16 * 3).fill(77), 16, 16, prepA.means, prepA.stds);
    expect(maxAbsDiff(cropped.data, expected)).toBe(0);
  });

  it('rejects bad images natively with typed errors naming the image', async () => {
    const call = (images: Array<{ data: Uint8Array; width: number; height: number; name?: string }>, extra = {}) =>
      runTorchJob(() => getBinding().preprocessImages({ images, size: 8, means: prepA.means, stds: prepA.stds, ...extra }));
    const ok = { data: new Uint8Array(4 * 5 * 3), width: 5, height: 4, name: 'images.primary' };
    await expect(call([ok, { data: new Uint8Array(10), width: 5, height: 4, name: 'images.wrist' }]))
      .rejects.toThrow(new ShapeError('images.wrist: expected 5x4x3 = 60 bytes (HWC RGB), got 10'));
    await expect(call([{ ...ok, data: new Uint8Array(80) }])).rejects.toThrow(/images.primary: expected 3 channels .* got 4 channels/);
    await expect(call([{ ...ok, width: 0, data: new Uint8Array(0) }])).rejects.toBeInstanceOf(ShapeError);
    await expect(call([{ ...ok, width: 0, data: new Uint8Array(0) }])).rejects.toThrow('images.primary: zero-size image (0x4)');
    await expect(call([ok, ok, ok], { imagesPerSample: 2 })).rejects.toBeInstanceOf(ShapeError);
    await expect(call([ok], { centerCrop: 1.5 })).rejects.toBeInstanceOf(InputError);
    await expect(call([ok], { stds: [[1, 0, 1], [1, 1, 1]] })).rejects.toBeInstanceOf(InputError);
    await expect(call([{ ...ok, data: new Float32Array(60) as unknown as Uint8Array }]))
      .rejects.toThrow(new InputError('images.primary: data must be a Uint8Array of HWC RGB bytes'));
  });
});
