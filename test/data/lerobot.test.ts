import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError, ShapeError } from '../../lib/errors.js';
import { openLeRobot } from '../../lib/data/lerobot.js';
import { ffmpegAvailable } from '../../lib/data/video.js';
import { DATA, expected, meanAbsDiff, pattern, sameFrame, tempDir } from '../helpers/data.js';

const V21 = path.join(DATA, 'lerobot_v21_images');
const V30 = path.join(DATA, 'lerobot_v30_images');
const VIDEO = path.join(DATA, 'lerobot_v30_video');
const want = expected.lerobot_v21_images.episodes;
const hasFfmpeg = await ffmpegAvailable();

/** A copy of a fixture directory to damage. */
function copy(dir: string): string {
  const to = path.join(tempDir(), path.basename(dir));
  fs.cpSync(dir, to, { recursive: true });
  return to;
}

describe.each([['v2.1', V21], ['v3.0', V30]])('LeRobot %s, inline images', (_, root) => {
  it('reads episodes, tasks, state and action as stored', async () => {
    const ds = await openLeRobot(root);
    expect(ds.name).toBe(path.basename(root));
    expect([ds.actionDim, ds.proprioDim, ds.hasWrist, ds.numSamples]).toEqual([7, 8, true, 5 + 2]);
    expect(ds.episodes.map((e) => e.length)).toEqual([12, 9]);
    ds.episodes.forEach((ep, e) => {
      expect(ep.instructions).toEqual(new Array(ep.length).fill(want[e].instruction));
      expect(Array.from(ep.actions)).toEqual(want[e].actions.flat());
      expect(Array.from(ep.states)).toEqual(want[e].proprio.flat());
    });
    await ds.close();
  });

  it('decodes the PNG frames of every step exactly, with chunks padded by the last action at episode ends', async () => {
    const ds = await openLeRobot(root, { episodeEnd: 'repeat' });
    expect(ds.numSamples).toBe(21);
    for (let i = 0; i < ds.numSamples; i++) {
      const s = await ds.sample(i);
      expect(sameFrame(s.images.primary, pattern(s.episode, s.step, 0)), `sample ${i}`).toBe(true);
      expect(sameFrame(s.images.wrist, pattern(s.episode, s.step, 1)), `sample ${i}`).toBe(true);
      const steps = Array.from({ length: 8 }, (_, k) => Math.min(s.step + k, want[s.episode].length - 1));
      expect(Array.from(s.actions)).toEqual(steps.flatMap((t) => want[s.episode].actions[t]));
      expect(Array.from(s.state)).toEqual(want[s.episode].proprio[s.step]);
    }
    await ds.close();
  });
});

describe('LeRobot options', () => {
  it('chooses cameras by key and can leave the wrist camera out', async () => {
    const ds = await openLeRobot(V30, { primary: 'observation.images.wrist_image', wrist: null });
    expect(ds.hasWrist).toBe(false);
    const s = await ds.sample(0);
    expect(sameFrame(s.images.primary, pattern(0, 0, 1))).toBe(true);
    expect(s.images.wrist).toBeUndefined();
    await expect(openLeRobot(V30, { primary: 'observation.state' })).rejects.toThrow(new InputError(
      `${V30}/meta/info.json: 'observation.state' is not a camera feature (cameras: observation.images.image, ` +
      'observation.images.wrist_image)'));
    await expect(openLeRobot(V30, { stateKey: 'observation.velocity' })).rejects.toThrow(
      /no state feature \('observation.velocity'\)/);
  });

  it('maps a LIBERO gripper command with invertGripper', async () => {
    const ds = await openLeRobot(V21, { invertGripper: true });
    const got = Array.from(ds.episodes[0].actions.filter((_, i) => i % 7 === 6));
    expect(got).toEqual(want[0].actions.map((a) => Math.fround(1 - Math.min(1, Math.max(0, a[6])))));
  });
});

describe('LeRobot validation', () => {
  it('rejects action or state sizes that do not fit the model', async () => {
    await expect(openLeRobot(V30, { actionDim: 14 })).rejects.toThrow(
      new ShapeError(`${V30}/meta/info.json 'action': 7 action dims, the model expects 14`));
    await expect(openLeRobot(V21, { proprioDim: 7 })).rejects.toThrow(
      new ShapeError(`${V21}/meta/info.json 'observation.state': 8 proprio dims, the model expects 7`));
  });

  it('rejects truncated parquet files, missing metadata and inconsistent episodes, naming the file', async () => {
    const v30 = copy(V30);
    const data = path.join(v30, 'data/chunk-000/file-000.parquet');
    fs.truncateSync(data, fs.statSync(data).size - 100);
    await expect(openLeRobot(v30)).rejects.toThrow(new RegExp(`^${data}: not a readable parquet file`));

    const v21 = copy(V21);
    fs.rmSync(path.join(v21, 'meta/info.json'));
    await expect(openLeRobot(v21)).rejects.toThrow(new RegExp(`${v21}/meta/info.json: cannot read`));

    const lengths = copy(V21);
    const episodes = path.join(lengths, 'meta/episodes.jsonl');
    fs.writeFileSync(episodes, fs.readFileSync(episodes, 'utf8').replace('"length": 12', '"length": 13'));
    await expect(openLeRobot(lengths)).rejects.toThrow(new InputError(
      `${lengths}/data/chunk-000/episode_000000.parquet: 12 rows, the episodes metadata says 13`));

    const tasks = copy(V21);
    fs.writeFileSync(path.join(tasks, 'meta/tasks.jsonl'), '{"task_index": 0, "task": "only one"}\n');
    await expect(openLeRobot(tasks)).rejects.toThrow(/episode 0 step 0: task_index 1 is not in the tasks/);

    const version = copy(V21);
    const info = path.join(version, 'meta/info.json');
    fs.writeFileSync(info, fs.readFileSync(info, 'utf8').replace('"v2.1"', '"v1.6"'));
    await expect(openLeRobot(version)).rejects.toThrow(/codebase_version 'v1.6' is not supported/);
  });

  it('says to install ffmpeg when a video-backed camera cannot be decoded', async () => {
    await expect(openLeRobot(VIDEO, { ffmpeg: '/nonexistent/ffmpeg' })).rejects.toThrow(new InputError(
      `${VIDEO}: camera observation.images.image, observation.images.wrist_image is video-backed and is decoded ` +
      `with ffmpeg, but '/nonexistent/ffmpeg' cannot be run: install ffmpeg (e.g. apt-get install ffmpeg) or pass ` +
      'the ffmpeg option'));
    await expect(openLeRobot(VIDEO, { ffmpeg: '/nonexistent/ffmpeg', wrist: null, primary: 'observation.images.image' }))
      .rejects.toThrow(InputError);
  });
});

describe.skipIf(!hasFfmpeg)('LeRobot v3.0, video-backed cameras (ffmpeg)', () => {
  it('decodes the frame of each step from the shared mp4 (from_timestamp + timestamp)', async () => {
    const ds = await openLeRobot(VIDEO, { episodeEnd: 'repeat' });
    expect(ds.numSamples).toBe(21);
    expect(Array.from(ds.episodes[1].actions)).toEqual(expected.lerobot_v30_video.episodes[1].actions.flat());
    for (let i = 0; i < ds.numSamples; i++) {
      const { images, episode, step } = await ds.sample(i);
      for (const [camera, image] of [images.primary, images.wrist!].entries()) {
        // AV1 is lossy: the frame must be close to its step's pattern and farther from every other step's
        const errors = Array.from({ length: ds.episodes[episode].length },
          (_, t) => meanAbsDiff(image.data, pattern(episode, t, camera).data));
        expect(errors[step], `sample ${i} camera ${camera}`).toBeLessThan(4);
        expect(errors.indexOf(Math.min(...errors)), `sample ${i} camera ${camera}`).toBe(step);
      }
    }
  });

  it('reports a damaged video when its frames are read', async () => {
    const root = copy(VIDEO);
    const mp4 = path.join(root, 'videos/observation.images.image/chunk-000/file-000.mp4');
    fs.truncateSync(mp4, 600);
    const ds = await openLeRobot(root);
    await expect(ds.sample(0)).rejects.toThrow(InputError);
  });
});
