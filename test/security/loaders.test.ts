/**
 * Issue #18 findings 5, 9 and 11 (loaders): an untrusted run directory cannot make a loader expand a few bytes into
 * gigabytes, block for ever, run for minutes, or load garbage; every such file is a typed error naming it.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { CheckpointError, ConfigError, loadPolicy, PromptTokenizer } from '../../lib/index.js';
import { getBinding } from '../../lib/native/binding.js';
import { encodeTorchZip, stateDictPickle } from '../helpers/writers.js';
import { editJson, runCopy } from './helpers.js';

const loadError = (dir: string) => loadPolicy(dir).then((p) => { p.dispose(); return undefined; }, (e) => e);
const loadStateDict = (file: string) => getBinding().loadStateDict(file).then(() => undefined, (e) => e);

describe('torch.save state dicts', () => {
  it('a 4-byte storage declared [16384, 16384] with stride 0 is refused before it is expanded to 1 GiB', async () => {
    const dir = runCopy();
    const file = path.join(dir, 'bomb.pt');
    const pkl = stateDictPickle([{ name: 'w', storage: 'FloatStorage', key: '0', numel: 1, offset: 0, size: [16384, 16384], stride: [0, 0] }]);
    fs.writeFileSync(file, encodeTorchZip('archive', pkl, { 0: new Uint8Array(4) }));
    const err = await loadStateDict(file);
    expect(err?.code).toBe('E_CHECKPOINT');
    expect(err.message).toMatch(/tensor 'w' declares size \[16384, 16384\], more bytes than the whole file \(\d+\) holds/);
  });

  it('a pickle of repeated 1-byte opcodes stops within a budget of its size (a 4 MB one grew to 1 GB)', async () => {
    const dir = runCopy();
    const file = path.join(dir, 'amplify.pt');
    const pkl = Buffer.concat([Buffer.from([0x80, 2]), Buffer.alloc(4 << 20, 'N'.charCodeAt(0)), Buffer.from('.')]);
    fs.writeFileSync(file, encodeTorchZip('archive', pkl, {}));
    // In a child process, to read its peak memory.
    const script = `const b = require(${JSON.stringify(path.resolve('build/Release/m2vla.node'))});
      b.loadStateDict(${JSON.stringify(file)}).then(() => console.log('loaded'), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))
        .finally(() => console.log(JSON.stringify({ maxRssMiB: process.resourceUsage().maxRSS / 1024 })));`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    const [result, usage] = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(result.code).toBe('E_CHECKPOINT');
    expect(result.message).toMatch(/builds more values than a state dict of \d+ bytes needs/);
    const baseline = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.resolve('build/Release/m2vla.node'))});
      console.log(process.resourceUsage().maxRSS / 1024)`], { encoding: 'utf8' });
    expect(usage.maxRssMiB - Number(baseline.stdout)).toBeLessThan(300);
  });
});

describe('run-directory files', () => {
  it('a FIFO in place of model.safetensors or config.json is refused at once (it blocked for ever)', async () => {
    for (const [file, Err] of [['model.safetensors', CheckpointError], ['config.json', ConfigError]] as const) {
      const dir = runCopy();
      fs.rmSync(path.join(dir, file));
      expect(spawnSync('mkfifo', [path.join(dir, file)]).status).toBe(0);
      const err = await loadError(dir);
      expect(err).toBeInstanceOf(Err);
      expect(err.message).toContain(`${path.join(dir, file)}: not a regular file`);
    }
  });

  it('a manifest claiming 10^6 images is refused (it allocated 3.6 GB)', async () => {
    const dir = runCopy();
    editJson(dir, 'manifest.json', (j) => { j.vision.num_images = 1e6; });
    expect((await loadError(dir)).message).toMatch(/manifest\.json: vision\.num_images: expected an integer in 1\.\.2, got 1000000/);
  });

  it('a sharded index naming a shard outside its directory is refused', async () => {
    const dir = runCopy();
    const index = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(index, JSON.stringify({ weight_map: { w: '../../etc/passwd' } }));
    expect((await loadStateDict(index)).message).toMatch(/shard '..\/..\/etc\/passwd' is not a file name next to the index/);
  });
});

describe('tokenizer.json', () => {
  const tokenizerJson = () => JSON.parse(fs.readFileSync(path.join(runCopy(), 'tokenizer.json'), 'utf8'));

  it('a vocabulary id of 10^9 is refused (it took 39 s to load), and ids beyond the model\'s vocab_size too', () => {
    const t = tokenizerJson();
    t.model.vocab.hello = 1e9;
    expect(() => PromptTokenizer.fromJson(t)).toThrow(/model\.vocab\["hello"\] has id 1000000000; expected an integer in 0\.\.4194303/);
    const u = tokenizerJson();
    u.added_tokens[0].id = 585;
    expect(() => PromptTokenizer.fromJson(u, {}, 'tokenizer.json', 585)).toThrow(/added_tokens\[0\] has id 585; expected an integer in 0\.\.584/);
  });

  it('a backtracking regex is refused; the shipped Qwen2 pattern is accepted', () => {
    const t = tokenizerJson();
    t.pre_tokenizer.pretokenizers[0].pattern.Regex = '(a+)+$';
    expect(() => PromptTokenizer.fromJson(t)).toThrow(ConfigError);
    expect(() => PromptTokenizer.fromJson(t)).toThrow(/pre_tokenizer\.pretokenizers\[0\]\.pattern\.Regex: regex "\(a\+\)\+\$" repeats a group/);
    for (const bad of ['(a|aa)*b', '(?:\\s*x)+', '(a{1,3}){2,}']) {
      t.pre_tokenizer.pretokenizers[0].pattern.Regex = bad;
      expect(() => PromptTokenizer.fromJson(t), bad).toThrow(/repeats a group/);
    }
    for (const ok of ['(?:ab)?c+', '[(+*]+', '\\(a+\\)+', "(?i:'s|'t)|\\p{L}+"]) {
      t.pre_tokenizer.pretokenizers[0].pattern.Regex = ok;
      expect(() => PromptTokenizer.fromJson(t), ok).not.toThrow();
    }
    expect(PromptTokenizer.fromJson(tokenizerJson()).promptIds('pick up the bowl').length).toBeGreaterThan(10);
  });
});
