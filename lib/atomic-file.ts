/**
 * Writes a file whole or not at all, by the rule the native writer follows (native/io/atomic_file.cc): "<file>.tmp"
 * beside it, flushed to disk, renamed over the target, then the folder synced so the rename survives a power cut.
 * A failure on the way removes the temporary file. The native class is not exposed instead: TS callers stream
 * gigabytes of generated weights (lib/random-run.ts) or write a few lines, neither of which should cross N-API.
 */
import fs from 'node:fs';
import path from 'node:path';

export function writeFileAtomic(file: string, content: string | Uint8Array | ((fd: number) => void)): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    if (typeof content === 'function') content(fd);
    else fs.writeFileSync(fd, content);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  fs.renameSync(tmp, file);
  const dir = fs.openSync(path.dirname(file), 'r');
  try {
    fs.fsyncSync(dir);
  } finally {
    fs.closeSync(dir);
  }
}
