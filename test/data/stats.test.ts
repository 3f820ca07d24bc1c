import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openLeRobot } from '../../lib/data/lerobot.js';
import { openLibero } from '../../lib/data/libero.js';
import { columnStatistics, computeStatistics, writeDatasetStatistics } from '../../lib/data/stats.js';
import { DATA, expected, tempDir } from '../helpers/data.js';
import { FIXTURE_A } from '../helpers/fixtures.js';

describe('dataset statistics', () => {
  it('equal numpy (float32 mean/std, np.quantile linear) on matrices of 1 to 300 rows', () => {
    for (const c of expected.numpy_cases) {
      const got = columnStatistics(Float32Array.from(c.data), c.width);
      for (const k of ['mean', 'std', 'q01', 'q99'] as const) expect(got[k], `${k}, ${c.rows} rows`).toEqual(c[k]);
    }
  });

  it.each([
    ['libero_tiny_no_noops', openLibero],
    ['lerobot_v21_images', openLeRobot],
    ['lerobot_v30_images', openLeRobot],
  ] as const)('of %s equal the reference computation over every transition', async (name, open) => {
    const ds = await open(path.join(DATA, name));
    expect({ [ds.name]: computeStatistics(ds) }).toEqual(expected[name].dataset_statistics);
    await ds.close();
  });

  it('are written in the reference dataset_statistics.json layout', async () => {
    const ds = await openLibero(path.join(DATA, 'libero_tiny_no_noops'));
    const file = path.join(tempDir(), 'dataset_statistics.json');
    writeDatasetStatistics(file, 'libero_spatial_no_noops', computeStatistics(ds));
    const written = JSON.parse(fs.readFileSync(file, 'utf8'));
    const reference = JSON.parse(fs.readFileSync(path.join(FIXTURE_A, 'dataset_statistics.json'), 'utf8'));
    const layout = (stats: Record<string, Record<string, unknown>>) => Object.fromEntries(Object.entries(stats)
      .map(([key, v]) => [key, Object.entries(v).map(([k, x]) => [k, typeof x === 'object' ? Object.keys(x!) : typeof x])]));
    const { mask: _proprioMask, ...proprio } = reference.libero_spatial_no_noops.proprio;  // that fixture adds one
    expect(layout(written)).toEqual(layout({ libero_spatial_no_noops: { ...reference.libero_spatial_no_noops, proprio } }));
    expect(written.libero_spatial_no_noops.action.mask).toEqual([true, true, true, true, true, true, false]);
    expect(written.libero_spatial_no_noops.num_transitions).toBe(26);
    expect(written.libero_spatial_no_noops.num_trajectories).toBe(3);
    await ds.close();
  });
});
