// Non-negative least squares with the dictionary fixed: HALS sweeps (the NMF fit's update of U) and
// the exact active-set solve that gives an image's NMF code. Pure arithmetic with no imports, so
// that the browser (the explorer's "try an image" panel) solves exactly what the NmfEncoder solves.

/** The floor of the solvers' factors (codes and dictionary entries never go below it). */
export const EPS = 1e-10;

/**
 * HALS for U with W fixed, row by row (a row of U is an independent non-negative least-squares
 * problem): up to `sweeps` sweeps of U[i,j] ← max(ε, U[i,j] − grad[i,j] / WWᵀ[j,j]) over j, where
 * grad = U·WWᵀ − AWᵀ is kept current as coordinates move (a coordinate that stays put — a code
 * held at the floor — costs nothing). The row and its gradient are kept in float64 while swept; a
 * row stops when a sweep moves it by less than `stop` × its first sweep (`stop` 0: all sweeps).
 * One sweep is exactly the classic column-by-column HALS update of U. `grad` (n × k), when given,
 * is the gradient at the current U (computed with the products); otherwise it is computed here.
 */
export function halsRows(U: Float32Array, AWt: Float32Array, WWt: ArrayLike<number>, n: number, k: number, sweeps: number, stop: number, grad?: Float32Array): void {
  const G = Float64Array.from(WWt);
  const diag = new Float64Array(k);
  for (let j = 0; j < k; j++) diag[j] = 1 / (G[j * k + j] || EPS);
  const r = new Float64Array(k);
  const g = new Float64Array(k);
  const stop2 = stop * stop;
  // The gradient update is unrolled by four (each entry's arithmetic unchanged): 1.5× faster in V8.
  const k4 = k - (k % 4);
  for (let i = 0; i < n; i++) {
    const row = i * k;
    for (let l = 0; l < k; l++) r[l] = U[row + l];
    if (grad) for (let l = 0; l < k; l++) g[l] = grad[row + l];
    else {
      for (let l = 0; l < k; l++) g[l] = -AWt[row + l];
      for (let j = 0; j < k; j++) {
        const v = r[j];
        const gj = j * k;
        for (let l = 0; l < k; l++) g[l] += v * G[gj + l];
      }
    }
    let first = 0;
    for (let sweep = 0; sweep < sweeps; sweep++) {
      let moved = 0;
      for (let j = 0; j < k; j++) {
        const old = r[j];
        const v = Math.max(EPS, old - g[j] * diag[j]);
        if (v === old) continue;
        const delta = v - old;
        r[j] = v;
        moved += delta * delta;
        // G is symmetric: the gradient moves by delta × row j of G.
        const gj = j * k;
        let l = 0;
        for (; l < k4; l += 4) {
          g[l] += delta * G[gj + l];
          g[l + 1] += delta * G[gj + l + 1];
          g[l + 2] += delta * G[gj + l + 2];
          g[l + 3] += delta * G[gj + l + 3];
        }
        for (; l < k; l++) g[l] += delta * G[gj + l];
      }
      if (sweep === 0) {
        first = moved;
        if (first === 0) break;
      } else if (moved <= stop2 * first) break;
    }
    for (let l = 0; l < k; l++) U[row + l] = r[l];
  }
}

/** WWᵀ of a k × c dictionary, in float64 (the solve's G). */
export function nmfGram(W: ArrayLike<number>, k: number, c: number): Float64Array {
  const G = new Float64Array(k * k);
  for (let a = 0; a < k; a++) {
    for (let b = a; b < k; b++) {
      let s = 0;
      for (let q = 0; q < c; q++) s += W[a * c + q] * W[b * c + q];
      G[a * k + b] = s;
      G[b * k + a] = s;
    }
  }
  return G;
}

/**
 * NMF codes of b activation rows (`rows`, b × c) with the dictionary W (k × c) fixed: each row's
 * non-negative least-squares optimum argmin_{u ≥ 0} ‖a − uW‖², floored at EPS. The products W·a
 * and G = WWᵀ (`nmfGram(W)`) are taken in float64 and the problem solved exactly in float64
 * (`nnlsRow`). NmfEncoder.encode and the explorer's browser panel both run this, so the manifest's
 * codes and the browser's are the one optimum of their (float32-close) activations.
 *
 * Why exact, and why float64 throughout: an NMF dictionary's concepts are often nearly parallel
 * (ResNet-50's layer3 at k = 4: cosines up to 0.9988, WWᵀ's condition number 5,300). HALS sweeps
 * then creep along the valley (200 sweeps left codes off the optimum by a factor of two), and a
 * float32 W·a or WWᵀ — round-off of 1e-7 — moves the exact optimum by ~5e-4 relative. From float32
 * activations that two runtimes compute 3e-7 apart (median; a few near-zero channels more), the
 * float64 solve lands within ~2e-5 of each other (explorer/BENCHMARKS.md).
 */
export function nmfCodes(rows: ArrayLike<number>, b: number, W: ArrayLike<number>, G: Float64Array, k: number, c: number): Float32Array {
  const U = new Float32Array(b * k);
  const work = nnlsWorkspace(k);
  const rhs = new Float64Array(k);
  for (let i = 0; i < b; i++) {
    const row = i * c;
    for (let j = 0; j < k; j++) {
      let s = 0;
      const wj = j * c;
      for (let q = 0; q < c; q++) s += rows[row + q] * W[wj + q];
      rhs[j] = s;
    }
    const x = nnlsRow(G, rhs, k, work);
    for (let j = 0; j < k; j++) U[i * k + j] = Math.max(EPS, x[j]);
  }
  return U;
}

/** Scratch arrays for nnlsRow (one set per k, reused across rows). */
export function nnlsWorkspace(k: number) {
  return { x: new Float64Array(k), s: new Float64Array(k), w: new Float64Array(k), L: new Float64Array(k * k), y: new Float64Array(k), passive: new Uint8Array(k), blocked: new Uint8Array(k), idx: new Int32Array(k) };
}

/**
 * min ½uᵀGu − bᵀu subject to u ≥ 0 (G = WWᵀ symmetric positive semi-definite, b = Wa), i.e. the
 * non-negative least-squares problem in normal-equation form, by Lawson & Hanson's active-set
 * method (as Bro & de Jong's FNNLS runs it on the cross-products): move the coordinate with the
 * largest positive negative-gradient into the passive set, solve the unconstrained problem on the
 * passive set (Cholesky), step back to the feasible region where a coordinate would go negative,
 * until no coordinate outside the passive set can lower the objective (KKT, to a tolerance of
 * 1e-12 × the largest |bⱼ| × k). Exact up to float64 round-off in finitely many steps; plain
 * arithmetic in a fixed order, so every JavaScript engine gives the same bits for the same input.
 * A coordinate whose column is (numerically) in the span of the passive ones is left at 0: the
 * optimum's value is then the same, and the rule keeps the choice deterministic. Returns `work.x`.
 */
export function nnlsRow(G: Float64Array, b: Float64Array, k: number, work = nnlsWorkspace(k)): Float64Array {
  const { x, s, w, L, y, passive, blocked, idx } = work;
  x.fill(0);
  passive.fill(0);
  blocked.fill(0);
  let scale = 0;
  for (let j = 0; j < k; j++) scale = Math.max(scale, Math.abs(b[j]));
  if (scale === 0) return x;
  const tol = 1e-12 * scale * k;
  for (let j = 0; j < k; j++) w[j] = b[j];
  // Each outer step adds a coordinate; each inner step removes at least one. 3k + 10 outer steps
  // bound the work should round-off ever make the method cycle (it stops at a feasible point).
  for (let outer = 0; outer < 3 * k + 10; outer++) {
    let enter = -1;
    let best = tol;
    for (let j = 0; j < k; j++) {
      if (!passive[j] && !blocked[j] && w[j] > best) {
        best = w[j];
        enter = j;
      }
    }
    if (enter < 0) break;
    passive[enter] = 1;
    for (let inner = 0; inner <= k; inner++) {
      // s = the unconstrained optimum on the passive set (0 elsewhere).
      let p = 0;
      for (let j = 0; j < k; j++) if (passive[j]) idx[p++] = j;
      if (!solvePassive(G, b, k, idx, p, L, y, s)) {
        // The entering column is (numerically) dependent on the passive ones: leave it at 0.
        passive[enter] = 0;
        blocked[enter] = 1;
        break;
      }
      let feasible = true;
      for (let q = 0; q < p; q++) if (s[idx[q]] <= 0) feasible = false;
      if (feasible) {
        for (let j = 0; j < k; j++) x[j] = s[j];
        break;
      }
      // Step from x towards s as far as feasibility allows; the coordinate that reaches 0 first (and
      // any that round-off takes to 0 or below with it) leaves the passive set.
      let alpha = Infinity;
      let leave = -1;
      for (let q = 0; q < p; q++) {
        const j = idx[q];
        if (s[j] <= 0) {
          const a = x[j] / (x[j] - s[j]);
          if (a < alpha) {
            alpha = a;
            leave = j;
          }
        }
      }
      // Round-off can make the entering coordinate's own solve non-positive (its gradient was within
      // a hair of the tolerance): then it stays out.
      if (inner === 0 && leave === enter) blocked[enter] = 1;
      for (let q = 0; q < p; q++) {
        const j = idx[q];
        x[j] = j === leave ? 0 : x[j] + alpha * (s[j] - x[j]);
        if (x[j] <= 0) {
          x[j] = 0;
          passive[j] = 0;
        }
      }
    }
    // The negative gradient at the new point.
    for (let j = 0; j < k; j++) {
      let g = b[j];
      const gj = j * k;
      for (let l = 0; l < k; l++) g -= G[gj + l] * x[l];
      w[j] = g;
    }
  }
  return x;
}

/** s_P = G_PP⁻¹ b_P by Cholesky (false where G_PP is not numerically positive definite); s is 0 off P. */
function solvePassive(G: Float64Array, b: Float64Array, k: number, idx: Int32Array, p: number, L: Float64Array, y: Float64Array, s: Float64Array): boolean {
  for (let a = 0; a < p; a++) {
    const ia = idx[a];
    for (let c = 0; c <= a; c++) {
      const ic = idx[c];
      let sum = G[ia * k + ic];
      for (let m = 0; m < c; m++) sum -= L[a * k + m] * L[c * k + m];
      if (a === c) {
        // A pivot below 1e-10 of the diagonal: the column is in the span of the others.
        if (!(sum > 1e-10 * G[ia * k + ia])) return false;
        L[a * k + a] = Math.sqrt(sum);
      } else L[a * k + c] = sum / L[c * k + c];
    }
  }
  for (let a = 0; a < p; a++) {
    let sum = b[idx[a]];
    for (let m = 0; m < a; m++) sum -= L[a * k + m] * y[m];
    y[a] = sum / L[a * k + a];
  }
  s.fill(0);
  for (let a = p - 1; a >= 0; a--) {
    let sum = y[a];
    for (let m = a + 1; m < p; m++) sum -= L[m * k + a] * s[idx[m]];
    s[idx[a]] = sum / L[a * k + a];
  }
  return true;
}
