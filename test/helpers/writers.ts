/**
 * Minimal writers for the checkpoint formats, so tests can build sharded, damaged or hand-crafted files in a temp
 * dir with Node alone: safetensors, a stored-entries zip (what torch.save writes) and the pickle a torch.save
 * state dict holds.
 */
import type { NativeTensor } from '../../lib/native/binding.js';

const SAFETENSORS_DTYPE: Record<NativeTensor['dtype'], string> = {
  float32: 'F32', float64: 'F64', float16: 'F16', bfloat16: 'BF16', int64: 'I64', int32: 'I32', int8: 'I8',
  uint8: 'U8', bool: 'BOOL',
};

/** safetensors bytes from a raw header (any JSON text, valid or not) and data section. */
export function safetensorsRaw(header: string, data: Uint8Array): Buffer {
  const json = Buffer.from(header);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/** A well-formed safetensors file holding `tensors` in insertion order. */
export function encodeSafetensors(tensors: Record<string, NativeTensor>): Buffer {
  const header: Record<string, unknown> = {};
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: SAFETENSORS_DTYPE[t.dtype], shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    chunks.push(t.data);
    offset += t.data.length;
  }
  // Pad the header with spaces to a multiple of 8 so the data (and every tensor in it) stays aligned.
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  return safetensorsRaw(json, Buffer.concat(chunks));
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(data: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of data) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

export interface ZipInput {
  name: string;
  data: Uint8Array;     // the bytes as stored (already deflated when method is 8)
  method?: number;      // 0 stored (default), 8 deflate
  size?: number;        // uncompressed size when method is 8
}

/** A plain zip (no zip64, no alignment padding: torch's own files have both, so this covers the other path). */
export function encodeZip(entries: ZipInput[]): Buffer {
  const locals: Uint8Array[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name);
    const method = e.method ?? 0;
    const size = e.size ?? e.data.length;
    const fields = (h: Buffer, at: number) => {
      h.writeUInt16LE(method, at);
      h.writeUInt32LE(method === 0 ? crc32(e.data) : 0, at + 6);
      h.writeUInt32LE(e.data.length, at + 10);
      h.writeUInt32LE(size, at + 14);
      h.writeUInt16LE(name.length, at + 18);
    };
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    fields(local, 8);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    fields(central, 10);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, e.data);
    centrals.push(central, name);
    offset += local.length + name.length + e.data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** Pickle pieces (protocol 2, as torch.save writes). */
export const pickle = {
  str: (s: string) => {
    const b = Buffer.from(s);
    const n = Buffer.alloc(4);
    n.writeUInt32LE(b.length);
    return Buffer.concat([Buffer.from('X'), n, b]);
  },
  int: (v: number) => { const b = Buffer.alloc(5); b.write('J'); b.writeInt32LE(v, 1); return b; },
  global: (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`),
  tuple: (...items: Buffer[]) => Buffer.concat([Buffer.from('('), ...items, Buffer.from('t')]),
  newFalse: Buffer.from([0x89]),
  reduce: Buffer.from('R'),
  emptyTuple: Buffer.from(')'),
  binpersid: Buffer.from('Q'),
};

export interface PickledTensor {
  name: string;
  storage: string;   // torch storage class, e.g. 'FloatStorage'
  key: string;       // record <archive>/data/<key>
  numel: number;     // elements of the storage
  offset: number;
  size: number[];
  stride: number[];
}

/** The data.pkl of `torch.save(OrderedDict(...))`: every value a _rebuild_tensor_v2 of a persistent storage. */
export function stateDictPickle(tensors: PickledTensor[]): Buffer {
  const p = pickle;
  const orderedDict = Buffer.concat([p.global('collections', 'OrderedDict'), p.emptyTuple, p.reduce]);
  const entries = tensors.map((t) => Buffer.concat([
    p.str(t.name),
    p.global('torch._utils', '_rebuild_tensor_v2'),
    p.tuple(
      Buffer.concat([p.tuple(p.str('storage'), p.global('torch', t.storage), p.str(t.key), p.str('cpu'), p.int(t.numel)), p.binpersid]),
      p.int(t.offset), p.tuple(...t.size.map(p.int)), p.tuple(...t.stride.map(p.int)), p.newFalse, orderedDict),
    p.reduce,
  ]));
  // PROTO 2, OrderedDict(), MARK, key value ..., SETITEMS, STOP
  return Buffer.concat([Buffer.from([0x80, 2]), orderedDict, Buffer.from('('), ...entries, Buffer.from('u.')]);
}

/** A torch.save-style zip: <archive>/data.pkl, version, byteorder and one record per storage. */
export function encodeTorchZip(archive: string, dataPkl: Uint8Array, storages: Record<string, Uint8Array>): Buffer {
  return encodeZip([
    { name: `${archive}/data.pkl`, data: dataPkl },
    { name: `${archive}/version`, data: Buffer.from('3\n') },
    { name: `${archive}/byteorder`, data: Buffer.from('little') },
    ...Object.entries(storages).map(([key, data]) => ({ name: `${archive}/data/${key}`, data })),
  ]);
}
