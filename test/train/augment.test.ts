// Training image augmentation (native/train/augment.h), the reference's `image_aug`: measured on synthetic images,
// 100 draws each, with the other operations switched off. Tolerances: 1.5/255 for values read back from uint8 pixels
// (one rounding of the output, one of the bilinear crop); the ranges are the reference's (area 0.9, brightness ±0.2,
// contrast and saturation ×[0.8, 1.2], hue ±0.05 turn), and the draws must cover most of each range.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { trainCommand } from '../../lib/cli/train.js';
import { InputError } from '../../lib/errors.js';
import { augmentImage, type RawImage } from '../../lib/images.js';
import type { AugmentationDraw, ImageAugmentation } from '../../lib/native/binding.js';
import { train, Trainer, type TrainOptions } from '../../lib/train.js';
import { float32, freshOut, LIBERO, tinyRun } from '../helpers/train.js';

const TINY = await tinyRun();

const S = 64, DRAWS = 100, TOL = 1.5 / 255;
const OFF: ImageAugmentation = { cropArea: 1, brightness: 0, contrast: [1, 1], saturation: [1, 1], hue: 0 };

function image(fn: (x: number, y: number) => [number, number, number]): RawImage {
  const data = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) data.set(fn(x, y), (y * S + x) * 3);
  return { data, width: S, height: S };
}

const draws = (img: RawImage, augmentation: ImageAugmentation, seed = 1) =>
  augmentImage(img, { size: S, seed, count: DRAWS, augmentation, threads: 1 });

function channel(img: RawImage, c: number): number[] {
  return Array.from({ length: S * S }, (_, i) => img.data[i * 3 + c] / 255);
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** HSV of an RGB triple in [0, 1] (hue as a fraction of a turn). */
function hsv([r, g, b]: number[]): { h: number; s: number } {
  const v = Math.max(r, g, b), range = v - Math.min(r, g, b);
  const sector = v === r ? (g - b) / range : v === g ? (b - r) / range + 2 : (r - g) / range + 4;
  return { h: ((sector / 6) % 1 + 1) % 1, s: range / v };
}

/** The measured values lie in [lo, hi] (± tol) and cover at least 80% of it. */
function expectCovers(values: number[], lo: number, hi: number, tol = TOL) {
  expect(Math.min(...values)).toBeGreaterThanOrEqual(lo - tol);
  expect(Math.max(...values)).toBeLessThanOrEqual(hi + tol);
  expect(Math.max(...values) - Math.min(...values)).toBeGreaterThan(0.8 * (hi - lo));
}

describe('image augmentation', () => {
  // A ramp: red encodes x, green encodes y, so a crop's box can be read back from the output.
  const ramp = image((x, y) => [Math.round((x * 255) / (S - 1)), Math.round((y * 255) / (S - 1)), 128]);

  it('is deterministic for a seed, differs across seeds and from no augmentation', async () => {
    const [a, b, c] = [await draws(ramp, {}, 5), await draws(ramp, {}, 5), await draws(ramp, {}, 6)];
    expect(a.map((d) => d.image.data)).toEqual(b.map((d) => d.image.data));
    expect(Buffer.from(a[0].image.data).equals(Buffer.from(c[0].image.data))).toBe(false);
    const [identity] = await augmentImage(ramp, { size: S, augmentation: OFF });
    expect(identity.image.data).toEqual(ramp.data);  // every operation off: the resized frame itself
    expect(a.every((d) => !Buffer.from(d.image.data).equals(Buffer.from(ramp.data)))).toBe(true);
  });

  it('crops 90% of the area at random, square, on the diagonal as the reference does', async () => {
    const side = Math.sqrt(0.9);
    for (const independent of [false, true]) {
      const out = await draws(ramp, { ...OFF, cropArea: 0.9, independent });
      const boxes = out.map(({ image: img }) => {
        const r = channel(img, 0), g = channel(img, 1);
        return { left: Math.min(...r), width: Math.max(...r) - Math.min(...r), top: Math.min(...g), height: Math.max(...g) - Math.min(...g) };
      });
      for (const b of boxes) {
        expect(b.width * b.height).toBeGreaterThan(0.9 - 4 * TOL);
        expect(b.width * b.height).toBeLessThan(0.9 + 4 * TOL);
      }
      expectCovers(boxes.map((b) => b.left), 0, 1 - side);
      expectCovers(boxes.map((b) => b.top), 0, 1 - side);
      out.forEach(({ params }, i) => {
        expect(params.crop[2] - params.crop[0]).toBeCloseTo(side, 6);
        expect(Math.abs(params.crop[0] - boxes[i].top)).toBeLessThan(2 * TOL);
        expect(Math.abs(params.crop[1] - boxes[i].left)).toBeLessThan(2 * TOL);
      });
      // One draw per image moves both offsets together (dlimp passes one seed to each op); independent ones differ.
      const same = boxes.filter((b) => Math.abs(b.left - b.top) <= TOL).length;
      if (independent) expect(same).toBeLessThan(DRAWS / 4);
      else expect(same).toBe(DRAWS);
    }
  });

  it('shifts brightness by up to ±0.2', async () => {
    const gray = image(() => [128, 128, 128]);
    const out = await draws(gray, { ...OFF, brightness: 0.2 });
    const shift = out.map(({ image: img }) => mean(channel(img, 1)) - 128 / 255);
    expectCovers(shift, -0.2, 0.2);
    out.forEach(({ params }, i) => expect(Math.abs(shift[i] - params.brightness)).toBeLessThan(TOL));
  });

  it('scales contrast by 0.8 to 1.2 around each channel mean', async () => {
    const halves = image((x) => (x < S / 2 ? [64, 64, 64] : [192, 192, 192]));
    const out = await draws(halves, { ...OFF, contrast: [0.8, 1.2] });
    const factor = out.map(({ image: img }) => {
      const g = channel(img, 1);
      return (g[S - 1] - g[0]) / (128 / 255);
    });
    expectCovers(factor, 0.8, 1.2, 3 * TOL);
    out.forEach(({ params }, i) => expect(Math.abs(factor[i] - params.contrast)).toBeLessThan(3 * TOL));
  });

  it('scales saturation by 0.8 to 1.2 and turns hue by up to ±0.05', async () => {
    const orange = image(() => [200, 100, 50]), base = hsv([200 / 255, 100 / 255, 50 / 255]);
    const pixel = (img: RawImage) => [0, 1, 2].map((c) => img.data[c] / 255);
    const sat = (await draws(orange, { ...OFF, saturation: [0.8, 1.2] })).map(({ image: img }) => hsv(pixel(img)).s / base.s);
    expectCovers(sat, 0.8, 1.2, 0.01);
    const hue = (await draws(orange, { ...OFF, hue: 0.05 })).map(({ image: img }) => hsv(pixel(img)).h - base.h);
    expectCovers(hue, -0.05, 0.05, 0.005);
  });

  it('draws once per image by default: every parameter follows the same uniform', async () => {
    const frac = (p: AugmentationDraw) => [p.crop[0] / (1 - Math.sqrt(0.9)), p.crop[1] / (1 - Math.sqrt(0.9)),
      (p.brightness + 0.2) / 0.4, (p.contrast - 0.8) / 0.4, (p.saturation - 0.8) / 0.4, (p.hue + 0.05) / 0.1];
    for (const { params } of await draws(ramp, {})) {
      const f = frac(params);
      for (const v of f) expect(v).toBeCloseTo(f[2], 4);
    }
    const spread = (await draws(ramp, { independent: true })).map(({ params }) => {
      const f = frac(params);
      return Math.max(...f) - Math.min(...f);
    });
    expect(mean(spread)).toBeGreaterThan(0.3);
  });

  it('rejects bad option values with InputError', async () => {
    await expect(augmentImage(ramp, { size: S, augmentation: { cropArea: 1.5 } }))
      .rejects.toThrow(new InputError('imageAugmentation.cropArea: expected an area fraction in (0, 1], got 1.5'));
    await expect(augmentImage(ramp, { size: S, augmentation: { contrast: [1.2, 0.8] } }))
      .rejects.toThrow(/imageAugmentation.contrast: expected \[lower, upper\] with 0 <= lower <= upper, got \[1.2, 0.8\]/);
    await expect(augmentImage(ramp, { size: S, augmentation: { hue: -0.1 } })).rejects.toThrow(InputError);
  });
});

describe('training with image augmentation', () => {
  const open: Trainer[] = [];
  afterAll(async () => {
    for (const t of open) await t.dispose();
  });
  const base = (o: Partial<TrainOptions> = {}): TrainOptions => ({
    data: LIBERO, init: TINY, out: freshOut(), steps: 5, batchSize: 2, lr: 1e-3, threads: 1, seed: 4, checkpointEvery: 2,
    imageAugmentation: true, ...o,
  });

  it('changes what the step sees, not what predict sees', async () => {
    const [on, off] = [await Trainer.create(base()), await Trainer.create(base({ imageAugmentation: false }))];
    open.push(on, off);
    const batch = await on.readBatch([0, 3]);
    const [a, b] = [await on.gradients(batch), await off.gradients(batch)];
    expect(float32(a['model.fc1.weight'])).not.toEqual(float32(b['model.fc1.weight']));
    expect((await on.predict(batch)).normalized).toEqual((await off.predict(batch)).normalized);
  });

  it('resumes to the loss trajectory of an uninterrupted run', async () => {
    const straight = await train(base({ out: freshOut() }));
    const plain = await train(base({ out: freshOut(), imageAugmentation: false }));
    expect(straight.metrics.map((m) => m.loss)).not.toEqual(plain.metrics.map((m) => m.loss));
    const out = freshOut(), stop = new AbortController();
    const first = await train({ ...base({ out }), signal: stop.signal,
      onProgress: (e) => { if (e.kind === 'step' && e.step === 3) stop.abort(); } });
    expect(first.steps).toBe(3);
    await expect(train({ ...base({ out }), resume: true, imageAugmentation: false })).rejects.toThrow(/imageAugmentation was true, now false/);
    const second = await train({ ...base({ out }), resume: true });
    expect([...first.metrics, ...second.metrics].map((m) => m.loss)).toEqual(straight.metrics.map((m) => m.loss));
  });

  it('is what m2vla train --image-aug turns on', async () => {
    const out = freshOut();
    expect(await trainCommand.run(['--data', LIBERO, '--init', await tinyRun(), '--out', out, '--steps', '1', '--batch', '2',
      '--lr', '1e-3', '--threads', '1', '--image-aug'])).toBe(0);
    const state = JSON.parse(fs.readFileSync(path.join(out, 'checkpoints', 'step-00000001', 'trainer_state.json'), 'utf8'));
    expect(state.fixed.imageAugmentation).toBe(true);
  });

  it('rejects bad option values with InputError before any step', async () => {
    await expect(train(base({ imageAugmentation: { cropArea: 0 } }))).rejects.toThrow(
      new InputError('imageAugmentation.cropArea: expected an area fraction in (0, 1], got 0'));
    await expect(train(base({ imageAugmentation: 'yes' as unknown as boolean }))).rejects.toThrow(
      new InputError('imageAugmentation: expected a boolean or an object, got "yes"'));
    await expect(train(base({ imageAugmentation: { crop: 0.9 } as ImageAugmentation }))).rejects.toThrow(/unknown option 'crop' \(did you mean 'cropArea'\?\)/);
    await expect(train(base({ imageAugmentation: { saturation: [0.8] } as unknown as ImageAugmentation }))).rejects.toThrow(
      new InputError('imageAugmentation.saturation: expected [lower, upper]'));
  });
});
