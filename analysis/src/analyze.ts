// `legible analyze`: from trial data to the study's result. Load (a legible export, a study's
// database, or another tool's file through a mapping) → exclusions from the study file → main
// trials of the kept participants → accuracy per condition with bootstrap intervals, per-feature
// accuracies, RT and confidence → the GLMM and its likelihood-ratio tests → Kruskal–Wallis with
// Conover–Iman pairwise tests and permutation tests → power simulation → files and the report.
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LegibleError, loadStudy, Rng, type LoadedStudy } from '@legible/studies';
import { loadLegibleExport, type Dataset } from './dataset.ts';
import { decide, defaultExclusions, ExclusionTally, RULES, type ExclusionConfig, type ExclusionDecision, type ExclusionSummary } from './exclusions.ts';
import { exportStudy } from './export.ts';
import { loadMapped, loadMapping } from './mapping.ts';
import { writeModelScript } from './rscript.ts';
import { cellAccuracies, cellResponses, unitAccuracies, type CellAccuracy, type CellResponses, type CellTrials, type UnitAccuracy } from './stats/descriptive.ts';
import { naturalCompare, parseFormula } from './stats/formula.ts';
import {
  dropTermTests,
  fitModel,
  fitWithReduction,
  likelihoodRatio,
  maximalRandomTerms,
  modelWarnings,
  powerSimulation,
  separationTests,
  type FittedModel,
  type LikelihoodRatio,
  type PowerResult,
  type ReductionStep,
} from './stats/models.ts';
import { holm, kruskalWallis, permutationTest, type KruskalResult, type PermutationResult } from './stats/nonparametric.ts';
import type { Table } from './table.ts';
import { writeReport } from './report/html.ts';
import { csvCell } from './csv.ts';

export interface AnalyzeOptions {
  /** A study id/file/folder (read from its database) or a trials file (.csv/.jsonl). */
  input: string;
  out: string;
  db?: string;
  studiesDir?: string;
  /** Another tool's file: the YAML mapping that names its columns. */
  mapping?: string;
  /** The study file to take exclusions, layer order and stimuli from, when the data does not name a loadable one. */
  study?: string;
  formula?: string;
  /** Further reduced formulas to test against the main model by likelihood ratio. */
  compare?: string[];
  /** Condition columns (default: basis, layer, reference_kind, as present). */
  by?: string[];
  mode?: 'live' | 'pilot' | 'all';
  boot?: number;
  permutations?: number;
  seed?: number;
  /** Power simulation: false to skip; defaults decided from the data size. */
  power?: false | { coefficient?: string; effect?: number; ns?: number[]; sims?: number; alpha?: number; target?: number };
  includeIncomplete?: boolean;
  /** Draw the report (default true). */
  report?: boolean;
  log?: (line: string) => void;
}

export interface PermutationRow extends PermutationResult {
  factor: string;
  a: string;
  b: string;
  /** Levels of the other factors the test was restricted to ("" = all, permuted within them). */
  within: string;
  pHolm: number;
}

export interface AnalysisResult {
  source: string;
  study: string | null;
  generatedAt: string;
  mode: string;
  factors: string[];
  levels: Record<string, string[]>;
  counts: { trials: number; mainTrials: number; participants: number; keptParticipants: number; features: number };
  exclusions: ExclusionSummary;
  decisions: ExclusionDecision[];
  cells: CellAccuracy[];
  units: UnitAccuracy[];
  responses: CellResponses[];
  glmm: null | {
    /** The formula of the reported model (after any reduction of a singular maximal model). */
    formula: string;
    fit: FittedModel['fit'];
    lrt: LikelihoodRatio[];
    /** Default formula only: the maximal model and each simplification of it, with the reason (one step when it was not singular). */
    reduction: ReductionStep[];
    /** Likelihood-ratio tests of the coefficients whose Wald tests separation voids (fit.separation). */
    separationLrt: LikelihoodRatio[];
    /** Every model warning (singular, separation, convergence), as the CLI prints them. */
    warnings: string[];
  };
  glmmError?: string;
  kruskal: (KruskalResult & { by: string }) | null;
  permutation: PermutationRow[];
  power: PowerResult | null;
  powerNote: string;
  boot: number;
  files: string[];
  notes: string[];
}

const FACTOR_ORDER: Record<string, string[]> = { basis: ['channels', 'nmf', 'sae'], reference_kind: ['natural', 'visualization'] };

export async function analyze(opts: AnalyzeOptions): Promise<AnalysisResult> {
  const log = opts.log ?? (() => {});
  const out = resolve(opts.out);
  mkdirSync(out, { recursive: true });
  const files: string[] = [];
  const notes: string[] = [];

  // ── Load ────────────────────────────────────────────────────────────────────────────────
  let data: Dataset;
  let loaded: LoadedStudy | null = null;
  // Columns the analysis needs beyond the usual ones: --by and the formula's variables.
  const extra = [...(opts.by ?? [])];
  for (const text of [opts.formula, ...(opts.compare ?? [])]) {
    if (!text) continue;
    const f = parseFormula(text);
    extra.push(f.response, ...f.variables.map((v) => v.name), ...f.random.flatMap((r) => [...r.columns, ...r.variables.map((v) => v.name)]));
  }
  const isFile = /\.(csv|jsonl)$/i.test(opts.input) && existsSync(opts.input);
  if (opts.mapping) {
    if (!existsSync(opts.input)) throw new LegibleError(`no file ${opts.input} to read through the mapping`);
    data = loadMapped(opts.input, loadMapping(opts.mapping));
  } else if (isFile) {
    data = loadLegibleExport(opts.input, extra);
  } else {
    if (/\.(csv|jsonl)$/i.test(opts.input)) throw new LegibleError(`no file ${opts.input}`);
    loaded = loadStudy(opts.input, { studiesDir: opts.studiesDir, checkFiles: false });
    const db = opts.db ?? process.env.LEGIBLE_DB ?? 'legible.db';
    const dataDir = join(out, 'data');
    log(`exporting study ${loaded.study.id} from ${db}`);
    const exported = await exportStudy(dataDir, { db, study: loaded.study.id, exclusions: loaded.study.exclusions, includeIncomplete: opts.includeIncomplete });
    files.push(...exported.files);
    data = loadLegibleExport(exported.files[0], extra);
  }
  if (!loaded) {
    const ref = opts.study ?? data.study;
    if (ref) {
      try {
        loaded = loadStudy(ref, { studiesDir: opts.studiesDir, checkFiles: false });
      } catch (e) {
        if (opts.study) throw e;
        notes.push(`The data names study "${ref}", but its study file could not be loaded (${(e as Error).message.split('\n')[0]}): no exclusion rules from it, no stimuli gallery. Give --study FILE.`);
      }
    }
  }
  const trials = data.trials;
  if (loaded) {
    trials.orders.set('layer', loaded.study.model.layers.map((l) => l.name));
  }
  for (const [f, order] of Object.entries(FACTOR_ORDER)) if (!trials.orders.has(f)) trials.orders.set(f, order);
  const rules: ExclusionConfig = data.exclusions ?? loaded?.study.exclusions ?? defaultExclusions();
  if (!data.exclusions && !loaded) notes.push('No study file or mapping `exclusions`: only unfinished sessions and repeat participation are excluded.');

  // ── Mode: live data only when there is any ───────────────────────────────────────────────
  const modeCol = trials.has('mode') ? trials.column('mode')! : null;
  const modes = modeCol ? [...new Set(modeCol)] : [];
  const mode = opts.mode ?? (modes.includes('live') ? 'live' : 'all');
  if (mode !== 'all' && modes.length > 1) notes.push(`Only ${mode} data analysed (the file also has: ${modes.filter((m) => m !== mode).join(', ')}); use --mode all for everything.`);

  // ── Exclusions ───────────────────────────────────────────────────────────────────────────
  const tally = new ExclusionTally(rules);
  const decisions: ExclusionDecision[] = [];
  const sessionsInMode = new Set<string>();
  const sessionCol = trials.column('session')!;
  for (let i = 0; i < trials.n; i++) if (mode === 'all' || modeCol![i] === mode) sessionsInMode.add(sessionCol[i]);
  for (const facts of data.participants) {
    if (!sessionsInMode.has(facts.session)) continue;
    const d = decide(facts, rules, { includeIncomplete: opts.includeIncomplete });
    decisions.push(d);
    tally.add(d);
  }
  const exclusions = tally.summary();
  const kept = new Set(decisions.filter((d) => !d.excluded).map((d) => d.session));
  const kind = trials.column('kind')!;
  const main = trials.filter((i) => kind[i] === 'main' && kept.has(sessionCol[i]) && (mode === 'all' || modeCol![i] === mode));
  log(`${decisions.length} sessions, ${exclusions.excluded} excluded; ${main.n} main trials analysed`);
  if (main.n === 0) throw new LegibleError(`no main trials left to analyse (${decisions.length} sessions, ${exclusions.excluded} excluded${mode !== 'all' ? `, mode ${mode}` : ''})`);

  // ── Conditions ───────────────────────────────────────────────────────────────────────────
  const requested = opts.by ?? data.factors;
  for (const f of requested) if (!main.has(f)) throw new LegibleError(`no column "${f}" to group by (columns: ${main.names().join(', ')})`);
  const levelsOf = (f: string) => {
    const present = new Set(main.column(f)!);
    const order = trials.orders.get(f);
    const sorted = [...present].sort(naturalCompare);
    return order ? [...order.filter((l) => present.has(l)), ...sorted.filter((l) => !order.includes(l))] : sorted;
  };
  const factors = requested.filter((f) => levelsOf(f).length >= 1);
  const levels = new Map(factors.map((f) => [f, levelsOf(f)]));
  const cellTrials = buildCells(main, factors, levels);

  // ── Descriptives ─────────────────────────────────────────────────────────────────────────
  const boot = opts.boot ?? 2000;
  const seed = opts.seed ?? 1;
  const cells = cellAccuracies(cellTrials, { boot, seed });
  const units = unitAccuracies(cellTrials);
  const responses = cellResponses(cellTrials);

  // ── GLMM ─────────────────────────────────────────────────────────────────────────────────
  const varying = factors.filter((f) => levels.get(f)!.length >= 2);
  const random = ['participant', 'feature'].filter((g) => new Set(main.column(g)!).size >= 2);
  // The maximal random-effects structure the design justifies: slopes for the factors that vary
  // within participants (and within features), reduced step by step while singular.
  const formula = opts.formula ?? `correct ~ ${varying.length ? varying.join(' * ') : '1'}${maximalRandomTerms(main, varying, random).map((t) => ` + ${t.term}`).join('')}`;
  let glmm: AnalysisResult['glmm'] = null;
  let model: FittedModel | null = null;
  let glmmError: string | undefined;
  try {
    log(`fitting ${formula}`);
    let reduction: ReductionStep[] = [];
    if (opts.formula) model = fitModel(formula, main);
    else {
      const reduced = fitWithReduction(formula, main, { onStep: (step) => log(`${step.reason}: fitting ${step.formula}`) });
      model = reduced.model;
      reduction = reduced.steps;
    }
    const lrt = dropTermTests(model, main).tests;
    for (const text of opts.compare ?? []) lrt.push(likelihoodRatio(fitModel(text, main, { hessian: false }), model, text));
    const separationLrt = separationTests(model);
    const warnings = modelWarnings(model, reduction, separationLrt);
    glmm = { formula: model.formula.text, fit: model.fit, lrt, reduction, separationLrt, warnings };
    files.push(...writeModelScript(out, model, main, `legible analyze (${new Date().toISOString().slice(0, 10)})`));
  } catch (e) {
    if (!(e instanceof LegibleError)) throw e;
    glmmError = e.message;
    notes.push(`GLMM not fitted: ${e.message}`);
  }

  // ── Non-parametric tests over per-unit accuracies ───────────────────────────────────────
  let kruskal: AnalysisResult['kruskal'] = null;
  if (cells.length >= 2) {
    const varyingIdx = factors.map((f, j) => (levels.get(f)!.length > 1 ? j : -1)).filter((j) => j >= 0);
    const labels = cells.map((c) => varyingIdx.map((j) => c.levels[j]).join(' · ') || 'all');
    const k = kruskalWallis(
      units.map((u) => u.accuracy),
      units.map((u) => u.cell),
      labels,
    );
    kruskal = { ...k, by: varyingIdx.map((j) => factors[j]).join(' × ') };
  }
  const permutations = opts.permutations ?? 10_000;
  const permutation = permutationTests(units, factors, levels, permutations, seed);

  // ── Power ────────────────────────────────────────────────────────────────────────────────
  let power: PowerResult | null = null;
  let powerNote = '';
  if (model && opts.power !== false) {
    const given = opts.power ?? {};
    // By default the simulation gets a budget of about a million simulated trials fitted
    // (tens of seconds): 7.5 × the data (N/2, N, 2N and 4N participants) per simulation.
    const budgetSims = Math.floor(1e6 / (7.5 * main.n));
    const sims = given.sims ?? Math.min(100, budgetSims);
    if (given.sims === undefined && sims < 20) powerNote = `Not run by default for ${main.n} trials (each simulated study is a full GLMM fit): ask for it with --power-sims N.`;
    else {
      const coefficient = given.coefficient ?? model.fit.xNames.find((n) => n.startsWith('basis')) ?? model.fit.xNames.find((n) => n !== '(Intercept)');
      if (!coefficient) powerNote = 'The model has no coefficient to test.';
      else {
        const N = new Set(main.column('participant')!).size;
        const ns = given.ns ?? [...new Set([0.5, 1, 2, 4].map((m) => Math.max(4, Math.round(N * m))))];
        log(`power simulation: ${coefficient}, N = ${ns.join(', ')}, ${sims} simulations each`);
        try {
          power = powerSimulation(model, { coefficient, effect: given.effect, ns, sims, alpha: given.alpha, target: given.target, seed });
          powerNote = power.required === null ? `Power stays below ${power.target} up to ${Math.max(...ns)} participants.` : `About ${power.required} participants give power ≥ ${power.target}.`;
        } catch (e) {
          // Asked for explicitly: the user should see the error; by default: a note in the report.
          if (!(e instanceof LegibleError) || opts.power !== undefined) throw e;
          powerNote = `Not run: ${e.message}`;
        }
      }
    }
  } else if (!model) powerNote = 'No fitted model to simulate from.';
  else powerNote = 'Not run (--no-power).';

  const participantCount = new Set(data.participants.filter((p) => sessionsInMode.has(p.session)).map((p) => p.participant)).size;
  const result: AnalysisResult = {
    source: data.source,
    study: loaded?.study.id ?? data.study ?? null,
    generatedAt: new Date().toISOString(),
    mode,
    factors,
    levels: Object.fromEntries(levels),
    counts: {
      trials: trials.n,
      mainTrials: main.n,
      participants: participantCount,
      keptParticipants: new Set(main.column('participant')!).size,
      features: new Set(main.column('feature')!).size,
    },
    exclusions,
    decisions,
    cells,
    units,
    responses,
    glmm,
    glmmError,
    kruskal,
    permutation,
    power,
    powerNote,
    boot,
    files,
    notes,
  };
  writeTables(out, result);
  files.push(join(out, 'results.json'), join(out, 'accuracy.csv'), join(out, 'features.csv'), join(out, 'exclusions.csv'));
  if (glmm) files.push(join(out, 'glmm.csv'), join(out, 'ranef.csv'));
  if (opts.report ?? true) files.push(...(await writeReport(out, result, loaded)));
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(result, jsonReplacer, 2)}\n`);
  return result;
}

function jsonReplacer(key: string, value: unknown): unknown {
  if (key === 'ranef') return undefined; // one number per participant and feature: in ranef.csv instead
  if (typeof value === 'number' && !Number.isFinite(value)) return null;
  return value;
}

function buildCells(main: Table, factors: string[], levels: Map<string, string[]>): CellTrials {
  const cols = factors.map((f) => main.column(f)!);
  const keyOf = (i: number) => cols.map((c) => c[i]);
  const cellIndex = new Map<string, number>();
  const raw: string[][] = [];
  const cell = new Int32Array(main.n);
  for (let i = 0; i < main.n; i++) {
    const k = keyOf(i);
    const s = k.join('\u0000');
    let c = cellIndex.get(s);
    if (c === undefined) {
      c = raw.length;
      cellIndex.set(s, c);
      raw.push(k);
    }
    cell[i] = c;
  }
  // Order cells by the factors' level orders.
  const rank = (k: string[]) => k.map((l, j) => levels.get(factors[j])!.indexOf(l));
  const order = raw.map((_, c) => c).sort((a, b) => {
    const ra = rank(raw[a]);
    const rb = rank(raw[b]);
    for (let j = 0; j < ra.length; j++) if (ra[j] !== rb[j]) return ra[j] - rb[j];
    return 0;
  });
  const newIndex = new Int32Array(raw.length);
  order.forEach((c, pos) => (newIndex[c] = pos));
  for (let i = 0; i < main.n; i++) cell[i] = newIndex[cell[i]];
  const participant = main.codes('participant');
  const feature = main.codes('feature');
  const correct = main.numbers('correct');
  return {
    cell,
    cells: order.map((c) => raw[c]),
    participant: participant.codes,
    unit: feature.codes,
    units: feature.levels,
    correct: Uint8Array.from(correct, (x) => (x === 1 ? 1 : 0)),
    rt: main.has('rt_ms') ? main.numbers('rt_ms') : new Float64Array(main.n).fill(NaN),
    confidence: main.has('confidence') ? main.numbers('confidence') : new Float64Array(main.n).fill(NaN),
  };
}

/**
 * For each factor and each pair of its levels: the difference in mean per-unit accuracy, labels
 * permuted within the cells of the other factors; and for basis, the same within each layer.
 * Holm-adjusted within each factor's family.
 */
function permutationTests(units: UnitAccuracy[], factors: string[], levels: Map<string, string[]>, B: number, seed: number): PermutationRow[] {
  const rng = new Rng(seed + 17);
  const rows: PermutationRow[] = [];
  factors.forEach((f, fi) => {
    const lv = levels.get(f)!;
    if (lv.length < 2) return;
    const family: PermutationRow[] = [];
    const run = (subset: UnitAccuracy[], a: string, b: string, within: string) => {
      const pair = subset.filter((u) => u.levels[fi] === a || u.levels[fi] === b);
      const na = pair.filter((u) => u.levels[fi] === a).length;
      if (na === 0 || na === pair.length) return;
      const strataKey = pair.map((u) => u.levels.filter((_, j) => j !== fi).join('\u0000'));
      const strataIds = new Map<string, number>();
      const strata = strataKey.map((k) => {
        if (!strataIds.has(k)) strataIds.set(k, strataIds.size);
        return strataIds.get(k)!;
      });
      const res = permutationTest(
        pair.map((u) => u.accuracy),
        pair.map((u) => (u.levels[fi] === a ? 1 : 0)),
        strata,
        B,
        rng,
      );
      // label 1 = a: report mean(a) − mean(b)
      family.push({ ...res, difference: -res.difference, na: res.nb, nb: res.na, factor: f, a, b, within, pHolm: NaN });
    };
    for (let x = 0; x < lv.length; x++) for (let y = x + 1; y < lv.length; y++) run(units, lv[y], lv[x], '');
    const layerIdx = factors.indexOf('layer');
    if (f === 'basis' && layerIdx >= 0) {
      for (const layer of levels.get('layer')!) {
        const subset = units.filter((u) => u.levels[layerIdx] === layer);
        for (let x = 0; x < lv.length; x++) for (let y = x + 1; y < lv.length; y++) run(subset, lv[y], lv[x], `layer = ${layer}`);
      }
    }
    const adj = holm(family.map((r) => r.p));
    family.forEach((r, i) => (r.pHolm = adj[i]));
    rows.push(...family);
  });
  return rows;
}

function writeTables(out: string, r: AnalysisResult): void {
  const csv = (header: string[], rows: unknown[][]) => `${[header.join(','), ...rows.map((row) => row.map((v) => csvCell(typeof v === 'number' && !Number.isFinite(v) ? '' : v)).join(','))].join('\n')}\n`;
  const n4 = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(6)) : NaN);
  writeFileSync(
    join(out, 'accuracy.csv'),
    csv(
      [...r.factors, 'trials', 'participants', 'features', 'accuracy', 'ci_participants_low', 'ci_participants_high', 'ci_features_low', 'ci_features_high', 'participant_mean', 'participant_halfwidth_1.96sd_sqrtn', 'feature_mean'],
      r.cells.map((c) => [
        ...c.levels,
        c.trials,
        c.participants,
        c.units,
        n4(c.accuracy),
        n4(c.ciParticipants[0]),
        n4(c.ciParticipants[1]),
        n4(c.ciUnits[0]),
        n4(c.ciUnits[1]),
        n4(c.participantMean),
        n4(c.participantHalfWidth),
        n4(c.unitMean),
      ]),
    ),
  );
  writeFileSync(
    join(out, 'features.csv'),
    csv(
      ['feature', ...r.factors, 'trials', 'correct', 'accuracy', 'median_rt_ms', 'mean_confidence'],
      r.units.map((u) => [u.unit, ...u.levels, u.trials, u.correct, n4(u.accuracy), n4(u.medianRt), n4(u.meanConfidence)]),
    ),
  );
  writeFileSync(
    join(out, 'exclusions.csv'),
    csv(
      ['session', 'participant', 'excluded', 'reasons', ...RULES.map((x) => x.column)],
      r.decisions.map((d) => [d.session, d.participant, d.excluded ? 1 : 0, d.reasons.join('; '), ...RULES.map((x) => (d.rules[x.id].excluded === null ? '' : d.rules[x.id].excluded ? 1 : 0))]),
    ),
  );
  if (r.glmm) {
    const f = r.glmm.fit;
    writeFileSync(
      join(out, 'glmm.csv'),
      csv(
        ['term', 'estimate', 'se', 'z', 'p'],
        [
          ...f.xNames.map((name, j) => [name, f.beta[j], f.se[j], f.z[j], f.p[j]]),
          // lme4's VarCorr: sd(group) for a random intercept alone, else sd(column | group) and cor(a, b | group).
          ...f.groups.flatMap((g) => [
            ...g.columns.map((c, a) => [g.columns.length === 1 && c === '(Intercept)' ? `sd(${g.name})` : `sd(${c} | ${g.name})`, g.sds[a], '', '', '']),
            ...g.columns.flatMap((c, a) => g.columns.slice(0, a).flatMap((c2, b) => (g.cor[a][b] === null ? [] : [[`cor(${c2}, ${c} | ${g.name})`, g.cor[a][b], '', '', '']]))),
          ]),
          ['logLik', f.logLik, '', '', ''],
          ['AIC', f.AIC, '', '', ''],
        ],
      ),
    );
    writeFileSync(
      join(out, 'ranef.csv'),
      csv(
        ['group', 'level', 'mode', 'effect'],
        f.ranef.flatMap((g) => g.levels.flatMap((level, j) => g.columns.map((c, a) => [g.name, level, g.values[j * g.columns.length + a], c]))),
      ),
    );
  }
}

