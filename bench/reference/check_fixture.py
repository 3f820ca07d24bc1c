"""Checks that eager.py computes what the released code computes: it must reproduce fixture A's expected_nocast
outputs (made by running the reference code) before its timings mean anything.
usage: python3 check_fixture.py <fixture dir, e.g. test/fixtures/m2vla-tiny-a> [--impl auto|released|torch] [--device cpu|cuda]"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import eager  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("run")
ap.add_argument("--impl", choices=["auto", "released", "torch"], default="auto")
ap.add_argument("--device", default="cpu")
a = ap.parse_args()
impl = eager.pick_impl(a.impl)
dev = torch.device(a.device)
torch.backends.cudnn.allow_tf32 = False  # the patch-embedding conv in float32, not TF32 (the tolerance is 1e-4)
cases = {k: v.to(dev) for k, v in eager.load_safetensors(os.path.join(a.run, "cases.safetensors"), impl).items()}
m = eager.load_run(a.run, torch.float32, dev, impl)
head = eager.load_head(a.run, torch.float32, dev, impl)
man = m["manifest"]
worst = 0.0
with torch.inference_mode():
    for c in [c["name"] for c in man["cases"]]:
        ids = cases[f"{c}.input.input_ids"]
        hidden, patches = eager.vlm_forward(m, cases[f"{c}.expected.pixel_values"], ids, with_logits=False)
        proprio = cases[f"{c}.expected.proprio_norm"].float()
        np_ = patches.shape[1]
        stack = eager.head_inputs(hidden, np_, ids.shape[1], man["sequence"]["num_action_queries_NT"])
        actions, idx = eager.head_forward(*head, stack, np_, proprio, man["action_head"]["memory"]["key_layer_indices"], 4)
        err = (actions - cases[f"{c}.expected_nocast.normalized_actions"]).abs().max().item()
        same = torch.equal(idx, cases[f"{c}.expected_nocast.msm.topk_indices"])
        print(f"{c}: normalized actions max abs err {err:.2e}, top-k indices equal: {same}")
        worst = max(worst, err if same else float("inf"))
print(json.dumps({"max_abs_err": worst, "impl": impl, "device": str(dev)}))
sys.exit(0 if worst < 1e-4 else 1)
