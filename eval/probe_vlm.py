"""Linear probes on a frozen eval VLM's hidden states: does it see where the cubes are, and does the robot prompt's last
token (where the policy's "AQ" slice starts, SPEC 1.5) know which side the instructed cube is on?

Scenes: a red and a blue cube at the simulator's left / right slots (jittered as eval/sim.py does), their sides
swapped at random, the bowl present; instruction "put the <red|blue> cube in the bowl" in the policy's prompt.
Probes (logistic regression on standardized features, fit on 3/4 of the scenes, accuracy on the other 1/4), per LLM
layer:
  - vision: the mean over the vision positions -> is the red cube on the left (colour + position, no language);
  - target: the last prompt token -> is the instructed cube on the left (needs colour, position and the words);
  - target on the eval's own scenes (red always left): the same probe where the words alone decide.
Chance is 50 % for each.

  PYTHONPATH=eval/.venv-target:/work/pyref MUJOCO_GL=osmesa python3 eval/probe_vlm.py <vlm run dir> [--scenes 240]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from pretrain_vlm import build_model, chat, pixel_values, render_scene  # noqa: E402


def robot_question(colour: str) -> str:
    return f"What action should the robot take to put the {colour} cube in the bowl?"


def probe_accuracy(x: np.ndarray, y: np.ndarray, rng) -> float:
    import torch
    n = len(y)
    order = rng.permutation(n)
    tr, te = order[: 3 * n // 4], order[3 * n // 4:]
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
    xt = torch.tensor((x - mu) / sd, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.float64)
    w = torch.zeros(x.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200)
    xa = torch.cat([xt, torch.ones(n, 1, dtype=torch.float64)], 1)

    def closure():
        opt.zero_grad()
        z = xa[tr] @ w
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, yt[tr]) + 1e-2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        return float(((xa[te] @ w > 0).double() == yt[te]).double().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--scenes", type=int, default=240)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json-out")
    args = p.parse_args()
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from sim import OBJECT_JITTER, RECEPTACLE_JITTER, SLOTS, TASKS_BY_NAME, TabletopEnv
    torch.set_num_threads(2)
    cfg = json.load(open(os.path.join(args.run, "config.json")))
    manifest = json.load(open(os.path.join(args.run, "manifest.json")))
    prep = json.load(open(os.path.join(args.run, "preprocessor_config.json")))
    tok = Tokenizer.from_file(os.path.join(args.run, "tokenizer.json"))
    model = build_model(manifest, cfg)
    model.load_state_dict(load_file(os.path.join(args.run, "model.safetensors")), strict=False)
    model.eval()
    env = TabletopEnv(manifest["vision"]["image_size"])
    rng = np.random.default_rng(args.seed)

    def features(frames: list, colours: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """[layers+1, N, hidden] mean vision state and last prompt token state (one batch per prompt: no padding)."""
        vis, last = None, None
        for c in sorted(set(colours)):
            idx = [i for i, x in enumerate(colours) if x == c]
            v, l_ = prompt_features([frames[i] for i in idx], c)
            if vis is None:
                vis, last = np.zeros((v.shape[0], len(frames), v.shape[2])), np.zeros((l_.shape[0], len(frames), l_.shape[2]))
            vis[:, idx], last[:, idx] = v, l_
        return vis, last

    def prompt_features(frames: list, colour: str) -> tuple[np.ndarray, np.ndarray]:
        px = torch.stack([pixel_values(list(f), prep) for f in frames])
        ids = [tok.encode(chat(robot_question(colour)), add_special_tokens=False).ids] * len(frames)
        with torch.no_grad():
            patches = model.patches(px)
            emb = model.language_model.model.embed_tokens(torch.tensor(ids))
            x = torch.cat([emb[:, :1], patches, emb[:, 1:]], 1)
            hs = torch.stack(model.language_model.model(inputs_embeds=x, output_hidden_states=True).hidden_states)
        npatch = patches.shape[1]
        return hs[:, :, : 1 + npatch].mean(2).numpy(), hs[:, :, -1].numpy()

    # Swapped scenes: the simulator's slots with the cubes' sides drawn at random.
    frames, red_left, colours = [], [], []
    for _ in range(args.scenes):
        rl = bool(rng.random() < 0.5)
        objs = [{"body": "red_cube", "shape": "cube", "colour": "red", "slot": "left" if rl else "right"},
                {"body": "blue_cube", "shape": "cube", "colour": "blue", "slot": "right" if rl else "left"}]
        for o in objs:
            o["xy"] = SLOTS[o["slot"]] + rng.uniform(-OBJECT_JITTER, OBJECT_JITTER, 2)
            o["in"] = None
        scene = {"objects": objs, "receptacles": {"bowl": SLOTS["bowl"] + rng.uniform(-RECEPTACLE_JITTER, RECEPTACLE_JITTER, 2)},
                 "hand": np.array([-0.1, 0.0, 0.2]), "fingers": 0.04, "yaw": [float(rng.uniform(-0.3, 0.3)) for _ in objs]}
        frames.append(render_scene(env, scene))
        red_left.append(rl)
        colours.append("red" if rng.random() < 0.5 else "blue")
    vis, last = features(frames, colours)
    red_left = np.array(red_left, float)
    target_left = np.array([rl if c == "red" else 1 - rl for rl, c in zip(red_left, colours)], float)
    # The eval's own scenes (red_bowl / blue_bowl seeds: red left, blue right): the words decide the side.
    task = TASKS_BY_NAME["red_bowl"]
    own = [env.reset(task, 10**6 + i) for i in range(args.scenes)]
    own_frames = [(o["agentview"], o["eye_in_hand"]) for o in own]
    own_colours = ["red" if rng.random() < 0.5 else "blue" for _ in own]
    _, own_last = features(own_frames, own_colours)
    own_target_left = np.array([c == "red" for c in own_colours], float)

    out = {"run": args.run, "scenes": args.scenes, "layers": []}
    for layer in range(vis.shape[0]):
        r = {"layer": layer,
             "vision_red_left": probe_accuracy(vis[layer], red_left, rng),
             "last_token_target_left": probe_accuracy(last[layer], target_left, rng),
             "last_token_target_left_eval_scenes": probe_accuracy(own_last[layer], own_target_left, rng)}
        out["layers"].append(r)
        print(f"layer {layer}: vision->red side {r['vision_red_left']:.2f}  last token->target side {r['last_token_target_left']:.2f}"
              f"  (eval scenes {r['last_token_target_left_eval_scenes']:.2f})", flush=True)
    if args.json_out:
        json.dump(out, open(args.json_out, "w"), indent=1)


if __name__ == "__main__":
    main()
