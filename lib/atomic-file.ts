/**
 * Writes a file whole or not at all, by the rule the native writer follows (native/io/atomic_file.cc): "<file>.tmp"
 * beside it, flushed to disk, renamed over the target, then the folder synced so the rename survives a power cut.
 * A failure on the way removes the temporary file. For the few lines of JSON and text TS writes; tensors are written
 * natively (random runs through the addon's saveSafetensors).
 */
import fs from 'node:fs';
import path from 'node:path';

export function writeFileAtomic(file: string, content: string | Uint8Array): void {
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, content);
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
