/**
 * preprocessor_config.json of a run directory (PrismaticImageProcessor): what the image preprocessing must do. The
 * rules are native/run_dir.cc's (parse_preprocessor_config), the same ones resolveRunSpec applies.
 */
import path from 'node:path';
import { toTypedError } from './errors.js';
import { getBinding } from './native/binding.js';
import type { ImagePreprocessing } from './run-spec.js';

export type { ImagePreprocessing } from './run-spec.js';

/**
 * Reads a run directory's `preprocessor_config.json`. `tvf_normalize_params` win over `means`/`stds` (the processor
 * sets them after its constructor; VLA-Adapter's DINO ones are bf16-rounded).
 */
export async function readPreprocessorConfig(runDir: string): Promise<ImagePreprocessing> {
  try {
    return getBinding().readPreprocessorConfig(path.join(runDir, 'preprocessor_config.json'));
  } catch (e) {
    throw toTypedError(e);
  }
}

/**
 * The same rules over an already parsed value (`source` names it in errors); that it is a JSON object is one of them
 * (ConfigError "<source>: expected a JSON object, got a list", as for the file). `undefined` reads as null.
 */
export function parsePreprocessorConfig(json: unknown, source: string): ImagePreprocessing {
  try {
    return getBinding().parsePreprocessorConfig(JSON.stringify(json) ?? 'null', source);
  } catch (e) {
    throw toTypedError(e);
  }
}
