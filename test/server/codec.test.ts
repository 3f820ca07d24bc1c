/** openpi's msgpack numpy format and json_numpy, byte-exact where it matters, and against Python when available. */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Packr } from 'msgpackr';
import { describe, expect, it } from 'vitest';
import { InputError, ShapeError } from '../../lib/index.js';
import { parseJsonNumpy, toJsonNumpy } from '../../lib/server/json-numpy.js';
import { NdArray } from '../../lib/server/ndarray.js';
import { packOpenpi, unpackOpenpi } from '../../lib/server/openpi.js';
import { pythonWithOpenpiDeps } from './helpers.js';

const CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'openpi_client.py');
const python = pythonWithOpenpiDeps();

/** Hand-built msgpack (msgpackr, str keys unless given as Buffers) for frames our encoder would never write. */
const raw = (v: unknown) => new Packr({ useRecords: false, variableMapSize: true }).pack(v);
const map = (entries: Array<[string, unknown]>) => new Map(entries.map(([k, v]) => [Buffer.from(k), v]));

describe('openpi msgpack codec', () => {
  it('writes ndarrays as maps with bin keys in openpi order: __ndarray__, data, dtype, shape', () => {
    const frame = packOpenpi({ a: NdArray.float32(Float32Array.of(1, 2), [1, 2]) });
    const expected = Buffer.concat([
      Buffer.from([0x81, 0xa1, 0x61, 0x84]), // {"a": map of 4
      Buffer.from([0xc4, 11]), Buffer.from('__ndarray__'), Buffer.from([0xc3]),
      Buffer.from([0xc4, 4]), Buffer.from('data'), Buffer.from([0xc4, 8]), Buffer.from(Float32Array.of(1, 2).buffer),
      Buffer.from([0xc4, 5]), Buffer.from('dtype'), Buffer.from([0xa3]), Buffer.from('<f4'),
      Buffer.from([0xc4, 5]), Buffer.from('shape'), Buffer.from([0x92, 0x01, 0x02]),
    ]);
    expect(frame.equals(expected)).toBe(true);
  });

  it('round-trips every carried dtype, nested, with copies that are aligned', () => {
    const value = {
      f4: NdArray.float32(Float32Array.of(1.5, -2, 3.25), [1, 3]),
      f8: NdArray.float64(Float64Array.of(Math.PI, -Infinity, NaN)),
      u1: NdArray.uint8(Uint8Array.from({ length: 12 }, (_, i) => i), [2, 3, 2]),
      i8: new NdArray('<i8', [2], BigInt64Array.of(-(2n ** 40n), 7n)),
      b1: new NdArray('|b1', [3], Uint8Array.of(1, 0, 1)),
      empty: NdArray.float32(new Float32Array(0), [0, 3]),
      typed: Int16Array.of(-3, 300),
      nested: { list: [1, 'two', { x: NdArray.uint8(Uint8Array.of(9)) }], bytes: Uint8Array.of(1, 2, 3) },
    };
    const back = unpackOpenpi(packOpenpi(value)) as Record<string, any>;
    expect(back.f4).toEqual(value.f4);
    expect(Array.from(back.f8.data)).toEqual([Math.PI, -Infinity, NaN]);
    expect(back.u1).toEqual(value.u1);
    expect(back.i8).toEqual(value.i8);
    expect(back.b1).toMatchObject({ dtype: '|b1', shape: [3] });
    expect(back.empty.shape).toEqual([0, 3]);
    expect(back.typed).toEqual(new NdArray('<i2', [2], Int16Array.of(-3, 300)));
    expect(back.nested.list[2].x.data).toEqual(Uint8Array.of(9));
    expect(Buffer.from(back.nested.bytes)).toEqual(Buffer.from([1, 2, 3]));
    for (const k of ['f4', 'f8', 'i8']) expect(back[k].data.byteOffset % 8).toBe(0);
  });

  it('reads str keys too, and __npgeneric__ scalars as plain values', () => {
    const frame = raw({
      a: { __ndarray__: true, data: Buffer.from(Float64Array.of(4).buffer), dtype: '<f8', shape: [1] },
      s: map([['__npgeneric__', true], ['data', 0.5], ['dtype', '<f4']]),
      t: map([['__npgeneric__', true], ['data', true], ['dtype', '|b1']]),
    });
    expect(unpackOpenpi(frame)).toEqual({ a: NdArray.float64(Float64Array.of(4)), s: 0.5, t: true });
  });

  it('rejects malformed frames and unsupported or inconsistent arrays, naming the key', () => {
    const arr = (dtype: string, bytes: number, shape: unknown = [bytes]) =>
      raw({ 'observation/state': map([['__ndarray__', true], ['data', Buffer.alloc(bytes)], ['dtype', dtype], ['shape', shape]]) });
    expect(() => unpackOpenpi(Buffer.from([0xc4, 0x10, 1]))).toThrow(/malformed msgpack/);
    expect(() => unpackOpenpi(arr('|O', 8))).toThrow(/observation\/state: unsupported dtype '\|O' \(object, void and complex/);
    expect(() => unpackOpenpi(arr('|V8', 8))).toThrow(/object, void and complex/);
    expect(() => unpackOpenpi(arr('<c16', 16))).toThrow(/object, void and complex/);
    expect(() => unpackOpenpi(arr('>f4', 4))).toThrow(/big-endian/);
    expect(() => unpackOpenpi(arr('<U4', 16))).toThrow(/unsupported dtype '<U4'/);
    expect(() => unpackOpenpi(arr('<f4', 12, [4]))).toThrow(ShapeError);
    expect(() => unpackOpenpi(arr('<f4', 12, [-3]))).toThrow(/non-negative integers/);
    expect(() => unpackOpenpi(arr('<f4', 12, 'x'))).toThrow(InputError);
  });

  it('keeps a "__proto__" key from the wire an ordinary key', () => {
    const back = unpackOpenpi(raw(new Map<string, unknown>([['__proto__', { polluted: true }]]))) as Record<string, unknown>;
    expect(Object.getPrototypeOf(back)).toBe(null);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

describe.skipIf(!python)('openpi msgpack codec against Python msgpack + numpy', () => {
  const py = (args: string[], input?: Buffer) => {
    const r = spawnSync(python!.cmd, [CLIENT, ...args], { env: python!.env, input, maxBuffer: 1 << 24 });
    if (r.status !== 0) throw new Error(r.stderr.toString());
    return r.stdout;
  };

  it('Python decodes what Node writes into numpy arrays of the same dtype, shape and values', () => {
    const frame = packOpenpi({
      'observation/image': NdArray.uint8(Uint8Array.from({ length: 12 }, (_, i) => 20 * i), [2, 2, 3]),
      'observation/state': NdArray.float64(Float64Array.of(0.1, -2)),
      f4: NdArray.float32(Float32Array.of(0.5, 1e-3), [2, 1]),
      i8: new NdArray('<i8', [1], BigInt64Array.of(-5n)),
      prompt: 'open the drawer',
    });
    expect(JSON.parse(py(['describe'], frame).toString())).toEqual({
      'observation/image': { ndarray: '|u1', shape: [2, 2, 3], values: Array.from({ length: 12 }, (_, i) => 20 * i) },
      'observation/state': { ndarray: '<f8', shape: [2], values: [0.1, -2] },
      f4: { ndarray: '<f4', shape: [2, 1], values: [0.5, Math.fround(1e-3)] },
      i8: { ndarray: '<i8', shape: [1], values: [-5] },
      prompt: 'open the drawer',
    });
  });

  it('Node decodes what Python writes', () => {
    const v = unpackOpenpi(py(['sample'])) as Record<string, any>;
    expect(v.f4).toEqual(NdArray.float32(Float32Array.of(1.5, -2, 3.25), [1, 3]));
    expect(Array.from(v.f8.data)).toEqual([Math.PI, -Infinity, 1e-300]);
    expect(v.u1).toEqual(NdArray.uint8(Uint8Array.from({ length: 12 }, (_, i) => i), [2, 3, 2]));
    expect(v.i8).toEqual(new NdArray('<i8', [2], BigInt64Array.of(-(2n ** 40n), 7n)));
    expect(v.b1).toEqual(new NdArray('|b1', [3], Uint8Array.of(1, 0, 1)));
    expect(v.i2).toEqual(new NdArray('<i2', [2], Int16Array.of(-3, 300)));
    expect(v.empty.shape).toEqual([0, 3]);
    expect([v.scalar_f4, v.scalar_i8, v.scalar_bool]).toEqual([0.5, -9, true]);
    expect(v.nested).toEqual({ x: new NdArray('<i4', [2], Int32Array.of(1, 2)), s: 'text' });
    expect(Buffer.from(v.unaligned[0]).toString()).toBe('xyz');
    expect(v.unaligned[1]).toEqual(NdArray.float64(Float64Array.of(1.25, 2.5)));
  });
});

describe('json_numpy', () => {
  it('encodes as json_numpy does: base64 of the C-order bytes, dtype descr, shape', () => {
    expect(toJsonNumpy(NdArray.float64(Float64Array.of(1, -0.5)))).toEqual({
      __numpy__: Buffer.from(Float64Array.of(1, -0.5).buffer).toString('base64'), dtype: '<f8', shape: [2],
    });
  });

  it('decodes arrays anywhere in the document and scalars (empty shape) to plain values', () => {
    const img = Buffer.from(Uint8Array.from({ length: 12 }, (_, i) => i));
    const text = JSON.stringify({
      full_image: { __numpy__: img.toString('base64'), dtype: '|u1', shape: [2, 2, 3] },
      list: [{ __numpy__: Buffer.from(Float32Array.of(2).buffer).toString('base64'), dtype: '<f4', shape: [] }],
      instruction: 'x',
    });
    expect(parseJsonNumpy(text)).toEqual({
      full_image: NdArray.uint8(Uint8Array.from(img), [2, 2, 3]), list: [2], instruction: 'x',
    });
  });

  it('rejects malformed JSON and bad arrays', () => {
    expect(() => parseJsonNumpy('{')).toThrow(/malformed JSON/);
    expect(() => parseJsonNumpy('{"state": {"__numpy__": "AAAA", "dtype": "<f8", "shape": [1]}}')).toThrow(/state: shape \[1\] of <f8 needs 8 bytes, got 3/);
    expect(() => parseJsonNumpy('{"state": {"__numpy__": 1, "dtype": "<f8", "shape": [1]}}')).toThrow(/base64/);
    expect(() => parseJsonNumpy('{"__proto__": {"x": 1}}')).not.toThrow();
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });
});
