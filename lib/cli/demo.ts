/** `m2vla demo [--run <dir>]`: the main job end to end on the embedded tiny model (or a run directory). */
import fs from 'node:fs';
import { loadPolicy, demoRunDir } from '../policy.js';
import type { Observation } from '../observation.js';
import type { NativeDevice } from '../native/binding.js';
import { numberFlag, parseFlags } from './args.js';
import { pullProgress } from './pull.js';

const USAGE = `usage: m2vla demo [--run <dir | hf://owner/repo[/folder]>] [--instruction <text>] [--primary <png|jpg>]
                  [--wrist <png|jpg>] [--device cpu|cuda:N] [--dtype auto|float32|bfloat16|float16] [--threads N]
                  [--unnorm-key K] [--center-crop]
Runs the policy on a two-camera observation (synthetic images unless given) and prints the action chunk and the
time per stage. Without --run it uses the embedded demo model (random weights: the actions are not meaningful).`;

/** A smooth RGB test pattern (a horizon, a disc): deterministic, so demo output is reproducible. */
function syntheticImage(width: number, height: number, hue: number) {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const disc = (x - width * 0.6) ** 2 + (y - height * 0.55) ** 2 < (width * 0.15) ** 2;
      data[i] = disc ? 200 : (hue + x) % 256;
      data[i + 1] = disc ? 60 : y < height / 2 ? 170 : 90;
      data[i + 2] = disc ? 40 : (255 * y) / height;
    }
  }
  return { data, width, height };
}

export const demoCommand = {
  summary: 'run the policy on one observation and print the action chunk and timings',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values: v } = parseFlags(argv, {
      run: { type: 'string' }, instruction: { type: 'string', default: 'put the black bowl on the plate' },
      primary: { type: 'string' }, wrist: { type: 'string' }, dtype: { type: 'string', default: 'auto' },
      device: { type: 'string', default: 'cpu' }, threads: { type: 'string' }, 'unnorm-key': { type: 'string' },
      'center-crop': { type: 'boolean' },
    });
    const values = v as { run?: string; instruction: string; primary?: string; wrist?: string; dtype: string; device: string;
      threads?: string; 'unnorm-key'?: string; 'center-crop'?: boolean; help?: boolean };
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const runDir = values.run ?? await demoRunDir();
    const t0 = performance.now();
    // loadPolicy checks --device and --dtype (InputError / ConfigError with the fix).
    await using policy = await loadPolicy(runDir, {
      device: values.device as NativeDevice, dtype: values.dtype as 'auto',
      threads: numberFlag(values.threads, 'threads', { integer: true, min: 1 }), unnormKey: values['unnorm-key'],
      centerCrop: values['center-crop'], hub: { onProgress: pullProgress() },
    });
    const loadMs = performance.now() - t0;
    const m = policy.metadata;
    const obs: Observation = {
      images: {
        primary: values.primary ? fs.readFileSync(values.primary) : syntheticImage(256, 256, 30),
        wrist: values.wrist ? fs.readFileSync(values.wrist) : syntheticImage(128, 128, 120),
      },
      instruction: values.instruction,
      state: Array.from({ length: m.proprioDim }, (_, i) => 0.1 * Math.sin(i)),
    };
    await policy.act(obs); // warm-up: first-touch allocations and thread pool start
    const t1 = performance.now();
    const out = await policy.act(obs, { stageTimes: true });
    const actMs = performance.now() - t1;

    console.log(`m2vla demo — ${values.run ? runDir : `embedded demo model (${runDir})`}`);
    console.log(`  model: ${m.layers}-layer VLM, hidden ${m.hidden}, ${m.numImages} cameras at ${m.imageSize}px, ` +
      `chunk ${m.chunk}×${m.actionDim}, ${m.dtype}, statistics "${m.unnormKey}", skill bank ${m.bankSize} of ${m.bankCapacity} entries filled`);
    console.log(`  device: ${m.device} (${m.deviceName}), kernels: ${m.kernels.path}`);
    console.log(`  instruction: "${values.instruction}"; loaded in ${loadMs.toFixed(0)} ms`);
    console.log('\n  action chunk (unnormalized):');
    for (let t = 0; t < m.chunk; t++) {
      const row = Array.from(out.actions.data.subarray(t * m.actionDim, (t + 1) * m.actionDim), (v) => v.toFixed(4).padStart(8));
      console.log(`    t+${t}  ${row.join(' ')}`);
    }
    console.log(`\n  retrieved skills: rows ${Array.from(out.retrieval.indices).join(', ')} ` +
      `(similarity ${Array.from(out.retrieval.similarities, (s) => s.toFixed(1)).join(', ')})`);
    const t = out.timing;
    console.log(`\n  act(): ${actMs.toFixed(1)} ms = preprocess ${t.preprocess.toFixed(1)} + vision ${t.vision.toFixed(1)} + ` +
      `projector ${t.projector.toFixed(1)} + llm ${t.llm.toFixed(1)} + retrieval ${t.retrieval.toFixed(1)} + head ${t.head.toFixed(1)} ms`);
    return 0;
  },
};
