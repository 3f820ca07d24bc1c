import { describe, expect, it } from 'vitest';
import { InputError, measureGemmPeak, runtimeInfo } from '../../lib/index.js';
import { getBinding } from '../../lib/native/binding.js';
import { pendingTorchJobs, runTorchJob } from '../../lib/native/queue.js';

describe('native runtime', () => {
  it('reports the libtorch it loaded and how it was built', async () => {
    const info = await runtimeInfo();
    expect(info.torchVersion).toMatch(/^2\.\d+\.\d+/);
    expect(info.libtorch.version.startsWith(info.torchVersion)).toBe(true);
    expect(['LIBTORCH', 'python3 torch', 'fetched wheel']).toContain(info.libtorch.source);
    expect(typeof info.cuda).toBe('boolean');
    if (!info.cuda) expect(info.cudaAvailable).toBe(false); // a CPU build never reports a usable GPU
    expect(info.threads).toBeGreaterThan(0);
    expect(typeof info.cpu.avx512f).toBe('boolean');
  });

  it('keeps the event loop responsive while a long native job runs', async () => {
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 5);
    const started = performance.now();
    const r = await measureGemmPeak({ n: 768, iters: 40, threads: 2 });
    const elapsed = performance.now() - started;
    clearInterval(timer);
    expect(r.gflops).toBeGreaterThan(0);
    expect(elapsed).toBeGreaterThan(100); // the job is long enough to matter
    // A blocked loop would fire ~once; a free one fires about every 5 ms (allow for a loaded 2-core machine).
    expect(ticks).toBeGreaterThan(elapsed / 5 / 4);
  });

  it('runs torch jobs one at a time, in order', async () => {
    const order: string[] = [];
    const job = (name: string) => runTorchJob(async () => {
      order.push(`start ${name}`);
      await measureGemmPeakRaw();
      order.push(`end ${name}`);
    });
    const all = Promise.all([job('a'), job('b'), job('c')]);
    expect(pendingTorchJobs()).toBe(3);
    await all;
    expect(order).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    expect(pendingTorchJobs()).toBe(0);
  });

  it('turns native argument errors into typed errors naming the input', async () => {
    const err = await runTorchJob(() => getBinding().loadStateDict('x.safetensors', { dtype: 'int8' as never }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as InputError).code).toBe('E_INPUT');
    expect((err as Error).message).toMatch(/dtype must be float32, bfloat16, float16 or float64, got 'int8'/);
  });
});

function measureGemmPeakRaw() {
  return getBinding().measureGemm({ n: 128, iters: 2, dtype: 'float32' });
}
