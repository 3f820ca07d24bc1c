/** `m2vla serve`: the policy over openpi's websocket protocol and VLA-Adapter's POST /act, until SIGTERM/SIGINT. */
import type { NativeDevice } from '../native/binding.js';
import { demoRunDir, loadPolicy } from '../policy.js';
import { PRESETS, type ObservationKeys, type PresetName } from '../server/observations.js';
import { createServer } from '../server/server.js';
import { choiceFlag, numberFlag, parseFlags, UsageError } from './args.js';
import { pullProgress } from './pull.js';

const USAGE = `usage: m2vla serve [--run <dir | hf://owner/repo[/folder]>] [--host 127.0.0.1] [--port 8000]
                   [--preset libero|droid|vla-adapter] [--keys <json>] [--api-key K] [--max-batch 8]
                   [--max-wait-ms 0] [--max-queue 64] [--max-frame-mb 16] [--device cpu|cuda:N]
                   [--dtype auto|float32|bfloat16|float16] [--threads N] [--unnorm-key K] [--center-crop]
Serves the policy (the embedded demo model without --run) on one port:
  ws://host:port/<any path>  openpi's websocket protocol (msgpack + numpy arrays), observation keys from --preset
  POST /act                  VLA-Adapter's JSON (json_numpy) {instruction, full_image, wrist_image, state}
  GET /healthz               200 OK
--keys maps other robots' observations, e.g. '{"primary": "observation/exterior_image_1_left",
  "wrist": "observation/wrist_image_left", "state": ["observation/joint_position", "observation/gripper_position"],
  "prompt": "prompt"}'. --api-key (or M2VLA_API_KEY) requires "Authorization: Api-Key <key>".
Requests from all clients are batched (up to --max-batch per forward); beyond --queue waiting requests a client gets
an error instead of waiting. SIGTERM/SIGINT: finish the requests received, then close.`;

function int(name: string, v: string | boolean | undefined, min: number): number | undefined {
  return numberFlag(v, name, { integer: true, min });
}

function parseKeys(json: string): ObservationKeys {
  let k: Partial<ObservationKeys>;
  try {
    k = JSON.parse(json);
  } catch (e) {
    throw new UsageError(`--keys: not JSON (${(e as Error).message})`);
  }
  const str = (x: unknown) => typeof x === 'string';
  if (!k || !str(k.primary) || !str(k.prompt) || (k.wrist !== undefined && !str(k.wrist)) ||
    !(str(k.state) || (Array.isArray(k.state) && k.state.length > 0 && k.state.every(str))))
    throw new UsageError('--keys: expected {"primary": key, "wrist"?: key, "state": key or [keys], "prompt": key}');
  return k as ObservationKeys;
}

export const serveCommand = {
  summary: 'serve the policy over websocket (openpi protocol) and HTTP (VLA-Adapter POST /act)',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values: v } = parseFlags(argv, {
      run: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '8000' },
      preset: { type: 'string', default: 'libero' }, keys: { type: 'string' }, 'api-key': { type: 'string' },
      'max-batch': { type: 'string' }, 'max-wait-ms': { type: 'string' }, 'max-queue': { type: 'string', aliases: ['queue'] },
      'max-frame-mb': { type: 'string' }, device: { type: 'string', default: 'cpu' }, dtype: { type: 'string', default: 'auto' },
      threads: { type: 'string' }, 'unnorm-key': { type: 'string' }, 'center-crop': { type: 'boolean' },
    });
    const values = v as Record<string, string | undefined> & { 'center-crop'?: boolean; help?: boolean };
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    choiceFlag(values.preset, 'preset', Object.keys(PRESETS));
    const dtype = choiceFlag(values.dtype, 'dtype', ['auto', 'float32', 'bfloat16', 'float16'] as const);
    const options = {
      host: values.host, port: int('port', values.port, 0),
      keys: values.keys ? parseKeys(values.keys) : (values.preset as PresetName),
      apiKey: values['api-key'] ?? process.env.M2VLA_API_KEY,
      maxBatch: int('max-batch', values['max-batch'], 1), maxWaitMs: int('max-wait-ms', values['max-wait-ms'], 0),
      maxQueue: int('max-queue', values['max-queue'], 1),
      maxFrameBytes: values['max-frame-mb'] === undefined ? undefined : int('max-frame-mb', values['max-frame-mb'], 1)! * 2 ** 20,
      log: (line: string) => console.error(`m2vla serve: ${line}`),
    };
    const runDir = values.run ?? demoRunDir();
    await using policy = await loadPolicy(runDir, {
      device: values.device as NativeDevice, dtype, threads: int('threads', values.threads, 1), unnormKey: values['unnorm-key'],
      centerCrop: values['center-crop'], hub: { onProgress: pullProgress() },
    });
    const server = await createServer(policy, options);
    const where = `${server.host}:${server.port}`;
    console.log(`m2vla serve: ${values.run ? runDir : 'demo model (random weights)'} on ws://${where} (openpi), ` +
      `http://${where}/act (VLA-Adapter), http://${where}/healthz`);
    await new Promise<void>((resolve) => {
      const stop = (signal: string) => {
        console.log(`m2vla serve: ${signal}: finishing requests in flight`);
        void server.close().then(resolve);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    console.log('m2vla serve: closed');
    return 0;
  },
};
