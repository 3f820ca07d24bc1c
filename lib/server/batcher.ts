/**
 * Dynamic batching: requests from all clients wait in one bounded FIFO queue and run as one `policy.act([...])` call.
 * One batch runs at a time (torch jobs are serialized anyway); requests that arrive meanwhile form the next batch,
 * which starts as soon as the previous one finishes. An idle server waits up to `maxWaitMs` for company first.
 */
import { BusyError, InputError } from '../errors.js';
import type { Observation } from '../observation.js';
import type { ActOutput, Policy } from '../policy.js';

export interface BatcherOptions {
  /** Most observations per act() call (1 = no batching). */
  maxBatch: number;
  /** How long a request arriving at an idle server waits for others to batch with. */
  maxWaitMs: number;
  /** Most requests waiting (not counting the running batch); more are refused with BusyError. */
  maxQueue: number;
  /** Passed to every act() call (the server's prompt bound). */
  act?: { maxPromptTokens?: number };
}

export interface BatchResult {
  /** [chunk, actionDim] actions for this request, unnormalized. */
  actions: { data: Float32Array; shape: number[] };
  /** Wall time of the act() call that produced it, and the policy's own per-stage timing. */
  inferMs: number;
  policyTiming: ActOutput['timing'];
  queueMs: number;
  batchSize: number;
}

interface Request {
  obs: Observation;
  queuedAt: number;
  resolve(r: BatchResult): void;
  reject(e: unknown): void;
  /** Stops listening for the caller's abort (a connection's signal outlives its many requests). */
  unlisten(): void;
}

export class Batcher {
  private queue: Request[] = [];
  private running?: Promise<void>;
  /** Cancels the pending start (a timeout or an immediate: each needs its own clear function). */
  private cancelStart?: () => void;

  constructor(private readonly policy: Pick<Policy, 'act'>, private readonly options: BatcherOptions) {
    for (const k of ['maxBatch', 'maxQueue'] as const)
      if (!Number.isInteger(options[k]) || options[k] < 1) throw new InputError(`${k}: expected a positive integer, got ${options[k]}`);
    if (!(options.maxWaitMs >= 0)) throw new InputError(`maxWaitMs: expected >= 0, got ${options.maxWaitMs}`);
  }

  /** Requests waiting plus those in the running batch. */
  get pending(): number {
    return this.queue.length + (this.running ? 1 : 0);
  }

  /** Queues one observation. Rejects at once with BusyError when the queue is full; `signal` withdraws a waiting request. */
  submit(obs: Observation, signal?: AbortSignal): Promise<BatchResult> {
    if (this.queue.length >= this.options.maxQueue) {
      return Promise.reject(new BusyError(`server busy: ${this.queue.length} requests already queued ` +
        `(limit ${this.options.maxQueue}); retry later`));
    }
    return new Promise<BatchResult>((resolve, reject) => {
      const withdraw = () => {
        this.queue.splice(this.queue.indexOf(req), 1);
        reject(signal!.reason);
      };
      const req: Request = {
        obs, queuedAt: performance.now(), resolve, reject, unlisten: () => signal?.removeEventListener('abort', withdraw),
      };
      this.queue.push(req);
      signal?.addEventListener('abort', withdraw, { once: true });
      this.schedule();
    });
  }

  /** Resolves when nothing is queued or running. */
  async drain(): Promise<void> {
    while (this.running || this.queue.length) {
      if (!this.running) this.start();
      await this.running;
    }
  }

  private schedule(): void {
    if (this.running || (this.cancelStart && this.queue.length < this.options.maxBatch)) return;
    if (this.queue.length >= this.options.maxBatch) this.start();
    else if (this.options.maxWaitMs === 0) {
      // setImmediate runs after the pending I/O callbacks: frames that arrived together are batched together.
      const h = setImmediate(() => this.start());
      this.cancelStart = () => clearImmediate(h);
    } else {
      const h = setTimeout(() => this.start(), this.options.maxWaitMs);
      this.cancelStart = () => clearTimeout(h);
    }
  }

  private start(): void {
    this.cancelStart?.();
    this.cancelStart = undefined;
    if (this.running || !this.queue.length) return;
    const batch = this.queue.splice(0, this.options.maxBatch);
    for (const r of batch) r.unlisten();
    this.running = this.run(batch).finally(() => {
      this.running = undefined;
      // Whatever queued up meanwhile has waited long enough.
      if (this.queue.length) this.start();
    });
  }

  private async run(batch: Request[]): Promise<void> {
    const t0 = performance.now();
    try {
      const out = await this.policy.act(batch.map((r) => r.obs), this.options.act);
      const inferMs = performance.now() - t0;
      const [, chunk, dim] = out.actions.shape;
      batch.forEach((r, i) => r.resolve({
        actions: { data: out.actions.data.slice(i * chunk * dim, (i + 1) * chunk * dim), shape: [chunk, dim] },
        inferMs, policyTiming: out.timing, queueMs: t0 - r.queuedAt, batchSize: batch.length,
      }));
    } catch (e) {
      if (batch.length === 1) batch[0].reject(e);
      // One bad observation (an undecodable image, say) must fail only its own request: retry them one by one.
      else for (const r of batch) await this.run([r]);
    }
  }
}
