"""PyTorch eager reference of the M²-VLA forward and training step, for side-by-side benchmarks and full-size
cross-checks.

Runs the model the way the released code does (timm ViTs, transformers Qwen2 with output_hidden_states and the LM
head over every position, a head written from SPEC.md §3), on a run directory in the released layout, with the same
thread count as the m2vla side. Prints one JSON line: timings (ms) and, with --dump, writes outputs to a
safetensors file so m2vla's outputs can be compared at full size.

--mode train times the training step as a PyTorch user writes it with finetune.py's conventions (SPEC §2, §3.2) on a
frozen VLM: the whole sequence (vision, prompt, action queries) through the VLM with autograd (only the action
queries, the proprio projector and the head require grad), the MSM query then the bank fill, the L1 loss with the
latent perturbation, backward, gradient clipping, AdamW; bfloat16 = VLM in bfloat16 and the step under CPU autocast.
It reads the micro-batch bench/train.bench.ts wrote (--batch-dir) and draws the perturbation from a generator seeded
as m2vla's trainer is, so its first loss is m2vla's first loss on the same batch. It also reports peak RSS.

--mode stages times the VLM per stage (vision, projector, LLM): eager with the LM-head logits, eager without them,
and with --compile torch.compile (Inductor, freezing) without them, in one process.

--device cuda (or cuda:N) puts the weights and every tensor on that GPU and synchronizes it before each clock read.

--impl: 'released' builds the VLM with timm and transformers (bench/reference/requirements.txt), 'torch' with
torch_only.py (the same modules in plain torch, and a safetensors reader: for a machine with only a PyTorch, such as
the lent GPU machine); 'auto' (default) takes 'released' when timm, transformers and safetensors import. The JSON
line names the one that ran; check_fixture.py checks either against fixture A's reference outputs.

usage: python3 eager.py <run_dir> [--mode backbone|policy|train|stages] [--compile] [--dtype float32|bfloat16] [--threads 2]
                        [--device cpu|cuda[:N]] [--impl auto|released|torch]
                        [--iters 5] [--warmup 1] [--prompt-len 50] [--seed 0] [--dump out.safetensors]
                        [--batch-dir dir --lr 1e-4 --clip 1.0 --memory-sample-rate 0.2]
"""
import argparse
import json
import math
import os
import statistics
import time

import sys

import torch
import torch.nn.functional as F


_TORCHVISION_CHECKED = []


def tolerate_torchvision_without_ops():
    """(Once per process.) A torchvision whose compiled ops do not load with this torch (a CUDA wheel beside a CPU torch) fails at import,
    registering fake kernels for two of them, and timm imports it. Define those two schemas so the import succeeds;
    nothing here calls them."""
    if _TORCHVISION_CHECKED:
        return
    _TORCHVISION_CHECKED.append(True)
    try:
        import torchvision  # noqa: F401
    except ModuleNotFoundError:
        return
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
        for op in ("nms", "qnms"):
            torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]


def released_available():
    """Whether the released implementation's libraries import (timm, transformers, safetensors)."""
    try:
        tolerate_torchvision_without_ops()
        import safetensors.torch  # noqa: F401
        import timm  # noqa: F401
        import transformers  # noqa: F401
        return True
    except ImportError:
        return False


def pick_impl(impl):
    """--impl auto|released|torch -> 'released' or 'torch'."""
    if impl == "auto":
        return "released" if released_available() else "torch"
    if impl == "released" and not released_available():
        raise SystemExit("eager.py --impl released: timm, transformers and safetensors must import (requirements.txt)")
    return impl


def load_safetensors(path, impl):
    if impl == "torch":
        import torch_only
        return torch_only.load_file(path)
    from safetensors.torch import load_file
    return load_file(path)


def sync(device):
    """Waits for the device before a clock read (a GPU runs what the host queued later)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_run(run, dtype, device="cpu", impl="released"):
    device = torch.device(device)
    cfg = json.load(open(os.path.join(run, "config.json")))
    manifest_path = os.path.join(run, "manifest.json")
    manifest = json.load(open(manifest_path)) if os.path.exists(manifest_path) else None
    size = cfg["image_sizes"][0]
    sd = load_safetensors(os.path.join(run, "model.safetensors"), impl)
    mv = manifest["vision"] if manifest else {}
    proj = {k: sd[f"projector.{k}"].to(device, dtype) for k in ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]}
    common = dict(size=size, proj=proj, aq=sd["action_queries.weight"].to(device, dtype), manifest=manifest, device=device,
                  impl=impl)
    if impl == "torch":
        import torch_only
        ids = cfg.get("timm_model_ids", [None, None])
        dino = torch_only.tower(sd, "vision_backbone.featurizer.", ids[0], mv.get("featurizer"), size)
        siglip = torch_only.tower(sd, "vision_backbone.fused_featurizer.", ids[1], mv.get("fused_featurizer"), size)
        llm = torch_only.qwen2(cfg["text_config"], sd)
        return dict(dino=dino.to(device, dtype).eval(), siglip=siglip.to(device, dtype).eval(),
                    llm=llm.to(device, dtype).eval(), **common)
    tolerate_torchvision_without_ops()
    import timm
    from transformers import Qwen2Config, Qwen2ForCausalLM

    def tower(prefix, timm_id, dims):
        kw = dict(pretrained=False, img_size=size, num_classes=0, act_layer=None)
        if dims:
            kw.update(embed_dim=dims["embed_dim"], depth=dims["depth"], num_heads=dims["num_heads"])
        m = timm.create_model(timm_id, **kw)
        own = {k[len(prefix):].replace("scale_factor", "gamma"): v for k, v in sd.items() if k.startswith(prefix)}
        m.load_state_dict(own, strict=True)
        return m.to(device, dtype).eval()

    dino = tower("vision_backbone.featurizer.", cfg["timm_model_ids"][0], mv.get("featurizer"))
    siglip = tower("vision_backbone.fused_featurizer.", cfg["timm_model_ids"][1], mv.get("fused_featurizer"))

    tc = dict(cfg["text_config"])
    qcfg = Qwen2Config(**{k: v for k, v in tc.items() if k not in ("architectures", "dtype", "torch_dtype")})
    qcfg._attn_implementation = "sdpa"
    llm = Qwen2ForCausalLM(qcfg)
    own = {k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")}
    own.setdefault("lm_head.weight", own["model.embed_tokens.weight"])
    llm.load_state_dict(own, strict=True)
    return dict(dino=dino, siglip=siglip, llm=llm.to(device, dtype).eval(), **common)


def vlm_forward(m, pixel_values, ids, with_logits):
    """pixel_values (B, 6*N, S, S); ids (B, P). Returns hidden states tuple and the projected patches."""
    vision, projector, llm = vlm_stages(m, with_logits)
    patches = projector(vision(pixel_values))
    return llm(patches, ids), patches


def vlm_stages(m, with_logits, compiled=False):
    """vlm_forward split into (vision, projector, llm) callables for per-stage timing; with `compiled`, each is
    torch.compile'd (Inductor, freezing: weights are constants, as a deployment would compile them)."""
    def vision(pv):
        n_img = pv.shape[1] // 6
        feats = []
        for i in range(n_img):
            img = pv[:, 6 * i:6 * i + 6]
            d = m["dino"].get_intermediate_layers(img[:, :3], n={len(m["dino"].blocks) - 2})[0]
            s = m["siglip"].get_intermediate_layers(img[:, 3:], n={len(m["siglip"].blocks) - 2})[0]
            feats.append(torch.cat([d, s], dim=-1))
        return torch.cat(feats, dim=1)

    def projector(x):
        p = m["proj"]
        x = F.gelu(F.linear(x, p["fc1.weight"], p["fc1.bias"]))
        x = F.gelu(F.linear(x, p["fc2.weight"], p["fc2.bias"]))
        return F.linear(x, p["fc3.weight"], p["fc3.bias"])

    def llm(patches, ids):
        emb = m["llm"].model.embed_tokens
        B = ids.shape[0]
        stop = torch.full((B, 1), 2, dtype=torch.long, device=ids.device)
        aq = m["aq"].to(patches.dtype).unsqueeze(0).expand(B, -1, -1)  # trained in float32, run in the VLM's dtype
        seq = torch.cat([emb(ids[:, :1]), patches, emb(ids[:, 1:]), aq, emb(stop)], dim=1)
        # with_logits: what the released predict_action computes, the LM head over every position
        net = m["llm"] if with_logits else m["llm"].model
        return net(inputs_embeds=seq, output_hidden_states=True, use_cache=False).hidden_states

    if not compiled:
        return vision, projector, llm
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True
    return tuple(torch.compile(f) for f in (vision, projector, llm))


def stages_main(a, m, dtype):
    """Per-stage p50 (ms) of the VLM forward: eager with the LM-head logits (as released), eager without, and
    (with --compile) torch.compile without logits, with its compile time. One JSON line."""
    g = torch.Generator().manual_seed(a.seed)
    _, _, _, n_img = sequence_dims(m)
    dev = m["device"]
    pv = torch.randn(a.batch, 6 * n_img, m["size"], m["size"], generator=g).to(dev, dtype)
    ids = torch.randint(3, m["llm"].config.vocab_size, (a.batch, a.prompt_len), generator=g).to(dev)
    variants = [("eager_logits", True, False), ("eager", False, False)] + ([("compile", False, True)] if a.compile else [])
    out = {"engine": "pytorch", "torch": torch.__version__, "mode": "stages", "dtype": a.dtype, "threads": a.threads,
           "iters": a.iters, "device": str(dev), "impl": m["impl"]}
    with torch.inference_mode():
        for name, logits, compiled in variants:
            vision, projector, llm = vlm_stages(m, logits, compiled)
            t0 = time.perf_counter()
            llm(projector(vision(pv)), ids)  # warm-up (the compile, for torch.compile)
            sync(dev)
            first_ms = (time.perf_counter() - t0) * 1000
            rows = {"vision": [], "projector": [], "llm": [], "total": []}
            for _ in range(a.warmup - 1 + a.iters):
                sync(dev)
                t = [time.perf_counter()]
                x = vision(pv); sync(dev); t.append(time.perf_counter())
                x = projector(x); sync(dev); t.append(time.perf_counter())
                llm(x, ids); sync(dev); t.append(time.perf_counter())
                for k, (u, v) in zip(("vision", "projector", "llm"), zip(t, t[1:])):
                    rows[k].append((v - u) * 1000)
                rows["total"].append((t[-1] - t[0]) * 1000)
            out[name] = {k: statistics.median(v[a.warmup - 1:]) for k, v in rows.items()}
            if compiled:
                out[name]["compile_s"] = first_ms / 1000
    out["peak_gib"] = rss("VmHWM") / 2**30
    print(json.dumps(out))


def rope(x):
    """Head RoPE as released: cos/sin from cat([freqs, freqs]) applied with an interleaved rotate_half."""
    T, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, device=x.device).float() / hd))
    f = torch.outer(torch.arange(T, device=x.device).float(), inv)
    emb = torch.cat([f, f], dim=-1)
    rot = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).reshape_as(x)
    return x * emb.cos().to(x.dtype) + rot * emb.sin().to(x.dtype)


def load_head(run, dtype, device="cpu", impl="released"):
    def load(name):
        path = os.path.join(run, f"{name}.safetensors")
        return {k.removeprefix("module."): v.to(device) for k, v in load_safetensors(path, impl).items()}
    h = load("action_head")
    hd = {k: (v.to(dtype) if v.is_floating_point() and not k.startswith("memory_bank.") else v) for k, v in h.items()}
    for k in ("memory_bank.keys", "memory_bank.values"):  # MemoryBank's buffers are bf16: load_state_dict rounds into them
        hd[k] = hd[k].to(torch.bfloat16)
    return hd, {k: v.to(dtype) for k, v in load("proprio_projector").items()}


def head_inputs(hidden, np_, P, NT):
    """The head's input (B, layers, np_ + NT, D): per hidden state, the vision slice and the action-query slice, both
    shifted by one position as the released code slices them (SPEC §1.5)."""
    return torch.stack([torch.cat([hs[:, :np_], hs[:, np_ + P - 1:np_ + P - 1 + NT]], dim=1) for hs in hidden], dim=1)


def msm_key(stack, np_, key_layers):
    """The MSM query: the key layers' vision slices averaged over positions, concatenated (float32, no gradient)."""
    return torch.cat([stack[:, k, :np_].mean(dim=1) for k in key_layers], dim=-1).float().detach()


def head_forward(h, pp, stack, np_, proprio, key_layers, top_k, perturbation=None):
    """The M²-VLA L1 head (MoL blocks + MSM) on head_inputs(); returns normalized actions (B, chunk, A) and the
    top-k bank indices. `perturbation` (chunk, A * D) is added to the zero latent (training)."""
    lin = lambda x, n: F.linear(x, h[n + ".weight"], h[n + ".bias"])
    B, D = stack.shape[0], stack.shape[-1]
    task, aq = stack[:, :, :np_], stack[:, :, np_:]
    pf = F.linear(F.gelu(F.linear(proprio, pp["fc1.weight"], pp["fc1.bias"])), pp["fc2.weight"], pp["fc2.bias"]).unsqueeze(1)
    key = msm_key(stack, np_, key_layers)
    size = int(h["memory_bank.size"])
    vals = h["memory_bank.values"][:size].float()
    sim = -10000 * torch.cdist(key, h["memory_bank.keys"][:size].float(), p=1) / key.shape[1]
    _, idx = torch.topk(sim, k=min(top_k, size), dim=-1)
    retrieved = vals[idx].to(stack.dtype)
    h_mem = lin(retrieved, "memory_value_proj")
    A = h["model.fc2.weight"].shape[0]
    chunk = h["memory_value_proj.weight"].shape[1] // A
    x = torch.zeros(B, chunk, A * D, dtype=stack.dtype, device=stack.device)
    if perturbation is not None:
        x = x + perturbation
    x = F.relu(lin(F.layer_norm(x, (A * D,), h["model.layer_norm1.weight"], h["model.layer_norm1.bias"]), "model.fc1"))
    nblocks = len({k.split(".")[2] for k in h if k.startswith("model.mlp_resnet_blocks.")})
    H = h["model.mlp_resnet_blocks.0.k_adapter.weight"].shape[0] - D
    hd = D // H
    heads = lambda t: t.view(B, t.shape[1], H, hd).transpose(1, 2)
    for i in range(nblocks):
        b = f"model.mlp_resnet_blocks.{i}."
        ha = torch.cat([aq[:, i + 1], pf], dim=1)
        ht = task[:, i + 1]
        q, ks, vs = rope(heads(lin(x, b + "q_proj"))), rope(heads(lin(x, b + "k_self"))), heads(lin(x, b + "v_self"))
        kfull = lin(ha, b + "k_adapter")
        ka, gate = rope(heads(kfull[..., :D])), kfull[..., D:]
        va = heads(lin(ha, b + "v_adapter"))
        kt, vt = rope(heads(lin(ht, b + "k_task"))), heads(lin(ht, b + "v_task"))
        sa = torch.softmax(q @ ks.transpose(-2, -1) / math.sqrt(hd), -1) @ vs
        ca = torch.softmax(q @ ka.transpose(-2, -1) / math.sqrt(hd), -1) @ va
        ca = ca * torch.sigmoid(gate.view(B, -1, H, 1).transpose(1, 2).mean(dim=2, keepdim=True))
        cv = torch.softmax(q @ kt.transpose(-2, -1) * torch.tanh(h[b + "gating_factor"]) / math.sqrt(hd), -1) @ vt
        out = lin(torch.stack([sa, ca, cv]).mean(0).transpose(1, 2).reshape(B, chunk, D), b + "o_proj")
        qm = x.reshape(B, 1, chunk * D)
        w = torch.softmax(qm @ h_mem.transpose(-2, -1) / math.sqrt(chunk * D), -1)
        out = out + (w @ h_mem).reshape(B, chunk, D)
        y = F.layer_norm(out + x, (D,), h[b + "ffn.0.weight"], h[b + "ffn.0.bias"])
        x = F.relu(lin(y, b + "ffn.1"))
    x = F.layer_norm(x, (D,), h["model.layer_norm2.weight"], h["model.layer_norm2.bias"])
    return lin(x, "model.fc2"), idx


def sequence_dims(m):
    """(action queries NT, MSM key layers, top-k, images per observation) of a run: its manifest or the released ones."""
    man = m["manifest"]
    if not man:
        return 64, [3, 11, 23], 4, 2
    mem = man["action_head"]["memory"]
    return man["sequence"]["num_action_queries_NT"], mem["key_layer_indices"], mem.get("top_k", 4), man["vision"]["num_images"]


def rss(key):
    """VmRSS / VmHWM of this process in bytes."""
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def read_batch(d):
    """The micro-batch bench/train.bench.ts wrote: pixel values, prompts (ids and lengths), normalized proprio and
    action chunks."""
    import numpy as np
    meta = json.load(open(os.path.join(d, "batch.json")))
    f32 = lambda name: torch.from_numpy(np.fromfile(os.path.join(d, name + ".f32"), dtype=np.float32).reshape(meta[name]))
    ids, lengths, prompts, at = meta["promptIds"], meta["promptLengths"], [], 0
    for n in lengths:
        prompts.append(ids[at:at + n])
        at += n
    return f32("pixels"), prompts, f32("proprio"), f32("actions")


def bank_append(h, keys, values):
    """FIFO append of (key, normalized chunk) rows to the head's memory bank (oldest rows dropped when full)."""
    k, v, size = h["memory_bank.keys"], h["memory_bank.values"], int(h["memory_bank.size"])
    cap, n = k.shape[0], keys.shape[0]
    if size + n > cap:
        drop = size + n - cap
        k[:size - drop] = k[drop:size].clone()
        v[:size - drop] = v[drop:size].clone()
        size -= drop
    k[size:size + n] = keys.to(k.dtype)
    v[size:size + n] = values.to(v.dtype)
    h["memory_bank.size"].fill_(size + n)


def train_main(a):
    """Times the eager training step (see the module docstring) and prints its JSON line."""
    bf16 = a.dtype == "bfloat16"
    vlm_dtype = torch.bfloat16 if bf16 else torch.float32
    t0 = time.perf_counter()
    m = load_run(a.run, vlm_dtype, a.device, a.impl)
    dev = m["device"]
    for module in (m["dino"], m["siglip"], m["llm"]):
        module.requires_grad_(False)
    h, pp = load_head(a.run, torch.float32, dev, a.impl)
    m["aq"] = m["aq"].float()
    # The head tensors its forward reads (k_memory, v_memory and film_gen are in the checkpoint but unused, SPEC §3.1).
    unused = ("memory_bank.", ".k_memory.", ".v_memory.", ".film_gen.")
    trainable = [m["aq"]] + [t for n, t in h.items() if t.is_floating_point() and not any(u in n for u in unused)]
    trainable += list(pp.values())
    for t in trainable:
        t.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=0.01)
    NT, key_layers, top_k, _ = sequence_dims(m)
    pixels, prompts, proprio, actions = (t.to(dev) if torch.is_tensor(t) else t for t in read_batch(a.batch_dir))
    chunk, A = actions.shape[1], actions.shape[2]
    D = m["aq"].shape[1]
    # Prompts of one length per VLM pass, as m2vla runs them (no padding mask), back in batch order for the head.
    groups = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    order = [i for members in groups.values() for i in members]
    inverse = torch.tensor(order).argsort().to(dev)
    g = torch.Generator().manual_seed(a.seed)  # m2vla's trainer draws from one generator seeded the same way
    load_ms = (time.perf_counter() - t0) * 1000
    loaded = rss("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    times, losses = [], []
    for it in range(a.warmup + a.iters):
        sync(dev)
        t = time.perf_counter()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            stacks, np_ = [], 0
            for length, members in groups.items():
                ids = torch.tensor([prompts[i] for i in members], device=dev)
                hidden, patches = vlm_forward(m, pixels[members].to(vlm_dtype), ids, False)
                np_ = patches.shape[1]
                stacks.append(head_inputs(hidden, np_, length, NT))
            stack = torch.cat(stacks)[inverse]
            perturbation = (torch.randn(chunk, A * D, generator=g) * 0.02).to(dev)  # learnable_random_perturbations: fresh, not optimized
            pred, _ = head_forward(h, pp, stack, np_, proprio, key_layers, top_k, perturbation)
        loss = (pred.float() - actions).abs().mean()
        loss.backward()
        if torch.rand(1, generator=g).item() < a.memory_sample_rate:  # query first (above), then offer the batch
            bank_append(h, msm_key(stack, np_, key_layers), actions.reshape(actions.shape[0], -1))
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, a.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())  # (a host read: the step is done on any device)
        if it >= a.warmup:
            times.append((time.perf_counter() - t) * 1000)
    peak = rss("VmHWM")
    print(json.dumps({"engine": "pytorch-eager", "torch": torch.__version__, "mode": "train", "dtype": a.dtype,
                      "device": str(dev), "impl": m["impl"], "threads": a.threads, "iters": a.iters, "load_ms": load_ms, "mean_ms": statistics.mean(times),
                      "min_ms": min(times), "losses": losses, "parameters": sum(t.numel() for t in trainable),
                      "loaded_gib": loaded / 2**30, "peak_gib": peak / 2**30, "training_gib": (peak - loaded) / 2**30}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--mode", choices=["backbone", "policy", "train", "stages"], default="backbone")
    ap.add_argument("--compile", action="store_true", help="--mode stages: also time torch.compile (Inductor)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--impl", choices=["auto", "released", "torch"], default="auto")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompt-len", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dump")
    ap.add_argument("--batch-dir")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--memory-sample-rate", type=float, default=0.2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.impl = pick_impl(a.impl)
    if a.mode == "train":
        return train_main(a)
    dtype = torch.bfloat16 if a.dtype == "bfloat16" else torch.float32
    t0 = time.perf_counter()
    m = load_run(a.run, dtype, a.device, a.impl)
    dev = m["device"]
    if a.mode == "stages":
        return stages_main(a, m, dtype)
    head = load_head(a.run, dtype, dev, a.impl) if a.mode == "policy" else None
    sync(dev)
    load_ms = (time.perf_counter() - t0) * 1000
    g = torch.Generator().manual_seed(a.seed)  # drawn on the CPU: the same inputs on every device
    NT, keys, top_k, n_img = sequence_dims(m)
    pv = torch.randn(a.batch, 6 * n_img, m["size"], m["size"], generator=g).to(dev, dtype)
    vocab = m["llm"].config.vocab_size
    ids = torch.randint(3, vocab, (a.batch, a.prompt_len), generator=g).to(dev)
    proprio = (torch.rand(a.batch, 8, generator=g).to(dtype) * 2 - 1).to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.inference_mode():
        for it in range(a.warmup + a.iters):
            sync(dev)
            t = time.perf_counter()
            hidden, patches = vlm_forward(m, pv, ids, with_logits=a.mode == "policy")
            if head:
                np_ = patches.shape[1]
                actions, idx = head_forward(*head, head_inputs(hidden, np_, a.prompt_len, NT), np_, proprio, keys, top_k)
            sync(dev)
            if it >= a.warmup:
                times.append((time.perf_counter() - t) * 1000)
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(round(p / 100 * (len(times) - 1))))]
    out = {"engine": "pytorch-eager", "torch": torch.__version__, "mode": a.mode, "dtype": a.dtype, "device": str(dev),
           "impl": a.impl, "threads": a.threads, "iters": a.iters, "batch": a.batch, "prompt_len": a.prompt_len,
           "load_ms": load_ms, "mean_ms": statistics.mean(times), "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
           "min_ms": times[0]}
    if dev.type == "cuda":
        out.update(gpu=torch.cuda.get_device_name(dev), peak_mib=torch.cuda.max_memory_allocated(dev) / 2**20)
    print(json.dumps(out))
    if a.dump:
        from safetensors.torch import save_file
        out = {"pixel_values": pv.float(), "input_ids": ids, "proprio": proprio.float(),
               "hidden_last": hidden[-1].float().contiguous(), "projected_patches": patches.float().contiguous()}
        if head:
            out.update(normalized_actions=actions.float().contiguous(), topk_indices=idx)
        save_file({k: v.cpu() for k, v in out.items()}, a.dump)


if __name__ == "__main__":
    main()
