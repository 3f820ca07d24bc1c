/**
 * The closed-loop path end to end, so it cannot rot: the embedded demo model served by `m2vla serve` (a child
 * process), eval/client.py running one short episode of the MuJoCo suite against it over openpi's protocol.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { python, withServer } from '../../eval/processes.js';
import { evalRequirementsMissing } from '../../eval/python.js';
import type { EvalResult } from '../../eval/report.js';

const missing = evalRequirementsMissing();

describe.skipIf(missing !== null)(`one closed-loop episode${missing ? ` (skipped: ${missing})` : ''}`, () => {
  it('demo model -> m2vla serve -> python client: actions executed, latency and a video recorded', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-eval-'));
    try {
      const out = path.join(dir, 'episode.json');
      await withServer(undefined, path.join(dir, 'serve.log'), (url) => python('client.py', ['--url', url,
        '--tasks', 'red_bowl', '--episodes', '1', '--max-steps', '10', '--replan', '4', '--image-size', '64',
        '--out', out, '--videos', path.join(dir, 'videos')], path.join(dir, 'client.log')));
      const r = JSON.parse(fs.readFileSync(out, 'utf8')) as EvalResult & { metadata: Record<string, unknown> };
      expect(r.metadata).toMatchObject({ chunk: 8, actionDim: 7, proprioDim: 8, numImages: 2 });
      const task = r.tasks.red_bowl;
      expect(task.instruction).toBe('put the red cube in the bowl');
      expect(task.episodes).toHaveLength(1);
      const [episode] = task.episodes;
      expect(episode.seed).toBe(1_000_000);
      // a random policy does not solve the task: the episode runs to max_steps, one request per 4 actions
      expect(episode.success).toBe(false);
      expect(episode.steps).toBe(10);
      expect(r.latency_ms.requests).toBe(3);
      expect(r.latency_ms.p50).toBeGreaterThan(0);
      expect(fs.statSync(episode.video!).size).toBeGreaterThan(1000);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);
});
