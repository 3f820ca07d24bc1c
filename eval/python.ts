/**
 * The Python that runs the evaluation's simulator side: python3 with eval/.venv-target (eval/setup.sh) first on its
 * path, and MuJoCo rendering through OSMesa (EGL needs a GPU driver).
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const EVAL_DIR = path.dirname(fileURLToPath(import.meta.url));
export const PYTHON = process.env.M2VLA_EVAL_PYTHON ?? 'python3';

export function pythonEnv(): NodeJS.ProcessEnv {
  const target = path.join(EVAL_DIR, '.venv-target');
  const extra = process.env.PYTHONPATH ? `${path.delimiter}${process.env.PYTHONPATH}` : '';
  return { ...process.env, PYTHONPATH: `${target}${extra}`, MUJOCO_GL: 'osmesa', PYOPENGL_PLATFORM: 'osmesa' };
}

/** Why the evaluation's Python side cannot run here (null when it can): a missing package or OSMesa. */
export function evalRequirementsMissing(): string | null {
  const probe = spawnSync(PYTHON, ['-c', 'import mujoco, h5py, msgpack, websockets, PIL, numpy; ' +
    'mujoco.Renderer(mujoco.MjModel.from_xml_string("<mujoco/>"), 8, 8).close()'], { env: pythonEnv(), encoding: 'utf8' });
  if (probe.error) return `${PYTHON}: ${probe.error.message}`;
  if (probe.status !== 0) return (probe.stderr.trim().split('\n').pop() ?? 'failed') + ' (run eval/setup.sh)';
  return null;
}
