// Training's lifecycle as a user sees it: status lines before the first step, a resume that says where it starts
// and what changed, and an interrupted run's checkpoint exported as a run directory that loads and acts.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadStateDict } from '../../lib/checkpoint.js';
import { loadPolicy } from '../../lib/policy.js';
import { exportCheckpoint, train } from '../../lib/train.js';
import { freshOut, LIBERO, tinyRun } from '../helpers/train.js';

describe('training lifecycle', () => {
  it('reports its stages, explains a changed schedule on resume, and exports an interrupted checkpoint', async () => {
    const out = freshOut();
    const base = { data: LIBERO, init: await tinyRun(), out, steps: 4, batchSize: 2, lr: 1e-3, threads: 1, checkpointEvery: 100 };
    const lines: string[] = [];
    const controller = new AbortController();
    const first = await train({
      ...base, signal: controller.signal, onStatus: (l) => lines.push(l),
      onProgress: (e) => { if (e.kind === 'step' && e.step === 2) controller.abort(); },
    });
    expect(first).toMatchObject({ interrupted: true, steps: 2, runDir: undefined });
    expect(lines[0]).toBe(`loading ${path.resolve(base.init)} (frozen VLM, head)`);
    expect(lines.slice(1)).toEqual([
      `opening ${LIBERO}`,
      "warning: libero_tiny_no_noops: 1 of 3 episodes are shorter than the 8-step action chunk and give no samples " +
        "(dataset: { episodeEnd: 'repeat' } pads them instead)",
      'dataset libero_tiny_no_noops: 3 episodes, 7 samples; statistics computed',
      'reading the first batch; training steps 1-4',
    ]);

    // The interrupted run: its latest checkpoint (step 2) as a run directory, holding the checkpoint's head.
    const dir = await exportCheckpoint(out);
    expect(dir).toBe(path.join(out, 'export', 'step-00000002'));
    for (const f of ['config.json', 'model.safetensors', 'action_head.safetensors', 'action_head--checkpoint.pt', 'dataset_statistics.json', 'tokenizer.json'])
      expect(fs.existsSync(path.join(dir, f)), f).toBe(true);
    const saved = await loadStateDict(path.join(out, 'checkpoints', 'step-00000002', 'action_head.safetensors'));
    const exported = await loadStateDict(path.join(dir, 'action_head.safetensors'));
    for (const [name, t] of Object.entries(saved)) expect(Buffer.from(exported[name].data).equals(Buffer.from(t.data)), name).toBe(true);
    await using policy = await loadPolicy(dir, { threads: 1 });
    const image = { data: new Uint8Array(56 * 56 * 3).fill(80), width: 56, height: 56 };
    const act = await policy.act({ images: { primary: image, wrist: image }, instruction: 'pick up the red block', state: new Array(8).fill(0) });
    expect(act.actions.shape).toEqual([8, 7]);
    await expect(exportCheckpoint(out, { step: 1 })).rejects.toThrow(/no checkpoint of step 1; it has 2 \(training keeps only its latest checkpoint unless keepCheckpoints/);

    lines.length = 0;
    const resumed = await train({ ...base, lr: 2e-3, resume: true, onStatus: (l) => lines.push(l) });
    expect(resumed).toMatchObject({ interrupted: false, steps: 4 });
    expect(lines[0]).toBe(`resuming from step 2 of 4 (${path.join(out, 'checkpoints', 'step-00000002')})`);
    expect(lines[1]).toBe('resume: lr 0.001 -> 0.002; the learning-rate schedule continues with the new values from step 2 ' +
      '(an uninterrupted run with them would differ)');
    expect(lines).toContain('reading the first batch; training steps 3-4');
    await expect(train({ ...base, steps: 6, batchSize: 1, resume: true })).rejects.toThrow(/resume: batchSize was 2, now 1/);
  });

  it('keepCheckpoints keeps every checkpoint (hard links) for export --step N', async () => {
    const out = freshOut();
    await train({ data: LIBERO, init: await tinyRun(), out, steps: 3, batchSize: 2, lr: 1e-3, threads: 1, checkpointEvery: 1, keepCheckpoints: true });
    const root = path.join(out, 'checkpoints');
    expect(fs.readdirSync(path.join(root, 'kept')).sort()).toEqual(['step-00000001', 'step-00000002']);
    expect(fs.readdirSync(root).filter((d) => d.startsWith('step-'))).toEqual(['step-00000003']);
    for (const step of [1, 2]) {
      const dir = await exportCheckpoint(out, { step });
      const saved = await loadStateDict(path.join(root, 'kept', `step-0000000${step}`, 'action_head.safetensors'));
      const exported = await loadStateDict(path.join(dir, 'action_head.safetensors'));
      for (const [name, t] of Object.entries(saved)) expect(Buffer.from(exported[name].data).equals(Buffer.from(t.data)), name).toBe(true);
    }
    const one = await loadStateDict(path.join(root, 'kept', 'step-00000001', 'action_head.safetensors'));
    const two = await loadStateDict(path.join(root, 'kept', 'step-00000002', 'action_head.safetensors'));
    expect(Object.keys(one).some((k) => !Buffer.from(one[k].data).equals(Buffer.from(two[k].data)))).toBe(true);
  });
});
