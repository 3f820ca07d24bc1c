/** `m2vla export <out> [--step N] [--to DIR]`: a training checkpoint as a loadable run directory. */
import { exportCheckpoint } from '../train.js';
import { numberFlag, parseFlags } from './args.js';

const USAGE = `usage: m2vla export <training out dir> [--step N] [--to <dir>] [--threads N]
Writes the checkpoint of step N (default: the latest; training keeps only the latest unless --keep-checkpoints) of a
training run, finished or interrupted, as a run directory that loadPolicy, m2vla demo --run and m2vla serve --run load. Default --to:
<out>/export/step-NNNNNNNN. Prints the directory.`;

export const exportCommand = {
  summary: 'turn a training checkpoint into a run directory',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values, positionals } = parseFlags(argv, {
      step: { type: 'string' }, to: { type: 'string' }, threads: { type: 'string' },
    }, { min: 1, max: 1 });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const dir = await exportCheckpoint(positionals[0], {
      step: numberFlag(values.step, 'step', { integer: true, min: 0 }), to: values.to as string | undefined,
      threads: numberFlag(values.threads, 'threads', { integer: true, min: 1 }),
    });
    console.log(dir);
    return 0;
  },
};
