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
import type { Ladder } from './train/disentangler.ts';

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
