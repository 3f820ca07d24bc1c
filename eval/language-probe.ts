/**
 * Does a trained run use the instruction? On the language-only pair (red_bowl / blue_bowl share every scene), the
 * policy's mean y-action (toward -y: the red cube, +y: the blue cube) over the first chunk, for the same observation
 * under either instruction. A policy that reads the instruction goes -y for red and +y for blue.
 *
 *   node --import tsx eval/language-probe.ts <runDir> <demo dir> [step]
 */
import path from 'node:path';
import { openLibero } from '../lib/data/libero.js';
import { loadPolicy } from '../lib/policy.js';

const RED = 'put the red cube in the bowl', BLUE = 'put the blue cube in the bowl';

export interface ProbeResult {
  /** Scenes probed (one red_bowl demonstration each, at `step`), and those where both instructions head for their cube. */
  scenes: number;
  correct: number;
  /** Mean |y(red) - y(blue)| of the first chunk's mean y-action. */
  meanGap: number;
  step: number;
}

export async function languageProbe(runDir: string, demos: string, step = 4, print = false): Promise<ProbeResult> {
  await using policy = await loadPolicy(runDir);
  const { chunk, actionDim, proprioDim } = policy.metadata;
  const dataset = await openLibero(demos, { chunk, actionDim, proprioDim });
  let scenes = 0, correct = 0, gap = 0;
  try {
    for (let i = 0; i < dataset.numSamples; i++) {
      const s = await dataset.sample(i);
      if (s.instruction !== RED || s.step !== step) continue;
      const meanY = async (instruction: string) => {
        const { actions } = await policy.act({ images: s.images, instruction, state: s.state });
        let sum = 0;
        for (let t = 0; t < chunk; t++) sum += actions.data[t * actionDim + 1];
        return sum / chunk;
      };
      const red = await meanY(RED), blue = await meanY(BLUE);
      scenes++;
      gap += Math.abs(red - blue);
      if (red < 0 && blue > 0) correct++;
      if (print) console.log(`scene ${scenes}: mean y-action '${RED}' ${red.toFixed(3)}, '${BLUE}' ${blue.toFixed(3)}`);
    }
  } finally {
    await dataset.close();
  }
  return { scenes, correct, meanGap: gap / Math.max(scenes, 1), step };
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const [runDir, demos, stepArg] = process.argv.slice(2);
  if (!runDir || !demos) {
    console.error('usage: node --import tsx eval/language-probe.ts <runDir> <demo dir> [step]');
    process.exit(2);
  }
  const r = await languageProbe(runDir, demos, Number(stepArg ?? 4), true);
  console.log(`${r.scenes} scenes at step ${r.step}: both instructions head for their own cube in ${r.correct}; ` +
    `mean |y(red) - y(blue)| = ${r.meanGap.toFixed(3)}`);
}
