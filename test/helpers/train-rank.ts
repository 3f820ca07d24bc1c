/**
 * One data-parallel training process for the tests: `node --import tsx train-rank.ts '<TrainOptions JSON>'` with
 * torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Prints `step N` after each step and, at the
 * end, `result <JSON>`; a failure prints `<ErrorClass> [<code>]: <message>` and exits 1.
 */
import { distributedFromEnv, train, type TrainOptions } from '../../lib/train.js';

// timeoutMs is this helper's, not a train() option (train() rejects unknown keys).
const { timeoutMs, ...options } = JSON.parse(process.argv[2]) as TrainOptions & { timeoutMs?: number };
try {
  const result = await train({
    ...options, distributed: distributedFromEnv(process.env, timeoutMs),
    onProgress: (e) => { if (e.kind === 'step') console.log(`step ${e.step}`); },
  });
  console.log(`result ${JSON.stringify(result)}`);
} catch (e) {
  const err = e as Error & { code?: string };
  console.log(`${err.name} [${err.code}]: ${err.message}`);
  process.exit(1);
}
