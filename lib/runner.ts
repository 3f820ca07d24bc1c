/**
 * PolicyRunner: turns a chunking policy (one inference → `chunk` future actions) into one action per control tick.
 *
 * Time is counted in ticks (one `tick()` call = one executed action). A chunk inferred from the observation given at
 * tick `s` holds the actions for ticks s, s+1, …, s+chunk-1. A chunk is switched in `replanSteps` ticks after the
 * previous one was (openpi's LIBERO client executes 5 of 8); with `overlap` (default) its inference starts early enough
 * to land by then, so the robot never waits: the actions executed while it ran are skipped, keeping it aligned in
 * time. If a chunk lands late the current one keeps going; only when every planned action has been used up is a tick
 * stale, which is reported (and either holds the last action or throws), never hidden.
 */
import { formatShape, InputError, NonFiniteError, StaleError } from './errors.js';
import type { Observation } from './observation.js';
import type { Policy } from './policy.js';
import { checkOptions, optionKeys } from './options.js';

/** A Policy, or a wrapper with the same act() and metadata. */
export type ChunkPolicy = Pick<Policy, 'act' | 'metadata'>;

export interface RunnerOptions {
  /** Control rate the loop calls tick() at. */
  hz: number;
  /** Actions executed from a chunk before the next one takes over (default 5). */
  replanSteps?: number;
  /** Infer the next chunk while the current one executes (default true). false: tick() blocks at each replan. */
  overlap?: boolean;
  /**
   * ACT temporal ensembling: each action is the weighted mean of every switched-in chunk's prediction for that tick,
   * weights exp(-m·i) with i = 0 the oldest prediction (m > 0 favours older ones, as in ACT). Number = m; off by default.
   */
  ensemble?: number | false;
  /** When no planned action covers a tick: repeat the last action flagged `stale` (default), or throw StaleError. */
  onEmpty?: 'hold-last' | 'throw';
  /** Slack added to the slowest recent inference when deciding how early to start the next one (default one tick). */
  marginMs?: number;
  /** Milliseconds clock (default performance.now); tests drive it by hand. */
  clock?: () => number;
  onEvent?: (event: RunnerEvent) => void;
}

export type RunnerEvent =
  /** tick() was called more than 1.5 periods after the previous call. */
  | { type: 'late-tick'; tick: number; intervalMs: number }
  /** No planned action covered this tick. */
  | { type: 'stale'; tick: number }
  /** A chunk was switched in; `skipped` actions were already executed while it was inferred; `late`: after it was due. */
  | { type: 'chunk'; chunk: number; tick: number; skipped: number; latencyMs: number; late: boolean }
  /** A chunk landed after all of its actions' ticks had passed: unusable. */
  | { type: 'dropped-chunk'; chunk: number; tick: number; latencyMs: number }
  /**
   * An inference produced NaN/Inf actions (NonFiniteError): the chunk is discarded and the next inference starts;
   * meanwhile the planned actions, then the last action (`stale: true`), keep the robot where it is.
   */
  | { type: 'non-finite'; chunk: number; tick: number; error: NonFiniteError };

export interface Step {
  /** actionDim values (a copy). */
  action: Float32Array;
  tick: number;
  /** Sequence number of the chunk the action came from (the newest one when ensembling), and the index within it. */
  chunk: number;
  index: number;
  /** true: nothing was planned for this tick; `action` repeats the previous one. */
  stale: boolean;
}

export interface RunnerStats {
  ticks: number;
  lateTicks: number;
  staleTicks: number;
  chunks: number;
  lateChunks: number;
  droppedChunks: number;
  /** Inferences whose actions were not finite (discarded). */
  nonFiniteChunks: number;
  /** Achieved control rate over all ticks so far (after the first). */
  hz: number;
  inferenceMs: { last: number; mean: number; max: number };
  /** Ticks before a chunk is due at which the next inference starts. */
  leadTicks: number;
}

interface Chunk { id: number; start: number; actions: Float32Array; latencyMs: number; switchedAt: number }

const RECENT = 5;

const RUNNER_KEYS = optionKeys<RunnerOptions>({
  hz: true, replanSteps: true, overlap: true, ensemble: true, onEmpty: true, marginMs: true, clock: true, onEvent: true,
});

export class PolicyRunner {
  private readonly horizon: number;
  private readonly dim: number;
  private readonly period: number;
  private readonly replan: number;
  private readonly clock: () => number;
  // Switched-in chunks still covering some tick, oldest first; the last is the current one.
  private active: Chunk[] = [];
  private landed?: Chunk;
  private inflight?: Promise<void>;
  private failure?: { error: unknown };
  private epoch = 0;
  private seq = 0;
  private next = 0;
  private busy = false;
  private lastAction?: Float32Array;
  private lastCall?: number;
  private firstCall?: number;
  private latencies: number[] = [];
  private counts = { lateTicks: 0, staleTicks: 0, chunks: 0, lateChunks: 0, droppedChunks: 0, nonFiniteChunks: 0, latencySum: 0 };

  constructor(private readonly policy: ChunkPolicy, private readonly options: RunnerOptions) {
    checkOptions(options, RUNNER_KEYS, 'PolicyRunner');
    const { hz, replanSteps = 5, ensemble = false, marginMs } = options;
    this.horizon = policy.metadata.chunk;
    this.dim = policy.metadata.actionDim;
    if (!(hz > 0)) throw new InputError(`hz: expected a positive rate, got ${hz}`);
    if (!Number.isInteger(replanSteps) || replanSteps < 1 || replanSteps > this.horizon)
      throw new InputError(`replanSteps: expected an integer in 1..${this.horizon} (the chunk length), got ${replanSteps}`);
    if (ensemble !== false && !Number.isFinite(ensemble)) throw new InputError(`ensemble: expected a number or false, got ${ensemble}`);
    if (marginMs !== undefined && !(marginMs >= 0)) throw new InputError(`marginMs: expected >= 0, got ${marginMs}`);
    this.period = 1000 / hz;
    this.replan = replanSteps;
    this.clock = options.clock ?? (() => performance.now());
  }

  /**
   * The action for this tick, given the newest observation. Awaits inference only on the first tick (and, without
   * overlap, at each replan); otherwise it resolves at once. Calls must not overlap. An inference that failed in the
   * background rejects the next tick (the one after retries).
   */
  async tick(obs: Observation): Promise<Step> {
    if (this.busy) throw new InputError('tick(): the previous tick has not resolved yet');
    this.busy = true;
    try {
      const t = this.next++;
      this.noteCall(t);
      this.rethrowFailure();
      const current = this.active.at(-1);
      if (!current || (this.options.overlap === false && t >= this.dueTick(current))) {
        if (!this.inflight && !this.landed) this.infer(obs, t);
        await this.inflight;
        this.rethrowFailure();
        // Waiting for the first chunk is not the loop's lateness: measure the next interval from here.
        if (!current) {
          this.lastCall = this.clock();
          if (t === 0) this.firstCall = this.lastCall;
        }
      }
      this.switchIn(t);
      // Before step(): a stale tick that throws must still get the next inference going.
      if (this.options.overlap !== false && !this.inflight && !this.landed && t >= this.dueTick(this.active.at(-1)!) - this.leadTicks())
        this.infer(obs, t);
      return this.step(t);
    } finally {
      this.busy = false;
    }
  }

  private rethrowFailure(): void {
    if (!this.failure) return;
    const { error } = this.failure;
    this.failure = undefined;
    throw error;
  }

  /** Forget all chunks (a new episode); an inference in flight is discarded when it lands. */
  reset(): void {
    if (this.busy) throw new InputError('reset(): a tick is in progress');
    this.epoch++;
    this.active = [];
    this.landed = this.inflight = this.failure = this.lastAction = undefined;
  }

  stats(): RunnerStats {
    const { latencySum, ...counts } = this.counts;
    const span = (this.lastCall ?? 0) - (this.firstCall ?? 0);
    return {
      ticks: this.next, ...counts,
      hz: span > 0 ? ((this.next - 1) * 1000) / span : 0,
      inferenceMs: {
        last: this.latencies.at(-1) ?? 0, mean: counts.chunks ? latencySum / counts.chunks : 0,
        max: Math.max(0, ...this.latencies),
      },
      leadTicks: this.leadTicks(),
    };
  }

  /** The tick by which the chunk after `c` must take over: after replanSteps, or earlier if `c` runs out. */
  private dueTick(c: Chunk): number {
    return Math.min(c.switchedAt + this.replan, c.start + this.horizon);
  }

  /** How many ticks before a chunk is due its inference must start: slowest recent latency plus margin, >= 1. */
  private leadTicks(): number {
    const slowest = Math.max(0, ...this.latencies);
    return Math.max(1, Math.ceil((slowest + (this.options.marginMs ?? this.period)) / this.period));
  }

  private noteCall(t: number): void {
    const now = this.clock();
    if (this.lastCall !== undefined && now - this.lastCall > 1.5 * this.period) {
      this.counts.lateTicks++;
      this.options.onEvent?.({ type: 'late-tick', tick: t, intervalMs: now - this.lastCall });
    }
    this.lastCall = now;
    this.firstCall ??= now;
  }

  private infer(obs: Observation, t: number): void {
    const epoch = this.epoch, id = this.seq++, t0 = this.clock();
    this.inflight = this.policy.act(obs).then((out) => {
      if (epoch !== this.epoch) return;
      const { data, shape } = out.actions;
      if (shape.length !== 2 || shape[0] !== this.horizon || shape[1] !== this.dim)
        throw new InputError(`policy returned actions of shape ${formatShape(shape)}, expected ${formatShape([this.horizon, this.dim])}`);
      // A wrapper policy may not check: the runner never lets a NaN through either.
      if (!data.every(Number.isFinite)) throw new NonFiniteError(`chunk ${id}: the policy returned NaN/Inf actions`, { observations: [0] });
      const latencyMs = this.clock() - t0;
      this.latencies = [...this.latencies.slice(1 - RECENT), latencyMs];
      this.counts.chunks++;
      this.counts.latencySum += latencyMs;
      this.landed = { id, start: t, actions: data, latencyMs, switchedAt: -1 };
    }).catch((error) => {
      if (epoch !== this.epoch) return;
      // With an action to hold, a non-finite chunk is reported and skipped; the first chunk has none: it fails.
      if (error instanceof NonFiniteError && this.lastAction) {
        this.counts.nonFiniteChunks++;
        this.options.onEvent?.({ type: 'non-finite', chunk: id, tick: t, error });
      } else this.failure = { error };
    }).finally(() => {
      if (epoch === this.epoch) this.inflight = undefined;
    });
  }

  private switchIn(t: number): void {
    const c = this.landed, current = this.active.at(-1);
    if (c && t - c.start >= this.horizon) {
      this.landed = undefined;
      this.counts.droppedChunks++;
      this.options.onEvent?.({ type: 'dropped-chunk', chunk: c.id, tick: t, latencyMs: c.latencyMs });
    } else if (c && (!current || t >= this.dueTick(current))) {
      this.landed = undefined;
      const late = current !== undefined && t > this.dueTick(current);
      if (late) this.counts.lateChunks++;
      c.switchedAt = t;
      this.active.push(c);
      this.options.onEvent?.({ type: 'chunk', chunk: c.id, tick: t, skipped: t - c.start, latencyMs: c.latencyMs, late });
    }
    // Keep the chunks that still cover this tick, and always the current one (its last action is held when stale).
    this.active = this.active.filter((x, i, all) => t - x.start < this.horizon || i === all.length - 1);
  }

  private step(t: number): Step {
    const live = this.active.filter((c) => t - c.start < this.horizon);
    const newest = live.at(-1);
    if (!newest) {
      this.counts.staleTicks++;
      this.options.onEvent?.({ type: 'stale', tick: t });
      const last = this.active.at(-1)!;
      if (this.options.onEmpty === 'throw')
        throw new StaleError(`tick ${t}: no planned action (chunk ${last.id} ran out at tick ${last.start + this.horizon - 1}, ` +
          `next chunk ${this.inflight ? 'still being inferred' : 'not started'})`);
      return { action: this.lastAction!.slice(), tick: t, chunk: last.id, index: this.horizon - 1, stale: true };
    }
    const { ensemble = false } = this.options;
    const row = (c: Chunk) => c.actions.subarray((t - c.start) * this.dim, (t - c.start + 1) * this.dim);
    let action: Float32Array;
    if (ensemble === false) action = row(newest).slice();
    else {
      const sum = new Float64Array(this.dim);
      let total = 0;
      live.forEach((c, i) => {
        const w = Math.exp(-ensemble * i), a = row(c);
        total += w;
        for (let j = 0; j < this.dim; j++) sum[j] += w * a[j];
      });
      action = Float32Array.from(sum, (x) => x / total);
    }
    this.lastAction = action;
    return { action: action.slice(), tick: t, chunk: newest.id, index: t - newest.start, stale: false };
  }
}
