"""Scripted experts: a waypoint state machine over the simulator's true state, one per task kind.

They see object and receptacle positions directly (privileged state), which a policy never does. With `noise` they
execute a perturbed action while the recorded action stays the clean one (DART-style), so the demonstrations also
show how to recover from small drifts.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# `python3 eval/expert.py` on its own: the eval's packages (eval/setup.sh installs them into eval/.venv-target).
_TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".venv-target")
if os.path.isdir(_TARGET) and _TARGET not in sys.path:
    sys.path.insert(1, _TARGET)

import numpy as np  # noqa: E402

from sim import CUBE_HALF, POS_SCALE, TabletopEnv  # noqa: E402

CARRY_Z = 0.15
REACHED = 0.006
OPEN, CLOSE = -1.0, 1.0


class Expert:
    def __init__(self, env: TabletopEnv):
        self.env = env
        task = env.task
        obj = env.object_pos(task.obj)
        self.plan: list[tuple[str, np.ndarray | None, float, int]] = [
            # (phase, eef goal, gripper command, hold steps once reached)
            ("above", np.array([obj[0], obj[1], CUBE_HALF + 0.09]), OPEN, 0),
            ("down", np.array([obj[0], obj[1], CUBE_HALF + 0.003]), OPEN, 0),
            ("grasp", None, CLOSE, 6),
            ("lift", np.array([obj[0], obj[1], CARRY_Z]), CLOSE, 0),
        ]
        if task.kind == "place":
            r = env.receptacle_pos(task.target)
            self.plan += [
                ("carry", np.array([r[0], r[1], CARRY_Z]), CLOSE, 0),
                ("lower", np.array([r[0], r[1], CUBE_HALF + 0.06]), CLOSE, 0),
                ("release", None, OPEN, 5),
                ("retreat", np.array([r[0], r[1], CARRY_Z]), OPEN, 0),
            ]
        else:
            self.plan.append(("hold", None, CLOSE, 100))
        self.phase = 0
        self.held = 0

    def act(self) -> np.ndarray:
        """The clean action for the current state; advances the plan when a waypoint is reached."""
        env = self.env
        while True:
            name, goal, grip, hold = self.plan[min(self.phase, len(self.plan) - 1)]
            if goal is None:
                goal_here = env.eef_pos()
                if self.held >= hold and self.phase < len(self.plan) - 1:
                    self.phase += 1
                    self.held = 0
                    continue
                self.held += 1
                # "grasp"/"release" stand still; later phases keep their own goal
                self._still = goal_here if self.held == 1 else self._still
                delta = (self._still - env.eef_pos()) / POS_SCALE
            else:
                delta = (goal - env.eef_pos()) / POS_SCALE
                if np.linalg.norm(goal - env.eef_pos()) < REACHED and self.phase < len(self.plan) - 1:
                    self.phase += 1
                    continue
            action = np.zeros(7)
            action[:3] = np.clip(delta, -1.0, 1.0)
            action[6] = grip
            return action


def run_expert(env: TabletopEnv, task, seed: int, max_steps: int = 160, noise: float = 0.0, render: bool = True,
               settle_steps: int = 3):
    """Runs the expert from reset(task, seed). Returns (observations, clean actions, success); the episode ends a few
    steps after success (the object has settled), or at max_steps."""
    obs = env.reset(task, seed)
    expert = Expert(env)
    rng = np.random.default_rng(seed + 7919)
    observations, actions = [], []
    after = 0
    for _ in range(max_steps):
        a = expert.act()
        observations.append(obs)
        actions.append(a)
        executed = a.copy()
        if noise > 0:
            executed[:3] = np.clip(executed[:3] + rng.normal(0.0, noise, 3), -1.0, 1.0)
        obs = env.step(executed, render=render)
        if env.success():
            after += 1
            if after > settle_steps:
                return observations, np.array(actions), True
    return observations, np.array(actions), env.success()


def main() -> None:
    """Checks the experts: runs every task (the held-out one too) on seeds seed_base .. seed_base + episodes - 1
    without rendering and prints one JSON document {task: {successes, episodes, steps}}."""
    import argparse
    import json

    from sim import TASKS

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--episodes", type=int, default=4)
    p.add_argument("--seed-base", type=int, default=0)
    p.add_argument("--noise", type=float, default=0.15)
    p.add_argument("--json-out", help="also write the document to this file")
    args = p.parse_args()
    env = TabletopEnv(64)
    out = {}
    for task in TASKS:
        runs = [run_expert(env, task, args.seed_base + s, noise=args.noise, render=False)
                for s in range(args.episodes)]
        out[task.name] = {"successes": sum(ok for _, _, ok in runs), "episodes": len(runs),
                          "steps": [len(a) for _, a, _ in runs]}
    print(json.dumps(out))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
