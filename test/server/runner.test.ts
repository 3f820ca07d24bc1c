/** PolicyRunner on the demo policy: chunk order, replan cadence, overlap alignment, ensembling, late/stale reports. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demoRunDir, InputError, loadPolicy, StaleError, type Observation, type Policy } from '../../lib/index.js';
import { PolicyRunner, type RunnerEvent } from '../../lib/runner.js';
import { GatedPolicy, maxAbsDiff } from './helpers.js';

const H = 8, D = 7;
let policy: Policy;
beforeAll(async () => { policy = await loadPolicy(await demoRunDir()); });
afterAll(() => policy?.dispose());

/** The observation given at tick k: distinct images and state per tick, so each chunk shows which one it used. */
function obs(k: number): Observation {
  const img = (o: number) => ({ data: Uint8Array.from({ length: 56 * 56 * 3 }, (_, i) => (i * (k + 3) + o) % 256), width: 56, height: 56 });
  return { images: { primary: img(0), wrist: img(50) }, instruction: 'stack the blocks', state: Array.from({ length: 8 }, (_, i) => 0.02 * k - 0.1 * i) };
}

const chunks = new Map<number, Float32Array>();
/** The chunk act() gives for the observation of tick k. */
async function chunkFor(k: number): Promise<Float32Array> {
  if (!chunks.has(k)) chunks.set(k, (await policy.act(obs(k))).actions.data);
  return chunks.get(k)!;
}
async function actionOf(k: number, index: number): Promise<Float32Array> {
  return (await chunkFor(k)).slice(index * D, (index + 1) * D);
}

/** A hand-driven clock: ticks advance it by one period unless told otherwise. */
function manualClock() {
  let now = 0;
  return { clock: () => now, advance: (ms: number) => { now += ms; } };
}

describe('PolicyRunner', () => {
  it('without overlap: executes replanSteps actions of each chunk in order, then replans on the current observation', async () => {
    let calls = 0;
    const counting = { metadata: policy.metadata, act: (o: Observation) => { calls++; return policy.act(o); } } as Pick<Policy, 'act' | 'metadata'>;
    const runner = new PolicyRunner(counting, { hz: 10, overlap: false });
    for (let t = 0; t < 12; t++) {
      const step = await runner.tick(obs(t));
      const start = t - (t % 5);
      expect(step).toMatchObject({ tick: t, chunk: start / 5, index: t % 5, stale: false });
      expect(maxAbsDiff(step.action, await actionOf(start, t % 5))).toBe(0);
    }
    expect(calls).toBe(3);
    runner.reset();
    const fresh = await runner.tick(obs(12));
    expect(fresh).toMatchObject({ tick: 12, index: 0 });
    expect(maxAbsDiff(fresh.action, await actionOf(12, 0))).toBe(0);
  });

  it('with overlap: infers the next chunk early on the latest observation and skips the actions executed meanwhile', async () => {
    const gated = new GatedPolicy(policy);
    const { clock, advance } = manualClock();
    const events: RunnerEvent[] = [];
    const runner = new PolicyRunner(gated, { hz: 10, replanSteps: 5, marginMs: 0, clock, onEvent: (e) => events.push(e) });
    // Each tick is called 100 ms after the previous one; an inference lands when the test releases it.
    const land = async (i: number) => {
      gated.calls[i].release();
      await gated.calls[i].done;
    };
    const tick = async (t: number, expected: [obsTick: number, index: number] | 'stale') => {
      const step = await runner.tick(obs(t));
      advance(100);
      expect(step.stale, `tick ${t} stale`).toBe(expected === 'stale');
      if (expected !== 'stale')
        expect(maxAbsDiff(step.action, await actionOf(...expected)), `tick ${t}: chunk of obs ${expected}`).toBe(0);
      return step;
    };

    // Tick 0 waits for the first chunk. It took 250 ms, so the next inference starts ceil(250 / 100) = 3 ticks early.
    const first = runner.tick(obs(0));
    await new Promise((r) => setImmediate(r));
    advance(250);
    await land(0);
    expect(maxAbsDiff((await first).action, await actionOf(0, 0))).toBe(0);
    advance(100);
    expect(runner.stats().leadTicks).toBe(3);
    await tick(1, [0, 1]);
    expect(gated.calls).toHaveLength(1);
    await tick(2, [0, 2]); // the next chunk is due at tick 5: inference starts now, on tick 2's observation
    expect(gated.calls).toHaveLength(2);
    expect(gated.calls[1].obs).toEqual(obs(2));
    await tick(3, [0, 3]);
    await land(1); // 200 ms
    await tick(4, [0, 4]);
    await tick(5, [2, 3]); // switched in at index 3: its actions 0-2 were for ticks 2-4, already executed
    await tick(6, [2, 4]);
    await tick(7, [2, 5]); // due at tick 10, lead 3: inference starts on tick 7's observation
    expect(gated.calls[2].obs).toEqual(obs(7));
    await tick(8, [2, 6]);
    await tick(9, [2, 7]);
    const held = await tick(10, 'stale'); // late: nothing covers tick 10, the last action is held and flagged
    expect(maxAbsDiff(held.action, await actionOf(2, 7))).toBe(0);
    await land(2); // 400 ms: lead 4
    await tick(11, [7, 4]); // the late chunk takes over, aligned in time; its successor (due 15) starts at once
    expect(gated.calls[3].obs).toEqual(obs(11));
    for (let t = 12; t < 15; t++) await tick(t, [7, t - 7]);
    for (let t = 15; t < 19; t++) await tick(t, 'stale');
    await land(3); // 800 ms, after its last tick (18): dropped at tick 19, and a new inference starts at once
    await tick(19, 'stale');
    expect(gated.calls[4].obs).toEqual(obs(19));
    await land(4);
    await tick(20, [19, 1]); // lead 8 now exceeds replanSteps: the next inference starts as soon as a chunk is switched in
    expect(gated.calls[5].obs).toEqual(obs(20));
    await land(5);

    expect(events.flatMap((e) => e.type === 'chunk' ? [[e.chunk, e.skipped, e.late]] : []))
      .toEqual([[0, 0, false], [1, 3, false], [2, 4, true], [4, 1, true]]);
    expect(events.filter((e) => e.type === 'dropped-chunk')).toEqual([{ type: 'dropped-chunk', chunk: 3, tick: 19, latencyMs: 800 }]);
    expect(events.filter((e) => e.type === 'stale').map((e) => e.tick)).toEqual([10, 15, 16, 17, 18, 19]);
    const s = runner.stats();
    expect(s).toMatchObject({ ticks: 21, staleTicks: 6, chunks: 6, lateChunks: 2, droppedChunks: 1, leadTicks: 8, lateTicks: 0 });
    expect(s.hz).toBeCloseTo(10, 9);
    expect(s.inferenceMs.max).toBe(800);
  });

  it("reports ticks called late, and throws StaleError when onEmpty is 'throw'", async () => {
    const gated = new GatedPolicy(policy);
    const { clock, advance } = manualClock();
    const events: RunnerEvent[] = [];
    const runner = new PolicyRunner(gated, { hz: 10, replanSteps: 8, onEmpty: 'throw', clock, onEvent: (e) => events.push(e) });
    const first = runner.tick(obs(0));
    await new Promise((r) => setImmediate(r));
    gated.calls[0].release();
    await first;
    for (let t = 1; t < 8; t++) {
      advance(t === 3 ? 180 : 100);
      await runner.tick(obs(t));
    }
    expect(events.filter((e) => e.type === 'late-tick')).toEqual([{ type: 'late-tick', tick: 3, intervalMs: 180 }]);
    advance(100);
    // The next chunk (started one tick ahead, on tick 7's observation) has not landed.
    expect(gated.calls[1].obs).toEqual(obs(7));
    await expect(runner.tick(obs(8))).rejects.toThrow(StaleError);
    expect(runner.stats()).toMatchObject({ lateTicks: 1, staleTicks: 1 });
    gated.calls[1].release();
    await gated.calls[1].done;
    advance(100);
    const step = await runner.tick(obs(9));
    expect(step).toMatchObject({ stale: false, index: 2 });
    expect(maxAbsDiff(step.action, await actionOf(7, 2))).toBe(0);
  });

  it('ensembles overlapping chunks with weights exp(-m·i), i = 0 the oldest', async () => {
    const m = 0.5;
    const runner = new PolicyRunner(policy, { hz: 10, replanSteps: 2, overlap: false, ensemble: m });
    for (let t = 0; t < 12; t++) {
      const step = await runner.tick(obs(t));
      // Chunks were inferred at every even tick; those from the last 8 ticks cover tick t.
      const starts = [];
      for (let s = t - (t % 2); s > t - H && s >= 0; s -= 2) starts.unshift(s);
      const expected = new Float64Array(D);
      let total = 0;
      for (const [i, s] of starts.entries()) {
        const w = Math.exp(-m * i), a = await actionOf(s, t - s);
        total += w;
        for (let j = 0; j < D; j++) expected[j] += w * a[j];
      }
      expect(maxAbsDiff(step.action, expected.map((x) => x / total)), `tick ${t}`).toBeLessThan(1e-7);
    }
  });

  it('rejects bad options and overlapping tick() calls', async () => {
    expect(() => new PolicyRunner(policy, { hz: 0 })).toThrow(InputError);
    expect(() => new PolicyRunner(policy, { hz: 10, replanSteps: 9 })).toThrow(/1\.\.8/);
    const runner = new PolicyRunner(policy, { hz: 10 });
    const first = runner.tick(obs(0));
    await expect(runner.tick(obs(1))).rejects.toThrow(/previous tick/);
    await first;
  });
});
