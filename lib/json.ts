/** Reading the JSON files of a run directory, with errors that name the file. */
import fs from 'node:fs';
import { ConfigError } from './errors.js';

export type Json = Record<string, unknown>;

/**
 * The bytes of a run-directory file, which must be a regular file (symlinks to one are followed): reading a FIFO or
 * a device planted in its place would block or never end. Opened non-blocking so that the check itself cannot hang.
 */
export function readRegularFile(file: string): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new ConfigError(`${file}: not a regular file`);
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** A JSON file holding an object (`null`, a list or a number at the top level is a ConfigError naming the file). */
export function readJson(file: string): Json {
  const text = readRegularFile(file).toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new ConfigError(`${file}: expected a JSON object, got ${value === null ? 'null' : Array.isArray(value) ? 'a list' : typeof value}`);
  return value as Json;
}
