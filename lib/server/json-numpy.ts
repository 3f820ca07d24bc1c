/**
 * json_numpy's format (the `json_numpy` package VLA-Adapter's deploy.py patches into `json`): an array or numpy
 * scalar is `{"__numpy__": <base64 of the C-order bytes>, "dtype": <descr, e.g. "<f8">, "shape": [..]}`; an empty
 * shape means a scalar.
 */
import { InputError } from '../errors.js';
import { fromBytes, NdArray, parseDtype, parseShape } from './ndarray.js';

export function toJsonNumpy(a: NdArray): { __numpy__: string; dtype: string; shape: number[] } {
  return { __numpy__: a.bytes().toString('base64'), dtype: a.dtype, shape: a.shape };
}

/** `JSON.parse` with json_numpy objects turned into NdArray (scalars into numbers/booleans/bigints). */
export function parseJsonNumpy(text: string): unknown {
  try {
    // A reviver sees values bottom-up and stores its results as own data properties (no '__proto__' setter).
    return JSON.parse(text, (key, v) => {
      if (!v || typeof v !== 'object' || !('__numpy__' in v)) return v;
      const where = key || 'body';
      if (typeof v.__numpy__ !== 'string') throw new InputError(`${where}: __numpy__ must be a base64 string`);
      const shape = parseShape(v.shape, where);
      const a = fromBytes(parseDtype(v.dtype, where), shape, Buffer.from(v.__numpy__, 'base64'), where);
      return shape.length ? a : a.dtype === '|b1' ? a.data[0] !== 0 : a.data[0];
    });
  } catch (e) {
    if (e instanceof SyntaxError) throw new InputError(`malformed JSON (${e.message})`, { cause: e });
    throw e;
  }
}
