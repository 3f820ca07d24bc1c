/** A local Hugging Face Hub for tests: test/helpers/hub-server.mjs as a child process, and the requests it saw. */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SERVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'hub-server.mjs');

export interface Hub { endpoint: string; requests: Array<{ method: string; url: string; range: string | null }>; stop(): Promise<void> }
const running: ChildProcess[] = [];

/** Starts test/helpers/hub-server.mjs with `env` (HUB_REPO, HUB_FOLDERS, ...); resolves once it listens. */
export async function startHub(env: Record<string, string>): Promise<Hub> {
  const child = spawn(process.execPath, [SERVER], {
    env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'],
  });
  running.push(child);
  const requests: Hub['requests'] = [];
  let buffer = '';
  const port = await new Promise<number>((resolve, reject) => {
    child.on('exit', (code) => reject(new Error(`hub server exited with ${code}`)));
    child.stdout!.on('data', (chunk) => {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        const m = /^listening (\d+)$/.exec(line);
        if (m) resolve(Number(m[1]));
        else if (line.startsWith('{')) requests.push(JSON.parse(line));
      }
    });
  });
  const stop = () => new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
  return { endpoint: `http://127.0.0.1:${port}`, requests, stop };
}


/** Kills every server startHub started (for afterEach). */
export function stopHubs(): void {
  for (const c of running.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
}
