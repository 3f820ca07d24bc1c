/** preprocessor_config.json of a run directory (PrismaticImageProcessor): what the image preprocessing must do. */
import path from 'node:path';
import { ConfigError } from './errors.js';
import { readJson } from './json.js';

/** What the processor does, per vision backbone (one mean/std set each: [DINOv2, SigLIP] for the fused backbone). */
export interface ImagePreprocessing {
  size: number;
  means: number[][];
  stds: number[][];
}

/**
 * Reads a run directory's `preprocessor_config.json` (PrismaticImageProcessor). `tvf_normalize_params` win over
 * `means`/`stds` (the processor sets them after its constructor; VLA-Adapter's DINO ones are bf16-rounded).
 */
export async function readPreprocessorConfig(runDir: string): Promise<ImagePreprocessing> {
  const file = path.join(runDir, 'preprocessor_config.json');
  return parsePreprocessorConfig(readJson(file), file);
}

export function parsePreprocessorConfig(json: unknown, source: string): ImagePreprocessing {
  const cfg = json as Record<string, unknown>;
  const bad = (msg: string): never => { throw new ConfigError(`${source}: ${msg}`); };
  const strategy = cfg.image_resize_strategy ?? 'resize-naive';
  if (strategy !== 'resize-naive') bad(`image_resize_strategy '${String(strategy)}' is not supported (only resize-naive)`);
  if (cfg.tvf_do_letterbox) bad('tvf_do_letterbox is not supported');
  const triple = (v: unknown) => Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number');
  const norm = cfg.tvf_normalize_params as Array<{ mean?: unknown; std?: unknown }> | undefined;
  const means = (norm ? norm.map((n) => n.mean) : cfg.means) as unknown[];
  const stds = (norm ? norm.map((n) => n.std) : cfg.stds) as unknown[];
  if (!Array.isArray(means) || !Array.isArray(stds) || means.length === 0 || means.length !== stds.length ||
      ![...means, ...stds].every(triple)) bad('expected one [r, g, b] mean and std per vision backbone');
  const resize = cfg.tvf_resize_params as Array<{ size?: unknown; interpolation?: unknown }> | undefined;
  const sizes = resize ? resize.map((r) => (Array.isArray(r.size) ? r.size : [r.size, r.size]))
    : (cfg.input_sizes as unknown[][] | undefined)?.map((s) => s.slice(-2)) ?? [];
  const size = Number(sizes[0]?.[0]);
  if (!Number.isInteger(size) || size <= 0 || !sizes.every((s) => s[0] === size && s[1] === size))
    bad('all backbones must resize to the same square size');
  if (resize && !resize.every((r) => r.interpolation === 3)) bad('only bicubic resizing (interpolation 3) is supported');
  return { size, means: means as number[][], stds: stds as number[][] };
}

