import { DEMO_DIMS, type RandomRunDims } from '../lib/random-run.js';

/**
 * The frozen backbone: DEMO_DIMS' tiny towers and 4-layer LLM at 84 px (6 x 6 patches per camera), so the head
 * trains in minutes on 2 cores while 4 cm cubes still cover a few pixels; an MSM bank big enough for the whole run.
 */
export const EVAL_DIMS: RandomRunDims = {
  ...DEMO_DIMS, imageSize: 84, vlmInitStd: 0.1,
  dino: { dim: 64, depth: 3, heads: 4, mlp: 256 }, siglip: { dim: 48, depth: 3, heads: 4, mlp: 192 },
  head: { ...DEMO_DIMS.head, bankSize: 4096, bankFill: 0 },
};
