/**
 * Does a trained run use the instruction? On the language-only pair (red_bowl / blue_bowl share every scene), the
 * policy's mean y-action (toward -y: the red cube, +y: the blue cube) over the first chunk, for the same observation
 * under either instruction. A policy that reads the instruction goes -y for red and +y for blue.
 *
 *   node --import tsx eval/language-probe.ts <runDir> <demo dir> [step]
 */
import { openLibero } from '../lib/data/libero.js';
import { loadPolicy } from '../lib/policy.js';

const [runDir, demos, stepArg] = process.argv.slice(2);
if (!runDir || !demos) {
  console.error('usage: node --import tsx eval/language-probe.ts <runDir> <demo dir> [step]');
  process.exit(2);
}
const RED = 'put the red cube in the bowl', BLUE = 'put the blue cube in the bowl';
const step = Number(stepArg ?? 4);
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
    console.log(`scene ${scenes}: mean y-action '${RED}' ${red.toFixed(3)}, '${BLUE}' ${blue.toFixed(3)}`);
  }
} finally {
  await dataset.close();
}
console.log(`${scenes} scenes at step ${step}: both instructions head for their own cube in ${correct}; ` +
  `mean |y(red) - y(blue)| = ${(gap / Math.max(scenes, 1)).toFixed(3)}`);
