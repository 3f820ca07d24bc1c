/** lib/atomic-file.ts: a file is replaced whole or left as it was, with no temporary left behind. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFileAtomic } from '../lib/atomic-file.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-atomic-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('writeFileAtomic', () => {
  it('writes text and bytes, replacing the file', () => {
    const f = path.join(dir, 'a.json');
    writeFileAtomic(f, 'one');
    writeFileAtomic(f, new Uint8Array([0x74, 0x77, 0x6f]));
    expect(fs.readFileSync(f, 'utf8')).toBe('two');
    expect(fs.readdirSync(dir)).toEqual(['a.json']);
  });

  it('keeps the old file and removes the temporary one when writing fails', () => {
    const f = path.join(dir, 'b.json');
    writeFileAtomic(f, 'old');
    // content the write refuses, after the temporary file is open
    expect(() => writeFileAtomic(f, 42 as unknown as string)).toThrow(/"data" argument/);
    expect(fs.readFileSync(f, 'utf8')).toBe('old');
    expect(fs.existsSync(`${f}.tmp`)).toBe(false);
  });
});
