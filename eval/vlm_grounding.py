"""Does a pretrained eval VLM see, apart from how it is asked? Its accuracy on unseen scenes asked with the TRAINING
phrasings (pretrain.json and `ask()` use held-out phrasings, which mix both), per question kind; for the robot's
prompt also whether the answer's first word is right (the side for --robot-answer where, the colour for target).

  PYTHONPATH=eval/.venv-target:<dir with torch, transformers, safetensors, tokenizers> MUJOCO_GL=osmesa \\
      python3 eval/vlm_grounding.py eval/results/.vlm-cache/vlm-<hash> [--scenes 60]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import pretrain_vlm as P  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("vlm", help="a run directory written by eval/pretrain_vlm.py")
    p.add_argument("--scenes", type=int, default=60)
    p.add_argument("--seed", type=int, default=777, help="scene stream (pretraining uses 0, its held-out set 10^6)")
    args = p.parse_args()
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from sim import TabletopEnv

    torch.set_num_threads(2)
    read = lambda name: json.load(open(os.path.join(args.vlm, name)))  # noqa: E731
    cfg, manifest, prep, info = read("config.json"), read("manifest.json"), read("preprocessor_config.json"), read("pretrain.json")
    tok = Tokenizer.from_file(os.path.join(args.vlm, "tokenizer.json"))
    im_end = tok.token_to_id("<|im_end|>")
    model = P.build_model(manifest, cfg)
    # The file also holds what the policy's layout keeps and this model lacks (SigLIP's MAP head, the action queries).
    names = set(model.state_dict())
    model.load_state_dict({k: v.float() for k, v in load_file(os.path.join(args.vlm, "model.safetensors")).items() if k in names})
    model.eval()
    env = TabletopEnv(manifest["vision"]["image_size"])
    rng = np.random.default_rng(args.seed)
    correct: dict[str, list[bool]] = {}
    for _ in range(args.scenes):
        scene = P.sample_scene(rng)
        with torch.no_grad():
            patches = model.patches(P.pixel_values(list(P.render_scene(env, scene)), prep).unsqueeze(0))
        for kind, q, a in P.questions(scene, rng, P.TRAIN_TEMPLATES, P.ROBOT_TRAIN, info.get("robot_answer", "where")):
            got = P.greedy_answer(model, tok, im_end, patches, q)
            correct.setdefault(kind, []).append(got == a)
            if kind == "robot":
                correct.setdefault("robot, first word", []).append(got.split()[:1] == a.split()[:1])
    print(f"{os.path.basename(os.path.normpath(args.vlm))}, {args.scenes} unseen scenes, training phrasings: " +
          ", ".join(f"{k} {sum(v)}/{len(v)}" for k, v in correct.items()))


if __name__ == "__main__":
    main()
