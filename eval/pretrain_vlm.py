"""Pretrains the eval's tiny frozen VLM on the simulator's world: a stand-in for the generalist VLM a user downloads.

The model is the Prismatic layout m2vla loads (DINOv2-style tower with class + 4 register tokens and LayerScale,
SigLIP-style tower, the fused GELU MLP projector, a small Qwen2), with the tensor names and dims of a base run
directory (lib/random-run.ts, eval/dims.ts EVAL_DIMS). The towers keep the base's weights (frozen, as Prismatic keeps
its pretrained towers; --towers trained trains them too); the projector and the LLM are trained from scratch with
next-token loss on the answer tokens only, on questions about rendered scenes (both cameras, as the policy sees them):
  - colour, shape, presence and count of the objects;
  - where an object is (left / right / center of the table, front / back), which is closer to the bowl or plate;
  - relations (is A left of B), what lies in the bowl or on the plate;
  - grounding in the robot's own prompt template: "What action should the robot take to <task>?" -> where the
    object to grasp is, for instructions paraphrased many ways.
Scenes use the objects of eval/sim.py recoloured from a palette (red, blue, yellow, green, purple, orange), cubes
and a cylinder, at the simulator's slots and anywhere on the table; the yellow cylinder, never in a demonstration,
is as common as the cubes. Held out from training and used only to measure: other scenes (other seeds) and the
question phrasings in HELD_OUT_TEMPLATES.

Output: a run directory in the released layout (the base's files, model.safetensors replaced), written as
<out-root>/vlm-<recipe hash>.tmp-<pid> and renamed when complete, so a stopped run leaves no half-written VLM; an
existing <out-root>/vlm-<hash> (same RECIPE_VERSION, options and base) is reused. Also written: heldout.json (questions
with their images, for m2vla's ask(), eval/vqa.ts) and pretrain.json (time, loss, held-out accuracy in PyTorch).

  PYTHONPATH=eval/.venv-target:/work/pyref MUJOCO_GL=osmesa python3 eval/pretrain_vlm.py \\
      --base <random run dir> --out-root <dir> [--steps 3000] [--threads 2]
Prints the run directory's path as the last line.
"""
from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import json
import math
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

# Part of the recipe hash with the options and the base: bump it with any change to this file that changes the weights
# (scenes, questions, model, training), so that a cached VLM is never reused for another recipe; edits that do not
# (comments, measurements, output) keep the cache.
RECIPE_VERSION = 3
PALETTE = {"red": (0.85, 0.1, 0.1), "blue": (0.1, 0.2, 0.9), "yellow": (0.95, 0.85, 0.1), "green": (0.1, 0.7, 0.2),
           "purple": (0.55, 0.15, 0.75), "orange": (0.95, 0.5, 0.05)}
BODIES = {"red_cube": "cube", "blue_cube": "cube", "yellow_cylinder": "cylinder"}
CANONICAL = {"red_cube": "red", "blue_cube": "blue", "yellow_cylinder": "yellow"}
NUMBERS = ["zero", "one", "two", "three"]

# ------------------------------------------------------------------------------------------------ scenes


def sample_scene(rng: np.random.Generator) -> dict:
    """Which objects (body, colour, shape, xy), which receptacles (xy), where the hand is."""
    from sim import SLOTS, OBJECT_JITTER, RECEPTACLE_JITTER
    n = int(rng.choice([1, 2, 3], p=[0.25, 0.5, 0.25]))
    bodies = list(rng.permutation(list(BODIES))[:n])
    canonical = rng.random() < 0.5
    colours = list(rng.permutation(list(PALETTE)))
    objects = []
    for i, b in enumerate(bodies):
        objects.append({"body": b, "shape": BODIES[b], "colour": CANONICAL[b] if canonical else colours[i]})
    rec = {}
    for name in ("bowl", "plate"):
        if rng.random() < 0.8:
            rec[name] = SLOTS[name] + rng.uniform(-RECEPTACLE_JITTER, RECEPTACLE_JITTER, 2)
    # Objects: the simulator's slots (left / right) or anywhere on the table, kept apart.
    slots = list(rng.permutation(["left", "right"]))
    placed: list[np.ndarray] = []
    for i, o in enumerate(objects):
        for _ in range(100):
            r = rng.random()
            if r < 0.45 and i < 2:
                xy = SLOTS[slots[i]] + rng.uniform(-OBJECT_JITTER, OBJECT_JITTER, 2)
            elif r < 0.6 and rec:
                name = list(rec)[int(rng.integers(len(rec)))]
                xy = rec[name] + rng.uniform(-0.015, 0.015, 2)
            else:
                xy = np.array([rng.uniform(-0.1, 0.17), rng.uniform(-0.2, 0.2)])
            if all(np.linalg.norm(xy - p) > 0.065 for p in placed):
                break
        placed.append(xy)
        o["xy"] = xy
        o["in"] = next((name for name, r in rec.items() if np.linalg.norm(xy - r) < 0.04), None)
    hand = np.array([rng.uniform(-0.2, 0.1), rng.uniform(-0.15, 0.15), rng.uniform(0.07, 0.22)])
    return {"objects": objects, "receptacles": rec, "hand": hand, "fingers": float(rng.uniform(0.01, 0.045)),
            "yaw": [float(rng.uniform(-0.3, 0.3)) for _ in objects]}


def render_scene(env, scene: dict) -> tuple[np.ndarray, np.ndarray]:
    import mujoco
    from sim import CUBE_HALF, PARK
    m, d = env.model, env.data
    mujoco.mj_resetData(m, d)
    for i, name in enumerate(("bowl", "plate")):
        xy = scene["receptacles"].get(name)
        m.body_pos[env.body[name]] = [xy[0], xy[1], 0.0] if xy is not None else PARK + [0, 0.3 + 0.3 * i, 0]
    present = {o["body"]: (o, yaw) for o, yaw in zip(scene["objects"], scene["yaw"])}
    for i, body in enumerate(BODIES):
        a = env.qadr[body]
        geom = m.body_geomadr[env.body[body]]
        if body in present:
            o, yaw = present[body]
            z = CUBE_HALF + (0.003 if o["in"] else 0.0)
            d.qpos[a:a + 3] = [o["xy"][0], o["xy"][1], z]
            d.qpos[a + 3:a + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
            m.geom_rgba[geom] = [*PALETTE[o["colour"]], 1.0]
        else:
            d.qpos[a:a + 3] = PARK + [0, 0.1 * i, 0]
            d.qpos[a + 3:a + 7] = [1, 0, 0, 0]
    a = env.qadr["hand"]
    d.qpos[a:a + 3] = scene["hand"]
    d.qpos[a + 3:a + 7] = [1, 0, 0, 0]
    d.qpos[env.qadr["finger_left"]] = scene["fingers"]
    d.qpos[env.qadr["finger_right"]] = -scene["fingers"]
    mujoco.mj_forward(m, d)
    return env.render("agentview"), env.render("eye_in_hand")


# ------------------------------------------------------------------------------------------------ questions

def side(xy) -> str:
    # The front camera looks along -x with +y to the image's right.
    return "left" if xy[1] < -0.05 else "right" if xy[1] > 0.05 else "center"


def depth(xy) -> str:
    return "front" if xy[0] > 0.06 else "back"


def name(o) -> str:
    return f"{o['colour']} {o['shape']}"


def synonyms(o, rng) -> str:
    shape = {"cube": ["cube", "block", "box"], "cylinder": ["cylinder", "can"]}[o["shape"]]
    return f"{o['colour']} {shape[int(rng.integers(len(shape)))]}"


TRAIN_TEMPLATES = {
    "colour": ["what color is the {shape} on the {side}?", "which color is the {side} {shape}?",
               "tell me the color of the {shape} on the {side}."],
    "shape": ["what shape is the {colour} object?", "what is the shape of the {colour} thing?",
              "the {colour} object is which shape?"],
    "where": ["where is the {obj}?", "on which side of the table is the {obj}?", "where can you see the {obj}?"],
    "depth": ["is the {obj} in the front or the back?", "is the {obj} near or far?"],
    "exists": ["is there a {obj}?", "do you see a {obj}?", "is a {obj} on the table?"],
    "count": ["how many objects are on the table?", "count the objects.", "how many things can you see?"],
    "left_of": ["is the {a} left of the {b}?", "is the {a} to the left of the {b}?"],
    "closer": ["which is closer to the {rec}, the {a} or the {b}?", "which object is nearer the {rec}: the {a} or the {b}?"],
    "in": ["what is in the {rec}?", "what lies in the {rec}?"],
}
# Phrasings never trained on: ask() accuracy is measured on these, on unseen scenes.
HELD_OUT_TEMPLATES = {
    "colour": ["name the color of the {side} {shape}."],
    "shape": ["describe the shape of the {colour} item."],
    "where": ["in which part of the table is the {obj}?"],
    "exists": ["can you find a {obj}?"],
    "count": ["what is the number of objects?"],
    "left_of": ["is the {a} on the left of the {b}?"],
}
ACTION_VERBS = [("put", "in"), ("place", "in"), ("put", "into"), ("move", "into"), ("drop", "in")]
PLATE_VERBS = [("put", "on"), ("place", "on"), ("set", "on"), ("move", "onto")]
LIFT = ["pick up the {obj}", "lift the {obj}", "grab the {obj}", "raise the {obj}"]
ROBOT_TRAIN = (ACTION_VERBS, PLATE_VERBS, LIFT)
ROBOT_HELD_OUT = ([("transfer", "into"), ("carry", "to")], [("lay", "on"), ("bring", "to")], ["hold up the {obj}"])


def questions(scene: dict, rng, templates: dict, robot: tuple | None, robot_answer: str) -> list[tuple[str, str, str]]:
    """(kind, question, answer) about a scene, one or more per kind that applies; robot_answer: --robot-answer."""
    objs = scene["objects"]
    out = []
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    by_side: dict[tuple[str, str], list] = {}
    for o in objs:
        by_side.setdefault((o["shape"], side(o["xy"])), []).append(o)
    for (shape, s), members in by_side.items():
        if len(members) == 1 and "colour" in templates:
            out.append(("colour", pick(templates["colour"]).format(shape=shape, side=s), members[0]["colour"]))
    for o in objs:
        if "shape" in templates:
            out.append(("shape", pick(templates["shape"]).format(colour=o["colour"]), o["shape"]))
        if "where" in templates:
            out.append(("where", pick(templates["where"]).format(obj=name(o)), side(o["xy"])))
        if "depth" in templates:
            out.append(("depth", pick(templates["depth"]).format(obj=name(o)), depth(o["xy"])))
    if "exists" in templates:
        o = objs[int(rng.integers(len(objs)))]
        out.append(("exists", pick(templates["exists"]).format(obj=name(o)), "yes"))
        absent = [(c, s) for c in PALETTE for s in ("cube", "cylinder") if not any(x["colour"] == c and x["shape"] == s for x in objs)]
        c, s = absent[int(rng.integers(len(absent)))]
        out.append(("exists", pick(templates["exists"]).format(obj=f"{c} {s}"), "no"))
    if "count" in templates:
        out.append(("count", pick(templates["count"]), NUMBERS[len(objs)]))
    if len(objs) >= 2:
        a, b = rng.permutation(len(objs))[:2]
        a, b = objs[a], objs[b]
        if abs(a["xy"][1] - b["xy"][1]) > 0.04 and "left_of" in templates:
            out.append(("left_of", pick(templates["left_of"]).format(a=name(a), b=name(b)), "yes" if a["xy"][1] < b["xy"][1] else "no"))
        for rec, r in scene["receptacles"].items():
            da, db = np.linalg.norm(a["xy"] - r), np.linalg.norm(b["xy"] - r)
            if abs(da - db) > 0.04 and "closer" in templates:
                out.append(("closer", pick(templates["closer"]).format(rec=rec, a=name(a), b=name(b)), name(a if da < db else b)))
    for rec in scene["receptacles"]:
        inside = [o for o in objs if o["in"] == rec]
        if "in" in templates:
            out.append(("in", pick(templates["in"]).format(rec=rec), name(inside[0]) if inside else "nothing"))
    if robot:
        bowl_verbs, plate_verbs, lift = robot
        # The robot's prompt (lib/tokenizer.ts promptText wraps it): where the object to grasp is.
        o = objs[int(rng.integers(len(objs)))]
        r = rng.random()
        if r < 0.4 and "bowl" in scene["receptacles"]:
            verb, prep = pick(bowl_verbs)
            task = f"{verb} the {synonyms(o, rng)} {prep} the bowl"
        elif r < 0.7 and "plate" in scene["receptacles"]:
            verb, prep = pick(plate_verbs)
            task = f"{verb} the {synonyms(o, rng)} {prep} the plate"
        else:
            task = pick(lift).format(obj=synonyms(o, rng))
        # The policy reads the last prompt token's hidden state (SPEC 1.5's "AQ" slice starts there), the position that
        # predicts the answer's first token: 'where' makes it the side of the object (grounding), 'target' the object's
        # canonical colour (the instruction parsed, whatever its verbs and nouns), then its shape and place.
        where = f"{side(o['xy'])} {depth(o['xy'])}"
        answer = where if robot_answer == "where" else f"{o['colour']} {o['shape']} {where}"
        out.append(("robot", f"What action should the robot take to {task}?", answer))
    return out


SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chat(question: str) -> str:
    """The chat template of lib/tokenizer.ts promptText, for any question."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


# ------------------------------------------------------------------------------------------------ model

def build_model(manifest: dict, cfg: dict):
    # A torchvision wheel built for CUDA fails to load its ops with CPU torch, and transformers imports it when it is
    # installed; nothing here needs it.
    sys.modules.setdefault("torchvision", None)
    import torch
    from torch import nn
    from transformers import Qwen2Config, Qwen2ForCausalLM

    class Block(nn.Module):
        def __init__(self, dim, heads, mlp, layerscale):
            super().__init__()
            self.heads = heads
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = nn.Module()
            self.attn.qkv = nn.Linear(dim, 3 * dim)
            self.attn.proj = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Module()
            self.mlp.fc1 = nn.Linear(dim, mlp)
            self.mlp.fc2 = nn.Linear(mlp, dim)
            if layerscale:
                self.ls1 = nn.Module()
                self.ls1.scale_factor = nn.Parameter(torch.full((dim,), 0.1))
                self.ls2 = nn.Module()
                self.ls2.scale_factor = nn.Parameter(torch.full((dim,), 0.1))
            self.layerscale = layerscale

        def forward(self, x):
            n, t, dim = x.shape
            qkv = self.attn.qkv(self.norm1(x)).view(n, t, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
            a = torch.nn.functional.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
            a = self.attn.proj(a.transpose(1, 2).reshape(n, t, dim))
            x = x + (a * self.ls1.scale_factor if self.layerscale else a)
            m = self.mlp.fc2(torch.nn.functional.gelu(self.mlp.fc1(self.norm2(x))))
            return x + (m * self.ls2.scale_factor if self.layerscale else m)

    class Vit(nn.Module):
        def __init__(self, t: dict, image_size: int, siglip: bool):
            super().__init__()
            dim, self.take = t["embed_dim"], t["take_block_index"]
            grid = image_size // 14
            self.prefix = (1 if t["class_token"] else 0) + t["reg_tokens"]
            if t["class_token"]:
                self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            if t["reg_tokens"]:
                self.reg_token = nn.Parameter(torch.randn(1, t["reg_tokens"], dim) * 0.02)
            self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
            self.patch_embed = nn.Module()
            self.patch_embed.proj = nn.Conv2d(3, dim, 14, 14)
            self.blocks = nn.ModuleList(Block(dim, t["num_heads"], t["mlp_hidden"], t["layerscale"]) for _ in range(t["depth"]))
            self.norm = nn.LayerNorm(dim, eps=1e-6)  # in checkpoints; the policy takes a block's output, no final norm
            if siglip:
                self.attn_pool = nn.Module()  # SigLIP's MAP head: kept from the base (unused by m2vla)

        def forward(self, x):
            x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
            pre = [p for p in (getattr(self, "cls_token", None), getattr(self, "reg_token", None)) if p is not None]
            if pre:
                x = torch.cat([p.expand(x.shape[0], -1, -1) for p in pre] + [x], 1)
            for blk in self.blocks[: self.take + 1]:
                x = blk(x)
            return x[:, self.prefix:]

    class Vlm(nn.Module):
        def __init__(self):
            super().__init__()
            v = manifest["vision"]
            self.num_images, size = v["num_images"], v["image_size"]
            self.vision_backbone = nn.Module()
            self.vision_backbone.featurizer = Vit(v["featurizer"], size, False)
            self.vision_backbone.fused_featurizer = Vit(v["fused_featurizer"], size, True)
            fused = v["featurizer"]["embed_dim"] + v["fused_featurizer"]["embed_dim"]
            tc = cfg["text_config"]
            hidden = tc["hidden_size"]
            self.projector = nn.Module()
            self.projector.fc1 = nn.Linear(fused, 4 * fused)
            self.projector.fc2 = nn.Linear(4 * fused, hidden)
            self.projector.fc3 = nn.Linear(hidden, hidden)
            qc = Qwen2Config(vocab_size=tc["vocab_size"], hidden_size=hidden, intermediate_size=tc["intermediate_size"],
                             num_hidden_layers=tc["num_hidden_layers"], num_attention_heads=tc["num_attention_heads"],
                             num_key_value_heads=tc["num_key_value_heads"], rms_norm_eps=tc["rms_norm_eps"],
                             rope_theta=tc["rope_theta"], tie_word_embeddings=True, max_position_embeddings=4096)
            self.language_model = Qwen2ForCausalLM(qc)

        def towers(self, pixels):  # [B, 6 * num_images, S, S] -> [B, num_images * patches, dino + siglip dims]
            b, _, s, _ = pixels.shape
            per = pixels.view(b, self.num_images, 2, 3, s, s)
            dino = self.vision_backbone.featurizer(per[:, :, 0].reshape(-1, 3, s, s))
            sig = self.vision_backbone.fused_featurizer(per[:, :, 1].reshape(-1, 3, s, s))
            fused = torch.cat([dino, sig], -1)
            return fused.view(b, self.num_images * fused.shape[1], fused.shape[2])

        def patches(self, pixels):  # [B, 6 * num_images, S, S] -> [B, num_images * patches, hidden]
            return self.project(self.towers(pixels))

        def project(self, fused):
            p = self.projector
            return p.fc3(torch.nn.functional.gelu(p.fc2(torch.nn.functional.gelu(p.fc1(fused)))))

        def logits(self, patches, ids):
            """[first token] + patches + [rest], as native/model/prismatic.cc sequence() builds it."""
            emb = self.language_model.model.embed_tokens(ids)
            x = torch.cat([emb[:, :1], patches, emb[:, 1:]], 1)
            return self.language_model(inputs_embeds=x).logits

    return Vlm()


def pixel_values(frames: list[np.ndarray], prep: dict):
    """uint8 HWC frames at the model size -> [6 * len(frames), S, S]: per image DINO-normalized RGB, SigLIP RGB."""
    import torch
    norms = prep["tvf_normalize_params"]
    out = []
    for f in frames:
        x = torch.from_numpy(np.ascontiguousarray(f)).permute(2, 0, 1).float() / 255.0
        for n in norms:
            out.append((x - torch.tensor(n["mean"]).view(3, 1, 1)) / torch.tensor(n["std"]).view(3, 1, 1))
    return torch.cat(out, 0)


def greedy_answer(model, tok, im_end: int, patches, question: str, max_tokens: int = 8) -> str:
    """The model's greedy answer to `question` about a scene's projected patches (as m2vla's ask() decodes)."""
    import torch
    ids = tok.encode(chat(question), add_special_tokens=False).ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(max_tokens):
            nxt = int(model.logits(patches, torch.tensor([ids + out]))[0, -1].argmax())
            if nxt == im_end:
                break
            out.append(nxt)
    return tok.decode(out).strip()


# ------------------------------------------------------------------------------------------------ main


def recipe_hash(args, base: str) -> str:
    h = hashlib.sha256()
    # The recipe is what decides the weights: a step budget, not a time budget, so the same hash means the same model.
    h.update(json.dumps({"version": RECIPE_VERSION, **{k: getattr(args, k) for k in (
        "steps", "seed", "batch", "questions", "lr", "scenes", "heldout", "towers", "patch_rms", "robot_answer")}}, sort_keys=True).encode())
    for name in ("config.json", "manifest.json", "tokenizer.json"):
        with open(os.path.join(base, name), "rb") as f:
            h.update(f.read())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="a random run directory with the eval's dims (configs, tokenizer)")
    p.add_argument("--out-root", required=True)
    p.add_argument("--steps", type=int, default=3000, help="optimizer steps (warmup, then cosine decay to 5 %%)")
    p.add_argument("--scenes", type=int, default=16000, help="distinct training scenes rendered")
    p.add_argument("--batch", type=int, default=8, help="scenes per step")
    p.add_argument("--questions", type=int, default=4, help="questions per scene and step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--heldout", type=int, default=60, help="held-out scenes for the accuracy")
    p.add_argument("--patch-rms", type=float, default=2.0,
                   help="the patches' RMS (per token) above which a squared penalty applies (0: none)")
    p.add_argument("--robot-answer", choices=("where", "target"), default="where",
                   help="the answer to the robot's prompt: 'where' = the side and depth of the object to grasp; 'target' "
                        "= its colour and shape first (the instruction parsed), then side and depth")
    p.add_argument("--towers", choices=("frozen", "trained"), default="frozen",
                   help="frozen: the vision towers keep the base's weights and only the projector and the LLM train "
                        "(Prismatic's recipe: towers trained from scratch on these questions kept only what the answers "
                        "need, and the policy on top lost the scene geometry); trained: all of it from scratch")
    args = p.parse_args()

    base = os.path.abspath(args.base)
    final = os.path.join(os.path.abspath(args.out_root), f"vlm-{recipe_hash(args, base)}")
    os.makedirs(args.out_root, exist_ok=True)
    # One builder per recipe: a second run (another eval) waits for the first and then reuses its result.
    with open(f"{final}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.path.exists(os.path.join(final, "pretrain.json")):
            print(f"cached: {final}", flush=True)
            print(final)
            return
        pretrain(args, base, final)


def pretrain(args, base: str, final: str) -> None:

    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from sim import TabletopEnv

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.time()
    cfg = json.load(open(os.path.join(base, "config.json")))
    manifest = json.load(open(os.path.join(base, "manifest.json")))
    prep = json.load(open(os.path.join(base, "preprocessor_config.json")))
    tok = Tokenizer.from_file(os.path.join(base, "tokenizer.json"))
    im_end = tok.token_to_id("<|im_end|>")
    size = manifest["vision"]["image_size"]
    env = TabletopEnv(size)

    model = build_model(manifest, cfg)
    base_sd = load_file(os.path.join(base, "model.safetensors"))
    frozen = args.towers == "frozen"
    if frozen:
        towers = {k[len("vision_backbone."):]: v.float() for k, v in base_sd.items()
                  if k.startswith("vision_backbone.") and ".attn_pool." not in k}  # the MAP head stays in `kept`
        model.vision_backbone.load_state_dict(towers)
        model.vision_backbone.requires_grad_(False)

    # What a step feeds per scene, made once: the pixel values (bfloat16 halves the memory; the rounding is below the
    # model's float32 noise), or with frozen towers their features (~16 KB a scene: many scenes fit, and the projector
    # and LLM see a scene ~1-2 times instead of memorizing a few thousand).
    rng = np.random.default_rng(args.seed)
    t0 = time.time()
    train_scenes, scene_inputs, pending = [], [], []

    def encode_pending():
        x = torch.stack([pixel_values(list(frames), prep) for frames in pending])
        if frozen:
            with torch.no_grad():
                x = model.towers(x)
        scene_inputs.extend(x.to(torch.bfloat16))
        pending.clear()

    for _ in range(args.scenes):
        s = sample_scene(rng)
        train_scenes.append(s)
        pending.append(render_scene(env, s))
        if len(pending) == 64:
            encode_pending()
    if pending:
        encode_pending()
    held_rng = np.random.default_rng(args.seed + 10**6)
    held = []
    for _ in range(args.heldout):
        s = sample_scene(held_rng)
        frames = render_scene(env, s)
        for kind, q, a in questions(s, held_rng, HELD_OUT_TEMPLATES, ROBOT_HELD_OUT, args.robot_answer):
            held.append({"kind": kind, "question": q, "answer": a, "frames": frames})
    render_s = time.time() - t0
    print(f"rendered {len(train_scenes)} training scenes ({'tower features' if frozen else 'pixels'} kept), "
          f"{args.heldout} held-out ({len(held)} questions) in {render_s:.0f} s", flush=True)

    # Tensors the policy never reads keep the base's values: SigLIP's MAP head and the action queries (the head trains them).
    kept = {k: v for k, v in base_sd.items() if ".attn_pool." in k or k == "action_queries.weight"}
    trained = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(trained, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    losses = []
    encoded: dict[tuple[str, str], tuple[list[int], int]] = {}  # the templates make a few thousand distinct pairs

    def encode(q: str, a: str) -> tuple[list[int], int]:
        if (q, a) not in encoded:
            prompt = tok.encode(chat(q), add_special_tokens=False).ids
            encoded[q, a] = prompt + tok.encode(a, add_special_tokens=False).ids + [im_end], len(prompt)
        return encoded[q, a]

    def batch_loss(items):
        """items: (pixels, or the frozen towers' features, [(q, a), ...]) per scene; loss over answer tokens (and
        <|im_end|>) only."""
        seqs = [encode(q, a) for _, qa in items for q, a in qa]
        T = max(len(s) for s, _ in seqs)
        ids = torch.zeros(len(seqs), T, dtype=torch.long)
        labels = torch.full((len(seqs), T), -100, dtype=torch.long)
        for i, (s, np_) in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            labels[i, np_: len(s)] = torch.tensor(s[np_:])
        # Scenes' patches computed once per scene, repeated for their questions.
        uniq = torch.stack([px for px, _ in items])
        patches = model.project(uniq if frozen else model.towers(uniq))
        # Left free, the projector scales the patches up (RMS 10-12, single values ~75, against ~1.9 for the random
        # projector): the LLM then leaves them almost untouched through its layers, so every layer the head reads
        # carries the same few large dimensions, and its L1 skill keys are decided by them.
        excess = (patches.pow(2).mean(-1).sqrt() - args.patch_rms).clamp_min(0).pow(2).mean() if args.patch_rms else 0.0
        counts = torch.tensor([len(qa) for _, qa in items])
        patches = patches.repeat_interleave(counts, 0)
        logits = model.logits(patches, ids)
        npatch = patches.shape[1]
        # Logits at sequence position j predict token j+1; token i of ids sits at position i + npatch (i >= 1).
        text_logits = torch.cat([logits[:, :1], logits[:, 1 + npatch:]], 1)  # positions of ids[0], ids[1:]
        answers = torch.nn.functional.cross_entropy(text_logits[:, :-1].reshape(-1, text_logits.shape[-1]),
                                                    labels[:, 1:].reshape(-1), ignore_index=-100)
        return answers, excess

    t_train = time.time()
    warmup = min(100, args.steps // 10 + 1)
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * step / args.steps)) * 0.95 + 0.05)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = rng.integers(len(train_scenes), size=args.batch)
        items = []
        for i in idx:
            qa = questions(train_scenes[i], rng, TRAIN_TEMPLATES, ROBOT_TRAIN, args.robot_answer)
            sel = rng.permutation(len(qa))[: args.questions]
            items.append((scene_inputs[i].float(), [(qa[j][1], qa[j][2]) for j in sel]))
        answers, excess = batch_loss(items)
        loss = answers + excess
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)
        opt.step()
        losses.append(answers.item())
        if (step + 1) % 25 == 0:
            print(f"step {step + 1}/{args.steps} loss {np.mean(losses[-25:]):.3f} patch-rms excess {float(excess):.3f} lr {lr:.2e} {time.time() - t_train:.0f} s", flush=True)
    train_s = time.time() - t_train
    step = args.steps

    # Held-out accuracy in PyTorch (greedy, exact match of the decoded answer).
    print(f"trained {step} steps in {train_s:.0f} s; measuring held-out accuracy", flush=True)
    model.eval()
    correct: dict[str, list[int]] = {}
    with torch.no_grad():
        for h in held:
            patches = model.patches(pixel_values(list(h["frames"]), prep).unsqueeze(0))
            ok = int(greedy_answer(model, tok, im_end, patches, h["question"]) == h["answer"])
            correct.setdefault(h["kind"], []).append(ok)
    accuracy = {k: {"correct": sum(v), "n": len(v)} for k, v in correct.items()}
    total = sum(a["correct"] for a in accuracy.values()), sum(a["n"] for a in accuracy.values())
    print(f"held-out accuracy (PyTorch) {total[0]}/{total[1]}: " + ", ".join(f"{k} {a['correct']}/{a['n']}" for k, a in accuracy.items()), flush=True)

    tmp = f"{final}.tmp-{os.getpid()}"
    try:
        write_run(tmp, final, base, model, base_sd, kept, cfg, held, tok, im_end, size, {
            "recipe": os.path.basename(final), "render_seconds": round(render_s, 1), "train_seconds": round(train_s, 1),
            "total_seconds": round(time.time() - started, 1), "steps": step, "scenes": args.scenes,
            "batch_scenes": args.batch, "questions_per_scene": args.questions, "threads": args.threads, "towers": args.towers,
            "patch_rms": args.patch_rms, "robot_answer": args.robot_answer,
            "final_loss": float(np.mean(losses[-100:])), "heldout_accuracy_pytorch": accuracy})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when writing failed: never a half-written VLM
    print(final)


def write_run(tmp: str, final: str, base: str, model, base_sd: dict, kept: dict, cfg: dict, held: list, tok, im_end: int,
              size: int, info: dict) -> None:
    """The run directory under a temporary name, renamed to `final` when complete."""
    import torch
    from safetensors.torch import save_file
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    sd = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    sd["language_model.lm_head.weight"] = sd["language_model.model.embed_tokens.weight"].clone()
    sd.update(kept)
    dtype = getattr(torch, cfg.get("torch_dtype", "float32"))
    missing = set(base_sd) - set(sd)
    if missing:
        raise SystemExit(f"pretrained model lacks base tensors: {sorted(missing)[:5]}")
    save_file({k: sd[k].to(dtype if sd[k].is_floating_point() else sd[k].dtype) for k in base_sd}, os.path.join(tmp, "model.safetensors"))
    if os.path.exists(os.path.join(tmp, ".complete")):  # the base's random-run marker
        os.remove(os.path.join(tmp, ".complete"))
    with open(os.path.join(tmp, "heldout.json"), "w") as f:
        json.dump({"stop_id": im_end, "image_size": size, "items": [
            {"kind": h["kind"], "question": h["question"], "answer": h["answer"],
             "prompt_ids": tok.encode(chat(h["question"]), add_special_tokens=False).ids,
             "primary": base64.b64encode(h["frames"][0].tobytes()).decode(), "wrist": base64.b64encode(h["frames"][1].tobytes()).decode()}
            for h in held]}, f)
    with open(os.path.join(tmp, "pretrain.json"), "w") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, final)
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    main()
