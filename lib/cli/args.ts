/**
 * Flag parsing for every `m2vla` subcommand: node's parseArgs (strict) plus what it lacks. A bad flag, a missing
 * value or a malformed number is a UsageError; lib/cli/main.ts prints it with the command's usage and exits 2.
 * Flags are the API's option names in kebab case (batchSize → --batch-size); `aliases` keep older spellings working.
 */
import { parseArgs } from 'node:util';
import { InputError } from '../errors.js';
import { closest } from '../options.js';

/** A command-line mistake: main.ts prints the message and the command's usage, and exits with status 2. */
export class UsageError extends InputError {}

export interface FlagSpec {
  type: 'string' | 'boolean';
  default?: string | boolean;
  short?: string;
  /** The flag may be given several times: its value is then an array of strings. */
  multiple?: boolean;
  /** Other names for the flag (an older spelling); giving two names of one flag is an error. */
  aliases?: readonly string[];
}

export interface ParsedFlags {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

/** Parses argv against `flags` (name → spec); `positionals`: how many bare arguments are allowed (default 0). */
export function parseFlags(argv: string[], flags: Record<string, FlagSpec>, positionals: { min?: number; max?: number } = {}): ParsedFlags {
  const options: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }> = { help: { type: 'boolean', short: 'h' } };
  const canonical = new Map<string, string>();
  for (const [name, spec] of Object.entries(flags)) {
    options[name] = { type: spec.type, ...(spec.short && { short: spec.short }), ...(spec.multiple && { multiple: true }) };
    for (const alias of spec.aliases ?? []) {
      options[alias] = { type: spec.type, ...(spec.multiple && { multiple: true }) };
      canonical.set(alias, name);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: (positionals.max ?? 0) > 0 });
  } catch (e) {
    throw usageErrorOf(e, Object.keys(options));
  }
  const values: ParsedFlags['values'] = {};
  const givenAs = new Map<string, string>();
  for (const [name, value] of Object.entries(parsed.values)) {
    const to = canonical.get(name) ?? name;
    if (givenAs.has(to)) throw new UsageError(`--${givenAs.get(to)} and --${name} are the same flag; give it once`);
    givenAs.set(to, name);
    values[to] = value as string | boolean | string[];
  }
  for (const [name, spec] of Object.entries(flags)) if (values[name] === undefined && spec.default !== undefined) values[name] = spec.default;
  const rest = parsed.positionals;
  if (values.help !== true) {
    if (rest.length < (positionals.min ?? 0)) throw new UsageError(`missing argument${(positionals.min ?? 0) > 1 ? 's' : ''}`);
    if (rest.length > (positionals.max ?? 0)) throw new UsageError(`unexpected argument '${rest[positionals.max ?? 0]}'`);
  }
  return { values, positionals: rest };
}

/** parseArgs' errors as UsageErrors, with the closest flag for an unknown one. */
function usageErrorOf(e: unknown, known: string[]): unknown {
  const code = (e as { code?: string }).code;
  if (!code?.startsWith('ERR_PARSE_ARGS')) return e;
  const message = (e as Error).message;
  const unknown = /Unknown option '(-{1,2})([^']+)'/.exec(message);
  if (unknown) {
    const near = closest(unknown[2], known);
    return new UsageError(`unknown flag ${unknown[1]}${unknown[2]}${near ? ` (did you mean --${near}?)` : ''}`);
  }
  const missing = /Option '([^']+?)(?: <value>)?' argument missing/.exec(message);
  if (missing) return new UsageError(`${missing[1].split(',').pop()!.trim()} needs a value`);
  const ambiguous = /Option '([^']+)' argument is ambiguous/.exec(message);
  if (ambiguous) return new UsageError(`${ambiguous[1]} needs a value (write ${ambiguous[1]}=<value> for one that starts with '-')`);
  const unexpected = /Unexpected argument '([^']+)'/.exec(message);
  if (unexpected) return new UsageError(`unexpected argument '${unexpected[1]}'`);
  return new UsageError(message.split('. ')[0]);
}

/** A flag's number (`--threads abc` → "--threads: expected a number, got 'abc'"); `integer` and `min` bound it. */
export function numberFlag(value: string | boolean | string[] | undefined, name: string, bounds: { integer?: boolean; min?: number } = {}): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value);
  const n = Number(text);
  const kind = bounds.integer ? 'an integer' : 'a number';
  const range = bounds.min === undefined ? '' : ` >= ${bounds.min}`;
  if (text.trim() === '' || !Number.isFinite(n) || (bounds.integer && !Number.isInteger(n)) || (bounds.min !== undefined && n < bounds.min))
    throw new UsageError(`--${name}: expected ${kind}${range}, got '${text}'`);
  return n;
}

/** A flag that must be one of `choices`. */
export function choiceFlag<T extends string>(value: string | boolean | string[] | undefined, name: string, choices: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!choices.includes(value as T)) throw new UsageError(`--${name}: expected ${choices.join(' | ')}, got '${String(value)}'`);
  return value as T;
}

/** A string flag that must be given. */
export function requiredFlag(value: string | boolean | string[] | undefined, name: string): string {
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return String(value);
}
