"""The eager reference's models with torch alone (no timm, transformers or safetensors), for machines that have only a
PyTorch: the lent GPU machine of scripts/gpu-acceptance.sh has a CUDA torch in python3 and nothing else, no network.

The same modules as the released code builds them, written out in plain torch ops and loaded from the same
checkpoint names: timm's VisionTransformer as Prismatic configures it (LayerNorm eps 1e-6, exact GELU, LayerScale,
pos_embed on the patches only, get_intermediate_layers = the patch tokens after one block, no final norm) and
transformers' Qwen2ForCausalLM (float32 RMSNorm, rotate_half RoPE, GQA, causal SDPA, SiLU MLP, hidden states =
[embeddings, each layer's output, final norm], tied LM head). eager.py uses them when timm/transformers do not import
(or with --impl torch); check_fixture.py checks either implementation against fixture A's reference outputs.
"""
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

# safetensors dtype names -> torch dtypes (the ones checkpoints of this project hold).
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}


def load_file(path):
    """A safetensors file as {name: tensor} on the CPU (the format: 8-byte little-endian header length, a JSON header
    of dtype/shape/data_offsets per tensor, then the bytes)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = torch.from_file(path, shared=False, size=os.path.getsize(path), dtype=torch.uint8)
    base, out = 8 + n, {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        raw = data[base + start:base + end]
        if (base + start) % dtype.itemsize:  # view(dtype) needs an aligned offset
            raw = raw.clone()
        out[name] = raw.view(dtype).reshape(info["shape"])
    return out


def load_own(module, sd, what):
    """Loads `sd` into `module` (built on the meta device: the checkpoint's tensors are assigned, nothing is
    initialized first); every parameter the module has must be there (extra checkpoint tensors such as SigLIP's unused
    MAP head are ignored, as get_intermediate_layers never reaches them)."""
    missing = module.load_state_dict(sd, strict=False, assign=True).missing_keys
    if missing:
        raise KeyError(f"{what}: missing tensors {missing[:5]}")


class VitBlock(nn.Module):
    def __init__(self, dim, heads, mlp, layer_scale):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.qkv, self.attn.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Module()
        self.mlp.fc1, self.mlp.fc2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        if layer_scale:
            self.ls1, self.ls2 = nn.Module(), nn.Module()
            self.ls1.gamma, self.ls2.gamma = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim))
        self.layer_scale = layer_scale

    def forward(self, x):
        B, N, D = x.shape
        qkv = self.attn.qkv(self.norm1(x)).reshape(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(B, N, D)
        a = self.attn.proj(a)
        x = x + (a * self.ls1.gamma if self.layer_scale else a)
        m = self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))
        return x + (m * self.ls2.gamma if self.layer_scale else m)


class Vit(nn.Module):
    """timm's VisionTransformer as far as get_intermediate_layers(x, n={i}) reads it."""

    def __init__(self, dims, size):
        super().__init__()
        D, grid = dims["embed_dim"], size // 14
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, D, 14, 14)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, D))
        self.prefix = []
        if dims["class_token"]:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
            self.prefix.append("cls_token")
        if dims["reg_tokens"]:
            self.reg_token = nn.Parameter(torch.zeros(1, dims["reg_tokens"], D))
            self.prefix.append("reg_token")
        self.blocks = nn.ModuleList(VitBlock(D, dims["num_heads"], dims["mlp_hidden"], dims["layerscale"])
                                    for _ in range(dims["depth"]))

    def get_intermediate_layers(self, x, n):
        (take,) = n
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed  # no_embed_class: patches only
        p = [getattr(self, t).expand(x.shape[0], -1, -1) for t in self.prefix]
        x = torch.cat(p + [x], dim=1)
        for blk in self.blocks[:take + 1]:
            x = blk(x)
        return (x[:, sum(t.shape[1] for t in p):],)


# The released towers' dims by timm id (native/run_dir.cc holds the same table).
TIMM_DIMS = {
    "vit_large_patch14_reg4_dinov2.lvd142m": dict(embed_dim=1024, depth=24, num_heads=16, mlp_hidden=4096,
                                                  class_token=True, reg_tokens=4, layerscale=True),
    "vit_so400m_patch14_siglip_224": dict(embed_dim=1152, depth=27, num_heads=16, mlp_hidden=4304,
                                          class_token=False, reg_tokens=0, layerscale=False),
}


def tower(sd, prefix, timm_id, manifest_dims, size):
    dims = dict(manifest_dims) if manifest_dims else dict(TIMM_DIMS[timm_id])
    dims.setdefault("reg_tokens", 0)
    dims.setdefault("class_token", False)
    dims.setdefault("layerscale", False)
    with torch.device("meta"):
        m = Vit(dims, size)
    own = {k[len(prefix):].replace("scale_factor", "gamma"): v for k, v in sd.items() if k.startswith(prefix)}
    load_own(m, own, prefix)
    return m


def rms_norm(x, w, eps):
    """transformers' Qwen2RMSNorm: the statistic in float32, the weight applied in the input's dtype."""
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return w * h.to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Qwen2Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        D, H, KV, hd, I = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["intermediate_size"]
        self.H, self.KV, self.hd, self.eps = H, KV, hd, c["rms_norm_eps"]
        self.input_layernorm, self.post_attention_layernorm = nn.Module(), nn.Module()
        self.input_layernorm.weight = nn.Parameter(torch.ones(D))
        self.post_attention_layernorm.weight = nn.Parameter(torch.ones(D))
        self.self_attn = nn.Module()
        a = self.self_attn
        a.q_proj, a.k_proj, a.v_proj = nn.Linear(D, H * hd), nn.Linear(D, KV * hd), nn.Linear(D, KV * hd)
        a.o_proj = nn.Linear(H * hd, D, bias=False)
        self.mlp = nn.Module()
        self.mlp.gate_proj, self.mlp.up_proj = nn.Linear(D, I, bias=False), nn.Linear(D, I, bias=False)
        self.mlp.down_proj = nn.Linear(I, D, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        a = self.self_attn
        h = rms_norm(x, self.input_layernorm.weight, self.eps)
        q = a.q_proj(h).view(B, T, self.H, self.hd).transpose(1, 2)
        k = a.k_proj(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        v = a.v_proj(h).view(B, T, self.KV, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(self.H // self.KV, dim=1), v.repeat_interleave(self.H // self.KV, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, scale=self.hd ** -0.5)
        x = x + a.o_proj(o.transpose(1, 2).reshape(B, T, -1))
        h = rms_norm(x, self.post_attention_layernorm.weight, self.eps)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class Output:
    def __init__(self, hidden_states, logits=None):
        self.hidden_states, self.logits = hidden_states, logits


class Qwen2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList(Qwen2Layer(c) for _ in range(c["num_hidden_layers"]))
        self.norm = nn.Module()
        self.norm.weight = nn.Parameter(torch.ones(c["hidden_size"]))

    def forward(self, inputs_embeds, output_hidden_states=True, use_cache=False):
        x = inputs_embeds
        T, hd = x.shape[1], self.c["head_dim"]
        inv_freq = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64, device=x.device).float() / hd))
        freqs = torch.outer(torch.arange(T, device=x.device).float(), inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        hidden = []
        for layer in self.layers:
            hidden.append(x)
            x = layer(x, cos, sin)
        hidden.append(rms_norm(x, self.norm.weight, self.c["rms_norm_eps"]))
        return Output(tuple(hidden))


class Qwen2ForCausalLM(nn.Module):
    """With logits: the LM head (tied to the embeddings) over every position, as the released predict_action runs."""

    def __init__(self, c):
        super().__init__()
        self.model = Qwen2Model(c)
        self.config = type("Config", (), {"vocab_size": c["vocab_size"]})
        self.lm_head = None  # tied unless the checkpoint has its own lm_head.weight

    def forward(self, inputs_embeds, output_hidden_states=True, use_cache=False):
        out = self.model(inputs_embeds)
        w = self.lm_head.weight if self.lm_head is not None else self.model.embed_tokens.weight
        out.logits = F.linear(out.hidden_states[-1], w)
        return out


def qwen2(text_config, sd):
    c = dict(text_config)
    c.setdefault("num_key_value_heads", c["num_attention_heads"])
    c.setdefault("head_dim", c["hidden_size"] // c["num_attention_heads"])
    c.setdefault("rms_norm_eps", 1e-6)
    c.setdefault("rope_theta", (c.get("rope_parameters") or {}).get("rope_theta", 1e6))
    with torch.device("meta"):
        llm = Qwen2ForCausalLM(c)
    own = {k[len("language_model."):]: v for k, v in sd.items() if k.startswith("language_model.")}
    if "lm_head.weight" in own:
        with torch.device("meta"):
            llm.lm_head = nn.Linear(c["hidden_size"], c["vocab_size"], bias=False)
    load_own(llm, own, "language_model")
    return llm
