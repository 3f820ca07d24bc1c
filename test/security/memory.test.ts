/**
 * Issue #18 finding 2: decoding PNG/JPEG observations must not leak. sharp's toUint8Array() never freed the decoded
 * pixels (3000 requests with two 224x224 PNGs grew the server by ~900 MiB); 1000 decodes show it as ~150 MiB. The
 * long version (10,000 server requests) is `npm run bench -- soak`.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect, it } from 'vitest';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

it('RSS stays flat over 1000 PNG and JPEG decodes', () => {
  const script = `
    import sharp from 'sharp';
    import { decodeImage } from './lib/images.ts';
    const raw = { raw: { width: 224, height: 224, channels: 3 } };
    const pixels = Buffer.alloc(224 * 224 * 3).map((_, i) => (i * 7) % 251);
    const png = await sharp(pixels, raw).png().toBuffer(), jpeg = await sharp(pixels, raw).jpeg().toBuffer();
    const rss = () => { globalThis.gc(); return process.memoryUsage().rss / 2 ** 20; };
    const decode = async (n) => { for (let i = 0; i < n; i++) await decodeImage(i % 2 ? png : jpeg, 'image'); };
    await decode(200);
    const before = rss();
    await decode(1000);
    console.log(JSON.stringify({ before, after: rss() }));`;
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--input-type=module', '-e', script],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  const { before, after } = JSON.parse(r.stdout);
  // Leaking, the 1000 decodes hold 1000 x 147 KiB = 143 MiB.
  expect(after - before).toBeLessThan(40);
});
