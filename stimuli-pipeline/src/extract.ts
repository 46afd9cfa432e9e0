// Activations: stream images through the model in batches into the activation store. The next
// batch decodes (sharp, on libvips's threads) while the current one runs in onnxruntime, so
// neither waits; each tapped layer is reduced to one value per channel and image (spatial mean,
// the field's convention, and spatial max) as it comes out.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { inputSize, LegibleError, type Layer, type ModelInput } from '@legible/studies';
import type { ImageEntry } from './dataset.ts';
import { addTaps } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { progress as makeProgress } from './progress.ts';
import { fixedBatch, openSession, type Device } from './runtime.ts';
import type { ActivationStore, ShardSlice, StoreLayer } from './store.ts';

export interface ExtractOptions {
  model: Uint8Array;
  input: ModelInput;
  layers: Layer[];
  /** The store's image list, in order (shard i holds images [i·S, (i+1)·S)). */
  images: ImageEntry[];
  store: ActivationStore;
  /** Only the shards of this slice (`--shard k/n`). */
  slice?: ShardSlice;
  batchSize?: number;
  device?: Device;
  log?: (s: string) => void;
  quiet?: boolean;
  /** Called after each shard is written (tests use it to interrupt a run). */
  onShard?: (index: number) => void;
}

interface Decoded {
  id: string;
  pixels: Buffer;
}

/** Fill the store's missing shards (of the slice). Returns the device used and how many shards were written. */
export async function extractToStore(opts: ExtractOptions): Promise<{ device: string; shards: number }> {
  const { store } = opts;
  const todo = store.missing(opts.slice);
  if (todo.length === 0) return { device: 'none', shards: 0 };
  const tapped = addTaps(opts.model, opts.layers.map((l) => l.tensor));
  const { session, device } = await openSession(tapped, { device: opts.device, log: opts.log });
  try {
    checkInput(session, opts.input);
    const batchSize = fixedBatch(session) ?? opts.batchSize ?? 32;
    const [height, width] = inputSize(opts.input);
    const channels = channelCount(opts.input);
    const inputName = session.inputNames[0];
    const ort = await import('onnxruntime-node');
    const plane = channels * height * width;

    // Work items: batches within shards, in shard order.
    const work: { shard: number; images: ImageEntry[]; last: boolean }[] = [];
    for (const shard of todo) {
      const [start, end] = store.range(shard);
      for (let i = start; i < end; i += batchSize) work.push({ shard, images: opts.images.slice(i, Math.min(i + batchSize, end)), last: i + batchSize >= end });
    }
    const total = work.reduce((n, w) => n + w.images.length, 0);
    const bar = makeProgress('activations', total, { unit: 'img', quiet: opts.quiet });

    const decode = async (batch: ImageEntry[]) => {
      const hashes: Record<string, string> = {};
      const skipped: { path: string; reason: string }[] = [];
      const results = await Promise.all(
        batch.map(async (img): Promise<Decoded | null> => {
          try {
            const bytes = await readFile(img.path);
            hashes[img.id] = createHash('sha256').update(bytes).digest('hex');
            return { id: img.id, pixels: await decodeForModel(bytes, opts.input) };
          } catch (err) {
            skipped.push({ path: img.id, reason: `unreadable image: ${(err as Error).message.split('\n')[0]}` });
            return null;
          }
        }),
      );
      return { decoded: results.filter((r): r is Decoded => r !== null), hashes, skipped };
    };

    let acc = newShardAccumulator(opts.layers.length);
    let next = decode(work[0].images);
    let written = 0;
    for (let w = 0; w < work.length; w++) {
      const { decoded, hashes, skipped } = await next;
      if (w + 1 < work.length) next = decode(work[w + 1].images);
      Object.assign(acc.hashes, hashes);
      acc.skipped.push(...skipped);
      if (decoded.length) {
        const n = fixedBatch(session) ?? decoded.length;
        const data = new Float32Array(n * plane);
        decoded.forEach((d, i) => normalise(d.pixels, opts.input, data, i * plane));
        const outputs = await session.run({ [inputName]: new ort.Tensor('float32', data, [n, channels, height, width]) }, opts.layers.map((l) => l.tensor));
        const layers: StoreLayer[] = [];
        opts.layers.forEach((layer, li) => {
          const r = reduceSpatial(outputs[layer.tensor] as Tensor, decoded.length, layer);
          acc.mean[li].push(r.mean);
          acc.max[li].push(r.max);
          layers.push({ name: layer.name, tensor: layer.tensor, channels: r.shape[0], shape: r.shape });
        });
        if (!store.header.layers) store.setLayers(layers);
        acc.ids.push(...decoded.map((d) => d.id));
      }
      bar.tick(work[w].images.length);
      if (work[w].last) {
        if (!store.header.layers) store.setLayers(await probeLayers(session, opts, inputName, ort));
        store.write({ index: work[w].shard, ids: acc.ids, skipped: acc.skipped, hashes: acc.hashes, mean: acc.mean.map(concat), max: acc.max.map(concat) });
        written++;
        opts.onShard?.(work[w].shard);
        acc = newShardAccumulator(opts.layers.length);
      }
    }
    bar.done();
    return { device, shards: written };
  } finally {
    await session.release();
  }
}

function newShardAccumulator(layers: number) {
  return {
    ids: [] as string[],
    skipped: [] as { path: string; reason: string }[],
    hashes: {} as Record<string, string>,
    mean: Array.from({ length: layers }, () => [] as Float32Array[]),
    max: Array.from({ length: layers }, () => [] as Float32Array[]),
  };
}

/** Layer shapes from one run on a blank input (for a store whose first shard decoded nothing). */
async function probeLayers(session: InferenceSession, opts: ExtractOptions, inputName: string, ort: typeof import('onnxruntime-node')): Promise<StoreLayer[]> {
  const [height, width] = inputSize(opts.input);
  const channels = channelCount(opts.input);
  const out = await session.run({ [inputName]: new ort.Tensor('float32', new Float32Array(channels * height * width), [1, channels, height, width]) });
  return opts.layers.map((l) => {
    const shape = (out[l.tensor] as Tensor).dims.map(Number).slice(1);
    return { name: l.name, tensor: l.tensor, channels: shape[0], shape };
  });
}

/** The model's image input must match the study's model.input. */
export function checkInput(session: InferenceSession, input: ModelInput): void {
  const [height, width] = inputSize(input);
  const channels = channelCount(input);
  if (session.inputNames.length !== 1) {
    throw new LegibleError(`the model has ${session.inputNames.length} inputs (${session.inputNames.join(', ')}): legible taps image models with one input [batch, channels, height, width].`);
  }
  const meta = session.inputMetadata?.[0];
  if (!meta || !meta.isTensor) return;
  const shape = meta.shape;
  if (shape.length !== 4) {
    throw new LegibleError(`the model's input "${session.inputNames[0]}" has shape [${shape.join(', ')}]: legible needs an image input [batch, channels, height, width].`);
  }
  const [, c, h, w] = shape;
  if (typeof c === 'number' && c !== channels) {
    throw new LegibleError(
      `the model's input has ${c} channel${c === 1 ? '' : 's'} but model.input.channels is "${input.channels}" (${channels}): set channels to ${c === 1 ? 'gray' : 'rgb (or bgr)'} in the study file.`,
    );
  }
  if ((typeof h === 'number' && h !== height) || (typeof w === 'number' && w !== width)) {
    throw new LegibleError(`the model's input is fixed at ${h}×${w} pixels but model.input.size is ${height}×${width}: set size to [${h}, ${w}] in the study file.`);
  }
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
