/** Single video frames decoded with the `ffmpeg` command-line tool (no native video library to build or bundle). */
import { spawn } from 'node:child_process';
import { InputError, ShapeError } from '../errors.js';
import type { RawImage } from '../images.js';

const available = new Map<string, Promise<boolean>>();

/** Whether `ffmpeg -version` runs (cached per command). */
export function ffmpegAvailable(ffmpeg = 'ffmpeg'): Promise<boolean> {
  let p = available.get(ffmpeg);
  if (!p) {
    p = new Promise((resolve) => {
      const child = spawn(ffmpeg, ['-version'], { stdio: 'ignore' });
      child.on('error', () => resolve(false));
      child.on('close', (code) => resolve(code === 0));
    });
    available.set(ffmpeg, p);
  }
  return p;
}

/**
 * The frame of `file` shown at `seconds` as RGB bytes. ffmpeg seeks to the keyframe before and decodes forward,
 * dropping frames earlier than the requested time; asking for half a frame early makes the frame whose timestamp is
 * `seconds` the first one kept even when `seconds` carries float rounding (LeRobot's timestamps are float32).
 */
export function decodeVideoFrame(ffmpeg: string, file: string, seconds: number, fps: number, width: number,
  height: number): Promise<RawImage> {
  const start = Math.max(0, seconds - 0.5 / fps);
  const args = ['-v', 'error', '-nostdin', '-ss', start.toFixed(6), '-i', file, '-frames:v', '1',
    '-f', 'rawvideo', '-pix_fmt', 'rgb24', 'pipe:1'];
  const where = `${file} at ${seconds.toFixed(3)} s`;
  return new Promise((resolve, reject) => {
    const data = new Uint8Array(width * height * 3);
    let filled = 0, overflow = false;
    const stderr: Buffer[] = [];
    const child = spawn(ffmpeg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (chunk: Buffer) => {
      // the pipe's chunks land in the frame buffer directly: the one copy of the frame
      if (filled + chunk.length > data.length) overflow = true;
      else data.set(chunk, filled);
      filled += chunk.length;
    });
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', (e) => reject(new InputError(`${where}: cannot run ${ffmpeg} (${e.message})`, { cause: e })));
    child.on('close', (code) => {
      const message = Buffer.concat(stderr).toString().trim();
      if (code !== 0) reject(new InputError(`${where}: ffmpeg failed (${message || `exit code ${code}`})`));
      else if (filled === 0) reject(new InputError(`${where}: no frame (past the end of the video?) ${message}`));
      else if (overflow || filled !== data.length)
        reject(new ShapeError(`${where}: decoded ${filled} bytes, expected ${width}x${height}x3 = ${data.length} ` +
          `(the video's size differs from meta/info.json)`));
      else resolve({ data, width, height });
    });
  });
}
