// Human accuracy against the machine observer's prediction (`legible predict`), per feature:
// Spearman's ρ with a percentile bootstrap CI over features.
import { Rng, type MachineScore } from '@legible/studies';
import type { UnitAccuracy } from './descriptive.ts';

/** What `legible predict` writes into each manifest feature (studies' ManifestFeature.machine_score). */
export type { MachineScore } from '@legible/studies';

export interface MachineComparison {
  /** One row per feature with both a human accuracy and a machine score. */
  features: { feature: string; trials: number; correct: number; human: number; machine: number; lo: number; hi: number }[];
  rho: number;
  /** 95% percentile bootstrap CI over features (NaN where too few features). */
  ci: [number, number];
  boot: number;
  observer: string;
  weakProxy: boolean;
  /** Features with human data but no machine score (e.g. the manifest was rebuilt after predict). */
  unscored: string[];
}

/** Ranks 1..n, ties sharing their average rank. */
export function averageRanks(values: ArrayLike<number>): Float64Array {
  const n = values.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const ranks = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && values[order[j + 1]] === values[order[i]]) j++;
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[order[k]] = r;
    i = j + 1;
  }
  return ranks;
}

function pearson(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const n = x.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += x[i];
    my += y[i];
  }
  mx /= n;
  my /= n;
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) ** 2;
    syy += (y[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** Spearman's rank correlation (Pearson's r of average ranks; NaN where either side is constant). */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  if (x.length !== y.length) throw new Error('spearman: x and y differ in length');
  return pearson(averageRanks(x), averageRanks(y));
}

/** ρ and its percentile bootstrap CI, resampling pairs (features). Resamples where a side is constant are skipped. */
export function spearmanBootstrap(x: number[], y: number[], boot: number, rng: Rng, level = 0.95): { rho: number; ci: [number, number] } {
  const rho = spearman(x, y);
  const n = x.length;
  const draws: number[] = [];
  const bx = new Float64Array(n);
  const by = new Float64Array(n);
  for (let b = 0; b < boot && n >= 3; b++) {
    for (let i = 0; i < n; i++) {
      const k = rng.int(n);
      bx[i] = x[k];
      by[i] = y[k];
    }
    const r = spearman(bx, by);
    if (Number.isFinite(r)) draws.push(r);
  }
  if (draws.length < boot / 2) return { rho, ci: [NaN, NaN] };
  draws.sort((a, b) => a - b);
  const q = (p: number) => draws[Math.min(draws.length - 1, Math.max(0, Math.floor(p * draws.length)))];
  return { rho, ci: [q((1 - level) / 2), q(1 - (1 - level) / 2)] };
}

/** Pools each feature's main trials over the cells it appears in and pairs it with its machine score. */
export function compareWithMachine(units: UnitAccuracy[], scores: Map<string, MachineScore>, opts: { boot?: number; seed?: number } = {}): MachineComparison | null {
  const pooled = new Map<string, { k: number; n: number }>();
  for (const u of units) {
    const f = pooled.get(u.unit) ?? { k: 0, n: 0 };
    f.k += u.correct;
    f.n += u.trials;
    pooled.set(u.unit, f);
  }
  const features: MachineComparison['features'] = [];
  const unscored: string[] = [];
  for (const [feature, f] of [...pooled].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const s = scores.get(feature);
    if (!s) unscored.push(feature);
    else features.push({ feature, trials: f.n, correct: f.k, human: f.k / f.n, machine: s.p, lo: s.lo, hi: s.hi });
  }
  if (features.length === 0) return null;
  const any = scores.get(features[0].feature)!;
  const boot = opts.boot ?? 2000;
  const { rho, ci } = spearmanBootstrap(
    features.map((f) => f.machine),
    features.map((f) => f.human),
    boot,
    new Rng(opts.seed ?? 1),
  );
  return { features, rho, ci, boot, observer: any.observer, weakProxy: any.weak_proxy, unscored };
}
