/** eval/report.ts on a synthetic report: intervals, one MSM scatter per variant, the summary rows, the plots' fixes. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { wilson, writeReport, type EvalResult, type Report, type VariantReport } from '../../eval/report.js';
import { EVAL_DIMS } from '../../eval/dims.js';

function result(successes: number[], heldOut = 1): EvalResult {
  const names = ['red_bowl', 'blue_bowl', 'red_plate', 'blue_plate', 'lift_blue', 'yellow_bowl'];
  const tasks: EvalResult['tasks'] = {};
  names.forEach((name, i) => {
    const k = i === 5 ? heldOut : successes[i];
    tasks[name] = {
      instruction: name, held_out: i === 5, success_rate: k / 10, successes: k, mean_steps: 50,
      episodes: Array.from({ length: 10 }, (_, e) => ({ seed: e, success: e < k, steps: 50,
        ...(e === 0 && { video: `/tmp/v/${name}_${e}_${k > 0 ? 'success' : 'failure'}.mp4` }) })),
    };
  });
  return { tasks, success_rate_seen: successes.reduce((a, b) => a + b, 0) / 50, episodes_per_task: 10, replan: 4,
    latency_ms: { mean: 1, p50: 1, p95: 2, requests: 10 }, seconds: 1 };
}

function variant(name: string, ablation: string | null, r: EvalResult, points: Array<[number, number]>): VariantReport {
  return {
    name, label: name, ablation, result: r, trainSeconds: 60, finalLoss: 0.1,
    curve: [{ steps: 100, successSeen: 0.2, episodesPerTask: 4 }, { steps: 200, successSeen: r.success_rate_seen!, episodesPerTask: 10 }],
    analysis: { ablation: ablation ?? 'none', gates: [{ layer: 1, visionScale: -0.2, queryGate: 0.5 }],
      bank: ablation === 'no-msm' ? null : { entries: 10, pairs: 5, pearson: 0.3, spearman: 0.2, points }, notes: [] },
  };
}

describe('eval report', () => {
  it('wilson() gives the 95 % score interval', () => {
    const [lo, hi] = wilson(5, 10);
    expect(lo).toBeCloseTo(0.2366, 3);
    expect(hi).toBeCloseTo(0.7634, 3);
    expect(wilson(0, 10)[0]).toBe(0);
    expect(wilson(10, 10)[1]).toBe(1);
  });

  it('writes intervals and counts, one scatter per variant from its own bank, a zero line, the summary rows', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-report-'));
    const full = variant('full', null, result([8, 7, 9, 10, 6]), [[1, 2], [3, 4]]);
    const noMol = variant('no-mol', 'no-mol', result([5, 5, 5, 5, 5], 0), [[9, 9]]);
    const noMsm = variant('no-msm', 'no-msm', result([2, 2, 2, 2, 2], 0), []);
    const report: Report = {
      date: '2026-12-01', profile: 'quick', profileSettings: { maxSteps: 100 }, dims: EVAL_DIMS, command: 'npm run eval -- --quick',
      experts: { red_bowl: { successes: 20, episodes: 20 } }, baseline: result([0, 0, 1, 0, 0], 0), variants: [full, noMol, noMsm],
      demoSeconds: 1, totalSeconds: 60, runDir: null,
      backbone: { kind: 'pretrained', dir: '/x', seconds: 0, pretrain: { recipe: 'vlm-abc', steps: 10, train_seconds: 60, final_loss: 0.2 },
        ask: { correct: 30, total: 40, byKind: { colour: { correct: 10, total: 10 } }, examples: [] } },
      rephrased: result([7, 7, 7, 7, 7]), probe: { scenes: 12, correct: 11, meanGap: 0.4, step: 4 },
      skills: { with: result([0, 0, 0, 0, 0], 6), log: 'm2vla add-skills: 500 entries' },
      dtypes: { auto: 'float32 (auto: no AVX-512)', rows: [{ dtype: 'bfloat16', result: result([7, 7, 8, 8, 9]) }],
        notRun: [{ dtype: 'int8', reason: 'this CPU has neither AVX512-VNNI nor AMX-INT8 (m2vla doctor)' }] },
    };
    const md = writeReport(dir, report);
    expect(md).toMatch(/full model, bfloat16 backbone \+ head \| 39\/50 = 78%/);
    expect(md).toContain('| seen tasks, full model, int8 backbone | not run | this CPU has neither AVX512-VNNI nor AMX-INT8');
    expect(md).toContain('40/50 = 80% [67%–89%]');             // full, seen tasks
    expect(md).toContain('35/50 = 70%');                        // rephrased
    expect(md).toMatch(/novel object \+ novel instruction.*1\/10 = 10%/);
    expect(md).toMatch(/its demonstrations added to the bank.*6\/10 = 60%/);
    expect(md).toMatch(/language probe.*11\/12/);
    expect(md).toMatch(/ask\(\).*30\/40/);
    expect(md).toContain('What these numbers do and do not show');
    expect(md).toMatch(/full, yellow_bowl.*success/);
    const scatterFull = fs.readFileSync(path.join(dir, 'msm_key_value_full.svg'), 'utf8');
    const scatterNoMol = fs.readFileSync(path.join(dir, 'msm_key_value_no-mol.svg'), 'utf8');
    expect(scatterFull.match(/<circle/g)).toHaveLength(2);
    expect(scatterNoMol.match(/<circle/g)).toHaveLength(1);
    expect(fs.existsSync(path.join(dir, 'msm_key_value_no-msm.svg'))).toBe(false);
    // The gate plot has negative bars: a zero line; the curve has one error bar per point.
    expect(fs.readFileSync(path.join(dir, 'mol_gates.svg'), 'utf8')).toMatch(/stroke="black" stroke-width="1.2"/);
    const curve = fs.readFileSync(path.join(dir, 'success_vs_steps.svg'), 'utf8');
    expect(curve.match(/stroke-width="1.2"\/>/g)!.length).toBeGreaterThanOrEqual(6);
  });
});
