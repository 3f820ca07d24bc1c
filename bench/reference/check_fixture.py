"""Checks that eager.py computes what the released code computes: it must reproduce fixture A's expected_nocast
outputs (made by running the reference code) before its timings mean anything.
usage: python3 check_fixture.py <fixture dir, e.g. test/fixtures/m2vla-tiny-a>"""
import json
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(__file__))
import eager  # noqa: E402

run = sys.argv[1]
cases = load_file(os.path.join(run, "cases.safetensors"))
m = eager.load_run(run, torch.float32)
head = eager.load_head(run, torch.float32)
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
print(json.dumps({"max_abs_err": worst}))
sys.exit(0 if worst < 1e-4 else 1)
