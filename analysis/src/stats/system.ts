// The penalised normal equations of a GLMM, H = ΛᵀZᵀWZΛ + I (and, in the joint form, the fixed
// effects too: [[ΛᵀZᵀWZΛ + I, ΛᵀZᵀWX], [XᵀWZΛ, XᵀWX]]), factorised by eliminating the grouping
// factor with the most random-effect unknowns first. Each grouping factor k has r_k model-matrix
// columns (1 for a random intercept; more with random slopes) and a lower-triangular r_k × r_k
// relative covariance factor T_k (lme4's Λθ is block diagonal with one T_k per level). The first
// factor's part of H is block diagonal (one r × r block per level), so only the Schur complement
// over the other factors' unknowns (and β) is dense: for 500 participants × 200 features a
// 200×200 Cholesky, whatever the number of trials or the participants' slopes.
//
// Order of the unknowns ("system order"): the big factor's levels (r_big unknowns each, level by
// level), then the other factors' levels factor by factor (r_k unknowns each), then (joint form)
// the fixed effects. Row i of U = ZΛ has R = Σ r_k non-zeros ("entries"): the big factor's r_big
// first, then the others' in factor order.
import { cholesky, cholInverse, cholLogDet, cholSolve } from './linalg.ts';

export interface Grouping {
  name: string;
  /** Level index of each observation. */
  index: Int32Array;
  levels: string[];
  /** The term's model-matrix columns (default: one column of ones, a random intercept). */
  Z?: Float64Array[];
  /** Their names as R's model.matrix writes them (default "(Intercept)"). */
  zNames?: string[];
  /**
   * Correlation blocks: columns with the same block id are correlated (their T entries are free),
   * columns in different blocks are not (default: one block, a fully correlated term).
   */
  blocks?: number[];
}

/** The free entries [row, column] of a grouping factor's T (lower triangle, column by column: lme4's θ order). */
export function thetaPattern(g: Grouping): [number, number][] {
  const r = g.Z?.length ?? 1;
  const blocks = g.blocks ?? new Array(r).fill(0);
  const out: [number, number][] = [];
  for (let c = 0; c < r; c++) for (let a = c; a < r; a++) if (blocks[a] === blocks[c]) out.push([a, c]);
  return out;
}

export class BlockSystem {
  readonly n: number;
  readonly K: number;
  /** Index (into groups) of the factor eliminated first. */
  readonly big: number;
  /** Random-effect unknowns per level of each factor. */
  readonly rk: Int32Array;
  /** r of the big factor. */
  readonly rb: number;
  /** Unknowns of the big factor: levels × rb. */
  readonly q1: number;
  /** Unknowns of the other factors together. */
  readonly qr: number;
  /** Total random-effect unknowns q1 + qr. */
  readonly q: number;
  /** Fixed effects in the joint form (0 in the random-only form). */
  readonly p: number;
  /** Size of the dense block: qr + p. */
  readonly r: number;
  /** Entries per observation: Σ r_k. */
  readonly R: number;
  /** First entry of factor k in an observation's entries. */
  readonly eoff: Int32Array;
  /** System index of each observation's entries: col[i·R + e]. */
  readonly col: Int32Array;
  /** Model-matrix value of each entry (the column of Z_k that the entry's θ row multiplies): z[i·R + e]. */
  readonly z: Float64Array;
  /** The entries' values in U = ZΛ for the current θ: ua[i·R + e] (set by setTheta). */
  readonly ua: Float64Array;
  /** Big-factor level of each observation. */
  readonly bigLevel: Int32Array;
  /** Offset of factor k's unknowns in system order. */
  readonly offset: Int32Array;
  /** Which factor each system index belongs to. */
  readonly factorOf: Int32Array;
  // Sparse cross block C (q1 × qr), by big level: slot s holds dense column colM[s], with rb values.
  readonly rowPtr: Int32Array;
  readonly colM: Int32Array;
  /** Slot of each observation's non-big entries: obsSlot[i·(R − rb) + t]. */
  readonly obsSlot: Int32Array;
  /** The non-big factors in order. */
  readonly others: number[];
  /** T_k of each factor (r_k × r_k row-major, lower triangular), from setTheta. */
  readonly T: Float64Array[];
  /** Free entries of each T_k. */
  readonly patterns: [number, number][][];
  /** Length of θ. */
  readonly nTheta: number;
  // Numeric state of the last assembly.
  /** Cholesky factors L_j of the big factor's diagonal blocks (rb × rb each, row-major). */
  readonly dl: Float64Array;
  /** Whitened cross block L_j⁻¹C_j on the slots: cval[s·rb + ρ]. */
  readonly cval: Float64Array;
  /** Whitened dense q1 × p block L⁻¹ΛᵀZᵀWX of the joint form (row-major by big unknown). */
  readonly cx: Float64Array;
  /** Dense r × r Schur complement; its Cholesky factor after factor(). */
  readonly S: Float64Array;
  private readonly X: Float64Array[] | null;
  /** C is dense enough for the dot-product Schur complement (see schurDense). */
  readonly dense: boolean;
  private readonly ct: Float64Array | null;
  private cd?: Float64Array;
  private gFull?: Float64Array;
  private sAt?: Float64Array;
  private leverage?: Float64Array;

  constructor(groups: Grouping[], X: Float64Array[] | null = null) {
    const K = groups.length;
    this.K = K;
    const n = groups[0].index.length;
    this.n = n;
    this.X = X;
    this.p = X ? X.length : 0;
    this.rk = Int32Array.from(groups, (g) => g.Z?.length ?? 1);
    let big = 0;
    const size = (k: number) => groups[k].levels.length * this.rk[k];
    for (let k = 1; k < K; k++) if (size(k) > size(big)) big = k;
    this.big = big;
    this.rb = this.rk[big];
    const rb = this.rb;
    this.q1 = size(big);
    this.others = groups.map((_, k) => k).filter((k) => k !== big);
    this.offset = new Int32Array(K);
    let off = this.q1;
    for (const k of this.others) {
      this.offset[k] = off;
      off += size(k);
    }
    this.q = off;
    this.qr = off - this.q1;
    this.r = this.qr + this.p;
    this.factorOf = new Int32Array(this.q);
    for (let k = 0; k < K; k++) this.factorOf.fill(k, this.offset[k], this.offset[k] + size(k));
    this.eoff = new Int32Array(K);
    let e = rb;
    for (const k of this.others) {
      this.eoff[k] = e;
      e += this.rk[k];
    }
    this.R = e;
    const R = e;
    this.patterns = groups.map(thetaPattern);
    this.nTheta = this.patterns.reduce((s, pat) => s + pat.length, 0);
    this.T = groups.map((_, k) => new Float64Array(this.rk[k] * this.rk[k]));
    this.col = new Int32Array(n * R);
    this.z = new Float64Array(n * R);
    this.ua = new Float64Array(n * R);
    this.bigLevel = Int32Array.from(groups[big].index);
    for (let k = 0; k < K; k++) {
      const g = groups[k];
      const r = this.rk[k];
      const Z = g.Z ?? [new Float64Array(n).fill(1)];
      for (let i = 0; i < n; i++) {
        const base = this.offset[k] + g.index[i] * r;
        for (let c = 0; c < r; c++) {
          this.col[i * R + this.eoff[k] + c] = base + c;
          this.z[i * R + this.eoff[k] + c] = Z[c][i];
        }
      }
    }

    // Slots of C: distinct (big level, dense column) pairs, grouped by big level.
    const T = R - rb;
    const levelsBig = groups[big].levels.length;
    const counts = new Int32Array(levelsBig + 1);
    const pairKey = new Map<number, number>(); // j * qr + m → provisional slot
    const pairs: number[] = [];
    const provisional = new Int32Array(n * T);
    for (let i = 0; i < n; i++) {
      const j = this.bigLevel[i];
      for (let t = 0; t < T; t++) {
        const m = this.col[i * R + rb + t] - this.q1;
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
    this.rowPtr = new Int32Array(levelsBig + 1);
    for (let j = 0; j < levelsBig; j++) this.rowPtr[j + 1] = this.rowPtr[j] + counts[j + 1];
    // Order slots by (j, m) so each level's columns are ascending.
    const order = pairs.map((_, s) => s).sort((a, b) => pairs[a] - pairs[b]);
    const rank = new Int32Array(pairs.length);
    order.forEach((s, pos) => (rank[s] = pos));
    this.colM = new Int32Array(pairs.length);
    order.forEach((s, pos) => (this.colM[pos] = pairs[s] % this.qr));
    this.obsSlot = new Int32Array(n * T);
    for (let x = 0; x < n * T; x++) this.obsSlot[x] = rank[provisional[x]];
    this.dl = new Float64Array(levelsBig * rb * rb);
    this.cval = new Float64Array(pairs.length * rb);
    this.cx = new Float64Array(this.q1 * this.p);
    this.S = new Float64Array(this.r * this.r);
    this.dense = this.qr > 0 && pairs.length >= 0.25 * levelsBig * this.qr;
    this.ct = this.dense ? new Float64Array(this.r * this.q1) : null;
  }

  /** Number of levels of the big factor. */
  get levelsBig(): number {
    return this.rowPtr.length - 1;
  }

  /** Set θ (the free entries of every T_k, factor by factor, in thetaPattern order) and U = ZΛ. */
  setTheta(theta: ArrayLike<number>): void {
    let at = 0;
    for (let k = 0; k < this.K; k++) {
      const r = this.rk[k];
      const Tk = this.T[k];
      Tk.fill(0);
      for (const [a, b] of this.patterns[k]) Tk[a * r + b] = theta[at++];
    }
    const { n, R, K, z, ua, eoff, rk } = this;
    for (let k = 0; k < K; k++) {
      const r = rk[k];
      const Tk = this.T[k];
      const e0 = eoff[k];
      if (r === 1) {
        const t = Tk[0];
        for (let i = 0; i < n; i++) ua[i * R + e0] = t * z[i * R + e0];
        continue;
      }
      // U_i's entries for factor k: z_iᵀ T_k (row vector), i.e. Σ_a z_a T[a][c].
      for (let i = 0; i < n; i++) {
        const o = i * R + e0;
        for (let c = 0; c < r; c++) {
          let s = 0;
          for (let a = c; a < r; a++) s += z[o + a] * Tk[a * r + c];
          ua[o + c] = s;
        }
      }
    }
  }

  /**
   * Assemble H for weights w (and the θ of the last setTheta), and factorise it. Returns false
   * when the dense part is not positive definite (only possible in the joint form: X rank
   * deficient or weights all but zero).
   */
  factor(w: Float64Array): boolean {
    const { n, R, rb, qr, r, p, col, ua, q1, bigLevel, obsSlot, dl, cval, cx, S } = this;
    const T = R - rb;
    const rb2 = rb * rb;
    dl.fill(0);
    for (let j = 0; j < this.levelsBig; j++) for (let a = 0; a < rb; a++) dl[j * rb2 + a * rb + a] = 1;
    cval.fill(0);
    S.fill(0);
    if (p) cx.fill(0);
    for (let m = 0; m < qr; m++) S[m * r + m] = 1;
    const mloc = new Int32Array(T);
    const X = this.X;
    for (let i = 0; i < n; i++) {
      const wi = w[i];
      const j = bigLevel[i];
      const o = i * R;
      const dj = j * rb2;
      for (let a = 0; a < rb; a++) {
        const wa = wi * ua[o + a];
        for (let b = 0; b <= a; b++) dl[dj + a * rb + b] += wa * ua[o + b];
      }
      for (let t = 0; t < T; t++) {
        const et = ua[o + rb + t];
        const so = obsSlot[i * T + t] * rb;
        for (let a = 0; a < rb; a++) cval[so + a] += wi * ua[o + a] * et;
        mloc[t] = col[o + rb + t] - q1;
      }
      for (let t = 0; t < T; t++) {
        const mt = mloc[t];
        const wt = wi * ua[o + rb + t];
        for (let u = 0; u < T; u++) {
          const mu = mloc[u];
          if (mu <= mt) S[mt * r + mu] += wt * ua[o + rb + u];
        }
      }
      if (X) {
        for (let c = 0; c < p; c++) {
          const wx = wi * X[c][i];
          if (wx === 0) continue;
          for (let a = 0; a < rb; a++) cx[(j * rb + a) * p + c] += wx * ua[o + a];
          const row = (qr + c) * r;
          for (let t = 0; t < T; t++) S[row + mloc[t]] += wx * ua[o + rb + t];
          for (let c2 = 0; c2 <= c; c2++) S[row + qr + c2] += wx * X[c2][i];
        }
      }
    }
    // Factor the diagonal blocks and whiten C (and CX) by them: Ĉ_j = L_j⁻¹C_j.
    const v = new Float64Array(rb);
    for (let j = 0; j < this.levelsBig; j++) {
      const L = dl.subarray(j * rb2, (j + 1) * rb2);
      if (rb === 1) L[0] = Math.sqrt(L[0]);
      else cholesky(L, rb);
      for (let s = this.rowPtr[j]; s < this.rowPtr[j + 1]; s++) {
        if (rb === 1) cval[s] /= L[0];
        else forward(L, rb, cval, s * rb);
      }
      for (let c = 0; c < p; c++) {
        for (let a = 0; a < rb; a++) v[a] = cx[(j * rb + a) * p + c];
        forward(L, rb, v, 0);
        for (let a = 0; a < rb; a++) cx[(j * rb + a) * p + c] = v[a];
      }
    }
    if (this.dense) this.schurDense();
    else this.schurSparse();
    return cholesky(S, r);
  }

  /** Schur complement S −= ĈᵀĈ (lower triangle), level by level of the sparse Ĉ. */
  private schurSparse(): void {
    const { rb, qr, r, p, cval, cx, S, rowPtr, colM } = this;
    for (let j = 0; j < this.levelsBig; j++) {
      const a0 = rowPtr[j];
      const a1 = rowPtr[j + 1];
      for (let rho = 0; rho < rb; rho++) {
        for (let a = a0; a < a1; a++) {
          const ca = cval[a * rb + rho];
          if (ca === 0) continue;
          const row = colM[a] * r;
          for (let b = a0; b <= a; b++) S[row + colM[b]] -= ca * cval[b * rb + rho];
        }
        if (p) {
          const cj = (j * rb + rho) * p;
          for (let c = 0; c < p; c++) {
            const cc = cx[cj + c];
            if (cc === 0) continue;
            const row = (qr + c) * r;
            for (let b = a0; b < a1; b++) S[row + colM[b]] -= cc * cval[b * rb + rho];
            for (let c2 = 0; c2 <= c; c2++) S[row + qr + c2] -= cc * cx[cj + c2];
          }
        }
      }
    }
  }

  /**
   * The same when C is mostly full (each participant saw most features): Ĉ is laid out densely,
   * transposed, and S −= ĈᵀĈ is taken as dot products over the big factor's unknowns (see
   * rowProducts) — several times faster in JavaScript than scattered updates.
   */
  private schurDense(): void {
    const { q1, qr, r, p, rb, cval, cx, S, rowPtr, colM } = this;
    const ct = this.ct!;
    ct.fill(0);
    for (let j = 0; j < this.levelsBig; j++) {
      for (let rho = 0; rho < rb; rho++) {
        const jr = j * rb + rho;
        for (let a = rowPtr[j]; a < rowPtr[j + 1]; a++) ct[colM[a] * q1 + jr] = cval[a * rb + rho];
        for (let c = 0; c < p; c++) ct[(qr + c) * q1 + jr] = cx[jr * p + c];
      }
    }
    rowProducts(ct, r, ct, r, q1, S, r, -1, true);
  }

  /** Solve H·x = b (b in system order, length q + p); returns a new array. */
  solve(b: Float64Array): Float64Array {
    const { q1, qr, r, p, rb, dl, cval, cx, S, rowPtr, colM } = this;
    const rb2 = rb * rb;
    const y1 = new Float64Array(q1);
    const y = new Float64Array(r);
    for (let m = 0; m < r; m++) y[m] = b[q1 + m];
    for (let j = 0; j < this.levelsBig; j++) {
      const L = dl.subarray(j * rb2, (j + 1) * rb2);
      for (let a = 0; a < rb; a++) y1[j * rb + a] = b[j * rb + a];
      forward(L, rb, y1, j * rb);
      for (let a = 0; a < rb; a++) {
        const f = y1[j * rb + a];
        if (f === 0) continue;
        for (let s = rowPtr[j]; s < rowPtr[j + 1]; s++) y[colM[s]] -= cval[s * rb + a] * f;
        for (let c = 0; c < p; c++) y[qr + c] -= cx[(j * rb + a) * p + c] * f;
      }
    }
    if (r) cholSolve(S, r, y);
    const x = new Float64Array(q1 + r);
    for (let j = 0; j < this.levelsBig; j++) {
      for (let a = 0; a < rb; a++) {
        let s = y1[j * rb + a];
        for (let t = rowPtr[j]; t < rowPtr[j + 1]; t++) s -= cval[t * rb + a] * y[colM[t]];
        for (let c = 0; c < p; c++) s -= cx[(j * rb + a) * p + c] * y[qr + c];
        x[j * rb + a] = s;
      }
      backward(dl.subarray(j * rb2, (j + 1) * rb2), rb, x, j * rb);
    }
    x.set(y, q1);
    return x;
  }

  /** log det of the random-effects block ΛᵀZᵀWZΛ + I (the Laplace term). */
  logDetU(): number {
    const { rb, dl } = this;
    let s = 0;
    for (let j = 0; j < this.levelsBig; j++) for (let a = 0; a < rb; a++) s += Math.log(dl[j * rb * rb + a * rb + a]);
    return 2 * s + cholLogDet(this.S, this.r, this.qr);
  }

  /**
   * Joint form: the fixed effects' block of H⁻¹ (p × p), i.e. (XᵀWX − XᵀWZΛ(…)⁻¹ΛᵀZᵀWX)⁻¹: the
   * RX-based covariance of β̂ (lme4's unscaled vcov).
   */
  fixedInverse(): Float64Array {
    const { p, qr, r, S } = this;
    const lb = new Float64Array(p * p);
    for (let a = 0; a < p; a++) for (let b = 0; b <= a; b++) lb[a * p + b] = S[(qr + a) * r + qr + b];
    return cholInverse(lb, p);
  }

  /**
   * Random-only form, after factor(): for each observation i, s_i = H⁻¹U_iᵀ at its own entries
   * (sAt[i·R + e]), and its leverage h_i = U_i H⁻¹ U_iᵀ. With H = [[D, C], [Cᵀ, A]], D_j = L_jL_jᵀ,
   * Ĉ_j = L_j⁻¹C_j, S = A − ĈᵀĈ and G_j = Ĉ_jS⁻¹ (needed only on the level's slots):
   *   dense part  x₂ = S⁻¹(e − Ĉ_jᵀy₁), y₁ = L_j⁻¹a,
   *   big part    L_j⁻ᵀ(y₁ − Ĉ_jx₂), Ĉ_jx₂ = Σ_t e_t G_j[:, m_t] − (G_jĈ_jᵀ)y₁,
   * for U_i = (a on its big level's block, e on its dense columns m_t).
   */
  observationInverse(): { sAt: Float64Array; leverage: Float64Array } {
    const { n, R, rb, qr, dl, cval, rowPtr, colM, obsSlot, ua, col, q1, bigLevel } = this;
    const T = R - rb;
    const rb2 = rb * rb;
    const sinv = qr > 0 ? cholInverse(this.S, this.r) : new Float64Array(0);
    const gs = new Float64Array(cval.length);
    const P = new Float64Array(this.levelsBig * rb2);
    if (qr > 0) {
      // Dense C (each participant saw most features): Ĉ S⁻¹ in full, as products of the rows of
      // Ĉ (laid out densely) with those of S⁻¹ (symmetric).
      let gFull: Float64Array | null = null;
      if (this.dense) {
        // Scratch kept between calls (the gradient calls this at every evaluation).
        this.cd ??= new Float64Array(q1 * qr);
        this.gFull ??= new Float64Array(q1 * qr);
        const cd = this.cd;
        cd.fill(0);
        for (let j = 0; j < this.levelsBig; j++) {
          for (let a = rowPtr[j]; a < rowPtr[j + 1]; a++) for (let rho = 0; rho < rb; rho++) cd[(j * rb + rho) * qr + colM[a]] = cval[a * rb + rho];
        }
        gFull = this.gFull;
        gFull.fill(0);
        rowProducts(cd, q1, sinv, qr, qr, gFull, qr, 1, false);
      }
      for (let j = 0; j < this.levelsBig; j++) {
        const a0 = rowPtr[j];
        const a1 = rowPtr[j + 1];
        for (let rho = 0; rho < rb; rho++) {
          if (gFull) {
            for (let a = a0; a < a1; a++) gs[a * rb + rho] = gFull[(j * rb + rho) * qr + colM[a]];
          } else {
            for (let a = a0; a < a1; a++) {
              const o = colM[a] * qr;
              let s = 0;
              for (let b = a0; b < a1; b++) s += cval[b * rb + rho] * sinv[o + colM[b]];
              gs[a * rb + rho] = s;
            }
          }
        }
        for (let rho = 0; rho < rb; rho++) {
          for (let sg = 0; sg < rb; sg++) {
            let s = 0;
            for (let a = a0; a < a1; a++) s += gs[a * rb + rho] * cval[a * rb + sg];
            P[j * rb2 + rho * rb + sg] = s;
          }
        }
      }
    }
    // Overwritten entirely below; kept between calls (valid until the next call).
    this.sAt ??= new Float64Array(n * R);
    this.leverage ??= new Float64Array(n);
    const { sAt, leverage } = this;
    const y1 = new Float64Array(rb);
    const mt = new Int32Array(T);
    for (let i = 0; i < n; i++) {
      const o = i * R;
      const j = bigLevel[i];
      const L = dl.subarray(j * rb2, (j + 1) * rb2);
      for (let a = 0; a < rb; a++) y1[a] = ua[o + a];
      forward(L, rb, y1, 0);
      let h = 0;
      for (let t = 0; t < T; t++) mt[t] = col[o + rb + t] - q1;
      // Dense part.
      for (let t = 0; t < T; t++) {
        let s = 0;
        const row = mt[t] * qr;
        for (let u = 0; u < T; u++) s += sinv[row + mt[u]] * ua[o + rb + u];
        const so = obsSlot[i * T + t] * rb;
        for (let a = 0; a < rb; a++) s -= y1[a] * gs[so + a];
        sAt[o + rb + t] = s;
        h += s * ua[o + rb + t];
      }
      // Big part: L_j⁻ᵀ(y₁ − Ĉ_jx₂).
      for (let a = 0; a < rb; a++) {
        let cx2 = 0;
        for (let t = 0; t < T; t++) cx2 += ua[o + rb + t] * gs[obsSlot[i * T + t] * rb + a];
        for (let b = 0; b < rb; b++) cx2 -= P[j * rb2 + a * rb + b] * y1[b];
        sAt[o + a] = y1[a] - cx2;
      }
      backward(L, rb, sAt, o);
      for (let a = 0; a < rb; a++) h += sAt[o + a] * ua[o + a];
      leverage[i] = h;
    }
    return { sAt, leverage };
  }
}

/**
 * out[i·ldo + j] += sign · Σ_k A[i·len + k]·B[j·len + k] for i < rowsA and j < rowsB (only j ≤ i
 * when `lower`): products of rows, three rows of A by four rows of B at a time, the twelve sums
 * in registers — about twice as fast in JavaScript as one row at a time.
 */
export function rowProducts(A: Float64Array, rowsA: number, B: Float64Array, rowsB: number, len: number, out: Float64Array, ldo: number, sign: number, lower: boolean): void {
  let i0 = 0;
  for (; i0 + 3 <= rowsA; i0 += 3) {
    const a0 = i0 * len;
    const a1 = a0 + len;
    const a2 = a1 + len;
    const jEnd = lower ? Math.min(rowsB, i0 + 3) : rowsB;
    let j0 = 0;
    for (; j0 + 4 <= jEnd; j0 += 4) {
      const b0 = j0 * len;
      const b1 = b0 + len;
      const b2 = b1 + len;
      const b3 = b2 + len;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0, s20 = 0, s21 = 0, s22 = 0, s23 = 0; // prettier-ignore
      for (let k = 0; k < len; k++) {
        const x0 = A[a0 + k];
        const x1 = A[a1 + k];
        const x2 = A[a2 + k];
        const y0 = B[b0 + k];
        const y1 = B[b1 + k];
        const y2 = B[b2 + k];
        const y3 = B[b3 + k];
        s00 += x0 * y0; s01 += x0 * y1; s02 += x0 * y2; s03 += x0 * y3; // prettier-ignore
        s10 += x1 * y0; s11 += x1 * y1; s12 += x1 * y2; s13 += x1 * y3; // prettier-ignore
        s20 += x2 * y0; s21 += x2 * y1; s22 += x2 * y2; s23 += x2 * y3; // prettier-ignore
      }
      const o0 = i0 * ldo + j0;
      const o1 = o0 + ldo;
      const o2 = o1 + ldo;
      if (!lower || j0 + 3 <= i0) {
        out[o0] += sign * s00; out[o0 + 1] += sign * s01; out[o0 + 2] += sign * s02; out[o0 + 3] += sign * s03; // prettier-ignore
        out[o1] += sign * s10; out[o1 + 1] += sign * s11; out[o1 + 2] += sign * s12; out[o1 + 3] += sign * s13; // prettier-ignore
        out[o2] += sign * s20; out[o2 + 1] += sign * s21; out[o2 + 2] += sign * s22; out[o2 + 3] += sign * s23; // prettier-ignore
      } else {
        // A tile on the diagonal: only its entries with j ≤ i.
        const sums = [s00, s01, s02, s03, s10, s11, s12, s13, s20, s21, s22, s23];
        for (let di = 0; di < 3; di++) for (let dj = 0; dj < 4; dj++) if (j0 + dj <= i0 + di) out[o0 + di * ldo + dj] += sign * sums[di * 4 + dj];
      }
    }
    for (let i = i0; i < i0 + 3; i++) for (let j = j0; j < (lower ? Math.min(rowsB, i + 1) : rowsB); j++) out[i * ldo + j] += sign * rowDot(A, i * len, B, j * len, len);
  }
  for (let i = i0; i < rowsA; i++) for (let j = 0; j < (lower ? Math.min(rowsB, i + 1) : rowsB); j++) out[i * ldo + j] += sign * rowDot(A, i * len, B, j * len, len);
}

function rowDot(A: Float64Array, a: number, B: Float64Array, b: number, len: number): number {
  let s = 0;
  for (let k = 0; k < len; k++) s += A[a + k] * B[b + k];
  return s;
}

/** x[o..o+r) ← L⁻¹x[o..o+r) for a lower-triangular r × r L (row-major). */
function forward(L: Float64Array, r: number, x: Float64Array, o: number): void {
  for (let a = 0; a < r; a++) {
    let s = x[o + a];
    for (let b = 0; b < a; b++) s -= L[a * r + b] * x[o + b];
    x[o + a] = s / L[a * r + a];
  }
}

/** x[o..o+r) ← L⁻ᵀx[o..o+r). */
function backward(L: Float64Array, r: number, x: Float64Array, o: number): void {
  for (let a = r - 1; a >= 0; a--) {
    let s = x[o + a];
    for (let b = a + 1; b < r; b++) s -= L[b * r + a] * x[o + b];
    x[o + a] = s / L[a * r + a];
  }
}
