// Non-negative matrix factorisation A (n × c) ≈ U (n × k) · W (k × c), U, W ≥ 0, for the NMF basis
// (CRAFT's dictionary over a layer). The expensive products — A·Wᵀ and Uᵀ·A, O(n·c·k) each —
// run as onnxruntime graphs; A is a graph input, fed on every call as a tensor over the caller's
// Float32Array (no copy, nothing embedded in the sessions, so opening them costs milliseconds at
// any size). The cheap updates (O(n·k²) and O(c·k²)) run here. Two solvers share those products:
//   hals — hierarchical alternating least squares (Cichocki & Phan): exact updates of one
//          column of U or row of W at a time, U swept a row at a time (the row and its gradient in
//          cache; the gradient comes with the products, so a code held at the floor costs nothing).
//          `sweeps` allows several sweeps per pair of products (Gillis & Glineur's accelerated HALS);
//          the default is one: measured on activation-like data (bench/nmf.ts, 5,000 × 512, k = 25),
//          more sweeps lower the error faster in the first iterations but settle in worse local
//          minima, and reach scikit-learn's final loss later (2–8 sweeps: 41–220 iterations against
//          39 with one), as the O(n·k²) sweeps in TypeScript cost as much as a product in onnxruntime;
//          From SWEEP_WORKER_ROWS rows, U's rows are swept on two threads (nmf-sweep.ts: the main
//          thread and a worker claim chunks of rows; bitwise the one-thread result, as the rows are
//          independent);
//   mu   — Lee & Seung's multiplicative updates (scikit-learn's `mu` solver).
// UᵀA is computed as Aᵀ·U over a transposed copy of A, made once per fit (see Products).
// Where an iteration's time goes at 50,000 × 2048, k = 25, 2 threads (bench/nmf-parts.ts, a quiet
// machine, before the sweep worker): A·Wᵀ 45 ms, Aᵀ·U 27 ms, the sweep over U's rows 66 ms on one
// thread; the sweep over W and the error's dot products a few ms. On two threads the sweep took
// 42 ms (a shared machine, load 1.6). The transposed copy costs 2.2 s once (quiet), mostly the
// first touch of 400 MB of fresh memory. Gemm(A, U, transA), which would need no copy, is the slower
// product (85 against 46 ms, load 1.6; 63 against 40 ms alternating in one process, load 2.2): over
// 100+ iterations more than the copy costs.
// Stopping rule as scikit-learn's: every 10 iterations, stop when the Frobenius error improved by
// less than tol × the error at initialisation. Everything is deterministic for a seed: the products
// run with a fixed thread count's fixed partition, each row of U and W is swept by the same
// arithmetic in a fixed order whichever thread sweeps it.
import { availableParallelism } from 'node:os';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { LegibleError, rng } from '@legible/studies';
import { attr, makeGraph, makeModel, node, tensorInfo } from './onnx/graph.ts';
import { DataType, encodeModel } from './onnx/proto.ts';
import { openSession, type Device } from './runtime.ts';

import { EPS, halsRows, nmfCodes, nmfGram, nnlsRow } from './hals.ts';
import { RowSweep } from './nmf-sweep.ts';

export { halsRows, nmfCodes, nmfGram, nnlsRow };
/** NMF codes never go below EPS (the solver's floor): a code at this float32 value is zero. */
export const NMF_ZERO = Math.fround(EPS);

/** HALS: at most this many sweeps over U's rows / W per pair of products (see above) … */
const U_SWEEPS = 1;
const W_SWEEPS = 1;
/**
 * Below this many multiply-adds per product (n·c·k), the products run on one onnxruntime thread: at
 * 5,000 × 512, k = 25 (64 M), one thread took 1.4 s to the reference loss against 2.5 s with two
 * (bench/nmf.ts's data; a shared machine), as the threads' hand-offs outweigh the work.
 */
const SMALL_PRODUCTS = 2 ** 27;
/** The products use a transposed copy of A when it takes at most this many bytes (see Products). */
const TRANSPOSE_BYTES = 2 ** 31;
/** … a row (U) or the whole of W stopping once a sweep moves it by less than this × its first sweep. */
const SWEEP_STOP = 0.01;
/**
 * HALS sweeps U's rows on two threads (nmf-sweep.ts) from this many rows, unless `threads` is 1 or
 * the machine has one core. Not tuned finely: below it a sweep takes well under a millisecond, and
 * the worker's boot (about 35 ms of CPU) would be a sizeable part of a small fit.
 */
const SWEEP_WORKER_ROWS = 1000;

export type NmfSolver = 'hals' | 'mu';

export interface NmfFitOptions {
  k: number;
  maxIter: number;
  tol: number;
  seed: number;
  solver?: NmfSolver;
  device?: Device;
  /**
   * onnxruntime's intra-op threads for the products (0 or absent: onnxruntime's default, all cores).
   * Small products (n·c·k ≤ SMALL_PRODUCTS) run on one thread whatever this says.
   */
  threads?: number;
  /** Start from these factors instead of the seeded random initialisation (benchmarks compare solvers from one start). */
  init?: { U: Float32Array; W: Float32Array };
  /** Stop as soon as the error is at or below this, checked every iteration (benchmarks: time to reach a reference loss). */
  targetError?: number;
  /**
   * HALS: sweep U's rows on two threads (nmf-sweep.ts; default: from SWEEP_WORKER_ROWS rows, unless
   * `threads` is 1 or the machine has one core). The result is bitwise the same either way.
   */
  sweepWorker?: boolean;
  /** HALS sweeps per pair of products (default 1 and 1: plain HALS; more: accelerated HALS). */
  sweeps?: { U: number; W: number };
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
  /** ‖A − UW‖_F at each check (every 10 iterations; every iteration with `targetError`), for convergence plots and benchmarks. */
  history: { iteration: number; error: number; seconds: number }[];
  converged: boolean;
  device: string;
}

/** scikit-learn's `init='random'`: |N(0,1)| · sqrt(mean(A) / k), with our seeded generator. */
export function randomInit(A: Float32Array, n: number, c: number, k: number, seed: number): { U: Float32Array; W: Float32Array } {
  let mean = 0;
  for (let i = 0; i < A.length; i++) mean += A[i];
  mean /= A.length;
  const scale = Math.sqrt(mean / k);
  const r = rng(seed);
  const W = Float32Array.from({ length: k * c }, () => scale * Math.abs(r.normal()));
  const U = Float32Array.from({ length: n * k }, () => scale * Math.abs(r.normal()));
  return { U, W };
}

/**
 * Sessions computing the products of A (n × c, fixed) with the current factors. A is an input of
 * both graphs, wrapped once in a tensor over the caller's array and fed to every run.
 */
class Products {
  private constructor(
    private readonly fromW: InferenceSession,
    private readonly fromU: InferenceSession,
    private readonly ort: typeof import('onnxruntime-node'),
    private readonly a: Tensor,
    private readonly at: Tensor | null,
    readonly n: number,
    readonly c: number,
    readonly k: number,
    readonly device: string,
  ) {}

  static async create(A: Float32Array, n: number, c: number, k: number, device: Device | undefined, threads: number | undefined, spinning: boolean, log?: (s: string) => void): Promise<Products> {
    const ort = await import('onnxruntime-node');
    const inputA = tensorInfo('A', DataType.FLOAT, [n, c]);
    // AWt = A·Wᵀ (n × k) and WWt = W·Wᵀ (k × k) from W, and the gradient of ½‖A − UW‖² in U,
    // U·WWᵀ − AWᵀ (n × k), from which HALS's sweeps over U start.
    const gW = makeModel({
      graph: makeGraph({
        name: 'nmf_from_w',
        inputs: [inputA, tensorInfo('W', DataType.FLOAT, [k, c]), tensorInfo('U', DataType.FLOAT, [n, k])],
        outputs: [tensorInfo('AWt', DataType.FLOAT, [n, k]), tensorInfo('WWt', DataType.FLOAT, [k, k]), tensorInfo('GradU', DataType.FLOAT, [n, k])],
        nodes: [
          node('Gemm', ['A', 'W'], ['AWt'], [attr.int('transB', 1)], { name: 'a_wt' }),
          node('Gemm', ['W', 'W'], ['WWt'], [attr.int('transB', 1)], { name: 'w_wt' }),
          node('Gemm', ['U', 'WWt', 'AWt'], ['GradU'], [attr.float('beta', -1)], { name: 'grad_u' }),
        ],
      }),
    });
    // UtA = Uᵀ·A (k × c) and UtU = Uᵀ·U (k × k), from U. With A's transpose at hand (within
    // TRANSPOSE_BYTES), UᵀA is computed as Aᵀ·U (c × k, transposed back here): onnxruntime's GEMM
    // is about 2 × faster with the big matrix as its first operand than as a second one multiplied
    // by only k rows (bench/nmf-parts.ts, 50,000 × 2048, k = 25, 2 threads: 27 against 60 ms).
    const At = n * c * 4 <= TRANSPOSE_BYTES ? transpose(A, n, c) : null;
    const gU = makeModel({
      graph: makeGraph({
        name: 'nmf_from_u',
        inputs: [At ? tensorInfo('At', DataType.FLOAT, [c, n]) : inputA, tensorInfo('U', DataType.FLOAT, [n, k])],
        outputs: [At ? tensorInfo('AtU', DataType.FLOAT, [c, k]) : tensorInfo('UtA', DataType.FLOAT, [k, c]), tensorInfo('UtU', DataType.FLOAT, [k, k])],
        nodes: [
          At ? node('Gemm', ['At', 'U'], ['AtU'], [], { name: 'at_u' }) : node('Gemm', ['U', 'A'], ['UtA'], [attr.int('transA', 1)], { name: 'ut_a' }),
          node('Gemm', ['U', 'U'], ['UtU'], [attr.int('transA', 1)], { name: 'ut_u' }),
        ],
      }),
    });
    const w = await openSession(encodeModel(gW), { device, threads, log, spinning });
    const u = await openSession(encodeModel(gU), { device: w.device, threads, spinning });
    return new Products(w.session, u.session, ort, new ort.Tensor('float32', A, [n, c]), At && new ort.Tensor('float32', At, [c, n]), n, c, k, w.device);
  }

  /** Products with the current W, and the gradient in U at the current U. */
  async withW(W: Float32Array, U: Float32Array): Promise<{ AWt: Float32Array; WWt: Float32Array; GradU: Float32Array }> {
    const out = await this.fromW.run({ A: this.a, W: new this.ort.Tensor('float32', W, [this.k, this.c]), U: new this.ort.Tensor('float32', U, [this.n, this.k]) });
    return { AWt: (out.AWt as Tensor).data as Float32Array, WWt: (out.WWt as Tensor).data as Float32Array, GradU: (out.GradU as Tensor).data as Float32Array };
  }

  async withU(U: Float32Array): Promise<{ UtA: Float32Array; UtU: Float32Array }> {
    const u = new this.ort.Tensor('float32', U, [this.n, this.k]);
    if (!this.at) {
      const out = await this.fromU.run({ A: this.a, U: u });
      return { UtA: (out.UtA as Tensor).data as Float32Array, UtU: (out.UtU as Tensor).data as Float32Array };
    }
    const out = await this.fromU.run({ At: this.at, U: u });
    return { UtA: transpose((out.AtU as Tensor).data as Float32Array, this.c, this.k), UtU: (out.UtU as Tensor).data as Float32Array };
  }

  async release(): Promise<void> {
    await this.fromW.release();
    await this.fromU.release();
  }
}

export async function fitNmf(A: Float32Array, n: number, c: number, opts: NmfFitOptions): Promise<NmfFit> {
  const { k } = opts;
  const solver = opts.solver ?? 'hals';
  const uSweeps = opts.sweeps?.U ?? U_SWEEPS;
  const wSweeps = opts.sweeps?.W ?? W_SWEEPS;
  const t0 = performance.now();
  // The worker sweeping half of U's rows boots first, while the rest gets ready (see RowSweep).
  const useWorker = opts.sweepWorker ?? (n >= SWEEP_WORKER_ROWS && opts.threads !== 1 && availableParallelism() > 1);
  const rowSweep = solver === 'hals' && useWorker ? new RowSweep(n, k, uSweeps, SWEEP_STOP) : null;
  let products: Products | null = null;
  try {
    let normA2 = 0;
    for (let i = 0; i < A.length; i++) normA2 += A[i] * A[i];
    const start = opts.init ?? randomInit(A, n, c, k, opts.seed);
    const U = Float32Array.from(start.U);
    const W = Float32Array.from(start.W);
    // onnxruntime's threads do not spin waiting for work while the worker sweeps: they would take
    // the core the worker needs (50,000 × 2048, 2 threads, shared machine at load 3: 38.7–47.1 s to
    // the reference loss with spinning, 31.4–34.2 s without).
    const spinning = !rowSweep;
    products = await Products.create(A, n, c, k, opts.device, n * c * k <= SMALL_PRODUCTS ? 1 : opts.threads, spinning, opts.log);
    const history: NmfFit['history'] = [];
    const everyIteration = opts.targetError !== undefined;
    let initial = NaN;
    let previous = NaN;
    let error = NaN;
    let iterations = 0;
    let converged = false;
    // Scratch for the W sweeps (c entries of one row's gradient), allocated once.
    const scratch = new Float64Array(c);
    // Each iteration updates U, then W (scikit-learn's order). The error of the current (U, W) comes
    // from products already at hand: ‖A‖² − 2⟨AWᵀ, U⟩ + ⟨UᵀU, WWᵀ⟩.
    let UtU: Float32Array | Float64Array;
    if (solver === 'hals') {
      // HALS does better starting with W (few numbers) fitted to the initial U: W, then (U, W)….
      const first = await products.withU(U);
      UtU = first.UtU;
      halsW(W, first.UtA, first.UtU, k, c, wSweeps, scratch);
    } else UtU = columnGram(U, n, k);
    for (let it = 0; ; it++) {
      const { AWt, WWt, GradU } = await products.withW(W, U);
      if (it % 10 === 0 || it === opts.maxIter || everyIteration) {
        error = Math.sqrt(Math.max(0, normA2 - 2 * dot(AWt, U) + dot(UtU, WWt)));
        history.push({ iteration: it, error, seconds: (performance.now() - t0) / 1000 });
        if (it === 0) initial = error;
        else if (it % 10 === 0) {
          if ((previous - error) / initial < opts.tol) converged = true;
          previous = error;
        }
        if (it === 0) previous = error;
        if (converged || (opts.targetError !== undefined && error <= opts.targetError)) break;
      }
      if (it === opts.maxIter) break;
      iterations = it + 1;
      if (solver === 'hals') {
        if (rowSweep) await rowSweep.sweep(U, WWt, GradU);
        else halsRows(U, AWt, WWt, n, k, uSweeps, SWEEP_STOP, GradU);
      } else muU(U, AWt, WWt, n, k);
      const products2 = await products.withU(U);
      UtU = products2.UtU;
      if (solver === 'hals') halsW(W, products2.UtA, UtU, k, c, wSweeps, scratch);
      else muW(W, products2.UtA, UtU, k, c);
    }
    const ordered = normaliseAndOrder(U, W, n, c, k);
    opts.log?.(`NMF: ${iterations} iterations${rowSweep ? `; U's rows swept on two threads (the worker took ${rowSweep.workerRows.toLocaleString('en')} row sweeps)` : ''}`);
    return { ...ordered, iterations, relativeError: error / Math.sqrt(normA2 || 1), history, converged, device: products.device };
  } finally {
    await rowSweep?.close();
    await products?.release();
  }
}

/**
 * HALS for W with U fixed, up to `sweeps` sweeps over its rows:
 * W[j] ← max(ε, W[j] + (UᵀA[j] − (UᵀU·W)[j]) / UᵀU[j,j]); stops when a sweep moves W by less than
 * SWEEP_STOP × the first sweep (squared Frobenius norms).
 */
export function halsW(W: Float32Array, UtA: Float32Array, UtU: Float32Array, k: number, c: number, sweeps: number, s: Float64Array): void {
  let first = 0;
  for (let sweep = 0; sweep < sweeps; sweep++) {
    let moved = 0;
    for (let j = 0; j < k; j++) {
      const d = UtU[j * k + j] || EPS;
      for (let q = 0; q < c; q++) s[q] = 0;
      for (let l = 0; l < k; l++) {
        const g = UtU[j * k + l];
        if (g === 0) continue;
        const off = l * c;
        for (let q = 0; q < c; q++) s[q] += g * W[off + q];
      }
      const off = j * c;
      for (let q = 0; q < c; q++) {
        const old = W[off + q];
        const v = Math.max(EPS, old + (UtA[off + q] - s[q]) / d);
        W[off + q] = v;
        moved += (v - old) * (v - old);
      }
    }
    if (sweep === 0) first = moved;
    else if (moved <= SWEEP_STOP * SWEEP_STOP * first) break;
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

/** Uᵀ·U of an n × k matrix, in float64 (rows at zero skipped). WWᵀ of a dictionary is `nmfGram`. */
export function columnGram(M: Float32Array, rows: number, cols: number): Float64Array {
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

/** The transpose (cols × rows) of a rows × cols matrix, copied in 8 × 8 tiles. */
function transpose(M: Float32Array, rows: number, cols: number): Float32Array {
  const T = new Float32Array(rows * cols);
  const B = 8;
  for (let i0 = 0; i0 < rows; i0 += B) {
    const i1 = Math.min(rows, i0 + B);
    for (let j0 = 0; j0 < cols; j0 += B) {
      const j1 = Math.min(cols, j0 + B);
      for (let j = j0; j < j1; j++) {
        let w = j * rows + i0;
        for (let r = i0 * cols + j, i = i0; i < i1; i++, r += cols) T[w++] = M[r];
      }
    }
  }
  return T;
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/**
 * Codes of rows with W fixed (non-negative least squares, solved exactly: hals.ts's nmfCodes): an
 * image's activation on each concept. `rows` is b × c; returns b × k. Plain JavaScript in float64
 * (the products are O(b·c·k), a small part of a build's time), the same code as the browser's.
 */
export class NmfEncoder {
  private constructor(
    private readonly W: Float32Array,
    private readonly G: Float64Array,
    readonly k: number,
    readonly c: number,
  ) {}

  static async create(W: Float32Array, k: number, c: number): Promise<NmfEncoder> {
    if (W.length !== k * c) throw new LegibleError(`NMF dictionary: ${W.length} values for k = ${k} concepts × c = ${c} channels`);
    return new NmfEncoder(W, nmfGram(W, k, c), k, c);
  }

  async encode(rows: Float32Array, b: number): Promise<Float32Array> {
    return nmfCodes(rows, b, this.W, this.G, this.k, this.c);
  }

  async release(): Promise<void> {}
}
