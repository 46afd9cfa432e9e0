// CRAFT-style patches: crops of the model-sized image, each resized back to the model's input
// size and run through the model; a layer's spatially averaged activation of each patch is one row
// of the matrix that NMF factorises. Concepts learnt this way are local parts of images.
import { readFile } from 'node:fs/promises';
import type { Tensor } from 'onnxruntime-node';
import sharp from 'sharp';
import { inputSize, LegibleError, type Layer, type ModelInput } from '@legible/studies';
import type { ImageEntry } from './dataset.ts';
import { concat } from './extract.ts';
import { modelLayers, spatialMeans } from './layout.ts';
import { tapsOnly } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { progress } from './progress.ts';
import { openSession, type Device } from './runtime.ts';

export interface PatchSpec {
  /** Patch side in pixels of the model input. */
  size: number;
  stride: number;
}

/** Top-left corners of the patches that tile an h × w image. */
export function patchGrid(height: number, width: number, patch: PatchSpec): [number, number][] {
  if (patch.size > Math.min(height, width)) {
    throw new LegibleError(`nmf patch size ${patch.size} px is larger than the model input (${height}×${width}): choose a size ≤ ${Math.min(height, width)}.`);
  }
  const starts = (extent: number) => {
    const out: number[] = [];
    for (let s = 0; s + patch.size <= extent; s += patch.stride) out.push(s);
    // Cover the far edge too.
    if (out[out.length - 1] + patch.size < extent) out.push(extent - patch.size);
    return out;
  };
  return starts(height).flatMap((y) => starts(width).map((x): [number, number] => [y, x]));
}

/** Per layer: rows (patches × channels) of spatially averaged activations of every patch of `images`. */
export async function patchActivations(opts: {
  model: Uint8Array;
  input: ModelInput;
  layers: Layer[];
  images: ImageEntry[];
  patch: PatchSpec;
  device?: Device;
  batchSize?: number;
  quiet?: boolean;
}): Promise<{ rows: number; perLayer: Float32Array[]; channels: number[] }> {
  const [height, width] = inputSize(opts.input);
  const channels = channelCount(opts.input);
  const grid = patchGrid(height, width, opts.patch);
  const resolved = await modelLayers(opts.model, opts.layers);
  const { session } = await openSession(tapsOnly(opts.model, opts.layers.map((l) => l.tensor)), { device: opts.device });
  const ort = await import('onnxruntime-node');
  const plane = channels * height * width;
  const batchImages = Math.max(1, Math.floor((opts.batchSize ?? 32) / grid.length));
  const collected: Float32Array[][] = opts.layers.map(() => []);
  const layerChannels: number[] = [];
  const bar = progress('nmf patches', opts.images.length * grid.length, { unit: 'patch', quiet: opts.quiet });
  try {
    for (let b = 0; b < opts.images.length; b += batchImages) {
      const batch = opts.images.slice(b, b + batchImages);
      const patches = (
        await Promise.all(
          batch.map(async (img) => {
            const pixels = await decodeForModel(await readFile(img.path), opts.input);
            return Promise.all(
              grid.map(([y, x]) =>
                sharp(pixels, { raw: { width, height, channels: channels as 1 | 3 } })
                  .extract({ left: x, top: y, width: opts.patch.size, height: opts.patch.size })
                  .resize(width, height, { fit: 'fill' })
                  .raw()
                  .toBuffer(),
              ),
            );
          }),
        )
      ).flat();
      const data = new Float32Array(patches.length * plane);
      patches.forEach((p, i) => normalise(p, opts.input, data, i * plane));
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', data, [patches.length, channels, height, width]) }, opts.layers.map((l) => l.tensor));
      resolved.forEach((l, li) => {
        // Each patch's activation averaged over its positions, on the layer's channel axis.
        collected[li].push(spatialMeans((out[l.tensor] as Tensor).data as Float32Array, patches.length, l));
        layerChannels[li] = l.channels;
      });
      bar.tick(patches.length);
    }
  } finally {
    await session.release();
  }
  bar.done();
  const perLayer = collected.map(concat);
  return { rows: opts.images.length * grid.length, perLayer, channels: layerChannels };
}
