/**
 * Action-head timings at the real size (random weights): the fused MSM retrieval vs the reference computation
 * (at::cdist p=1 on the float32 keys + at::topk) on a full 10000 × 2688 bfloat16 bank, and the head forward
 * (24 blocks, hidden 896, 8 heads, NP 512, NT 64) in float32 and bfloat16.
 *
 *   node --import tsx bench/head.ts [--threads 2] [--dir /tmp]
 *
 * The random checkpoint (~0.8 GB, only the tensors the forward reads) is written to --dir and deleted afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createHead } from '../lib/head.js';
import { getBinding } from '../lib/native/binding.js';

const args = process.argv.slice(2);
const opt = (name: string, fallback: string) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const threads = Number(opt('--threads', '2'));
const dir = fs.mkdtempSync(path.join(opt('--dir', os.tmpdir()), 'm2vla-head-bench-'));

const D = 896, BLOCKS = 24, HEADS = 8, CHUNK = 8, A = 7, PROPRIO = 8, NP = 512, NT = 64, BANK = 10000;
const KEY_LAYERS = [3, 11, 23], KEY_DIM = KEY_LAYERS.length * D;

/** Uniform numbers in [-scale, scale) from a xorshift generator (fast enough for ~200M values). */
function random(n: number, scale: number, seed: number): Float32Array {
  let x = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = (x / 4294967296 * 2 - 1) * scale;
  }
  return out;
}

function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(u, (v) => ((v + 0x7fff + ((v >>> 16) & 1)) >>> 16) & 0xffff);
}

type Entry = { dtype: 'F32' | 'BF16' | 'I64'; shape: number[]; data: ArrayBufferView };

function writeSafetensors(file: string, tensors: Record<string, Entry>): void {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const fd = fs.openSync(file, 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  for (const t of Object.values(tensors)) fs.writeSync(fd, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  fs.closeSync(fd);
}

function linear(out: Record<string, Entry>, name: string, rows: number, cols: number, seed: number): void {
  const bound = 1 / Math.sqrt(cols);
  out[`${name}.weight`] = { dtype: 'F32', shape: [rows, cols], data: random(rows * cols, bound, seed) };
  out[`${name}.bias`] = { dtype: 'F32', shape: [rows], data: random(rows, bound, seed + 1) };
}

function layerNorm(out: Record<string, Entry>, name: string, dim: number): void {
  out[`${name}.weight`] = { dtype: 'F32', shape: [dim], data: new Float32Array(dim).fill(1) };
  out[`${name}.bias`] = { dtype: 'F32', shape: [dim], data: random(dim, 0.1, dim) };
}

function writeCheckpoints(): { actionHeadPath: string; proprioProjectorPath: string; bankKeys: Float32Array } {
  const t: Record<string, Entry> = {};
  layerNorm(t, 'model.layer_norm1', A * D);
  linear(t, 'model.fc1', D, A * D, 1);
  for (let i = 0; i < BLOCKS; i++) {
    const p = `model.mlp_resnet_blocks.${i}.`;
    const s = 100 + i * 20;
    linear(t, `${p}q_proj`, D, D, s);
    linear(t, `${p}k_self`, D, D, s + 2);
    linear(t, `${p}v_self`, D, D, s + 4);
    linear(t, `${p}k_adapter`, D + HEADS, D, s + 6);
    linear(t, `${p}v_adapter`, D, D, s + 8);
    linear(t, `${p}k_task`, D, D, s + 10);
    linear(t, `${p}v_task`, D, D, s + 12);
    linear(t, `${p}o_proj`, D, D, s + 14);
    layerNorm(t, `${p}ffn.0`, D);
    linear(t, `${p}ffn.1`, D, D, s + 16);
    t[`${p}gating_factor`] = { dtype: 'F32', shape: [1], data: Float32Array.of(0.5) };
  }
  layerNorm(t, 'model.layer_norm2', D);
  linear(t, 'model.fc2', A, D, 3);
  linear(t, 'memory_value_proj', CHUNK * D, CHUNK * A, 5);
  const bankKeys = random(BANK * KEY_DIM, 1, 7);
  t['memory_bank.keys'] = { dtype: 'BF16', shape: [BANK, KEY_DIM], data: toBf16(bankKeys) };
  t['memory_bank.values'] = { dtype: 'BF16', shape: [BANK, CHUNK * A], data: toBf16(random(BANK * CHUNK * A, 1, 8)) };
  t['memory_bank.size'] = { dtype: 'I64', shape: [], data: BigInt64Array.of(BigInt(BANK)) };
  const actionHeadPath = path.join(dir, 'action_head.safetensors');
  writeSafetensors(actionHeadPath, t);
  const p: Record<string, Entry> = {};
  linear(p, 'fc1', D, PROPRIO, 11);
  linear(p, 'fc2', D, D, 13);
  const proprioProjectorPath = path.join(dir, 'proprio_projector.safetensors');
  writeSafetensors(proprioProjectorPath, p);
  return { actionHeadPath, proprioProjectorPath, bankKeys };
}

async function time(label: string, iterations: number, fn: () => Promise<unknown>): Promise<number> {
  await fn();  // warm-up: thread pool, first-touch of weights, oneDNN primitive caches
  const samples: number[] = [];
  for (let i = 0; i < iterations; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  const median = samples[Math.floor(samples.length / 2)];
  console.log(`${label.padEnd(58)} median ${median.toFixed(1).padStart(8)} ms  (min ${samples[0].toFixed(1)}, n=${iterations})`);
  return median;
}

async function main() {
  const binding = getBinding();
  console.log(`threads ${threads}; ${os.cpus()[0]?.model ?? 'cpu'}`);
  const { actionHeadPath, proprioProjectorPath, bankKeys } = writeCheckpoints();

  const bank = await binding.createMemoryBank({ capacity: BANK, keyDim: KEY_DIM, valueDim: CHUNK * A, threads });
  await bank.append({ keys: bankKeys, values: random(BANK * CHUNK * A, 1, 8) });
  for (const batch of [1, 8]) {
    // Queries near bank rows, as real keys are (mean vision features of similar scenes).
    const queries = new Float32Array(batch * KEY_DIM);
    const noise = random(batch * KEY_DIM, 0.05, 100 + batch);
    for (let b = 0; b < batch; b++) {
      const row = (b * 1237) % BANK;
      for (let d = 0; d < KEY_DIM; d++) queries[b * KEY_DIM + d] = bankKeys[row * KEY_DIM + d] + noise[b * KEY_DIM + d];
    }
    const fused = await bank.query({ queries, topK: 4, impl: 'fused' });
    const ref = await bank.query({ queries, topK: 4, impl: 'reference' });
    const same = fused.indices.every((v, i) => v === ref.indices[i]) && fused.similarities.every((v, i) => v === ref.similarities[i]);
    console.log(`retrieval batch ${batch}: fused == cdist+topk: ${same}`);
    await time(`retrieval fused, 10000x2688 bf16, batch ${batch}`, 10, () => bank.query({ queries, topK: 4, impl: 'fused' }));
    await time(`retrieval keys.float() + cdist + topk, batch ${batch}`, 3, () => bank.query({ queries, topK: 4, impl: 'reference' }));
  }
  bank.dispose();

  const promptLen = 40, seq = NP + promptLen + NT + 1;
  for (const dtype of ['float32', 'bfloat16'] as const) {
    const head = await createHead({
      actionHeadPath, proprioProjectorPath, dtype, threads,
      config: { keyLayerIndices: KEY_LAYERS, topK: 4, objective: 'l1', numPatches: NP, numActionQueries: NT },
    });
    const hiddenShape = [BLOCKS + 1, 1, seq, D];
    const input = {
      hiddenStates: random(hiddenShape.reduce((a, b) => a * b), 1, 42), hiddenShape, promptLen, proprio: random(PROPRIO, 1, 43),
    };
    await time(`head forward ${dtype}, batch 1, fused`, 5, () => head.forward({ ...input, impl: 'fused' }));
    await time(`head forward ${dtype}, batch 1, op-by-op + cdist`, 3, () => head.forward({ ...input, impl: 'reference' }));
    head.dispose();
  }
}

try {
  await main();
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
