/** The task suite is sound: the scripted experts solve every task (the held-out one too) from fixed seeds. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EVAL_DIR, evalRequirementsMissing, PYTHON, pythonEnv } from '../../eval/python.js';

const missing = evalRequirementsMissing();

describe.skipIf(missing !== null)(`scripted experts${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it('succeed on >= 95% of the episodes of every task, deterministically', () => {
    const run = () => {
      const r = spawnSync(PYTHON, [path.join(EVAL_DIR, 'expert.py'), '--episodes', '4', '--seed-base', '123'],
        { env: pythonEnv(), encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as Record<string, { successes: number; episodes: number; steps: number[] }>;
    };
    const out = run();
    expect(Object.keys(out)).toEqual(['red_bowl', 'blue_bowl', 'red_plate', 'blue_plate', 'lift_blue', 'yellow_bowl']);
    const total = Object.values(out).reduce((n, t) => n + t.episodes, 0);
    const ok = Object.values(out).reduce((n, t) => n + t.successes, 0);
    expect(total).toBe(24);
    expect(ok / total).toBeGreaterThanOrEqual(0.95);
    for (const t of Object.values(out)) expect(t.successes).toBeGreaterThanOrEqual(3);
    expect(run()).toEqual(out);  // same seeds, same episodes
  }, 60_000);
});
