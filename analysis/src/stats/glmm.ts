// Binomial GLMM (logit link) with crossed random effects — intercepts and slopes, correlated
// or not — fitted as lme4's glmer does by default (nAGQ = 1, the Laplace approximation):
//
//   deviance(θ, β) = −2 log p(y | û) + |û|² + log det(ΛᵀZᵀWZΛ + I),
//
// where û, the conditional mode of the spherical random effects u (b = Λu; Λ block diagonal with
// one lower-triangular T_k per level of grouping factor k, θ its free entries in lme4's order),
// comes from penalised IRLS at the given θ and β, and W = diag(μ(1−μ)) at û. The deviance is
// minimised over θ and β together. Unlike lme4 (derivative-free BOBYQA, then Nelder–Mead) we
// minimise with an analytic gradient (implicit differentiation through û, see `gradient`) by
// damped Newton/BFGS, and take standard errors from the Hessian of the deviance at the optimum —
// by central differences of that gradient — as lme4 does from its finite-difference Hessian:
// vcov(β̂) = 2·[Hessian⁻¹]_ββ. The covariance of grouping factor k's effects is Σ_k = T_kT_kᵀ
// (the residual scale of a binomial model is 1): SDs √diag Σ_k and correlations as lme4 reports.
import { LegibleError } from '@legible/studies';
import { independentColumns, makePositiveDefinite, spdInverse, symmetricEigen } from './linalg.ts';
import { minimize, type FG } from './optim.ts';
import { pTwoSidedNormal } from './distributions.ts';
import { BlockSystem, thetaPattern, type Grouping } from './system.ts';

export type { Grouping } from './system.ts';

export interface GlmmInput {
  /** Response, 0/1. */
  y: Float64Array;
  /** Fixed-effect columns. */
  X: Float64Array[];
  xNames: string[];
  /** Grouping factors, each with its random-effect columns (default: a random intercept). */
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

/** One grouping factor's random effects as lme4's VarCorr reports them. */
export interface GlmmGroup {
  name: string;
  levels: number;
  /** SD of the first column (the intercept, usually). */
  sd: number;
  /** The term's model-matrix columns ("(Intercept)", "basisnmf", …). */
  columns: string[];
  /** SD of each column's effect. */
  sds: number[];
  /** Correlations between the columns' effects; null where the model has none (uncorrelated terms). */
  cor: (number | null)[][];
  /** The covariance matrix is singular (a T_k diagonal entry below 1e-4, lme4's isSingular). */
  singular: boolean;
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
  /** θ: the free entries of the relative covariance factors, in lme4's order (getME(m, "theta") up to signs of columns). */
  theta: number[];
  /** Random-effect SDs and correlations by grouping factor. */
  groups: GlmmGroup[];
  /** Conditional modes b̂ of each grouping factor, by level (values[level·r + column]). */
  ranef: { name: string; levels: string[]; columns: string[]; values: number[] }[];
  logLik: number;
  deviance: number;
  /** Parameters counted for AIC/BIC: fixed effects + covariance parameters. */
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
  /** Singular fit: a variance at zero or a correlation at ±1 (lme4's isSingular). */
  singular: boolean;
  /** Complete or quasi-complete separation: the fixed-effect columns whose estimates run off to ±∞ (empty when none). */
  separation: string[];
  warnings: string[];
  seconds: number;
}

/**
 * A chord step (Newton with an earlier factorisation of H) is kept while each step shrinks the
 * Newton decrement at least this much; otherwise H is refactorised.
 */
const CHORD_RATE = 0.1;

/** Numerically stable log(1 + e^x). */
function softplus(x: number): number {
  return x > 0 ? x + Math.log1p(Math.exp(-x)) : Math.log1p(Math.exp(x));
}

/** The Laplace deviance and its gradient as functions of (θ, β), with û kept warm between calls. */
export class LaplaceObjective {
  readonly n: number;
  /** Length of θ. */
  readonly K: number;
  readonly p: number;
  readonly sys: BlockSystem;
  private readonly y: Float64Array;
  private readonly X: Float64Array[];
  private readonly off: Float64Array;
  private eta: Float64Array;
  private mu: Float64Array;
  private w: Float64Array;
  /** Spherical random effects (system order), the conditional mode after evaluate(). */
  u: Float64Array;
  private theta: Float64Array;
  private thetaSet = false;
  /** The system holds a factorisation (of H at some earlier point: usable for chord steps). */
  private factored = false;
  private readonly g: Float64Array;
  private trial: Float64Array;
  private etaTrial: Float64Array;
  private muTrial: Float64Array;
  private wTrial: Float64Array;
  pirlsIterations = 0;
  evaluations = 0;
  warnings = new Set<string>();

  constructor(input: GlmmInput) {
    this.n = input.y.length;
    this.p = input.X.length;
    this.y = input.y;
    this.X = input.X;
    this.sys = new BlockSystem(input.groups);
    this.K = this.sys.nTheta;
    this.off = new Float64Array(this.n);
    this.eta = new Float64Array(this.n);
    this.mu = new Float64Array(this.n);
    this.w = new Float64Array(this.n);
    this.u = new Float64Array(this.sys.q);
    this.theta = new Float64Array(this.K);
    this.g = new Float64Array(this.sys.q);
    this.trial = new Float64Array(this.sys.q);
    this.etaTrial = new Float64Array(this.n);
    this.muTrial = new Float64Array(this.n);
    this.wTrial = new Float64Array(this.n);
  }

  /** Sets θ and β; returns the largest change of θ (Infinity the first time). */
  private setParams(x: ArrayLike<number>): number {
    const { K, p, n, X, off } = this;
    let change = this.thetaSet ? 0 : Infinity;
    for (let k = 0; k < K; k++) {
      change = Math.max(change, Math.abs(this.theta[k] - x[k]));
      this.theta[k] = x[k];
    }
    if (change > 0) this.sys.setTheta(this.theta);
    this.thetaSet = true;
    off.fill(0);
    for (let c = 0; c < p; c++) {
      const b = x[K + c];
      if (b === 0) continue;
      const col = X[c];
      for (let i = 0; i < n; i++) off[i] += b * col[i];
    }
    return change;
  }

  /**
   * out ← the spherical effects that give the random effects b = Λu had under the T_k in `old`,
   * now under the current T_k (out = Λ⁻¹Λ_old u, level by level); non-finite where a T_k is singular.
   */
  private keepEffects(old: Float64Array[], out: Float64Array): void {
    const { sys, u } = this;
    for (let k = 0; k < sys.K; k++) {
      const r = sys.rk[k];
      const To = old[k];
      const Tn = sys.T[k];
      const end = sys.factorOf.lastIndexOf(k) + 1;
      for (let l = sys.offset[k]; l < end; l += r) {
        for (let a = 0; a < r; a++) {
          let b = 0;
          for (let c = 0; c <= a; c++) b += To[a * r + c] * u[l + c];
          for (let c = 0; c < a; c++) b -= Tn[a * r + c] * out[l + c];
          out[l + a] = b / Tn[a * r + a];
        }
      }
    }
  }

  /**
   * η, μ and the weights μ(1 − μ) for spherical effects v (one exponential per observation);
   * returns the penalised deviance D + |v|².
   */
  private penalisedDeviance(v: Float64Array, eta: Float64Array, mu: Float64Array, w: Float64Array): number {
    const { n, off, y } = this;
    const { R, col, ua } = this.sys;
    let dev = 0;
    for (let i = 0; i < n; i++) {
      let e = off[i];
      const o = i * R;
      for (let t = 0; t < R; t++) e += ua[o + t] * v[col[o + t]];
      eta[i] = e;
      // log(1 + e^η) − yη and μ = 1/(1 + e^−η), both from ex = e^−|η| (stable for any η).
      const ex = Math.exp(-Math.abs(e));
      const l = Math.log1p(ex);
      const inv = 1 / (1 + ex);
      let m: number;
      if (e > 0) {
        dev += e + l - y[i] * e;
        m = inv;
      } else {
        dev += l - y[i] * e;
        m = ex * inv;
      }
      mu[i] = m;
      w[i] = m * (1 - m);
    }
    let uu = 0;
    for (let j = 0; j < v.length; j++) uu += v[j] * v[j];
    return 2 * dev + uu;
  }

  /**
   * PIRLS to the conditional mode û at parameters x = [θ, β]; leaves the system factorised at û.
   * Returns the Laplace deviance.
   *
   * The Newton steps reuse the last factorisation (of H at the previous point, or at an earlier u)
   * while it keeps making fast progress (a chord method: each step costs a solve, not an
   * assembly and factorisation of H); H is refactorised when the decrement falls by less than
   * `CHORD_RATE` per step, when a stale step fails to reduce the penalised deviance, and always at
   * the end: the mode is accepted only once the Newton decrement with H factorised at that very
   * u is below tolerance, so log det H and the gradient are those at û, exactly as before.
   */
  evaluate(x: ArrayLike<number>): number {
    this.evaluations++;
    const oldT = this.thetaSet ? this.sys.T.map((t) => Float64Array.from(t)) : null;
    const change = this.setParams(x);
    const { n, y, sys } = this;
    const { R, col, ua } = sys;
    let pd = this.penalisedDeviance(this.u, this.eta, this.mu, this.w);
    if (oldT && change > 1e-3) {
      // After a large change of θ the old û can be a poor start (u is spherical: the same u is a
      // different b = Λu); try the u that keeps b, and start from the better of the two.
      this.keepEffects(oldT, this.trial);
      const pdKeep = this.penalisedDeviance(this.trial, this.etaTrial, this.muTrial, this.wTrial);
      if (pdKeep < pd) {
        [this.u, this.trial] = [this.trial, this.u];
        [this.eta, this.etaTrial] = [this.etaTrial, this.eta];
        [this.mu, this.muTrial] = [this.muTrial, this.mu];
        [this.w, this.wTrial] = [this.wTrial, this.w];
        pd = pdKeep;
      }
    }
    if (!Number.isFinite(pd)) {
      this.u.fill(0);
      pd = this.penalisedDeviance(this.u, this.eta, this.mu, this.w);
      this.factored = false;
    }
    const g = this.g;
    // fresh: the factorisation is of H at the current u (and θ).
    let fresh = false;
    let lastDec = Infinity;
    for (let iter = 0; iter < 200; iter++) {
      const { mu, w } = this;
      for (let j = 0; j < sys.q; j++) g[j] = -this.u[j];
      for (let i = 0; i < n; i++) {
        const r = y[i] - mu[i];
        const o = i * R;
        for (let t = 0; t < R; t++) g[col[o + t]] += ua[o + t] * r;
      }
      if (!this.factored) {
        sys.factor(w);
        this.factored = true;
        fresh = true;
      }
      let delta = sys.solve(g);
      let dec = 0;
      for (let j = 0; j < sys.q; j++) dec += g[j] * delta[j];
      this.pirlsIterations++;
      const tol = 1e-14 * Math.max(1, pd / n);
      if (!fresh && (dec < 1e-10 * tol || dec > CHORD_RATE * lastDec)) {
        // Converged on a stale H (far below the tolerance, as a Newton step from within it would
        // be: the gradient needs û to many digits): confirm with H at this u. Or the chord is
        // slow: refactorise here.
        sys.factor(w);
        fresh = true;
        delta = sys.solve(g);
        dec = 0;
        for (let j = 0; j < sys.q; j++) dec += g[j] * delta[j];
      }
      if (fresh && dec < tol) break;
      let step = 1;
      let accepted = false;
      for (let h = 0; h < 30; h++) {
        const trial = this.trial;
        for (let j = 0; j < sys.q; j++) trial[j] = this.u[j] + step * delta[j];
        const pdTrial = this.penalisedDeviance(trial, this.etaTrial, this.muTrial, this.wTrial);
        if (pdTrial <= pd + 1e-13 * Math.abs(pd)) {
          this.u.set(trial);
          [this.eta, this.etaTrial] = [this.etaTrial, this.eta];
          [this.mu, this.muTrial] = [this.muTrial, this.mu];
          [this.w, this.wTrial] = [this.wTrial, this.w];
          pd = pdTrial;
          accepted = true;
          break;
        }
        if (!fresh) break;
        step /= 2;
      }
      if (!accepted) {
        if (!fresh) {
          // A stale step that does not descend: redo this iteration with H at the current u.
          this.factored = false;
          lastDec = Infinity;
          continue;
        }
        if (dec > 1e-6) this.warnings.add(`PIRLS step-halving failed to reduce the penalised deviance (decrement ${dec.toExponential(2)})`);
        break;
      }
      fresh = false;
      lastDec = dec;
      if (iter === 199) this.warnings.add('PIRLS did not converge in 200 iterations');
    }
    if (!fresh) sys.factor(this.w);
    return pd + sys.logDetU();
  }

  /** Deviance and gradient at x (θ then β). */
  valueGrad(x: ArrayLike<number>): FG {
    const f = this.evaluate(x);
    return { f, g: this.gradient() };
  }

  /**
   * Gradient of the Laplace deviance at the last evaluate(). With û the mode, H = UᵀWU + I,
   * U = ZΛ, s_i = H⁻¹U_iᵀ, h_i = U_i s_i, w' = dw/dη = w(1 − 2μ), r = y − μ, and a parameter φ:
   *   a = ∂η/∂φ at fixed u (X_j for β_j; z_{k,i,α}·û_{k,g_k(i),β} for θ = T_k[α][β]),
   *   d(D + |u|²)/dφ = −2 rᵀa                               (û is a stationary point),
   *   d log det H/dφ = tr(H⁻¹ ∂H/∂φ|_W) + Σ_i w'_i h_i dη_i/dφ,
   *   dη/dφ = a + U dû/dφ, dû/dφ = H⁻¹[(∂U/∂φ)ᵀr − UᵀW a]   (implicit function theorem).
   * With v_i = w'_i h_i, z = H⁻¹Uᵀv and t = v − W U z, the last sum is tᵀa + zᵀ(∂U/∂φ)ᵀr, and
   * tr(H⁻¹ ∂H/∂φ|_W) = 2 Σ_i w_i (∂U_i/∂φ) s_i. For θ = T_k[α][β] every term is a sum over
   * observations of z_{k,i,α} times (coef_i û + r_i z + 2 w_i s_i) at the observation's (k, β) entry,
   * with no division by θ: the gradient is as exact at a singular T_k as anywhere else.
   */
  gradient(): Float64Array {
    const { n, K, p, y, mu, w, sys, X, u } = this;
    const { R, col, ua, z: zval, eoff, rk, patterns } = sys;
    const { sAt, leverage } = sys.observationInverse();
    const v = new Float64Array(n);
    for (let i = 0; i < n; i++) v[i] = w[i] * (1 - 2 * mu[i]) * leverage[i];
    const uv = new Float64Array(sys.q);
    for (let i = 0; i < n; i++) {
      const o = i * R;
      for (let t = 0; t < R; t++) uv[col[o + t]] += ua[o + t] * v[i];
    }
    const z = sys.solve(uv);
    const grad = new Float64Array(K + p);
    // t_i − 2(y_i − μ_i): the coefficient of a_i in every component.
    const coef = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      let uz = 0;
      const o = i * R;
      for (let t = 0; t < R; t++) uz += ua[o + t] * z[col[o + t]];
      coef[i] = v[i] - w[i] * uz - 2 * (y[i] - mu[i]);
    }
    for (let c = 0; c < p; c++) {
      const xc = X[c];
      let s = 0;
      for (let i = 0; i < n; i++) s += coef[i] * xc[i];
      grad[K + c] = s;
    }
    let at = 0;
    for (let k = 0; k < sys.K; k++) {
      const r = rk[k];
      const e0 = eoff[k];
      const pat = patterns[k];
      // q_i(β) = coef_i û + r_i z + 2 w_i s_i at entry (k, β), then Σ_i z_{k,i,α} q_i(β).
      const acc = new Float64Array(r * r);
      for (let i = 0; i < n; i++) {
        const o = i * R + e0;
        const ri = y[i] - mu[i];
        const w2 = 2 * w[i];
        for (let b = 0; b < r; b++) {
          const cidx = col[o + b];
          const qb = coef[i] * u[cidx] + ri * z[cidx] + w2 * sAt[o + b];
          for (let a = b; a < r; a++) acc[a * r + b] += zval[o + a] * qb;
        }
      }
      for (const [a, b] of pat) grad[at++] = acc[a * r + b];
    }
    return grad;
  }

  /** The conditional modes b = T_k u of factor k, by level (values[level·r + column]). */
  ranef(k: number): number[] {
    const { sys } = this;
    const r = sys.rk[k];
    const Tk = sys.T[k];
    const lo = sys.offset[k];
    const out: number[] = [];
    for (let l = lo; l < sys.q && sys.factorOf[l] === k; l += r) {
      for (let a = 0; a < r; a++) {
        let s = 0;
        for (let c = 0; c <= a; c++) s += Tk[a * r + c] * this.u[l + c];
        out.push(s);
      }
    }
    return out;
  }

  /** lme4's RX-based unscaled covariance of β̂ at the last evaluate(): the fixed block of the joint H⁻¹ at W(û). */
  rxVcov(groups: Grouping[]): Float64Array | null {
    const joint = new BlockSystem(groups, this.X);
    joint.setTheta(this.theta);
    if (!joint.factor(this.w)) return null;
    return joint.fixedInverse();
  }
}

/** θ at the identity T_k (lme4's start): diagonal entries 1, the rest 0. */
export function defaultTheta(groups: Grouping[]): number[] {
  return groups.flatMap((g) => thetaPattern(g).map(([a, b]) => (a === b ? 1 : 0)));
}

/**
 * Joint PIRLS over (u, β) at fixed θ (lme4's nAGQ = 0 inner step): starting values for β.
 */
export function jointMode(input: GlmmInput, theta: number[], beta0?: number[]): { beta: number[]; u: Float64Array } {
  const { y, X, groups } = input;
  const n = y.length;
  const p = X.length;
  const sys = new BlockSystem(groups, X);
  sys.setTheta(theta);
  const { R, col, ua } = sys;
  const q = sys.q;
  const u = new Float64Array(q);
  const beta = Float64Array.from(beta0 ?? new Array(p).fill(0));
  const eta = new Float64Array(n);
  const w = new Float64Array(n);
  const mu = new Float64Array(n);
  const pdev = (uu: Float64Array, bb: Float64Array, out: Float64Array) => {
    let dev = 0;
    for (let i = 0; i < n; i++) {
      let e = 0;
      for (let c = 0; c < p; c++) e += bb[c] * X[c][i];
      const o = i * R;
      for (let t = 0; t < R; t++) e += ua[o + t] * uu[col[o + t]];
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
    if (!sys.factor(w)) {
      throw new LegibleError('the fixed-effect columns are linearly dependent given the data (or a condition has only correct or only wrong answers): simplify the formula');
    }
    g.fill(0);
    for (let j = 0; j < q; j++) g[j] = -u[j];
    for (let i = 0; i < n; i++) {
      const r = y[i] - mu[i];
      const o = i * R;
      for (let t = 0; t < R; t++) g[col[o + t]] += ua[o + t] * r;
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
  if (input.groups.length === 0) throw new LegibleError('the model needs at least one random term, e.g. (1|participant)');
  let ones = 0;
  for (let i = 0; i < n; i++) ones += input.y[i];
  if (ones === 0 || ones === n) throw new LegibleError(`the response is ${ones === 0 ? 'always 0' : 'always 1'}: there is nothing to model`);
  for (const g of input.groups) {
    const r = g.Z?.length ?? 1;
    if (g.levels.length < 2) throw new LegibleError(`grouping factor "${g.name}" has only one level: a random intercept needs two or more (lme4 requires it too)`);
    if (g.levels.length >= n) throw new LegibleError(`grouping factor "${g.name}" has as many levels (${g.levels.length}) as observations: its variance cannot be estimated`);
    if (g.levels.length * r >= n) {
      throw new LegibleError(
        `the random effects of "${g.name}" (${g.levels.length} levels × ${r} columns: ${(g.zNames ?? ['(Intercept)']).join(', ')}) are as many as the observations (${n}): they cannot be estimated; drop a slope`,
      );
    }
  }
  // Drop fixed-effect columns that depend linearly on earlier ones, as lme4 does.
  const keep = independentColumns(input.X);
  const dropped = input.xNames.filter((_, i) => !keep.includes(i));
  const data: GlmmInput = { y: input.y, X: keep.map((i) => input.X[i]), xNames: keep.map((i) => input.xNames[i]), groups: input.groups };
  const patterns = data.groups.map(thetaPattern);
  const K = patterns.reduce((s, pat) => s + pat.length, 0);
  const p = data.X.length;
  const dim = K + p;

  const theta0 = opts.start?.theta && opts.start.theta.length === K ? opts.start.theta : defaultTheta(data.groups);
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
  // The deviance depends on θ only through Σ_k = T_kT_kᵀ, which is unchanged when a column of T_k
  // changes sign; so θ needs no bound: minimise over all reals. A singular Σ_k (lme4's boundary
  // fit: a diagonal entry of T_k at zero) is then an ordinary stationary point.
  const fg = (x: Float64Array) => obj.valueGrad(x);
  const fdHessian = (x: Float64Array, central: boolean) => finiteDifferenceHessian(fg, x, central);
  const result = minimize(fg, x0, {
    hessian: (x, at) => finiteDifferenceHessian(fg, x, false, at),
    tol: opts.tol ?? 1e-10,
    maxIter: opts.maxIter ?? 200,
    trace: process.env.LEGIBLE_GLMM_TRACE
      ? (iter, x, cur, dec) => console.error(`glmm ${iter}: deviance ${cur.f.toFixed(6)} decrement ${dec.toExponential(2)} x ${Array.from(x, (v) => v.toFixed(5)).join(' ')}`)
      : undefined,
  });
  const x = result.x;
  const warnings: string[] = [];
  if (!result.converged) warnings.push(`convergence: the optimiser stopped before converging (Newton decrement ${result.decrement.toExponential(2)}, ${result.iterations} iterations)`);

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
    } else if (!isSingularTheta(patterns, x)) warnings.push('the Hessian of the deviance is not positive definite at the optimum: standard errors come from RX instead');
  }
  // PIRLS warnings count only at the optimum (a trial point of a line search may be far off).
  obj.warnings.clear();
  const f = obj.evaluate(x);
  let unidentified = false;
  if (!vcov) vcov = obj.rxVcov(data.groups);
  if (!vcov) {
    // Neither the Hessian nor X'WX can be inverted: separation (some weights numerically 0), or
    // columns that the data cannot tell apart. A regularised inverse of the β block of the Hessian
    // — huge variances along the undetermined directions — lets findSeparation tell which.
    const hess = fdHessian(x, true);
    const hb = new Float64Array(p * p);
    for (let a = 0; a < p; a++) for (let b = 0; b < p; b++) hb[a * p + b] = hess[(K + a) * dim + K + b] / 2;
    vcov = spdInverse(makePositiveDefinite(hb, p, 1e-12), p)!;
    unidentified = true;
  }
  const beta = Array.from(x.subarray(K));
  const se = beta.map((_, a) => Math.sqrt(vcov![a * p + a]));
  const z = beta.map((b, a) => b / se[a]);
  const theta = Array.from(x.subarray(0, K));
  const groups = data.groups.map((g, k) => varCorr(g, obj.sys.T[k], obj.sys.rk[k]));
  const singular = groups.some((g) => g.singular);
  for (const g of groups) if (g.singular) warnings.push(`singular fit: ${describeSingular(g)}`);
  const separation = findSeparation(data, beta, vcov, p);
  if (unidentified && !separation.length) throw new LegibleError('the fixed effects are not identifiable from these data (singular X\'WX): simplify the formula');
  if (separation.length) {
    warnings.push(
      `separation: ${separation.join(', ')} ${separation.length === 1 ? 'runs' : 'run'} off to ±∞ (complete or quasi-complete separation: some condition's answers are all correct or all wrong); their Wald z and p are meaningless — use the likelihood-ratio tests`,
    );
  }
  for (const wmsg of obj.warnings) warnings.push(`convergence: ${wmsg}`);
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
    theta,
    groups,
    ranef: data.groups.map((g, k) => ({ name: g.name, levels: g.levels, columns: g.zNames ?? ['(Intercept)'], values: obj.ranef(k) })),
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
    separation,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** lme4's isSingular: a diagonal entry of some T_k within 1e-4 of zero. */
function isSingularTheta(patterns: [number, number][][], x: ArrayLike<number>): boolean {
  let at = 0;
  for (const pat of patterns) for (const [a, b] of pat) if (a === b && Math.abs(x[at++]) < 1e-4) return true;
  else if (a !== b) at++;
  return false;
}

/** SDs and correlations of a grouping factor's effects from Σ = TTᵀ. */
function varCorr(g: Grouping, T: Float64Array, r: number): GlmmGroup {
  const blocks = g.blocks ?? new Array(r).fill(0);
  const cov = new Float64Array(r * r);
  for (let a = 0; a < r; a++) for (let b = 0; b < r; b++) {
    let s = 0;
    for (let c = 0; c < r; c++) s += T[a * r + c] * T[b * r + c];
    cov[a * r + b] = s;
  }
  const sds = Array.from({ length: r }, (_, a) => Math.sqrt(cov[a * r + a]));
  const cor = sds.map((sa, a) =>
    sds.map((sb, b) => (a === b ? 1 : blocks[a] !== blocks[b] ? null : sa > 0 && sb > 0 ? Math.max(-1, Math.min(1, cov[a * r + b] / (sa * sb))) : NaN)),
  );
  let singular = false;
  for (let a = 0; a < r; a++) if (Math.abs(T[a * r + a]) < 1e-4) singular = true;
  return { name: g.name, levels: g.levels.length, sd: sds[0], columns: g.zNames ?? ['(Intercept)'], sds, cor, singular };
}

/** In words, why a grouping factor's covariance is singular: SDs at zero, or correlations at ±1. */
export function describeSingular(g: GlmmGroup): string {
  const zero = g.columns.filter((_, a) => g.sds[a] < 1e-4 * Math.max(1, ...g.sds) || g.sds[a] < 1e-6);
  const parts: string[] = [];
  if (zero.length) parts.push(`${zero.map((c) => `SD(${c} | ${g.name})`).join(', ')} ${zero.length === 1 ? 'is' : 'are'} 0`);
  const ones: string[] = [];
  for (let a = 0; a < g.columns.length; a++) {
    for (let b = 0; b < a; b++) {
      const c = g.cor[a][b];
      if (c !== null && Number.isFinite(c) && Math.abs(c) > 0.999) ones.push(`cor(${g.columns[b]}, ${g.columns[a]} | ${g.name}) = ${c > 0 ? '+1' : '−1'}`);
    }
  }
  parts.push(...ones);
  if (!parts.length) parts.push(`the covariance matrix of the ${g.name} effects (${g.columns.join(', ')}) is singular: some combination of them has variance 0`);
  return parts.join('; ');
}

/**
 * Complete or quasi-complete separation in the fixed effects: a direction d ≠ 0 with X_i·d ≥ 0
 * wherever y_i = 1 and ≤ 0 wherever y_i = 0. Then the likelihood increases without bound along d
 * (random effects cannot absorb it, being penalised), β̂ runs off along d and its Wald SE explodes.
 * Candidates: the directions in which the fitted β̂ has almost no information (eigenvectors of
 * vcov with huge eigenvalues, and the coordinate axes of large |β̂|), each checked exactly on the
 * data. Returns the columns that take part in a separating direction.
 */
export function findSeparation(data: GlmmInput, beta: number[], vcov: ArrayLike<number>, p: number): string[] {
  const { X, y } = data;
  const n = y.length;
  const candidates: Float64Array[] = [];
  // Large, uncertain coefficients: the direction β̂ itself restricted to them, and each alone.
  const big = beta.map((b, a) => Math.abs(b) > 8 || vcov[a * p + a] > 100);
  if (big.some(Boolean)) {
    candidates.push(Float64Array.from(beta, (b, a) => (big[a] ? b : 0)));
    big.forEach((isBig, a) => {
      if (isBig) candidates.push(Float64Array.from(beta, (b, c) => (c === a ? b : 0)));
    });
  }
  // Directions of (almost) no information: eigenvectors of vcov with variance > 100 (SE > 10 on
  // the log-odds scale, where a real effect of a 2AFC study has SE well below 1).
  const { values, vectors } = symmetricEigen(Float64Array.from(vcov), p);
  for (let e = 0; e < p; e++) {
    if (!(values[e] > 100)) continue;
    const d = Float64Array.from({ length: p }, (_, c) => vectors[c * p + e]);
    let dot = 0;
    for (let c = 0; c < p; c++) dot += d[c] * beta[c];
    if (dot < 0) d.forEach((v, c) => (d[c] = -v));
    candidates.push(d);
  }
  const separated = new Set<number>();
  for (const d of candidates) {
    // Snap tiny components to zero; then a separating direction moves some linear predictors by
    // at least ~1e-3 of its largest component and none the wrong way.
    let mx = 0;
    for (const v of d) mx = Math.max(mx, Math.abs(v));
    d.forEach((v, c) => (d[c] = Math.abs(v) < 1e-3 * mx ? 0 : v));
    let moved = 0;
    let ok = true;
    let scale = 0;
    for (const v of d) scale = Math.max(scale, Math.abs(v));
    if (scale === 0) continue;
    for (let i = 0; i < n && ok; i++) {
      let s = 0;
      for (let c = 0; c < p; c++) if (d[c]) s += X[c][i] * d[c];
      s /= scale;
      if (Math.abs(s) < 1e-3) continue;
      if ((s > 0) !== (y[i] === 1)) ok = false;
      else moved++;
    }
    if (ok && moved > 0) d.forEach((v, c) => v && separated.add(c));
  }
  return [...separated].sort((a, b) => a - b).map((c) => data.xNames[c]);
}

/**
 * Hessian by differences of the gradient (forward, or central), symmetrised. `at`, when given, is
 * f and g at x (saves an evaluation of the forward differences).
 */
export function finiteDifferenceHessian(fg: (x: Float64Array) => FG, x: Float64Array, central: boolean, at?: FG): Float64Array {
  const dim = x.length;
  const H = new Float64Array(dim * dim);
  const base = central ? null : (at ?? fg(x)).g;
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
