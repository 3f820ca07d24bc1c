/** `m2vla add-skills <run> --data <dataset> --out <dir>`: skills added to the MSM bank without training (lib/skills.ts). */
import { loadPolicy } from '../policy.js';
import { numberFlag, parseFlags, requiredFlag } from './args.js';

const USAGE = `usage: m2vla add-skills <run> --data <path> --out <dir> [--stride N] [--batch-size N] [--threads N] [--unnorm-key K]

Appends the demonstrations of --data (a LIBERO .hdf5 file or a LeRobot dataset root) to the skill bank of the run
directory <run>, without any training step: one entry per step whose whole action chunk lies in its episode, the
key computed as act() computes it, the value the chunk normalized with the run's statistics. The bank keeps its
capacity: beyond it the oldest entries go first (FIFO, as in training). The grown run is written to --out (a new
directory, or <run> itself to update it in place).

  --stride N       every N-th step of each episode (default 1)
  --batch-size N   observations per forward pass while computing keys (default 8)
  --threads N      torch threads
  --unnorm-key K   the dataset_statistics.json entry, when the run holds several`;

export const addSkillsCommand = {
  summary: "append demonstrations to a run's skill bank without training",
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values: v, positionals } = parseFlags(argv, {
      data: { type: 'string' }, out: { type: 'string' }, stride: { type: 'string' }, 'batch-size': { type: 'string' },
      threads: { type: 'string' }, 'unnorm-key': { type: 'string' },
    }, { min: 1, max: 1 });
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    const values = { data: requiredFlag(v.data, 'data'), out: requiredFlag(v.out, 'out'), stride: v.stride as string | undefined,
      'batch-size': v['batch-size'] as string | undefined, 'unnorm-key': v['unnorm-key'] as string | undefined };
    const integer = (value: string | boolean | string[] | undefined, name: string) => numberFlag(value, name, { integer: true, min: 1 });
    const t0 = performance.now();
    await using policy = await loadPolicy(positionals[0], { threads: integer(v.threads, 'threads'), unnormKey: values['unnorm-key'] });
    const before = policy.metadata.bankSize;
    const r = await policy.addSkills(values.data, {
      ...(values.stride && { stride: integer(values.stride, 'stride') }),
      ...(values['batch-size'] && { batchSize: integer(values['batch-size'], 'batch-size') }),
    });
    const out = await policy.saveSkills(values.out);
    console.log(`m2vla add-skills: ${r.added} entries from ${values.data} (${r.offered} offered${r.offered > r.added ? ', the oldest beyond the capacity skipped' : ''}); ` +
      `bank ${before} -> ${r.bankSize} of ${r.capacity} rows (${r.evicted} evicted), new rows ${r.firstRow}..${r.firstRow + r.added - 1}`);
    console.log(`  written to ${out} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    return 0;
  },
};
