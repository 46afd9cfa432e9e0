// Random transformations applied to the image at every optimisation step (jitter, scale, rotation),
// as bilinear resampling precomputed here and applied in the graph by GatherElements: each output
// pixel reads 4 source pixels with 4 weights. The source wraps around at the borders, which suits
// a Fourier-parameterised image (it is periodic) and never pads with a constant.
import type { Rng } from '@legible/studies/random';

export interface Augmentation {
  /** Largest shift, as a fraction of the image side (default 1/16). */
  jitter: number;
  /** Range of the zoom factor (default [0.9, 1.1]). */
  scale: [number, number];
  /** Largest rotation in degrees (default 10). */
  rotate: number;
}

export const DEFAULT_AUGMENTATION: Augmentation = { jitter: 1 / 16, scale: [0.9, 1.1], rotate: 10 };
export const NO_AUGMENTATION: Augmentation = { jitter: 0, scale: [1, 1], rotate: 0 };

export interface Warp {
  dy: number;
  dx: number;
  scale: number;
  /** Radians. */
  angle: number;
}

export function sampleWarp(r: Rng, a: Augmentation): Warp {
  const u = () => 2 * r.float() - 1;
  return {
    dy: u() * a.jitter,
    dx: u() * a.jitter,
    scale: a.scale[0] + (a.scale[1] - a.scale[0]) * r.float(),
    angle: (u() * a.rotate * Math.PI) / 180,
  };
}

/** Whether int64 values are stored low word first (then an index is written as two int32 words, no BigInt). */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;
const wrap = (a: number, n: number) => ((a % n) + n) % n;

/**
 * Writes the 4 source indices (into a flattened srcH × srcW plane) and bilinear weights of every
 * pixel of a dstH × dstW output: indices[k · dstH·dstW + p], weights likewise, k = neighbour.
 * The output shows the source zoomed by `scale`, rotated by `angle` and shifted by (dy, dx) image
 * sides, about the centre; the whole source maps onto the whole output when the warp is identity.
 */
export function warpSampling(w: Warp, srcH: number, srcW: number, dstH: number, dstW: number, indices: BigInt64Array, weights: Float32Array, offset = 0): void {
  const hw = dstH * dstW;
  if (srcH * srcW > 2 ** 31) throw new Error(`warpSampling: a ${srcH} × ${srcW} source has more pixels than 32-bit indices reach`);
  // Indices are below 2³¹: written as int32 word pairs (low word, 0), creating a BigInt per index
  // took most of a visualization step's time outside the model (0.7 s per step at batch 8, 224 px).
  const words = LITTLE_ENDIAN ? new Int32Array(indices.buffer, indices.byteOffset, indices.length * 2) : null;
  const put = (q: number, v: number) => {
    if (words) {
      words[2 * q] = v;
      words[2 * q + 1] = 0;
    } else indices[q] = BigInt(v);
  };
  const cos = Math.cos(w.angle);
  const sin = Math.sin(w.angle);
  for (let i = 0; i < dstH; i++)
    for (let j = 0; j < dstW; j++) {
      // Output pixel centre in image units about the centre, mapped back to the source.
      const yn = (i + 0.5) / dstH - 0.5;
      const xn = (j + 0.5) / dstW - 0.5;
      const ys = (cos * yn + sin * xn) / w.scale - w.dy;
      const xs = (-sin * yn + cos * xn) / w.scale - w.dx;
      const u = (ys + 0.5) * srcH - 0.5;
      const v = (xs + 0.5) * srcW - 0.5;
      const u0 = Math.floor(u);
      const v0 = Math.floor(v);
      const fu = u - u0;
      const fv = v - v0;
      const r0 = wrap(u0, srcH) * srcW;
      const r1 = wrap(u0 + 1, srcH) * srcW;
      const c0 = wrap(v0, srcW);
      const c1 = wrap(v0 + 1, srcW);
      const p = offset + i * dstW + j;
      put(p, r0 + c0);
      put(p + hw, r0 + c1);
      put(p + 2 * hw, r1 + c0);
      put(p + 3 * hw, r1 + c1);
      weights[p] = (1 - fu) * (1 - fv);
      weights[p + hw] = (1 - fu) * fv;
      weights[p + 2 * hw] = fu * (1 - fv);
      weights[p + 3 * hw] = fu * fv;
    }
}
