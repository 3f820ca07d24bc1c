// A local Hugging Face Hub for tests: a real HTTP server on 127.0.0.1 that serves run directories from disk in the
// Hub's API layout, the routes @huggingface/hub calls:
//   GET /api/models/<owner>/<repo>/revision/<rev>        model info with the commit `sha`
//   GET /api/models/<owner>/<repo>/tree/<rev>[/<path>]   tree listing (paged with Link: rel="next", as the Hub does)
//   GET /<owner>/<repo>/resolve/<rev>/<path>             the file, with ETag / X-Linked-ETag / X-Repo-Commit and ranges
// *.safetensors and *.pt are LFS files (lfs.oid = sha256 of the content), others plain git blobs (oid = git's sha1).
// Environment: HUB_REPO (owner/name), HUB_FOLDERS (name=dir,...: each dir becomes that folder of the repo),
// HUB_TOKEN (require "Authorization: Bearer <token>"), HUB_CUT (path:bytes: the first full download of that file
// stops after that many bytes), HUB_CORRUPT (path: serve it with one byte changed). Prints "listening <port>" and
// then one JSON line per request ({method, url, range}).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

const repo = process.env.HUB_REPO ?? 'm2vla-test/tiny';
const commit = createHash('sha1').update(`${repo}@1`).digest('hex');
const files = new Map();  // repo path -> { data, oid, lfs? }
for (const spec of (process.env.HUB_FOLDERS ?? '').split(',').filter(Boolean)) {
  const [folder, dir] = spec.split('=');
  for (const name of fs.readdirSync(dir)) {
    const file = path.join(dir, name);
    if (!fs.statSync(file).isFile()) continue;
    const data = fs.readFileSync(file);
    const oid = createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
    const lfs = /\.(safetensors|pt)$/.test(name) ? { oid: createHash('sha256').update(data).digest('hex'), size: data.length, pointerSize: 134 } : undefined;
    files.set(folder ? `${folder}/${name}` : name, { data, oid, lfs });
  }
}
files.set('README.md', { data: Buffer.from('# test repo\n'), oid: createHash('sha1').update('blob 12\0# test repo\n').digest('hex') });

const [cutPath, cutBytes] = (process.env.HUB_CUT ?? ':').split(':');
let cutDone = false;
const corrupt = process.env.HUB_CORRUPT;
const PAGE = 4;

function treeEntries(prefix, recursive) {
  const out = new Map();
  for (const [p, f] of files) {
    if (prefix && !p.startsWith(`${prefix}/`)) continue;
    const rest = prefix ? p.slice(prefix.length + 1) : p;
    const parts = rest.split('/');
    if (!recursive && parts.length > 1) {
      const dir = prefix ? `${prefix}/${parts[0]}` : parts[0];
      out.set(dir, { type: 'directory', oid: createHash('sha1').update(dir).digest('hex'), size: 0, path: dir });
      continue;
    }
    if (recursive) for (let i = 1; i < parts.length; i++) {
      const dir = [prefix, ...parts.slice(0, i)].filter(Boolean).join('/');
      out.set(dir, { type: 'directory', oid: createHash('sha1').update(dir).digest('hex'), size: 0, path: dir });
    }
    out.set(p, { type: 'file', oid: f.oid, size: f.data.length, path: p, ...(f.lfs && { lfs: f.lfs }) });
  }
  return [...out.values()].sort((a, b) => a.path.localeCompare(b.path));
}

function notFound(res, code) {
  res.writeHead(404, { 'Content-Type': 'application/json', 'X-Error-Code': code });
  res.end(JSON.stringify({ error: code }));
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  console.log(JSON.stringify({ method: req.method, url: req.url, range: req.headers.range ?? null }));
  if (process.env.HUB_TOKEN && req.headers.authorization !== `Bearer ${process.env.HUB_TOKEN}`) {
    res.writeHead(401, { 'Content-Type': 'application/json', 'X-Error-Code': 'GatedRepo' });
    res.end(JSON.stringify({ error: 'Access to this repo is restricted: authentication required' }));
    return;
  }
  const okRev = (rev) => rev === 'main' || rev === commit;
  let m = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/([^/]+)$/.exec(url.pathname);
  if (m) {
    if (m[1] !== repo) return notFound(res, 'RepoNotFound');
    if (!okRev(decodeURIComponent(m[2]))) return notFound(res, 'RevisionNotFound');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({
      _id: 'test', id: repo, sha: commit, private: false, gated: false, downloads: 0, likes: 0,
      lastModified: '2026-12-01T00:00:00.000Z', pipeline_tag: 'robotics',
    }));
    return;
  }
  m = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)(?:\/(.*))?$/.exec(url.pathname);
  if (m) {
    if (m[1] !== repo) return notFound(res, 'RepoNotFound');
    if (!okRev(m[2])) return notFound(res, 'RevisionNotFound');
    const entries = treeEntries(m[3] ?? '', url.searchParams.get('recursive') === 'true');
    if (m[3] && entries.length === 0) return notFound(res, 'EntryNotFound');
    const cursor = Number(url.searchParams.get('cursor') ?? 0);
    const headers = { 'Content-Type': 'application/json' };
    if (cursor + PAGE < entries.length) {
      const next = new URL(url);
      next.host = req.headers.host;
      next.searchParams.set('cursor', String(cursor + PAGE));
      headers.Link = `<${next.href}>; rel="next"`;
    }
    res.writeHead(200, headers);
    res.end(JSON.stringify(entries.slice(cursor, cursor + PAGE)));
    return;
  }
  m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
  if (m) {
    if (m[1] !== repo) return notFound(res, 'RepoNotFound');
    if (!okRev(decodeURIComponent(m[2]))) return notFound(res, 'RevisionNotFound');
    const p = decodeURIComponent(m[3]);
    const f = files.get(p);
    if (!f) return notFound(res, 'EntryNotFound');
    let data = f.data;
    if (p === corrupt) {
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0xff;
    }
    const headers = {
      'Accept-Ranges': 'bytes', ETag: `"${f.oid}"`, 'X-Repo-Commit': commit, 'Content-Type': 'application/octet-stream',
      ...(f.lfs && { 'X-Linked-ETag': `"${f.lfs.oid}"`, 'X-Linked-Size': String(data.length) }),
    };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0, end = data.length - 1, status = 200;
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), data.length - 1) : data.length - 1;
      if (start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${data.length}` });
        res.end();
        return;
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${data.length}`;
    }
    headers['Content-Length'] = String(end - start + 1);
    res.writeHead(status, headers);
    const body = data.subarray(start, end + 1);
    if (p === cutPath && !cutDone && body.length > Number(cutBytes)) {
      cutDone = true;
      res.write(body.subarray(0, Number(cutBytes)), () => res.destroy());
      return;
    }
    res.end(body);
    return;
  }
  notFound(res, 'NotFound');
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
