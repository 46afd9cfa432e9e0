// Small dense linear algebra on row-major Float64Arrays: what the statistics need and no more.
// Matrices are square n×n unless said otherwise; `a[i * n + j]` is row i, column j.

/**
 * Cholesky factorisation in place: the lower triangle of `a` becomes L with L·Lᵀ = A (the upper
 * triangle is left as it was). Returns false, with `a` partly overwritten, when A is not positive
 * definite (a pivot ≤ tol · the largest diagonal entry).
 */
export function cholesky(a: Float64Array, n: number, tol = 0): boolean {
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, Math.abs(a[i * n + i]));
  const floor = tol * maxDiag;
  for (let j = 0; j < n; j++) {
    const rj = j * n;
    let d = a[rj + j];
    for (let k = 0; k < j; k++) d -= a[rj + k] * a[rj + k];
    if (!(d > floor) || d <= 0) return false;
    const ljj = Math.sqrt(d);
    a[rj + j] = ljj;
    const inv = 1 / ljj;
    for (let i = j + 1; i < n; i++) {
      const ri = i * n;
      let s = a[ri + j];
      for (let k = 0; k < j; k++) s -= a[ri + k] * a[rj + k];
      a[ri + j] = s * inv;
    }
  }
  return true;
}

/** Solve L·Lᵀ·x = b in place (b becomes x), L the lower triangle from cholesky(). */
export function cholSolve(l: Float64Array, n: number, b: Float64Array): Float64Array {
  for (let i = 0; i < n; i++) {
    const ri = i * n;
    let s = b[i];
    for (let k = 0; k < i; k++) s -= l[ri + k] * b[k];
    b[i] = s / l[ri + i];
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = b[i];
    for (let k = i + 1; k < n; k++) s -= l[k * n + i] * b[k];
    b[i] = s / l[i * n + i];
  }
  return b;
}

/** log det(L·Lᵀ) over the first m pivots (default all). */
export function cholLogDet(l: Float64Array, n: number, m = n): number {
  let s = 0;
  for (let i = 0; i < m; i++) s += Math.log(l[i * n + i]);
  return 2 * s;
}

/** (L·Lᵀ)⁻¹ as a full symmetric matrix. */
export function cholInverse(l: Float64Array, n: number): Float64Array {
  // M = L⁻¹ stored transposed (row i of mt is column i of L⁻¹), then (L⁻¹)ᵀL⁻¹ as dot products
  // of those rows: every inner loop runs over contiguous memory.
  const mt = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    // Column j of L⁻¹: forward substitution of e_j.
    const o = j * n;
    mt[o + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      const li = i * n;
      let s = 0;
      for (let k = j; k < i; k++) s -= l[li + k] * mt[o + k];
      mt[o + i] = s / l[li + i];
    }
  }
  // (LLᵀ)⁻¹[i][j] = Σ_k L⁻¹[k][i] L⁻¹[k][j] = Σ_{k ≥ max(i,j)} mt[i][k] mt[j][k].
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    const oi = i * n;
    for (let j = 0; j <= i; j++) {
      const oj = j * n;
      let s = 0;
      for (let k = i; k < n; k++) s += mt[oi + k] * mt[oj + k];
      out[oi + j] = s;
      out[oj + i] = s;
    }
  }
  return out;
}

/** Inverse of a symmetric positive definite matrix, or null when it is not positive definite. */
export function spdInverse(a: Float64Array, n: number): Float64Array | null {
  const l = Float64Array.from(a);
  if (!cholesky(l, n)) return null;
  return cholInverse(l, n);
}

/** Solve A·x = b for symmetric positive definite A; null when A is not positive definite. */
export function spdSolve(a: Float64Array, n: number, b: ArrayLike<number>): Float64Array | null {
  const l = Float64Array.from(a);
  if (!cholesky(l, n)) return null;
  return cholSolve(l, n, Float64Array.from(b));
}

/**
 * Columns of X (given as columns) that are linearly independent of the columns before them,
 * by a pivoted-in-order Gram–Schmidt on XᵀX: the columns to keep, in order.
 */
export function independentColumns(cols: Float64Array[], tol = 1e-7): number[] {
  const p = cols.length;
  const g = new Float64Array(p * p);
  for (let a = 0; a < p; a++) {
    for (let b = 0; b <= a; b++) {
      let s = 0;
      const ca = cols[a];
      const cb = cols[b];
      for (let i = 0; i < ca.length; i++) s += ca[i] * cb[i];
      g[a * p + b] = s;
      g[b * p + a] = s;
    }
  }
  // Cholesky that skips (drops) a column whose pivot is negligible against its own norm.
  const keep: number[] = [];
  const l = new Float64Array(p * p);
  for (let j = 0; j < p; j++) {
    let d = g[j * p + j];
    const norm = d;
    for (const k of keep) d -= l[j * p + k] * l[j * p + k];
    if (!(norm > 0) || d <= tol * norm) continue;
    const ljj = Math.sqrt(d);
    l[j * p + j] = ljj;
    for (let i = j + 1; i < p; i++) {
      let s = g[i * p + j];
      for (const k of keep) s -= l[i * p + k] * l[j * p + k];
      l[i * p + j] = s / ljj;
    }
    keep.push(j);
  }
  return keep;
}

/** Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: values and vectors (columns of V, row-major). */
export function symmetricEigen(a: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += A[i * n + j] * A[i * n + j];
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const tau = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = Math.sign(tau || 1) / (Math.abs(tau) + Math.sqrt(1 + tau * tau));
        const c = 1 / Math.sqrt(1 + t * t);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p];
          const akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k];
          const aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p];
          const vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) values[i] = A[i * n + i];
  return { values, vectors: V };
}

/**
 * The nearest-in-spirit positive definite matrix: eigenvalues replaced by their absolute values,
 * floored at `floor` × the largest (a Newton step then never climbs).
 */
export function makePositiveDefinite(a: Float64Array, n: number, floor = 1e-8): Float64Array {
  const { values, vectors } = symmetricEigen(a, n);
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  const lam = values.map((v) => Math.max(Math.abs(v), floor * max, 1e-12));
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += vectors[i * n + k] * lam[k] * vectors[j * n + k];
      out[i * n + j] = s;
    }
  }
  return out;
}
