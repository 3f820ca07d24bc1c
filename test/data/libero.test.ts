import fs from 'node:fs';
import path from 'node:path';
import h5wasm from 'h5wasm/node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { InputError, ShapeError } from '../../lib/errors.js';
import type { Dataset } from '../../lib/data/dataset.js';
import { liberoInstructionFromFileName, openLibero } from '../../lib/data/libero.js';
import { DATA, expected, pattern, sameFrame, tempDir } from '../helpers/data.js';

const SUITE = path.join(DATA, 'libero_tiny_no_noops');
const PICK = path.join(SUITE, 'pick_up_the_red_block_and_place_it_on_the_plate_demo.hdf5');
const KITCHEN = path.join(SUITE, 'KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5');
const want = expected.libero_tiny_no_noops.episodes;

/** The rows `from .. from + n - 1` of an episode's actions, as the flat chunk the dataset returns. */
function rows(values: number[][], steps: number[]): number[] {
  return steps.flatMap((t) => values[t]);
}

/** Writes a small HDF5 file with h5wasm: `demos` maps `demo_N` to {dataset path under it: [data, shape]}. */
async function writeH5(file: string, demos: Record<string, Record<string, [Float64Array | Uint8Array, number[]]>>,
  problemInfo?: object): Promise<string> {
  await h5wasm.ready;
  const f = new h5wasm.File(file, 'w');
  const data = f.create_group('data');
  if (problemInfo) data.create_attribute('problem_info', JSON.stringify(problemInfo));
  for (const [demo, datasets] of Object.entries(demos)) {
    const g = data.create_group(demo);
    g.create_group('obs');
    for (const [name, [values, shape]] of Object.entries(datasets))
      g.create_dataset({ name, data: values, shape, dtype: values instanceof Uint8Array ? '<B' : '<d' });
  }
  f.close();
  return file;
}

describe('LIBERO HDF5', () => {
  let suite: Dataset;
  beforeAll(async () => {
    suite = await openLibero(SUITE);
  });
  afterAll(() => suite.close());

  it('reads a suite directory: files in name order, demos in number order, instructions from the file names', () => {
    expect(suite.name).toBe('libero_tiny_no_noops');
    expect([suite.actionDim, suite.proprioDim, suite.chunk, suite.hasWrist]).toEqual([7, 8, 8, true]);
    expect(suite.episodes.map((e) => e.source)).toEqual([
      `${KITCHEN}: data/demo_0`, `${PICK}: data/demo_0`, `${PICK}: data/demo_2`]);
    expect(suite.episodes.map((e) => e.length)).toEqual([5, 12, 9]);
    expect(suite.episodes.map((e) => e.instructions[0])).toEqual(want.map((e) => e.instruction));
    expect(liberoInstructionFromFileName('LIVING_ROOM_SCENE10_put_both_the_alphabet_soup_and_the_cream_cheese_box_in_the_basket_demo.hdf5'))
      .toBe('put both the alphabet soup and the cream cheese box in the basket');
    expect(liberoInstructionFromFileName('demo.hdf5')).toBeNull();
  });

  it('assembles proprio (ee_states + gripper_states) and maps the gripper action as the reference (float32)', () => {
    suite.episodes.forEach((ep, e) => {
      expect(Array.from(ep.actions)).toEqual(want[e].actions.flat());
      expect(Array.from(ep.states)).toEqual(want[e].proprio.flat());
      expect(new Set(Array.from(ep.actions.filter((_, i) => i % 7 === 6)))).toEqual(new Set([0, 1]));
    });
  });

  it('keeps the raw gripper command with invertGripper: false', async () => {
    const raw = await openLibero(PICK, { invertGripper: false });
    const grip = Array.from(raw.episodes[0].actions.filter((_, i) => i % 7 === 6));
    expect(grip).toEqual(want[1].actions.map((a) => (a[6] === 1 ? -1 : 1)));
    await raw.close();
  });

  it('makes chunks of 8 from steps whose chunk fits in the episode (drop, the VLA-Adapter default)', async () => {
    expect(suite.numSamples).toBe(0 + 5 + 2);  // the 5-step demo has none
    const got = await Promise.all(Array.from({ length: suite.numSamples }, (_, i) => suite.sample(i)));
    expect(got.map((s) => [s.episode, s.step])).toEqual([[1, 0], [1, 1], [1, 2], [1, 3], [1, 4], [2, 0], [2, 1]]);
    for (const s of got) {
      expect(s.instruction).toBe(want[s.episode].instruction);
      expect(Array.from(s.state)).toEqual(want[s.episode].proprio[s.step]);
      expect(Array.from(s.actions)).toEqual(rows(want[s.episode].actions, [0, 1, 2, 3, 4, 5, 6, 7].map((k) => s.step + k)));
    }
    await expect(suite.sample(7)).rejects.toThrow(InputError);
    await expect(suite.sample(-1)).rejects.toThrow(/sample index must be an integer in \[0, 7\)/);
  });

  it('repeats the last action past the episode end with episodeEnd: repeat', async () => {
    const ds = await openLibero(SUITE, { episodeEnd: 'repeat' });
    expect(ds.numSamples).toBe(26);
    const s = await ds.sample(5 + 12 + 5);  // demo_2, step 5 of 9
    expect([s.episode, s.step]).toEqual([2, 5]);
    expect(Array.from(s.actions)).toEqual(rows(want[2].actions, [5, 6, 7, 8, 8, 8, 8, 8]));
    const short = await ds.sample(4);  // the 5-step demo's last step
    expect(Array.from(short.actions)).toEqual(rows(want[0].actions, [4, 4, 4, 4, 4, 4, 4, 4]));
    await ds.close();
  });

  it('reads every frame upright (the stored frames are rotated by 180 degrees), or as stored with flip: false', async () => {
    const all = await openLibero(SUITE, { episodeEnd: 'repeat' });
    for (let i = 0; i < all.numSamples; i++) {
      const { images, episode, step } = await all.sample(i);
      expect(sameFrame(images.primary, pattern(episode, step, 0)), `sample ${i} primary`).toBe(true);
      expect(sameFrame(images.wrist, pattern(episode, step, 1)), `sample ${i} wrist`).toBe(true);
    }
    const stored = await openLibero(PICK, { flip: false, wrist: false });
    const { images } = await stored.sample(3);
    const upright = pattern(1, 3, 0);
    expect(images.wrist).toBeUndefined();
    expect(images.primary.data[0]).toBe(upright.data[upright.data.length - 3]);
    expect(Array.from(images.primary.data)).not.toEqual(Array.from(upright.data));
    await Promise.all([all.close(), stored.close()]);
  });

  it('converts robomimic-style quaternions to axis-angle and takes the instruction from problem_info', async () => {
    const dir = tempDir();
    const T = 2, c = Math.SQRT1_2;
    const frames = new Uint8Array(T * 4 * 5 * 3).map((_, i) => i % 251);
    const file = await writeH5(path.join(dir, 'robomimic_style.hdf5'), {
      demo_0: {
        actions: [new Float64Array(T * 7).fill(0.5), [T, 7]],
        'obs/robot0_eef_pos': [new Float64Array([1, 2, 3, 4, 5, 6]), [T, 3]],
        'obs/robot0_eef_quat': [new Float64Array([0, 0, c, c, 0, 0, 0, 1]), [T, 4]],  // (x, y, z, w)
        'obs/robot0_gripper_qpos': [new Float64Array([0.01, -0.01, 0.02, -0.02]), [T, 2]],
        'obs/agentview_image': [frames, [T, 4, 5, 3]],
      },
      demo_1: {
        actions: [new Float64Array(T * 7), [T, 7]],
        'obs/ee_pos': [new Float64Array([1, 2, 3, 4, 5, 6]), [T, 3]],
        'obs/ee_ori': [new Float64Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), [T, 3]],
        'obs/gripper_states': [new Float64Array([0.01, -0.01, 0.02, -0.02]), [T, 2]],
        'obs/agentview_rgb': [frames, [T, 4, 5, 3]],
      },
    }, { language_instruction: 'stack the cups' });
    const ds = await openLibero(file, { wrist: false, chunk: 2 });
    expect(ds.episodes[0].instructions).toEqual(['stack the cups', 'stack the cups']);
    expect(Array.from(ds.episodes[0].states)).toEqual(Array.from(new Float32Array([
      1, 2, 3, 0, 0, Math.PI / 2, 0.01, -0.01,  // 90 degrees about z
      4, 5, 6, 0, 0, 0, 0.02, -0.02,  // identity: den = 0 -> zeros, as robosuite
    ])));
    expect(Array.from(ds.episodes[1].states.subarray(0, 8)))
      .toEqual(Array.from(new Float32Array([1, 2, 3, 0.1, 0.2, 0.3, 0.01, -0.01])));
    expect(Array.from(ds.episodes[0].actions.subarray(0, 7))).toEqual([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
    const { images } = await ds.sample(0);
    const first = frames.subarray(0, 60);
    expect(Array.from(images.primary.data)).toEqual(Array.from({ length: 60 }, (_, i) => first[57 - i + 2 * (i % 3)]));
    await ds.close();
  });
});

describe('LIBERO validation', () => {
  it('rejects actions or proprio that do not fit the model, naming the file and key', async () => {
    await expect(openLibero(SUITE, { actionDim: 6 })).rejects.toThrow(
      new ShapeError(`${KITCHEN}: data/demo_0/actions: 7 action dims, the model expects 6`));
    await expect(openLibero(SUITE, { actionDim: 7, proprioDim: 9 })).rejects.toThrow(
      new ShapeError(`${KITCHEN}: data/demo_0/obs: 8 proprio (eef pose 6 + gripper) dims, the model expects 9`));
    await expect(openLibero(SUITE, { actionDim: 7, proprioDim: 8 })).resolves.toBeDefined();
  });

  it('rejects truncated, non-HDF5 and missing files', async () => {
    const dir = tempDir();
    const truncated = path.join(dir, 'truncated_demo.hdf5');
    fs.writeFileSync(truncated, fs.readFileSync(PICK).subarray(0, 20_000));
    await expect(openLibero(truncated)).rejects.toThrow(
      new InputError(`${truncated}: not a readable HDF5 file (File has been truncated)`));
    const text = path.join(dir, 'text_demo.hdf5');
    fs.writeFileSync(text, 'not an HDF5 file\n'.repeat(100));
    await expect(openLibero(text)).rejects.toThrow(/text_demo.hdf5: not a readable HDF5 file \(Not an HDF5 file\)/);
    await expect(openLibero(path.join(dir, 'nope.hdf5'))).rejects.toThrow(/nope.hdf5: cannot read/);
    await expect(openLibero(dir)).rejects.toThrow(InputError);  // the first file in the directory is damaged
    const empty = path.join(dir, 'empty');
    fs.mkdirSync(empty);
    await expect(openLibero(empty)).rejects.toThrow(new InputError(`${empty}: no .hdf5 files`));
  });

  it('rejects missing keys, inconsistent lengths and non-image frames', async () => {
    const dir = tempDir();
    const T = 3, img = new Uint8Array(T * 2 * 2 * 3);
    const base = {
      actions: [new Float64Array(T * 7), [T, 7]],
      'obs/ee_states': [new Float64Array(T * 6), [T, 6]],
      'obs/gripper_states': [new Float64Array(T * 2), [T, 2]],
      'obs/agentview_rgb': [img, [T, 2, 2, 3]],
      'obs/eye_in_hand_rgb': [img, [T, 2, 2, 3]],
    } as Record<string, [Float64Array | Uint8Array, number[]]>;
    const variant = async (name: string, change: Record<string, [Float64Array | Uint8Array, number[]] | null>) => {
      const demo = { ...base, ...change };
      for (const k of Object.keys(change)) if (change[k] === null) delete demo[k];
      return writeH5(path.join(dir, `${name}_demo.hdf5`), { demo_0: demo as typeof base });
    };
    const noGripper = await variant('no_gripper', { 'obs/gripper_states': null });
    await expect(openLibero(noGripper, { chunk: 1 })).rejects.toThrow(new InputError(
      `${noGripper}: data/demo_0: missing obs/gripper_states or obs/robot0_gripper_qpos`));
    const noWrist = await variant('no_wrist', { 'obs/eye_in_hand_rgb': null });
    await expect(openLibero(noWrist, { chunk: 1 })).rejects.toThrow(/missing obs\/eye_in_hand_rgb or obs\/robot0_eye_in_hand_image/);
    await expect(openLibero(noWrist, { chunk: 1, wrist: false })).resolves.toBeDefined();
    const short = await variant('short_gripper', { 'obs/gripper_states': [new Float64Array(4), [2, 2]] });
    await expect(openLibero(short, { chunk: 1 })).rejects.toThrow(new ShapeError(
      `${short}: data/demo_0/obs/gripper_states: expected [3, n] (T from actions), got [2,2]`));
    const floatFrames = await variant('float_frames', { 'obs/agentview_rgb': [new Float64Array(T * 12), [T, 2, 2, 3]] });
    await expect(openLibero(floatFrames, { chunk: 1 })).rejects.toThrow(/agentview_rgb: expected uint8 \[3, H, W, 3\]/);
    const nan = await variant('nan', { actions: [new Float64Array(T * 7).fill(NaN), [T, 7]] });
    await expect(openLibero(nan, { chunk: 1 })).rejects.toThrow(/data\/demo_0\/actions: non-finite value NaN at step 0/);
    await expect(openLibero(KITCHEN)).rejects.toThrow(/no samples \(1 episodes, none with 8 steps\)/);
  });
});
