/**
 * `m2vla train --nproc N`: starts N training processes on this machine (lib/cli/rank.ts) with torchrun's
 * environment, rendezvous on loopback at a free port (or MASTER_PORT), and supervises them:
 *   - SIGINT / SIGTERM are passed on to every process (they stop together after a step and rank 0 saves a
 *     checkpoint); the processes have their own process group, so a terminal's Ctrl-C reaches them once, from here;
 *   - when one exits with an error (or is killed), the others are sent SIGTERM, then SIGKILL after `graceMs` (a
 *     process stuck in a collective also fails by itself after the c10d timeout);
 *   - a process whose launcher disappears exits (its IPC channel closes).
 * Resolves with the exit code: 0, the first failure's code (128 + signal number when killed by a signal), or
 * 130 / 143 when stopped by SIGINT / SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface LaunchOptions {
  nproc: number;
  /** `m2vla train` arguments for every process (without --nproc). */
  argv: string[];
  /** Torch threads per process when argv has no --threads: the machine's cores shared out. */
  threads?: number;
  /** Between SIGTERM and SIGKILL of the other processes after a failure. Default 5000. */
  graceMs?: number;
  log?: (line: string) => void;
}

/** A TCP port free on loopback now (the rendezvous binds it a moment later, as torchrun's --standalone does). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Node's own options of this process (e.g. --import tsx), without an -e / -p script. */
function nodeOptions(): string[] {
  const out: string[] = [];
  const args = process.execArgv;
  for (let i = 0; i < args.length; i++) {
    if (['-e', '--eval', '-p', '--print'].includes(args[i])) i++;
    else if (!/^--(eval|print)=/.test(args[i])) out.push(args[i]);
  }
  return out;
}

export async function launch(o: LaunchOptions): Promise<number> {
  const log = o.log ?? ((line: string) => console.error(line));
  const port = process.env.MASTER_PORT ?? String(await freePort());
  const here = fileURLToPath(import.meta.url);
  const entry = path.join(path.dirname(here), `rank${path.extname(here)}`);
  const shared = Math.max(1, Math.floor(os.availableParallelism() / o.nproc));
  const threads = o.argv.includes('--threads') ? [] : ['--threads', String(o.threads ?? shared)];
  const children: ChildProcess[] = [];
  for (let rank = 0; rank < o.nproc; rank++) {
    children.push(spawn(process.execPath, [...nodeOptions(), entry, ...o.argv, ...threads], {
      env: {
        ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(o.nproc),
        MASTER_ADDR: '127.0.0.1', MASTER_PORT: port,
      },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      detached: true,
    }));
  }
  log(`m2vla train: ${o.nproc} processes (pids ${children.map((c) => c.pid).join(', ')}), rendezvous at 127.0.0.1:${port}`);

  let failure: number | undefined, killer: NodeJS.Timeout | undefined;
  const running = new Set(children);
  const signalAll = (signal: NodeJS.Signals) => { for (const c of running) c.kill(signal); };
  const onSignal = (signal: NodeJS.Signals) => signalAll(signal);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const codes = await Promise.all(children.map((child, rank) => new Promise<number>((resolve) => {
    child.on('error', (e) => log(`m2vla train: rank ${rank}: ${e.message}`));
    child.on('exit', (code, signal) => {
      running.delete(child);
      const status = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
      if (status !== 0 && status !== 130 && status !== 143 && failure === undefined) {
        failure = status;
        log(`m2vla train: rank ${rank} exited with ${signal ?? `code ${code}`}; stopping the other processes`);
        signalAll('SIGTERM');
        killer = setTimeout(() => signalAll('SIGKILL'), o.graceMs ?? 5000);
        killer.unref();
      }
      resolve(status);
    });
  })));
  clearTimeout(killer);
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return failure ?? codes.find((c) => c !== 0) ?? 0;
}
