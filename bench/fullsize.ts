/**
 * A full-size M²-VLA run directory with random weights, in the released layout (VLA-Adapter/M²-VLA tensor names,
 * bf16, no manifest.json so vision dims come from the timm ids): Qwen2.5-0.5B, DINOv2-L/14-reg4, SigLIP-so400m/14,
 * 64 action queries, a 24-block head, a 10,000-entry bank (9,000 filled). Nothing is downloaded; ~3.3 GB on disk.
 * Weights are uniform with std 0.02 (a fast PRNG: the values only need to be finite and well scaled).
 */
import fs from 'node:fs';
import path from 'node:path';

export type Init = 'w' | 'zero' | 'one' | 'ls' | 'small' | 'bank' | 'tied';
/** Tensors of a generated checkpoint (also the parameter inventory bench/roofline.ts is tested against). */
export type Spec = Array<[name: string, shape: number[], init: Init]>;

export function vlmSpec(): Spec {
  const t: Spec = [];
  const lin = (n: string, o: number, i: number, bias = true) => {
    t.push([`${n}.weight`, [o, i], 'w']);
    if (bias) t.push([`${n}.bias`, [o], 'zero']);
  };
  const ln = (n: string, d: number, bias = true) => {
    t.push([`${n}.weight`, [d], 'one']);
    if (bias) t.push([`${n}.bias`, [d], 'zero']);
  };
  const vit = (p: string, d: number, depth: number, mlp: number, reg: number, cls: boolean, ls: boolean, pool: boolean) => {
    if (cls) t.push([`${p}cls_token`, [1, 1, d], 'w']);
    if (reg) t.push([`${p}reg_token`, [1, reg, d], 'w']);
    t.push([`${p}pos_embed`, [1, 256, d], 'w'], [`${p}patch_embed.proj.weight`, [d, 3, 14, 14], 'w'], [`${p}patch_embed.proj.bias`, [d], 'zero']);
    for (let b = 0; b < depth; b++) {
      const q = `${p}blocks.${b}.`;
      ln(`${q}norm1`, d); lin(`${q}attn.qkv`, 3 * d, d); lin(`${q}attn.proj`, d, d); ln(`${q}norm2`, d);
      lin(`${q}mlp.fc1`, mlp, d); lin(`${q}mlp.fc2`, d, mlp);
      if (ls) t.push([`${q}ls1.scale_factor`, [d], 'ls'], [`${q}ls2.scale_factor`, [d], 'ls']);
    }
    ln(`${p}norm`, d);
    if (pool) {
      t.push([`${p}attn_pool.latent`, [1, 1, d], 'w']);
      lin(`${p}attn_pool.q`, d, d); lin(`${p}attn_pool.kv`, 2 * d, d); lin(`${p}attn_pool.proj`, d, d);
      ln(`${p}attn_pool.norm`, d); lin(`${p}attn_pool.mlp.fc1`, mlp, d); lin(`${p}attn_pool.mlp.fc2`, d, mlp);
    }
  };
  vit('vision_backbone.featurizer.', 1024, 24, 4096, 4, true, true, false);
  vit('vision_backbone.fused_featurizer.', 1152, 27, 4304, 0, false, false, true);
  lin('projector.fc1', 8704, 2176); lin('projector.fc2', 896, 8704); lin('projector.fc3', 896, 896);
  t.push(['language_model.model.embed_tokens.weight', [151936, 896], 'w']);
  for (let l = 0; l < 24; l++) {
    const q = `language_model.model.layers.${l}.`;
    ln(`${q}input_layernorm`, 896, false); ln(`${q}post_attention_layernorm`, 896, false);
    lin(`${q}self_attn.q_proj`, 896, 896); lin(`${q}self_attn.k_proj`, 128, 896); lin(`${q}self_attn.v_proj`, 128, 896);
    lin(`${q}self_attn.o_proj`, 896, 896, false);
    lin(`${q}mlp.gate_proj`, 4864, 896, false); lin(`${q}mlp.up_proj`, 4864, 896, false); lin(`${q}mlp.down_proj`, 896, 4864, false);
  }
  ln('language_model.model.norm', 896, false);
  t.push(['language_model.lm_head.weight', [151936, 896], 'tied'], ['action_queries.weight', [64, 896], 'w']);
  return t;
}

export function headSpec(): Spec {
  const t: Spec = [];
  const lin = (n: string, o: number, i: number) => t.push([`${n}.weight`, [o, i], 'w'], [`${n}.bias`, [o], 'zero']);
  t.push(['model.layer_norm1.weight', [6272], 'one'], ['model.layer_norm1.bias', [6272], 'small']);
  lin('model.fc1', 896, 6272);
  for (let b = 0; b < 24; b++) {
    const q = `model.mlp_resnet_blocks.${b}.`;
    for (const n of ['q_proj', 'k_self', 'v_self', 'v_adapter', 'k_task', 'v_task', 'k_memory', 'v_memory', 'o_proj']) lin(q + n, 896, 896);
    lin(`${q}k_adapter`, 904, 896); lin(`${q}film_gen.0`, 1792, 896);
    t.push([`${q}ffn.0.weight`, [896], 'one'], [`${q}ffn.0.bias`, [896], 'zero']);
    lin(`${q}ffn.1`, 896, 896);
    t.push([`${q}gating_factor`, [1], 'small']);
  }
  t.push(['model.layer_norm2.weight', [896], 'one'], ['model.layer_norm2.bias', [896], 'zero']);
  lin('model.fc2', 7, 896); lin('memory_value_proj', 7168, 56);
  t.push(['memory_bank.keys', [10000, 2688], 'bank'], ['memory_bank.values', [10000, 56], 'bank']);
  return t;
}

export function proprioSpec(): Spec {
  return [['fc1.weight', [896, 8], 'w'], ['fc1.bias', [896], 'zero'], ['fc2.weight', [896, 896], 'w'], ['fc2.bias', [896], 'zero']];
}

let state = 0x9e3779b9;
/** Uniform in [-1, 1) (xorshift32): fast enough for 1.6 G values. */
function uniform(): number {
  state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
  return (state >>> 0) / 2147483648 - 1;
}

const SQRT3 = Math.sqrt(3);
function fill(init: Init, out: Float32Array) {
  const scale = init === 'w' ? 0.02 * SQRT3 : init === 'small' ? 0.1 * SQRT3 : init === 'bank' ? 0.5 * SQRT3 : 0;
  if (scale) for (let i = 0; i < out.length; i++) out[i] = uniform() * scale;
  else out.fill(init === 'one' ? 1 : init === 'ls' ? 1e-5 : 0);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
function toBf16(src: Float32Array, dst: Uint16Array) {
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i];
    const u = u32[0];
    dst[i] = (u + 0x7fff + ((u >>> 16) & 1)) >>> 16; // round to nearest even
  }
}

function writeSafetensors(file: string, spec: Spec, extra: Record<string, { dtype: string; shape: number[]; bytes: Uint8Array }> = {}) {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', generator: 'm2vla bench/fullsize.ts' } };
  let off = 0;
  for (const [name, shape] of spec) {
    const n = 2 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'BF16', shape, data_offsets: [off, off + n] };
    off += n;
  }
  for (const [name, t] of Object.entries(extra)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + t.bytes.length] };
    off += t.bytes.length;
  }
  let h = Buffer.from(JSON.stringify(header));
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const fd = fs.openSync(`${file}.tmp`, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, h);
  let tied: Uint16Array | undefined;
  for (const [name, shape, init] of spec) {
    const n = shape.reduce((a, b) => a * b, 1);
    let bf: Uint16Array;
    if (init === 'tied' && tied) bf = tied;
    else {
      const v = new Float32Array(n);
      fill(init, v);
      bf = new Uint16Array(n);
      toBf16(v, bf);
    }
    if (name.endsWith('embed_tokens.weight')) tied = bf;
    fs.writeSync(fd, new Uint8Array(bf.buffer, bf.byteOffset, bf.byteLength));
  }
  for (const t of Object.values(extra)) fs.writeSync(fd, t.bytes);
  fs.closeSync(fd);
  fs.renameSync(`${file}.tmp`, file);
}

/** Config files of the released layout, from the tiny fixture's templates with full-size dims. */
function writeConfigs(dir: string, templateDir: string) {
  const cfg = JSON.parse(fs.readFileSync(path.join(templateDir, 'config.json'), 'utf8'));
  Object.assign(cfg.text_config, {
    hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2,
    vocab_size: 151936, max_window_layers: 24, layer_types: Array(24).fill('full_attention'), bos_token_id: 151643,
    eos_token_id: 151643, dtype: 'bfloat16', torch_dtype: 'bfloat16',
  });
  Object.assign(cfg, { image_sizes: [224, 224], dtype: 'bfloat16', torch_dtype: 'bfloat16' });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
  const pc = JSON.parse(fs.readFileSync(path.join(templateDir, 'preprocessor_config.json'), 'utf8'));
  pc.input_sizes = [[3, 224, 224], [3, 224, 224]];
  for (const p of pc.tvf_resize_params) p.size = [224, 224];
  for (const p of pc.tvf_crop_params) p.output_size = [224, 224];
  fs.writeFileSync(path.join(dir, 'preprocessor_config.json'), JSON.stringify(pc, null, 2));
  fs.copyFileSync(path.join(templateDir, 'dataset_statistics.json'), path.join(dir, 'dataset_statistics.json'));
}

/** Create (once) and return a full-size random run directory. */
export function ensureFullsizeRun(dir: string, templateDir: string): string {
  const done = path.join(dir, '.complete');
  if (fs.existsSync(done)) return dir;
  fs.mkdirSync(dir, { recursive: true });
  const started = Date.now();
  writeSafetensors(path.join(dir, 'model.safetensors'), vlmSpec());
  const size = new BigInt64Array([9000n]);
  writeSafetensors(path.join(dir, 'action_head.safetensors'), headSpec(),
    { 'memory_bank.size': { dtype: 'I64', shape: [], bytes: new Uint8Array(size.buffer) } });
  writeSafetensors(path.join(dir, 'proprio_projector.safetensors'), proprioSpec());
  writeConfigs(dir, templateDir);
  fs.writeFileSync(done, `${new Date().toISOString()} ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return dir;
}
