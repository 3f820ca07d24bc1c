/**
 * The run directory's Qwen2 tokenizer (tokenizer.json, byte-level BPE) via @huggingface/tokenizers (pure JS), and the
 * VLA-Adapter / M²-VLA inference prompt (SPEC §1.4; experiments/robot/openvla_utils.py get_vla_action, use_minivlm).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { ConfigError, InputError } from './errors.js';
import { readJson } from './json.js';

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

  /** Reads `tokenizer.json` (required) and `tokenizer_config.json` (optional) from a run directory. */
  static async load(runDir: string): Promise<PromptTokenizer> {
    const file = path.join(runDir, 'tokenizer.json');
    const configFile = path.join(runDir, 'tokenizer_config.json');
    const config = fs.existsSync(configFile) ? readJson(configFile) : {};
    return PromptTokenizer.fromJson(readJson(file), config, file);
  }

  static fromJson(tokenizerJson: Record<string, unknown>, config: Record<string, unknown> = {}, source = 'tokenizer.json'): PromptTokenizer {
    const model = tokenizerJson.model as { type?: string } | undefined;
    if (model?.type !== 'BPE') throw new ConfigError(`${source}: expected a BPE tokenizer (Qwen2), got ${model?.type ?? 'no model'}`);
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
