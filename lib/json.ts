/** Reading the JSON files of a run directory, with errors that name the file. */
import fs from 'node:fs';
import { ConfigError } from './errors.js';

export type Json = Record<string, unknown>;

export function readJson(file: string): Json {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as Error).message})`, { cause: e });
  }
  try {
    return JSON.parse(text) as Json;
  } catch (e) {
    throw new ConfigError(`${file}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
}
