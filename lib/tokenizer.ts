/**
 * The run directory's Qwen2 tokenizer (tokenizer.json, byte-level BPE) via @huggingface/tokenizers (pure JS), and the
 * VLA-Adapter / M²-VLA inference prompt (SPEC §1.4; experiments/robot/openvla_utils.py get_vla_action, use_minivlm).
 */
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ConfigError, InputError } from './errors.js';
import { readJson } from './json.js';

/** No tokenizer has more ids than this (Qwen2: 151,665); a planted id of 10⁹ would make the library allocate for it. */
export const MAX_TOKEN_ID = (1 << 22) - 1;

/**
 * Refuses a regex that can backtrack exponentially (the JS engine @huggingface/tokenizers uses has no time bound): a
 * repeated group (`*`, `+`, `{n,}`, `{n,m}` with m > 1) whose body holds a quantifier or an alternation, like
 * `(a+)+` or `(a|a)*`. Qwen2/GPT-2/Llama-3 style split patterns repeat only single atoms and classes. What remains
 * is at most polynomial in the input, whose length the callers bound (prompts: the server's limits).
 */
export function checkRegexSafety(pattern: string, where: string): void {
  const groups: Array<{ risky: boolean }> = [];
  let lastGroupRisky = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    let atomGroup = false;
    if (c === '\\') {
      i++;
      if (pattern[i] === 'p' || pattern[i] === 'P') i = pattern[i + 1] === '{' ? pattern.indexOf('}', i) : i + 1;
    } else if (c === '[') {
      for (i++; i < pattern.length && pattern[i] !== ']'; i++) if (pattern[i] === '\\') i++;
    } else if (c === '(') {
      groups.push({ risky: false });
    } else if (c === ')') {
      const g = groups.pop();
      if (!g) break;
      lastGroupRisky = g.risky;
      atomGroup = true;
      if (groups.length && g.risky) groups.at(-1)!.risky = true;
    } else if (c === '|') {
      if (groups.length) groups.at(-1)!.risky = true;
    } else if (c === '*' || c === '+' || c === '{') {
      if (groups.length) groups.at(-1)!.risky = true;
    }
    if (atomGroup) {
      const q = pattern.slice(i + 1).match(/^(?:[*+]|\{(\d*)(,?)(\d*)\})/);
      const repeats = q && (q[0] === '*' || q[0] === '+' || (q[2] === ',' && (q[3] === '' || Number(q[3]) > 1)) ||
        (q[2] === '' && Number(q[1]) > 1));
      if (repeats && lastGroupRisky)
        throw new ConfigError(`${where}: regex ${JSON.stringify(pattern)} repeats a group that itself repeats or alternates ` +
          `(exponential backtracking: a prompt could stall the process); only linear-time split patterns are accepted`);
    }
  }
}

/** Every `{"Regex": pattern}` in a tokenizer.json (normalizer, pre_tokenizer, decoder, ...), with its JSON path. */
function regexes(v: unknown, at: string, out: Array<[string, string]> = []): Array<[string, string]> {
  if (Array.isArray(v)) v.forEach((x, i) => regexes(x, `${at}[${i}]`, out));
  else if (v && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (k === 'Regex' && typeof x === 'string') out.push([`${at}.Regex`, x]);
      else if (k !== 'vocab' && k !== 'merges') regexes(x, at ? `${at}.${k}` : k, out);
    }
  }
  return out;
}

/** Ids of the vocabulary and of the added tokens must be integers in 0..limit. */
function checkIds(json: Record<string, unknown>, limit: number, source: string): void {
  const bad = (what: string, id: unknown): never => {
    throw new ConfigError(`${source}: ${what} has id ${JSON.stringify(id)}; expected an integer in 0..${limit}`);
  };
  const ok = (id: unknown) => Number.isInteger(id) && (id as number) >= 0 && (id as number) <= limit;
  const vocab = (json.model as { vocab?: unknown }).vocab;
  if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) throw new ConfigError(`${source}: model.vocab: expected an object`);
  for (const [token, id] of Object.entries(vocab)) if (!ok(id)) bad(`model.vocab[${JSON.stringify(token)}]`, id);
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw new ConfigError(`${source}: added_tokens: expected a list`);
  added.forEach((t, i) => { if (!ok((t as { id?: unknown })?.id)) bad(`added_tokens[${i}]`, (t as { id?: unknown })?.id); });
}

export const QWEN_SYSTEM_PROMPT = 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.';

/** The prompt text for an instruction (lower-cased, as the reference does with Python's str.lower()). */
export function promptText(instruction: string): string {
  if (typeof instruction !== 'string') throw new InputError('instruction: expected a string');
  return `<|im_start|>system\n${QWEN_SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n` +
    `What action should the robot take to ${instruction.toLowerCase()}?<|im_end|>\n<|im_start|>assistant\n`;
}

export class PromptTokenizer {
  /** Number of ids the tokenizer can produce (largest id + 1, added tokens included). */
  readonly vocabSize: number;
  private readonly cleanUpSpaces: boolean;

  private constructor(private readonly tok: Tokenizer, config: Record<string, unknown>, readonly source: string) {
    let max = -1;
    for (const id of tok.get_vocab(true).values()) max = Math.max(max, id);
    this.vocabSize = max + 1;
    this.cleanUpSpaces = config.clean_up_tokenization_spaces === true;  // the JS library defaults to true, HF to false
  }

  /**
   * Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a run directory. `vocabSize` (the
   * LLM's embedding rows) bounds the ids; without it, MAX_TOKEN_ID does.
   */
  static async load(runDir: string, options: { vocabSize?: number } = {}): Promise<PromptTokenizer> {
    const file = path.join(runDir, 'tokenizer.json');
    const configFile = path.join(runDir, 'tokenizer_config.json');
    let config = {};
    try {
      config = readJson(configFile);
    } catch (e) {
      if ((e as { cause?: { code?: string } }).cause?.code !== 'ENOENT') throw e;
    }
    return PromptTokenizer.fromJson(readJson(file), config, file, options.vocabSize);
  }

  static fromJson(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, source = 'tokenizer.json',
    vocabSize?: number): PromptTokenizer {
    const model = tokenizerJson.model as { type?: string } | undefined;
    if (model?.type !== 'BPE') throw new ConfigError(`${source}: expected a BPE tokenizer (Qwen2), got ${model?.type ?? 'no model'}`);
    checkIds(tokenizerJson, Math.min(MAX_TOKEN_ID, (vocabSize ?? Infinity) - 1), source);
    for (const [where, pattern] of regexes(tokenizerJson, '')) checkRegexSafety(pattern, `${source}: ${where}`);
    let tok: Tokenizer;
    try {
      tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new ConfigError(`${source}: ${(e as Error).message}`, { cause: e });
    }
    const t = new PromptTokenizer(tok, config, source);
    for (const special of ['<|im_start|>', '<|im_end|>'])
      if (t.tokenId(special) === undefined) throw new ConfigError(`${source}: no ${special} token (not a Qwen2 chat tokenizer)`);
    return t;
  }

  /** Ids of `text`; special tokens written in the text are recognised, nothing is added around it. */
  encode(text: string): number[] {
    if (typeof text !== 'string') throw new InputError('text: expected a string');
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: ArrayLike<number>, options: { skipSpecialTokens?: boolean } = {}): string {
    const list = Array.from(ids);
    list.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize)
        throw new InputError(`ids[${i}]: ${id} is not a token id (vocabulary size ${this.vocabSize})`);
    });
    if (list.length === 0) return '';
    return this.tok.decode(list, { skip_special_tokens: options.skipSpecialTokens ?? false, clean_up_tokenization_spaces: this.cleanUpSpaces });
  }

  /** The reference inference prompt's ids: `<|im_start|>` first, `...assistant\n` last (no BOS, nothing appended). */
  promptIds(instruction: string): number[] {
    return this.encode(promptText(instruction));
  }

  tokenId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }
}
