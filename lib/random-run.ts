/**
 * Writes a run directory with deterministic random weights in the released layout (VLA-Adapter/M²-VLA tensor names,
 * config.json, preprocessor_config.json, dataset_statistics.json): the embedded demo model (tiny dims, stated in a
 * manifest.json) and the full-size benchmark model (real DINOv2-L/reg4 + SigLIP-so400m + Qwen2.5-0.5B dims, bf16,
 * no manifest: vision dims come from the timm ids, as for a released run). Nothing is downloaded.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HEAD_CONFIG_KEY, type Ablation, type RecordedHeadConfig } from './config.js';
import { ConfigError } from './errors.js';
import { getBinding, type NativeTensor } from './native/binding.js';
import { runTorchJob } from './native/queue.js';

export interface TowerDims { dim: number; depth: number; heads: number; mlp: number }
export interface RandomRunDims {
  imageSize: number;
  numImages: number;
  dino: TowerDims;
  siglip: TowerDims;
  llm: { hidden: number; layers: number; heads: number; kvHeads: number; intermediate: number; vocab: number };
  numActionQueries: number;
  head: { heads: number; chunk: number; actionDim: number; proprioDim: number; keyLayers: number[]; topK: number;
    bankSize: number; bankFill: number };
  /** bf16 (the released checkpoints) or f32 weights. */
  dtype: 'bfloat16' | 'float32';
  /** Write manifest.json with the dims (needed unless the towers are the real ones named by the timm ids). */
  manifest: boolean;
  /**
   * Std of the random weight matrices of model.safetensors (towers, projector, LLM; default 0.02; the head keeps 0.02). At 0.02 a tiny Qwen2's
   * attention is nearly uniform and adds little to the residual stream, so the action-query tokens barely depend on
   * the prompt; a frozen random VLM whose features must carry the instruction needs larger weights (~1/sqrt(hidden)).
   */
  vlmInitStd?: number;
  /** The head layout of one of the paper's ablations (what `train({ ablation })` exports); default the full model. */
  ablation?: Ablation;
}

export const FULL_SIZE_DIMS: RandomRunDims = {
  imageSize: 224, numImages: 2,
  dino: { dim: 1024, depth: 24, heads: 16, mlp: 4096 }, siglip: { dim: 1152, depth: 27, heads: 16, mlp: 4304 },
  llm: { hidden: 896, layers: 24, heads: 14, kvHeads: 2, intermediate: 4864, vocab: 151936 },
  numActionQueries: 64,
  head: { heads: 8, chunk: 8, actionDim: 7, proprioDim: 8, keyLayers: [3, 11, 23], topK: 4, bankSize: 10000, bankFill: 9000 },
  dtype: 'bfloat16', manifest: false,
};

const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** The tokenizer shipped for the demo model (models/tokenizer-tiny, a Qwen2-style byte-level BPE with 585 ids). */
export const TINY_TOKENIZER_DIR = path.join(PACKAGE_ROOT, 'models', 'tokenizer-tiny');

/** The full-size model shrunk; what the task fixes (cameras, action and proprio sizes, chunk, top-R) stays as it is. */
export const DEMO_DIMS: RandomRunDims = {
  ...FULL_SIZE_DIMS,
  imageSize: 56, numActionQueries: 8,
  dino: { dim: 48, depth: 3, heads: 4, mlp: 192 }, siglip: { dim: 40, depth: 3, heads: 4, mlp: 149 },
  llm: { hidden: 64, layers: 4, heads: 4, kvHeads: 2, intermediate: 128, vocab: 585 },
  head: { ...FULL_SIZE_DIMS.head, heads: 4, keyLayers: [1, 2, 4], bankSize: 64, bankFill: 50 },
  dtype: 'float32', manifest: true,
};

export type Init = 'w' | 'zero' | 'one' | 'ls' | 'small' | 'bank' | 'tied';
/** Tensor name, shape and how its values are drawn: the checkpoint layout of a run directory. */
export type Spec = Array<[name: string, shape: number[], init: Init]>;

export function vlmSpec(d: RandomRunDims): Spec {
  const t: Spec = [];
  const lin = (n: string, o: number, i: number, bias = true) => {
    t.push([`${n}.weight`, [o, i], 'w']);
    if (bias) t.push([`${n}.bias`, [o], 'zero']);
  };
  const ln = (n: string, dim: number, bias = true) => {
    t.push([`${n}.weight`, [dim], 'one']);
    if (bias) t.push([`${n}.bias`, [dim], 'zero']);
  };
  const patches = (d.imageSize / 14) ** 2;
  const tower = (p: string, s: TowerDims, reg: number, dino: boolean) => {
    if (dino) t.push([`${p}cls_token`, [1, 1, s.dim], 'w'], [`${p}reg_token`, [1, reg, s.dim], 'w']);
    t.push([`${p}pos_embed`, [1, patches, s.dim], 'w'], [`${p}patch_embed.proj.weight`, [s.dim, 3, 14, 14], 'w'],
      [`${p}patch_embed.proj.bias`, [s.dim], 'zero']);
    for (let b = 0; b < s.depth; b++) {
      const q = `${p}blocks.${b}.`;
      ln(`${q}norm1`, s.dim); lin(`${q}attn.qkv`, 3 * s.dim, s.dim); lin(`${q}attn.proj`, s.dim, s.dim); ln(`${q}norm2`, s.dim);
      lin(`${q}mlp.fc1`, s.mlp, s.dim); lin(`${q}mlp.fc2`, s.dim, s.mlp);
      if (dino) t.push([`${q}ls1.scale_factor`, [s.dim], 'ls'], [`${q}ls2.scale_factor`, [s.dim], 'ls']);
    }
    ln(`${p}norm`, s.dim);
    if (!dino) { // SigLIP's MAP head: present in checkpoints, unused by the policy
      t.push([`${p}attn_pool.latent`, [1, 1, s.dim], 'w']);
      lin(`${p}attn_pool.q`, s.dim, s.dim); lin(`${p}attn_pool.kv`, 2 * s.dim, s.dim); lin(`${p}attn_pool.proj`, s.dim, s.dim);
      ln(`${p}attn_pool.norm`, s.dim); lin(`${p}attn_pool.mlp.fc1`, s.mlp, s.dim); lin(`${p}attn_pool.mlp.fc2`, s.dim, s.mlp);
    }
  };
  tower('vision_backbone.featurizer.', d.dino, 4, true);
  tower('vision_backbone.fused_featurizer.', d.siglip, 0, false);
  const fused = d.dino.dim + d.siglip.dim, H = d.llm.hidden, kv = (H / d.llm.heads) * d.llm.kvHeads;
  lin('projector.fc1', 4 * fused, fused); lin('projector.fc2', H, 4 * fused); lin('projector.fc3', H, H);
  t.push(['language_model.model.embed_tokens.weight', [d.llm.vocab, H], 'w']);
  for (let l = 0; l < d.llm.layers; l++) {
    const q = `language_model.model.layers.${l}.`;
    ln(`${q}input_layernorm`, H, false); ln(`${q}post_attention_layernorm`, H, false);
    lin(`${q}self_attn.q_proj`, H, H); lin(`${q}self_attn.k_proj`, kv, H); lin(`${q}self_attn.v_proj`, kv, H);
    lin(`${q}self_attn.o_proj`, H, H, false);
    const I = d.llm.intermediate;
    lin(`${q}mlp.gate_proj`, I, H, false); lin(`${q}mlp.up_proj`, I, H, false); lin(`${q}mlp.down_proj`, H, I, false);
  }
  ln('language_model.model.norm', H, false);
  t.push(['language_model.lm_head.weight', [d.llm.vocab, H], 'tied'], ['action_queries.weight', [d.numActionQueries, H], 'w']);
  return t;
}

/** The layout of the head's two checkpoint files, as the head's parameter tables declare it (native/head/param_table.cc). */
function headLayout(d: RandomRunDims) {
  return getBinding().headCheckpointLayout({
    hidden: d.llm.hidden, numBlocks: d.llm.layers, numHeads: d.head.heads, actionDim: d.head.actionDim, chunk: d.head.chunk,
    proprioDim: d.head.proprioDim, keyDim: d.head.keyLayers.length * d.llm.hidden, bankCapacity: d.head.bankSize,
    ablation: d.ablation ?? 'none',
  });
}

/** The float tensors of action_head.safetensors (memory_bank.size, an int64, is written beside them). */
export function headSpec(d: RandomRunDims): Spec {
  return headLayout(d).actionHead.filter((t) => t.init !== 'count').map((t) => [t.name, t.shape, t.init as Init]);
}

export function proprioSpec(d: RandomRunDims): Spec {
  return headLayout(d).proprio.map((t) => [t.name, t.shape, t.init as Init]);
}

/** Uniform in [-1, 1) from a seeded xorshift32: deterministic and fast enough for 1.6 G values. */
function makeUniform(seed: number): () => number {
  let s = (seed ^ 0x9e3779b9) >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 2147483648 - 1;
  };
}

function fill(init: Init, out: Float32Array, uniform: () => number, rows?: number, filled?: number, wStd = 0.02) {
  const std = init === 'w' ? wStd : init === 'small' ? 0.1 : init === 'bank' ? 0.5 : 0;
  if (std) {
    const a = std * Math.sqrt(3); // uniform with that std
    const n = init === 'bank' && rows ? (out.length / rows) * (filled ?? rows) : out.length; // rows past `size` stay 0
    for (let i = 0; i < n; i++) out[i] = uniform() * a;
  } else out.fill(init === 'one' ? 1 : init === 'ls' ? 1e-5 : 0);
}

function toBf16(src: Float32Array): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length), out = new Uint16Array(src.length);
  for (let i = 0; i < u.length; i++) out[i] = (u[i] + 0x7fff + ((u[i] >>> 16) & 1)) >>> 16; // round to nearest even
  return out;
}

/** The tensors of one checkpoint file, drawn in the spec's order from one seeded generator, as raw bytes. */
function drawTensors(spec: Spec, dims: RandomRunDims, seed: number, wStd?: number): Array<[string, NativeTensor]> {
  const bf16 = dims.dtype === 'bfloat16', uniform = makeUniform(seed);
  let tied: Uint8Array | undefined;
  return spec.map(([name, shape, init]) => {
    let bytes: Uint8Array;
    if (init === 'tied' && tied) bytes = tied;
    else {
      const v = new Float32Array(shape.reduce((a, b) => a * b, 1));
      fill(init, v, uniform, shape[0], dims.head.bankFill, wStd);
      const out = bf16 ? toBf16(v) : v;
      bytes = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
    }
    if (name.endsWith('embed_tokens.weight')) tied = bytes;
    return [name, { dtype: dims.dtype, shape, data: bytes }];
  });
}

function writeSafetensors(file: string, tensors: Array<[string, NativeTensor]>): Promise<void> {
  return runTorchJob(() => getBinding().saveSafetensors(file, tensors));
}

function writeJson(file: string, value: unknown) {
  fs.writeFileSync(file, JSON.stringify(value, null, 2) + '\n');
}

function writeConfigs(dir: string, d: RandomRunDims) {
  const dtype = d.dtype;
  const recorded: RecordedHeadConfig | undefined = d.ablation && d.ablation !== 'none'
    ? { ablation: d.ablation, num_heads: d.head.heads, chunk: d.head.chunk } : undefined;
  writeJson(path.join(dir, 'config.json'), {
    ...(recorded && { [HEAD_CONFIG_KEY]: recorded }),
    architectures: ['OpenVLAForActionPrediction'], model_type: 'openvla', arch_specifier: 'no-align+fused-gelu-mlp',
    hf_llm_id: 'Qwen/Qwen2.5-0.5B', llm_backbone_id: 'qwen25-0_5b-extra', vision_backbone_id: 'dinosiglip-vit-so-224px',
    image_resize_strategy: 'resize-naive', image_sizes: [d.imageSize, d.imageSize], use_fused_vision_backbone: true,
    timm_model_ids: ['vit_large_patch14_reg4_dinov2.lvd142m', 'vit_so400m_patch14_siglip_224'],
    timm_override_act_layers: [null, null], torch_dtype: dtype,
    text_config: {
      model_type: 'qwen2', hidden_act: 'silu', hidden_size: d.llm.hidden, intermediate_size: d.llm.intermediate,
      num_hidden_layers: d.llm.layers, num_attention_heads: d.llm.heads, num_key_value_heads: d.llm.kvHeads,
      max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 1e6, tie_word_embeddings: true,
      vocab_size: d.llm.vocab, torch_dtype: dtype,
    },
  });
  const S = d.imageSize;
  writeJson(path.join(dir, 'preprocessor_config.json'), {
    image_processor_type: 'PrismaticImageProcessor', image_resize_strategy: 'resize-naive', use_fused_vision_backbone: true,
    input_sizes: [[3, S, S], [3, S, S]], interpolations: ['bicubic', 'bicubic'],
    means: [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]], stds: [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]],
    tvf_resize_params: [0, 1].map(() => ({ antialias: true, interpolation: 3, max_size: null, size: [S, S] })),
    tvf_crop_params: [0, 1].map(() => ({ output_size: [S, S] })),
    // VLA-Adapter's DINO mean/std are bf16-rounded ImageNet values
    tvf_normalize_params: [
      { inplace: false, mean: [0.484375, 0.455078125, 0.40625], std: [0.228515625, 0.2236328125, 0.224609375] },
      { inplace: false, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] },
    ],
    tvf_do_letterbox: false, tvf_letterbox_fill: null,
  });
  const A = d.head.actionDim, P = d.head.proprioDim;
  const stat = (n: number, lo: number, hi: number, gripperPassThrough: boolean) => ({
    mean: Array(n).fill((lo + hi) / 2), std: Array(n).fill((hi - lo) / 4),
    max: Array(n).fill(hi * 1.05), min: Array(n).fill(lo * 1.05), q01: Array(n).fill(lo), q99: Array(n).fill(hi),
    mask: Array.from({ length: n }, (_, i) => !(gripperPassThrough && i === n - 1)),
  });
  writeJson(path.join(dir, 'dataset_statistics.json'), {
    random_demo: {
      action: stat(A, -0.5, 0.5, true), proprio: stat(P, -1, 1, false), num_transitions: 0, num_trajectories: 0,
    },
  });
  if (d.manifest) {
    const tower = (t: TowerDims, kind: 'dinov2' | 'siglip') => ({
      kind, embed_dim: t.dim, depth: t.depth, num_heads: t.heads, mlp_hidden: t.mlp, class_token: kind === 'dinov2',
      reg_tokens: kind === 'dinov2' ? 4 : 0, layerscale: kind === 'dinov2', take_block_index: t.depth - 2,
    });
    writeJson(path.join(dir, 'manifest.json'), {
      name: 'm2vla random run', generator: 'm2vla lib/random-run.ts',
      vision: { image_size: S, num_images: d.numImages, featurizer: tower(d.dino, 'dinov2'), fused_featurizer: tower(d.siglip, 'siglip') },
      sequence: { num_action_queries_NT: d.numActionQueries, aq_placeholder_token_id: 1, stop_token_id: 2 },
      action_head: { memory: { key_layer_indices: d.head.keyLayers, top_k: d.head.topK } },
    });
  }
}

/** What ensureRandomRun wrote: its inputs and the SHA-256 of every file, checked before the directory is reused. */
const RECORD = 'm2vla-random-run.json';

function sha256(file: string): string {
  const hash = createHash('sha256'), buf = Buffer.allocUnsafe(16 << 20), fd = fs.openSync(file, 'r');
  try {
    for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) hash.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

/** Whether `dir` holds exactly what these inputs generate: same inputs recorded, every file with its recorded hash. */
function verified(dir: string, inputs: string): boolean {
  let record: { inputs?: unknown; files?: Record<string, string> };
  try {
    record = JSON.parse(fs.readFileSync(path.join(dir, RECORD), 'utf8'));
  } catch {
    return false;
  }
  if (JSON.stringify(record?.inputs) !== inputs || !record.files || typeof record.files !== 'object') return false;
  const files = Object.entries(record.files);
  // An extra file (say action_head--checkpoint.pt, which loaders may prefer) is as bad as a changed one.
  if (!fs.readdirSync(dir).every((f) => f === RECORD || f in record.files!)) return false;
  return files.length > 0 && files.every(([name, digest]) => {
    const file = path.join(dir, name);
    try {
      return path.basename(name) === name && fs.lstatSync(file).isFile() && sha256(file) === digest;
    } catch {
      return false;
    }
  });
}

/**
 * Create a random run directory with these dims and resolve with it. A directory is reused only when its record names the
 * same inputs and every file still has the SHA-256 recorded when it was written (a truncated or replaced file is
 * regenerated). `tokenizerDir` (optional) is copied in (tokenizer.json, tokenizer_config.json).
 */
export async function ensureRandomRun(dir: string, dims: RandomRunDims,
  options: { seed?: number; tokenizerDir?: string } = {}): Promise<string> {
  const seed = options.seed ?? 0;
  const tokenizer = options.tokenizerDir
    ? ['tokenizer.json', 'tokenizer_config.json'].map((f) => sha256(path.join(options.tokenizerDir!, f))) : [];
  const inputs = JSON.stringify({ seed, dims, tokenizer });
  if (verified(dir, inputs)) return dir;
  // Only a run this function wrote (its record is there) or an empty directory is replaced: never a user's folder
  // (say M2VLA_FULLSIZE_DIR pointed at a real checkpoint), which the swap below would delete.
  if (fs.existsSync(dir) && !fs.existsSync(path.join(dir, RECORD)) && fs.readdirSync(dir).length > 0) {
    throw new ConfigError(`${dir}: not a generated random run (no ${RECORD}) and not empty; refusing to replace it. `
      + 'Point at a new or empty directory.');
  }
  // Written aside and renamed in whole: processes racing here (parallel test files) never see a half-written run.
  const tmp = `${dir}.tmp-${process.pid}-${Math.random().toString(36).slice(2)}`;
  fs.mkdirSync(tmp, { recursive: true });
  try {
    await writeRandomRun(tmp, dims, seed, options.tokenizerDir, inputs);
    for (let attempt = 0; ; attempt++) {
      try {
        fs.renameSync(tmp, dir);  // onto a missing or empty directory
        return dir;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOTEMPTY' && code !== 'EEXIST') || attempt > 2) throw e;
      }
      if (verified(dir, inputs)) return dir;  // another process finished first
      const stale = `${dir}.stale-${process.pid}-${attempt}`;
      try {
        fs.renameSync(dir, stale);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      fs.rmSync(stale, { recursive: true, force: true });
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

async function writeRandomRun(dir: string, dims: RandomRunDims, seed: number, tokenizerDir: string | undefined,
  inputs: string): Promise<void> {
  await writeSafetensors(path.join(dir, 'model.safetensors'), drawTensors(vlmSpec(dims), dims, seed, dims.vlmInitStd));
  const size = new Uint8Array(new BigInt64Array([BigInt(dims.head.bankFill)]).buffer);
  const counts = headLayout(dims).actionHead.filter((t) => t.init === 'count'); // the bank's row count (absent without MSM)
  await writeSafetensors(path.join(dir, 'action_head.safetensors'), [...drawTensors(headSpec(dims), dims, seed + 1),
    ...counts.map((t): [string, NativeTensor] => [t.name, { dtype: 'int64', shape: t.shape, data: size }])]);
  await writeSafetensors(path.join(dir, 'proprio_projector.safetensors'), drawTensors(proprioSpec(dims), dims, seed + 2));
  writeConfigs(dir, dims);
  if (tokenizerDir) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(tokenizerDir, f), path.join(dir, f));
  }
  const files = fs.readdirSync(dir).filter((f) => fs.lstatSync(path.join(dir, f)).isFile());
  const record = { inputs: JSON.parse(inputs), files: Object.fromEntries(files.map((f) => [f, sha256(path.join(dir, f))])) };
  fs.writeFileSync(path.join(dir, RECORD), `${JSON.stringify(record, null, 2)}\n`);
}

/**
 * This user's cache folder for m2vla (`$M2VLA_CACHE`, else `$XDG_CACHE_HOME/m2vla`, else `~/.cache/m2vla`), created
 * with mode 0700. Refused unless it is a real directory (not a symlink) owned by this user that nobody else can
 * write: what another local user could plant there would be loaded as weights.
 */
export function userCacheDir(): string {
  const dir = process.env.M2VLA_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'm2vla');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  const uid = process.getuid?.();
  const why = !st.isDirectory() ? 'is not a directory (a symlink?)'
    : uid !== undefined && st.uid !== uid ? `belongs to uid ${st.uid}, not to this user (${uid})`
      : (st.mode & 0o022) !== 0 ? `is writable by others (mode ${(st.mode & 0o777).toString(8)})` : undefined;
  if (why) throw new ConfigError(`${dir}: the m2vla cache folder ${why}; remove it, or set M2VLA_CACHE to a private folder`);
  return dir;
}
