// From a formula and a data frame to a fitted GLMM; likelihood-ratio tests between nested models;
// and the power simulation under a fitted model.
import { LegibleError, Rng } from '@legible/studies';
import { pchisqUpper, pTwoSidedNormal } from './distributions.ts';
import { binaryResponse, groupingOf, modelMatrix, parseFormula, randomTermText, termOfColumn, type Frame, type ModelMatrix, type ParsedFormula, type RandomTerm } from './formula.ts';
import { describeSingular, fitGlmm, type GlmmFit, type GlmmInput, type GlmmOptions, type Grouping } from './glmm.ts';
import { thetaPattern } from './system.ts';

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
    groups: randomGroupings(formula.random, frame),
  };
  return { matrix, input };
}

/**
 * The grouping factors of the random terms with their model-matrix columns. Terms with the same
 * grouping factor are merged into one (e.g. `(1|g) + (0 + x|g)`, or what `||` writes), with no
 * correlation between the terms; within a `||` term no column is correlated with another.
 */
export function randomGroupings(random: RandomTerm[], frame: Frame): Grouping[] {
  const out: Grouping[] = [];
  for (const r of random) {
    const mm = modelMatrix(r, frame);
    if (mm.columns.length === 0) throw new LegibleError(`random term ${r.text} has no columns`);
    let g = out.find((x) => x.name === r.label);
    if (!g) {
      g = { name: r.label, ...groupingOf(frame, r.columns), Z: [], zNames: [], blocks: [] };
      out.push(g);
    }
    let block = g.blocks!.length ? Math.max(...g.blocks!) + 1 : 0;
    mm.names.forEach((name, c) => {
      if (g.zNames!.includes(name)) {
        throw new LegibleError(`the random terms of "${r.label}" give column ${name} twice (in ${r.text}): write each column once per grouping factor`);
      }
      g.Z!.push(mm.columns[c]);
      g.zNames!.push(name);
      g.blocks!.push(block);
      if (!r.correlated) block++;
    });
  }
  return out;
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
  return `${f.response} ~ ${[...fixed, ...f.random.map((r) => r.text)].join(' + ')}`;
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
  const sameRandom = reduced.formula.random.map((r) => r.text).join() === full.formula.random.map((r) => r.text).join();
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
  // Each grouping factor's T_k (b = T_k·u, u standard normal), from the fitted θ.
  const Ts: Float64Array[] = [];
  let at = 0;
  for (const g of input.groups) {
    const r = g.Z?.length ?? 1;
    const T = new Float64Array(r * r);
    for (const [a, b] of thetaPattern(g)) T[a * r + b] = fit.theta[at++];
    Ts.push(T);
  }
  const draw = (k: number, levels: number) => {
    const r = input.groups[k].Z?.length ?? 1;
    const T = Ts[k];
    const out = new Float64Array(levels * r);
    const u = new Float64Array(r);
    for (let l = 0; l < levels; l++) {
      for (let a = 0; a < r; a++) u[a] = rng.normal();
      for (let a = 0; a < r; a++) {
        let v = 0;
        for (let b = 0; b <= a; b++) v += T[a * r + b] * u[b];
        out[l * r + a] = v;
      }
    }
    return out;
  };
  const zAt = (g: Grouping, i: number, a: number) => (g.Z ? g.Z[a][i] : 1);
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
      const effects = input.groups.map((g, k) => draw(k, k === pk ? N : g.levels.length));
      const y = new Float64Array(m);
      for (let r = 0; r < m; r++) {
        const i = idx[r];
        let eta = xb[i];
        input.groups.forEach((g, k) => {
          const rk = g.Z?.length ?? 1;
          const l = k === pk ? newP[r] : g.index[i];
          for (let a = 0; a < rk; a++) eta += zAt(g, i, a) * effects[k][l * rk + a];
        });
        y[r] = rng.float() < 1 / (1 + Math.exp(-eta)) ? 1 : 0;
      }
      const groups = input.groups.map((g, k) => {
        const Z = g.Z?.map((col) => Float64Array.from(idx, (i) => col[i]));
        if (k === pk) return { ...g, Z, levels: Array.from({ length: N }, (_, j) => `s${j}`), index: Int32Array.from(newP) };
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
        return { ...g, Z, levels: [...map.keys()].map((l) => g.levels[l]), index };
      });
      try {
        const sim = fitGlmm(
          { y, X: X.map((col) => Float64Array.from(idx, (i) => col[i])), xNames: fit.xNames, groups },
          { hessian: false, start: { theta: fit.theta, beta }, tol: 1e-6 },
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

/**
 * The maximal random-effects structure the design justifies (Barr et al. 2013): for each grouping
 * column, a random intercept plus random slopes for the factors that vary within its levels (and
 * their interactions), correlated. A factor varies within a grouping column when more than half of
 * the column's levels have trials at two or more of the factor's levels — e.g. basis and layer
 * within participants in a within-subject study, but not within features (each feature belongs to
 * one basis and layer).
 */
export function maximalRandomTerms(frame: Frame, factors: string[], groupings: string[]): { term: string; within: string[] }[] {
  return groupings.map((g) => {
    const gc = frame.column(g)!;
    const within = factors.filter((f) => {
      const fc = frame.column(f)!;
      const seen = new Map<string, Set<string>>();
      for (let i = 0; i < frame.n; i++) {
        const key = String(gc[i]);
        let s = seen.get(key);
        if (!s) seen.set(key, (s = new Set()));
        s.add(String(fc[i]));
      }
      let varying = 0;
      for (const s of seen.values()) if (s.size >= 2) varying++;
      return varying > seen.size / 2;
    });
    return { term: `(${within.length ? `1 + ${within.join(' * ')}` : '1'} | ${g})`, within };
  });
}

export interface ReductionStep {
  formula: string;
  singular: boolean;
  /** Why this model was fitted (the first: "maximal"). */
  reason: string;
  logLik: number;
  warnings: string[];
}

/**
 * Fit a model; while it is singular, simplify its random part as the literature advises
 * (Matuschek et al. 2017, Bates et al. 2015): first drop the correlations of the singular grouping
 * factors (their terms become `||`), then drop, one at a time, the random-slope term with the
 * smallest variance among the singular factors. Every step is returned with its reason; the last
 * model is the one to report (it may still be singular when only intercepts are left: a variance
 * of 0, reported as such).
 */
export function fitWithReduction(formulaText0: string, frame: Frame, opts: GlmmOptions & { onStep?: (step: ReductionStep) => void } = {}): { model: FittedModel; steps: ReductionStep[] } {
  let model = fitModel(formulaText0, frame, opts);
  const steps: ReductionStep[] = [{ formula: formulaText0, singular: model.fit.singular, reason: 'the maximal model the design justifies', logLik: model.fit.logLik, warnings: model.fit.warnings }];
  for (let guard = 0; guard < 20 && model.fit.singular; guard++) {
    const f = model.formula;
    const singularGroups = model.fit.groups.filter((g) => g.singular).map((g) => g.name);
    let random: RandomTerm[] | null = null;
    let reason = '';
    const correlated = f.random.filter((r) => singularGroups.includes(r.label) && r.correlated && (r.intercept ? 1 : 0) + r.terms.length > 1);
    if (correlated.length) {
      random = f.random.map((r) => (correlated.includes(r) ? { ...r, correlated: false } : r));
      reason = `singular fit (${model.fit.groups.filter((g) => g.singular).map(describeSingular).join('; ')}): correlations of ${correlated.map((r) => r.label).join(', ')} dropped`;
    } else {
      // The slope term with the smallest variance among the singular grouping factors.
      let best: { r: RandomTerm; t: number; v: number } | null = null;
      for (const r of f.random) {
        if (!singularGroups.includes(r.label)) continue;
        const g = model.fit.groups.find((x) => x.name === r.label)!;
        r.terms.forEach((term, t) => {
          // Marginality: only a term that no other slope term of r contains.
          if (r.terms.some((u, i) => i !== t && u.length > term.length && term.every((x) => u.includes(x)))) return;
          let v = 0;
          g.columns.forEach((c, a) => {
            if (termOfColumn(r, c) === t) v += g.sds[a] ** 2;
          });
          if (!best || v < best.v) best = { r, t, v };
        });
      }
      if (!best) break;
      const { r, t, v } = best as { r: RandomTerm; t: number; v: number };
      const label = r.terms[t].join(':');
      const keep = r.terms.filter((_, i) => i !== t);
      random = f.random.map((x) => (x === r ? { ...r, terms: keep, correlated: r.correlated || (r.intercept ? 1 : 0) + keep.length <= 1 } : x));
      reason = `still singular (${model.fit.groups.filter((g) => g.singular).map(describeSingular).join('; ')}): the random slope of ${label} by ${r.label}, the smallest variance (${v.toPrecision(2)}), dropped`;
    }
    const next = random.map((r) => ({ ...r, text: randomTermText(r) }));
    const text = formulaText({ ...f, random: next }, f.terms);
    opts.onStep?.({ formula: text, singular: false, reason, logLik: NaN, warnings: [] });
    model = fitModel(text, frame, opts);
    steps.push({ formula: text, singular: model.fit.singular, reason, logLik: model.fit.logLik, warnings: model.fit.warnings });
  }
  return { model, steps };
}

/**
 * Likelihood-ratio tests for coefficients whose Wald tests are void because of separation: each
 * separated column is dropped from X (the rest of the model kept) and the refit compared with the
 * full model — the likelihood of the full model converges as its estimate runs off, so χ² is
 * well defined, unlike z = β̂/SE.
 */
export function separationTests(full: FittedModel): LikelihoodRatio[] {
  const { input, fit } = full;
  return fit.separation.map((name) => {
    const keep = input.xNames.map((n, j) => j).filter((j) => input.xNames[j] !== name && !fit.dropped.includes(input.xNames[j]));
    const reducedFit = fitGlmm({ ...input, X: keep.map((j) => input.X[j]), xNames: keep.map((j) => input.xNames[j]) }, { hessian: false });
    const chisq = Math.max(0, 2 * (fit.logLik - reducedFit.logLik));
    const df = fit.df - reducedFit.df;
    return {
      reduced: `${full.formula.text} without column ${name}`,
      full: full.formula.text,
      dropped: name,
      logLikReduced: reducedFit.logLik,
      logLikFull: fit.logLik,
      AICReduced: reducedFit.AIC,
      AICFull: fit.AIC,
      chisq,
      df,
      p: df > 0 ? pchisqUpper(chisq, df) : NaN,
    };
  });
}

/** Every model warning in words, for the CLI (stderr), results.json and the report. */
export function modelWarnings(model: FittedModel, reduction: ReductionStep[], separationLrt: LikelihoodRatio[]): string[] {
  const out: string[] = [];
  if (reduction.length > 1) {
    out.push(`the maximal model ${reduction[0].formula} is singular; reported instead: ${reduction[reduction.length - 1].formula} (${reduction.slice(1).map((s) => s.reason).join('; then ')})`);
  }
  for (const w of model.fit.warnings) out.push(`${model.formula.text}: ${w}`);
  for (const t of separationLrt) out.push(`separation: likelihood-ratio test of ${t.dropped}: χ²(${t.df}) = ${t.chisq.toFixed(2)}, p = ${t.p.toPrecision(2)} (use this, not its Wald p)`);
  return out;
}
