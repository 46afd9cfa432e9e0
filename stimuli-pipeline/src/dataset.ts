// Image folders: listing (flat or one sub-folder per class), the reference/query split, and
// writing the demo's folder from a bundled public data set.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, relative, sep } from 'node:path';
import sharp from 'sharp';
import { LegibleError, seedFrom, type Study } from '@legible/studies';

export const IMAGE_EXTENSIONS = new Set(['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif']);

export interface ImageEntry {
  /** Path relative to the folder, with "/" separators: the image's id everywhere. */
  id: string;
  path: string;
  bytes: number;
}

export interface Listing {
  images: ImageEntry[];
  /** Files that are not images we can read, by extension. */
  skipped: { path: string; reason: string }[];
}

/** Every image below `root`, sorted by id. Hidden files and folders are ignored. */
export function listImages(root: string, limit?: number): Listing {
  if (!existsSync(root) || !statSync(root).isDirectory()) {
    throw new LegibleError(`image folder not found: ${root}\n  Set dataset.images in the study file to a folder of images (flat, or one sub-folder per class).`);
  }
  const images: ImageEntry[] = [];
  const skipped: { path: string; reason: string }[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      const st = statSync(path);
      const id = relative(root, path).split(sep).join('/');
      if (st.isDirectory()) walk(path);
      else if (IMAGE_EXTENSIONS.has(extension(name))) images.push({ id, path, bytes: st.size });
      else skipped.push({ path: id, reason: `unsupported file type "${extension(name) || name}"` });
    }
  };
  walk(root);
  images.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return { images: limit ? images.slice(0, limit) : images, skipped };
}

function extension(name: string): string {
  const dot = name.lastIndexOf('.');
  return dot > 0 ? name.slice(dot).toLowerCase() : '';
}

export type Split = 'reference' | 'query' | 'unused';

/**
 * Which split an image belongs to. Decided per image from a hash of its id and the seed, so adding
 * or removing images never moves the others between splits.
 */
export function splitOf(id: string, split: Study['dataset']['split']): Split {
  const u = seedFrom('split', split.seed, id) / 4294967296;
  if (u < split.reference) return 'reference';
  if (u < split.reference + split.query) return 'query';
  return 'unused';
}

/** sha256 over the sorted (id, content hash) pairs: identifies the data set's exact contents. */
export function datasetHash(contentHashes: Map<string, string>): string {
  const h = createHash('sha256');
  for (const id of [...contentHashes.keys()].sort()) h.update(`${id}\t${contentHashes.get(id)}\n`);
  return h.digest('hex');
}

// ─── Bundled public data sets (the demo) ─────────────────────────────────────────────────────
export const FASHION_MNIST_CLASSES = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle-boot'];

/**
 * Write `perClass` Fashion-MNIST images of each class as PNG files into `folder/<class>/`,
 * taken from the test part of the data (images 6000.. of each class, which the demo model
 * never trained on). Written to a temporary folder first, so an interrupted run leaves nothing.
 */
export async function writeFashionMnist(folder: string, perClass: number, log: (s: string) => void = () => {}): Promise<void> {
  const { readFashionMnist } = await import('../demo-model/fashion-mnist.ts');
  const data = readFashionMnist();
  if (perClass > 1000) throw new LegibleError(`dataset.generate.per_class: at most 1000 Fashion-MNIST test images per class, got ${perClass}`);
  const tmp = `${folder}.partial-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  log(`writing ${perClass * 10} Fashion-MNIST test images to ${folder}`);
  const written = new Array(10).fill(0);
  for (let i = 0; i < data.test.length; i++) {
    const { label, pixels } = data.test[i];
    if (written[label] >= perClass) continue;
    const file = join(tmp, FASHION_MNIST_CLASSES[label], `${String(written[label]).padStart(4, '0')}.png`);
    mkdirSync(dirname(file), { recursive: true });
    await sharp(Buffer.from(pixels), { raw: { width: 28, height: 28, channels: 1 } }).png({ compressionLevel: 9 }).toFile(file);
    written[label]++;
  }
  mkdirSync(dirname(folder), { recursive: true });
  rmSync(folder, { recursive: true, force: true });
  renameSync(tmp, folder);
}
