/** Child processes of the evaluation: `m2vla` commands (run from the TypeScript sources with tsx) and the Python side. */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { EVAL_DIR, PYTHON, pythonEnv } from './python.js';

const ROOT = path.resolve(EVAL_DIR, '..');
const CLI = `import(${JSON.stringify(path.join(ROOT, 'lib', 'cli', 'main.ts'))}).then((m) => m.main(process.argv.slice(1)))`;

export function log(line: string) {
  console.log(`[eval ${new Date().toISOString().slice(11, 19)}] ${line}`);
}

/** Runs a command to completion, its output appended to `logFile`; rejects with the log's tail on failure. */
export function run(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const out = fs.openSync(logFile, 'a');
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', out, out] });
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      fs.closeSync(out);
      if (code === 0) return resolve();
      const tail = fs.readFileSync(logFile, 'utf8').split('\n').slice(-15).join('\n');
      reject(new Error(`${path.basename(cmd)} ${args.slice(0, 4).join(' ')} ... exited with ${code ?? signal} (${logFile}):\n${tail}`));
    });
  });
}

export const m2vla = (args: string[], logFile: string) => run(process.execPath, ['--import', 'tsx', '-e', CLI, ...args], logFile);
export const python = (script: string, args: string[], logFile: string) =>
  run(PYTHON, [path.join(EVAL_DIR, script), ...args], logFile, pythonEnv());

/**
 * `m2vla serve [--run dir] --port 0 --threads N [serveArgs]` (the embedded demo model without a run) until `body`
 * settles; the port is read from its first line.
 */
export async function withServer<T>(runDir: string | undefined, logFile: string, body: (url: string) => Promise<T>,
  serveArgs: string[] = [], threads = 2): Promise<T> {
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', CLI, 'serve', ...(runDir ? ['--run', runDir] : []), '--port', '0',
    '--threads', String(threads), ...serveArgs],
    { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const onData = (b: Buffer) => {
        text += b;
        fs.appendFileSync(logFile, b);
        const m = /on ws:\/\/[\d.]+:(\d+)/.exec(text);
        if (m) resolve(Number(m[1]));
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      void exited.then((code) => reject(new Error(`m2vla serve exited (${code}) before listening:\n${text.slice(-2000)}`)));
    });
    return await body(`ws://127.0.0.1:${port}`);
  } finally {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await exited;
    }
  }
}
