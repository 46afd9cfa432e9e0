// A plain TypeScript NMF by multiplicative updates in float64: the independent reference that the
// onnxruntime solvers of src/nmf.ts are checked against.
import { rng } from '@legible/studies';

export interface NmfModel {
  /** k × c, rows of unit L2 norm, ordered by how much they are used (mean code, descending). */
  W: Float64Array;
  U: Float64Array;
  iterations: number;
  relativeError: number;
  converged: boolean;
}

/**
 * Multiplicative-update NMF (Lee & Seung) for the Frobenius loss: A (n × c) ≈ U (n × k) · W (k × c),
 * updating U then W in each iteration (scikit-learn's order).
 * Stopping rule as scikit-learn's `mu` solver: every 10 iterations, stop when the Frobenius error
 * ‖A − UW‖ improved by less than `tol` × the error at initialisation.
 */
export function fitNmf(
  A: Float64Array,
  n: number,
  c: number,
  k: number,
  opts: { maxIter: number; tol: number; seed: number; init?: { U: ArrayLike<number>; W: ArrayLike<number> } },
): NmfModel {
  const r = rng(opts.seed);
  let meanA = 0;
  let normA2 = 0;
  for (const v of A) {
    meanA += v;
    normA2 += v * v;
  }
  meanA /= A.length;
  const scale = Math.sqrt(meanA / k);
  const U = opts.init ? Float64Array.from(opts.init.U) : new Float64Array(n * k).map(() => scale * Math.abs(r.normal()));
  const W = opts.init ? Float64Array.from(opts.init.W) : new Float64Array(k * c).map(() => scale * Math.abs(r.normal()));
  const eps = 1e-12;
  const frobenius = () => {
    // ‖A − UW‖² = ‖A‖² − 2⟨UᵀA, W⟩ + ⟨UᵀU, WWᵀ⟩
    const loss = normA2 - 2 * dot(matmulAtB(U, A, n, k, c), W) + dot(matmulAtB(U, U, n, k, k), matmulABt(W, W, k, c, k));
    return Math.sqrt(Math.max(0, loss));
  };
  const initial = frobenius();
  let prev = initial;
  let iterations = 0;
  let converged = false;
  let error = initial;
  for (let it = 1; it <= opts.maxIter; it++) {
    iterations = it;
    // U ← U ⊙ (A Wᵀ) ⊘ (U W Wᵀ)
    const AWt = matmulABt(A, W, n, c, k);
    const WWt = matmulABt(W, W, k, c, k);
    const UWWt = matmul(U, WWt, n, k, k);
    for (let i = 0; i < U.length; i++) U[i] *= AWt[i] / (UWWt[i] + eps);
    // W ← W ⊙ (Uᵀ A) ⊘ (Uᵀ U W)
    const UtA = matmulAtB(U, A, n, k, c);
    const UtU = matmulAtB(U, U, n, k, k);
    const UtUW = matmul(UtU, W, k, k, c);
    for (let i = 0; i < W.length; i++) W[i] *= UtA[i] / (UtUW[i] + eps);
    if (it % 10 === 0 || it === opts.maxIter) {
      error = frobenius();
      if ((prev - error) / (initial || 1) < opts.tol) {
        converged = true;
        break;
      }
      prev = error;
    }
  }
  // Unit-norm rows of W (scale moved into U), then order the concepts by mean code.
  for (let j = 0; j < k; j++) {
    let norm = 0;
    for (let q = 0; q < c; q++) norm += W[j * c + q] ** 2;
    norm = Math.sqrt(norm) || 1;
    for (let q = 0; q < c; q++) W[j * c + q] /= norm;
    for (let i = 0; i < n; i++) U[i * k + j] *= norm;
  }
  const usage = Array.from({ length: k }, (_, j) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += U[i * k + j];
    return s;
  });
  const order = usage.map((_, j) => j).sort((a, b) => usage[b] - usage[a] || a - b);
  const W2 = new Float64Array(k * c);
  const U2 = new Float64Array(n * k);
  order.forEach((src, dst) => {
    W2.set(W.subarray(src * c, src * c + c), dst * c);
    for (let i = 0; i < n; i++) U2[i * k + dst] = U[i * k + src];
  });
  return { W: W2, U: U2, iterations, relativeError: error / Math.sqrt(normA2 || 1), converged };
}

/** Codes of new rows with W fixed: non-negative least squares by multiplicative updates. */
export function nmfCodes(A32: Float32Array, n: number, c: number, W: Float64Array, k: number, iterations = 300): Float32Array {
  const A = Float64Array.from(A32);
  const WWt = matmulABt(W, W, k, c, k);
  const AWt = matmulABt(A, W, n, c, k);
  const U = new Float64Array(n * k).fill(1 / k);
  for (let it = 0; it < iterations; it++) {
    const UWWt = matmul(U, WWt, n, k, k);
    for (let i = 0; i < U.length; i++) U[i] *= AWt[i] / (UWWt[i] + 1e-12);
  }
  return Float32Array.from(U);
}

// Small dense kernels (row-major). The pipeline issue moves NMF to onnxruntime graphs.
function matmul(A: Float64Array, B: Float64Array, n: number, m: number, p: number): Float64Array {
  const C = new Float64Array(n * p);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < m; q++) {
      const a = A[i * m + q];
      if (a === 0) continue;
      for (let j = 0; j < p; j++) C[i * p + j] += a * B[q * p + j];
    }
  }
  return C;
}
/** A (n × m) · Bᵀ where B is p × m. */
function matmulABt(A: Float64Array, B: Float64Array, n: number, m: number, p: number): Float64Array {
  const C = new Float64Array(n * p);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < p; j++) {
      let s = 0;
      for (let q = 0; q < m; q++) s += A[i * m + q] * B[j * m + q];
      C[i * p + j] = s;
    }
  }
  return C;
}
/** Aᵀ (m × n) · B where A is n × m and B is n × p. */
function matmulAtB(A: Float64Array, B: Float64Array, n: number, m: number, p: number): Float64Array {
  const C = new Float64Array(m * p);
  for (let i = 0; i < n; i++) {
    for (let q = 0; q < m; q++) {
      const a = A[i * m + q];
      if (a === 0) continue;
      for (let j = 0; j < p; j++) C[q * p + j] += a * B[i * p + j];
    }
  }
  return C;
}
function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}
