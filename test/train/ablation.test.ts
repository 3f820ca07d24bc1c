// The paper's ablation variants (Table V) on the demo-size model and the LIBERO fixture: each trains (the loss falls),
// saves only the tensors it uses, records its variant in the exported run directory and reloads through loadPolicy
// with the trainer's actions. no-msm never touches a bank; no-mol's block equals a hand-written single cross-attention;
// memoryBank() returns the rows training appended, the rows act() retrieves.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadBackbone } from '../../lib/backbone.js';
import { loadStateDict, type CheckpointTensor } from '../../lib/checkpoint.js';
import type { Ablation } from '../../lib/config.js';
import { CheckpointError, ConfigError, InputError } from '../../lib/errors.js';
import { loadHead } from '../../lib/head.js';
import { loadPolicy, type Policy } from '../../lib/policy.js';
import { DEMO_DIMS } from '../../lib/random-run.js';
import { Trainer, train, type PackedBatch } from '../../lib/train.js';
import { roundBf16, toFloat32 } from '../helpers/fixtures.js';
import { freshOut, LIBERO, mean, tinyRun } from '../helpers/train.js';

const TINY = await tinyRun();

const SAMPLES = [0, 3];

/** Trains `steps` steps of a variant, exports it; the trainer's actions for SAMPLES and the batches it trained on. */
async function trainVariant(ablation: Ablation | undefined, steps: number, lr = 1e-3) {
  const out = freshOut();
  const trainer = await Trainer.create({ data: LIBERO, init: await tinyRun(), out, steps, batchSize: 4, lr, threads: 1,
    memorySampleRate: 1, ...(ablation && { ablation }) });
  const losses: number[] = [], trained: PackedBatch[] = [];
  try {
    for (let i = 0; i < steps; i++) {
      const batches = await trainer.readStep();
      trained.push(...batches);
      losses.push((await trainer.step(batches)).loss);
    }
    await trainer.exportRun();
    const predicted = (await trainer.predict(await trainer.readBatch(SAMPLES))).normalized;
    const samples = await Promise.all(SAMPLES.map((i) => trainer.dataset.sample(i)));
    return { out, losses, trained, predicted, samples };
  } finally {
    await trainer.dispose();
  }
}

type Trained = Awaited<ReturnType<typeof trainVariant>>;

function observations(t: Trained) {
  return t.samples.map((s) => ({ images: { primary: s.images.primary, wrist: s.images.wrist! }, instruction: s.instruction, state: s.state }));
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

const f32 = (t: CheckpointTensor) => new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));

// The loss of the last 5 steps against the first 5. With memorySampleRate 1 the bank holds the fixture's own chunks and
// retrieval is a shortcut: no-mol falls as fast as the full model (measured 0.53 -> 0.10 in 60 steps at 1e-3, full:
// 0.54 -> 0.11). Without it, the demo model has to tell 7 samples apart through its random VLM's features: no-msm needs
// a higher rate (measured: 0.55 -> 0.50 at 1e-3, 0.55 -> 0.45 at 1e-2 in 60 steps).
describe.each([
  { ablation: 'no-mol' as const, steps: 40, lr: 1e-3, ratio: 0.6 },
  { ablation: 'no-msm' as const, steps: 60, lr: 1e-2, ratio: 0.9 },
])('ablation $ablation', ({ ablation, steps, lr, ratio }) => {
  let t: Trained, policy: Policy;
  beforeAll(async () => {
    t = await trainVariant(ablation, steps, lr);
    policy = await loadPolicy(t.out, { threads: 1, dtype: 'float32' });
  });
  afterAll(() => policy?.dispose());

  it('trains: the loss falls on the fixture', () => {
    expect(mean(t.losses.slice(-5))).toBeLessThan(ratio * mean(t.losses.slice(0, 5)));
  });

  it('records its variant and saves only the tensors it uses', async () => {
    const config = JSON.parse(fs.readFileSync(path.join(t.out, 'config.json'), 'utf8'));
    expect(config.m2vla_head).toEqual({ ablation, num_heads: 4, chunk: 8 });
    const names = Object.keys(await loadStateDict(path.join(t.out, 'action_head.safetensors')));
    const has = (re: RegExp) => names.some((n) => re.test(n));
    expect(has(/^memory_/)).toBe(ablation !== 'no-msm');
    for (const part of ['k_adapter', 'v_adapter', 'k_task', 'v_task', 'k_self', 'v_self', 'gating_factor'])
      expect(has(new RegExp(`\\.${part}\\b`)), part).toBe(ablation !== 'no-mol');
    expect(has(/\.k_last\./)).toBe(ablation === 'no-mol');
    // Only what the variant uses: no pass-through of the reference's unused k_memory / v_memory / film_gen.
    expect(has(/\.(k_memory|v_memory|film_gen\.0)\./)).toBe(false);
    const pt = Object.keys(await loadStateDict(path.join(t.out, 'action_head--checkpoint.pt')));
    expect(pt.sort()).toEqual([...names].sort());
  });

  it('reloads through loadPolicy with the trainer\'s actions and reports its variant', async () => {
    expect(policy.metadata.ablation).toBe(ablation);
    const out = await policy.act(observations(t));
    // The trainer runs the prompt prefix and the action queries separately; the policy runs the whole sequence.
    expect(maxDiff(out.normalized.data, t.predicted)).toBeLessThan(1e-5);
    const R = ablation === 'no-msm' ? 0 : 4;
    expect(out.retrieval.shape).toEqual([2, R]);
  });

  it('refuses to load as another variant', async () => {
    for (const other of ['none', ablation === 'no-mol' ? 'no-msm' : 'no-mol'] as const)
      await expect(loadPolicy(t.out, { threads: 1, ablation: other })).rejects.toThrow(CheckpointError);
    await expect(loadPolicy(t.out, { threads: 1, ablation: 'none' }))
      .rejects.toThrow(`holds a '${ablation}' head (ablation), but 'none' was requested`);
  });
});

describe('no-msm', () => {
  it('never touches a bank: no query keys, no retrieval, an empty memoryBank()', async () => {
    const t = await trainVariant('no-msm', 2);
    await using policy = await loadPolicy(t.out, { threads: 1, dtype: 'float32' });
    const features = await policy.features(observations(t)[0]);
    expect(features.queryKeys.shape).toEqual([1, 0]);
    expect(features.retrieval.indices).toHaveLength(0);
    expect(features.gates).toHaveLength(4);
    const bank = await policy.memoryBank();
    expect(bank.size).toBe(0);
    expect(bank.keys.shape).toEqual([0, 3 * 64]);
    expect(bank.values.shape).toEqual([0, 56]);
  });
});

describe('no-mol', () => {
  it('each block is one cross-attention to the last hidden state\'s [vision; AQ; proprio] (hand-written reference)', async () => {
    const t = await trainVariant('no-mol', 2);
    await using backbone = await loadBackbone(t.out, { threads: 1 });
    await using head = await loadHead(t.out, { threads: 1 });
    const sample = t.samples[0];
    const { hiddenStates } = await backbone.forward([{ images: { primary: sample.images.primary, wrist: sample.images.wrist! },
      instruction: sample.instruction }]);
    const [L1, , seq, D] = hiddenStates.shape;
    const promptLen = backbone.tokenizer!.promptIds(sample.instruction).length;
    const proprio = new Float32Array(8).fill(0.25);
    const out = await head.forward({ hiddenStates: hiddenStates.data, hiddenShape: hiddenStates.shape, promptLen, proprio,
      intermediates: true });
    const trace = out.intermediates!;
    const sd = await loadStateDict(path.join(t.out, 'action_head.safetensors'));
    const H = 4, hd = D / H, NP = 32, NT = 8, chunk = 8, last = L1 - 1;

    // Tokens: vision = h_last[0:NP], AQ = the head's AQ slice of the last hidden state, then the proprio token.
    const hs = hiddenStates.data, aq = toFloat32(trace.inputAq), pf = toFloat32(trace.proprioFeatures);
    const tokens: Float64Array[] = [];
    for (let j = 0; j < NP; j++) tokens.push(Float64Array.from(hs.subarray((last * seq + j) * D, (last * seq + j + 1) * D)));
    for (let j = 0; j < NT; j++) tokens.push(Float64Array.from(aq.subarray((last * NT + j) * D, (last * NT + j + 1) * D)));
    tokens.push(Float64Array.from(pf));
    const linear = (x: ArrayLike<number>, name: string) => {
      const w = f32(sd[`${name}.weight`]), b = f32(sd[`${name}.bias`]), y = new Float64Array(D);
      for (let o = 0; o < D; o++) {
        let s = b[o];
        for (let i = 0; i < D; i++) s += w[o * D + i] * x[i];
        y[o] = s;
      }
      return y;
    };
    // The head's RoPE (SPEC §2): element d pairs with d^1; angle pos * 10000^(-2(d mod hd/2)/hd).
    const rope = (v: Float64Array, pos: number) => {
      const r = new Float64Array(D);
      for (let h = 0; h < H; h++) {
        for (let d = 0; d < hd; d++) {
          const angle = pos * Math.pow(10000, -(2 * (d % (hd / 2))) / hd);
          const partner = v[h * hd + (d ^ 1)] * (d % 2 === 0 ? -1 : 1);
          r[h * hd + d] = v[h * hd + d] * Math.cos(angle) + partner * Math.sin(angle);
        }
      }
      return r;
    };

    expect(trace.blocks).toHaveLength(4);
    trace.blocks.forEach((block, i) => {
      expect(block.tanhG).toBeUndefined();
      const p = `model.mlp_resnet_blocks.${i}`;
      const x = toFloat32(block.in);
      const keys = tokens.map((tok, j) => rope(linear(tok, `${p}.k_last`), j)), values = tokens.map((tok) => linear(tok, `${p}.v_last`));
      const mix = new Float64Array(chunk * D);
      for (let c = 0; c < chunk; c++) {
        const q = rope(linear(x.subarray(c * D, (c + 1) * D), `${p}.q_proj`), c);
        for (let h = 0; h < H; h++) {
          const logits = keys.map((k) => {
            let s = 0;
            for (let d = 0; d < hd; d++) s += q[h * hd + d] * k[h * hd + d];
            return s / Math.sqrt(hd);
          });
          const top = Math.max(...logits), e = logits.map((l) => Math.exp(l - top)), z = e.reduce((a, b) => a + b, 0);
          values.forEach((v, j) => { for (let d = 0; d < hd; d++) mix[c * D + h * hd + d] += (e[j] / z) * v[h * hd + d]; });
        }
      }
      expect(block.caVWeights.shape).toEqual([1, H, chunk, NP + NT + 1]);
      // float32 against float64: measured ~1e-7. The demo's small random weights keep the attention close to uniform,
      // so a tolerance much looser than that would not notice, e.g., a missing RoPE on the queries (1.3e-4).
      expect(maxDiff(toFloat32(block.attnMix), mix), `block ${i} attention`).toBeLessThan(2e-6);
      const o = new Float64Array(chunk * D);
      for (let c = 0; c < chunk; c++) o.set(linear(mix.subarray(c * D, (c + 1) * D), `${p}.o_proj`), c * D);
      expect(maxDiff(toFloat32(block.oProjOut), o), `block ${i} o_proj`).toBeLessThan(5e-6);
    });
  });
});

describe('an ablation run', () => {
  it('resumes exactly from its checkpoint (the checkpoint states the dims its tensors do not show)', async () => {
    const base = { data: LIBERO, init: await tinyRun(), steps: 4, batchSize: 2, lr: 1e-3, threads: 1, seed: 3, checkpointEvery: 2,
      ablation: 'no-mol' as const };
    const straight = await train({ ...base, out: freshOut() });
    const out = freshOut(), stop = new AbortController();
    const first = await train({ ...base, out, signal: stop.signal, onProgress: (e) => { if (e.kind === 'step' && e.step === 2) stop.abort(); } });
    expect(first.interrupted).toBe(true);
    await expect(train({ ...base, out, resume: true, ablation: 'no-msm' })).rejects.toThrow(/ablation was "no-mol", now "no-msm"/);
    const second = await train({ ...base, out, resume: true });
    expect([...first.metrics, ...second.metrics].map((m) => m.loss)).toEqual(straight.metrics.map((m) => m.loss));
  });
});

describe('memoryBank()', () => {
  let t: Trained, policy: Policy;
  beforeAll(async () => {
    t = await trainVariant(undefined, 2);
    policy = await loadPolicy(t.out, { threads: 1, dtype: 'float32' });
  });
  afterAll(() => policy?.dispose());

  it('returns the init rows, then the rows training appended (key, normalized chunk), as float32', async () => {
    const bank = await policy.memoryBank();
    expect(policy.metadata.ablation).toBe('none');
    // The demo run starts with 50 rows; every micro-batch of 4 is appended (memorySampleRate 1).
    expect(bank.size).toBe(58);
    expect(bank.keys.shape).toEqual([58, 3 * 64]);
    expect(bank.values.shape).toEqual([58, 56]);
    const init = await loadStateDict(path.join(await tinyRun(), 'action_head.safetensors'), { dtype: 'float32' });
    expect(Array.from(bank.keys.data.subarray(0, 50 * 192))).toEqual(Array.from(roundBf16(f32(init['memory_bank.keys']).subarray(0, 50 * 192))));
    const appended = t.trained.flatMap((b) => Array.from(b.batch.actions));
    // Values are stored in bfloat16: 8 significant bits.
    expect(maxDiff(bank.values.data.subarray(50 * 56), appended)).toBeLessThan(1e-2);
  });

  it('holds the rows act() retrieves, at the similarity it reports', async () => {
    const bank = await policy.memoryBank();
    const obs = observations(t);
    const features = await policy.features(obs);
    const act = await policy.act(obs);
    expect(Array.from(act.retrieval.indices)).toEqual(Array.from(features.retrieval.indices));
    const K = bank.keys.shape[1];
    act.retrieval.indices.forEach((row, k) => {
      const b = Math.floor(k / 4);
      const q = features.queryKeys.data.subarray(b * K, (b + 1) * K), key = bank.keys.data.subarray(row * K, (row + 1) * K);
      let l1 = 0;
      for (let d = 0; d < K; d++) l1 += Math.abs(q[d] - key[d]);
      expect(Math.abs(-10000 * l1 / K - act.retrieval.similarities[k])).toBeLessThan(1e-3 * Math.max(1, Math.abs(act.retrieval.similarities[k])));
    });
  });
});

describe('a random run in an ablation\'s layout (lib/random-run.ts, what the full-size bench uses)', () => {
  it.each(['no-mol', 'no-msm'] as const)('%s loads as that variant', async (ablation) => {
    await using policy = await loadPolicy(await tinyRun({ ...DEMO_DIMS, ablation }, `tiny-${ablation}`), { threads: 1 });
    expect(policy.metadata.ablation).toBe(ablation);
    expect(policy.metadata.bankSize).toBe(ablation === 'no-msm' ? 0 : 50);
  });
});

describe('a run directory without its "m2vla_head" record', () => {
  it('names the variant its checkpoint holds, then the dim it cannot show', async () => {
    const dir = freshOut();
    fs.cpSync(await tinyRun({ ...DEMO_DIMS, ablation: 'no-mol' }, 'tiny-no-mol'), dir, { recursive: true });
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    delete config.m2vla_head;
    fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
    await expect(loadPolicy(dir, { threads: 1 })).rejects.toThrow(/holds a 'no-mol' head \(ablation\), but 'none' was requested/);
    await expect(loadPolicy(dir, { threads: 1, ablation: 'no-mol' }))
      .rejects.toThrow(new ConfigError(`${path.join(dir, 'action_head.safetensors')}: a 'no-mol' head does not show its head count; ` +
        'the run directory must state it (config.json "m2vla_head")'));
  });
});

describe('m2vla train --ablation', () => {
  const main = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../lib/cli/main.ts');
  const cli = (out: string, ablation: string) => spawnSync(process.execPath, ['--import', 'tsx', '-e',
    `import(${JSON.stringify(main)}).then((m) => m.main(process.argv.slice(1)))`, 'train', '--data', LIBERO, '--init', TINY,
    '--out', out, '--steps', '1', '--batch', '2', '--lr', '1e-3', '--threads', '1', '--ablation', ablation], { encoding: 'utf8' });

  it('trains the variant and records it; an unknown one is an error naming the choices', () => {
    const out = freshOut();
    const ok = cli(out, 'no-msm');
    expect(ok.status, ok.stderr).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).m2vla_head.ablation).toBe('no-msm');
    const bad = cli(freshOut(), 'msm');
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--ablation: expected none \| no-mol \| no-msm, got 'msm'[\s\S]*usage: m2vla train/);
  });
});

describe('bad ablation values', () => {
  it('are InputErrors in train(), loadPolicy() and loadHead()', async () => {
    const o = { data: LIBERO, init: await tinyRun(), out: freshOut(), steps: 1, batchSize: 2, lr: 1e-3, threads: 1 };
    await expect(train({ ...o, ablation: 'no-both' as Ablation })).rejects.toThrow(InputError);
    await expect(train({ ...o, ablation: 'no-both' as Ablation })).rejects.toThrow(/ablation: expected one of 'none', 'no-mol', 'no-msm', got "no-both"/);
    expect(fs.existsSync(o.out)).toBe(false);
    await expect(loadPolicy(await tinyRun(), { ablation: 'mol' as Ablation })).rejects.toThrow(InputError);
    await expect(loadHead(await tinyRun(), { head: { ablation: 'msm' as Ablation } })).rejects.toThrow(InputError);
  });

  it('a full checkpoint forced to an ablation is a CheckpointError', async () => {
    await expect(loadPolicy(await tinyRun(), { threads: 1, ablation: 'no-msm' }))
      .rejects.toThrow(/holds a 'none' head \(ablation\), but 'no-msm' was requested/);
    await expect(loadPolicy(await tinyRun(), { threads: 1, ablation: 'no-mol' })).rejects.toThrow(CheckpointError);
  });
});
