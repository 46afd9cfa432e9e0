// The rank and resampling tests this literature runs on per-unit accuracies: Kruskal–Wallis
// (ties corrected, as R's kruskal.test), pairwise Conover–Iman tests after it (t on the mean
// ranks with N − k df, the test IMI used), Holm's adjustment, and permutation tests of a
// difference in means (optionally within strata).
import { Rng } from '@legible/studies';
import { pchisqUpper, pTwoSidedT } from './distributions.ts';

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
