// The rank and resampling tests this literature runs on per-unit accuracies: Kruskal–Wallis
// (ties corrected, as R's kruskal.test), pairwise Conover–Iman tests after it (t on the mean
// ranks with N − k df, the test IMI used), Holm's adjustment, and permutation tests of a
// difference in means (optionally within strata).
import { Rng } from '@legible/studies';
import { pchisqUpper, pnorm, pTwoSidedT } from './distributions.ts';

/** Mid-ranks (ties get the mean of their ranks), 1-based. */
export function ranks(values: ArrayLike<number>): Float64Array {
  const n = values.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => values[a] - values[b]);
  const r = new Float64Array(n);
  for (let i = 0; i < n; ) {
    let j = i;
    while (j + 1 < n && values[order[j + 1]] === values[order[i]]) j++;
    const mid = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) r[order[k]] = mid;
    i = j + 1;
  }
  return r;
}

export interface KruskalResult {
  H: number;
  df: number;
  p: number;
  n: number;
  groups: { label: string; n: number; meanRank: number; median: number }[];
  /** Pairwise Conover–Iman tests, Holm-adjusted. */
  pairwise: { a: string; b: string; t: number; df: number; p: number; pHolm: number }[];
}

export function kruskalWallis(values: number[], groups: number[], labels: string[]): KruskalResult {
  const N = values.length;
  const k = labels.length;
  const r = ranks(values);
  const sum = new Float64Array(k);
  const cnt = new Float64Array(k);
  for (let i = 0; i < N; i++) {
    sum[groups[i]] += r[i];
    cnt[groups[i]]++;
  }
  let r2 = 0;
  for (let i = 0; i < N; i++) r2 += r[i] * r[i];
  // S² is the variance of the ranks (with ties); H = (Σ R_i²/n_i − N(N+1)²/4) / S².
  const S2 = (r2 - (N * (N + 1) ** 2) / 4) / (N - 1);
  let between = 0;
  for (let g = 0; g < k; g++) if (cnt[g]) between += (sum[g] * sum[g]) / cnt[g];
  between -= (N * (N + 1) ** 2) / 4;
  const used = Array.from(cnt).filter((c) => c > 0).length;
  const H = S2 > 0 ? between / S2 : 0;
  const df = used - 1;
  const p = S2 > 0 ? pchisqUpper(H, df) : 1;
  const pairwise: KruskalResult['pairwise'] = [];
  const dfT = N - used;
  for (let a = 0; a < k; a++) {
    for (let b = a + 1; b < k; b++) {
      if (!cnt[a] || !cnt[b]) continue;
      const diff = sum[a] / cnt[a] - sum[b] / cnt[b];
      const se = Math.sqrt(((S2 * (N - 1 - H)) / dfT) * (1 / cnt[a] + 1 / cnt[b]));
      const t = se > 0 ? diff / se : 0;
      pairwise.push({ a: labels[a], b: labels[b], t, df: dfT, p: se > 0 ? pTwoSidedT(t, dfT) : 1, pHolm: NaN });
    }
  }
  const adj = holm(pairwise.map((x) => x.p));
  pairwise.forEach((x, i) => (x.pHolm = adj[i]));
  return {
    H,
    df,
    p,
    n: N,
    groups: labels.map((label, g) => {
      const v = values.filter((_, i) => groups[i] === g).sort((x, y) => x - y);
      const med = v.length ? (v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2) : NaN;
      return { label, n: cnt[g], meanRank: cnt[g] ? sum[g] / cnt[g] : NaN, median: med };
    }),
    pairwise,
  };
}

/** Holm's step-down adjustment (as R's p.adjust(method = "holm")). */
export function holm(p: number[]): number[] {
  const m = p.length;
  const order = p.map((_, i) => i).sort((a, b) => p[a] - p[b]);
  const out = new Array<number>(m);
  let running = 0;
  order.forEach((idx, rank) => {
    running = Math.max(running, Math.min(1, (m - rank) * p[idx]));
    out[idx] = running;
  });
  return out;
}

export interface PermutationResult {
  /** mean(group a) − mean(group b) */
  difference: number;
  p: number;
  permutations: number;
  na: number;
  nb: number;
}

/**
 * Two-sided permutation test of a difference in means between groups a (label 0) and b (label
 * 1); labels are shuffled within each stratum (pass all-zero strata for a plain test).
 * p = (1 + #{|T*| ≥ |T|}) / (1 + B).
 */
export function permutationTest(values: number[], label: number[], strata: number[], B: number, rng: Rng): PermutationResult {
  const n = values.length;
  const byStratum = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const list = byStratum.get(strata[i]) ?? [];
    list.push(i);
    byStratum.set(strata[i], list);
  }
  const na = label.filter((l) => l === 0).length;
  const nb = n - na;
  const diff = (lab: ArrayLike<number>) => {
    let sa = 0;
    let sb = 0;
    for (let i = 0; i < n; i++) {
      if (lab[i] === 0) sa += values[i];
      else sb += values[i];
    }
    return sa / na - sb / nb;
  };
  const observed = diff(label);
  const perm = Int8Array.from(label);
  let extreme = 0;
  const tol = 1e-12 * Math.max(1, Math.abs(observed));
  for (let b = 0; b < B; b++) {
    for (const idx of byStratum.values()) {
      // Shuffle the labels among this stratum's positions.
      for (let i = idx.length - 1; i > 0; i--) {
        const j = rng.int(i + 1);
        const t = perm[idx[i]];
        perm[idx[i]] = perm[idx[j]];
        perm[idx[j]] = t;
      }
    }
    if (Math.abs(diff(perm)) >= Math.abs(observed) - tol) extreme++;
  }
  return { difference: observed, p: (1 + extreme) / (1 + B), permutations: B, na, nb };
}

export interface WilcoxonResult {
  /** Sum of the ranks of the positive differences (R's V). */
  V: number;
  /** Pairs with a non-zero difference (the ones ranked). */
  n: number;
  /** Pairs with a zero difference (dropped, as R does). */
  zeros: number;
  /** Whether some |differences| tie (then, as in R, the normal approximation is used). */
  ties: boolean;
  /** 'exact' (n < 50, no ties, no zeros) or 'normal' (with continuity and tie corrections), as R's wilcox.test. */
  method: 'exact' | 'normal';
  p: number;
  /** Median of the differences x − y (zeros included). */
  medianDifference: number;
}

/** Differences rounded to 12 significant digits: 0.7 − 0.6 and 0.8 − 0.7 are the same tie. */
const clean = (d: number) => (d === 0 ? 0 : Number(d.toPrecision(12)));

/** Upper tail P(V ≥ v) of the signed-rank statistic for n pairs, by counting (as R's psignrank). */
function signrankUpper(v: number, n: number): number {
  const max = (n * (n + 1)) / 2;
  const counts = new Float64Array(max + 1);
  counts[0] = 1;
  for (let k = 1; k <= n; k++) for (let s = (k * (k + 1)) / 2; s >= k; s--) counts[s] += counts[s - k];
  let upper = 0;
  for (let s = Math.max(0, Math.ceil(v)); s <= max; s++) upper += counts[s];
  return upper / 2 ** n;
}

/**
 * Wilcoxon signed-rank test of paired values x, y (two-sided), as R's
 * wilcox.test(x, y, paired = TRUE): zero differences dropped; exact when n < 50 with no ties
 * and no zeros, else the normal approximation with continuity correction and tie correction.
 */
export function wilcoxonSignedRank(x: ArrayLike<number>, y: ArrayLike<number>): WilcoxonResult {
  const all = Array.from(x, (v, i) => clean(v - y[i]));
  const d = all.filter((v) => v !== 0);
  const n = d.length;
  const zeros = all.length - n;
  const sortedAll = all.slice().sort((a, b) => a - b);
  const medianDifference = sortedAll.length ? (sortedAll[(sortedAll.length - 1) >> 1] + sortedAll[sortedAll.length >> 1]) / 2 : NaN;
  if (n === 0) return { V: 0, n: 0, zeros, ties: false, method: 'normal', p: 1, medianDifference };
  const r = ranks(d.map(Math.abs));
  let V = 0;
  d.forEach((v, i) => v > 0 && (V += r[i]));
  const tieCounts = new Map<number, number>();
  for (const v of r) tieCounts.set(v, (tieCounts.get(v) ?? 0) + 1);
  const ties = [...tieCounts.values()].some((c) => c > 1);
  if (n < 50 && !ties && zeros === 0) {
    const mid = (n * (n + 1)) / 4;
    // R: p = 2 · (V > mid ? P(V' ≥ V) : P(V' ≤ V)), capped at 1; the distribution is symmetric.
    const p = V > mid ? signrankUpper(V, n) : signrankUpper((n * (n + 1)) / 2 - V, n);
    return { V, n, zeros, ties, method: 'exact', p: Math.min(1, 2 * p), medianDifference };
  }
  let tieTerm = 0;
  for (const c of tieCounts.values()) tieTerm += c ** 3 - c;
  const sigma = Math.sqrt((n * (n + 1) * (2 * n + 1)) / 24 - tieTerm / 48);
  const z0 = V - (n * (n + 1)) / 4;
  const z = sigma > 0 ? (z0 - Math.sign(z0) * 0.5) / sigma : 0;
  return { V, n, zeros, ties, method: 'normal', p: sigma > 0 ? Math.min(1, 2 * pnorm(-Math.abs(z))) : 1, medianDifference };
}

export interface FriedmanResult {
  /** Friedman's chi-squared statistic, ties corrected (as R's friedman.test). */
  Q: number;
  df: number;
  p: number;
  /** Blocks (features) and treatments (conditions). */
  blocks: number;
  k: number;
  groups: { label: string; n: number; meanRank: number; median: number }[];
  /** Conover's all-pairs test after Friedman (t on the rank sums, (b − 1)(k − 1) df), Holm-adjusted. */
  pairwise: { a: string; b: string; t: number; df: number; p: number; pHolm: number }[];
}

/**
 * Friedman's test on a complete block design: `y[b][j]` is block b's value under treatment j
 * (every block has every treatment). Ranks within blocks (mid-ranks for ties). The statistic is
 * R's friedman.test; the pairwise tests are Conover's (Practical Nonparametric Statistics,
 * 3rd ed., §5.8): t = (R_i − R_j) / √(2(b·A − ΣR²) / ((b − 1)(k − 1))), with A the sum of squared
 * ranks, on (b − 1)(k − 1) degrees of freedom; then Holm.
 */
export function friedman(y: number[][], labels: string[]): FriedmanResult {
  const b = y.length;
  const k = labels.length;
  const R = new Float64Array(k);
  let A = 0;
  let tieTerm = 0;
  for (const row of y) {
    if (row.length !== k) throw new Error(`friedman: a block has ${row.length} values, expected ${k}`);
    const r = ranks(row.map(clean));
    const counts = new Map<number, number>();
    r.forEach((v, j) => {
      R[j] += v;
      A += v * v;
      counts.set(v, (counts.get(v) ?? 0) + 1);
    });
    for (const c of counts.values()) tieTerm += c ** 3 - c;
  }
  let ss = 0;
  for (let j = 0; j < k; j++) ss += (R[j] - (b * (k + 1)) / 2) ** 2;
  const denom = b * k * (k + 1) - tieTerm / (k - 1);
  const Q = denom > 0 ? (12 * ss) / denom : 0;
  const df = k - 1;
  const p = denom > 0 ? pchisqUpper(Q, df) : 1;
  let sumR2 = 0;
  for (let j = 0; j < k; j++) sumR2 += R[j] * R[j];
  const dfT = (b - 1) * (k - 1);
  const se = Math.sqrt((2 * (b * A - sumR2)) / dfT);
  const pairwise: FriedmanResult['pairwise'] = [];
  for (let i = 0; i < k; i++) {
    for (let j = i + 1; j < k; j++) {
      const t = se > 0 ? (R[i] - R[j]) / se : 0;
      pairwise.push({ a: labels[i], b: labels[j], t, df: dfT, p: se > 0 ? pTwoSidedT(t, dfT) : 1, pHolm: NaN });
    }
  }
  const adj = holm(pairwise.map((x) => x.p));
  pairwise.forEach((x, i) => (x.pHolm = adj[i]));
  return {
    Q,
    df,
    p,
    blocks: b,
    k,
    groups: labels.map((label, j) => {
      const v = y.map((row) => row[j]).sort((s, t) => s - t);
      return { label, n: b, meanRank: R[j] / b, median: v.length ? (v[(v.length - 1) >> 1] + v[v.length >> 1]) / 2 : NaN };
    }),
    pairwise,
  };
}
