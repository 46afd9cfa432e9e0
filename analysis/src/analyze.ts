// `legible analyze`: from trial data to the study's result. Load (a legible export, a study's
// database, or another tool's file through a mapping) → exclusions from the study file → main
// trials of the kept participants → accuracy per condition with bootstrap intervals, per-feature
// accuracies, RT and confidence → the GLMM and its likelihood-ratio tests → Kruskal–Wallis with
// Conover–Iman pairwise tests and permutation tests → power simulation → files and the report.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LegibleError, loadStudy, Rng, type LoadedStudy } from '@legible/studies';
import { loadLegibleExport, type Dataset } from './dataset.ts';
import { countSessions, decide, defaultExclusions, ExclusionTally, formatCounts, RULES, sessionsOfMode, type SessionCounts, type ExclusionConfig, type ExclusionDecision, type ExclusionSummary } from './exclusions.ts';
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
import { friedman, holm, kruskalWallis, permutationTest, wilcoxonSignedRank, type PermutationResult } from './stats/nonparametric.ts';
import type { Table } from './table.ts';
import { writeReport } from './report/html.ts';
import { csvCell } from './csv.ts';
import { compareWithMachine, type MachineComparison, type MachineScore } from './stats/machine.ts';
import { complexityFromManifest, withComplexity, type ComplexityMeasure, type ComplexityResult } from './complexity.ts';

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
  power?: false | { coefficient?: string; effect?: number; ns?: number[]; sims?: number; alpha?: number; target?: number; postHoc?: boolean };
  includeIncomplete?: boolean;
  /**
   * Feature complexity as a covariate (column `complexity`, from the study's stimuli manifest):
   * its order or low-order share (see complexity.ts). Default: none.
   */
  complexity?: ComplexityMeasure;
  /** The stimuli manifest to read complexity from (default: the study's build/manifest.json). */
  manifest?: string;
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
  /** paired: the same features at both levels, labels swapped within each feature (a sign-flip test); unpaired: different features, labels shuffled between them. */
  design: 'paired' | 'unpaired';
  /** Features left out of a paired test because they appear at one of the two levels only. */
  unmatched: number;
  pHolm: number;
}

/**
 * The rank test over the per-feature accuracies of the conditions, chosen by the design: the
 * same features in every condition → within-feature tests (Wilcoxon signed-rank for two
 * conditions, Friedman with Conover's pairwise tests for more); every feature in one condition
 * → Kruskal–Wallis with Conover–Iman's pairwise tests; a mix → none (see the permutation tests).
 */
export interface RankTest {
  test: 'wilcoxon-signed-rank' | 'friedman' | 'kruskal-wallis' | 'none';
  /** Why this test: the design of features × conditions it was chosen for. */
  reason: string;
  /** The factors whose combinations are the conditions compared. */
  by: string;
  /** H (Kruskal–Wallis), Q (Friedman's chi-squared) or V (Wilcoxon's signed-rank sum). */
  statistic: number;
  statisticName: 'H' | 'Q' | 'V' | '';
  df: number | null;
  p: number;
  /** Observations: feature × condition accuracies (Kruskal–Wallis) or features (blocks, pairs). */
  n: number;
  method?: string;
  groups: { label: string; n: number; meanRank: number; median: number }[];
  pairwise: { a: string; b: string; t: number; df: number; p: number; pHolm: number }[];
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
  /** The session counts, as export and the dashboard define them (COUNT_DEFINITIONS). */
  sessionCounts: SessionCounts;
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
  rankTest: RankTest | null;
  permutation: PermutationRow[];
  power: PowerResult | null;
  /** Per-feature accuracy against complexity (with --complexity). */
  complexity?: ComplexityResult;
  /** Where the simulated effect comes from: prospective (given, or stated in the study file) or post hoc (this data's own estimate). */
  powerEffect: null | { kind: 'given' | 'study' | 'pilot' | 'post-hoc'; label: string };
  powerNote: string;
  boot: number;
  /** The data are simulated participants of `legible pilot` (every row's `simulated` = 1). */
  simulated?: boolean;
  /** Per-feature human accuracy against `legible predict`'s machine score (null where the manifest has none). */
  machine?: MachineComparison | null;
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
  const extra = [...(opts.by ?? []), 'simulated'];
  for (const text of [opts.formula, ...(opts.compare ?? [])]) {
    if (!text) continue;
    const f = parseFormula(text);
    extra.push(f.response, ...f.variables.map((v) => v.name), ...f.random.flatMap((r) => [...r.columns, ...r.variables.map((v) => v.name)]));
  }
  if (opts.complexity) extra.splice(0, extra.length, ...extra.filter((c) => c !== 'complexity'));
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
    const exported = await exportStudy(dataDir, { db, study: loaded.study.id, exclusions: loaded.study.exclusions, includeIncomplete: opts.includeIncomplete, participantDetails: loaded.study.data.participant_details });
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
  // Simulated participants (legible pilot) are analysed apart from real ones, never together.
  const simulatedCol = trials.column('simulated');
  const simulatedRows = simulatedCol ? simulatedCol.filter((v) => v === '1' || v === 'true').length : 0;
  if (simulatedRows > 0 && simulatedRows < trials.n) {
    throw new LegibleError(
      `${data.source}: ${simulatedRows} of ${trials.n} trials come from simulated participants (legible pilot, column simulated = 1) and the others from real ones: the two are never analysed together. Analyse each database's export on its own.`,
    );
  }
  const simulated = simulatedRows > 0;
  if (simulated) notes.push('SIMULATED DATA: every participant here is a simulated participant of `legible pilot`, answering with the machine observer\'s predictions or the accuracies it was given. No person took part; nothing here is a finding about people.');
  if (loaded) {
    trials.orders.set('layer', loaded.study.model.layers.map((l) => l.name));
  }
  for (const [f, order] of Object.entries(FACTOR_ORDER)) if (!trials.orders.has(f)) trials.orders.set(f, order);
  const rules: ExclusionConfig = data.exclusions ?? loaded?.study.exclusions ?? defaultExclusions();
  if (!data.exclusions && !loaded) notes.push('No study file or mapping `exclusions`: only unfinished sessions and repeat participation are excluded.');

  // ── Mode (live data only when there is any) and exclusions ──────────────────────────────
  // Every session of the mode counts, with or without answers (its mode from participants.csv,
  // else from its trial rows): the definitions of COUNT_DEFINITIONS, shared with export and the dashboard.
  const modeCol = trials.has('mode') ? trials.column('mode')! : null;
  const sessionCol = trials.column('session')!;
  const { mode, modes, sessions: sessionsInMode, decisions, kept } = sessionsOfMode({ n: trials.n, mode: modeCol, session: sessionCol }, data.participants, rules, { mode: opts.mode, includeIncomplete: opts.includeIncomplete });
  if (mode !== 'all' && modes.length > 1) notes.push(`Only ${mode} data analysed (the file also has: ${modes.filter((m) => m !== mode).join(', ')}); use --mode all for everything.`);
  const tally = new ExclusionTally(rules);
  for (const d of decisions) tally.add(d);
  const mainPerSession = new Map<string, number>();
  const kindCol = trials.column('kind')!;
  for (let i = 0; i < trials.n; i++) if (kindCol[i] === 'main') mainPerSession.set(sessionCol[i], (mainPerSession.get(sessionCol[i]) ?? 0) + 1);
  const exclusions = tally.summary();
  const sessionCounts = countSessions(mode === 'all' && modes.length === 1 ? modes[0] : mode, decisions.map((d) => ({ decision: d, mainTrials: mainPerSession.get(d.session) ?? 0 })));
  const kind = trials.column('kind')!;
  let main = trials.filter((i) => kind[i] === 'main' && kept.has(sessionCol[i]) && (mode === 'all' || modeCol![i] === mode));
  if (main.n === 0) throw new LegibleError(`no main trials left to analyse (${decisions.length} sessions, ${exclusions.excluded} excluded${mode !== 'all' ? `, mode ${mode}` : ''})`);
  // ── Complexity: a per-feature covariate from the stimuli manifest ─────────────────────────
  let complexity: ComplexityResult | undefined;
  if (opts.complexity) {
    const manifest = opts.manifest ?? (loaded ? join(loaded.paths.build, 'manifest.json') : null);
    if (!manifest) throw new LegibleError('--complexity needs the stimuli manifest: give the study (--study FILE) or --manifest FILE');
    const added = withComplexity(main, complexityFromManifest(manifest, opts.complexity), { measure: opts.complexity, manifest, boot: opts.boot ?? 2000, seed: opts.seed ?? 1 });
    main = added.main;
    complexity = added.result;
    if (complexity.dropped.features) notes.push(`--complexity ${opts.complexity}: ${complexity.dropped.features} features (${complexity.dropped.trials} main trials) have no complexity ${opts.complexity} in ${manifest} and are left out of this analysis.`);
  }
  log(`${formatCounts(sessionCounts)}; ${main.n} main trials analysed`);

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
  const machine = loaded ? compareWithMachine(units, machineScores(loaded), { boot, seed }) : null;

  // ── GLMM ─────────────────────────────────────────────────────────────────────────────────
  const varying = factors.filter((f) => levels.get(f)!.length >= 2);
  const random = ['participant', 'feature'].filter((g) => new Set(main.column(g)!).size >= 2);
  // The maximal random-effects structure the design justifies: slopes for the factors that vary
  // within participants (and within features), reduced step by step while singular.
  const fixed = [...varying, ...(complexity ? ['complexity'] : [])];
  const formula = opts.formula ?? `correct ~ ${fixed.length ? fixed.join(' * ') : '1'}${maximalRandomTerms(main, varying, random).map((t) => ` + ${t.term}`).join('')}`;
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
  const rankTest = cells.length >= 2 ? chooseRankTest(units, cells, factors, levels) : null;
  const permutations = opts.permutations ?? 10_000;
  const permutation = permutationTests(units, factors, levels, permutations, seed);

  // ── Power ────────────────────────────────────────────────────────────────────────────────
  let power: PowerResult | null = null;
  let powerEffect: AnalysisResult['powerEffect'] = null;
  let powerNote = '';
  const stated = loaded?.study.analysis?.power;
  const given = opts.power === false ? null : (opts.power ?? {});
  const pickCoefficient = (xNames: string[]) => given?.coefficient ?? (given?.effect === undefined ? stated?.coefficient : undefined) ?? xNames.find((n) => n.startsWith('basis')) ?? xNames.find((n) => n !== '(Intercept)');
  // A pilot's estimate, when live data is analysed beside pilot data and no effect is stated.
  let pilot: { effect: number; participants: number } | null = null;
  if (given && given.effect === undefined && !stated && !given.postHoc && model && mode === 'live' && modes.includes('pilot') && modeCol) {
    const pilotSessions = new Set<string>();
    for (let i = 0; i < trials.n; i++) if (modeCol[i] === 'pilot') pilotSessions.add(sessionCol[i]);
    const keptPilot = new Set(data.participants.filter((f) => pilotSessions.has(f.session) && !decide(f, rules, { includeIncomplete: opts.includeIncomplete }).excluded).map((f) => f.session));
    const pilotMain = trials.filter((i) => kind[i] === 'main' && modeCol[i] === 'pilot' && keptPilot.has(sessionCol[i]));
    const coefficient = pickCoefficient(model.fit.xNames);
    try {
      if (pilotMain.n > 0 && coefficient) {
        // As the pilot's own analysis fits it: the formula given, or the maximal one reduced while singular.
        const fit = (opts.formula ? fitModel(formula, pilotMain, { hessian: false }) : fitWithReduction(formula, pilotMain).model).fit;
        const j = fit.xNames.indexOf(coefficient);
        if (j >= 0 && Number.isFinite(fit.beta[j])) pilot = { effect: fit.beta[j], participants: new Set(pilotMain.column('participant')!).size };
      }
    } catch (e) {
      if (!(e instanceof LegibleError)) throw e;
      notes.push(`The pilot data could not be fitted for a power estimate: ${e.message}`);
    }
  }
  if (given && given.effect === undefined && !stated && !pilot && !given.postHoc) {
    powerNote =
      'Not run: prospective power needs the effect the study is meant to detect, which this data cannot supply. State it in the study file (analysis.power.effect, in log-odds, from a pilot, earlier work or the smallest effect of interest) or give --power-effect. Power computed from this data\'s own estimate ("observed power") is not shown by default: it is a function of the p-value and is no guide to how many participants a study needs; --power-post-hoc computes it anyway, labelled as such.';
  } else if (model && given) {
    // By default the simulation gets a budget of about a million simulated trials fitted
    // (tens of seconds): 7.5 × the data (N/2, N, 2N and 4N participants) per simulation.
    const budgetSims = Math.floor(1e6 / (7.5 * main.n));
    const sims = given.sims ?? Math.min(100, budgetSims);
    if (given.sims === undefined && sims < 20) powerNote = `Not run by default for ${main.n} trials (each simulated study is a full GLMM fit): ask for it with --power-sims N.`;
    else {
      const coefficient = pickCoefficient(model.fit.xNames);
      if (!coefficient) powerNote = 'The model has no coefficient to test.';
      else {
        const effect = given.effect ?? stated?.effect ?? pilot?.effect;
        powerEffect =
          given.effect !== undefined
            ? { kind: 'given', label: `the effect given with --power-effect (${given.effect} log-odds)` }
            : stated
              ? { kind: 'study', label: `the effect the study file states (analysis.power.effect = ${stated.effect} log-odds${stated.source ? `; source: ${stated.source}` : ''})` }
              : pilot
                ? {
                    kind: 'pilot',
                    label: `the pilot's estimate (${pilot.effect.toFixed(3)} log-odds from the pilot data of ${pilot.participants} participants; a pilot's estimate is itself uncertain — state the smallest effect of interest in analysis.power.effect to plan on that instead)`,
                  }
                : { kind: 'post-hoc', label: 'this data\'s own estimate (post hoc, "observed power")' };
        const N = new Set(main.column('participant')!).size;
        const ns = given.ns ?? [...new Set([0.5, 1, 2, 4].map((m) => Math.max(4, Math.round(N * m))))];
        log(`power simulation: ${coefficient} = ${effect ?? 'its estimate (post hoc)'}, N = ${ns.join(', ')}, ${sims} simulations each`);
        try {
          power = powerSimulation(model, { coefficient, effect, ns, sims, alpha: given.alpha, target: given.target, seed });
          const reach = power.required === null ? `power stays below ${power.target} up to ${Math.max(...ns)} participants` : `about ${power.required} participants give power ≥ ${power.target}`;
          powerNote =
            powerEffect.kind === 'post-hoc'
              ? `Post hoc: with this data's own estimate of ${coefficient} (${power.effect.toFixed(3)} log-odds), ${reach}. Caveat: observed power is a function of this study's p-value; it is not evidence for or against the effect and is no basis for planning a sample size — state the effect of interest (analysis.power.effect) for that.`
              : `Prospective, for ${powerEffect.label}: ${reach}. The other parameters (intercept, other terms, random-effect SDs) come from this data's fit.`;
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
    sessionCounts,
    decisions,
    cells,
    units,
    responses,
    glmm,
    glmmError,
    rankTest,
    permutation,
    power,
    ...(complexity && { complexity }),
    powerEffect,
    powerNote,
    boot,
    simulated,
    machine,
    files,
    notes,
  };
  writeTables(out, result);
  files.push(join(out, 'results.json'), join(out, 'accuracy.csv'), join(out, 'features.csv'), join(out, 'exclusions.csv'));
  if (glmm) files.push(join(out, 'glmm.csv'), join(out, 'ranef.csv'));
  if (complexity) files.push(join(out, 'complexity.csv'));
  if (opts.report ?? true) files.push(...(await writeReport(out, result, loaded)));
  writeFileSync(join(out, 'results.json'), `${JSON.stringify(result, jsonReplacer, 2)}\n`);
  return result;
}

/** The machine scores `legible predict` wrote into the study's manifest, by feature id. */
function machineScores(loaded: LoadedStudy): Map<string, MachineScore> {
  const file = join(loaded.paths.build, 'manifest.json');
  const out = new Map<string, MachineScore>();
  if (!existsSync(file)) return out;
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as { features?: { id: string; machine_score?: MachineScore }[] };
  for (const f of manifest.features ?? []) if (f.machine_score) out.set(f.id, f.machine_score);
  return out;
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

/** Picks and runs the rank test the design of features × conditions calls for (see RankTest). */
function chooseRankTest(units: UnitAccuracy[], cells: CellAccuracy[], factors: string[], levels: Map<string, string[]>): RankTest {
  const varyingIdx = factors.map((f, j) => (levels.get(f)!.length > 1 ? j : -1)).filter((j) => j >= 0);
  const labels = cells.map((c) => varyingIdx.map((j) => c.levels[j]).join(' · ') || 'all');
  const by = varyingIdx.map((j) => factors[j]).join(' × ');
  const k = cells.length;
  const cellsOf = new Map<string, Map<number, number>>();
  for (const u of units) {
    const m = cellsOf.get(u.unit) ?? new Map<number, number>();
    m.set(u.cell, u.accuracy);
    cellsOf.set(u.unit, m);
  }
  const features = [...cellsOf.keys()];
  const complete = features.every((f) => cellsOf.get(f)!.size === k);
  const single = features.every((f) => cellsOf.get(f)!.size === 1);
  if (complete) {
    const why = `every one of the ${features.length} features was tested in all ${k} conditions, so its accuracies are paired: a within-feature test ranks each feature against itself (Kruskal–Wallis would wrongly treat them as ${features.length * k} independent samples)`;
    if (k === 2) {
      const w = wilcoxonSignedRank(
        features.map((f) => cellsOf.get(f)!.get(1)!),
        features.map((f) => cellsOf.get(f)!.get(0)!),
      );
      return {
        test: 'wilcoxon-signed-rank',
        reason: why,
        by,
        statistic: w.V,
        statisticName: 'V',
        df: null,
        p: w.p,
        n: features.length,
        method: `${w.method === 'exact' ? 'exact distribution' : 'normal approximation with continuity and tie corrections'}; ${w.zeros} feature${w.zeros === 1 ? '' : 's'} with no difference dropped; V sums the ranks of ${labels[1]} − ${labels[0]} > 0; median difference ${(w.medianDifference * 100).toFixed(1)} points`,
        groups: cells.map((_, c) => {
          const v = features.map((f) => cellsOf.get(f)!.get(c)!).sort((a, b) => a - b);
          return { label: labels[c], n: v.length, meanRank: NaN, median: (v[(v.length - 1) >> 1] + v[v.length >> 1]) / 2 };
        }),
        pairwise: [],
      };
    }
    const fr = friedman(
      features.map((f) => cells.map((_, c) => cellsOf.get(f)!.get(c)!)),
      labels,
    );
    return { test: 'friedman', reason: why, by, statistic: fr.Q, statisticName: 'Q', df: fr.df, p: fr.p, n: fr.blocks, method: 'ranks within each feature, ties corrected; pairwise: Conover\'s test on the rank sums, Holm-adjusted', groups: fr.groups, pairwise: fr.pairwise };
  }
  if (single) {
    const kw = kruskalWallis(
      units.map((u) => u.accuracy),
      units.map((u) => u.cell),
      labels,
    );
    return {
      test: 'kruskal-wallis',
      reason: `each feature was tested in one condition only (features differ between ${by}), so the per-feature accuracies are independent samples`,
      by,
      statistic: kw.H,
      statisticName: 'H',
      df: kw.df,
      p: kw.p,
      n: kw.n,
      method: 'ties corrected; pairwise: Conover–Iman tests on the mean ranks (t with N − k df), Holm-adjusted',
      groups: kw.groups,
      pairwise: kw.pairwise,
    };
  }
  // Which factors vary within a feature and which between features.
  const within = varyingIdx.filter((j) => features.some((f) => new Set([...cellsOf.get(f)!.keys()].map((c) => cells[c].levels[j])).size > 1)).map((j) => factors[j]);
  const between = varyingIdx.map((j) => factors[j]).filter((f) => !within.includes(f));
  return {
    test: 'none',
    reason: `${within.join(', ') || 'some conditions'} var${within.length === 1 ? 'ies' : 'y'} within features${between.length ? ` and ${between.join(', ')} between them` : ', but not every feature was tested in every condition'}: no single rank test over all conditions fits; the permutation tests pair the accuracies where the same features are compared`,
    by,
    statistic: NaN,
    statisticName: '',
    df: null,
    p: NaN,
    n: units.length,
    groups: [],
    pairwise: [],
  };
}

/**
 * For each factor and each pair of its levels: the difference in mean per-unit accuracy, and for
 * basis, the same within each layer. Where the same features appear at both levels the test is
 * paired (labels swapped within each feature and level of the other factors: a sign-flip test on
 * the within-feature differences); otherwise the labels are permuted between features within the
 * cells of the other factors. Holm-adjusted within each factor's family.
 */
function permutationTests(units: UnitAccuracy[], factors: string[], levels: Map<string, string[]>, B: number, seed: number): PermutationRow[] {
  const rng = new Rng(seed + 17);
  const rows: PermutationRow[] = [];
  factors.forEach((f, fi) => {
    const lv = levels.get(f)!;
    if (lv.length < 2) return;
    const family: PermutationRow[] = [];
    const run = (subset: UnitAccuracy[], a: string, b: string, within: string) => {
      let pair = subset.filter((u) => u.levels[fi] === a || u.levels[fi] === b);
      const other = (u: UnitAccuracy) => u.levels.filter((_, j) => j !== fi).join('\u0000');
      const matchKey = (u: UnitAccuracy) => `${other(u)}\u0000${u.unit}`;
      const at = (level: string) => new Set(pair.filter((u) => u.levels[fi] === level).map(matchKey));
      const atA = at(a);
      const atB = at(b);
      const matched = new Set([...atA].filter((key) => atB.has(key)));
      const paired = matched.size > 0;
      let unmatched = 0;
      if (paired) {
        unmatched = new Set(pair.filter((u) => !matched.has(matchKey(u))).map((u) => u.unit)).size;
        pair = pair.filter((u) => matched.has(matchKey(u)));
      }
      const na = pair.filter((u) => u.levels[fi] === a).length;
      if (na === 0 || na === pair.length) return;
      const strataKey = pair.map(paired ? matchKey : other);
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
      family.push({ ...res, difference: -res.difference, na: res.nb, nb: res.na, factor: f, a, b, within, design: paired ? 'paired' : 'unpaired', unmatched, pHolm: NaN });
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
      [...r.factors, 'trials', 'participants', 'features', 'accuracy', 'ci_participants_low', 'ci_participants_high', 'ci_features_low', 'ci_features_high', 'participant_mean', 'participant_sd', 'participant_halfwidth_1.96sd_sqrtn', 'feature_mean'],
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
        n4(c.participantSd),
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
  if (r.complexity) {
    writeFileSync(
      join(out, 'complexity.csv'),
      csv(
        ['feature', 'layer', 'basis', `complexity_${r.complexity.measure}`, 'trials', 'correct', 'accuracy'],
        r.complexity.features.map((p) => [p.feature, p.layer, p.basis, p.complexity, p.trials, p.correct, n4(p.accuracy)]),
      ),
    );
  }
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

