/**
 * Strict option objects: every public function checks its options with checkOptions, so a misspelled key
 * (`{ dtyp: 'bfloat16' }`, `{ warmUp: 100 }`) is an InputError naming it and the closest valid key instead of being
 * ignored. optionKeys<T>() takes every key of T exactly once (a compile error otherwise), so the list cannot drift
 * from the interface.
 */
import { InputError } from './errors.js';

/** The keys of an options interface, complete and checked by the compiler: optionKeys<PolicyOptions>({ device: true, … }). */
export function optionKeys<T>(keys: { [K in keyof Required<T>]: true }): readonly string[] {
  return Object.keys(keys);
}

/** Edit distance, case-insensitive (warmUp → warmup is 0): what "closest" means for a misspelled key. */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++)
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** The known name closest to `name`, when it is close enough to be a misspelling of it. */
export function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined, bestDistance = Infinity;
  for (const k of known) {
    // A prefix of a valid key ('crop' for 'cropArea') is as close as one typo.
    const prefix = k.toLowerCase().startsWith(name.toLowerCase()) || name.toLowerCase().startsWith(k.toLowerCase());
    const d = prefix ? Math.min(1, distance(name, k)) : distance(name, k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(best.length / 3)) ? best : undefined;
}

/**
 * Throws an InputError for the first key of `options` not in `known` (`where`: the function or option path, e.g.
 * 'loadPolicy' or 'train: imageAugmentation'). undefined passes; a non-object is an InputError.
 */
export function checkOptions(options: unknown, known: readonly string[], where: string): void {
  if (options === undefined) return;
  if (options === null || typeof options !== 'object' || Array.isArray(options))
    throw new InputError(`${where}: options must be an object, got ${options === null ? 'null' : Array.isArray(options) ? 'an array' : typeof options}`);
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const near = closest(key, known);
    throw new InputError(`${where}: unknown option '${key}'${near ? ` (did you mean '${near}'?)` : ''}; ` +
      `valid options: ${known.join(', ')}`);
  }
}
