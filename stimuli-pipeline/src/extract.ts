// Activations: stream images through the model in batches into the activation store. The next
// batch decodes (sharp, on libvips's threads) while the current one runs in onnxruntime, so
// neither waits; each tapped layer is reduced in the graph to one value per channel and image
// (spatial mean, the field's convention, and spatial max).
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { inputSize, LegibleError, type Layer, type ModelInput } from '@legible/studies';
import { modelLayers, type StudyLayer } from './layout.ts';
import type { ImageEntry } from './dataset.ts';
import { addReducedTaps, reducedName, tapsOnly } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { progress as makeProgress } from './progress.ts';
import { fixedBatch, openSession, type Device } from './runtime.ts';
import type { ActivationStore, ShardSlice, StoreLayer } from './store.ts';

export interface ExtractOptions {
  model: Uint8Array;
  input: ModelInput;
  layers: StudyLayer[];
  /** The store's image list, in order (shard i holds images [i·S, (i+1)·S)). */
  images: ImageEntry[];
  store: ActivationStore;
  /** Only the shards of this slice (`--shard k/n`). */
  slice?: ShardSlice;
  batchSize?: number;
  device?: Device;
  /** onnxruntime intra-op threads (default: one per core). */
  threads?: number;
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
  const [height, width] = inputSize(opts.input);
  const channels = channelCount(opts.input);
  const plane = channels * height * width;
  const ort = await import('onnxruntime-node');

  // The layers' shapes, from one run on a blank image; then a model that reduces each tap to its
  // spatial mean and max in the graph, so only [images × channels] leaves onnxruntime.
  // Each layer's layout (channel and position axes) from the graph and the study.
  const resolved = await modelLayers(opts.model, opts.layers);
  const probe = await openSession(tapsOnly(opts.model, opts.layers.map((l) => l.tensor)), { device: 'cpu', threads: opts.threads });
  let layers: StoreLayer[];
  try {
    checkInput(probe.session, opts.input);
    const n = fixedBatch(probe.session) ?? 1;
    const out = await probe.session.run({ [probe.session.inputNames[0]]: new ort.Tensor('float32', new Float32Array(n * plane), [n, channels, height, width]) });
    layers = resolved.map((l) => {
      const shape = (out[l.tensor] as Tensor).dims.map(Number).slice(1);
      if (shape.join() !== l.shape.join()) throw new LegibleError(`layer "${l.name}" (tensor ${l.tensor}) has shape [${shape}] per image when run, not [${l.shape}] as inferred from the graph`);
      return { name: l.name, tensor: l.tensor, channels: l.channels, shape };
    });
  } finally {
    await probe.session.release();
  }
  if (!store.header.layers) store.setLayers(layers);
  const reduced = addReducedTaps(
    opts.model,
    resolved.map((l) => ({ tensor: l.tensor, rank: l.shape.length + 1, layout: { channelsLast: l.layout !== 'nchw', skip: l.classTokens } })),
  );
  // No spinning: while onnxruntime runs a batch, the next one decodes on libvips's threads, and
  // threads spinning between operators would take the cores the decoding needs.
  const { session, device } = await openSession(reduced, { device: opts.device, threads: opts.threads, spinning: false, log: opts.log });
  try {
    const batchSize = fixedBatch(session) ?? opts.batchSize ?? 32;
    const inputName = session.inputNames[0];
    const outputNames = layers.flatMap((l) => [reducedName(l.tensor, 'mean'), reducedName(l.tensor, 'max')]);

    // Work items: batches within shards, in shard order.
    const work: { shard: number; images: ImageEntry[]; last: boolean }[] = [];
    for (const shard of todo) {
      const [start, end] = store.range(shard);
      for (let i = start; i < end; i += batchSize) work.push({ shard, images: opts.images.slice(i, Math.min(i + batchSize, end)), last: i + batchSize >= end });
    }
    const total = work.reduce((n, w) => n + w.images.length, 0);
    const bar = makeProgress('activations', total, { unit: 'img', quiet: opts.quiet });

    const decode = async (batch: ImageEntry[]) => {
      const results = await Promise.all(
        batch.map(async (img): Promise<{ decoded?: Decoded; hash?: string; skipped?: { path: string; reason: string } }> => {
          let hash: string | undefined;
          try {
            const bytes = await readFile(img.path);
            hash = createHash('sha256').update(bytes).digest('hex');
            return { decoded: { id: img.id, pixels: await decodeForModel(bytes, opts.input) }, hash };
          } catch (err) {
            return { hash, skipped: { path: img.id, reason: `unreadable image: ${(err as Error).message.split('\n')[0]}` } };
          }
        }),
      );
      // Hashes and skipped files in image order, not in the order the reads finished: a shard's
      // .json is then the same bytes from one run to the next.
      const hashes: Record<string, string> = {};
      batch.forEach((img, i) => {
        if (results[i].hash !== undefined) hashes[img.id] = results[i].hash!;
      });
      return {
        decoded: results.flatMap((r) => (r.decoded ? [r.decoded] : [])),
        hashes,
        skipped: results.flatMap((r) => (r.skipped ? [r.skipped] : [])),
      };
    };

    // One input buffer for every batch (a fresh 10 MB array per batch of 16 costs page faults).
    let input = new Float32Array(0);
    let acc = newShardAccumulator(layers.length);
    let next = decode(work[0].images);
    let written = 0;
    for (let w = 0; w < work.length; w++) {
      const { decoded, hashes, skipped } = await next;
      if (w + 1 < work.length) next = decode(work[w + 1].images);
      Object.assign(acc.hashes, hashes);
      acc.skipped.push(...skipped);
      if (decoded.length) {
        const n = fixedBatch(session) ?? decoded.length;
        if (input.length < n * plane) input = new Float32Array(n * plane);
        const data = input.subarray(0, n * plane);
        decoded.forEach((d, i) => normalise(d.pixels, opts.input, data, i * plane));
        // A fixed-batch model's unused rows are zeros, as before (their outputs are not kept).
        data.fill(0, decoded.length * plane);
        const outputs = await session.run({ [inputName]: new ort.Tensor('float32', data, [n, channels, height, width]) }, outputNames);
        layers.forEach((l, li) => {
          const rows = decoded.length * l.channels;
          const mean = (outputs[reducedName(l.tensor, 'mean')] as Tensor).data as Float32Array;
          const max = (outputs[reducedName(l.tensor, 'max')] as Tensor).data as Float32Array;
          checkFinite(mean, rows, l);
          checkFinite(max, rows, l);
          acc.mean[li].push(mean.slice(0, rows));
          acc.max[li].push(max.slice(0, rows));
        });
        acc.ids.push(...decoded.map((d) => d.id));
      }
      bar.tick(work[w].images.length);
      if (work[w].last) {
        store.write({ index: work[w].shard, ids: acc.ids, skipped: acc.skipped, hashes: acc.hashes, mean: acc.mean.map(concat), max: acc.max.map(concat) });
        written++;
        opts.onShard?.(work[w].shard);
        acc = newShardAccumulator(layers.length);
      }
    }
    bar.done();
    return { device, shards: written };
  } finally {
    await session.release();
  }
}

function checkFinite(values: Float32Array, count: number, layer: Layer): void {
  for (let i = 0; i < count; i++) {
    if (!Number.isFinite(values[i])) {
      throw new LegibleError(`layer "${layer.name}" (tensor ${layer.tensor}) produced NaN or Inf activations. Check model.input (mean/std, range) and the model itself.`);
    }
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

/** The parts one after another in one array. */
export function concat(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
