// Bases: how a layer's activations become features. Each basis maps the layer's per-image channel
// vectors (rows of A, n × c) to per-image feature activations (n × features).
//   channels — each channel is a feature (spatial mean or max);
//   nmf      — A ≈ U·W with U, W ≥ 0 and k rows in W (CRAFT-style dictionary); features are the k
//              concepts, an image's activation is its code (U with W fixed);
//   sae      — the TopK sparse autoencoder, trained with the gradient engine (not yet available).
import { LegibleError, rng, seedFrom, type Basis } from '@legible/studies';
import type { LayerActivations } from './extract.ts';

export interface BasisResult {
  features: number;
  /** Row-major [image][feature], rows in the order of the activations' ids. */
  activations: Float32Array;
  info: Record<string, number | string | boolean>;
}

export function applyBasis(basis: Basis, layer: LayerActivations, fitRows: number[], log: (s: string) => void = () => {}): BasisResult {
  switch (basis.kind) {
    case 'channels':
      return { features: layer.channels, activations: basis.aggregate === 'max' ? layer.max : layer.mean, info: { aggregate: basis.aggregate } };
    case 'nmf': {
      const n = layer.mean.length / layer.channels;
      let minimum = Infinity;
      for (const v of layer.mean) minimum = Math.min(minimum, v);
      if (minimum < 0) {
        throw new LegibleError(
          `nmf needs non-negative activations, but layer "${layer.layer}" (tensor ${layer.tensor}) goes down to ${minimum.toPrecision(3)}. Tap a tensor after a ReLU, or use the channels basis for this layer.`,
        );
      }
      if (basis.components > layer.channels) {
        throw new LegibleError(`nmf: components = ${basis.components} is more than layer "${layer.layer}" has channels (${layer.channels}).`);
      }
      const fit = selectRows(layer.mean, layer.channels, fitRows);
      const model = fitNmf(fit, fitRows.length, layer.channels, basis.components, {
        maxIter: basis.max_iter,
        tol: basis.tol,
        seed: seedFrom('nmf', basis.seed, layer.layer),
      });
      const codes = nmfCodes(layer.mean, n, layer.channels, model.W, basis.components);
      log(`nmf ${layer.layer}: k=${basis.components}, ${model.iterations} iterations, relative error ${model.relativeError.toFixed(4)}${model.converged ? '' : ' (max_iter reached)'}`);
      return {
        features: basis.components,
        activations: codes,
        info: { iterations: model.iterations, relative_error: round(model.relativeError), converged: model.converged, fit_rows: fitRows.length },
      };
    }
    case 'sae':
      throw new LegibleError('the sae basis needs the gradient engine, which is not available yet: remove `kind: sae` from bases for now.');
  }
}

function selectRows(a: Float32Array, c: number, rows: number[]): Float64Array {
  const out = new Float64Array(rows.length * c);
  rows.forEach((r, i) => {
    for (let j = 0; j < c; j++) out[i * c + j] = a[r * c + j];
  });
  return out;
}

export interface NmfModel {
  /** k × c, rows of unit L2 norm, ordered by how much they are used (mean code, descending). */
  W: Float64Array;
  U: Float64Array;
  iterations: number;
  relativeError: number;
  converged: boolean;
}

/**
 * Multiplicative-update NMF (Lee & Seung) for the Frobenius loss: A (n × c) ≈ U (n × k) · W (k × c).
 * Stopping rule as scikit-learn's `mu` solver: every 10 iterations, stop when the Frobenius error
 * ‖A − UW‖ improved by less than `tol` × the error at initialisation.
 */
export function fitNmf(A: Float64Array, n: number, c: number, k: number, opts: { maxIter: number; tol: number; seed: number }): NmfModel {
  const r = rng(opts.seed);
  let meanA = 0;
  let normA2 = 0;
  for (const v of A) {
    meanA += v;
    normA2 += v * v;
  }
  meanA /= A.length;
  const scale = Math.sqrt(meanA / k);
  const U = new Float64Array(n * k).map(() => scale * Math.abs(r.normal()));
  const W = new Float64Array(k * c).map(() => scale * Math.abs(r.normal()));
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
function round(x: number): number {
  return Number(x.toPrecision(6));
}
