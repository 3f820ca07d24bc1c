/**
 * One libtorch job at a time: on a small machine, several AsyncWorkers each with a full torch thread pool starve
 * the event loop. Jobs wait here (in order) instead of in libuv's pool. Errors are converted to typed classes.
 */
import { toTypedError } from '../errors.js';

let tail: Promise<unknown> = Promise.resolve();
let pending = 0;

export function runTorchJob<T>(job: () => Promise<T>): Promise<T> {
  pending++;
  const run = tail.then(job).catch((e) => { throw toTypedError(e); }).finally(() => { pending--; });
  tail = run.catch(() => undefined);
  return run;
}

/** Jobs queued or running (for servers that apply backpressure). */
export function pendingTorchJobs(): number {
  return pending;
}
