/**
 * Issue #18 findings 4 and 10: numbers from an untrusted run directory never crash native code or turn into NaN
 * actions. Config numbers are checked with file and field, weights for NaN/Inf and dtype at load, statistics for
 * overflow; and whatever still comes out non-finite is refused by act() (and held over by PolicyRunner).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  CheckpointError, ConfigError, demoRunDir, loadPolicy, NonFiniteError, PolicyRunner, type Observation, type Policy,
} from '../../lib/index.js';
import { FIXTURE_A } from '../helpers/fixtures.js';
import { editJson, observation, patchFloat32, rewriteHeader, runCopy } from './helpers.js';

const loadError = (dir: string) => loadPolicy(dir).then((p) => { p.dispose(); return undefined; }, (e) => e);

describe('configuration numbers are validated with file and field before native code', () => {
  it.each([
    ['manifest.json', 'vision.featurizer.num_heads', (j: any) => { j.vision.featurizer.num_heads = 0; }],  // SIGFPE in vit.cc before
    ['manifest.json', 'vision.fused_featurizer.embed_dim', (j: any) => { j.vision.fused_featurizer.embed_dim = 1e9; }],
    ['manifest.json', 'vision.num_images', (j: any) => { j.vision.num_images = 1e6; }],  // 3.6 GB before
    ['manifest.json', 'sequence.stop_token_id', (j: any) => { j.sequence.stop_token_id = 1e9; }],
    ['config.json', 'text_config.rope_theta', (j: any) => { j.text_config.rope_theta = 0; }],  // NaN actions before
    ['config.json', 'text_config.rope_theta', (j: any) => { j.text_config.rope_theta = -5; }],
    ['config.json', 'text_config.rms_norm_eps', (j: any) => { j.text_config.rms_norm_eps = -1; }],
    ['config.json', 'text_config.num_key_value_heads', (j: any) => { j.text_config.num_key_value_heads = 3; }],
    ['config.json', 'text_config.num_attention_heads', (j: any) => { j.text_config.num_attention_heads = 0; }],
    ['config.json', 'image_sizes', (j: any) => { j.image_sizes = [50, 50]; }],
  ])('%s %s', async (file, field, edit) => {
    const dir = runCopy();
    editJson(dir, file, edit);
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain(path.join(dir, file));
    expect(err.message).toContain(field);
  });

  it('statistics of ±1e308 (whose range overflows to Inf) are refused, naming the entry', async () => {
    const dir = runCopy();
    editJson(dir, 'dataset_statistics.json', (j) => { j.random_demo.action.q99[2] = 1e308; j.random_demo.action.q01[2] = -1e308; });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/random_demo\.action\.q01\[2\]: expected a finite number within/);
  });

  it.each(['config.json', 'dataset_statistics.json', 'preprocessor_config.json', 'manifest.json', 'tokenizer.json'])(
    '%s holding null is a ConfigError naming the file', async (file) => {
      const dir = runCopy();
      editJson(dir, file, () => null);
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(ConfigError);
      expect(err.message).toContain(`${path.join(dir, file)}: expected a JSON object, got null`);
    });
});

describe('weights are checked once per tensor at load', () => {
  it('a NaN or Inf weight is a CheckpointError naming the tensor', async () => {
    for (const bad of [NaN, Infinity]) {
      const dir = runCopy();
      patchFloat32(path.join(dir, 'proprio_projector.safetensors'), 'fc2.weight', (v) => { v[7] = bad; });
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err.message).toMatch(/proprio_projector\.safetensors: tensor 'fc2\.weight' holds 1 NaN\/Inf value\(s\) of 4096/);
    }
  });

  it('a NaN weight in a torch.save .pt checkpoint is a CheckpointError too', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-security-pt-'));
    fs.cpSync(FIXTURE_A, dir, { recursive: true });
    fs.rmSync(path.join(dir, 'proprio_projector.safetensors'));  // so the run directory's .pt is the one read
    const file = path.join(dir, 'proprio_projector--checkpoint.pt');
    const zip = fs.readFileSync(file);
    // The zip stores its entries uncompressed; the storage 'data/2' is the 64 x 64 float32 fc2.weight.
    const name = Buffer.from('proprio_projector--checkpoint/data/2');
    let at = -1;
    for (let i = zip.indexOf(name); i >= 0; i = zip.indexOf(name, i + 1)) if (zip.readUInt32LE(i - 30) === 0x04034b50) at = i - 30;
    expect(at).toBeGreaterThanOrEqual(0);
    const data = at + 30 + zip.readUInt16LE(at + 26) + zip.readUInt16LE(at + 28);
    zip.writeFloatLE(NaN, data + 7 * 4);
    fs.writeFileSync(file, zip);
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/proprio_projector--checkpoint\.pt: tensor '[\w.]+' holds 1 NaN\/Inf value\(s\) of 4096/);
  });

  it('a float tensor relabelled I32 (same byte length) is a CheckpointError, not garbage weights', async () => {
    const dir = runCopy();
    rewriteHeader(path.join(dir, 'proprio_projector.safetensors'), (h) => { h['fc1.weight'].dtype = 'I32'; });
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(CheckpointError);
    expect(err.message).toMatch(/tensor 'fc1\.weight' has dtype Int, expected a floating-point weight/);
  });
});

/** Finite weights (±3e38) whose products overflow float32 in the head's output layer: Inf - Inf = NaN actions. */
function overflowingRun(): string {
  const dir = runCopy();
  patchFloat32(path.join(dir, 'action_head.safetensors'), 'model.fc2.weight', (v) => v.forEach((_, i) => { v[i] = i % 2 ? 3e38 : -3e38; }));
  return dir;
}

describe('non-finite actions never leave act()', () => {
  it('act() rejects with NonFiniteError naming the observations; a good policy is unaffected', async () => {
    await using bad = await loadPolicy(overflowingRun());
    const err = await bad.act([observation(), observation('open the drawer')]).catch((e) => e);
    expect(err).toBeInstanceOf(NonFiniteError);
    expect(err.code).toBe('E_NONFINITE');
    expect(err.observations).toEqual([0, 1]);
    await using good = await loadPolicy(await demoRunDir());
    const { actions } = await good.act(observation());
    expect(actions.data.every(Number.isFinite)).toBe(true);
  });

  it('PolicyRunner holds the last action with stale: true and reports the non-finite chunk', async () => {
    await using good = await loadPolicy(await demoRunDir());
    await using bad = await loadPolicy(overflowingRun());
    // The robot's policy goes bad after its first chunk (say, weights swapped under it): same metadata, NaN actions.
    let calls = 0;
    const flaky: Pick<Policy, 'act' | 'metadata'> = {
      metadata: good.metadata,
      act: (o) => (calls++ === 0 ? good : bad).act(o as Observation),
    };
    const events: string[] = [];
    const runner = new PolicyRunner(flaky, { hz: 1000, replanSteps: 8, overlap: false, onEvent: (e) => events.push(e.type) });
    const steps = [];
    for (let t = 0; t < 10; t++) steps.push(await runner.tick(observation()));
    expect(steps.slice(0, 8).every((s) => !s.stale)).toBe(true);
    expect(steps[8].stale).toBe(true);
    expect(steps[9].stale).toBe(true);
    expect(Array.from(steps[9].action)).toEqual(Array.from(steps[7].action));
    expect(steps.every((s) => s.action.every(Number.isFinite))).toBe(true);
    expect(events.filter((e) => e === 'non-finite').length).toBe(2);
    expect(runner.stats().nonFiniteChunks).toBe(2);
  });

  it('the first chunk has nothing to hold: tick() rejects with the NonFiniteError', async () => {
    await using bad = await loadPolicy(overflowingRun());
    const runner = new PolicyRunner(bad, { hz: 1000 });
    await expect(runner.tick(observation())).rejects.toBeInstanceOf(NonFiniteError);
  });
});
