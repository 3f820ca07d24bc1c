/** n-d arrays as numpy puts them on the wire (openpi's msgpack, json_numpy): raw C-order bytes + `dtype.str` + shape. */
import { formatShape, InputError, ShapeError } from '../errors.js';

export type TypedArray =
  | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array
  | BigUint64Array | BigInt64Array | Float32Array | Float64Array;

/** The `dtype.str` values we carry (little-endian; bool travels as one byte per element). */
export const DTYPES = {
  '|b1': Uint8Array, '|u1': Uint8Array, '|i1': Int8Array, '<u2': Uint16Array, '<i2': Int16Array,
  '<u4': Uint32Array, '<i4': Int32Array, '<u8': BigUint64Array, '<i8': BigInt64Array,
  '<f4': Float32Array, '<f8': Float64Array,
} as const;
export type DType = keyof typeof DTYPES;
const DTYPE_NAMES: Record<DType, string> = {
  '|b1': 'bool', '|u1': 'uint8', '|i1': 'int8', '<u2': 'uint16', '<i2': 'int16', '<u4': 'uint32', '<i4': 'int32',
  '<u8': 'uint64', '<i8': 'int64', '<f4': 'float32', '<f8': 'float64',
};

export class NdArray<T extends TypedArray = TypedArray> {
  constructor(readonly dtype: DType, readonly shape: number[], readonly data: T) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) throw new ShapeError(`ndarray: shape ${formatShape(shape)} needs ${n} values, got ${data.length}`);
  }
  static float32(data: Float32Array, shape: number[] = [data.length]) { return new NdArray('<f4', shape, data); }
  static float64(data: Float64Array, shape: number[] = [data.length]) { return new NdArray('<f8', shape, data); }
  static uint8(data: Uint8Array, shape: number[] = [data.length]) { return new NdArray('|u1', shape, data); }

  /** This array's bytes (a view: the typed array may be a window into a larger buffer). */
  bytes(): Buffer {
    return Buffer.from(this.data.buffer, this.data.byteOffset, this.data.byteLength);
  }
  /** numpy's spelling, for error messages: `float32 (224, 224, 3)`. */
  describe(): string {
    return `${DTYPE_NAMES[this.dtype]} (${this.shape.join(', ')}${this.shape.length === 1 ? ',' : ''})`;
  }
}

/** The dtype for a typed array (Uint8Array reads as uint8, never bool). */
export function dtypeOf(a: TypedArray): DType {
  const d = (Object.keys(DTYPES) as DType[]).find((k) => k !== '|b1' && a instanceof DTYPES[k]);
  if (!d) throw new TypeError(`no numpy dtype for ${a.constructor.name}`);
  return d;
}

export function parseDtype(dtype: unknown, where: string): DType {
  if (typeof dtype !== 'string') throw new InputError(`${where}: dtype must be a string like '<f4', got ${typeof dtype}`);
  if (dtype in DTYPES) return dtype as DType;
  // '<' or '=' on a 1-byte type is a harmless spelling variant of '|'.
  const oneByte = dtype.replace(/^[<=]/, '|');
  if (oneByte in DTYPES) return oneByte as DType;
  const why = /^.?[OVc]/.test(dtype) ? 'object, void and complex arrays are not accepted'
    : dtype.startsWith('>') ? 'big-endian arrays are not accepted'
      : 'supported: bool, (u)int8-64, float32, float64';
  throw new InputError(`${where}: unsupported dtype '${dtype}' (${why})`);
}

export function parseShape(shape: unknown, where: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw new InputError(`${where}: ndarray shape must be a list of non-negative integers`);
  return shape as number[];
}

/** Builds an array from wire bytes; copies, since decoders hand out views at arbitrary (unaligned) offsets. */
export function fromBytes(dtype: DType, shape: number[], bytes: Uint8Array, where: string): NdArray {
  const Ctor = DTYPES[dtype];
  const n = shape.reduce((a, b) => a * b, 1);
  if (bytes.byteLength !== n * Ctor.BYTES_PER_ELEMENT) {
    throw new ShapeError(`${where}: shape ${formatShape(shape)} of ${dtype} needs ${n * Ctor.BYTES_PER_ELEMENT} bytes, ` +
      `got ${bytes.byteLength}`);
  }
  return new NdArray(dtype, shape, new Ctor(new Uint8Array(bytes).buffer, 0, n));
}
