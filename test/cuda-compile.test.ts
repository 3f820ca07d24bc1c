// The CUDA kernels must compile for every target GPU even where there is none (CI): nvcc alone, no libtorch.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkCuda, CUDA_ARCHS, findNvcc } from '../scripts/check-cuda.mjs';

const nvcc = findNvcc();
if (!nvcc) console.warn('test/cuda-compile: nvcc not found in PATH or /usr/local/cuda/bin; the compile checks are skipped');

describe('CUDA compile check', () => {
  it('reports a skip, not a failure, when nvcc is absent', async () => {
    expect(findNvcc({ env: { PATH: '' }, extraDirs: [] })).toBeNull();
    const r = await checkCuda({ nvcc: null });
    expect(r).toEqual({ skipped: expect.stringMatching(/nvcc not found/) });
  });

  it.skipIf(!nvcc)(`compiles every native/**/*.cu for sm_${CUDA_ARCHS.join(', sm_')}`, async () => {
    const r = await checkCuda();
    if ('skipped' in r) throw new Error(r.skipped);
    expect(r.results.map((x) => x.file)).toEqual(
      expect.arrayContaining(['native/head/mol/cuda.cu', 'native/head/msm/l1_topk.cu']));
    for (const x of r.results) expect(x.status, `${x.command}\n${x.output}`).toBe(0);
    for (const arch of CUDA_ARCHS) expect(r.results[0].command).toContain(`arch=compute_${arch},code=sm_${arch}`);
  });

  it.skipIf(!nvcc)('fails with nvcc\'s message when a kernel is rejected', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-cuda-test-'));
    try {
      const bad = path.join(dir, 'bad.cu');
      // An unused variable is only a warning, which the check turns into an error.
      fs.writeFileSync(bad, '__global__ void k(float* p) { int unused; p[0] = 1.0f; }\n');
      const r = await checkCuda({ files: [bad], archs: ['80'] });
      if ('skipped' in r) throw new Error(r.skipped);
      expect(r.ok).toBe(false);
      expect(r.results[0].output).toMatch(/bad\.cu\(1\).*"unused" was declared but never referenced/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
