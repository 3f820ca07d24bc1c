/**
 * The head's parameter tables (native/head/param_table.cc) against the reference's own checkpoint layout: fixture A's
 * action_head / proprio_projector files were written by the reference code (torch), so the layout the tables declare
 * must name exactly their tensors, with their shapes. The same tables drive loading, parameters() and the export, so a
 * table that drifted from the reference fails here before it fails deep inside a parity test.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadHead, type ActionHead } from '../../lib/head.js';
import { getBinding } from '../../lib/native/binding.js';
import { DEMO_DIMS, headSpec, proprioSpec } from '../../lib/random-run.js';
import { FIXTURE_A } from '../helpers/fixtures.js';

/** name -> shape of a safetensors file (its JSON header), without the DDP "module." prefix the loader strips. */
function safetensorsShapes(file: string): Map<string, number[]> {
  const buf = fs.readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8')) as Record<string, { shape: number[] }>;
  return new Map(Object.entries(header).filter(([k]) => k !== '__metadata__').map(([k, v]) => [k.replace(/^module\./, ''), v.shape]));
}

let head: ActionHead;
beforeAll(async () => { head = await loadHead(FIXTURE_A, { threads: 1 }); });
afterAll(() => head?.dispose());

describe('head parameter tables', () => {
  it('declare exactly the reference checkpoint layout of fixture A (names and shapes)', () => {
    const d = head.dims;
    const layout = getBinding().headCheckpointLayout({
      hidden: d.hidden, numBlocks: d.numBlocks, numHeads: d.numHeads, actionDim: d.actionDim, chunk: d.chunk,
      proprioDim: d.proprioDim, keyDim: d.keyDim, bankCapacity: d.bankCapacity, ablation: 'none',
    });
    const asMap = (ts: Array<{ name: string; shape: number[] }>) => new Map(ts.map((t) => [t.name, t.shape]));
    expect(asMap(layout.actionHead)).toEqual(safetensorsShapes(path.join(FIXTURE_A, 'action_head.safetensors')));
    expect(asMap(layout.proprio)).toEqual(safetensorsShapes(path.join(FIXTURE_A, 'proprio_projector.safetensors')));
    // What the reference forward never reads is declared, and marked so (not loaded, not exported).
    const unused = layout.actionHead.filter((t) => t.role === 'unused').map((t) => t.name);
    expect(unused).toContain('model.mlp_resnet_blocks.0.k_memory.weight');
    expect(unused.every((n) => /\.(k_memory|v_memory|film_gen\.0)\./.test(n))).toBe(true);
    expect(layout.actionHead.filter((t) => t.role === 'passed').map((t) => t.name).sort())
      .toEqual(['memory_bank.keys', 'memory_bank.size', 'memory_bank.values']);
  });

  it('give each ablation only its own tensors', () => {
    const names = (ablation: 'no-mol' | 'no-msm') => headSpec({ ...DEMO_DIMS, ablation }).map(([n]) => n);
    const noMol = names('no-mol'), noMsm = names('no-msm');
    expect(noMol).toContain('model.mlp_resnet_blocks.0.k_last.weight');
    expect(noMol.some((n) => /k_adapter|k_self|gating_factor/.test(n))).toBe(false);
    expect(noMsm.some((n) => n.startsWith('memory_'))).toBe(false);
    expect(noMsm).toContain('model.mlp_resnet_blocks.0.k_adapter.weight');
  });

  it('keep the random-run order that fixes the demo model\'s values', () => {
    // xorshift draws follow this order: reordering the table would silently change every random run directory.
    const block0 = headSpec(DEMO_DIMS).map(([n]) => n).filter((n) => n.startsWith('model.mlp_resnet_blocks.0.'))
      .filter((n) => n.endsWith('.weight') || n.endsWith('gating_factor')).map((n) => n.replace('model.mlp_resnet_blocks.0.', ''));
    expect(block0).toEqual(['q_proj.weight', 'k_self.weight', 'v_self.weight', 'v_adapter.weight', 'k_task.weight', 'v_task.weight',
      'k_memory.weight', 'v_memory.weight', 'o_proj.weight', 'k_adapter.weight', 'film_gen.0.weight', 'ffn.0.weight',
      'ffn.1.weight', 'gating_factor']);
    expect(proprioSpec(DEMO_DIMS).map(([n, s, i]) => `${n}:${s.join('x')}:${i}`))
      .toEqual(['fc1.weight:64x8:w', 'fc1.bias:64:zero', 'fc2.weight:64x64:w', 'fc2.bias:64:zero']);
  });

  it('reject a bad request naming the option', () => {
    expect(() => getBinding().headCheckpointLayout({ hidden: 64 } as never)).toThrow(expect.objectContaining({ code: 'E_INPUT',
      message: 'numBlocks: expected an integer' }));
  });
});
