// Image → model input, as the study file says: resize (shorter side, then centre crop, or straight
// to size), channel order, scaling, mean/std. Decoding and resizing run in libvips's thread pool.
import sharp from 'sharp';
import { inputSize, type ModelInput } from '@legible/studies';

sharp.cache(false);

export interface Preprocessed {
  /** CHW float32, normalised. */
  data: Float32Array;
}

export function channelCount(input: ModelInput): number {
  return input.channels === 'gray' ? 1 : 3;
}

/** Decode and resize an image to the model's size: uint8, HWC, 1 or 3 channels (RGB order). */
export async function decodeForModel(bytes: Buffer, input: ModelInput): Promise<Buffer> {
  const [height, width] = inputSize(input);
  const channels = channelCount(input);
  let img = sharp(bytes, { failOn: 'error', limitInputPixels: 1 << 28 });
  img = channels === 1 ? img.toColourspace('b-w') : img.toColourspace('srgb');
  img = img.flatten({ background: '#ffffff' });
  if (input.resize) {
    // torchvision's Resize(resize) + CenterCrop(size): shorter side to `resize`, keep aspect.
    const meta = await sharp(bytes).metadata();
    // Stored orientation, as PIL (and so torchvision) reads it: EXIF rotation is not applied.
    const w0 = meta.width ?? width;
    const h0 = meta.height ?? height;
    const scale = input.resize / Math.min(w0, h0);
    const rw = Math.max(width, Math.round(w0 * scale));
    const rh = Math.max(height, Math.round(h0 * scale));
    img = img.resize(rw, rh, { fit: 'fill' }).extract({ left: Math.floor((rw - width) / 2), top: Math.floor((rh - height) / 2), width, height });
  } else {
    img = img.resize(width, height, { fit: 'fill' });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  if (info.channels === channels) return data;
  // libvips may keep an alpha or a single band: reduce or expand to what the model wants.
  const out = Buffer.alloc(width * height * channels);
  for (let p = 0; p < width * height; p++) {
    for (let c = 0; c < channels; c++) out[p * channels + c] = data[p * info.channels + Math.min(c, info.channels - 1)];
  }
  return out;
}

/** uint8 HWC → normalised float32 CHW, written into `out` at `offset`. */
export function normalise(pixels: Uint8Array, input: ModelInput, out: Float32Array, offset = 0): void {
  const [height, width] = inputSize(input);
  const channels = channelCount(input);
  const plane = width * height;
  const scale = input.range / 255;
  for (let c = 0; c < channels; c++) {
    const src = input.channels === 'bgr' ? channels - 1 - c : c;
    const mean = input.mean[input.mean.length === 1 ? 0 : c];
    const std = input.std[input.std.length === 1 ? 0 : c];
    const base = offset + c * plane;
    for (let p = 0; p < plane; p++) out[base + p] = (pixels[p * channels + src] * scale - mean) / std;
  }
}
