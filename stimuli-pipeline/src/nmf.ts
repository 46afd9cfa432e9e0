// Non-negative matrix factorisation A (n × c) ≈ U (n × k) · W (k × c), U, W ≥ 0, for the NMF basis
// (CRAFT's dictionary over a layer). The expensive products — A·Wᵀ and Uᵀ·A, O(n·c·k) each —
// run as onnxruntime graphs with A as an initializer, so on a GPU it stays on the device; the
// cheap updates (O(n·k²) and O(c·k²)) run here. Two solvers share those products:
//   hals — hierarchical alternating least squares (Cichocki & Phan): exact updates of one
//          column of U or row of W at a time; converges in far fewer iterations than mu;
//   mu   — Lee & Seung's multiplicative updates (scikit-learn's `mu` solver).
// Stopping rule as scikit-learn's: every 10 iterations, stop when the Frobenius error improved by
// less than tol × the error at initialisation.
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { rng } from '@legible/studies';
import { attr, makeGraph, makeModel, node, tensorInfo } from './onnx/graph.ts';
import { DataType, encodeModel, float32Tensor } from './onnx/proto.ts';
import { openSession, type Device } from './runtime.ts';

const EPS = 1e-10;
/** NMF codes never go below EPS (the solver's floor): a code at this float32 value is zero. */
export const NMF_ZERO = Math.fround(EPS);

export type NmfSolver = 'hals' | 'mu';

export interface NmfFitOptions {
  k: number;
  maxIter: number;
  tol: number;
  seed: number;
  solver?: NmfSolver;
  device?: Device;
  /** Start from these factors instead of the seeded random initialisation (benchmarks compare solvers from one start). */
  init?: { U: Float32Array; W: Float32Array };
  /** Stop as soon as the error is at or below this (benchmarks: time to reach a reference loss). */
  targetError?: number;
  log?: (s: string) => void;
}

export interface NmfFit {
  /** k × c. Rows have unit L2 norm and are ordered by how much they are used (mean code, descending). */
  W: Float32Array;
  /** n × k, scaled to match W's normalisation. */
  U: Float32Array;
  iterations: number;
  /** ‖A − UW‖_F / ‖A‖_F. */
  relativeError: number;
  /** ‖A − UW‖_F at each check (every 10 iterations), for convergence plots and benchmarks. */
  history: { iteration: number; error: number; seconds: number }[];
  converged: boolean;
  device: string;
}

/** scikit-learn's `init='random'`: |N(0,1)| · sqrt(mean(A) / k), with our seeded generator. */
export function randomInit(A: Float32Array, n: number, c: number, k: number, seed: number): { U: Float32Array; W: Float32Array } {
  let mean = 0;
  for (const v of A) mean += v;
  mean /= A.length;
  const scale = Math.sqrt(mean / k);
  const r = rng(seed);
  const W = Float32Array.from({ length: k * c }, () => scale * Math.abs(r.normal()));
  const U = Float32Array.from({ length: n * k }, () => scale * Math.abs(r.normal()));
  return { U, W };
}

/** Sessions computing the products of A (n × c, fixed) with the current factors. */
class Products {
  private constructor(
    private readonly fromW: InferenceSession,
    private readonly fromU: InferenceSession,
    private readonly ort: typeof import('onnxruntime-node'),
    readonly n: number,
    readonly c: number,
    readonly k: number,
    readonly device: string,
  ) {}

  static async create(A: Float32Array, n: number, c: number, k: number, device?: Device, log?: (s: string) => void): Promise<Products> {
    const ort = await import('onnxruntime-node');
    const a = float32Tensor('A', [n, c], A);
    // AWt = A·Wᵀ (n × k) and WWt = W·Wᵀ (k × k), from W.
    const gW = makeModel({
      graph: makeGraph({
        name: 'nmf_from_w',
        inputs: [tensorInfo('W', DataType.FLOAT, [k, c])],
        outputs: [tensorInfo('AWt', DataType.FLOAT, [n, k]), tensorInfo('WWt', DataType.FLOAT, [k, k])],
        initializers: [a],
        nodes: [
          node('Gemm', ['A', 'W'], ['AWt'], [attr.int('transB', 1)], { name: 'a_wt' }),
          node('Gemm', ['W', 'W'], ['WWt'], [attr.int('transB', 1)], { name: 'w_wt' }),
        ],
      }),
    });
    // UtA = Uᵀ·A (k × c) and UtU = Uᵀ·U (k × k), from U.
    const gU = makeModel({
      graph: makeGraph({
        name: 'nmf_from_u',
        inputs: [tensorInfo('U', DataType.FLOAT, [n, k])],
        outputs: [tensorInfo('UtA', DataType.FLOAT, [k, c]), tensorInfo('UtU', DataType.FLOAT, [k, k])],
        initializers: [a],
        nodes: [
          node('Gemm', ['U', 'A'], ['UtA'], [attr.int('transA', 1)], { name: 'ut_a' }),
          node('Gemm', ['U', 'U'], ['UtU'], [attr.int('transA', 1)], { name: 'ut_u' }),
        ],
      }),
    });
    const w = await openSession(encodeModel(gW), { device, log });
    const u = await openSession(encodeModel(gU), { device: w.device });
    return new Products(w.session, u.session, ort, n, c, k, w.device);
  }

  async withW(W: Float32Array): Promise<{ AWt: Float32Array; WWt: Float32Array }> {
    const out = await this.fromW.run({ W: new this.ort.Tensor('float32', W, [this.k, this.c]) });
    return { AWt: (out.AWt as Tensor).data as Float32Array, WWt: (out.WWt as Tensor).data as Float32Array };
  }

  async withU(U: Float32Array): Promise<{ UtA: Float32Array; UtU: Float32Array }> {
    const out = await this.fromU.run({ U: new this.ort.Tensor('float32', U, [this.n, this.k]) });
    return { UtA: (out.UtA as Tensor).data as Float32Array, UtU: (out.UtU as Tensor).data as Float32Array };
  }

  async release(): Promise<void> {
    await this.fromW.release();
    await this.fromU.release();
  }
}

export async function fitNmf(A: Float32Array, n: number, c: number, opts: NmfFitOptions): Promise<NmfFit> {
  const { k } = opts;
  const solver = opts.solver ?? 'hals';
  let normA2 = 0;
  for (const v of A) normA2 += v * v;
  const start = opts.init ?? randomInit(A, n, c, k, opts.seed);
  const U = Float32Array.from(start.U);
  const W = Float32Array.from(start.W);
  const products = await Products.create(A, n, c, k, opts.device, opts.log);
  const t0 = performance.now();
  const history: NmfFit['history'] = [];
  let initial = NaN;
  let previous = NaN;
  let error = NaN;
  let iterations = 0;
  let converged = false;
  try {
    // Each iteration updates U, then W (scikit-learn's order). The error of the current (U, W) comes
    // from products already at hand: ‖A‖² − 2⟨AWᵀ, U⟩ + ⟨UᵀU, WWᵀ⟩.
    let UtU: Float32Array | Float64Array = gram(U, n, k, true);
    if (solver === 'hals') {
      // HALS does better starting with W (few numbers) fitted to the initial U: W, then (U, W)….
      const first = await products.withU(U);
      halsW(W, first.UtA, first.UtU, k, c);
    }
    for (let it = 0; ; it++) {
      const { AWt, WWt } = await products.withW(W);
      if (it % 10 === 0 || it === opts.maxIter) {
        error = Math.sqrt(Math.max(0, normA2 - 2 * dot(AWt, U) + dot(UtU, WWt)));
        history.push({ iteration: it, error, seconds: (performance.now() - t0) / 1000 });
        if (it === 0) initial = error;
        else if ((previous - error) / initial < opts.tol) converged = true;
        previous = error;
        if (converged || (opts.targetError !== undefined && error <= opts.targetError)) break;
      }
      if (it === opts.maxIter) break;
      iterations = it + 1;
      if (solver === 'hals') halsU(U, AWt, WWt, n, k);
      else muU(U, AWt, WWt, n, k);
      const products2 = await products.withU(U);
      UtU = products2.UtU;
      if (solver === 'hals') halsW(W, products2.UtA, UtU, k, c);
      else muW(W, products2.UtA, UtU, k, c);
    }
  } finally {
    await products.release();
  }
  const ordered = normaliseAndOrder(U, W, n, c, k);
  return { ...ordered, iterations, relativeError: error / Math.sqrt(normA2 || 1), history, converged, device: products.device };
}

/** HALS for W's rows with U fixed: W[j] ← max(ε, W[j] + (UᵀA[j] − (UᵀU·W)[j]) / UᵀU[j,j]). */
function halsW(W: Float32Array, UtA: Float32Array, UtU: Float32Array, k: number, c: number): void {
  for (let j = 0; j < k; j++) {
    const d = UtU[j * k + j] || EPS;
    for (let q = 0; q < c; q++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += UtU[j * k + l] * W[l * c + q];
      W[j * c + q] = Math.max(EPS, W[j * c + q] + (UtA[j * c + q] - s) / d);
    }
  }
}

/** HALS for U's columns with W fixed: U[:,j] ← max(ε, U[:,j] + (AWᵀ[:,j] − (U·WWᵀ)[:,j]) / WWᵀ[j,j]). */
export function halsU(U: Float32Array, AWt: Float32Array, WWt: Float32Array, n: number, k: number): void {
  for (let j = 0; j < k; j++) {
    const d = WWt[j * k + j] || EPS;
    for (let i = 0; i < n; i++) {
      let s = 0;
      const row = i * k;
      for (let l = 0; l < k; l++) s += U[row + l] * WWt[l * k + j];
      U[row + j] = Math.max(EPS, U[row + j] + (AWt[row + j] - s) / d);
    }
  }
}

function muW(W: Float32Array, UtA: Float32Array, UtU: Float32Array, k: number, c: number): void {
  const next = new Float32Array(W.length);
  for (let j = 0; j < k; j++) {
    for (let q = 0; q < c; q++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += UtU[j * k + l] * W[l * c + q];
      next[j * c + q] = (W[j * c + q] * UtA[j * c + q]) / (s + EPS);
    }
  }
  W.set(next);
}

function muU(U: Float32Array, AWt: Float32Array, WWt: Float32Array, n: number, k: number): void {
  const row = new Float64Array(k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let l = 0; l < k; l++) s += U[i * k + l] * WWt[l * k + j];
      row[j] = (U[i * k + j] * AWt[i * k + j]) / (s + EPS);
    }
    for (let j = 0; j < k; j++) U[i * k + j] = row[j];
  }
}

/** Unit-norm rows of W (scale moved into U); concepts ordered by mean code, descending. */
function normaliseAndOrder(U: Float32Array, W: Float32Array, n: number, c: number, k: number): { U: Float32Array; W: Float32Array } {
  const norms = Array.from({ length: k }, (_, j) => Math.hypot(...W.subarray(j * c, j * c + c)) || 1);
  const usage = norms.map((norm, j) => {
    let s = 0;
    for (let i = 0; i < n; i++) s += U[i * k + j];
    return s * norm;
  });
  const order = usage.map((_, j) => j).sort((a, b) => usage[b] - usage[a] || a - b);
  const W2 = new Float32Array(k * c);
  const U2 = new Float32Array(n * k);
  order.forEach((src, dst) => {
    for (let q = 0; q < c; q++) W2[dst * c + q] = W[src * c + q] / norms[src];
    for (let i = 0; i < n; i++) U2[i * k + dst] = U[i * k + src] * norms[src];
  });
  return { U: U2, W: W2 };
}

/** W·Wᵀ of a k × c matrix, or (transpose) Uᵀ·U of an n × k one. */
function gram(M: Float32Array, rows: number, cols: number, transpose = false): Float64Array {
  if (transpose) {
    const G = new Float64Array(cols * cols);
    for (let i = 0; i < rows; i++) {
      for (let a = 0; a < cols; a++) {
        const v = M[i * cols + a];
        if (v === 0) continue;
        for (let b = a; b < cols; b++) G[a * cols + b] += v * M[i * cols + b];
      }
    }
    for (let a = 0; a < cols; a++) for (let b = 0; b < a; b++) G[a * cols + b] = G[b * cols + a];
    return G;
  }
  const G = new Float64Array(rows * rows);
  for (let a = 0; a < rows; a++) {
    for (let b = a; b < rows; b++) {
      let s = 0;
      for (let q = 0; q < cols; q++) s += M[a * cols + q] * M[b * cols + q];
      G[a * rows + b] = s;
      G[b * rows + a] = s;
    }
  }
  return G;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Codes of rows with W fixed (non-negative least squares, by HALS sweeps): an image's activation on
 * each concept. `rows` is b × c; returns b × k. A·Wᵀ runs in onnxruntime.
 */
export class NmfEncoder {
  private constructor(
    private readonly session: InferenceSession,
    private readonly ort: typeof import('onnxruntime-node'),
    private readonly WWt: Float32Array,
    readonly k: number,
    readonly c: number,
  ) {}

  static async create(W: Float32Array, k: number, c: number, device?: Device): Promise<NmfEncoder> {
    const ort = await import('onnxruntime-node');
    const model = makeModel({
      graph: makeGraph({
        name: 'nmf_codes',
        inputs: [tensorInfo('A', DataType.FLOAT, ['b', c])],
        outputs: [tensorInfo('AWt', DataType.FLOAT, ['b', k])],
        initializers: [float32Tensor('W', [k, c], W)],
        nodes: [node('Gemm', ['A', 'W'], ['AWt'], [attr.int('transB', 1)], { name: 'a_wt' })],
      }),
    });
    const { session } = await openSession(encodeModel(model), { device });
    return new NmfEncoder(session, ort, Float32Array.from(gram(W, k, c)), k, c);
  }

  async encode(rows: Float32Array, b: number, sweeps = 200): Promise<Float32Array> {
    const out = await this.session.run({ A: new this.ort.Tensor('float32', rows, [b, this.c]) });
    const AWt = (out.AWt as Tensor).data as Float32Array;
    // Start from the unconstrained projection, clipped; HALS sweeps converge from there quickly.
    const U = new Float32Array(b * this.k);
    for (let i = 0; i < U.length; i++) U[i] = Math.max(EPS, AWt[i] / (this.WWt[(i % this.k) * (this.k + 1)] || 1));
    for (let s = 0; s < sweeps; s++) halsU(U, AWt, this.WWt, b, this.k);
    return U;
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
