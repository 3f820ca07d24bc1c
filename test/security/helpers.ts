/** Damaged copies of the demo run directory, for the security tests: each test edits one file of its own copy. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { demoRunDir } from '../../lib/index.js';

export const IMAGE = { data: new Uint8Array(56 * 56 * 3).fill(100), width: 56, height: 56 };
export const observation = (instruction = 'pick up the bowl') =>
  ({ images: { primary: IMAGE, wrist: IMAGE }, instruction, state: Array(8).fill(0.1) });

const DEMO = await demoRunDir();

/** A fresh copy of the demo model's run directory. */
export function runCopy(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-security-'));
  fs.cpSync(DEMO, dir, { recursive: true });
  return dir;
}

/** Rewrites a JSON file of `dir` with `edit` (which may mutate the value or return a replacement). */
export function editJson(dir: string, file: string, edit: (json: any) => unknown): void {
  const p = path.join(dir, file);
  const json = JSON.parse(fs.readFileSync(p, 'utf8'));
  const out = edit(json);
  fs.writeFileSync(p, JSON.stringify(out === undefined ? json : out));
}

/** The header of a safetensors file and where its data section starts. */
export function safetensorsHeader(file: string): { header: Record<string, any>; dataStart: number } {
  const buf = fs.readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return { header: JSON.parse(buf.subarray(8, 8 + n).toString()), dataStart: 8 + n };
}

/** Overwrites the float32 values of tensor `name` in a safetensors file in place. */
export function patchFloat32(file: string, name: string, edit: (v: Float32Array) => void): void {
  const { header, dataStart } = safetensorsHeader(file);
  const [begin, end] = header[name].data_offsets as [number, number];
  const buf = fs.readFileSync(file);
  const v = new Float32Array(buf.buffer.slice(buf.byteOffset + dataStart + begin, buf.byteOffset + dataStart + end));
  edit(v);
  Buffer.from(v.buffer).copy(buf, dataStart + begin);
  fs.writeFileSync(file, buf);
}

/** Rewrites the safetensors header of `file` (same length, padded with spaces), keeping the data. */
export function rewriteHeader(file: string, edit: (h: Record<string, any>) => void): void {
  const { header, dataStart } = safetensorsHeader(file);
  edit(header);
  const buf = fs.readFileSync(file);
  const json = JSON.stringify(header);
  if (json.length > dataStart - 8) throw new Error('edited header is longer than the original');
  Buffer.from(json.padEnd(dataStart - 8, ' ')).copy(buf, 8);
  fs.writeFileSync(file, buf);
}
