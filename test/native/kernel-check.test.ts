/**
 * The kernel self-check (native/head/kernel_check.h): a candidate that matches its libtorch reference is trusted, one
 * that is off by 1e-2 is caught, reported once and replaced by the reference path, and each kernel is checked once.
 * On a CUDA build the real CUDA kernels are checked too.
 */
import { describe, expect, it } from 'vitest';
import { InputError, runtimeInfo } from '../../lib/index.js';
import { getBinding, type KernelCheckResult } from '../../lib/native/binding.js';
import { runTorchJob } from '../../lib/native/queue.js';

type Options = Parameters<ReturnType<typeof getBinding>['kernelSelfCheck']>[0];
const selfCheck = (options: Options): Promise<KernelCheckResult> =>
  runTorchJob(() => getBinding().kernelSelfCheck({ threads: 2, ...options }));

const kernels = ['molAttention', 'l1TopK'] as const;

const info = await runtimeInfo();
describe('kernel self-check', () => {
  it.each(kernels)('%s: trusts a candidate that matches the reference', async (kernel) => {
    const r = await selfCheck({ kernel, candidate: 'reference', seed: 7 });
    expect(r).toMatchObject({ ok: true, maxAbsErr: 0, path: 'candidate' });
    expect(r.detail).toMatch(/outputs agree .*seed 7/);
    expect(r.warning).toBeUndefined();
  });

  it.each(kernels)('%s: catches a candidate off by 1e-2, warns and falls back to the reference', async (kernel) => {
    // The retrieval's default tolerance is relative to similarities of about -5000 (rtol 1e-5 = 0.05): ask for an
    // absolute 1e-3 so the 1e-2 shift counts.
    const r = await selfCheck({ kernel, candidate: 'perturbed', seed: 7, atol: 1e-3, rtol: 0 });
    expect(r.ok).toBe(false);
    expect(r.path).toBe('reference');
    expect(r.maxAbsErr).toBeGreaterThan(1e-3);
    expect(r.maxAbsErr).toBeLessThan(0.1);  // bf16 banks round the shift to a neighbouring value
    expect(r.detail).toMatch(/^output 0: \|candidate - reference\| = .* at \[.*\] \(candidate .*, reference .*\) exceeds atol 0.001/);
    expect(r.warning).toMatch(new RegExp(`^m2vla: kernel '${kernel}:perturbed' disagrees with its reference .*; using the reference implementation$`));
  });

  it('checks a kernel once per process and remembers the verdict', async () => {
    const first = await selfCheck({ kernel: 'molAttention', candidate: 'perturbed' });
    const again = await selfCheck({ kernel: 'molAttention', candidate: 'perturbed', seed: 99 });
    expect(again.checksRun).toBe(first.checksRun);
    expect(again).toMatchObject({ ok: false, path: 'reference', detail: first.detail });
    expect(again.warning).toBeUndefined();  // warned once, at the first check
  });

  it('refuses unknown kernels with a typed error', async () => {
    const err = await selfCheck({ kernel: 'softmax' as never, candidate: 'reference' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/kernel must be molAttention or l1TopK, got 'softmax'/);
  });

  it.skipIf(info.cuda)('a CPU build has no CUDA candidate', async () => {
    const err = await selfCheck({ kernel: 'l1TopK', candidate: 'cuda' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/no CUDA kernels \(build with M2VLA_CUDA=1\)/);
  });

  it.runIf(info.cuda).each(kernels)('%s: the CUDA kernel agrees with its reference (or falls back without a GPU)', async (kernel) => {
    const r = await selfCheck({ kernel, candidate: 'cuda', seed: 3 });
    if (info.cudaAvailable) expect(r, r.detail).toMatchObject({ ok: true, path: 'candidate' });
    else expect(r).toMatchObject({ ok: false, path: 'reference', detail: expect.stringMatching(/^candidate failed: /) });
  });
});
