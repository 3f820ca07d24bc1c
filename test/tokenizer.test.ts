import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError, InputError } from '../lib/errors.js';
import { PromptTokenizer, promptText } from '../lib/tokenizer.js';

const DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'tokenizer-tiny');
interface Expected {
  vocab_size: number;
  special_ids: Record<string, number>;
  cases: Array<{ text: string; ids: number[]; decoded: string }>;
  prompts: Array<{ instruction: string; prompt: string; ids: number[] }>;
}
const expected: Expected = JSON.parse(fs.readFileSync(path.join(DIR, 'expected.json'), 'utf8'));

describe('Qwen2 tokenizer (tokenizer.json via @huggingface/tokenizers)', () => {
  it('gives the ids of Python tokenizers and decodes them back', async () => {
    const tok = await PromptTokenizer.load(DIR);
    expect(tok.vocabSize).toBe(expected.vocab_size);
    for (const [token, id] of Object.entries(expected.special_ids)) expect(tok.tokenId(token)).toBe(id);
    expect(expected.cases.length).toBeGreaterThanOrEqual(20);
    for (const c of expected.cases) {
      expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
      expect(tok.decode(c.ids), JSON.stringify(c.text)).toBe(c.decoded);
      expect(c.decoded).toBe(c.text.normalize('NFC'));  // byte-level BPE round-trips (after NFC)
    }
  });

  it('builds the reference inference prompt and its ids (lower-cased instruction, no BOS, ends with assistant\\n)', async () => {
    const tok = await PromptTokenizer.load(DIR);
    for (const p of expected.prompts) {
      expect(promptText(p.instruction)).toBe(p.prompt);
      const ids = tok.promptIds(p.instruction);
      expect(ids, p.instruction).toEqual(p.ids);
      expect(ids[0]).toBe(expected.special_ids['<|im_start|>']);
      expect(tok.decode(ids)).toBe(p.prompt.normalize('NFC'));
    }
    expect(promptText('Open The Drawer')).toBe('<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a '
      + 'helpful assistant.<|im_end|>\n<|im_start|>user\nWhat action should the robot take to open the drawer?<|im_end|>\n'
      + '<|im_start|>assistant\n');
  });

  it('skips special tokens on request, and validates ids and inputs', async () => {
    const tok = await PromptTokenizer.load(DIR);
    const ids = tok.encode('<|im_start|>user\nhi<|im_end|>');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('user\nhi');
    expect(tok.decode([])).toBe('');
    expect(() => tok.decode([0, tok.vocabSize])).toThrow(new InputError(`ids[1]: ${tok.vocabSize} is not a token id (vocabulary size ${tok.vocabSize})`));
    expect(() => tok.decode([-1])).toThrow(InputError);
    expect(() => tok.decode([1.5])).toThrow(InputError);
    expect(() => tok.promptIds(42 as unknown as string)).toThrow(InputError);
    expect(() => tok.encode(undefined as unknown as string)).toThrow(InputError);
  });

  it('reports missing or broken tokenizer files as ConfigError', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-tok-'));
    try {
      await expect(PromptTokenizer.load(dir)).rejects.toThrow(ConfigError);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), '{ not json');
      await expect(PromptTokenizer.load(dir)).rejects.toThrow(/tokenizer.json: invalid JSON/);
      const json = JSON.parse(fs.readFileSync(path.join(DIR, 'tokenizer.json'), 'utf8'));
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, model: { ...json.model, type: 'WordPiece' } }));
      await expect(PromptTokenizer.load(dir)).rejects.toThrow(/expected a BPE tokenizer/);
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({ ...json, added_tokens: [] }));
      await expect(PromptTokenizer.load(dir)).rejects.toThrow(/no <\|im_start\|> token/);
      // tokenizer_config.json is optional: spaces are still not cleaned up without it.
      fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json));
      const tok = await PromptTokenizer.load(dir);
      const text = 'a , b . c ?';
      expect(tok.decode(tok.encode(text))).toBe(text);
    } finally {
      fs.rmSync(dir, { recursive: true });
    }
  });
});
