"""Records scripted-expert demonstrations in LIBERO's HDF5 layout, one `<instruction>_demo.hdf5` per task, which
`m2vla train --data <dir>` (lib/data/libero.ts) reads unchanged.

Per file: data.attrs["problem_info"] (JSON with language_instruction), data/demo_N/{actions (T, 7): LIBERO's
-1 open / +1 close gripper, obs/agentview_rgb + obs/eye_in_hand_rgb (T, H, W, 3) uint8 rotated by 180 degrees as
LIBERO stores its frames (the reader rotates them back), obs/ee_pos, obs/ee_ori (axis-angle), obs/ee_states,
obs/gripper_states}. Every task is recorded on the same scenes (seed = seed_base + k for the k-th scene tried), so the
scene alone never tells which task a demonstration shows: only the instruction does. Only successful episodes are
kept; the seeds stay below the evaluation seeds (eval/client.py starts at 10**6).

  python3 eval/make_demos.py --out <dir> --per-task 10 [--tasks red_bowl,blue_bowl] [--image-size 84]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from expert import run_expert  # noqa: E402
from sim import TASKS, TASKS_BY_NAME, TabletopEnv  # noqa: E402


def record_task(env: TabletopEnv, task, per_task: int, out: str, seed_base: int, noise: float) -> dict:
    path = os.path.join(out, task.instruction.replace(" ", "_") + "_demo.hdf5")
    kept, tried = 0, 0
    with h5py.File(path + ".tmp", "w") as f:
        data = f.create_group("data")
        data.attrs["problem_info"] = json.dumps({"language_instruction": task.instruction, "task": task.name})
        data.attrs["env_args"] = json.dumps({"env": "m2vla-tabletop", "image_size": env.image_size})
        while kept < per_task:
            seed = seed_base + tried
            tried += 1
            obs, actions, ok = run_expert(env, task, seed, noise=noise)
            if not ok:
                continue
            g = data.create_group(f"demo_{kept}")
            g.attrs["seed"] = seed
            g.attrs["num_samples"] = len(actions)
            g.create_dataset("actions", data=actions.astype(np.float64))
            o = g.create_group("obs")
            flip = lambda frames: np.stack(frames)[:, ::-1, ::-1]  # noqa: E731  LIBERO's frames are upside down
            o.create_dataset("agentview_rgb", data=flip([x["agentview"] for x in obs]), compression="gzip",
                             compression_opts=1)
            o.create_dataset("eye_in_hand_rgb", data=flip([x["eye_in_hand"] for x in obs]), compression="gzip",
                             compression_opts=1)
            proprio = np.stack([x["proprio"] for x in obs])
            o.create_dataset("ee_pos", data=proprio[:, :3])
            o.create_dataset("ee_ori", data=proprio[:, 3:6])
            o.create_dataset("ee_states", data=proprio[:, :6])
            o.create_dataset("gripper_states", data=proprio[:, 6:8])
            kept += 1
        data.attrs["num_demos"] = kept
    os.replace(path + ".tmp", path)
    return {"task": task.name, "file": path, "demos": kept, "tried": tried}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--per-task", type=int, default=10)
    p.add_argument("--tasks", default=",".join(t.name for t in TASKS if not t.held_out))
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.15, help="std of the executed action's perturbation (DART)")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    env = TabletopEnv(args.image_size)
    started = time.time()
    summary = []
    for name in args.tasks.split(","):
        task = TASKS_BY_NAME[name]
        summary.append(record_task(env, task, args.per_task, args.out, args.seed_base, args.noise))
        print(json.dumps(summary[-1]), flush=True)
    print(json.dumps({"seconds": round(time.time() - started, 1), "tasks": len(summary)}), flush=True)


if __name__ == "__main__":
    main()
