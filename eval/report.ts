/** eval/results/<date>/: report.md (tables in the paper's Table V shape), report.json and the SVG plots. */
import fs from 'node:fs';
import path from 'node:path';
import type { RandomRunDims } from '../lib/random-run.js';
import type { RunAnalysis } from './analysis.js';
import type { ProbeResult } from './language-probe.js';
import type { VqaResult } from './vqa.js';
import { barChart, lineChart, scatter } from './svg.js';

/** What eval/client.py writes (the fields the report reads). */
export interface EvalResult {
  tasks: Record<string, {
    instruction: string; held_out: boolean; success_rate: number; successes: number; mean_steps: number;
    episodes: Array<{ seed: number; success: boolean; steps: number; video?: string }>;
  }>;
  success_rate_seen: number | null;
  episodes_per_task: number;
  replan: number;
  latency_ms: { mean: number; p50: number; p95: number; requests: number };
  seconds: number;
}

export interface VariantReport {
  name: string;
  label: string;
  ablation: string | null;
  result: EvalResult;
  curve: Array<{ steps: number; successSeen: number; episodesPerTask: number }>;
  trainSeconds: number;
  /** Mean training loss over the last 20 steps. */
  finalLoss: number;
  analysis: RunAnalysis | null;
}

export interface BackboneReport {
  /** 'pretrained' (eval/pretrain_vlm.py), 'random' (lib/random-run.ts weights), 'given' (--run). */
  kind: 'pretrained' | 'random' | 'given';
  dir: string | null;
  /** pretrain.json of the pretrained VLM (time, steps, loss, held-out accuracy in PyTorch). */
  pretrain: Record<string, unknown> | null;
  /** Wall time of this eval's pretraining step (near 0 when the recipe was cached). */
  seconds: number;
  /** m2vla ask() on the held-out scene questions. */
  ask: VqaResult | null;
}

export interface Report {
  date: string;
  profile: string;
  profileSettings: object;
  dims: RandomRunDims;
  command: string;
  experts: Record<string, { successes: number; episodes: number }>;
  baseline: EvalResult;
  variants: VariantReport[];
  demoSeconds: number;
  totalSeconds: number;
  runDir: string | null;
  backbone: BackboneReport;
  /** The full model on the same seeds with instructions never seen in training (client.py REPHRASED). */
  rephrased: EvalResult | null;
  probe: ProbeResult | null;
  /** The held-out task after `m2vla add-skills` of its demonstrations into the full model's bank (no training). */
  skills: { with: EvalResult; log: string } | null;
  /**
   * What dtype 'auto' served the rows with, the full model's run served with each other backbone dtype, and `notRun`:
   * the dtypes this CPU cannot run, and why.
   */
  dtypes?: { auto: string; rows: Array<{ dtype: string; result: EvalResult }>; notRun?: Array<{ dtype: string; reason: string }> } | null;
}

/** Wilson score interval (95 %) of k successes in n trials. */
export function wilson(k: number, n: number): [number, number] {
  if (n === 0) return [0, 1];
  const z = 1.96, p = k / n, d = 1 + (z * z) / n;
  const c = (p + (z * z) / (2 * n)) / d, h = (z * Math.sqrt((p * (1 - p)) / n + (z * z) / (4 * n * n))) / d;
  return [Math.max(0, c - h), Math.min(1, c + h)];
}

/** "k/n = p% [lo–hi]" for k successes of n. */
function rate(k: number, n: number): string {
  const [lo, hi] = wilson(k, n);
  return `${k}/${n} = ${pct(n ? k / n : NaN)} [${pct(lo)}–${pct(hi)}]`;
}

/** Successes and episodes over the seen (or the held-out) tasks of a result. */
function counts(r: EvalResult, heldOut: boolean): [number, number] {
  return Object.values(r.tasks).filter((t) => t.held_out === heldOut)
    .reduce((a, t) => [a[0] + t.successes, a[1] + t.episodes.length], [0, 0]);
}

const pct = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(0)}%`);

function successTable(rows: Array<[string, EvalResult]>): string[] {
  const tasks = Object.entries(rows[0][1].tasks);
  const head = ['policy', ...tasks.map(([name, t]) => (t.held_out ? `${name} (held out)` : name)), 'seen tasks, 95 % interval'];
  const cell = (r: EvalResult, name: string) => {
    const t = r.tasks[name];
    return t ? `${t.successes}/${t.episodes.length}` : '–';
  };
  return [
    `| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`,
    ...rows.map(([label, r]) => `| ${label} | ${tasks.map(([name]) => cell(r, name)).join(' | ')} | **${rate(...counts(r, false))}** |`),
  ];
}

/** The issue's claims in one table, each with its episode count and 95 % interval, and what they do not show. */
function claims(r: Report): string[] {
  const full = r.variants.find((v) => v.name === 'full');
  if (!full) return [];
  const row = (what: string, k: number, n: number, note = '') => `| ${what} | ${rate(k, n)} | ${note} |`;
  const out = ['## Summary', '', '| measurement | result (95 % Wilson interval) | note |', '|---|---|---|'];
  const auto = r.dtypes ? `; served with dtype auto = ${r.dtypes.auto.split(' ')[0]}` : '';
  out.push(row('seen tasks, full model', ...counts(full.result, false), `goal ≥ 60 % (quick), ≥ 80 % (full)${auto}`));
  for (const d of r.dtypes?.rows ?? []) {
    out.push(row(`seen tasks, full model, ${d.dtype} backbone + head`, ...counts(d.result, false), 'the same trained run served with `--dtype ' + d.dtype + '`'));
  }
  for (const d of r.dtypes?.notRun ?? []) out.push(`| seen tasks, full model, ${d.dtype} backbone | not run | ${d.reason} |`);
  if (r.rephrased) out.push(row('seen tasks, rephrased instructions', ...counts(r.rephrased, false), 'never-seen phrasings, same seeds (Table I analogue)'));
  out.push(row('novel object + novel instruction (yellow cylinder)', ...counts(full.result, true), 'held out of every demonstration (Table II analogue)'));
  if (r.skills) {
    out.push(row('novel object, its demonstrations added to the bank (no training)', ...counts(r.skills.with, true), r.skills.log.replace(/\|/g, '/')));
  }
  for (const v of r.variants.slice(1)) out.push(row(`seen tasks, ${v.label}`, ...counts(v.result, false), v.ablation ? 'ablation (Table V)' : ''));
  out.push(row('seen tasks, mean-action baseline', ...counts(r.baseline, false)));
  if (r.probe) out.push(row('language probe: scenes where both instructions head for their own cube', r.probe.correct, r.probe.scenes,
    `goal ≥ ${Math.ceil((10 / 12) * r.probe.scenes)}/${r.probe.scenes} (the issue's 10/12); mean |y(red) − y(blue)| ${r.probe.meanGap.toFixed(3)}`));
  if (r.backbone.ask) out.push(row('frozen VLM ask(), held-out scenes and phrasings', r.backbone.ask.correct, r.backbone.ask.total,
    Object.entries(r.backbone.ask.byKind).map(([k, a]) => `${k} ${a.correct}/${a.total}`).join(', ')));
  const pre = r.backbone.pretrain as { train_seconds?: number; steps?: number; final_loss?: number; recipe?: string } | null;
  if (pre) out.push('', `VLM pretraining (${pre.recipe}): ${pre.steps} steps in ${((pre.train_seconds ?? 0) / 60).toFixed(1)} min, final loss ` +
    `${pre.final_loss?.toFixed(3)}; this eval spent ${(r.backbone.seconds / 60).toFixed(1)} min on it (0 when cached).`);
  out.push('', '**What these numbers do and do not show.** Every rate is a small sample: with 10 episodes per task a seen-task ' +
    'rate pools 50 episodes, and its 95 % interval is about ±13 points; differences whose intervals overlap are not ' +
    'established. Results repeat exactly on these seeds (the simulator, training and serving are deterministic), so ' +
    'rerunning does not narrow them: more episodes do. The demonstrations were recorded with DART-style noise (std 0.15) ' +
    'on the executed action; the scripted experts see the true state, the policy only the cameras and proprio. The world ' +
    'is a toy: a tiny VLM pretrained on this simulator\'s own scenes is a stand-in for a generalist VLM, not one.');
  return out;
}

/** Writes the report files into `dir` and returns the markdown. */
export function writeReport(dir: string, r: Report): string {
  fs.mkdirSync(dir, { recursive: true });
  const plots: string[] = [];
  const plot = (file: string, svgText: string, caption: string) => {
    fs.writeFileSync(path.join(dir, file), svgText);
    plots.push(`![${caption}](${file})`);
  };
  const trained = r.variants.filter((v) => v.curve.length > 0);
  const seenTasks = Object.values(r.baseline.tasks).filter((t) => !t.held_out).length;
  if (trained.length > 0) {
    plot('success_vs_steps.svg', lineChart('Seen-task success vs training steps (95 % intervals)', 'optimizer steps', 'success rate',
      [...trained.map((v) => ({
        name: v.label, points: v.curve.map((c) => [c.steps, c.successSeen] as [number, number]),
        intervals: v.curve.map((c) => { const n = c.episodesPerTask * seenTasks; return wilson(Math.round(c.successSeen * n), n); }),
      })),
        { name: 'mean action', points: trained[0].curve.map((c) => [c.steps, r.baseline.success_rate_seen ?? 0] as [number, number]) }],
      [0, 1]), 'success vs steps');
  }
  const gated = r.variants.filter((v) => v.analysis?.gates);
  if (gated.length > 0) {
    const layers = [...new Set(gated.flatMap((v) => v.analysis!.gates!.map((g) => g.layer)))].sort((a, b) => a - b);
    const value = (v: VariantReport, layer: number, key: 'visionScale' | 'queryGate') =>
      v.analysis!.gates!.find((g) => g.layer === layer)?.[key] ?? NaN;
    plot('mol_gates.svg', barChart('MoL vision scale tanh(g) per layer', 'LLM layer read by the block', 'tanh(g)',
      layers.map(String), gated.map((v) => v.label), gated.map((v) => layers.map((l) => value(v, l, 'visionScale')))), 'MoL gates');
    plot('mol_query_gates.svg', barChart('MoL query gate per layer (mean)', 'LLM layer read by the block',
      'sigmoid gate', layers.map(String), gated.map((v) => v.label), gated.map((v) => layers.map((l) => value(v, l, 'queryGate')))),
    'MoL query gates');
  }
  const banked = r.variants.filter((v) => v.analysis?.bank);
  // One plot per variant, each from its own bank (drawn together, one hides the other).
  for (const v of banked) {
    plot(`msm_key_value_${v.name}.svg`, scatter(`MSM bank of ${v.label}: key vs value distance`, 'mean |Δkey|',
      '‖Δ normalized action chunk‖', [{ name: v.label, points: v.analysis!.bank!.points }]), `MSM correlation, ${v.label}`);
  }

  const full = r.variants[0];
  const expertTotals = Object.values(r.experts).reduce((a, t) => [a[0] + t.successes, a[1] + t.episodes], [0, 0]);
  const md = [
    `# Closed-loop evaluation, ${r.date} (${r.profile})`, '',
    `Command: \`${r.command}\`, ${(r.totalSeconds / 60).toFixed(1)} min in all on the shared 2-core VM (CPU only).`, '',
    r.runDir ? `Evaluated run directory: \`${r.runDir}\`.` :
      `**The frozen backbone is a small VLM${r.backbone.kind === 'pretrained' ? ' pretrained on the simulator\'s world' : ' with random weights'}**: ` +
      `DINOv2/SigLIP-style towers of ${r.dims.dino.depth} blocks (${r.dims.dino.dim} / ${r.dims.siglip.dim} dims) at ` +
      `${r.dims.imageSize} px, a ${r.dims.llm.layers}-layer Qwen2-style LLM (hidden ${r.dims.llm.hidden}). ` +
      (r.backbone.kind === 'pretrained' ? 'It was trained from scratch by eval/pretrain_vlm.py on captions and questions about ' +
        'rendered scenes (both cameras; the yellow cylinder and other colours/shapes included), next-token loss on the ' +
        'answers, then frozen; it stands in for the generalist VLM a user downloads. ' : 'No weights are trained. ') +
      `Only the head (MoL + MSM) and the action queries are trained, on ${JSON.stringify(r.profileSettings)}. All variants ` +
      'share the demonstrations, the step budget, the batch order and the seeds.',
    '', `Scripted experts on the evaluation seeds: ${expertTotals[0]}/${expertTotals[1]} episodes succeed.`, '',
    ...claims(r), '',
    '## Success per task (Table V shape)', '', 'Successes / episodes per task; the last column pools the seen tasks.', '',
    ...successTable([...r.variants.map((v) => [v.label, v.result] as [string, EvalResult]), ['mean action (baseline)', r.baseline]]),
    '', `${full.result.episodes_per_task} episodes per task with fixed seeds; re-planning every ${full.result.replan} actions ` +
      'of each 8-action chunk; an episode ends at success (from the simulator state) or after ' +
      `${(r.profileSettings as { maxSteps?: number }).maxSteps ?? '?'} steps. "avg (seen)" averages the 5 training tasks; the ` +
      'held-out task (a cylinder never seen in training) is reported apart.', '',
    '## Runs', '',
    '| policy | final train loss | train time | mean episode length | latency p50 / p95 (ms, round trip) | requests |',
    '|---|---|---|---|---|---|',
    ...r.variants.map((v) => {
      const tasks = Object.values(v.result.tasks);
      const len = tasks.reduce((a, t) => a + t.mean_steps, 0) / tasks.length;
      return `| ${v.label} | ${Number.isNaN(v.finalLoss) ? '–' : v.finalLoss.toFixed(4)} | ${(v.trainSeconds / 60).toFixed(1)} min | ` +
        `${len.toFixed(1)} | ${v.result.latency_ms.p50.toFixed(1)} / ${v.result.latency_ms.p95.toFixed(1)} | ${v.result.latency_ms.requests} |`;
    }),
  ];
  if (trained.length > 0) {
    const steps = trained[0].curve.map((c) => c.steps);
    md.push('', '## Success (seen tasks) vs training steps', '',
      `| policy | ${steps.map((s) => `${s} steps`).join(' | ')} |`, `|---|${steps.map(() => '---').join('|')}|`,
      ...trained.map((v) => `| ${v.label} | ${v.curve.map((c) => `${pct(c.successSeen)} (${c.episodesPerTask}/task)`).join(' | ')} |`));
  }
  if (gated.length > 0) {
    md.push('', '## MoL per-layer gates (Fig. 6 analogue)', '',
      'tanh(g) is the learned static scale of the vision logits of the head block reading LLM layer *l*; the query gate is ' +
      'the dynamic per-head factor, averaged over heads and 32 demonstration observations.', '',
      '| policy | layer | tanh(g) | query gate |', '|---|---|---|---|',
      ...gated.flatMap((v) => v.analysis!.gates!.map((g) => `| ${v.label} | ${g.layer} | ${g.visionScale.toFixed(4)} | ${g.queryGate.toFixed(4)} |`)));
  }
  md.push('', '## MSM key distance vs value distance (Fig. 7 analogue)', '');
  if (banked.length > 0) {
    md.push('Random pairs of bank entries written during training: mean |Δkey| (the retrieval metric) against the L2 ' +
      'distance of their normalized action chunks. A positive correlation means that near keys retrieve similar actions. ' +
      'Each variant is plotted from its own bank (variants on the same backbone write the same keys at the same steps, so ' +
      'their banks coincide; the random-VLM row has its own keys).', '',
      '| policy | bank entries | pairs | Pearson r | Spearman ρ |', '|---|---|---|---|---|',
      ...banked.map((v) => { const b = v.analysis!.bank!; return `| ${v.label} | ${b.entries} | ${b.pairs} | ${b.pearson.toFixed(3)} | ${b.spearman.toFixed(3)} |`; }));
  }
  const notes = r.variants.flatMap((v) => (v.analysis?.notes ?? []).map((n) => `- ${v.label}: ${n}`));
  if (notes.length > 0) md.push('', ...notes);
  md.push('', '## Plots', '', ...plots);
  const videos = r.variants.flatMap((v) => Object.values(v.result.tasks).flatMap((t) => t.episodes.filter((e) => e.video)
    .map((e) => `- ${v.label}, ${t.instruction} (seed ${e.seed}, ${e.success ? 'success' : 'failure'}): ` +
      `[${path.relative(dir, e.video!)}](${path.relative(dir, e.video!)})`)));
  if (videos.length > 0) md.push('', '## Videos (front | wrist camera): the first success and the first failure per task', '', ...videos);
  md.push('');
  const text = md.join('\n');
  fs.writeFileSync(path.join(dir, 'report.md'), text);
  fs.writeFileSync(path.join(dir, 'report.json'), `${JSON.stringify(r, null, 1)}\n`);
  return text;
}
