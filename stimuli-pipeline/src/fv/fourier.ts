// The Fourier side of MACO (Fel et al. 2023): an image channel is the inverse real 2-D DFT of a
// spectrum whose magnitude is fixed (natural-image statistics) and whose phase is optimised.
//
//   x[h, w] = 1/(HW) Σ_u Σ_{v < W/2+1} c_v Re(M[u, v] e^{iφ[u, v]} e^{2πi(uh/H + vw/W)})
//
// with c_v = 1 for v = 0 and the Nyquist column, 2 otherwise (the half spectrum of a real image).
// As matrix products, so the graph is made of MatMul, Sin and Cos and the gradient engine needs no
// DFT rule: with A = M cos φ and B = M sin φ,
//   Yr = C_H A − S_H B,  Yi = S_H A + C_H B,  x = Yr P − Yi Q
// where C_H[h, u] = cos 2πuh/H, S_H = sin, P[v, w] = c_v cos(2πvw/W)/(HW), Q = c_v sin(…)/(HW).

export interface DftMatrices {
  H: number;
  W: number;
  /** W/2 + 1 columns of the half spectrum. */
  Wh: number;
  CH: Float32Array;
  SH: Float32Array;
  P: Float32Array;
  Q: Float32Array;
}

const halfWidth = (W: number) => Math.floor(W / 2) + 1;
const weight = (v: number, W: number) => (v === 0 || (W % 2 === 0 && v === W / 2) ? 1 : 2);

export function dftMatrices(H: number, W: number): DftMatrices {
  const Wh = halfWidth(W);
  const CH = new Float32Array(H * H);
  const SH = new Float32Array(H * H);
  for (let h = 0; h < H; h++)
    for (let u = 0; u < H; u++) {
      const a = (2 * Math.PI * ((u * h) % H)) / H;
      CH[h * H + u] = Math.cos(a);
      SH[h * H + u] = Math.sin(a);
    }
  const P = new Float32Array(Wh * W);
  const Q = new Float32Array(Wh * W);
  for (let v = 0; v < Wh; v++)
    for (let w = 0; w < W; w++) {
      const a = (2 * Math.PI * ((v * w) % W)) / W;
      P[v * W + w] = (weight(v, W) * Math.cos(a)) / (H * W);
      Q[v * W + w] = (weight(v, W) * Math.sin(a)) / (H * W);
    }
  return { H, W, Wh, CH, SH, P, Q };
}

/** Spatial frequency of bin (u, v) in cycles per image (along the longer side). */
function frequency(u: number, v: number, H: number, W: number): number {
  const fu = Math.min(u, H - u) / H;
  const fv = v / W;
  return Math.sqrt(fu * fu + fv * fv) * Math.max(H, W);
}

/**
 * The magnitude of natural images' spectra, as a power law: amplitude ∝ 1/f^decay (decay ≈ 1 for
 * photographs), the lowest frequencies capped at f = 1. [channels, H, W/2+1].
 */
export function powerLawMagnitude(H: number, W: number, channels: number, decay = 1): Float32Array {
  const Wh = halfWidth(W);
  const m = new Float32Array(channels * H * Wh);
  for (let c = 0; c < channels; c++)
    for (let u = 0; u < H; u++) for (let v = 0; v < Wh; v++) m[(c * H + u) * Wh + v] = 1 / Math.max(1, frequency(u, v, H, W)) ** decay;
  return m;
}

/**
 * Mean magnitude spectrum of images (channel planes of H × W values each, any scale), per channel:
 * MACO's magnitude, from the study's own images instead of ImageNet. [channels, H, W/2+1].
 */
export function averageMagnitude(planes: Float32Array[], H: number, W: number, channels: number): Float32Array {
  const Wh = halfWidth(W);
  const { CH, SH } = dftMatrices(H, W);
  // Row DFT over w for v < Wh, then column DFT over h: X[u, v] = Σ_h e^{−2πiuh/H} Σ_w x[h, w] e^{−2πivw/W}.
  const cosW = new Float64Array(Wh * W);
  const sinW = new Float64Array(Wh * W);
  for (let v = 0; v < Wh; v++)
    for (let w = 0; w < W; w++) {
      const a = (2 * Math.PI * ((v * w) % W)) / W;
      cosW[v * W + w] = Math.cos(a);
      sinW[v * W + w] = Math.sin(a);
    }
  const out = new Float64Array(channels * H * Wh);
  const re = new Float64Array(H * Wh);
  const im = new Float64Array(H * Wh);
  for (const img of planes) {
    for (let c = 0; c < channels; c++) {
      const base = c * H * W;
      for (let h = 0; h < H; h++)
        for (let v = 0; v < Wh; v++) {
          let r = 0;
          let i = 0;
          for (let w = 0; w < W; w++) {
            const x = img[base + h * W + w];
            r += x * cosW[v * W + w];
            i -= x * sinW[v * W + w];
          }
          re[h * Wh + v] = r;
          im[h * Wh + v] = i;
        }
      for (let u = 0; u < H; u++)
        for (let v = 0; v < Wh; v++) {
          let r = 0;
          let i = 0;
          for (let h = 0; h < H; h++) {
            const cs = CH[h * H + u];
            const sn = -SH[h * H + u];
            r += re[h * Wh + v] * cs - im[h * Wh + v] * sn;
            i += re[h * Wh + v] * sn + im[h * Wh + v] * cs;
          }
          out[(c * H + u) * Wh + v] += Math.hypot(r, i) / planes.length;
        }
    }
  }
  return Float32Array.from(out);
}

/**
 * Scales a magnitude so that images with uniformly random phases have standard deviation `std` per
 * pixel (each term of the sum is an independent cosine: variance Σ (c_v M / HW)² / 2).
 */
export function normaliseMagnitude(mag: Float32Array, H: number, W: number, channels: number, std: number): Float32Array {
  const Wh = halfWidth(W);
  const out = new Float32Array(mag.length);
  for (let c = 0; c < channels; c++) {
    let variance = 0;
    for (let u = 0; u < H; u++) for (let v = 0; v < Wh; v++) variance += (weight(v, W) * mag[(c * H + u) * Wh + v]) ** 2 / 2;
    variance /= (H * W) ** 2;
    const s = variance > 0 ? std / Math.sqrt(variance) : 0;
    for (let i = c * H * Wh; i < (c + 1) * H * Wh; i++) out[i] = mag[i] * s;
  }
  return out;
}

/** The image of one channel from magnitude and phase, in plain loops (tests compare the graph with it). */
export function inverseHalfSpectrum(mag: ArrayLike<number>, phase: ArrayLike<number>, H: number, W: number): Float64Array {
  const Wh = halfWidth(W);
  const x = new Float64Array(H * W);
  for (let h = 0; h < H; h++)
    for (let w = 0; w < W; w++) {
      let s = 0;
      for (let u = 0; u < H; u++)
        for (let v = 0; v < Wh; v++) {
          const i = u * Wh + v;
          s += weight(v, W) * mag[i] * Math.cos(phase[i] + (2 * Math.PI * u * h) / H + (2 * Math.PI * v * w) / W);
        }
      x[h * W + w] = s / (H * W);
    }
  return x;
}

/**
 * MACO's magnitude from a study's own images (uint8 HWC, `channels` 1 or 3, all H × W): each image in
 * the decorrelated colour space of `colour` (rgb = M·x, so x = M⁻¹·rgb), mean removed per channel,
 * then the mean magnitude spectrum. [channels, H, W/2+1], ready for visualizeFeatures' `magnitude`.
 */
export function imageMagnitude(images: Uint8Array[], H: number, W: number, channels: 1 | 3, colour?: Float32Array): Float32Array {
  let inv: number[] | null = null;
  if (channels === 3) {
    const m = colour ?? Float32Array.from([1, 0, 0, 0, 1, 0, 0, 0, 1]);
    const [a, b, c, d, e, f, g, h, i] = Array.from(m);
    const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
    if (Math.abs(det) < 1e-12) throw new Error('imageMagnitude: the colour matrix is singular');
    inv = [e * i - f * h, c * h - b * i, b * f - c * e, f * g - d * i, a * i - c * g, c * d - a * f, d * h - e * g, b * g - a * h, a * e - b * d].map((v) => v / det);
  }
  const planes = images.map((img) => {
    if (img.length !== H * W * channels) throw new Error(`imageMagnitude: an image holds ${img.length} values, not ${H} × ${W} × ${channels}`);
    const out = new Float32Array(channels * H * W);
    for (let p = 0; p < H * W; p++) {
      if (!inv) out[p] = img[p] / 255;
      else
        for (let k = 0; k < 3; k++) out[k * H * W + p] = (inv[k * 3] * img[p * 3] + inv[k * 3 + 1] * img[p * 3 + 1] + inv[k * 3 + 2] * img[p * 3 + 2]) / 255;
    }
    for (let k = 0; k < channels; k++) {
      let mean = 0;
      for (let p = 0; p < H * W; p++) mean += out[k * H * W + p] / (H * W);
      for (let p = 0; p < H * W; p++) out[k * H * W + p] -= mean;
    }
    return out;
  });
  return averageMagnitude(planes, H, W, channels);
}
