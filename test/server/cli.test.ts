/** `m2vla serve` as a process: serves the demo model, and SIGTERM closes connections with 1001 and exits 0. */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { NdArray } from '../../lib/server/ndarray.js';
import { liberoObservation, OpenpiClient } from './helpers.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('m2vla serve', () => {
  it('serves the demo model without --run; SIGTERM closes sockets with 1001 and exits 0', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', '-e',
      "import('./lib/cli/main.ts').then((m) => m.main(process.argv.slice(1)))", 'serve', '--port', '0', '--max-batch', '4'],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stderr.on('data', (b) => { out += b; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
    try {
      const port = await new Promise<number>((resolve, reject) => {
        child.stdout.on('data', (b) => {
          out += b;
          const m = /on ws:\/\/127\.0\.0\.1:(\d+)/.exec(out);
          if (m) resolve(Number(m[1]));
        });
        void exited.then(() => reject(new Error(`exited before listening:\n${out}`)));
      });
      expect(out).toContain('demo model (random weights)');
      const c = await OpenpiClient.connect(`ws://127.0.0.1:${port}`);
      expect(await c.metadata).toMatchObject({ chunk: 8, actionDim: 7, proprioDim: 8, numImages: 2 });
      const reply = await c.infer(liberoObservation(0));
      expect((reply.actions as NdArray).shape).toEqual([8, 7]);
      child.kill('SIGTERM');
      expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
      expect(await exited).toBe(0);
      expect(out).toMatch(/SIGTERM: finishing requests in flight[\s\S]*closed/);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
