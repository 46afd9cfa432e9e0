// Minimisation of a smooth function with its gradient: a damped Newton method with a Hessian the
// caller supplies (e.g. differences of the gradient), made positive definite, while far from the
// optimum; then BFGS updates of the last such Hessian, with Armijo backtracking. Small
// dimensions (the GLMM's θ and β), so matrices are dense and solved by Cholesky.
import { cholesky, cholSolve, makePositiveDefinite } from './linalg.ts';

export interface FG {
  f: number;
  g: Float64Array;
}

export interface MinimizeOptions {
  /** The Hessian at x (symmetric, n×n row-major), or an approximation of it; `at` is f and g at x. */
  hessian: (x: Float64Array, at: FG) => Float64Array;
  /** Stop when the Newton decrement gᵀB⁻¹g falls below this (in the units of f). */
  tol?: number;
  /** Refresh the Hessian at every step while the decrement is above this; BFGS updates below it. */
  newtonAbove?: number;
  maxIter?: number;
  /** Called once per iteration (for tracing). */
  trace?: (iter: number, x: Float64Array, fg: FG, decrement: number) => void;
}

export interface MinimizeResult {
  x: Float64Array;
  f: number;
  g: Float64Array;
  iterations: number;
  evaluations: number;
  converged: boolean;
  /** The last Newton decrement. */
  decrement: number;
}

export function minimize(fg: (x: Float64Array) => FG, x0: Float64Array, opts: MinimizeOptions): MinimizeResult {
  const n = x0.length;
  const tol = opts.tol ?? 1e-10;
  const newtonAbove = opts.newtonAbove ?? 1;
  const maxIter = opts.maxIter ?? 200;
  let x = Float64Array.from(x0);
  let cur = fg(x);
  let evaluations = 1;
  let B = makePositiveDefinite(opts.hessian(x, cur), n);
  let fresh = true;
  let decrement = Infinity;
  for (let iter = 1; iter <= maxIter; iter++) {
    const dir = newtonDirection(B, cur.g, n);
    decrement = 0;
    for (let i = 0; i < n; i++) decrement -= cur.g[i] * dir[i];
    opts.trace?.(iter, x, cur, decrement);
    if (decrement < tol) return { x, f: cur.f, g: cur.g, iterations: iter - 1, evaluations, converged: true, decrement };
    let alpha = 1;
    let next: FG | null = null;
    let xn = x;
    for (let tries = 0; tries < 40; tries++) {
      xn = new Float64Array(n);
      for (let i = 0; i < n; i++) xn[i] = x[i] + alpha * dir[i];
      const cand = fg(xn);
      evaluations++;
      if (Number.isFinite(cand.f) && cand.f <= cur.f - 1e-4 * alpha * decrement + 1e-13 * Math.abs(cur.f)) {
        next = cand;
        break;
      }
      alpha *= 0.5;
    }
    if (!next) {
      // No decrease along the quasi-Newton direction: try once more with a fresh Hessian.
      if (!fresh) {
        B = makePositiveDefinite(opts.hessian(x, cur), n);
        fresh = true;
        continue;
      }
      return { x, f: cur.f, g: cur.g, iterations: iter, evaluations, converged: decrement < Math.max(100 * tol, 1e-6), decrement };
    }
    const s = new Float64Array(n);
    const y = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      s[i] = xn[i] - x[i];
      y[i] = next.g[i] - cur.g[i];
    }
    x = xn;
    cur = next;
    if (decrement > newtonAbove) {
      B = makePositiveDefinite(opts.hessian(x, cur), n);
      fresh = true;
    } else {
      bfgsUpdate(B, s, y, n);
      fresh = false;
    }
  }
  return { x, f: cur.f, g: cur.g, iterations: maxIter, evaluations, converged: false, decrement };
}

/** −B⁻¹g, B positive definite (a diagonal shift is added if rounding says otherwise). */
export function newtonDirection(B: Float64Array, g: Float64Array, n: number): Float64Array {
  let shift = 0;
  let maxDiag = 0;
  for (let i = 0; i < n; i++) maxDiag = Math.max(maxDiag, Math.abs(B[i * n + i]));
  for (let attempt = 0; attempt < 60; attempt++) {
    const l = Float64Array.from(B);
    if (shift) for (let i = 0; i < n; i++) l[i * n + i] += shift;
    if (cholesky(l, n)) {
      const dir = Float64Array.from(g, (v) => -v);
      return cholSolve(l, n, dir);
    }
    shift = shift === 0 ? Math.max(1e-10 * maxDiag, 1e-12) : shift * 10;
  }
  return Float64Array.from(g, (v) => -v);
}

/** BFGS update of a Hessian approximation, skipped when the curvature condition fails. */
function bfgsUpdate(B: Float64Array, s: Float64Array, y: Float64Array, n: number): void {
  let sy = 0;
  let ss = 0;
  let yy = 0;
  for (let i = 0; i < n; i++) {
    sy += s[i] * y[i];
    ss += s[i] * s[i];
    yy += y[i] * y[i];
  }
  if (!(sy > 1e-10 * Math.sqrt(ss * yy))) return;
  const bs = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (let j = 0; j < n; j++) v += B[i * n + j] * s[j];
    bs[i] = v;
  }
  let sbs = 0;
  for (let i = 0; i < n; i++) sbs += s[i] * bs[i];
  if (!(sbs > 0)) return;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) B[i * n + j] += (y[i] * y[j]) / sy - (bs[i] * bs[j]) / sbs;
}
