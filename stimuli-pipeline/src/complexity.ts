// Feature complexity (issue 15): how many nonlinear layers it takes to compute a layer's features.
// A ladder of disentangler nets (train/disentangler.ts) of depths l₁ < l₂ < … reproduces the
// layer's maps f; on the held-out images:
//
//   per layer    ρ(l) = Var[c(l)] / Var[f],   c(l) = Φ(l) − Φ(previous depth), Φ(before the first) = 0,
//                Var summed over channels, over images and positions (the paper's significance curve);
//                explained(l) = 1 − Σ‖f − Φ(l)‖² / Σ‖f − mean‖²
//   per feature  the same for the feature's map: a channel, or a dictionary direction's projection
//                d·f at each position (predicted by d·Φ(l)); its complexity order is the smallest
//                depth whose explained share reaches `threshold` (default 0.9) of what the deepest
//                net explains. A feature the deepest net explains less than `minShare` of (default
//                0.1) has no order: what it computes is not reproduced at all (noise, or more than
//                the ladder can learn from these images).
import { readFile } from 'node:fs/promises';
import type { Tensor } from 'onnxruntime-node';
import { inputSize, LegibleError, modelInput, rng, seedFrom, type Study } from '@legible/studies';
import type { ImageEntry } from './dataset.ts';
import { featureId } from './exemplars.ts';
import type { FeatureSet } from './features.ts';
import { modelLayers } from './layout.ts';
import { addTaps } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { fixedBatch, openSession, type Device } from './runtime.ts';
import { trainLadder, type Ladder } from './train/disentangler.ts';

export interface ComplexityFeature {
  id: string;
  /** A channel of the layer … */
  channel?: number;
  /** … or a direction over its channels (length C). */
  direction?: ArrayLike<number>;
}

export interface ComplexityOptions {
  threshold?: number;
  minShare?: number;
}

export interface LayerComplexity {
  depths: number[];
  /** Standardised MSE per depth on the held-out and the training images. */
  heldOutLoss: number[];
  trainLoss: number[];
  /** Share of the layer's variance each depth explains on the held-out images. */
  explained: number[];
  /** ρ per order (one per depth). */
  rho: number[];
  /** Images the disentanglers trained on, and held out. */
  images: { train: number; heldOut: number };
}

export interface FeatureComplexityResult {
  id: string;
  explained: number[];
  rho: number[];
  /** The complexity order (a depth of the ladder), or null with the reason. */
  order: number | null;
  reason?: string;
}

class Moments {
  // Σx and Σx² in double, per slot.
  readonly s: Float64Array;
  readonly q: Float64Array;
  constructor(n: number) {
    this.s = new Float64Array(n);
    this.q = new Float64Array(n);
  }
  add(i: number, v: number) {
    this.s[i] += v;
    this.q[i] += v * v;
  }
  /** Σ(x − mean)² of slot i over `count` values. */
  ss(i: number, count: number): number {
    return Math.max(0, this.q[i] - (this.s[i] * this.s[i]) / count);
  }
}

/**
 * Measures ρ and explained shares on the ladder's held-out images. `x`: the images the ladder was
 * trained from ([n, Cin, H, W]), `f`: the layer's maps ([n, C, h, w]).
 */
export async function measureComplexity(
  ladder: Ladder,
  x: Float32Array,
  f: Float32Array,
  features: readonly ComplexityFeature[],
  opts: ComplexityOptions = {},
): Promise<{ layer: LayerComplexity; features: FeatureComplexityResult[] }> {
  const threshold = opts.threshold ?? 0.9;
  const minShare = opts.minShare ?? 0.1;
  const [cin, H, W] = ladder.shape.input;
  const [C, h, w] = ladder.shape.output;
  const inSize = cin * H * W;
  const plane = h * w;
  const outSize = C * plane;
  const K = ladder.rungs.length;
  const directions = features.filter((ft) => ft.direction);
  const D = directions.length;
  // Per channel (slot c) and per direction (slot j): the target, the residual at each depth, the component of each order.
  const target = new Moments(C + D);
  const resid = Array.from({ length: K }, () => new Moments(C + D));
  const comp = Array.from({ length: K }, () => new Moments(C + D));
  const held = ladder.heldOut;
  const chunk = 64;
  const xs = new Float32Array(chunk * inSize);
  const tp = new Float64Array(D);
  const pp = Array.from({ length: K }, () => new Float64Array(D));
  for (let s = 0; s < held.length; s += chunk) {
    const m = Math.min(chunk, held.length - s);
    for (let i = 0; i < m; i++) xs.set(x.subarray(held[s + i] * inSize, (held[s + i] + 1) * inSize), i * inSize);
    const preds = await ladder.predict(xs, m);
    for (let i = 0; i < m; i++) {
      const o = held[s + i] * outSize;
      for (let c = 0; c < C; c++) {
        for (let p = 0; p < plane; p++) {
          const k = c * plane + p;
          const t = f[o + k];
          target.add(c, t);
          for (let l = 0; l < K; l++) {
            const phi = preds[l][i * outSize + k];
            resid[l].add(c, t - phi);
            comp[l].add(c, phi - (l ? preds[l - 1][i * outSize + k] : 0));
          }
        }
      }
      for (let p = 0; p < plane; p++) {
        tp.fill(0);
        for (const q of pp) q.fill(0);
        directions.forEach((ft, j) => {
          const d = ft.direction!;
          let t = 0;
          for (let c = 0; c < C; c++) t += d[c] * f[o + c * plane + p];
          tp[j] = t;
          for (let l = 0; l < K; l++) {
            let v = 0;
            for (let c = 0; c < C; c++) v += d[c] * preds[l][i * outSize + c * plane + p];
            pp[l][j] = v;
          }
        });
        for (let j = 0; j < D; j++) {
          target.add(C + j, tp[j]);
          for (let l = 0; l < K; l++) {
            resid[l].add(C + j, tp[j] - pp[l][j]);
            comp[l].add(C + j, pp[l][j] - (l ? pp[l - 1][j] : 0));
          }
        }
      }
    }
  }
  const count = held.length * plane;
  const depths = ladder.rungs.map((r) => r.depth);
  // Residual sum of squares about zero (not about the residual's mean): a shifted prediction is an error.
  const sse = (l: number, slot: number) => resid[l].q[slot];
  const sum = (fn: (c: number) => number) => Array.from({ length: C }, (_, c) => fn(c)).reduce((a, b) => a + b, 0);
  const totalVar = sum((c) => target.ss(c, count));
  const layer: LayerComplexity = {
    depths,
    heldOutLoss: ladder.rungs.map((r) => r.heldOutLoss),
    trainLoss: ladder.rungs.map((r) => r.trainLoss),
    explained: depths.map((_, l) => (totalVar > 0 ? 1 - sum((c) => sse(l, c)) / totalVar : 0)),
    rho: depths.map((_, l) => (totalVar > 0 ? sum((c) => comp[l].ss(c, count)) / totalVar : 0)),
    images: { train: ladder.train.length, heldOut: held.length },
  };
  const slotOf = new Map(directions.map((ft, j) => [ft, C + j]));
  const results = features.map((ft): FeatureComplexityResult => {
    const slot = ft.direction ? slotOf.get(ft)! : ft.channel!;
    const v = target.ss(slot, count);
    if (!(v > 0)) return { id: ft.id, explained: depths.map(() => 0), rho: depths.map(() => 0), order: null, reason: 'the feature is constant on the held-out images' };
    const explained = depths.map((_, l) => 1 - sse(l, slot) / v);
    const rho = depths.map((_, l) => comp[l].ss(slot, count) / v);
    return { id: ft.id, explained, rho, ...orderOf(depths, explained, threshold, minShare) };
  });
  return { layer, features: results };
}

/** The smallest depth explaining ≥ threshold of what the deepest explains (null when the deepest explains < minShare). */
export function orderOf(depths: readonly number[], explained: readonly number[], threshold = 0.9, minShare = 0.1): { order: number | null; reason?: string } {
  const deepest = explained[explained.length - 1];
  if (!(deepest >= minShare)) {
    return { order: null, reason: `the deepest disentangler (depth ${depths[depths.length - 1]}) explains ${(100 * deepest).toFixed(1)} % of its held-out variance, under ${Math.round(100 * minShare)} %` };
  }
  const k = explained.findIndex((e) => e >= threshold * deepest);
  return { order: depths[k] };
}

// ─── A study's complexity section ──────────────────────────────────────────────────────────

export interface StudyComplexity {
  depths: number[];
  width: number;
  epochs: number;
  threshold: number;
  layers: (LayerComplexity & { layer: string; seconds: number; reliability?: number[] })[];
  /** By feature id (the study's features on the measured layers). */
  features: Map<string, FeatureComplexityResult>;
  seconds: number;
}

/**
 * The study file's `complexity:` section: for each of its layers, a ladder of disentanglers trained
 * on a seeded sample of reference-split images, then ρ per order and every study feature's explained
 * shares and complexity order. Null when the study has no such section.
 */
export async function studyComplexity(
  study: Study,
  model: Uint8Array,
  fs: FeatureSet,
  images: ImageEntry[],
  opts: { device?: Device; threads?: number; log: (s: string) => void; /** complexity.reliability's model, read by the caller. */ secondModel?: Uint8Array },
): Promise<StudyComplexity | null> {
  const cfg = study.complexity;
  if (!cfg) return null;
  const started = performance.now();
  const names = cfg.layers ?? study.model.layers.map((l) => l.name);
  const resolved = (await modelLayers(model, study.model.layers)).filter((l) => names.includes(l.name));
  for (const l of resolved) {
    if (l.layout === 'tokens' || l.spatialAxes.length !== 2) {
      throw new LegibleError(`complexity: layer "${l.name}" (tensor ${l.tensor}, layout ${l.layout}, shape [${l.shape}]) has no 2-D grid of positions; disentanglers reproduce convolutional feature maps. Leave it out of complexity.layers.`);
    }
  }
  // A seeded sample of the reference split, in id order.
  const byId = new Map(images.map((img) => [img.id, img]));
  const ref = fs.refRows.map((r) => fs.ids[r]);
  const ids = rng(seedFrom('complexity', study.seed)).sample(ref, Math.min(cfg.images, ref.length)).sort();
  if (ids.length < 10) throw new LegibleError(`complexity: the reference split holds ${ref.length} images; disentanglers need at least 10 (raise dataset.split.reference or the image count)`);
  const [H, W] = inputSize(modelInput(study));
  const cin = channelCount(modelInput(study));
  const inSize = cin * H * W;
  const n = ids.length;
  const x = new Float32Array(n * inSize);
  for (let s = 0; s < n; s += 64) {
    const chunk = ids.slice(s, s + 64);
    const decoded = await Promise.all(chunk.map(async (id) => decodeForModel(await readFile(byId.get(id)!.path), modelInput(study))));
    decoded.forEach((px, i) => normalise(px, modelInput(study), x, (s + i) * inSize));
  }
  // The layers' maps, [n, C, h, w] each (channels-last layers transposed).
  const ort = await import('onnxruntime-node');
  const maps = resolved.map((l) => new Float32Array(n * l.shape.reduce((a, b) => a * b, 1)));
  const { session } = await openSession(addTaps(model, resolved.map((l) => l.tensor)), { device: opts.device, threads: opts.threads });
  try {
    const batch = fixedBatch(session) ?? 32;
    for (let s = 0; s < n; s += batch) {
      const m = Math.min(batch, n - s);
      const xb = new Float32Array(batch * inSize);
      xb.set(x.subarray(s * inSize, (s + m) * inSize));
      const rows = fixedBatch(session) ? batch : m;
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', xb.subarray(0, rows * inSize), [rows, cin, H, W]) });
      resolved.forEach((l, li) => {
        const data = (out[l.tensor] as Tensor).data as Float32Array;
        const size = maps[li].length / n;
        if (l.layout === 'nchw') maps[li].set(data.subarray(0, m * size), s * size);
        else {
          const [h, w, c] = l.shape;
          for (let i = 0; i < m; i++) for (let p = 0; p < h * w; p++) for (let ch = 0; ch < c; ch++) maps[li][(s + i) * size + ch * h * w + p] = data[i * size + p * c + ch];
        }
      });
    }
  } finally {
    await session.release();
  }

  // The second model's layer for reliability, on the same images.
  let second: { g: Float32Array; shape: [number, number, number] } | null = null;
  if (cfg.reliability) {
    if (!opts.secondModel) throw new LegibleError('complexity.reliability: the second model was not read');
    const [sl] = await modelLayers(opts.secondModel, [{ name: 'reliability', tensor: cfg.reliability.tensor }]);
    if (sl.layout === 'tokens' || sl.spatialAxes.length !== 2) throw new LegibleError(`complexity.reliability.tensor "${cfg.reliability.tensor}" has no 2-D grid of positions (shape [${sl.shape}]): give a convolutional layer`);
    const shape: [number, number, number] = sl.layout === 'nchw' ? [sl.shape[0], sl.shape[1], sl.shape[2]] : [sl.shape[2], sl.shape[0], sl.shape[1]];
    const size = shape[0] * shape[1] * shape[2];
    const g = new Float32Array(n * size);
    const s2 = (await openSession(addTaps(opts.secondModel, [sl.tensor]), { device: opts.device, threads: opts.threads })).session;
    try {
      const batch = fixedBatch(s2) ?? 32;
      for (let s = 0; s < n; s += batch) {
        const m = Math.min(batch, n - s);
        const xb = new Float32Array(batch * inSize);
        xb.set(x.subarray(s * inSize, (s + m) * inSize));
        const rows = fixedBatch(s2) ? batch : m;
        const data = ((await s2.run({ [s2.inputNames[0]]: new ort.Tensor('float32', xb.subarray(0, rows * inSize), [rows, cin, H, W]) }))[sl.tensor] as Tensor).data as Float32Array;
        if (sl.layout === 'nchw') g.set(data.subarray(0, m * size), s * size);
        else {
          const [c2, h2, w2] = shape;
          for (let i = 0; i < m; i++) for (let p = 0; p < h2 * w2; p++) for (let ch = 0; ch < c2; ch++) g[(s + i) * size + ch * h2 * w2 + p] = data[i * size + p * c2 + ch];
        }
      }
    } finally {
      await s2.release();
    }
    second = { g, shape };
  }

  const result: StudyComplexity = { depths: [...cfg.depths], width: cfg.width, epochs: cfg.epochs, threshold: cfg.threshold, layers: [], features: new Map(), seconds: 0 };
  for (const [li, l] of resolved.entries()) {
    const t0 = performance.now();
    const grid: [number, number, number] = l.layout === 'nchw' ? [l.shape[0], l.shape[1], l.shape[2]] : [l.shape[2], l.shape[0], l.shape[1]];
    const ladder = await trainLadder(x, maps[li], n, [cin, H, W], grid, {
      depths: cfg.depths,
      width: cfg.width,
      epochs: cfg.epochs,
      seed: seedFrom('complexity', study.seed, l.name),
      device: opts.device,
      threads: opts.threads,
      log: (s) => opts.log(`complexity ${l.name}: ${s}`),
    });
    try {
      const features: ComplexityFeature[] = fs.selected
        .filter((col) => col.layer === l.name)
        .map((col) => {
          if (col.basis === 'channels') return { id: featureId(col), channel: col.index };
          const dict = fs.dictionaries.get(`${l.name}/${col.basis}`)!;
          return { id: featureId(col), direction: dict.directions.subarray(col.index * dict.channels, (col.index + 1) * dict.channels) };
        });
      const measured = await measureComplexity(ladder, x, maps[li], features, { threshold: cfg.threshold });
      const rel = second ? await reliability(ladder, x, second.g, second.shape) : undefined;
      if (rel) opts.log(`complexity ${l.name}: reliability per order (${cfg.reliability!.tensor} of ${cfg.reliability!.model}) ${rel.map((v) => v.toFixed(3)).join(' ')}`);
      const seconds = (performance.now() - t0) / 1000;
      result.layers.push({ layer: l.name, ...measured.layer, seconds, ...(rel && { reliability: rel }) });
      for (const f of measured.features) result.features.set(f.id, f);
      opts.log(`complexity ${l.name}: ρ per order ${measured.layer.depths.map((d, k) => `${d}: ${measured.layer.rho[k].toFixed(3)}`).join(', ')}; explained ${measured.layer.explained.map((e) => e.toFixed(3)).join(' ')} (${seconds.toFixed(1)} s)`);
    } finally {
      await ladder.release();
    }
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}

// ─── Reliability: does another network encode each order's component? ─────────────────────

/**
 * The paper calls a component reliable when other networks trained on the same task encode it too.
 * Per order l: the share of the component c(l) (all channels, variance-weighted) that a linear map
 * of another network's layer g predicts on the held-out images. The map (ridge regression, per
 * position: c(l)[:, p] ≈ W·g[:, p'] + b, with p' the cell of g's grid under p's centre) is fitted
 * on the ladder's training images. `g`: [n, C2, h2, w2] for the same n images as the ladder's.
 */
export async function reliability(ladder: Ladder, x: Float32Array, g: Float32Array, gShape: readonly [number, number, number], opts: { ridge?: number } = {}): Promise<number[]> {
  const [cin, H, W] = ladder.shape.input;
  const [C, h, w] = ladder.shape.output;
  const [C2, h2, w2] = gShape;
  const inSize = cin * H * W;
  const plane = h * w;
  const outSize = C * plane;
  const gSize = C2 * h2 * w2;
  const K = ladder.rungs.length;
  const D = C2 + 1; // g's channels and a constant
  const cell = Array.from({ length: plane }, (_, p) => Math.min(h2 - 1, Math.floor(((Math.floor(p / w) + 0.5) * h2) / h)) * w2 + Math.min(w2 - 1, Math.floor((((p % w) + 0.5) * w2) / w)));
  const row = new Float64Array(D);
  const fill = (img: number, p: number) => {
    for (let c = 0; c < C2; c++) row[c] = g[img * gSize + c * h2 * w2 + cell[p]];
    row[C2] = 1;
  };
  // Components of each order for a chunk of images: comps[k][i·outSize + …].
  const components = async (idx: readonly number[], s: number, m: number) => {
    const xs = new Float32Array(m * inSize);
    for (let i = 0; i < m; i++) xs.set(x.subarray(idx[s + i] * inSize, (idx[s + i] + 1) * inSize), i * inSize);
    const preds = await ladder.predict(xs, m);
    return preds.map((phi, k) => (k ? phi.map((v, j) => v - preds[k - 1][j]) : phi));
  };
  // Normal equations on the training images.
  const gtg = new Float64Array(D * D);
  const gtc = Array.from({ length: K }, () => new Float64Array(D * C));
  const chunk = 64;
  for (let s = 0; s < ladder.train.length; s += chunk) {
    const m = Math.min(chunk, ladder.train.length - s);
    const comps = await components(ladder.train, s, m);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < plane; p++) {
        fill(ladder.train[s + i], p);
        for (let a = 0; a < D; a++) for (let b = 0; b <= a; b++) gtg[a * D + b] += row[a] * row[b];
        for (let k = 0; k < K; k++) {
          const ck = comps[k];
          for (let c = 0; c < C; c++) {
            const t = ck[i * outSize + c * plane + p];
            for (let a = 0; a < D; a++) gtc[k][a * C + c] += row[a] * t;
          }
        }
      }
    }
  }
  for (let a = 0; a < D; a++) for (let b = 0; b < a; b++) gtg[b * D + a] = gtg[a * D + b];
  let trace = 0;
  for (let a = 0; a < C2; a++) trace += gtg[a * D + a];
  const lambda = (opts.ridge ?? 1e-3) * (trace / Math.max(1, C2) || 1);
  for (let a = 0; a < C2; a++) gtg[a * D + a] += lambda;
  const L = cholesky(gtg, D);
  const maps = gtc.map((rhs) => solveCholesky(L, D, rhs, C));
  // Held-out: residual and total sums of squares per order.
  const sse = new Float64Array(K);
  const sum = Array.from({ length: K }, () => new Float64Array(C));
  const sq = Array.from({ length: K }, () => new Float64Array(C));
  const held = ladder.heldOut;
  for (let s = 0; s < held.length; s += chunk) {
    const m = Math.min(chunk, held.length - s);
    const comps = await components(held, s, m);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < plane; p++) {
        fill(held[s + i], p);
        for (let k = 0; k < K; k++) {
          for (let c = 0; c < C; c++) {
            let pred = 0;
            for (let a = 0; a < D; a++) pred += row[a] * maps[k][a * C + c];
            const t = comps[k][i * outSize + c * plane + p];
            sse[k] += (t - pred) ** 2;
            sum[k][c] += t;
            sq[k][c] += t * t;
          }
        }
      }
    }
  }
  const count = held.length * plane;
  return Array.from({ length: K }, (_, k) => {
    let sst = 0;
    for (let c = 0; c < C; c++) sst += Math.max(0, sq[k][c] - (sum[k][c] * sum[k][c]) / count);
    return sst > 0 ? 1 - sse[k] / sst : 0;
  });
}

/** Lower-triangular L with A = L·Lᵀ (A symmetric positive definite, n × n, row-major). */
function cholesky(A: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i * n + j];
      for (let k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = i === j ? Math.sqrt(Math.max(s, 1e-300)) : s / L[j * n + j];
    }
  }
  return L;
}

/** X (n × m) with L·Lᵀ·X = B. */
function solveCholesky(L: Float64Array, n: number, B: Float64Array, m: number): Float64Array {
  const Y = Float64Array.from(B);
  for (let c = 0; c < m; c++) {
    for (let i = 0; i < n; i++) {
      let s = Y[i * m + c];
      for (let k = 0; k < i; k++) s -= L[i * n + k] * Y[k * m + c];
      Y[i * m + c] = s / L[i * n + i];
    }
    for (let i = n - 1; i >= 0; i--) {
      let s = Y[i * m + c];
      for (let k = i + 1; k < n; k++) s -= L[k * n + i] * Y[k * m + c];
      Y[i * m + c] = s / L[i * n + i];
    }
  }
  return Y;
}
