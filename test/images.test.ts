import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { ConfigError, InputError, ShapeError } from '../lib/errors.js';
import { checkRawImage, decodeImage, parsePreprocessorConfig, pixelValues, readPreprocessorConfig, toRawImage } from '../lib/images.js';
import { FIXTURE_A, maxAbsDiff } from './helpers/fixtures.js';
import { loadPreprocessTensors, pattern, preprocessCases } from './helpers/preprocess.js';

describe('image inputs', () => {
  it('decodes PNG (RGB, RGBA, gray, gray+alpha, palette) and JPEG (4:2:0, 4:4:4, gray) to the RGB bytes PIL gives', async () => {
    const t = await loadPreprocessTensors();
    expect(preprocessCases.decode.length).toBe(8);
    for (const dc of preprocessCases.decode) {
      const img = await decodeImage(t[`decode.${dc.name}.encoded`].data, `images.${dc.name}`);
      expect([img.height, img.width], dc.name).toEqual([dc.height, dc.width]);
      expect(img.data.length).toBe(dc.height * dc.width * 3);
      expect(maxAbsDiff(img.data, t[`decode.${dc.name}.expected_u8`].data), dc.name).toBe(0);
    }
  });

  it('passes raw images through and feeds decoded ones to the same preprocessing', async () => {
    const raw = { data: pattern(30, 40, 3), width: 40, height: 30 };
    expect(await toRawImage(raw, 'images.primary')).toBe(raw);
    const png = await sharp(raw.data, { raw: { width: 40, height: 30, channels: 3 } }).png().toBuffer();
    const prep = { size: 16, means: [[0.5, 0.5, 0.5]], stds: [[0.5, 0.5, 0.5]] };
    const fromRaw = await pixelValues([raw], prep);
    const fromPng = await pixelValues([png], prep, { names: ['images.primary'] });
    expect(fromPng.shape).toEqual([1, 3, 16, 16]);
    expect(maxAbsDiff(fromRaw.data, fromPng.data)).toBe(0);
  });

  it('rejects bad raw images with errors naming the input', () => {
    const data = new Uint8Array(4 * 5 * 3);
    expect(() => checkRawImage({ data, width: 5, height: 4 }, 'images.wrist')).not.toThrow();
    expect(() => checkRawImage({ data: data.subarray(1), width: 5, height: 4 }, 'images.wrist'))
      .toThrow(new ShapeError('images.wrist: expected 5x4x3 = 60 bytes (HWC RGB), got 59'));
    expect(() => checkRawImage({ data: new Uint8Array(80), width: 5, height: 4 }, 'images.wrist'))
      .toThrow(/^images.wrist: expected 3 channels .* got 4 channels \(80 bytes\)/);
    expect(() => checkRawImage({ data: new Uint8Array(20), width: 5, height: 4 }, 'images.wrist'))
      .toThrow(/got 1 channels/);
    expect(() => checkRawImage({ data: new Uint8Array(0), width: 0, height: 4 }, 'images.wrist'))
      .toThrow(new ShapeError('images.wrist: zero-size image (0x4)'));
    expect(() => checkRawImage({ data, width: 2.5, height: 4 }, 'images.wrist')).toThrow(InputError);
    expect(() => checkRawImage({ data: [1, 2, 3] as unknown as Uint8Array, width: 1, height: 1 }, 'images.wrist')).toThrow(InputError);
  });

  it('rejects undecodable bytes and bad batches with typed errors', async () => {
    await expect(decodeImage(new Uint8Array([1, 2, 3, 4]), 'images.primary')).rejects.toThrow(/^images.primary: could not decode/);
    await expect(decodeImage(new Uint8Array([1, 2, 3, 4]), 'images.primary')).rejects.toBeInstanceOf(InputError);
    await expect(decodeImage(new Uint8Array(0), 'images.primary')).rejects.toBeInstanceOf(ShapeError);
    await expect(toRawImage(null as unknown as Uint8Array, 'images.primary')).rejects.toBeInstanceOf(InputError);
    const prep = { size: 8, means: [[0, 0, 0]], stds: [[1, 1, 1]] };
    const img = { data: new Uint8Array(12), width: 2, height: 2 };
    await expect(pixelValues([img, img, img], prep, { imagesPerSample: 2 })).rejects.toBeInstanceOf(ShapeError);
    await expect(pixelValues([], prep)).rejects.toBeInstanceOf(InputError);
    await expect(pixelValues([img, { ...img, width: 5 }], prep, { names: ['images.primary', 'images.wrist'] }))
      .rejects.toThrow(/^images.wrist: expected 5x2x3 = 30 bytes \(HWC RGB\), got 12$/);
  });

  it('reads preprocessor_config.json and refuses processors it does not reproduce', async () => {
    const prep = await readPreprocessorConfig(FIXTURE_A);
    expect(prep.size).toBe(56);
    expect(prep.means.length).toBe(2);
    const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURE_A, 'preprocessor_config.json'), 'utf8'));
    const { tvf_normalize_params: _n, ...noTvf } = cfg;
    expect(parsePreprocessorConfig(noTvf, 'x').means).toEqual(cfg.means);  // falls back to means/stds
    expect(() => parsePreprocessorConfig({ ...cfg, image_resize_strategy: 'letterbox' }, 'x')).toThrow(ConfigError);
    for (const [value, got] of [[[cfg], 'a list'], [null, 'null'], [undefined, 'null'], ['{}', 'string']] as const) {
      expect(() => parsePreprocessorConfig(value, 'x')).toThrow(ConfigError);
      expect(() => parsePreprocessorConfig(value, 'x')).toThrow(`x: expected a JSON object, got ${got}`);
    }
    const bilinear = cfg.tvf_resize_params.map((r: object) => ({ ...r, interpolation: 2 }));
    expect(() => parsePreprocessorConfig({ ...cfg, tvf_resize_params: bilinear }, 'x')).toThrow(/bicubic/);
    const mixed = [cfg.tvf_resize_params[0], { ...cfg.tvf_resize_params[1], size: [64, 64] }];
    expect(() => parsePreprocessorConfig({ ...cfg, tvf_resize_params: mixed }, 'x')).toThrow(/same square size/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-pre-'));
    await expect(readPreprocessorConfig(dir)).rejects.toBeInstanceOf(ConfigError);
    fs.rmSync(dir, { recursive: true });
  });
});
