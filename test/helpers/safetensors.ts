/** A minimal safetensors writer for tests (damaged checkpoints, synthetic run directories). */
import fs from 'node:fs';
import type { NativeTensor } from '../../lib/native/binding.js';

const DTYPES: Record<NativeTensor['dtype'], string> = {
  float32: 'F32', float64: 'F64', float16: 'F16', bfloat16: 'BF16', int64: 'I64', int32: 'I32', uint8: 'U8', bool: 'BOOL',
};
const BYTES: Record<NativeTensor['dtype'], number> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, uint8: 1, bool: 1,
};

/**
 * Writes `tensors` (raw little-endian bytes + dtype + shape, as loadStateDict returns them) in name order.
 * The byte length must match the shape: a "mis-shaped" tensor is made by giving a shape with the same element count.
 */
export function writeSafetensors(file: string, tensors: Record<string, NativeTensor>, metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  const names = Object.keys(tensors).sort();
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const bytes = t.shape.reduce((a, b) => a * b, 1) * BYTES[t.dtype];
    if (bytes !== t.data.byteLength) {
      throw new Error(`writeSafetensors: '${name}' shape [${t.shape.join(', ')}] needs ${bytes} bytes, data has ${t.data.byteLength}`);
    }
    header[name] = { dtype: DTYPES[t.dtype], shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const padded = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, ' ')]);  // data starts 8-byte aligned
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(padded.length));
  fs.writeFileSync(file, Buffer.concat([head, padded, ...names.map((n) => tensors[n].data)]));
}
