/**
 * openpi's msgpack wire format (openpi_client/msgpack_numpy.py): an ndarray travels as a map
 * `{__ndarray__: true, data: <raw C-order bytes>, dtype: '<f4', shape: [..]}` and a numpy scalar as
 * `{__npgeneric__: true, data: <item>, dtype}`. Python writes those keys as msgpack **bin**, not str, and only
 * recognizes them as bin: we always write bin keys and read either kind (a JS client may only manage str keys).
 */
import { Packr, Unpackr } from 'msgpackr';
import { InputError } from '../errors.js';
import { dtypeOf, fromBytes, NdArray, parseDtype, parseShape, type TypedArray } from './ndarray.js';

const bin = (s: string) => Buffer.from(s, 'latin1');
const K_NDARRAY = bin('__ndarray__'), K_DATA = bin('data'), K_DTYPE = bin('dtype'), K_SHAPE = bin('shape');

// Records and structured clone are msgpackr extensions Python cannot read: plain maps and arrays only.
const packr = new Packr({ useRecords: false, variableMapSize: true });
// Maps come back as Map so bin keys survive (mapsAsObjects refuses them).
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false });

/** Encodes plain objects, arrays, strings, numbers, booleans, Uint8Array (bin), NdArray and other typed arrays (1-d). */
export function packOpenpi(value: unknown): Buffer {
  return packr.pack(toWire(value));
}

function toWire(v: unknown): unknown {
  if (v instanceof NdArray) {
    return new Map<Buffer, unknown>([[K_NDARRAY, true], [K_DATA, v.bytes()], [K_DTYPE, v.dtype], [K_SHAPE, v.shape]]);
  }
  // msgpackr would write these as its own extension type.
  if (ArrayBuffer.isView(v) && !(v instanceof Uint8Array)) {
    const a = v as TypedArray;
    return toWire(new NdArray(dtypeOf(a), [a.length], a));
  }
  if (Array.isArray(v)) return v.map(toWire);
  if (v && typeof v === 'object' && !(v instanceof Uint8Array)) {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = toWire(x);
    return out;
  }
  return v;
}

/**
 * Decodes a frame into plain objects (string keys), arrays, NdArray (`__ndarray__` maps), numbers/booleans/bigints
 * (`__npgeneric__` maps) and Uint8Array (bin). Malformed input throws InputError naming the key.
 */
export function unpackOpenpi(frame: Uint8Array): unknown {
  let raw: unknown;
  try {
    raw = unpackr.unpack(frame);
  } catch (e) {
    throw new InputError(`malformed msgpack frame (${(e as Error).message})`, { cause: e });
  }
  return fromWire(raw, '');
}

function fromWire(v: unknown, path: string): unknown {
  if (Array.isArray(v)) return v.map((x, i) => fromWire(x, `${path}[${i}]`));
  if (!(v instanceof Map)) return v;
  // No prototype: a '__proto__' key from the wire stays an ordinary key.
  const obj: Record<string, unknown> = Object.create(null);
  for (const [k, x] of v) obj[k instanceof Uint8Array ? Buffer.from(k).toString('utf8') : String(k)] = x;
  const where = path || 'message';
  if (obj.__ndarray__ === true) {
    if (!(obj.data instanceof Uint8Array)) throw new InputError(`${where}: ndarray data must be bytes`);
    return fromBytes(parseDtype(obj.dtype, where), parseShape(obj.shape, where), obj.data, where);
  }
  if (obj.__npgeneric__ === true) {
    const dtype = parseDtype(obj.dtype, where), d = obj.data;
    if (dtype === '|b1' ? typeof d !== 'boolean' : typeof d !== 'number' && typeof d !== 'bigint')
      throw new InputError(`${where}: numpy scalar of dtype ${dtype} holds a ${typeof d}`);
    return d;
  }
  for (const k of Object.keys(obj)) obj[k] = fromWire(obj[k], path ? `${path}.${k}` : k);
  return obj;
}
