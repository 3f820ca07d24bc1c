/**
 * "VQA preserved", measured: m2vla's own `ask()` (greedy decoding of the frozen VLM, lib/backbone.ts) on the held-out
 * scene questions eval/pretrain_vlm.py wrote into the run directory (heldout.json: unseen scenes, unseen phrasings).
 * An answer counts when its decoded text equals the expected one.
 *
 *   node --import tsx eval/vqa.ts <runDir> [out.json]
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadBackbone } from '../lib/backbone.js';

export interface VqaResult {
  correct: number;
  total: number;
  byKind: Record<string, { correct: number; total: number }>;
  examples: Array<{ question: string; answer: string; got: string }>;
}

interface HeldOut {
  stop_id: number;
  image_size: number;
  items: Array<{ kind: string; question: string; answer: string; prompt_ids: number[]; primary: string; wrist: string }>;
}

export async function askAccuracy(runDir: string): Promise<VqaResult> {
  const held = JSON.parse(fs.readFileSync(path.join(runDir, 'heldout.json'), 'utf8')) as HeldOut;
  await using vlm = await loadBackbone(runDir);
  const S = held.image_size;
  const image = (b64: string) => ({ data: new Uint8Array(Buffer.from(b64, 'base64')), width: S, height: S });
  const r: VqaResult = { correct: 0, total: 0, byKind: {}, examples: [] };
  for (const item of held.items) {
    const ids = await vlm.ask({ images: { primary: image(item.primary), wrist: image(item.wrist) }, inputIds: item.prompt_ids },
      { maxNewTokens: 8, stopIds: [held.stop_id] });
    const got = vlm.tokenizer!.decode(ids.filter((id) => id !== held.stop_id)).trim();
    const ok = got === item.answer;
    const k = (r.byKind[item.kind] ??= { correct: 0, total: 0 });
    k.total++;
    r.total++;
    if (ok) {
      k.correct++;
      r.correct++;
    }
    if (r.examples.length < 6) r.examples.push({ question: item.question, answer: item.answer, got });
  }
  return r;
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname)) {
  const [runDir, out] = process.argv.slice(2);
  if (!runDir) {
    console.error('usage: node --import tsx eval/vqa.ts <runDir> [out.json]');
    process.exit(2);
  }
  const r = await askAccuracy(runDir);
  console.log(`ask() on held-out questions: ${r.correct}/${r.total}; ` +
    Object.entries(r.byKind).map(([k, v]) => `${k} ${v.correct}/${v.total}`).join(', '));
  if (out) fs.writeFileSync(out, `${JSON.stringify(r, null, 1)}\n`);
}
