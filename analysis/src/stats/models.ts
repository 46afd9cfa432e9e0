// From a formula and a data frame to a fitted GLMM; likelihood-ratio tests between nested models;
// and the power simulation under a fitted model.
import { LegibleError, Rng } from '@legible/studies';
import { pchisqUpper, pTwoSidedNormal } from './distributions.ts';
import { binaryResponse, groupingOf, modelMatrix, parseFormula, type Frame, type ModelMatrix, type ParsedFormula } from './formula.ts';
import { fitGlmm, type GlmmFit, type GlmmInput, type GlmmOptions } from './glmm.ts';

export interface FittedModel {
  formula: ParsedFormula;
  matrix: ModelMatrix;
  input: GlmmInput;
  fit: GlmmFit;
}

export function buildInput(formula: ParsedFormula, frame: Frame): { matrix: ModelMatrix; input: GlmmInput } {
  if (formula.random.length === 0) {
    throw new LegibleError(`formula "${formula.text}" has no random intercept: add e.g. "+ (1|participant) + (1|feature)" (a GLMM needs at least one)`);
  }
  const matrix = modelMatrix(formula, frame);
  const input: GlmmInput = {
    y: binaryResponse(frame, formula.response),
    X: matrix.columns,
    xNames: matrix.names,
    groups: formula.random.map((r) => ({ name: r.label, ...groupingOf(frame, r.columns) })),
  };
  return { matrix, input };
}

export function fitModel(formulaText: string, frame: Frame, opts: GlmmOptions = {}): FittedModel {
  const formula = parseFormula(formulaText);
  const { matrix, input } = buildInput(formula, frame);
  const fit = fitGlmm(input, opts);
  matrix.dropped = fit.dropped;
  return { formula, matrix, input, fit };
}

/** The formula's text with the given fixed terms (as in ParsedFormula.terms). */
export function formulaText(f: ParsedFormula, terms: string[][]): string {
  const label = (name: string) => (f.variables.find((v) => v.name === name)?.forceFactor ? `factor(${name})` : name);
  const fixed = terms.map((t) => t.map(label).join(':'));
  if (!f.intercept) fixed.unshift('0');
  if (fixed.length === 0) fixed.push('1');
  return `${f.response} ~ ${[...fixed, ...f.random.map((r) => `(1 | ${r.label})`)].join(' + ')}`;
}

/** Fixed terms that can be dropped while respecting marginality: those no other term contains. */
export function droppableTerms(f: ParsedFormula): string[][] {
  return f.terms.filter((t) => !f.terms.some((u) => u !== t && u.length > t.length && t.every((x) => u.includes(x))));
}

export interface LikelihoodRatio {
  /** The smaller model's formula, and what it lacks. */
  reduced: string;
  full: string;
  dropped: string;
  logLikReduced: number;
  logLikFull: number;
  AICReduced: number;
  AICFull: number;
  chisq: number;
  df: number;
  p: number;
}

/** Likelihood-ratio test of nested models (the reduced model's fixed columns a subset of the full model's). */
export function likelihoodRatio(reduced: FittedModel, full: FittedModel, dropped = ''): LikelihoodRatio {
  if (reduced.fit.n !== full.fit.n) throw new LegibleError('likelihood-ratio test: the two models were fitted to different rows');
  const missing = reduced.fit.xNames.filter((x) => !full.fit.xNames.includes(x));
  const sameRandom = reduced.formula.random.map((r) => r.label).join() === full.formula.random.map((r) => r.label).join();
  if (missing.length || !sameRandom) {
    throw new LegibleError(`likelihood-ratio test: "${reduced.formula.text}" is not nested in "${full.formula.text}" (${missing.length ? `columns ${missing.join(', ')} are not in the larger model` : 'the random terms differ'})`);
  }
  const chisq = Math.max(0, 2 * (full.fit.logLik - reduced.fit.logLik));
  const df = full.fit.df - reduced.fit.df;
  return {
    reduced: reduced.formula.text,
    full: full.formula.text,
    dropped,
    logLikReduced: reduced.fit.logLik,
    logLikFull: full.fit.logLik,
    AICReduced: reduced.fit.AIC,
    AICFull: full.fit.AIC,
    chisq,
    df,
    p: df > 0 ? pchisqUpper(chisq, df) : NaN,
  };
}

/** Drop each droppable term in turn and test it against the full model (R's drop1(…, test = "Chisq")). */
export function dropTermTests(full: FittedModel, frame: Frame, opts: GlmmOptions = {}): { tests: LikelihoodRatio[]; models: FittedModel[] } {
  const tests: LikelihoodRatio[] = [];
  const models: FittedModel[] = [];
  for (const term of droppableTerms(full.formula)) {
    const text = formulaText(
      full.formula,
      full.formula.terms.filter((t) => t !== term),
    );
    const reduced = fitModel(text, frame, { ...opts, hessian: false });
    models.push(reduced);
    tests.push(likelihoodRatio(reduced, full, term.join(':')));
  }
  return { tests, models };
}

export interface PowerOptions {
  /** The coefficient tested (a column name of X, e.g. "basisnmf"). */
  coefficient: string;
  /** Its value under which to simulate (logit scale); default: the estimate. */
  effect?: number;
  /** Numbers of participants to try. */
  ns: number[];
  sims: number;
  alpha?: number;
  /** Power to reach (default 0.8). */
  target?: number;
  seed?: number;
  /** The grouping factor that stands for participants (default: the random term named "participant"). */
  participants?: string;
}

export interface PowerResult {
  coefficient: string;
  effect: number;
  alpha: number;
  target: number;
  sims: number;
  participantsFactor: string;
  rows: { n: number; power: number; se: number; fits: number; failures: number }[];
  /** Smallest n tried with power ≥ target, or null when none reached it. */
  required: number | null;
  method: string;
  seconds: number;
}

/**
 * Power by simulation under the fitted model: for each number of participants N, draw N of the
 * observed participants' trial lists (with replacement, keeping their design rows), new
 * participant and feature effects from N(0, σ̂²), and responses from the model with the tested
 * coefficient set to `effect`; refit, and count Wald tests with p < α.
 */
export function powerSimulation(model: FittedModel, opts: PowerOptions): PowerResult {
  const t0 = performance.now();
  const { fit, input } = model;
  const c = fit.xNames.indexOf(opts.coefficient);
  if (c < 0) throw new LegibleError(`power: no coefficient "${opts.coefficient}" in the model (coefficients: ${fit.xNames.join(', ')})`);
  const beta = fit.beta.slice();
  const effect = opts.effect ?? beta[c];
  beta[c] = effect;
  const alpha = opts.alpha ?? 0.05;
  const target = opts.target ?? 0.8;
  const rng = new Rng(opts.seed ?? 7);
  const pk = input.groups.findIndex((g) => g.name === (opts.participants ?? 'participant'));
  if (pk < 0) {
    throw new LegibleError(`power: the model has no random intercept "${opts.participants ?? 'participant'}" to add participants to (random terms: ${input.groups.map((g) => g.name).join(', ')})`);
  }
  const pg = input.groups[pk];
  // Rows of each participant, and the fixed-effect part of η per row.
  const rowsOf: number[][] = pg.levels.map(() => []);
  for (let i = 0; i < pg.index.length; i++) rowsOf[pg.index[i]].push(i);
  const n = input.y.length;
  const xb = new Float64Array(n);
  const X = input.X.filter((_, j) => !fit.dropped.includes(input.xNames[j]));
  for (let j = 0; j < X.length; j++) for (let i = 0; i < n; i++) xb[i] += beta[j] * X[j][i];
  const sd = fit.groups.map((g) => g.sd);
  const rows: PowerResult['rows'] = [];
  for (const N of opts.ns) {
    let hits = 0;
    let fits = 0;
    let failures = 0;
    for (let s = 0; s < opts.sims; s++) {
      const picked = Array.from({ length: N }, () => rng.int(pg.levels.length));
      const idx: number[] = [];
      const newP: number[] = [];
      picked.forEach((p, k) => {
        for (const i of rowsOf[p]) {
          idx.push(i);
          newP.push(k);
        }
      });
      const m = idx.length;
      const effects = input.groups.map((g, k) => (k === pk ? Float64Array.from({ length: N }, () => rng.normal() * sd[k]) : Float64Array.from(g.levels, () => rng.normal() * sd[k])));
      const y = new Float64Array(m);
      for (let r = 0; r < m; r++) {
        const i = idx[r];
        let eta = xb[i];
        input.groups.forEach((g, k) => (eta += effects[k][k === pk ? newP[r] : g.index[i]]));
        y[r] = rng.float() < 1 / (1 + Math.exp(-eta)) ? 1 : 0;
      }
      const groups = input.groups.map((g, k) => {
        if (k === pk) return { name: g.name, levels: Array.from({ length: N }, (_, j) => `s${j}`), index: Int32Array.from(newP) };
        // Keep only the levels that occur in this sample, renumbered.
        const map = new Map<number, number>();
        const index = new Int32Array(m);
        for (let r = 0; r < m; r++) {
          const l = g.index[idx[r]];
          let v = map.get(l);
          if (v === undefined) {
            v = map.size;
            map.set(l, v);
          }
          index[r] = v;
        }
        return { name: g.name, levels: [...map.keys()].map((l) => g.levels[l]), index };
      });
      try {
        const sim = fitGlmm(
          { y, X: X.map((col) => Float64Array.from(idx, (i) => col[i])), xNames: fit.xNames, groups },
          { hessian: false, start: { theta: sd, beta }, tol: 1e-6 },
        );
        const j = sim.xNames.indexOf(opts.coefficient);
        fits++;
        if (j >= 0 && pTwoSidedNormal(sim.beta[j] / sim.se[j]) < alpha) hits++;
      } catch {
        failures++;
      }
    }
    const power = fits ? hits / fits : NaN;
    rows.push({ n: N, power, se: fits ? Math.sqrt((power * (1 - power)) / fits) : NaN, fits, failures });
  }
  const reached = rows.find((r) => r.power >= target);
  return {
    coefficient: opts.coefficient,
    effect,
    alpha,
    target,
    sims: opts.sims,
    participantsFactor: pg.name,
    rows,
    required: reached ? reached.n : null,
    method:
      'parametric simulation from the fitted GLMM: participants resampled with their trial lists, new random effects drawn from the fitted variances, Wald z-test (RX standard errors) on each refit',
    seconds: (performance.now() - t0) / 1000,
  };
}
