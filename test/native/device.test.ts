/**
 * Device placement of a policy (native/device.h, native/transfer.h): the CPU path runs the same packing and copy
 * code a GPU does (one host buffer in, one out), 'auto' resolves per device, bad strings are InputErrors and a device
 * this build cannot use is a ConfigError that says how to get a CUDA build. No GPU is needed; on a CUDA build the
 * CUDA-specific expectations switch.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, InputError, loadBackbone, loadPolicy, runtimeInfo, type Policy } from '../../lib/index.js';
import { placementRefusal } from '../../lib/backbone.js';
import { doctorCommand } from '../../lib/cli/doctor.js';
import { getBinding } from '../../lib/native/binding.js';
import type { NativeTensor } from '../../lib/native/binding.js';
import { FIXTURE_A, loadCases, maxAbsDiff, toFloat32 } from '../helpers/fixtures.js';

const info = await runtimeInfo();
let cases: Record<string, NativeTensor>;
let policy: Policy;

/** Fixture A case0 as pixel-value-free observations: raw images, prompt ids and state. */
function observation(c: string) {
  const ids = cases[`${c}.input.input_ids`];
  const [, P] = ids.shape;
  const image = (t: NativeTensor) => ({ data: t.data.slice(0, t.shape[1] * t.shape[2] * 3), width: t.shape[2], height: t.shape[1] });
  return {
    images: { primary: image(cases[`${c}.input.raw_primary_u8`]), wrist: image(cases[`${c}.input.raw_wrist_u8`]) },
    inputIds: new BigInt64Array(ids.data.slice().buffer).slice(0, P),
    state: new Float64Array(cases[`${c}.input.proprio_raw`].data.slice().buffer).slice(0, 8),
  };
}

beforeAll(async () => {
  cases = await loadCases();
  policy = await loadPolicy(FIXTURE_A, { device: 'cpu', dtype: 'float32' });
});
afterAll(() => policy?.dispose());

describe('loadPolicy({ device, dtype })', () => {
  it("device 'cpu' + dtype 'float32' on the fused CPU kernels, no self-check, no warning", () => {
    expect(policy.metadata).toMatchObject({ device: 'cpu', deviceName: 'CPU', dtype: 'float32', dtypeReason: 'asked for' });
    expect(policy.metadata.kernels).toEqual({ device: 'cpu', path: 'cpu-fused', checks: [], warnings: [] });
  });

  it('act() through the packed host->device->host copies matches the reference (case0, no casts)', async () => {
    const out = await policy.act(observation('case0'));
    const per = 8 * 7;
    expect(maxAbsDiff(out.actions.data, toFloat32(cases['case0.expected_nocast.actions']).subarray(0, per))).toBeLessThan(1e-4);
    expect(Array.from(out.retrieval.indices)).toEqual(Array.from(toFloat32(cases['case0.expected.msm.topk_indices'])).slice(0, 4));
  });

  it('bfloat16 on the CPU resolves as asked', async () => {
    await using p = await loadPolicy(FIXTURE_A, { device: 'cpu', dtype: 'bfloat16' });
    expect(p.metadata).toMatchObject({ device: 'cpu', dtype: 'bfloat16' });
    expect(p.metadata.kernels.path).toBe('cpu-fused');
  });

  it.each([
    // The rules and messages are native/device.cc's (one place); TS checks only that they are strings.
    [{ device: 'gpu' }, /device: expected 'cpu', 'cuda' or 'cuda:N', got 'gpu'/],
    [{ device: 'cuda:x' }, /device: expected .* got 'cuda:x'/],
    [{ dtype: 'fp16' }, /dtype: expected 'auto', 'float32', 'bfloat16', 'float16' or 'int8', got 'fp16'/],
    [{ device: 0 }, /device: expected a string/],
  ])('%o -> InputError', async (options, message) => {
    const err = await loadPolicy(FIXTURE_A, options as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(message);
  });

  it('float16 on the CPU -> ConfigError (float16 is for GPUs)', async () => {
    const err = await loadPolicy(FIXTURE_A, { dtype: 'float16' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/dtype 'float16' is for CUDA devices; on the CPU use 'float32', 'bfloat16' or 'int8'/);
  });

  it.skipIf(info.cuda)("a CPU-only build refuses 'cuda:0' with a ConfigError that says how to build with CUDA", async () => {
    const err = await loadPolicy(FIXTURE_A, { device: 'cuda:0', dtype: 'auto' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/^device 'cuda:0': this m2vla addon is a CPU-only build .* M2VLA_CUDA=1 LIBTORCH=/);
    // The native loaders refuse it the same way (no model is placed on a device the build cannot reach).
    expect(() => getBinding().resolvePlacement({ device: 'cuda', dtype: 'float32' })).toThrow(/CPU-only build/);
  });

  it.runIf(info.cuda && !info.cudaAvailable)('a CUDA build without a usable GPU -> ConfigError with the runtime reason', async () => {
    const err = await loadPolicy(FIXTURE_A, { device: 'cuda:0' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as Error).message).toMatch(/no usable CUDA GPU|no CUDA GPU is visible/);
  });
});

describe("dtype 'auto' and 'int8' on the CPU", () => {
  const none = { amxBf16: false, amxInt8: false, avx512Bf16: false, avx512Vnni: false };
  type CpuFeatures = typeof none & { bf16Gflops?: number; fp32Gflops?: number; onednnBf16?: boolean };
  const resolve = (dtype: string, cpuFeatures: CpuFeatures = none, device = 'cpu') => getBinding().resolvePlacement({ device, dtype, cpuFeatures });

  it('auto is bfloat16 where the CPU has AMX-BF16 or its bfloat16 GEMMs measured >= 1.5x float32, and says why', () => {
    expect(resolve('auto', { ...none, amxBf16: true, amxInt8: true })).toMatchObject({ dtype: 'bfloat16', reason: expect.stringMatching(/^auto: this CPU has AMX-BF16/) });
    // AVX512-BF16 without AMX: the GEMM probe decides (0.53x on one Xeon, 4.3x on a Zen 5).
    const avx512 = { ...none, avx512Bf16: true, avx512Vnni: true };
    expect(resolve('auto', { ...avx512, bf16Gflops: 808, fp32Gflops: 186 })).toMatchObject({
      dtype: 'bfloat16', reason: "auto: this CPU has no AMX-BF16, but its bfloat16 matmuls measured 808 GFLOP/s against float32's 186 (at least 1.5x), so bfloat16",
    });
    expect(resolve('auto', { ...avx512, bf16Gflops: 184, fp32Gflops: 344 })).toMatchObject({
      dtype: 'float32', reason: expect.stringMatching(/^auto: this CPU has no AMX-BF16, and its bfloat16 matmuls measured 184 GFLOP\/s against float32's 344 \(under 1.5x\), so float32$/),
    });
    expect(resolve('auto', { ...avx512, bf16Gflops: 250, fp32Gflops: 200 })).toMatchObject({ dtype: 'float32' });
    expect(resolve('auto', avx512)).toMatchObject({ dtype: 'float32' }); // no measurement: float32
    expect(resolve('auto')).toMatchObject({ dtype: 'float32', reason: expect.stringMatching(/^auto: this CPU has neither AMX-BF16 nor AVX512-BF16/) });
    expect(resolve('bfloat16')).toMatchObject({ dtype: 'bfloat16', reason: 'asked for' });
  });

  it('loadPolicy and doctor apply the rule to this machine', async () => {
    await using p = await loadPolicy(FIXTURE_A, { dtype: 'auto' });
    const measuredFaster = (info.cpuDtype.bf16Gflops ?? 0) >= 1.5 * (info.cpuDtype.fp32Gflops ?? Infinity);
    expect(p.metadata.dtype).toBe((info.cpu.amxUsable && info.cpu['amx-bf16']) || measuredFaster ? 'bfloat16' : 'float32');
    // The probe runs exactly where the flags leave the choice open.
    expect(info.cpuDtype.bf16Gflops !== undefined).toBe(info.cpu.avx512bf16 && !(info.cpu.amxUsable && info.cpu['amx-bf16']));
    expect(p.metadata.dtypeReason).toBe(info.cpuDtype.reason);
    expect(info.cpuDtype.auto).toBe(p.metadata.dtype);
  });

  it('int8 needs AVX512-VNNI or AMX-INT8 and the CPU: ConfigErrors that say what works', () => {
    expect(resolve('int8', { ...none, avx512Vnni: true })).toMatchObject({ dtype: 'int8', reason: 'asked for' });
    expect(resolve('int8', { ...none, amxInt8: true })).toMatchObject({ dtype: 'int8' });
    expect(() => resolve('int8')).toThrow(/dtype 'int8' needs a CPU with AVX512-VNNI or AMX-INT8 .* use 'bfloat16', 'float32' or 'auto'/);
    // Without AVX-512 bfloat16 is no alternative (ATen's fallback, ~50x slower than float32): not suggested.
    expect(() => resolve('int8', { ...none, onednnBf16: false })).toThrow(/AVX512-VNNI or AMX-INT8 .* use 'float32' or 'auto'$/);
    expect(() => resolve('int8', { ...none, amxInt8: true }, 'cuda:0')).toThrow(/dtype 'int8' runs on the CPU only .* use 'bfloat16', 'float16' or 'auto'/);
  });

  it("bfloat16 without AVX-512: runs, with a warning (ATen's fallback is ~50x slower than float32); 'auto' says why", () => {
    const avx2 = { ...none, onednnBf16: false };
    expect(resolve('bfloat16', avx2)).toMatchObject({ dtype: 'bfloat16', reason: 'asked for', warning: expect.stringMatching(/~50x slower than float32.*use 'float32'/) });
    expect(resolve('auto', avx2)).toMatchObject({ dtype: 'float32', reason: expect.stringMatching(/^auto: this CPU has no AVX-512, so bfloat16 matmuls run on ATen's fallback/) });
    expect(resolve('bfloat16').warning).toBeUndefined();
    expect(resolve('float32', avx2).warning).toBeUndefined();
  });

  it.each([
    ['loadPolicy', async () => { await using p = await loadPolicy(FIXTURE_A, { dtype: 'bfloat16' }); expect(p.metadata.dtype).toBe('bfloat16'); }],
    ['loadBackbone', async () => { await using b = await loadBackbone(FIXTURE_A, { dtype: 'bfloat16' }); expect(b.dtype).toBe('bfloat16'); }],
  ])("%s({ dtype: 'bfloat16' }) warns (M2VLA_SLOW_DTYPE) exactly where oneDNN cannot run bfloat16", async (_, load) => {
    const codes: string[] = [];
    const onWarning = (w: Error & { code?: string }) => { if (w.code) codes.push(w.code); };
    process.on('warning', onWarning);
    try {
      await load();
      await new Promise((r) => setImmediate(r));  // warnings are emitted on the next tick
    } finally {
      process.off('warning', onWarning);
    }
    expect(codes.filter((c) => c === 'M2VLA_SLOW_DTYPE').length).toBe(info.cpuDtype.onednnBf16 ? 0 : 1);
  });

  it("loadBackbone({ dtype: 'auto' }) reports the dtype it chose, the one loadPolicy's 'auto' chooses", async () => {
    await using p = await loadPolicy(FIXTURE_A, { dtype: 'auto' });
    await using b = await loadBackbone(FIXTURE_A, { dtype: 'auto' });
    expect(b.dtype).toBe(p.metadata.dtype);
    expect(['float32', 'bfloat16']).toContain(b.dtype);
  });

  it("placementRefusal: the ConfigError's words for what cannot run here (eval and bench rows), nothing for what can", () => {
    expect(placementRefusal('cpu', 'float32')).toBeUndefined();
    expect(placementRefusal('cpu', 'int8')).toEqual(info.cpuDtype.int8 ? undefined : expect.stringMatching(/needs a CPU with AVX512-VNNI or AMX-INT8.*use /));
    expect(placementRefusal('cpu', 'float16')).toMatch(/'float16' is for CUDA devices/);
    expect(() => placementRefusal('cpu', 'fp8')).toThrow(InputError);
  });

  it.runIf(!info.cpuDtype.int8)("loadPolicy({ dtype: 'int8' }) on this CPU -> ConfigError", async () => {
    await expect(loadPolicy(FIXTURE_A, { dtype: 'int8' })).rejects.toThrow(ConfigError);
  });
});

describe('m2vla doctor', () => {
  it('reports the GPU state: a CPU-only build says so (no probe) and how to build with CUDA', async () => {
    const lines: string[] = [];
    const log = console.log;
    console.log = (s: string) => { lines.push(s); };
    try {
      expect(await doctorCommand.run([])).toBe(0);
    } finally {
      console.log = log;
    }
    const out = lines.join('\n');
    expect(out).toMatch(new RegExp(`CPU dtype: +'auto' = ${info.cpuDtype.auto} \\(auto: this CPU has`));
    if (info.cuda) expect(out).toMatch(/GPU cuda:\d+: +.*, compute capability \d+\.\d, .* GiB free, driver CUDA|GPU: +none usable: /);
    else expect(out).toMatch(/GPU: +none used: CPU-only build \(no GPU probed\); to use one, build the addon with CUDA: M2VLA_CUDA=1/);
  });
});
