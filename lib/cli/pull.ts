/** `m2vla pull <repo>`: a run directory from the Hugging Face Hub into the Hub cache; prints its path on stdout. */
import { pull, type PullProgress } from '../hub.js';
import { parseFlags } from './args.js';

const USAGE = `usage: m2vla pull <[hf://]owner/repo[@revision][/subfolder]> [--revision R] [--cache-dir DIR]
                  [--endpoint URL] [--offline] [--quiet]
Downloads a run directory (config.json, model.safetensors, the head's checkpoints, statistics, tokenizer) from the
Hugging Face Hub into its cache and prints the directory, e.g.
  m2vla pull VLA-Adapter/LIBERO-Spatial
  m2vla serve --run "$(m2vla pull VLA-Adapter/LIBERO-Spatial)"      (or --run hf://VLA-Adapter/LIBERO-Spatial)
Files are checked against the Hub's sha256 (LFS) or git hash; an interrupted download continues where it stopped.
--cache-dir     default HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub (shared with Python)
--endpoint      default HF_ENDPOINT, else https://huggingface.co
--offline       use only the cache (also HF_HUB_OFFLINE=1); without network the cache is used anyway, with a warning
Private or gated repos: HF_TOKEN=hf_... (or the token file of \`huggingface-cli login\`).`;

const MB = 2 ** 20;
const size = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / MB).toFixed(1)} MiB`);

/** Pull progress on stderr: a bar rewritten in place on a terminal (ended by a newline), elsewhere a line per file. */
export function pullProgress(tty = process.stderr.isTTY === true) {
  const started = Date.now();
  let lastFiles = 0, lastDraw = 0;
  return (p: PullProgress) => {
    const now = Date.now();
    if (!tty) {
      // one line when a file is done (files counts up)
      if (p.files !== lastFiles) process.stderr.write(`  ${p.files}/${p.totalFiles} files, ${size(p.bytes)} of ${size(p.totalBytes)}: ${p.file}\n`);
      lastFiles = p.files;
      return;
    }
    const finished = p.files === p.totalFiles;
    if (now - lastDraw < 100 && !finished) return;
    lastDraw = now;
    const width = 24, share = p.totalBytes ? p.bytes / p.totalBytes : 1, done = Math.round(share * width);
    const rate = p.bytes / Math.max(0.001, (now - started) / 1000);
    process.stderr.write(`\r[${'#'.repeat(done)}${'.'.repeat(width - done)}] ${(share * 100).toFixed(0).padStart(3)}% ` +
      `${size(p.bytes)} / ${size(p.totalBytes)}  ${size(rate)}/s  ${p.file}\x1b[K${finished ? '\n' : ''}`);
  };
}

export const pullCommand = {
  summary: 'download a run directory from the Hugging Face Hub',
  usage: USAGE,
  async run(argv: string[]): Promise<number> {
    const { values: v, positionals } = parseFlags(argv, {
      revision: { type: 'string' }, 'cache-dir': { type: 'string' }, endpoint: { type: 'string' },
      offline: { type: 'boolean' }, quiet: { type: 'boolean', short: 'q' },
    }, { min: 1, max: 1 });
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    const controller = new AbortController();
    const stop = () => controller.abort();
    process.once('SIGINT', stop);
    try {
      const result = await pull(positionals[0], {
        revision: v.revision as string | undefined, cacheDir: v['cache-dir'] as string | undefined,
        endpoint: v.endpoint as string | undefined, offline: v.offline as boolean | undefined, signal: controller.signal,
        onProgress: v.quiet ? undefined : pullProgress(),
      });
      if (!v.quiet) {
        console.error(`m2vla pull: ${result.repo}${result.subfolder ? `/${result.subfolder}` : ''}@${result.revision} ` +
          `(commit ${result.commit.slice(0, 12)}): ${result.files} files, ${size(result.totalBytes)}` +
          (result.offline ? ', from the cache (offline)' : `, ${size(result.downloadedBytes)} downloaded`));
      }
      console.log(result.dir);
      return 0;
    } finally {
      process.off('SIGINT', stop);
    }
  },
};
