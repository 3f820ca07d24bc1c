/**
 * A PolicyRunner driving a simulated robot: a point-mass end effector integrating the 7-D actions (LIBERO's
 * convention: xyz delta, axis-angle delta, gripper), rendered into two 224x224 camera images every tick.
 *
 *   node --import tsx examples/control-loop.ts [--hz 20] [--seconds 5] [--replan 5] [--ensemble 0.01] [--no-overlap]
 *                                              [--extra-latency-ms 0] [--run <dir>]
 *
 * Without --run it uses the demo model (random weights: the motion is meaningless, the timing is not).
 * --extra-latency-ms stretches each inference (as a full-size model on a CPU would) to show the overlap at work.
 */
import { parseArgs } from 'node:util';
import { demoRunDir, loadPolicy, PolicyRunner, type Observation, type Policy, type RunnerEvent } from '../lib/index.js';

const { values } = parseArgs({
  options: {
    hz: { type: 'string', default: '20' }, seconds: { type: 'string', default: '5' }, replan: { type: 'string', default: '5' },
    ensemble: { type: 'string' }, 'no-overlap': { type: 'boolean' }, 'extra-latency-ms': { type: 'string', default: '0' },
    run: { type: 'string' },
  },
});
const hz = Number(values.hz), ticks = Math.round(Number(values.seconds) * hz), extraMs = Number(values['extra-latency-ms']);

/** The simulated robot: state = eef position (3), axis-angle (3), two gripper finger positions. */
class PointMassRobot {
  pos = [0, 0, 0.2];
  rot = [Math.PI, 0, 0];
  gripper = 0.04;

  apply(action: Float32Array): void {
    // LIBERO's OSC controller scales the normalized deltas to at most 5 cm / 0.5 rad per step.
    for (let i = 0; i < 3; i++) this.pos[i] += 0.05 * Math.max(-1, Math.min(1, action[i]));
    for (let i = 0; i < 3; i++) this.rot[i] += 0.5 * Math.max(-1, Math.min(1, action[3 + i]));
    // Gripper action: -1 opens, +1 closes; the fingers move 4 mm per step towards their target.
    const target = action[6] > 0 ? 0 : 0.04;
    this.gripper += Math.max(-0.004, Math.min(0.004, target - this.gripper));
  }

  /** A camera image: a disc where the end effector is, shaded by the gripper opening. */
  render(size: number, scale: number): { data: Uint8Array; width: number; height: number } {
    const data = new Uint8Array(size * size * 3).fill(90);
    const cx = size / 2 + this.pos[0] * scale, cy = size / 2 - this.pos[1] * scale, r = 6 + 40 * this.pos[2];
    for (let y = Math.max(0, Math.floor(cy - r)); y < Math.min(size, cy + r); y++) {
      for (let x = Math.max(0, Math.floor(cx - r)); x < Math.min(size, cx + r); x++) {
        if ((x - cx) ** 2 + (y - cy) ** 2 > r * r) continue;
        data.set([220, Math.round(5000 * this.gripper), 40], (y * size + x) * 3);
      }
    }
    return { data, width: size, height: size };
  }

  observe(): Observation {
    return {
      images: { primary: this.render(224, 300), wrist: this.render(224, 1200) },
      instruction: 'put the black bowl on the plate',
      state: [...this.pos, ...this.rot, this.gripper, -this.gripper],
    };
  }
}

/** The real policy, each inference stretched by `ms` (a slower model's latency). */
function withLatency(policy: Policy, ms: number): Pick<Policy, 'act' | 'metadata'> {
  if (ms <= 0) return policy;
  return {
    metadata: policy.metadata,
    act: async (obs) => (await Promise.all([policy.act(obs), new Promise((r) => setTimeout(r, ms))]))[0],
  };
}

await using policy = await loadPolicy(values.run ?? await demoRunDir());
const robot = new PointMassRobot();
const events: RunnerEvent[] = [];
const runner = new PolicyRunner(withLatency(policy, extraMs), {
  hz, replanSteps: Number(values.replan), overlap: !values['no-overlap'],
  ensemble: values.ensemble === undefined ? false : Number(values.ensemble),
  onEvent: (e) => { if (e.type !== 'chunk') events.push(e); },
});

console.log(`control loop: ${hz} Hz for ${ticks} ticks, replan every ${values.replan}, overlap ${!values['no-overlap']}, ` +
  `ensemble ${values.ensemble ?? 'off'}, extra inference latency ${extraMs} ms`);
const period = 1000 / hz;
let deadline = performance.now();
for (let t = 0; t < ticks; t++) {
  const step = await runner.tick(robot.observe());
  robot.apply(step.action);
  // Sleep to the next deadline (not a fixed period after this tick's work), so the rate does not drift; when behind,
  // start over from now rather than rush actions out to catch up.
  deadline += period;
  if (deadline < performance.now()) deadline = performance.now() + period;
  await new Promise((r) => setTimeout(r, deadline - performance.now()));
}

const s = runner.stats();
const fmt = (x: number) => x.toFixed(1);
console.log(`achieved ${fmt(s.hz)} Hz (target ${hz}); ${s.ticks} ticks, ${s.lateTicks} late, ${s.staleTicks} stale`);
console.log(`inference: ${s.chunks} chunks, ${fmt(s.inferenceMs.mean)} ms mean, ${fmt(s.inferenceMs.max)} ms max (recent), ` +
  `started ${s.leadTicks} ticks ahead; ${s.lateChunks} late, ${s.droppedChunks} dropped`);
console.log(`end effector at [${robot.pos.map((x) => x.toFixed(3)).join(', ')}], gripper ${robot.gripper.toFixed(3)}`);
if (events.length) console.log(`first events: ${JSON.stringify(events.slice(0, 5))}`);
