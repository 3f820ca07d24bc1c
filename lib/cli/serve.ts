/** `m2vla serve`: the policy over openpi's websocket protocol and VLA-Adapter's POST /act, until SIGTERM/SIGINT. */
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import type { NativeDevice } from '../native/binding.js';
import { demoRunDir, loadPolicy } from '../policy.js';
import { PRESETS, type ObservationKeys, type PresetName } from '../server/observations.js';
import { createServer, SERVER_DEFAULTS as D } from '../server/server.js';
import { choiceFlag, numberFlag, parseFlags, UsageError } from './args.js';
import { pullProgress } from './pull.js';

const USAGE = `usage: m2vla serve [--run <dir | hf://owner/repo[/folder]>] [--host 127.0.0.1] [--port 8000]
                   [--preset libero|droid|vla-adapter] [--keys <json>] [--api-key-file F] [--allow-origin O]...
                   [--max-batch ${D.maxBatch}] [--max-wait-ms ${D.maxWaitMs}] [--max-queue ${D.maxQueue}] [--max-frame-mb ${D.maxFrameBytes >> 20}]
                   [--max-prompt-tokens ${D.maxPromptTokens}] [--max-image-pixels ${D.maxImagePixels}]
                   [--max-connections ${D.maxConnections}] [--frame-timeout-s ${D.frameTimeoutMs / 1000}] [--idle-timeout-s ${D.idleTimeoutMs / 1000}]
                   [--quiet] [--device cpu|cuda:N] [--dtype auto|float32|bfloat16|float16|int8] [--threads N]
                   [--unnorm-key K] [--center-crop]
Serves the policy (the embedded demo model without --run) on one port:
  ws://host:port/<any path>  openpi's websocket protocol (msgpack + numpy arrays), observation keys from --preset
  POST /act                  VLA-Adapter's JSON (json_numpy) {instruction, full_image, wrist_image, state}
  GET /healthz               200 OK
--keys maps other robots' observations, e.g. '{"primary": "observation/exterior_image_1_left",
  "wrist": "observation/wrist_image_left", "state": ["observation/joint_position", "observation/gripper_position"],
  "prompt": "prompt"}'.
Access: the API key is read from --api-key-file (first line) or M2VLA_API_KEY, never from the command line (where
  \`ps\` shows it); clients then send "Authorization: Api-Key <key>". An empty key is an error. Requests carrying an
  Origin header (web pages in a browser) are refused (403) unless --allow-origin names it ('*': any); POST /act must
  be application/json.
Bounds, each checked before any work, each refusal an error to that client only:
  --max-frame-mb       largest websocket message / HTTP body (from the frame header: never buffered)
  --max-prompt-tokens  prompt tokens per request (and the model's positions; over 16 characters per token: refused
                       before tokenizing)
  --max-image-pixels   width x height of each image, raw or as its PNG/JPEG header declares (before decoding)
  --max-connections    open connections, HTTP and websocket (more get 503)
  --frame-timeout-s    a message or HTTP request must arrive in full within this time of its first byte
  --idle-timeout-s     a websocket with no request in flight that sends nothing this long is closed
  --max-queue          requests waiting; beyond it a client gets a busy error (close 1013 / HTTP 503) instead of waiting
Requests from all clients are batched (up to --max-batch per forward). Each request is logged on stderr (client,
request, outcome, latency, batch size) unless --quiet. SIGTERM/SIGINT: finish the requests received, then close.`;

function int(name: string, v: string | boolean | string[] | undefined, min: number): number | undefined {
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

/** The key from a file (its first line) or M2VLA_API_KEY; a key on the command line is refused (ps shows it). */
function apiKey(onCommandLine: string | undefined, file: string | undefined): string | undefined {
  if (onCommandLine !== undefined)
    throw new UsageError('--api-key: a key on the command line is visible to every local user (ps); use --api-key-file or M2VLA_API_KEY');
  let key = process.env.M2VLA_API_KEY, from = 'M2VLA_API_KEY';
  if (file !== undefined) {
    try {
      key = fs.readFileSync(file, 'utf8').split(/\r?\n/)[0];
    } catch (e) {
      throw new ConfigError(`--api-key-file: cannot read ${file} (${(e as Error).message})`);
    }
    from = `--api-key-file ${file}`;
  }
  if (key !== undefined && key.trim() === '') throw new ConfigError(`${from}: the API key is empty (it would refuse every client)`);
  return key;
}

export const serveCommand = {
  summary: 'serve the policy over websocket (openpi protocol) and HTTP (VLA-Adapter POST /act)',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values: v } = parseFlags(argv, {
      run: { type: 'string' }, host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string', default: '8000' },
      preset: { type: 'string', default: 'libero' }, keys: { type: 'string' }, 'api-key': { type: 'string' },
      'api-key-file': { type: 'string' }, 'allow-origin': { type: 'string', multiple: true }, quiet: { type: 'boolean' },
      'max-batch': { type: 'string' }, 'max-wait-ms': { type: 'string' }, 'max-queue': { type: 'string', aliases: ['queue'] },
      'max-frame-mb': { type: 'string' }, 'max-prompt-tokens': { type: 'string' }, 'max-image-pixels': { type: 'string' },
      'max-connections': { type: 'string' }, 'frame-timeout-s': { type: 'string' }, 'idle-timeout-s': { type: 'string' },
      device: { type: 'string', default: 'cpu' }, dtype: { type: 'string', default: 'auto' },
      threads: { type: 'string' }, 'unnorm-key': { type: 'string' }, 'center-crop': { type: 'boolean' },
    });
    const values = v as Record<string, string | undefined> & { 'center-crop'?: boolean; help?: boolean; quiet?: boolean; 'allow-origin'?: string[] };
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    choiceFlag(values.preset, 'preset', Object.keys(PRESETS));
    const dtype = choiceFlag(values.dtype, 'dtype', ['auto', 'float32', 'bfloat16', 'float16', 'int8'] as const);
    const seconds = (name: 'frame-timeout-s' | 'idle-timeout-s') => {
      const v = int(name, values[name], 1);
      return v === undefined ? undefined : v * 1000;
    };
    const log = (line: string) => console.error(`m2vla serve: ${line}`);
    const options = {
      host: values.host, port: int('port', values.port, 0),
      keys: values.keys ? parseKeys(values.keys) : (values.preset as PresetName),
      apiKey: apiKey(values['api-key'], values['api-key-file']),
      allowOrigins: values['allow-origin'],
      maxPromptTokens: int('max-prompt-tokens', values['max-prompt-tokens'], 1),
      maxImagePixels: int('max-image-pixels', values['max-image-pixels'], 1),
      maxConnections: int('max-connections', values['max-connections'], 1),
      frameTimeoutMs: seconds('frame-timeout-s'), idleTimeoutMs: seconds('idle-timeout-s'),
      accessLog: values.quiet ? undefined : log,
      maxBatch: int('max-batch', values['max-batch'], 1), maxWaitMs: int('max-wait-ms', values['max-wait-ms'], 0),
      maxQueue: int('max-queue', values['max-queue'], 1),
      maxFrameBytes: values['max-frame-mb'] === undefined ? undefined : int('max-frame-mb', values['max-frame-mb'], 1)! * 2 ** 20,
      log,
    };
    const runDir = values.run ?? await demoRunDir();
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
