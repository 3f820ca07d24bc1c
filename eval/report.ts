/** eval/results/<date>/: report.md (tables in the paper's Table V shape), report.json and the SVG plots. */
import fs from 'node:fs';
import path from 'node:path';
import type { RandomRunDims } from '../lib/random-run.js';
import type { RunAnalysis } from './analysis.js';
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
}

const pct = (x: number | null | undefined) => (x === null || x === undefined || Number.isNaN(x) ? '–' : `${(100 * x).toFixed(0)}%`);

function successTable(rows: Array<[string, EvalResult]>): string[] {
  const tasks = Object.entries(rows[0][1].tasks);
  const head = ['policy', ...tasks.map(([name, t]) => (t.held_out ? `${name} (held out)` : name)), 'avg (seen)'];
  return [
    `| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`,
    ...rows.map(([label, r]) => `| ${label} | ${tasks.map(([name]) => pct(r.tasks[name]?.success_rate)).join(' | ')} | ` +
      `**${pct(r.success_rate_seen)}** |`),
  ];
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
  if (trained.length > 0) {
    plot('success_vs_steps.svg', lineChart('Success (seen tasks) vs training steps', 'optimizer steps', 'success rate',
      [...trained.map((v) => ({ name: v.label, points: v.curve.map((c) => [c.steps, c.successSeen] as [number, number]) })),
        { name: 'mean action', points: trained[0].curve.map((c) => [c.steps, r.baseline.success_rate_seen ?? 0] as [number, number]) }],
      [0, 1]), 'success vs steps');
  }
  const gated = r.variants.filter((v) => v.analysis?.gates);
  if (gated.length > 0) {
    const layers = [...new Set(gated.flatMap((v) => v.analysis!.gates!.map((g) => g.layer)))].sort((a, b) => a - b);
    const value = (v: VariantReport, layer: number, key: 'visionScale' | 'queryGate') =>
      v.analysis!.gates!.find((g) => g.layer === layer)?.[key] ?? NaN;
    plot('mol_gates.svg', barChart('MoL per-layer gates: tanh(g) (vision scale)', 'LLM layer read by the block', 'tanh(g)',
      layers.map(String), gated.map((v) => v.label), gated.map((v) => layers.map((l) => value(v, l, 'visionScale')))), 'MoL gates');
    plot('mol_query_gates.svg', barChart('MoL per-layer query gate (mean over heads, observations)', 'LLM layer read by the block',
      'sigmoid gate', layers.map(String), gated.map((v) => v.label), gated.map((v) => layers.map((l) => value(v, l, 'queryGate')))),
    'MoL query gates');
  }
  const banked = r.variants.filter((v) => v.analysis?.bank);
  if (banked.length > 0) {
    plot('msm_key_value.svg', scatter('MSM bank: key distance vs value distance (random pairs)', 'mean |Δkey|',
      '‖Δ normalized action chunk‖', banked.map((v) => ({ name: v.label, points: v.analysis!.bank!.points }))), 'MSM correlation');
  }

  const full = r.variants[0];
  const expertTotals = Object.values(r.experts).reduce((a, t) => [a[0] + t.successes, a[1] + t.episodes], [0, 0]);
  const md = [
    `# Closed-loop evaluation, ${r.date} (${r.profile})`, '',
    `Command: \`${r.command}\`, ${(r.totalSeconds / 60).toFixed(1)} min in all on the shared 2-core VM (CPU only).`, '',
    r.runDir ? `Evaluated run directory: \`${r.runDir}\`.` :
      `**The backbone is a small random frozen VLM** (no pretrained weights can be downloaded here): DINOv2/SigLIP-style ` +
      `towers of ${r.dims.dino.depth} blocks (${r.dims.dino.dim} / ${r.dims.siglip.dim} dims) at ${r.dims.imageSize} px, a ` +
      `${r.dims.llm.layers}-layer Qwen2-style LLM (hidden ${r.dims.llm.hidden}), random weights, never trained. Only the ` +
      `head (MoL + MSM) and the action queries are trained, on ${JSON.stringify(r.profileSettings)}. The three variants ` +
      'share the backbone, the demonstrations, the step budget, the batch order and the seeds.',
    '', `Scripted experts on the evaluation seeds: ${expertTotals[0]}/${expertTotals[1]} episodes succeed.`, '',
    '## Success rate per task (Table V shape)', '',
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
      'The keys come from the frozen VLM and the values from the demonstrations, written at the same steps (same seeds): ' +
      'every variant that has a bank holds the same one.', '',
      '| policy | bank entries | pairs | Pearson r | Spearman ρ |', '|---|---|---|---|---|',
      ...banked.map((v) => { const b = v.analysis!.bank!; return `| ${v.label} | ${b.entries} | ${b.pairs} | ${b.pearson.toFixed(3)} | ${b.spearman.toFixed(3)} |`; }));
  }
  const notes = r.variants.flatMap((v) => (v.analysis?.notes ?? []).map((n) => `- ${v.label}: ${n}`));
  if (notes.length > 0) md.push('', ...notes);
  md.push('', '## Plots', '', ...plots);
  const videos = r.variants.flatMap((v) => Object.values(v.result.tasks).flatMap((t) => t.episodes.filter((e) => e.video)
    .map((e) => `- ${v.label}, ${t.instruction} (seed ${e.seed}, ${e.success ? 'success' : 'failure'}): ` +
      `[${path.relative(dir, e.video!)}](${path.relative(dir, e.video!)})`)));
  if (videos.length > 0) md.push('', '## Videos (front | wrist camera)', '', ...videos);
  md.push('');
  const text = md.join('\n');
  fs.writeFileSync(path.join(dir, 'report.md'), text);
  fs.writeFileSync(path.join(dir, 'report.json'), `${JSON.stringify(r, null, 1)}\n`);
  return text;
}
