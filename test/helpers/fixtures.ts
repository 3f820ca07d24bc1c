/** Test-side access to the golden fixtures (read through the addon's own checkpoint reader). */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getBinding, type NativeTensor } from '../../lib/native/binding.js';

export const FIXTURE_A = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'm2vla-tiny-a');

let casesPromise: Promise<Record<string, NativeTensor>> | undefined;
/** All tensors of fixture A's cases.safetensors, keyed '<case>.input.*' / '<case>.expected.*'. */
export function loadCases(): Promise<Record<string, NativeTensor>> {
  casesPromise ??= getBinding().loadStateDict(path.join(FIXTURE_A, 'cases.safetensors'));
  return casesPromise;
}

/** Any fixture tensor as float32 values (bf16/f16 widened, f64/int narrowed). */
export function toFloat32(t: NativeTensor): Float32Array {
  const { data } = t;
  const buf = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
  switch (t.dtype) {
    case 'float32': return new Float32Array(buf);
    case 'float64': return Float32Array.from(new Float64Array(buf));
    case 'int64': return Float32Array.from(new BigInt64Array(buf), (v) => Number(v));
    case 'int32': return Float32Array.from(new Int32Array(buf));
    case 'int8': return Float32Array.from(new Int8Array(buf));
    case 'uint8': case 'bool': return Float32Array.from(new Uint8Array(buf));
    case 'bfloat16': {
      const u16 = new Uint16Array(buf), u32 = new Uint32Array(u16.length);
      for (let i = 0; i < u16.length; i++) u32[i] = u16[i] << 16;
      return new Float32Array(u32.buffer);
    }
    case 'float16': throw new Error('float16 fixtures are not used');
  }
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * How a tensor rounded to bfloat16 differs from its reference: how many elements differ, and the largest difference in
 * bfloat16 ulps of the reference value (1 = the two sides rounded one value to neighbouring bf16 numbers).
 */
export function bf16UlpDiff(a: ArrayLike<number>, ref: ArrayLike<number>): { differing: number; worstUlps: number } {
  if (a.length !== ref.length) throw new Error(`length mismatch: ${a.length} vs ${ref.length}`);
  let differing = 0, worstUlps = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - ref[i]);
    if (d === 0) continue;
    differing++;
    const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(ref[i]), 2 ** -126))) - 7);
    worstUlps = Math.max(worstUlps, d / ulp);
  }
  return { differing, worstUlps };
}

/** float32 → bfloat16 → float32, round to nearest even (what `.to(torch.bfloat16)` does). */
export function roundBf16(x: Float32Array): Float32Array {
  const u = new Uint32Array(Float32Array.from(x).buffer);
  for (let i = 0; i < u.length; i++) u[i] = ((u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 0) & 0xffff0000;
  return new Float32Array(u.buffer);
}
