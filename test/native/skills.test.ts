/** Skills added without training (lib/skills.ts, native/head/msm_skills.cc) on the tiny random run and the fixture datasets. */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConfigError, DEMO_DIMS, InputError, loadPolicy, openLeRobot, openLibero, ShapeError, type Policy, type SkillEpisode,
} from '../../lib/index.js';
import { pattern } from '../helpers/data.js';
import { FIXTURE_A } from '../helpers/fixtures.js';
import { freshOut, LEROBOT, LIBERO, tinyRun } from '../helpers/train.js';

const THREADS = { threads: 1 };
/** libero_tiny_no_noops with chunk 8: episodes of 5, 12 and 9 steps give 0 + 5 + 2 whole chunks. */
const LIBERO_ENTRIES = 7;

/** One in-memory episode of `steps` steps with the fixture's frame pattern and smooth states / actions. */
function episode(steps: number, instruction = 'stack the yellow cylinder', seed = 3): SkillEpisode {
  return {
    instruction,
    images: Array.from({ length: steps }, (_, t) => ({ primary: pattern(seed, t, 0), wrist: pattern(seed, t, 1) })),
    states: Float32Array.from({ length: steps * 8 }, (_, i) => 0.1 * Math.sin(i + seed)),
    actions: Float32Array.from({ length: steps * 7 }, (_, i) => 0.5 * Math.cos(0.3 * i + seed)),
  };
}

const bf16 = (x: number) => {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = (u[0] + 0x7fff + ((u[0] >> 16) & 1)) & 0xffff0000;  // round to nearest even, as at::Tensor.to(bfloat16)
  return f[0];
};

let policy: Policy;
beforeAll(async () => {
  policy = await loadPolicy(await tinyRun(), THREADS);
});
afterAll(() => policy?.dispose());

describe('policy.addSkills()', () => {
  it('appends one entry per whole chunk of a LIBERO dataset, keyed as act() keys, valued with the normalized chunk', async () => {
    const before = await policy.memoryBank();
    const r = await policy.addSkills(LIBERO);
    expect(r).toMatchObject({ added: LIBERO_ENTRIES, offered: LIBERO_ENTRIES, evicted: 0, capacity: 64 });
    expect(r.bankSize).toBe(before.size + LIBERO_ENTRIES);
    expect(r.firstRow).toBe(before.size);
    expect(policy.metadata.bankSize).toBe(r.bankSize);
    const after = await policy.memoryBank();
    expect(after.size).toBe(r.bankSize);
    // The rows that were there are untouched.
    expect(after.keys.data.subarray(0, before.keys.data.length)).toEqual(before.keys.data);

    // The first entry is the second episode's step 0: its key is act()'s query key, its value the normalized chunk.
    const data = await openLibero(LIBERO, { chunk: 8, actionDim: 7, proprioDim: 8 });
    const s = await data.sample(0);
    await data.close();
    const f = await policy.features({ images: s.images, instruction: s.instruction, state: s.state });
    const keyDim = after.keys.shape[1];
    const row = after.keys.data.subarray(r.firstRow * keyDim, (r.firstRow + 1) * keyDim);
    expect(Array.from(row)).toEqual(Array.from(f.queryKeys.data, bf16));
    const value = after.values.data.subarray(r.firstRow * 56, (r.firstRow + 1) * 56);
    expect(Math.max(...Array.from(value, Math.abs))).toBeLessThanOrEqual(1);
    expect(new Set(Array.from(value)).size).toBeGreaterThan(10);
  });

  it('retrieval finds an injected skill: the same observation gets it as top-1 at distance ~0', async () => {
    const ep = episode(10);
    const r = await policy.addSkills([ep], { stride: 2 });
    expect(r.added).toBe(2);  // steps 0 and 2 (step 4 would end past the episode)
    const obs = { images: ep.images[2], instruction: ep.instruction, state: Float32Array.from(ep.states as Float32Array).subarray(16, 24) };
    const out = await policy.act(obs);
    expect(out.retrieval.indices[0]).toBe(r.firstRow + 1);
    // The bank holds the key in bfloat16: the distance is that rounding only (-10000 * mean |q - bf16(q)|).
    const { queryKeys } = await policy.features(obs);
    const rounding = Array.from(queryKeys.data).reduce((a, q) => a + Math.abs(q - bf16(q)), 0) / queryKeys.data.length;
    expect(out.retrieval.similarities[0]).toBeCloseTo(-10000 * rounding, 1);
    expect(Math.abs(out.retrieval.similarities[0])).toBeLessThan(0.5 * Math.abs(out.retrieval.similarities[1]));
  });

  it('drops the oldest rows at the capacity (FIFO, as training), and computes only what stays', async () => {
    const dims = { ...DEMO_DIMS, head: { ...DEMO_DIMS.head, bankSize: 10, bankFill: 8 } };
    await using small = await loadPolicy(await tinyRun(dims, 'bank10'), THREADS);
    const before = await small.memoryBank();
    const r = await small.addSkills(LIBERO);
    expect(r).toMatchObject({ added: 7, evicted: 5, bankSize: 10, firstRow: 3 });
    const after = await small.memoryBank();
    const kd = before.keys.shape[1];
    // Rows 5..7 of before are rows 0..2 now.
    expect(after.keys.data.subarray(0, 3 * kd)).toEqual(before.keys.data.subarray(5 * kd, 8 * kd));
    const many = await small.addSkills([episode(20)]);
    expect(many).toMatchObject({ offered: 13, added: 10, evicted: 10, bankSize: 10, firstRow: 0 });
  });

  it('bad input is a typed error and leaves the bank as it was', async () => {
    const before = await policy.memoryBank();
    const nan = episode(9);
    (nan.actions as Float32Array)[17] = Number.NaN;
    await expect(policy.addSkills([nan])).rejects.toThrow(InputError);
    const short = episode(9);
    short.actions = (short.actions as Float32Array).subarray(0, 60);
    await expect(policy.addSkills([short])).rejects.toThrow(/episodes\[0\]\.actions: expected 9 steps × 7/);
    await expect(policy.addSkills([short])).rejects.toThrow(ShapeError);
    // A dataset for another camera layout (no wrist camera for this two-camera model).
    const oneCamera = await openLeRobot(LEROBOT, { chunk: 8, actionDim: 7, proprioDim: 8, wrist: null });
    await expect(policy.addSkills(oneCamera)).rejects.toThrow(/no wrist camera/);
    await oneCamera.close();
    // Wrong action dims: the dataset is opened for the model's dims and refused.
    await using six = await loadPolicy(await tinyRun({ ...DEMO_DIMS, head: { ...DEMO_DIMS.head, actionDim: 6 } }, 'a6'), THREADS);
    const sixBefore = await six.memoryBank();
    await expect(six.addSkills(LIBERO)).rejects.toThrow(ShapeError);
    expect((await six.memoryBank()).size).toBe(sixBefore.size);
    await expect(policy.addSkills(LIBERO, { strde: 2 } as never)).rejects.toThrow(/unknown option 'strde'/);
    await expect(policy.addSkills([])).rejects.toThrow(InputError);
    const after = await policy.memoryBank();
    expect(after.size).toBe(before.size);
    expect(after.keys.data).toEqual(before.keys.data);
    expect(after.values.data).toEqual(before.values.data);
  });

  it("a 'no-msm' policy has no bank to add to", async () => {
    await using plain = await loadPolicy(await tinyRun({ ...DEMO_DIMS, ablation: 'no-msm' }, 'no-msm'), THREADS);
    await expect(plain.addSkills(LIBERO)).rejects.toThrow(ConfigError);
  });
});

describe('policy.saveSkills()', () => {
  // The random run holds action_head.safetensors; fixture A (the reference's files) also action_head--checkpoint.pt.
  it.each([['the random run', () => tinyRun()], ['fixture A', async () => FIXTURE_A]])(
    '%s: writes a run directory that loadPolicy reads back with the grown bank, every checkpoint format', async (_, run) => {
      const source = await run();
      await using p = await loadPolicy(source, THREADS);
      const sourceSize = p.metadata.bankSize;
      // Fixture A has no tokenizer: its prompts are token ids (8 of its 300).
      const ep = { ...episode(12, 'put the yellow cylinder in the bowl', 5), inputIds: [1, 17, 42, 99, 7, 250, 3, 12] };
      const r = await p.addSkills([ep]);
      const out = freshOut();
      expect(await p.saveSkills(out)).toBe(path.resolve(out));
      expect(fs.readdirSync(path.dirname(out)).filter((f) => f.includes('.tmp-'))).toEqual([]);
      const log = JSON.parse(fs.readFileSync(path.join(out, 'skills.json'), 'utf8'));
      expect(log.added).toHaveLength(1);
      expect(log.added[0]).toMatchObject({ entries: r.added });
      const grown = await p.memoryBank();
      const heads = fs.readdirSync(out).filter((f) => f.startsWith('action_head'));
      expect(heads.sort()).toEqual(fs.readdirSync(source).filter((f) => f.startsWith('action_head')).sort());
      for (const file of heads) {
        const dir = freshOut();
        fs.mkdirSync(dir);
        for (const f of fs.readdirSync(out)) {
          if (!f.startsWith('action_head') || f === file) fs.copyFileSync(path.join(out, f), path.join(dir, f));
        }
        await using back = await loadPolicy(dir, THREADS);
        expect(back.metadata.bankSize).toBe(r.bankSize);
        const bank = await back.memoryBank();
        expect(bank.keys.data).toEqual(grown.keys.data);
        expect(bank.values.data).toEqual(grown.values.data);
        const obs = { images: ep.images[3], inputIds: ep.inputIds, state: (ep.states as Float32Array).slice(24, 32) };
        expect((await back.act(obs)).retrieval.indices[0]).toBe(r.firstRow + 3);
      }
      // The source run is unchanged; an existing directory other than the run itself is refused.
      await using again = await loadPolicy(source, THREADS);
      expect(again.metadata.bankSize).toBe(sourceSize);
      await expect(p.saveSkills(out)).rejects.toThrow(/exists/);
    });

  it('updates the loaded run in place when out is its own directory', async () => {
    const run = freshOut();
    fs.cpSync(await tinyRun(), run, { recursive: true });
    await using p = await loadPolicy(run, THREADS);
    const r = await p.addSkills(LIBERO);
    await p.saveSkills(run);
    await using back = await loadPolicy(run, THREADS);
    expect(back.metadata.bankSize).toBe(r.bankSize);
    expect(fs.readdirSync(run).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});

describe('m2vla add-skills', () => {
  it('grows a run from a dataset into --out; a bad flag prints usage and exits 2', async () => {
    const { addSkillsCommand } = await import('../../lib/cli/add-skills.js');
    const out = freshOut();
    const lines: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => { lines.push(a.join(' ')); };
    try {
      expect(await addSkillsCommand.run([await tinyRun(), '--data', LIBERO, '--out', out, '--threads', '1'])).toBe(0);
    } finally {
      console.log = log;
    }
    expect(lines[0]).toMatch(/7 entries .* bank 50 -> 57 of 64 rows \(0 evicted\), new rows 50\.\.56/);
    await using back = await loadPolicy(out, THREADS);
    expect(back.metadata.bankSize).toBe(57);
    const err = console.error;
    console.error = () => {};
    try {
      // Usage errors: lib/cli/main.ts prints them with the usage and exits 2.
      await expect(addSkillsCommand.run([await tinyRun(), '--data', LIBERO, '--out', freshOut(), '--strid', '2'])).rejects.toThrow(/unknown flag --strid \(did you mean --stride\?\)/);
      await expect(addSkillsCommand.run([await tinyRun(), '--out', freshOut()])).rejects.toThrow(/--data is required/);
    } finally {
      console.error = err;
    }
  });
});
