// A robot-side openpi client in plain JavaScript (what openpi_client.WebsocketClientPolicy does in Python), for
// `m2vla serve` or any openpi policy server:
//
//   node examples/openpi-client.mjs [ws://127.0.0.1:8000] [--steps 3]
//
// openpi's msgpack encodes a numpy array as a map whose keys are msgpack *bin* (bytes), not strings:
// {b"__ndarray__": True, b"data": <raw bytes>, b"dtype": "<f8", b"shape": [8, 7]}. A naive msgpack client writes
// string keys (the server's Python side does not recognize them as arrays) and, reading, turns bin keys into
// "[object Object]"-like garbage or refuses them. msgpackr can do both directions: write a Map with Buffer keys, read
// with mapsAsObjects off so that bin keys survive. Only `ws` and `msgpackr` are needed (no m2vla install).
import { Packr, Unpackr } from 'msgpackr';
import WebSocket from 'ws';

const bin = (s) => Buffer.from(s, 'latin1');
const packr = new Packr({ useRecords: false, variableMapSize: true });  // plain maps: Python cannot read records
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: false });  // Maps, so bin keys survive

const DTYPES = { '|u1': Uint8Array, '<f4': Float32Array, '<f8': Float64Array, '<i4': Int32Array, '<i8': BigInt64Array };

/** A numpy array on the wire: C-order bytes, dtype string, shape. */
function ndarray(typed, shape) {
  const dtype = Object.keys(DTYPES).find((d) => typed instanceof DTYPES[d]);
  const data = Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength);
  return new Map([[bin('__ndarray__'), true], [bin('data'), data], [bin('dtype'), dtype], [bin('shape'), shape]]);
}

/** Wire value -> plain JS: maps with (bin or str) keys become objects, ndarray maps { data: TypedArray, shape }. */
function decode(v) {
  if (Array.isArray(v)) return v.map(decode);
  if (!(v instanceof Map)) return v;
  const obj = {};
  for (const [k, x] of v) obj[Buffer.isBuffer(k) || k instanceof Uint8Array ? Buffer.from(k).toString('latin1') : String(k)] = x;
  if (obj.__ndarray__) {
    const Type = DTYPES[obj.dtype];
    if (!Type) throw new Error(`dtype ${obj.dtype} not handled by this example`);
    const bytes = Uint8Array.from(obj.data);  // a copy: msgpackr's views may be unaligned for Float64Array
    return { data: new Type(bytes.buffer), shape: obj.shape, dtype: obj.dtype };
  }
  for (const k of Object.keys(obj)) obj[k] = decode(obj[k]);
  return obj;
}

/** One LIBERO-style observation: two 224x224 RGB images, the 8-number proprio state, the instruction. */
function observation(t) {
  const image = (offset) => Uint8Array.from({ length: 224 * 224 * 3 }, (_, i) => (i + offset + 7 * t) % 256);
  return {
    'observation/image': ndarray(image(0), [224, 224, 3]),
    'observation/wrist_image': ndarray(image(101), [224, 224, 3]),
    'observation/state': ndarray(Float64Array.from({ length: 8 }, (_, i) => 0.01 * t - 0.05 * i), [8]),
    prompt: 'put the black bowl on the plate',
  };
}

const args = process.argv.slice(2);
const url = args.find((a) => a.startsWith('ws://') || a.startsWith('wss://')) ?? 'ws://127.0.0.1:8000';
const steps = Number(args[args.indexOf('--steps') + 1] ?? 3) || 3;

const ws = new WebSocket(url, { perMessageDeflate: false });
const frames = [];
let waiting;
ws.on('message', (data, isBinary) => {
  // A text frame is the server's error message (then it closes with 1011).
  const frame = isBinary ? decode(unpackr.unpack(data)) : new Error(`server error: ${data}`);
  if (waiting) { waiting(frame); waiting = undefined; } else frames.push(frame);
});
const next = () => new Promise((resolve) => { if (frames.length) resolve(frames.shift()); else waiting = resolve; });
await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });

const metadata = await next();  // the server's first frame: what the policy is
console.log('metadata:', JSON.stringify(metadata));
for (let t = 0; t < steps; t++) {
  const started = performance.now();
  ws.send(packr.pack(observation(t)));
  const reply = await next();
  if (reply instanceof Error) throw reply;
  const { data, shape } = reply.actions;
  console.log(`step ${t}: actions ${shape.join('x')} in ${(performance.now() - started).toFixed(1)} ms, first action ` +
    `[${Array.from(data.subarray(0, shape[1]), (x) => x.toFixed(4)).join(', ')}]`);
}
ws.close();
