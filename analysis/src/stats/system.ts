// The penalised normal equations of a GLMM with random intercepts, H = ΛZᵀWZΛ + I (and, in the
// joint form, the fixed effects too: [[ΛZᵀWZΛ + I, ΛZᵀWX], [XᵀWZΛ, XᵀWX]]), factorised by
// eliminating the grouping factor with the most levels first. That factor's block is diagonal,
// so only the Schur complement over the other factors' levels (and β) is dense: for 500
// participants × 200 features a 200×200 Cholesky, whatever the number of trials.
//
// Order of the unknowns ("system order"): the big factor's levels, then the other factors'
// levels factor by factor, then (joint form) the fixed effects.
import { cholesky, cholInverse, cholLogDet, cholSolve } from './linalg.ts';

export interface Grouping {
  name: string;
  /** Level index of each observation. */
  index: Int32Array;
  levels: string[];
}

export class BlockSystem {
  readonly n: number;
  readonly K: number;
  /** Index (into groups) of the factor eliminated first. */
  readonly big: number;
  readonly q1: number;
  /** Levels of the other factors together. */
  readonly qr: number;
  /** Total random-effect unknowns q1 + qr. */
  readonly q: number;
  /** Fixed effects in the joint form (0 in the random-only form). */
  readonly p: number;
  /** Size of the dense block: qr + p. */
  readonly r: number;
  /** System index of each observation's level of each factor: zi[i·K + k]. */
  readonly zi: Int32Array;
  /** Offset of factor k's levels in system order. */
  readonly offset: Int32Array;
  /** Which factor each system index belongs to. */
  readonly factorOf: Int32Array;
  // Sparse cross block C (q1 × qr) in CSR by big level: slot s holds (j, m).
  readonly rowPtr: Int32Array;
  readonly colM: Int32Array;
  /** Slot of each observation for each non-big factor: obsSlot[i·(K−1) + t]. */
  readonly obsSlot: Int32Array;
  /** The non-big factors in order. */
  readonly others: number[];
  // Numeric state of the last assembly.
  readonly d: Float64Array;
  readonly cval: Float64Array;
  /** Dense q1 × p block ΛZᵀWX of the joint form (row-major). */
  readonly cx: Float64Array;
  /** Dense r × r Schur complement; its Cholesky factor after factor(). */
  readonly S: Float64Array;
  private readonly X: Float64Array[] | null;
  /** C is dense enough for the dot-product Schur complement (see schurDense). */
  readonly dense: boolean;
  private readonly ct: Float64Array | null;
  private readonly cs: Float64Array | null;

  constructor(groups: Grouping[], X: Float64Array[] | null = null) {
    this.K = groups.length;
    this.n = groups[0].index.length;
    this.X = X;
    this.p = X ? X.length : 0;
    let big = 0;
    for (let k = 1; k < this.K; k++) if (groups[k].levels.length > groups[big].levels.length) big = k;
    this.big = big;
    this.q1 = groups[big].levels.length;
    this.others = groups.map((_, k) => k).filter((k) => k !== big);
    this.offset = new Int32Array(this.K);
    this.offset[big] = 0;
    let off = this.q1;
    for (const k of this.others) {
      this.offset[k] = off;
      off += groups[k].levels.length;
    }
    this.q = off;
    this.qr = off - this.q1;
    this.r = this.qr + this.p;
    this.factorOf = new Int32Array(this.q);
    for (let k = 0; k < this.K; k++) this.factorOf.fill(k, this.offset[k], this.offset[k] + groups[k].levels.length);
    const n = this.n;
    const K = this.K;
    this.zi = new Int32Array(n * K);
    for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) this.zi[i * K + k] = this.offset[k] + groups[k].index[i];

    // Slots of C: distinct (big level, other level) pairs, grouped by big level.
    const T = K - 1;
    const counts = new Int32Array(this.q1 + 1);
    const pairKey = new Map<number, number>(); // j * qr + m → provisional slot
    const pairs: number[] = [];
    const provisional = new Int32Array(n * T);
    for (let i = 0; i < n; i++) {
      const j = this.zi[i * K + big];
      for (let t = 0; t < T; t++) {
        const m = this.zi[i * K + this.others[t]] - this.q1;
        const key = j * this.qr + m;
        let s = pairKey.get(key);
        if (s === undefined) {
          s = pairs.length;
          pairKey.set(key, s);
          pairs.push(key);
          counts[j + 1]++;
        }
        provisional[i * T + t] = s;
      }
    }
    this.rowPtr = new Int32Array(this.q1 + 1);
    for (let j = 0; j < this.q1; j++) this.rowPtr[j + 1] = this.rowPtr[j] + counts[j + 1];
    // Order slots by (j, m) so each row's columns are ascending.
    const order = pairs.map((_, s) => s).sort((a, b) => pairs[a] - pairs[b]);
    const rank = new Int32Array(pairs.length);
    order.forEach((s, pos) => (rank[s] = pos));
    this.colM = new Int32Array(pairs.length);
    order.forEach((s, pos) => (this.colM[pos] = pairs[s] % this.qr));
    this.obsSlot = new Int32Array(n * T);
    for (let x = 0; x < n * T; x++) this.obsSlot[x] = rank[provisional[x]];
    this.d = new Float64Array(this.q1);
    this.cval = new Float64Array(pairs.length);
    this.cx = new Float64Array(this.q1 * this.p);
    this.S = new Float64Array(this.r * this.r);
    this.dense = this.qr > 0 && pairs.length >= 0.25 * this.q1 * this.qr;
    this.ct = this.dense ? new Float64Array(this.r * this.q1) : null;
    this.cs = this.dense ? new Float64Array(this.r * this.q1) : null;
  }

  /**
   * Assemble H for weights w and scales θ (one per factor), and factorise it. Returns false when
   * the dense part is not positive definite (only possible in the joint form: X rank deficient
   * or weights all but zero).
   */
  factor(w: Float64Array, theta: ArrayLike<number>): boolean {
    const { n, K, q1, qr, r, p, zi, obsSlot, big, others, d, cval, cx, S } = this;
    const T = K - 1;
    const tb = theta[big];
    const tb2 = tb * tb;
    d.fill(1);
    cval.fill(0);
    S.fill(0);
    if (p) cx.fill(0);
    for (let m = 0; m < qr; m++) S[m * r + m] = 1;
    const th = new Float64Array(T);
    for (let t = 0; t < T; t++) th[t] = theta[others[t]];
    const mloc = new Int32Array(T);
    const X = this.X;
    for (let i = 0; i < n; i++) {
      const wi = w[i];
      const j = zi[i * K + big];
      d[j] += tb2 * wi;
      for (let t = 0; t < T; t++) {
        cval[obsSlot[i * T + t]] += tb * th[t] * wi;
        mloc[t] = zi[i * K + others[t]] - q1;
      }
      for (let t = 0; t < T; t++) {
        const mt = mloc[t];
        const wt = wi * th[t];
        for (let u = 0; u < T; u++) {
          const mu = mloc[u];
          if (mu <= mt) S[mt * r + mu] += wt * th[u];
        }
      }
      if (X) {
        for (let c = 0; c < p; c++) {
          const wx = wi * X[c][i];
          if (wx === 0) continue;
          cx[j * p + c] += tb * wx;
          const row = (qr + c) * r;
          for (let t = 0; t < T; t++) S[row + mloc[t]] += wx * th[t];
          for (let c2 = 0; c2 <= c; c2++) S[row + qr + c2] += wx * X[c2][i];
        }
      }
    }
    if (this.dense) this.schurDense();
    else this.schurSparse();
    return cholesky(S, r);
  }

  /** Schur complement S −= Σ_j c_j c_jᵀ / d_j (lower triangle), row by row of the sparse C. */
  private schurSparse(): void {
    const { q1, qr, r, p, d, cval, cx, S, rowPtr, colM } = this;
    for (let j = 0; j < q1; j++) {
      const inv = 1 / d[j];
      const a0 = rowPtr[j];
      const a1 = rowPtr[j + 1];
      for (let a = a0; a < a1; a++) {
        const ca = cval[a] * inv;
        if (ca === 0) continue;
        const row = colM[a] * r;
        for (let b = a0; b <= a; b++) S[row + colM[b]] -= ca * cval[b];
      }
      if (p) {
        const cj = j * p;
        for (let c = 0; c < p; c++) {
          const cc = cx[cj + c] * inv;
          if (cc === 0) continue;
          const row = (qr + c) * r;
          for (let b = a0; b < a1; b++) S[row + colM[b]] -= cc * cval[b];
          for (let c2 = 0; c2 <= c; c2++) S[row + qr + c2] -= cc * cx[cj + c2];
        }
      }
    }
  }

  /**
   * The same when C is mostly full (each participant saw most features): C is laid out densely,
   * transposed, and S −= CᵀD⁻¹C is taken as dot products over the big factor's levels, four
   * columns at a time — several times faster in JavaScript than scattered updates.
   */
  private schurDense(): void {
    const { q1, qr, r, p, d, cval, cx, S, rowPtr, colM } = this;
    const ct = this.ct!;
    const cs = this.cs!;
    ct.fill(0);
    for (let j = 0; j < q1; j++) {
      for (let a = rowPtr[j]; a < rowPtr[j + 1]; a++) ct[colM[a] * q1 + j] = cval[a];
      for (let c = 0; c < p; c++) ct[(qr + c) * q1 + j] = cx[j * p + c];
    }
    for (let m = 0; m < r; m++) {
      const o = m * q1;
      for (let j = 0; j < q1; j++) cs[o + j] = ct[o + j] / d[j];
    }
    for (let m = 0; m < r; m++) {
      const om = m * q1;
      let m2 = 0;
      for (; m2 + 3 <= m; m2 += 4) {
        const o0 = m2 * q1;
        const o1 = o0 + q1;
        const o2 = o1 + q1;
        const o3 = o2 + q1;
        let s0 = 0;
        let s1 = 0;
        let s2 = 0;
        let s3 = 0;
        for (let j = 0; j < q1; j++) {
          const a = ct[om + j];
          s0 += a * cs[o0 + j];
          s1 += a * cs[o1 + j];
          s2 += a * cs[o2 + j];
          s3 += a * cs[o3 + j];
        }
        const row = m * r + m2;
        S[row] -= s0;
        S[row + 1] -= s1;
        S[row + 2] -= s2;
        S[row + 3] -= s3;
      }
      for (; m2 <= m; m2++) {
        const o = m2 * q1;
        let s = 0;
        for (let j = 0; j < q1; j++) s += ct[om + j] * cs[o + j];
        S[m * r + m2] -= s;
      }
    }
  }

  /** Solve H·x = b (b in system order, length q + p); returns a new array. */
  solve(b: Float64Array): Float64Array {
    const { q1, qr, r, p, d, cval, cx, S, rowPtr, colM } = this;
    const y = new Float64Array(r);
    for (let m = 0; m < r; m++) y[m] = b[q1 + m];
    for (let j = 0; j < q1; j++) {
      const f = b[j] / d[j];
      if (f === 0) continue;
      for (let a = rowPtr[j]; a < rowPtr[j + 1]; a++) y[colM[a]] -= cval[a] * f;
      for (let c = 0; c < p; c++) y[qr + c] -= cx[j * p + c] * f;
    }
    cholSolve(S, r, y);
    const x = new Float64Array(q1 + r);
    for (let j = 0; j < q1; j++) {
      let s = b[j];
      for (let a = rowPtr[j]; a < rowPtr[j + 1]; a++) s -= cval[a] * y[colM[a]];
      for (let c = 0; c < p; c++) s -= cx[j * p + c] * y[qr + c];
      x[j] = s / d[j];
    }
    x.set(y, q1);
    return x;
  }

  /** log det of the random-effects block ΛZᵀWZΛ + I (the Laplace term). */
  logDetU(): number {
    let s = 0;
    for (let j = 0; j < this.q1; j++) s += Math.log(this.d[j]);
    return s + cholLogDet(this.S, this.r, this.qr);
  }

  /**
   * Joint form: the fixed effects' block of H⁻¹ (p × p), i.e. (XᵀWX − XᵀWZΛ(…)⁻¹ΛZᵀWX)⁻¹: the
   * RX-based covariance of β̂ (lme4's unscaled vcov).
   */
  fixedInverse(): Float64Array {
    const { p, qr, r, S } = this;
    const lb = new Float64Array(p * p);
    for (let a = 0; a < p; a++) for (let b = 0; b <= a; b++) lb[a * p + b] = S[(qr + a) * r + qr + b];
    return cholInverse(lb, p);
  }

  /**
   * Random-only form, after factor(): the diagonal of H⁻¹ (system order) and, for each
   * observation, its leverage h_i = U_i H⁻¹ U_iᵀ, with U = ZΛ.
   */
  inverseParts(theta: ArrayLike<number>): { diag: Float64Array; leverage: Float64Array } {
    const { n, K, q1, qr, r, big, others, d, cval, S, rowPtr, colM, zi, obsSlot } = this;
    const T = K - 1;
    const sinv = qr > 0 ? cholInverse(S, r) : new Float64Array(0);
    // G = C·S⁻¹ on the slots: H⁻¹[j, m] = −G[slot]/d_j.
    const g = new Float64Array(cval.length);
    const diag = new Float64Array(q1 + qr);
    if (this.dense) {
      // Row j of C densely, then its products with the rows of S⁻¹ (symmetric), four at a time.
      const row = new Float64Array(qr);
      const full = new Float64Array(qr);
      for (let j = 0; j < q1; j++) {
        row.fill(0);
        const a0 = rowPtr[j];
        const a1 = rowPtr[j + 1];
        for (let a = a0; a < a1; a++) row[colM[a]] = cval[a];
        let m = 0;
        for (; m + 4 <= qr; m += 4) {
          const o0 = m * qr;
          const o1 = o0 + qr;
          const o2 = o1 + qr;
          const o3 = o2 + qr;
          let s0 = 0;
          let s1 = 0;
          let s2 = 0;
          let s3 = 0;
          for (let k = 0; k < qr; k++) {
            const c = row[k];
            s0 += c * sinv[o0 + k];
            s1 += c * sinv[o1 + k];
            s2 += c * sinv[o2 + k];
            s3 += c * sinv[o3 + k];
          }
          full[m] = s0;
          full[m + 1] = s1;
          full[m + 2] = s2;
          full[m + 3] = s3;
        }
        for (; m < qr; m++) {
          let s0 = 0;
          for (let k = 0; k < qr; k++) s0 += row[k] * sinv[m * qr + k];
          full[m] = s0;
        }
        let quad = 0;
        for (let a = a0; a < a1; a++) {
          g[a] = full[colM[a]];
          quad += g[a] * cval[a];
        }
        diag[j] = 1 / d[j] + quad / (d[j] * d[j]);
      }
    } else {
      for (let j = 0; j < q1; j++) {
        const a0 = rowPtr[j];
        const a1 = rowPtr[j + 1];
        let quad = 0;
        for (let a = a0; a < a1; a++) {
          const row = colM[a] * qr;
          let s = 0;
          for (let b = a0; b < a1; b++) s += cval[b] * sinv[row + colM[b]];
          g[a] = s;
          quad += s * cval[a];
        }
        diag[j] = 1 / d[j] + quad / (d[j] * d[j]);
      }
    }
    for (let m = 0; m < qr; m++) diag[q1 + m] = sinv[m * qr + m];
    const leverage = new Float64Array(n);
    const tb = theta[big];
    const th = others.map((k) => theta[k]);
    for (let i = 0; i < n; i++) {
      const j = zi[i * K + big];
      let h = tb * tb * diag[j];
      const dj = d[j];
      for (let t = 0; t < T; t++) {
        const mt = zi[i * K + others[t]] - q1;
        h -= (2 * tb * th[t] * g[obsSlot[i * T + t]]) / dj;
        for (let u = 0; u < T; u++) {
          const mu = zi[i * K + others[u]] - q1;
          h += th[t] * th[u] * sinv[mt * qr + mu];
        }
      }
      leverage[i] = h;
    }
    return { diag, leverage };
  }
}
