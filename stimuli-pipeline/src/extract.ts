// Activations: stream images through the model in batches, with the next batch decoding while the
// current one runs, and reduce each tapped layer to one value per channel and image
// (spatial mean, the field's convention, and spatial max).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Tensor } from 'onnxruntime-node';
import { inputSize, LegibleError, type Layer, type ModelInput } from '@legible/studies';
import type { ImageEntry } from './dataset.ts';
import { addTaps } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { progress as makeProgress } from './progress.ts';
import { fixedBatch, openSession, type Device } from './runtime.ts';

export interface LayerActivations {
  layer: string;
  tensor: string;
  /** Shape of one image's activation, e.g. [C, H, W]. */
  shape: number[];
  channels: number;
  /** Row-major [image][channel]. */
  mean: Float32Array;
  max: Float32Array;
}

export interface Activations {
  /** Ids of the images that decoded, in the order of the rows. */
  ids: string[];
  layers: LayerActivations[];
  /** Content sha256 of every image read, by id. */
  hashes: Map<string, string>;
  skipped: { path: string; reason: string }[];
  device: string;
}

export interface ExtractOptions {
  model: Uint8Array;
  input: ModelInput;
  layers: Layer[];
  images: ImageEntry[];
  batchSize?: number;
  device?: Device;
  log?: (s: string) => void;
  quiet?: boolean;
}

interface Decoded {
  id: string;
  pixels: Buffer;
}

export async function extractActivations(opts: ExtractOptions): Promise<Activations> {
  const tapped = addTaps(opts.model, opts.layers.map((l) => l.tensor));
  const { session, device } = await openSession(tapped, { device: opts.device, log: opts.log });
  const batchSize = fixedBatch(session) ?? opts.batchSize ?? 32;
  const [height, width] = inputSize(opts.input);
  const channels = channelCount(opts.input);
  const inputName = session.inputNames[0];
  const ort = await import('onnxruntime-node');

  const hashes = new Map<string, string>();
  const skipped: { path: string; reason: string }[] = [];
  const ids: string[] = [];
  const collected = opts.layers.map(() => ({ mean: [] as Float32Array[], max: [] as Float32Array[], shape: [] as number[] }));

  const decodeBatch = async (batch: ImageEntry[]): Promise<Decoded[]> => {
    const results = await Promise.all(
      batch.map(async (img): Promise<Decoded | null> => {
        try {
          const bytes = await readFile(img.path);
          hashes.set(img.id, createHash('sha256').update(bytes).digest('hex'));
          return { id: img.id, pixels: await decodeForModel(bytes, opts.input) };
        } catch (err) {
          skipped.push({ path: img.id, reason: `unreadable image: ${(err as Error).message.split('\n')[0]}` });
          return null;
        }
      }),
    );
    return results.filter((r): r is Decoded => r !== null);
  };

  const batches: ImageEntry[][] = [];
  for (let i = 0; i < opts.images.length; i += batchSize) batches.push(opts.images.slice(i, i + batchSize));
  const bar = makeProgress('activations', opts.images.length, { unit: 'img', quiet: opts.quiet });
  let next = batches.length ? decodeBatch(batches[0]) : null;
  for (let b = 0; b < batches.length; b++) {
    const decoded = await next!;
    // Decode the next batch while this one runs.
    next = b + 1 < batches.length ? decodeBatch(batches[b + 1]) : null;
    if (decoded.length === 0) {
      bar.tick(batches[b].length);
      continue;
    }
    const n = fixedBatch(session) ?? decoded.length;
    const data = new Float32Array(n * channels * height * width);
    decoded.forEach((d, i) => normalise(d.pixels, opts.input, data, i * channels * height * width));
    const feeds = { [inputName]: new ort.Tensor('float32', data, [n, channels, height, width]) };
    const outputs = await session.run(feeds, opts.layers.map((l) => l.tensor));
    opts.layers.forEach((layer, li) => {
      const t = outputs[layer.tensor] as Tensor;
      const reduced = reduceSpatial(t, decoded.length, layer);
      collected[li].mean.push(reduced.mean);
      collected[li].max.push(reduced.max);
      collected[li].shape = reduced.shape;
    });
    for (const d of decoded) ids.push(d.id);
    bar.tick(batches[b].length);
  }
  bar.done(skipped.length ? `${skipped.length} skipped` : undefined);
  await session.release();

  const layers = opts.layers.map((layer, li): LayerActivations => {
    const shape = collected[li].shape;
    const c = shape[0] ?? 0;
    return { layer: layer.name, tensor: layer.tensor, shape, channels: c, mean: concat(collected[li].mean), max: concat(collected[li].max) };
  });
  return { ids, layers, hashes, skipped, device };
}

/** [N, C, ...spatial] → per image and channel: mean and max over the spatial positions. */
function reduceSpatial(t: Tensor, images: number, layer: Layer): { mean: Float32Array; max: Float32Array; shape: number[] } {
  const dims = t.dims.map(Number);
  if (dims.length < 2) throw new LegibleError(`layer "${layer.name}" (tensor ${layer.tensor}) has shape [${dims}]: expected [batch, channels, …]`);
  const c = dims[1];
  const spatial = dims.slice(2).reduce((a, b) => a * b, 1);
  const data = t.data as Float32Array;
  const mean = new Float32Array(images * c);
  const max = new Float32Array(images * c);
  for (let i = 0; i < images; i++) {
    for (let k = 0; k < c; k++) {
      const base = (i * c + k) * spatial;
      let s = 0;
      let m = -Infinity;
      for (let p = 0; p < spatial; p++) {
        const v = data[base + p];
        s += v;
        if (v > m) m = v;
      }
      if (!Number.isFinite(s) || !Number.isFinite(m)) {
        throw new LegibleError(
          `layer "${layer.name}" (tensor ${layer.tensor}) produced NaN or Inf activations. Check model.input (mean/std, range) and the model itself.`,
        );
      }
      mean[i * c + k] = s / spatial;
      max[i * c + k] = m;
    }
  }
  return { mean, max, shape: dims.slice(1) };
}

function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
