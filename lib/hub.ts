/**
 * Run directories from the Hugging Face Hub, through the Hub's own JS client (@huggingface/hub):
 *
 *   const { dir } = await pull('hf://VLA-Adapter/LIBERO-Spatial', { onProgress });   // or loadPolicy('hf://…')
 *
 * A spec is `[hf://]owner/repo[@revision][/subfolder]` (HfFileSystem's form). Files land in the Hub's cache layout,
 * shared with Python's huggingface_hub: `<cache>/models--owner--repo/blobs/<sha256 or git oid>`, linked from
 * `snapshots/<commit>/<path>`, `refs/<revision>` holding the commit. Every blob is checked against the hash the tree
 * listing gives (LFS files: sha256 of the content; others: git's blob sha1) before it is renamed into place; a download
 * that stops keeps `<blob>.incomplete` and continues from its end with a Range request (the next pull, or the next of
 * the retries here). Offline (`offline`, HF_HUB_OFFLINE=1, or the Hub unreachable) a revision pulled completely before
 * is used from the cache. HF_ENDPOINT, HF_TOKEN (or the token file `huggingface-cli login` writes), HF_HUB_CACHE /
 * HF_HOME are honoured.
 */
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { downloadFile, fileDownloadInfo, getHFHubCachePath, HubApiError, listFiles, modelInfo, type ListFileEntry } from '@huggingface/hub';
import { writeFileAtomic } from './atomic-file.js';
import { DownloadError, InputError } from './errors.js';
import { checkOptions, optionKeys } from './options.js';

export interface HubSpec {
  /** owner/name */
  repo: string;
  /** A folder inside the repo ('' for its root). */
  subfolder: string;
  revision: string;
}

export interface PullOptions {
  /** Branch, tag or commit; overrides the spec's `@revision`. Default 'main'. */
  revision?: string;
  /** The Hub cache folder. Default HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** The Hub's address. Default HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** An access token (hf_…) for private or gated repos. Default HF_TOKEN, else the token file of `huggingface-cli login`. */
  token?: string;
  /** Use only the cache (no request). Default: HF_HUB_OFFLINE=1. */
  offline?: boolean;
  /** Attempts per file when a connection drops (each continues where the last stopped). Default 3. */
  retries?: number;
  /** Called as bytes arrive (and once per file taken from the cache). */
  onProgress?: (progress: PullProgress) => void;
  /** Aborting stops the download; what arrived stays for the next pull to continue. */
  signal?: AbortSignal;
}

export interface PullProgress {
  /** The file being fetched (path in the repo). */
  file: string;
  /** Bytes of all files done so far (cached ones included), and in all. */
  bytes: number;
  totalBytes: number;
  /** Files done, and in all. */
  files: number;
  totalFiles: number;
}

export interface PullResult {
  /** The run directory: snapshots/<commit>/<subfolder> in the cache. */
  dir: string;
  repo: string;
  subfolder: string;
  revision: string;
  commit: string;
  files: number;
  /** Bytes fetched by this call (0 when everything was cached). */
  downloadedBytes: number;
  totalBytes: number;
  /** Whether the Hub was not asked (offline, or unreachable and the cache had the revision). */
  offline: boolean;
}

const PULL_KEYS = optionKeys<PullOptions>({
  revision: true, cacheDir: true, endpoint: true, token: true, offline: true, retries: true, onProgress: true, signal: true,
});

const HUB_PREFIX = 'hf://';
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Whether a run-directory argument names a Hub repo (`hf://…`). */
export function isHubSpec(value: string): boolean {
  return value.startsWith(HUB_PREFIX);
}

/** Parses `[hf://]owner/repo[@revision][/subfolder]`. */
export function parseHubSpec(spec: string): HubSpec {
  const bare = spec.startsWith(HUB_PREFIX) ? spec.slice(HUB_PREFIX.length) : spec;
  const [owner, nameRev, ...rest] = bare.replace(/\/+$/, '').split('/');
  const [name, revision = 'main', ...extra] = (nameRev ?? '').split('@');
  const subfolder = rest.join('/');
  if (!owner || !name || !SEGMENT.test(owner) || !SEGMENT.test(name) || extra.length > 0 || revision === '' ||
      rest.some((s) => s === '' || s === '..' || s === '.'))
    throw new InputError(`${JSON.stringify(spec)}: expected a Hub repo as [hf://]owner/repo[@revision][/subfolder], ` +
      "e.g. 'hf://VLA-Adapter/LIBERO-Spatial'");
  return { repo: `${owner}/${name}`, subfolder, revision };
}

/** The token: the option, HF_TOKEN, or the file `huggingface-cli login` writes. */
function accessToken(options: PullOptions): string | undefined {
  if (options.token) return options.token;
  if (process.env.HF_TOKEN) return process.env.HF_TOKEN;
  const home = process.env.HF_HOME ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  const file = process.env.HF_TOKEN_PATH ?? path.join(home, 'token');
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.toLowerCase());
}

/** What one pull recorded in the cache: the files of (commit, subfolder), so an offline pull knows it is complete. */
interface PullRecord {
  files: Array<{ path: string; size: number; blob: string }>;
}

class RepoCache {
  readonly root: string;
  constructor(cacheDir: string, repo: string) {
    this.root = path.join(cacheDir, `models--${repo.replace('/', '--')}`);
  }
  blob(key: string) { return path.join(this.root, 'blobs', key); }
  snapshot(commit: string) { return path.join(this.root, 'snapshots', commit); }
  ref(revision: string) { return path.join(this.root, 'refs', revision); }
  record(commit: string, subfolder: string) {
    return path.join(this.root, 'm2vla-pulls', commit, `${subfolder.replaceAll('/', '--') || '.root'}.json`);
  }

  /** The commit a revision was last resolved to here (a commit hash stands for itself). */
  commitOf(revision: string): string | undefined {
    if (/^[0-9a-f]{40}$/.test(revision)) return revision;
    try {
      return fs.readFileSync(this.ref(revision), 'utf8').trim() || undefined;
    } catch {
      return undefined;
    }
  }

  /** The recorded pull of (commit, subfolder) when all its files are still there. */
  complete(commit: string, subfolder: string): PullRecord | undefined {
    let record: PullRecord;
    try {
      record = JSON.parse(fs.readFileSync(this.record(commit, subfolder), 'utf8')) as PullRecord;
    } catch {
      return undefined;
    }
    const snap = this.snapshot(commit);
    const ok = record.files.every((f) => {
      try {
        return fs.statSync(path.join(snap, f.path)).size === f.size;
      } catch {
        return false;
      }
    });
    return ok ? record : undefined;
  }

  /** snapshots/<commit>/<file> → ../../blobs/<key>, relative as huggingface_hub makes it. */
  link(commit: string, file: string, key: string): void {
    const at = path.join(this.snapshot(commit), file);
    fs.mkdirSync(path.dirname(at), { recursive: true });
    const target = path.relative(path.dirname(at), this.blob(key));
    try {
      if (fs.readlinkSync(at) === target) return;
      fs.rmSync(at);
    } catch { /* absent */ }
    fs.symlinkSync(target, at);
  }
}

/** The hash a tree entry promises for the file's content: sha256 for LFS files, git's blob sha1 otherwise. */
function expectedHash(entry: ListFileEntry): { key: string; start: () => Hash } {
  if (entry.lfs?.oid) return { key: entry.lfs.oid, start: () => createHash('sha256') };
  if (entry.oid) return { key: entry.oid, start: () => createHash('sha1').update(`blob ${entry.size}\0`) };
  throw new DownloadError(`${entry.path}: the Hub's listing gives no checksum (no LFS sha256, no git oid)`);
}

function hubError(e: unknown, what: string, spec: HubSpec, endpoint: string): DownloadError {
  if (e instanceof DownloadError) return e;
  if (e instanceof HubApiError) {
    const hint = e.statusCode === 401 || e.statusCode === 403
      ? ': the repo is private or gated, or the token is wrong; set HF_TOKEN (https://huggingface.co/settings/tokens)'
      : e.statusCode === 404 ? `: no such repo, revision or file at ${endpoint} (check ${spec.repo}@${spec.revision})` : '';
    return new DownloadError(`${what}: HTTP ${e.statusCode} ${e.message}${hint}`, { cause: e });
  }
  const cause = (e as { cause?: { code?: string; message?: string } })?.cause;
  return new DownloadError(`${what}: ${(e as Error)?.message ?? String(e)}${cause ? ` (${cause.code ?? cause.message})` : ''}`, { cause: e });
}

function isNetworkFailure(e: unknown): boolean {
  return e instanceof TypeError && /fetch failed/.test(e.message);
}

/** Downloads one blob into place (continuing a `.incomplete` file), checking its hash; returns the bytes fetched. */
async function fetchBlob(entry: ListFileEntry, commit: string, cache: RepoCache, ctx: {
  spec: HubSpec; endpoint: string; token?: string; retries: number; signal?: AbortSignal; progress: (delta: number) => void;
}): Promise<number> {
  const { key, start } = expectedHash(entry);
  const blob = cache.blob(key), partial = `${blob}.incomplete`;
  fs.mkdirSync(path.dirname(blob), { recursive: true });
  let fetched = 0;
  for (let attempt = 1; ; attempt++) {
    let have = fs.existsSync(partial) ? fs.statSync(partial).size : 0;
    if (have > entry.size) {
      fs.rmSync(partial);
      have = 0;
    }
    const hash = start();
    if (have > 0) {
      for await (const chunk of fs.createReadStream(partial)) hash.update(chunk as Buffer);
    }
    ctx.progress(have);
    try {
      if (have < entry.size) {
        const params = { repo: ctx.spec.repo, path: entry.path, revision: commit, hubUrl: ctx.endpoint, accessToken: ctx.token };
        const info = await fileDownloadInfo(params);
        if (!info) throw new DownloadError(`${entry.path}: listed but not downloadable (404)`);
        if (info.size !== entry.size)
          throw new DownloadError(`${entry.path}: the Hub lists ${entry.size} bytes but serves ${info.size}`);
        const file = await downloadFile({ ...params, downloadInfo: info, xet: false });
        const body = (have > 0 ? file!.slice(have) : file!).stream();
        const out = fs.openSync(partial, 'a');
        try {
          for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) {
            if (ctx.signal?.aborted) throw new DownloadError(`${entry.path}: aborted after ${have} of ${entry.size} bytes; pull again to continue`);
            fs.writeSync(out, chunk);
            hash.update(chunk);
            have += chunk.length;
            fetched += chunk.length;
            ctx.progress(chunk.length);
          }
        } finally {
          fs.closeSync(out);
        }
        if (have !== entry.size) throw new DownloadError(`${entry.path}: the connection ended after ${have} of ${entry.size} bytes`);
      }
      const digest = hash.digest('hex');
      if (digest !== key) {
        fs.rmSync(partial, { force: true });
        throw new DownloadError(`${entry.path}: checksum mismatch (got ${digest}, the Hub lists ${key}); the damaged ` +
          'download was deleted, pull again');
      }
      fs.renameSync(partial, blob);
      return fetched;
    } catch (e) {
      ctx.progress(-have);
      const retriable = !(e instanceof DownloadError && /checksum|aborted|lists/.test(e.message)) &&
        !(e instanceof HubApiError && e.statusCode < 500) && !ctx.signal?.aborted;
      if (!retriable || attempt >= ctx.retries) throw hubError(e, `${ctx.spec.repo}/${entry.path}`, ctx.spec, ctx.endpoint);
    }
  }
}

/**
 * Makes the run directory `spec` names available locally and returns it: a complete pull of that commit is reused;
 * otherwise the listed files are fetched (only those missing), checked and linked.
 */
export async function pull(spec: string | HubSpec, options: PullOptions = {}): Promise<PullResult> {
  checkOptions(options, PULL_KEYS, 'pull');
  const parsed = typeof spec === 'string' ? parseHubSpec(spec) : spec;
  const target: HubSpec = { ...parsed, revision: options.revision ?? parsed.revision };
  const endpoint = (options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co').replace(/\/+$/, '');
  const cache = new RepoCache(options.cacheDir ?? getHFHubCachePath(), target.repo);
  const token = accessToken(options);
  const name = `${target.repo}${target.subfolder ? `/${target.subfolder}` : ''}@${target.revision}`;

  const fromCache = (why: string): PullResult => {
    const commit = cache.commitOf(target.revision);
    const record = commit && cache.complete(commit, target.subfolder);
    if (!commit || !record)
      throw new DownloadError(`${name}: ${why}, and the cache (${cache.root}) holds no complete copy; ` +
        'pull it once with network access (m2vla pull)');
    const totalBytes = record.files.reduce((s, f) => s + f.size, 0);
    return { dir: path.join(cache.snapshot(commit), target.subfolder), ...target, commit, files: record.files.length,
      downloadedBytes: 0, totalBytes, offline: true };
  };
  if (options.offline ?? truthy(process.env.HF_HUB_OFFLINE)) return fromCache('offline');

  let commit: string, entries: ListFileEntry[];
  try {
    const info = await modelInfo({ name: target.repo, revision: target.revision, hubUrl: endpoint, accessToken: token, additionalFields: ['sha'] });
    commit = (info as { sha?: string }).sha ?? '';
    if (!/^[0-9a-f]{40}$/.test(commit)) throw new DownloadError(`${name}: the Hub gave no commit for revision '${target.revision}'`);
    entries = [];
    for await (const e of listFiles({ repo: target.repo, revision: commit, path: target.subfolder || undefined, recursive: true, hubUrl: endpoint, accessToken: token }))
      if (e.type === 'file') entries.push(e);
  } catch (e) {
    if (isNetworkFailure(e)) {
      const result = fromCache(`${endpoint} is unreachable (${(e as Error & { cause?: { code?: string } }).cause?.code ?? 'network error'})`);
      process.emitWarning(`${name}: ${endpoint} is unreachable; using the cached commit ${result.commit}`, { code: 'M2VLA_HUB_OFFLINE' });
      return result;
    }
    throw hubError(e, name, target, endpoint);
  }
  const prefix = target.subfolder ? `${target.subfolder}/` : '';
  if (!entries.some((e) => e.path === `${prefix}config.json`)) {
    const runs = entries.length > 0 && !target.subfolder
      ? entries.filter((e) => e.path.endsWith('/config.json')).map((e) => `${target.repo}/${path.posix.dirname(e.path)}`) : [];
    throw new InputError(`${name}: no config.json ${target.subfolder ? `in '${target.subfolder}'` : 'at the repo root'}, so it is not ` +
      `a run directory${runs.length ? `; its run directories: ${runs.join(', ')}` : ''}`);
  }

  const totalBytes = entries.reduce((s, e) => s + e.size, 0);
  let bytes = 0, files = 0, downloadedBytes = 0;
  const report = (file: string) => options.onProgress?.({ file, bytes, totalBytes, files, totalFiles: entries.length });
  for (const entry of entries) {
    const { key } = expectedHash(entry);
    if (!fs.existsSync(cache.blob(key))) {
      downloadedBytes += await fetchBlob(entry, commit, cache, {
        spec: target, endpoint, token, retries: Math.max(1, options.retries ?? 3), signal: options.signal,
        progress: (delta) => { bytes += delta; report(entry.path); },
      });
    } else bytes += entry.size;
    cache.link(commit, entry.path, key);
    files++;
    report(entry.path);
  }
  const record: PullRecord = { files: entries.map((e) => ({ path: e.path, size: e.size, blob: expectedHash(e).key })) };
  fs.mkdirSync(path.dirname(cache.record(commit, target.subfolder)), { recursive: true });
  writeFileAtomic(cache.record(commit, target.subfolder), `${JSON.stringify(record)}\n`);
  if (target.revision !== commit) {
    fs.mkdirSync(path.dirname(cache.ref(target.revision)), { recursive: true });
    writeFileAtomic(cache.ref(target.revision), commit);
  }
  return { dir: path.join(cache.snapshot(commit), target.subfolder), ...target, commit, files: entries.length,
    downloadedBytes, totalBytes, offline: false };
}

/** A run-directory argument as a local path: `hf://…` is pulled (see pull), anything else is returned as is. */
export async function resolveRunDir(runDir: string, options: PullOptions = {}): Promise<string> {
  return isHubSpec(runDir) ? (await pull(runDir, options)).dir : runDir;
}
