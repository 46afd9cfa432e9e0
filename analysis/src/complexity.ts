// Feature complexity as a covariate (issue 15): `legible analyze --complexity` reads each feature's
// complexity from the study's stimuli manifest (`legible stimuli` with a `complexity:` section),
// adds it to the main trials as the numeric column `complexity` — the formula's default becomes
// `correct ~ <factors> * complexity + (…)` — and relates per-feature human accuracy to it by
// Spearman's rank correlation with a bootstrap interval over features.
//
//   order  the feature's complexity order: the smallest disentangler depth explaining the study's
//          threshold of what the deepest one explains (features without an order are left out)
//   share  its low-order share: what the shallowest disentangler explains of the feature's
//          variance, as a fraction of what the deepest explains (clipped to [0, 1])
import { existsSync, readFileSync } from 'node:fs';
import { LegibleError, Rng } from '@legible/studies';
import { ranks } from './stats/nonparametric.ts';
import type { Table } from './table.ts';

export const COMPLEXITY_MEASURES = ['order', 'share'] as const;
export type ComplexityMeasure = (typeof COMPLEXITY_MEASURES)[number];

interface ManifestComplexity {
  complexity?: { depths: number[] };
  features: { id: string; complexity?: { order: number | null; explained: number[] } }[];
}

/** Each feature's complexity by the measure, from a manifest file; null where it has none. */
export function complexityFromManifest(file: string, measure: ComplexityMeasure): Map<string, number | null> {
  if (!existsSync(file)) {
    throw new LegibleError(`--complexity: no stimuli manifest at ${file}. Add a complexity: section to the study file and run legible stimuli, or leave out --complexity.`);
  }
  const m = JSON.parse(readFileSync(file, 'utf8')) as ManifestComplexity;
  if (!m.complexity) {
    throw new LegibleError(`--complexity: ${file} has no complexity (the study file had no complexity: section when its stimuli were built). Add one and run legible stimuli again.`);
  }
  const out = new Map<string, number | null>();
  for (const f of m.features) {
    const c = f.complexity;
    if (!c) out.set(f.id, null);
    else if (measure === 'order') out.set(f.id, c.order);
    else {
      const deepest = c.explained[c.explained.length - 1];
      out.set(f.id, deepest > 0 ? Math.min(1, Math.max(0, c.explained[0] / deepest)) : null);
    }
  }
  return out;
}

export interface FeaturePoint {
  feature: string;
  basis: string;
  layer: string;
  complexity: number;
  trials: number;
  correct: number;
  accuracy: number;
}

export interface RankCorrelation {
  /** Spearman's ρ (Pearson's correlation of average ranks). */
  rho: number;
  /** Percentile bootstrap interval over features (level 0.95). */
  ci: [number, number];
  n: number;
}

export interface ComplexityResult {
  measure: ComplexityMeasure;
  manifest: string;
  features: FeaturePoint[];
  /** Features of the main trials without a complexity (not measured, or no order), and their trials, left out. */
  dropped: { features: number; trials: number };
  spearman: RankCorrelation;
  byBasis: (RankCorrelation & { basis: string })[];
}

/** Spearman's ρ; NaN when either variable is constant. */
export function spearman(x: ArrayLike<number>, y: ArrayLike<number>): number {
  const rx = ranks(x);
  const ry = ranks(y);
  const n = rx.length;
  let mx = 0;
  let my = 0;
  for (let i = 0; i < n; i++) {
    mx += rx[i] / n;
    my += ry[i] / n;
  }
  let sxy = 0;
  let sxx = 0;
  let syy = 0;
  for (let i = 0; i < n; i++) {
    sxy += (rx[i] - mx) * (ry[i] - my);
    sxx += (rx[i] - mx) ** 2;
    syy += (ry[i] - my) ** 2;
  }
  return sxx > 0 && syy > 0 ? sxy / Math.sqrt(sxx * syy) : NaN;
}

/** ρ with a percentile bootstrap interval: features resampled with replacement (resamples with a constant variable skipped). */
export function spearmanCI(x: number[], y: number[], B: number, seed: number): RankCorrelation {
  const rho = spearman(x, y);
  const n = x.length;
  const rng = new Rng(seed);
  const draws: number[] = [];
  const bx = new Float64Array(n);
  const by = new Float64Array(n);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < n; i++) {
      const j = rng.int(n);
      bx[i] = x[j];
      by[i] = y[j];
    }
    const r = spearman(bx, by);
    if (Number.isFinite(r)) draws.push(r);
  }
  draws.sort((a, b) => a - b);
  const q = (p: number) => (draws.length ? draws[Math.min(draws.length - 1, Math.max(0, Math.round(p * (draws.length - 1))))] : NaN);
  return { rho, ci: [q(0.025), q(0.975)], n };
}

/**
 * Adds the column `complexity` to the main trials (rows of features without one are dropped) and
 * returns the per-feature points with the rank correlations.
 */
export function withComplexity(main: Table, byFeature: Map<string, number | null>, opts: { measure: ComplexityMeasure; manifest: string; boot: number; seed: number }): { main: Table; result: ComplexityResult } {
  const feature = main.column('feature')!;
  const value = feature.map((f) => byFeature.get(f) ?? null);
  const droppedFeatures = new Set(feature.filter((_, i) => value[i] === null));
  const kept = main.filter((i) => value[i] !== null);
  if (kept.n === 0) throw new LegibleError(`--complexity: none of the ${new Set(feature).size} features of the main trials has a complexity ${opts.measure} in ${opts.manifest}`);
  kept.setColumn('complexity', value.filter((v) => v !== null).map(String));
  // Per feature: its trials pooled over the cells it appears in.
  const points = new Map<string, FeaturePoint>();
  const kf = kept.column('feature')!;
  const basis = kept.has('basis') ? kept.column('basis')! : kf.map(() => '');
  const layer = kept.has('layer') ? kept.column('layer')! : kf.map(() => '');
  const correct = kept.numbers('correct');
  for (let i = 0; i < kept.n; i++) {
    const p = points.get(kf[i]) ?? { feature: kf[i], basis: basis[i], layer: layer[i], complexity: byFeature.get(kf[i])!, trials: 0, correct: 0, accuracy: 0 };
    p.trials++;
    p.correct += correct[i] === 1 ? 1 : 0;
    points.set(kf[i], p);
  }
  const features = [...points.values()].sort((a, b) => a.feature.localeCompare(b.feature, 'en', { numeric: true }));
  for (const p of features) p.accuracy = p.correct / p.trials;
  const corr = (ps: FeaturePoint[], salt: number) =>
    spearmanCI(
      ps.map((p) => p.complexity),
      ps.map((p) => p.accuracy),
      opts.boot,
      opts.seed + salt,
    );
  const bases = [...new Set(features.map((p) => p.basis))].filter((b) => b !== '');
  return {
    main: kept,
    result: {
      measure: opts.measure,
      manifest: opts.manifest,
      features,
      dropped: { features: droppedFeatures.size, trials: main.n - kept.n },
      spearman: corr(features, 29),
      byBasis: bases.length > 1 ? bases.map((b, k) => ({ basis: b, ...corr(features.filter((p) => p.basis === b), 31 + k) })) : [],
    },
  };
}
