"""The evaluation client: runs episodes of the tabletop suite against a policy served by `m2vla serve` over openpi's
websocket protocol (as openpi's examples/libero/main.py does for LIBERO), or against the mean-action baseline.

Each episode: reset(task, seed) with fixed seeds (seed_base + episode, the same scenes for every task), then observe → infer an
action chunk → execute its first `replan` actions → observe again, until success (checked from the simulator's state)
or max_steps. The server's gripper output follows the training data's convention (1 open, 0 close, see
lib/data/libero.ts); like OpenVLA-OFT's LIBERO eval it is binarized and mapped back to the simulator's -1 open / +1
close. Records success, episode length and per-request latency; writes a few videos (mp4 through the ffmpeg CLI when
present, else PNG strips).

  python3 eval/client.py --url ws://127.0.0.1:8000 --episodes 10 --out results.json [--videos dir]
  python3 eval/client.py --baseline-demos <demo dir> --episodes 10 --out baseline.json
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from openpi_wire import connect, pack, unpack  # noqa: E402
from sim import TASKS, TASKS_BY_NAME, TabletopEnv  # noqa: E402

EVAL_SEED_BASE = 10**6  # demonstrations use seeds below this

# Instructions never seen in training (the demonstrations use TASKS' own): the Table I analogue.
REPHRASED = {
    "red_bowl": "place the red block into the bowl",
    "blue_bowl": "drop the blue block in the bowl",
    "red_plate": "set the red block onto the plate",
    "blue_plate": "move the blue block onto the plate",
    "lift_blue": "raise the blue block",
    "yellow_bowl": "place the yellow can into the bowl",
}


class ServedPolicy:
    """openpi's WebsocketClientPolicy: metadata frame first, then one msgpack request per observation."""

    def __init__(self, url: str):
        self.ws, self.metadata = connect(url)

    def infer(self, obs: dict, prompt: str) -> tuple[np.ndarray, dict]:
        request = {"observation/image": obs["agentview"], "observation/wrist_image": obs["eye_in_hand"],
                   "observation/state": obs["proprio"].astype(np.float64), "prompt": prompt}
        started = time.perf_counter()
        self.ws.send(pack(request))
        reply = self.ws.recv()
        latency = (time.perf_counter() - started) * 1000
        if isinstance(reply, str):
            raise RuntimeError(f"server error:\n{reply}")
        out = unpack(reply)
        actions = np.asarray(out["actions"], dtype=np.float64).copy()
        # 1 open / 0 close -> -1 open / +1 close (OFT's normalize_gripper_action(binarize) + invert_gripper_action)
        actions[:, -1] = np.where(actions[:, -1] > 0.5, -1.0, 1.0)
        return actions, {"latency_ms": latency, "server_ms": out.get("server_timing", {}).get("infer_ms")}

    def close(self) -> None:
        self.ws.close()


class MeanActionPolicy:
    """The trivial baseline: the mean action of all demonstrations, replayed at every step."""

    def __init__(self, demo_dir: str):
        import h5py

        actions = []
        for path in sorted(glob.glob(os.path.join(demo_dir, "*.hdf5"))):
            with h5py.File(path, "r") as f:
                actions += [f["data"][k]["actions"][()] for k in f["data"] if k.startswith("demo_")]
        if not actions:
            raise SystemExit(f"{demo_dir}: no demonstrations")
        self.mean = np.concatenate(actions).mean(axis=0)
        self.metadata = {"baseline": "mean action", "mean_action": self.mean.tolist()}

    def infer(self, obs: dict, prompt: str) -> tuple[np.ndarray, dict]:
        return self.mean[None, :].copy(), {"latency_ms": 0.0, "server_ms": None}

    def close(self) -> None:
        pass


def write_video(frames: list[np.ndarray], path_stem: str, fps: int = 20) -> str:
    """mp4 (H.264 through ffmpeg, frames upscaled 3x) when ffmpeg is installed, else a PNG strip of every 5th frame."""
    h, w, _ = frames[0].shape
    if shutil.which("ffmpeg"):
        path = path_stem + ".mp4"
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "-", "-vf", f"scale={w * 3}:{h * 3}:flags=neighbor", "-pix_fmt", "yuv420p",
               "-c:v", "libx264", path]
        subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
        return path
    from PIL import Image

    path = path_stem + ".png"
    Image.fromarray(np.concatenate(frames[::5], axis=1)).save(path)
    return path


def run_episode(env: TabletopEnv, policy, task, seed: int, replan: int, max_steps: int, record: bool,
                instruction: str) -> dict:
    obs = env.reset(task, seed)
    frames, latencies, server_ms = [], [], []
    steps, success = 0, False
    while steps < max_steps and not success:
        chunk, timing = policy.infer(obs, instruction)
        latencies.append(timing["latency_ms"])
        if timing["server_ms"] is not None:
            server_ms.append(timing["server_ms"])
        for action in chunk[:replan]:
            if record:
                frames.append(np.concatenate([obs["agentview"], obs["eye_in_hand"]], axis=1))
            obs = env.step(action)
            steps += 1
            success = env.success()
            if success or steps >= max_steps:
                break
    if record:
        frames.append(np.concatenate([obs["agentview"], obs["eye_in_hand"]], axis=1))
    return {"seed": seed, "success": success, "steps": steps, "latency_ms": latencies, "server_ms": server_ms,
            "frames": frames}


def evaluate(policy, tasks, episodes: int, replan: int, max_steps: int, image_size: int, seed_base: int,
             videos: str | None, rephrase: bool = False) -> dict:
    env = TabletopEnv(image_size)
    out = {"tasks": {}, "replan": replan, "max_steps": max_steps, "episodes_per_task": episodes,
           "image_size": image_size, "seed_base": seed_base, "metadata": policy.metadata}
    all_latency = []
    started = time.time()
    for task in tasks:
        results = []
        instruction = REPHRASED[task.name] if rephrase else task.instruction
        filmed = set()  # one success and one failure per task
        for e in range(episodes):
            r = run_episode(env, policy, task, seed_base + e, replan, max_steps, videos is not None, instruction)
            frames = r.pop("frames")
            if videos is not None and r["success"] not in filmed:
                filmed.add(r["success"])
                os.makedirs(videos, exist_ok=True)
                outcome = "success" if r["success"] else "failure"
                r["video"] = write_video(frames, os.path.join(videos, f"{task.name}_{r['seed']}_{outcome}"))
            all_latency += r["latency_ms"]
            results.append(r)
        n_ok = sum(r["success"] for r in results)
        out["tasks"][task.name] = {
            "instruction": instruction, "held_out": task.held_out, "success_rate": n_ok / len(results),
            "successes": n_ok, "episodes": results,
            "mean_steps": float(np.mean([r["steps"] for r in results])),
        }
        print(json.dumps({"task": task.name, "success_rate": n_ok / len(results)}), flush=True)
    env.close()
    seen = [t for t in out["tasks"].values() if not t["held_out"]]
    out["success_rate_seen"] = float(np.mean([t["success_rate"] for t in seen])) if seen else None
    lat = np.array(all_latency) if all_latency else np.zeros(1)
    out["latency_ms"] = {"mean": float(lat.mean()), "p50": float(np.percentile(lat, 50)),
                         "p95": float(np.percentile(lat, 95)), "requests": len(all_latency)}
    out["seconds"] = round(time.time() - started, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--url", help="ws://host:port of m2vla serve")
    src.add_argument("--baseline-demos", help="demo directory: evaluate the mean-action baseline instead")
    p.add_argument("--tasks", default=",".join(t.name for t in TASKS))
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--replan", type=int, default=4, help="actions executed per inferred chunk")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--image-size", type=int, default=84)
    p.add_argument("--seed-base", type=int, default=EVAL_SEED_BASE)
    p.add_argument("--videos", help="directory for a video of the first success and the first failure per task")
    p.add_argument("--rephrase", action="store_true", help="give each task's REPHRASED instruction instead of its own")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    policy = ServedPolicy(args.url) if args.url else MeanActionPolicy(args.baseline_demos)
    tasks = [TASKS_BY_NAME[n] for n in args.tasks.split(",")]
    try:
        result = evaluate(policy, tasks, args.episodes, args.replan, args.max_steps, args.image_size,
                          args.seed_base, args.videos, args.rephrase)
    finally:
        policy.close()
    with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
    os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
