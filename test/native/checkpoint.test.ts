/**
 * Checkpoint readers through the public loadStateDict: safetensors (single and sharded) and torch.save zips agree
 * on fixture A; views and every supported dtype survive torch.save; damaged files reject with a CheckpointError
 * naming the file (and the tensor where one is at fault), never a crash.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, loadStateDict, type CheckpointTensor } from '../../lib/index.js';
import { FIXTURE_A, toFloat32 } from '../helpers/fixtures.js';
import {
  encodeSafetensors, encodeTorchZip, encodeZip, pickle, safetensorsRaw, stateDictPickle, type PickledTensor,
} from '../helpers/writers.js';

const VIEWS = path.resolve(FIXTURE_A, '..', 'views');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'm2vla-checkpoint-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function write(name: string, bytes: Uint8Array): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, bytes);
  return file;
}

function expectSameTensors(actual: Record<string, CheckpointTensor>, expected: Record<string, CheckpointTensor>) {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const [name, e] of Object.entries(expected)) {
    const a = actual[name];
    expect({ name, dtype: a.dtype, shape: a.shape }).toEqual({ name, dtype: e.dtype, shape: e.shape });
    expect(Buffer.from(a.data).equals(Buffer.from(e.data)), `bytes of ${name}`).toBe(true);
  }
}

/** Loading `file` rejects with a CheckpointError whose message names the file and each of `mentions`. */
async function expectCheckpointError(file: string, ...mentions: string[]) {
  const err = await loadStateDict(file).then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(CheckpointError);
  expect((err as CheckpointError).code).toBe('E_CHECKPOINT');
  for (const m of [file, ...mentions]) expect((err as Error).message).toContain(m);
}

describe('torch.save and safetensors twins (fixture A)', () => {
  for (const part of ['action_head', 'proprio_projector']) {
    it(`${part}: .pt and .safetensors load to the same names, dtypes, shapes and bytes`, async () => {
      const pt = await loadStateDict(path.join(FIXTURE_A, `${part}--checkpoint.pt`));
      const st = await loadStateDict(path.join(FIXTURE_A, `${part}.safetensors`));
      expect(Object.keys(pt).some((k) => k.startsWith('module.'))).toBe(false);
      expectSameTensors(pt, st);
    });
  }

  it('keeps a bf16 storage and a 0-dim int64 tensor as they are', async () => {
    const sd = await loadStateDict(path.join(FIXTURE_A, 'action_head--checkpoint.pt'));
    expect(sd['memory_bank.keys'].dtype).toBe('bfloat16');
    expect(sd['memory_bank.size']).toMatchObject({ dtype: 'int64', shape: [] });
    expect(sd['memory_bank.size'].data.length).toBe(8);
  });

  it("dtype: 'float32' widens bf16 tensors and leaves int64 alone", async () => {
    const file = path.join(FIXTURE_A, 'action_head--checkpoint.pt');
    const raw = await loadStateDict(file);
    const f32 = await loadStateDict(file, { dtype: 'float32' });
    expect(f32['memory_bank.keys']).toMatchObject({ dtype: 'float32', shape: raw['memory_bank.keys'].shape });
    expect(toFloat32(f32['memory_bank.keys'])).toEqual(toFloat32(raw['memory_bank.keys']));
    expect(f32['memory_bank.size']).toEqual(raw['memory_bank.size']);
  });
});

describe('torch.save views and dtypes', () => {
  // views.pt / views-p4.pt / views.safetensors come from test/fixtures/views/make_views.py.
  for (const file of ['views.pt', 'views-p4.pt']) {
    it(`${file}: offsets, transposes, stride-0 expands, 0-dim views and every dtype match the contiguous copies`, async () => {
      expectSameTensors(await loadStateDict(path.join(VIEWS, file)), await loadStateDict(path.join(VIEWS, 'views.safetensors')));
    });
  }

  it('reads a zip written by another writer (no zip64, unaligned records)', async () => {
    const values = new Float32Array([1, 2, 3, 4, 5, 6]);
    const pkl = stateDictPickle([
      { name: 'w', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [2, 3], stride: [3, 1] },
      { name: 'wt', storage: 'FloatStorage', key: '0', numel: 6, offset: 1, size: [2, 2], stride: [1, 3] },
    ]);
    const sd = await loadStateDict(write('other-writer.pt', encodeTorchZip('other-writer', pkl, { 0: new Uint8Array(values.buffer) })));
    expect(Array.from(toFloat32(sd.w))).toEqual([1, 2, 3, 4, 5, 6]);
    expect(Array.from(toFloat32(sd.wt))).toEqual([2, 5, 3, 6]);
  });
});

describe('damaged safetensors', () => {
  const good = fs.readFileSync(path.join(FIXTURE_A, 'proprio_projector.safetensors'));
  const headerEnd = 8 + Number(good.readBigUInt64LE(0));
  const f32 = (n: number) => new Uint8Array(4 * n);

  const cuts = [['empty', 0, 'truncated'], ['in the length', 4, 'truncated'], ['in the header', headerEnd - 20, 'header length'],
    ['in the data', headerEnd + 100, "tensor '"], ['one byte short', good.length - 1, "tensor '"]] as const;
  for (const [label, cut, mention] of cuts) {
    it(`truncated ${label}`, async () => {
      await expectCheckpointError(write(`cut-${cut}.safetensors`, good.subarray(0, cut)), mention);
    });
  }

  it('header length larger than the file', async () => {
    const bytes = Buffer.from(good);
    bytes.writeBigUInt64LE(BigInt(good.length));
    await expectCheckpointError(write('long-header.safetensors', bytes), 'header length');
  });

  it('corrupt JSON header', async () => {
    await expectCheckpointError(write('bad-json.safetensors', safetensorsRaw('{"w": {"dtype": "F32", "shape": [2', f32(2))), 'JSON');
  });

  it('offsets outside the data', async () => {
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } });
    await expectCheckpointError(write('outside.safetensors', safetensorsRaw(header, f32(2))), "'w'", 'outside');
  });

  it('wrong byte count for the dtype', async () => {
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } });
    await expectCheckpointError(write('byte-count.safetensors', safetensorsRaw(header, f32(2))), "'w'", '8 bytes for 3 elements');
  });

  it('a shape whose element count overflows', async () => {
    const header = JSON.stringify({ w: { dtype: 'F32', shape: [2 ** 31, 2 ** 31, 2 ** 31, 2 ** 31], data_offsets: [0, 0] } });
    await expectCheckpointError(write('huge-shape.safetensors', safetensorsRaw(header, f32(0))), "'w'", 'bad shape');
  });

  it('unsupported dtype string', async () => {
    const header = JSON.stringify({ w: { dtype: 'F8_E4M3', shape: [2], data_offsets: [0, 2] } });
    await expectCheckpointError(write('dtype.safetensors', safetensorsRaw(header, new Uint8Array(2))), "'w'", 'F8_E4M3');
  });
});

describe('sharded safetensors', () => {
  async function shard(dir: string) {
    const all = await loadStateDict(path.join(FIXTURE_A, 'model.safetensors'));
    const names = Object.keys(all);
    const half = Math.ceil(names.length / 2);
    const files = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
    const weightMap: Record<string, string> = {};
    files.forEach((file, i) => {
      const part = Object.fromEntries(names.slice(i * half, (i + 1) * half).map((n) => [n, all[n]]));
      for (const n of Object.keys(part)) weightMap[n] = file;
      fs.writeFileSync(path.join(dir, file), encodeSafetensors(part));
    });
    const index = path.join(dir, 'model.safetensors.index.json');
    const writeIndex = (map: Record<string, string>) => fs.writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: map }));
    writeIndex(weightMap);
    return { all, files, weightMap, index, writeIndex };
  }

  it('two shards + index load to the same tensors as the single file', async () => {
    const { all, index } = await shard(fs.mkdtempSync(path.join(tmp, 'shards-')));
    expectSameTensors(await loadStateDict(index), all);
  });

  it('a missing shard is named', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'shards-'));
    const { files, index } = await shard(dir);
    fs.rmSync(path.join(dir, files[1]));
    await expectCheckpointError(index, `shard '${files[1]}' does not exist`);
  });

  it('a weight_map entry absent from its shard is named', async () => {
    const { files, weightMap, writeIndex, index } = await shard(fs.mkdtempSync(path.join(tmp, 'shards-')));
    writeIndex({ ...weightMap, 'ghost.weight': files[0] });
    await expectCheckpointError(index, "'ghost.weight'", files[0]);
  });
});

describe('damaged torch.save files', () => {
  const good = fs.readFileSync(path.join(FIXTURE_A, 'proprio_projector--checkpoint.pt'));
  const centralDir = good.indexOf(Buffer.from([0x50, 0x4b, 1, 2]));

  for (const cut of [0, 10, Math.floor(good.length / 2), centralDir + 10, good.length - 30, good.length - 1]) {
    it(`truncated at byte ${cut}`, async () => {
      await expectCheckpointError(write(`cut-${cut}.pt`, good.subarray(0, cut)));
    });
  }

  const damage: [string, (b: Buffer) => void, string][] = [
    ['central directory signature', (b) => b.writeUInt32LE(0, centralDir), 'central directory entry 0'],
    ['local header offset of an entry', (b) => b.writeUInt32LE(1, centralDir + 42), 'local header'],
    ['entry size', (b) => { b.writeUInt32LE(0x7fffffff, centralDir + 20); b.writeUInt32LE(0x7fffffff, centralDir + 24); },
      'lies outside the file'],
    ['sizes that disagree', (b) => b.writeUInt32LE(1, centralDir + 24), 'two different sizes'],
    ['name length', (b) => b.writeUInt16LE(0xffff, centralDir + 28), 'runs past the directory'],
  ];
  for (const [label, corrupt, mention] of damage) {
    it(`corrupted central directory: ${label}`, async () => {
      const bytes = Buffer.from(good);
      corrupt(bytes);
      await expectCheckpointError(write(`cd-${label.replace(/ /g, '-')}.pt`, bytes), mention);
    });
  }

  const floats = new Uint8Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer);
  const tensor = (over: Partial<PickledTensor> = {}): PickledTensor =>
    ({ name: 'w', storage: 'FloatStorage', key: '0', numel: 6, offset: 0, size: [2, 3], stride: [3, 1], ...over });
  const torchZip = (name: string, pkl: Uint8Array, storages: Record<string, Uint8Array> = { 0: floats }) =>
    write(name, encodeTorchZip(name.replace('.pt', ''), pkl, storages));

  const forbidden = [['os', 'system'], ['builtins', 'eval'], ['torch._utils', '_rebuild_tensor_v3'], ['torch.storage', 'UntypedStorage']];
  for (const [module, name] of forbidden) {
    it(`refuses the pickle global ${module}.${name}`, async () => {
      // PROTO 2, GLOBAL module.name, ('ls',), REDUCE, STOP
      const call = [pickle.global(module, name), pickle.tuple(pickle.str('ls')), pickle.reduce];
      const pkl = Buffer.concat([Buffer.from([0x80, 2]), ...call, Buffer.from('.')]);
      await expectCheckpointError(torchZip(`global-${name}.pt`, pkl), `'${module}.${name}'`);
    });
  }

  it('refuses a global reached through STACK_GLOBAL (protocol 4)', async () => {
    const pkl = Buffer.concat([Buffer.from([0x80, 4]), pickle.str('os'), pickle.str('system'), Buffer.from([0x93, 0x2e])]);
    await expectCheckpointError(torchZip('stack-global.pt', pkl), "'os.system'");
  });

  it('a storage record smaller than the storage is named with its tensor', async () => {
    await expectCheckpointError(torchZip('short-storage.pt', stateDictPickle([tensor({ numel: 8 })])), "tensor 'w'", 'data/0');
  });

  it('a view reaching outside its storage is named', async () => {
    const pkl = stateDictPickle([tensor({ offset: 1 })]);
    await expectCheckpointError(torchZip('view-outside.pt', pkl), "tensor 'w'", 'outside its storage');
    await expectCheckpointError(torchZip('stride-outside.pt', stateDictPickle([tensor({ stride: [4, 1] })])), "tensor 'w'");
  });

  it('a missing storage record is named', async () => {
    await expectCheckpointError(torchZip('no-record.pt', stateDictPickle([tensor({ key: '7' })])), "tensor 'w'", 'data/7');
  });

  it('a value that is not a tensor is named', async () => {
    const pkl = Buffer.concat([Buffer.from([0x80, 2, 0x7d]), pickle.str('epoch'), pickle.int(3), Buffer.from('s.')]);
    await expectCheckpointError(torchZip('not-tensor.pt', pkl), "'epoch'", 'not a tensor');
  });

  it('a missing file', async () => {
    await expectCheckpointError(path.join(tmp, 'absent.pt'), 'no such file');
  });

  it('a truncated pickle, an unknown opcode', async () => {
    const pkl = stateDictPickle([tensor()]);
    await expectCheckpointError(torchZip('short-pickle.pt', pkl.subarray(0, pkl.length - 10)), 'data.pkl');
    const stringOpcode = Buffer.concat([Buffer.from([0x80, 2]), Buffer.from("S'x'\n.")]);  // STRING (protocol 0): not used by torch.save
    await expectCheckpointError(torchZip('opcode.pt', stringOpcode), 'opcode 0x53');
  });

  it('a compressed entry', async () => {
    const pkl = stateDictPickle([tensor()]);
    const file = write('deflated.pt', encodeZip([
      { name: 'deflated/data.pkl', data: deflateRawSync(pkl), method: 8, size: pkl.length },
      { name: 'deflated/data/0', data: floats },
    ]));
    await expectCheckpointError(file, "'deflated/data.pkl'", 'compressed');
  });
});
