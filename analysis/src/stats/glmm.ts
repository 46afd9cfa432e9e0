// Binomial GLMM (logit link) with crossed random intercepts, fitted as lme4's glmer does by
// default (nAGQ = 1, the Laplace approximation):
//
//   deviance(θ, β) = −2 log p(y | û) + |û|² + log det(ΛZᵀWZΛ + I),
//
// where û, the conditional mode of the spherical random effects u (b = Λu, Λ = diag(θ)), comes
// from penalised IRLS at the given θ and β, and W = diag(μ(1−μ)) at û. The deviance is minimised
// over θ ≥ 0 and β together. Unlike lme4 (derivative-free BOBYQA, then Nelder–Mead) we minimise
// with an analytic gradient (implicit differentiation through û, see `gradient`) by projected
// BFGS, and take standard errors from the Hessian of the deviance at the optimum — by central
// differences of that gradient — as lme4 does from its finite-difference Hessian:
// vcov(β̂) = 2·[Hessian⁻¹]_ββ.
import { LegibleError } from '@legible/studies';
import { independentColumns, spdInverse } from './linalg.ts';
import { minimize, type FG } from './optim.ts';
import { pTwoSidedNormal } from './distributions.ts';
import { BlockSystem, type Grouping } from './system.ts';

export type { Grouping } from './system.ts';

export interface GlmmInput {
  /** Response, 0/1. */
  y: Float64Array;
  /** Fixed-effect columns. */
  X: Float64Array[];
  xNames: string[];
  /** Random-intercept grouping factors. */
  groups: Grouping[];
}

export interface GlmmOptions {
  /** Convergence tolerance on the Newton decrement of the outer optimisation (deviance units). */
  tol?: number;
  /** Compute the Hessian for the covariance of β̂ (default true); otherwise use RX as lme4 does without derivatives. */
  hessian?: boolean;
  /** Starting values (e.g. from a fit of a similar model). */
  start?: { theta?: number[]; beta?: number[] };
  maxIter?: number;
}

export interface GlmmFit {
  n: number;
  xNames: string[];
  beta: number[];
  se: number[];
  z: number[];
  p: number[];
  vcov: number[][];
  /** How vcov was obtained: from the Hessian of the deviance (lme4's default) or from RX. */
  vcovMethod: 'hessian' | 'RX';
  /** Random-effect standard deviations (θ: the residual scale of a binomial model is 1). */
  groups: { name: string; levels: number; sd: number }[];
  /** Conditional modes b̂ of each grouping factor, by level. */
  ranef: { name: string; levels: string[]; values: number[] }[];
  logLik: number;
  deviance: number;
  /** Parameters counted for AIC/BIC: fixed effects + variance components. */
  df: number;
  AIC: number;
  BIC: number;
  converged: boolean;
  iterations: number;
  /** Deviance evaluations (each one a PIRLS solve). */
  evaluations: number;
  /** Gradient of the deviance at the optimum, θ then β. */
  gradient: number[];
  /** Fixed-effect columns dropped as linearly dependent on earlier ones. */
  dropped: string[];
  /** Singular fit: a variance component at (or within 1e-4 of) zero. */
  singular: boolean;
  warnings: string[];
  seconds: number;
}

/** Numerically stable log(1 + e^x). */
function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** The Laplace deviance and its gradient as functions of (θ, β), with û kept warm between calls. */
export class LaplaceObjective {
  readonly n: number;
  readonly K: number;
  readonly p: number;
  readonly sys: BlockSystem;
  private readonly y: Float64Array;
  private readonly X: Float64Array[];
  private readonly off: Float64Array;
  private readonly eta: Float64Array;
  private readonly mu: Float64Array;
  private readonly w: Float64Array;
  /** Spherical random effects (system order), the conditional mode after evaluate(). */
  u: Float64Array;
  private theta: Float64Array;
  pirlsIterations = 0;
  evaluations = 0;
  warnings = new Set<string>();

  constructor(input: GlmmInput) {
    this.n = input.y.length;
    this.K = input.groups.length;
    this.p = input.X.length;
    this.y = input.y;
    this.X = input.X;
    this.sys = new BlockSystem(input.groups);
    this.off = new Float64Array(this.n);
    this.eta = new Float64Array(this.n);
    this.mu = new Float64Array(this.n);
    this.w = new Float64Array(this.n);
    this.u = new Float64Array(this.sys.q);
    this.theta = new Float64Array(this.K);
  }

  private setParams(x: ArrayLike<number>): void {
    const { K, p, n, X, off } = this;
    for (let k = 0; k < K; k++) this.theta[k] = x[k];
    off.fill(0);
    for (let c = 0; c < p; c++) {
      const b = x[K + c];
      if (b === 0) continue;
      const col = X[c];
      for (let i = 0; i < n; i++) off[i] += b * col[i];
    }
  }

  /** η for spherical effects v; returns the penalised deviance D + |v|². */
  private penalisedDeviance(v: Float64Array, eta: Float64Array): number {
    const { n, K, off, y, theta } = this;
    const zi = this.sys.zi;
    let dev = 0;
    for (let i = 0; i < n; i++) {
      let e = off[i];
      for (let k = 0; k < K; k++) e += theta[k] * v[zi[i * K + k]];
      eta[i] = e;
      dev += softplus(e) - y[i] * e;
    }
    let uu = 0;
    for (let j = 0; j < v.length; j++) uu += v[j] * v[j];
    return 2 * dev + uu;
  }

  /**
   * PIRLS to the conditional mode û at parameters x = [θ, β]; leaves the system factorised at û.
   * Returns the Laplace deviance.
   */
  evaluate(x: ArrayLike<number>): number {
    this.evaluations++;
    this.setParams(x);
    const { n, K, y, mu, w, theta, sys } = this;
    const zi = sys.zi;
    let pd = this.penalisedDeviance(this.u, this.eta);
    if (!Number.isFinite(pd)) {
      this.u.fill(0);
      pd = this.penalisedDeviance(this.u, this.eta);
    }
    const g = new Float64Array(sys.q);
    const trial = new Float64Array(sys.q);
    const etaTrial = new Float64Array(n);
    for (let iter = 0; iter < 60; iter++) {
      for (let i = 0; i < n; i++) {
        const m = 1 / (1 + Math.exp(-this.eta[i]));
        mu[i] = m;
        w[i] = m * (1 - m);
      }
      sys.factor(w, theta);
      for (let j = 0; j < sys.q; j++) g[j] = -this.u[j];
      for (let i = 0; i < n; i++) {
        const r = y[i] - mu[i];
        for (let k = 0; k < K; k++) g[zi[i * K + k]] += theta[k] * r;
      }
      const delta = sys.solve(g);
      let dec = 0;
      for (let j = 0; j < sys.q; j++) dec += g[j] * delta[j];
      this.pirlsIterations++;
      if (dec < 1e-14 * Math.max(1, pd / n)) break;
      let step = 1;
      let accepted = false;
      for (let h = 0; h < 30; h++) {
        for (let j = 0; j < sys.q; j++) trial[j] = this.u[j] + step * delta[j];
        const pdTrial = this.penalisedDeviance(trial, etaTrial);
        if (pdTrial <= pd + 1e-13 * Math.abs(pd)) {
          this.u.set(trial);
          this.eta.set(etaTrial);
          pd = pdTrial;
          accepted = true;
          break;
        }
        step /= 2;
      }
      if (!accepted) {
        if (dec > 1e-6) this.warnings.add(`PIRLS step-halving failed to reduce the penalised deviance (decrement ${dec.toExponential(2)})`);
        break;
      }
      if (iter === 59) this.warnings.add('PIRLS did not converge in 60 iterations');
    }
    return pd + sys.logDetU();
  }

  /** Deviance and gradient at x (θ then β). */
  valueGrad(x: ArrayLike<number>): FG {
    const f = this.evaluate(x);
    return { f, g: this.gradient() };
  }

  /**
   * Gradient of the Laplace deviance at the last evaluate(). With û the mode, H = UᵀWU + I,
   * U = ZΛ, h_i = U_i H⁻¹ U_iᵀ, w' = dw/dη = w(1 − 2μ), and for a parameter φ:
   *   a = ∂η/∂φ at fixed u (X_j for β_j; û_{k, g_k(i)} for θ_k),
   *   d(D + |u|²)/dφ = −2 (y − μ)ᵀa                       (û is a stationary point),
   *   d log det H/dφ = tr(H⁻¹ ∂H/∂φ|_W) + Σ_i w'_i h_i dη_i/dφ,
   *   dη/dφ = a + U dû/dφ, dû/dφ = H⁻¹[(∂U/∂φ)ᵀ(y − μ) − UᵀW a]   (implicit function theorem).
   * With v_i = w'_i h_i, z = H⁻¹Uᵀv and t = v − W U z, the last sum is tᵀa + zᵀ(∂U/∂φ)ᵀ(y − μ), and
   * tr(H⁻¹ ∂H/∂θ_k|_W) = (2/θ_k) Σ_{l ∈ k} (1 − H⁻¹_ll) (any sign of θ_k; zero at θ_k = 0).
   */
  gradient(): Float64Array {
    const { n, K, p, y, mu, w, theta, sys, X, u } = this;
    const zi = sys.zi;
    const { diag, leverage } = sys.inverseParts(theta);
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = w[i] * (1 - 2 * mu[i]) * leverage[i];
    const uv = new Float64Array(sys.q);
    for (let i = 0; i < n; i++) for (let k = 0; k < K; k++) uv[zi[i * K + k]] += theta[k] * v[i];
    const z = sys.solve(uv);
    const grad = new Float64Array(K + p);
    // t_i − 2(y_i − μ_i): the coefficient of a_i in every component.
    const coef = new Float64Array(n);
    const resid = new Float64Array(sys.q); // Zᵀ(y − μ) by level
    for (let i = 0; i < n; i++) {
      let uz = 0;
      for (let k = 0; k < K; k++) uz += theta[k] * z[zi[i * K + k]];
      const r = y[i] - mu[i];
      coef[i] = v[i] - w[i] * uz - 2 * r;
      for (let k = 0; k < K; k++) resid[zi[i * K + k]] += r;
    }
    for (let c = 0; c < p; c++) {
      const col = X[c];
      let s = 0;
      for (let i = 0; i < n; i++) s += coef[i] * col[i];
      grad[K + c] = s;
    }
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += coef[i] * u[zi[i * K + k]];
      const lo = sys.offset[k];
      let hi = lo;
      while (hi < sys.q && sys.factorOf[hi] === k) hi++;
      let lam = 0;
      let zr = 0;
      for (let l = lo; l < hi; l++) {
        lam += 1 - diag[l];
        zr += z[l] * resid[l];
      }
      grad[k] = s + zr + (theta[k] !== 0 ? (2 / theta[k]) * lam : 0);
    }
    return grad;
  }

  /** The conditional modes b = θ_k u of factor k, by level. */
  ranef(k: number): number[] {
    const lo = this.sys.offset[k];
    const out: number[] = [];
    for (let l = lo; l < this.sys.q && this.sys.factorOf[l] === k; l++) out.push(this.theta[k] * this.u[l]);
    return out;
  }

  /** lme4's RX-based unscaled covariance of β̂ at the last evaluate(): the fixed block of the joint H⁻¹ at W(û). */
  rxVcov(groups: Grouping[]): Float64Array | null {
    const joint = new BlockSystem(groups, this.X);
    if (!joint.factor(this.w, this.theta)) return null;
    return joint.fixedInverse();
  }
}

/**
 * Joint PIRLS over (u, β) at fixed θ (lme4's nAGQ = 0 inner step): starting values for β.
 */
export function jointMode(input: GlmmInput, theta: number[], beta0?: number[]): { beta: number[]; u: Float64Array } {
  const { y, X, groups } = input;
  const n = y.length;
  const K = groups.length;
  const p = X.length;
  const sys = new BlockSystem(groups, X);
  const q = sys.q;
  const u = new Float64Array(q);
  const beta = Float64Array.from(beta0 ?? new Array(p).fill(0));
  const eta = new Float64Array(n);
  const w = new Float64Array(n);
  const mu = new Float64Array(n);
  const zi = sys.zi;
  const pdev = (uu: Float64Array, bb: Float64Array, out: Float64Array) => {
    let dev = 0;
    for (let i = 0; i < n; i++) {
      let e = 0;
      for (let c = 0; c < p; c++) e += bb[c] * X[c][i];
      for (let k = 0; k < K; k++) e += theta[k] * uu[zi[i * K + k]];
      out[i] = e;
      dev += softplus(e) - y[i] * e;
    }
    let s = 0;
    for (let j = 0; j < q; j++) s += uu[j] * uu[j];
    return 2 * dev + s;
  };
  let pd = pdev(u, beta, eta);
  const g = new Float64Array(q + p);
  const etaTrial = new Float64Array(n);
  for (let iter = 0; iter < 60; iter++) {
    for (let i = 0; i < n; i++) {
      mu[i] = 1 / (1 + Math.exp(-eta[i]));
      w[i] = mu[i] * (1 - mu[i]);
    }
    if (!sys.factor(w, theta)) {
      throw new LegibleError('the fixed-effect columns are linearly dependent given the data (or a condition has only correct or only wrong answers): simplify the formula');
    }
    g.fill(0);
    for (let j = 0; j < q; j++) g[j] = -u[j];
    for (let i = 0; i < n; i++) {
      const r = y[i] - mu[i];
      for (let k = 0; k < K; k++) g[zi[i * K + k]] += theta[k] * r;
      for (let c = 0; c < p; c++) g[q + c] += X[c][i] * r;
    }
    const delta = sys.solve(g);
    let dec = 0;
    for (let j = 0; j < q + p; j++) dec += g[j] * delta[j];
    if (dec < 1e-10 * Math.max(1, pd / n)) break;
    let step = 1;
    let accepted = false;
    for (let h = 0; h < 30; h++) {
      const ut = new Float64Array(q);
      const bt = new Float64Array(p);
      for (let j = 0; j < q; j++) ut[j] = u[j] + step * delta[j];
      for (let c = 0; c < p; c++) bt[c] = beta[c] + step * delta[q + c];
      const pt = pdev(ut, bt, etaTrial);
      if (pt <= pd + 1e-13 * Math.abs(pd)) {
        u.set(ut);
        beta.set(bt);
        eta.set(etaTrial);
        pd = pt;
        accepted = true;
        break;
      }
      step /= 2;
    }
    if (!accepted) break;
  }
  return { beta: [...beta], u };
}

/** Fit the model. Throws a LegibleError naming the problem when the data cannot support it. */
export function fitGlmm(input: GlmmInput, opts: GlmmOptions = {}): GlmmFit {
  const t0 = performance.now();
  const n = input.y.length;
  if (input.groups.length === 0) throw new LegibleError('the model needs at least one random intercept, e.g. (1|participant)');
  let ones = 0;
  for (let i = 0; i < n; i++) ones += input.y[i];
  if (ones === 0 || ones === n) throw new LegibleError(`the response is ${ones === 0 ? 'always 0' : 'always 1'}: there is nothing to model`);
  for (const g of input.groups) {
    if (g.levels.length < 2) throw new LegibleError(`grouping factor "${g.name}" has only one level: a random intercept needs two or more (lme4 requires it too)`);
    if (g.levels.length >= n) throw new LegibleError(`grouping factor "${g.name}" has as many levels (${g.levels.length}) as observations: its variance cannot be estimated`);
  }
  // Drop fixed-effect columns that depend linearly on earlier ones, as lme4 does.
  const keep = independentColumns(input.X);
  const dropped = input.xNames.filter((_, i) => !keep.includes(i));
  const data: GlmmInput = { y: input.y, X: keep.map((i) => input.X[i]), xNames: keep.map((i) => input.xNames[i]), groups: input.groups };
  const K = data.groups.length;
  const p = data.X.length;
  const dim = K + p;

  const theta0 = opts.start?.theta ?? new Array(K).fill(1);
  let beta0 = opts.start?.beta;
  let u0: Float64Array | undefined;
  if (!beta0 || beta0.length !== p) {
    const start = jointMode(data, theta0);
    beta0 = start.beta;
    u0 = start.u;
  }
  const obj = new LaplaceObjective(data);
  if (u0) obj.u.set(u0);
  const x0 = Float64Array.from([...theta0, ...beta0]);
  // The deviance is even in each θ_k (Λ → −Λ with u → −u leaves it unchanged) and smooth through
  // 0, so θ needs no bound: minimise over all reals and report |θ|. A variance component whose
  // estimate is zero (lme4's boundary fit) is then an ordinary stationary point at θ_k = 0.
  const fg = (x: Float64Array) => obj.valueGrad(x);
  const fdHessian = (x: Float64Array, central: boolean) => finiteDifferenceHessian(fg, x, central);
  const result = minimize(fg, x0, {
    hessian: (x) => fdHessian(x, false),
    tol: opts.tol ?? 1e-10,
    maxIter: opts.maxIter ?? 200,
    trace: process.env.LEGIBLE_GLMM_TRACE
      ? (iter, x, cur, dec) => console.error(`glmm ${iter}: deviance ${cur.f.toFixed(6)} decrement ${dec.toExponential(2)} x ${Array.from(x, (v) => v.toFixed(5)).join(' ')}`)
      : undefined,
  });
  const x = result.x;
  const warnings: string[] = [];
  if (!result.converged) warnings.push(`the optimiser stopped before converging (Newton decrement ${result.decrement.toExponential(2)}, ${result.iterations} iterations)`);

  // Covariance of β̂: from the Hessian of the deviance (as lme4 by default), else from RX.
  let vcov: Float64Array | null = null;
  let vcovMethod: 'hessian' | 'RX' = 'RX';
  if (opts.hessian ?? true) {
    const hess = fdHessian(x, true);
    const inv = spdInverse(hess, dim);
    if (inv) {
      vcov = new Float64Array(p * p);
      for (let a = 0; a < p; a++) for (let b = 0; b < p; b++) vcov[a * p + b] = 2 * inv[(K + a) * dim + K + b];
      vcovMethod = 'hessian';
    } else warnings.push('the Hessian of the deviance is not positive definite at the optimum: standard errors come from RX instead');
  }
  const f = obj.evaluate(x);
  if (!vcov) {
    vcov = obj.rxVcov(data.groups);
    if (!vcov) throw new LegibleError('the fixed effects are not identifiable from these data (singular X\'WX): simplify the formula');
  }
  const beta = Array.from(x.subarray(K));
  const se = beta.map((_, a) => Math.sqrt(vcov![a * p + a]));
  const z = beta.map((b, a) => b / se[a]);
  const theta = Array.from(x.subarray(0, K), Math.abs);
  const singular = theta.some((t) => t < 1e-4);
  if (singular) warnings.push('singular fit: a variance component is (nearly) zero');
  for (const wmsg of obj.warnings) warnings.push(wmsg);
  const df = p + K;
  return {
    n,
    xNames: data.xNames,
    beta,
    se,
    z,
    p: z.map(pTwoSidedNormal),
    vcov: beta.map((_, a) => beta.map((__, b) => vcov![a * p + b])),
    vcovMethod,
    groups: data.groups.map((g, k) => ({ name: g.name, levels: g.levels.length, sd: theta[k] })),
    ranef: data.groups.map((g, k) => ({ name: g.name, levels: g.levels, values: obj.ranef(k) })),
    logLik: -f / 2,
    deviance: f,
    df,
    AIC: f + 2 * df,
    BIC: f + Math.log(n) * df,
    converged: result.converged,
    iterations: result.iterations,
    evaluations: obj.evaluations,
    gradient: Array.from(result.g),
    dropped,
    singular,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Hessian by differences of the gradient (forward, or central), symmetrised. */
export function finiteDifferenceHessian(fg: (x: Float64Array) => FG, x: Float64Array, central: boolean): Float64Array {
  const dim = x.length;
  const H = new Float64Array(dim * dim);
  const base = central ? null : fg(x).g;
  for (let j = 0; j < dim; j++) {
    const h = 1e-4 * Math.max(1, Math.abs(x[j]));
    const xp = Float64Array.from(x);
    xp[j] += h;
    const gp = fg(xp).g;
    let gm: Float64Array;
    let span = h;
    if (central) {
      const xm = Float64Array.from(x);
      xm[j] -= h;
      gm = fg(xm).g;
      span = 2 * h;
    } else gm = base!;
    for (let i = 0; i < dim; i++) H[i * dim + j] = (gp[i] - gm[i]) / span;
  }
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j < i; j++) {
      const s = (H[i * dim + j] + H[j * dim + i]) / 2;
      H[i * dim + j] = s;
      H[j * dim + i] = s;
    }
  }
  return H;
}
