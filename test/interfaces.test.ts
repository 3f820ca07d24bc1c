/**
 * Strict interfaces: unknown option keys name the closest valid one in every public entry point; every `m2vla`
 * subcommand prints its usage and exits 2 on a bad flag, a malformed number or a missing argument.
 */
import fs from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import * as api from '../lib/index.js';
import { main, packageVersion } from '../lib/cli/main.js';
import { checkOptions, closest } from '../lib/options.js';
import { FIXTURE_A } from './helpers/fixtures.js';
import { LIBERO as LIBERO_DIR } from './helpers/train.js';

const cudaBuild = (await api.runtimeInfo()).cuda;

describe('checkOptions', () => {
  it('names the unknown key and the closest valid one', () => {
    const known = ['dtype', 'device', 'threads', 'warmup'];
    expect(() => checkOptions({ dtyp: 'bfloat16' }, known, 'f')).toThrow(/^f: unknown option 'dtyp' \(did you mean 'dtype'\?\); valid options: dtype, device, threads, warmup$/);
    expect(() => checkOptions({ warmUp: 1 }, known, 'f')).toThrow(/did you mean 'warmup'/);
    expect(() => checkOptions({ colour: 1 }, known, 'f')).toThrow(/^f: unknown option 'colour'; valid/);
    expect(() => checkOptions([], known, 'f')).toThrow(/options must be an object, got an array/);
    expect(() => checkOptions({ dtype: 1 }, known, 'f')).not.toThrow();
    expect(closest('bach', ['batch-size', 'batch'])).toBe('batch');
  });
});

const OBS = {
  images: { primary: { data: new Uint8Array(32 * 32 * 3), width: 32, height: 32 }, wrist: { data: new Uint8Array(32 * 32 * 3), width: 32, height: 32 } },
  inputIds: [1, 2, 3], state: [0, 0, 0, 0, 0, 0, 0, 0],
};

describe('public functions reject misspelled options', () => {
  const unknown = (key: string, near: string) => new RegExp(`unknown option '${key}' \\(did you mean '${near}'\\?\\)`);
  it('loading: loadPolicy, loadBackbone, loadHead, loadStateDict, pull', async () => {
    await expect(api.loadPolicy(FIXTURE_A, { dtyp: 'float32' } as never)).rejects.toThrow(api.InputError);
    await expect(api.loadPolicy(FIXTURE_A, { dtyp: 'float32' } as never)).rejects.toThrow(unknown('dtyp', 'dtype'));
    await expect(api.loadBackbone(FIXTURE_A, { thread: 1 } as never)).rejects.toThrow(unknown('thread', 'threads'));
    await expect(api.loadHead(FIXTURE_A, { unnormkey: 'x' } as never)).rejects.toThrow(unknown('unnormkey', 'unnormKey'));
    await expect(api.loadStateDict(`${FIXTURE_A}/model.safetensors`, { dtpye: 'float32' } as never)).rejects.toThrow(unknown('dtpye', 'dtype'));
    await expect(api.pull('a/b', { offlin: true } as never)).rejects.toThrow(unknown('offlin', 'offline'));
  });

  it('running: act, PolicyRunner, createServer; an empty instruction is an InputError', async () => {
    await using policy = await api.loadPolicy(FIXTURE_A);
    await expect(policy.act(OBS, { sed: 1 } as never)).rejects.toThrow(unknown('sed', 'seed'));
    expect(() => new api.PolicyRunner(policy, { hz: 20, replanStep: 4 } as never)).toThrow(unknown('replanStep', 'replanSteps'));
    await expect(api.createServer(policy, { maxbatch: 2 } as never)).rejects.toThrow(unknown('maxbatch', 'maxBatch'));
    await using demo = await api.loadPolicy(await api.demoRunDir());
    const { inputIds: _, ...images } = OBS;
    await expect(demo.act({ ...images, instruction: '  ' })).rejects.toThrow(/instruction: empty; give the task in words/);
  });

  it('non-square images: one warning per camera and size that says how they are resized', async () => {
    await using policy = await api.loadPolicy(FIXTURE_A);
    const warnings: Array<{ message: string; code?: string }> = [];
    const onWarning = (w: Error & { code?: string }) => warnings.push({ message: w.message, code: w.code });
    process.on('warning', onWarning);
    try {
      const wide = { data: new Uint8Array(48 * 32 * 3), width: 48, height: 32 };
      await policy.act({ ...OBS, images: { ...OBS.images, primary: wide } });
      await policy.act({ ...OBS, images: { ...OBS.images, primary: wide } });
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    const aspect = warnings.filter((w) => w.code === 'M2VLA_IMAGE_ASPECT');
    expect(aspect).toHaveLength(1);
    expect(aspect[0].message).toMatch(/images\.primary: 48x32 is not square; it is resized to \d+x\d+ without keeping its aspect ratio/);
  });

  it('data and training: openLibero, BatchLoader, train (and its nested options)', async () => {
    await expect(api.openLibero(LIBERO_DIR, { episodeend: 'drop' } as never)).rejects.toThrow(unknown('episodeend', 'episodeEnd'));
    const data = await api.openLibero(LIBERO_DIR);
    try {
      expect(() => new api.BatchLoader(data, { batchSize: 2, sed: 1 } as never)).toThrow(unknown('sed', 'seed'));
    } finally {
      await data.close();
    }
    const base = { data: LIBERO_DIR, init: FIXTURE_A, out: '/tmp/m2vla-never-written', steps: 1, batchSize: 1, lr: 1e-3 };
    await expect(api.train({ ...base, warmUp: 1 } as never)).rejects.toThrow(unknown('warmUp', 'warmup'));
    await expect(api.train({ ...base, distributed: { rank: 0, worldSize: 2, masterAdr: 'x', masterPort: 1 } } as never))
      .rejects.toThrow(unknown('masterAdr', 'masterAddr'));
    await expect(api.exportCheckpoint('/tmp', { stpe: 1 } as never)).rejects.toThrow(unknown('stpe', 'step'));
    expect(fs.existsSync(base.out)).toBe(false);
  });
});

describe('m2vla: usage and exit 2 on a bad command line', () => {
  let err = '', out = '';
  afterEach(() => {
    vi.restoreAllMocks();
    process.exitCode = undefined;
    err = out = '';
  });
  async function run(...argv: string[]) {
    vi.spyOn(console, 'error').mockImplementation((...a) => { err += `${a.join(' ')}\n`; });
    vi.spyOn(console, 'log').mockImplementation((...a) => { out += `${a.join(' ')}\n`; });
    await main(argv);
    const code = process.exitCode;
    process.exitCode = undefined;
    return code;
  }

  it.each([
    [['demo', '--threds', '2'], /unknown flag --threds \(did you mean --threads\?\)/, 'demo'],
    [['demo', '--threads', 'abc'], /--threads: expected an integer >= 1, got 'abc'/, 'demo'],
    [['doctor', '--jsn'], /unknown flag --jsn \(did you mean --json\?\)/, 'doctor'],
    [['serve', '--port', '80x'], /--port: expected an integer >= 0, got '80x'/, 'serve'],
    [['serve', '--dtype', 'fp8'], /--dtype: expected auto \| float32 \| bfloat16 \| float16 \| int8, got 'fp8'/, 'serve'],
    [['train', '--data', 'd', '--init', 'i', '--out', 'o', '--steps', 'ten', '--batch-size', '2', '--lr', '1e-3'], /--steps: expected an integer >= 1, got 'ten'/, 'train'],
    [['train', '--data', 'd'], /--init is required/, 'train'],
    [['train', '--batch', '2', '--batch-size', '2'], /--batch and --batch-size are the same flag/, 'train'],
    [['pull'], /missing argument/, 'pull'],
    [['export', 'x', '--step', '1.5'], /--step: expected an integer >= 0, got '1.5'/, 'export'],
    [['export', 'x', '--step', '-1'], /--step needs a value \(write --step=<value> for one that starts with '-'\)/, 'export'],
    [['export', 'a', 'b'], /unexpected argument 'b'/, 'export'],
  ])('%j', async (argv, message, command) => {
    expect(await run(...argv)).toBe(2);
    expect(err).toMatch(message);
    expect(err).toContain(`usage: m2vla ${command}`);
  });

  it.skipIf(cudaBuild)('serve --device reaches loadPolicy: a GPU on a CPU-only build is a ConfigError saying how to build one', async () => {
    expect(await run('serve', '--device', 'cuda:0', '--port', '0')).toBe(1);
    expect(err).toMatch(/m2vla serve: ConfigError \[E_CONFIG\]: device 'cuda:0'.*CPU-only build/);
  });

  it('--version prints the package version; --help of every command prints its usage and exits 0', async () => {
    expect(await run('--version')).toBeUndefined();
    expect(out.trim()).toBe(packageVersion());
    expect(packageVersion()).toBe(JSON.parse(fs.readFileSync('package.json', 'utf8')).version);
    for (const command of ['demo', 'doctor', 'pull', 'serve', 'train', 'export']) {
      out = '';
      expect(await run(command, '--help')).toBe(0);
      expect(out).toContain(`usage: m2vla ${command}`);
    }
  });
});
