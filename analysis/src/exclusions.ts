// Participant exclusions from the study file's `exclusions` section, applied rule by rule so the
// report can say how many each rule removed, how many only that rule removed, and how the rules
// overlap. The same code flags participants.csv at export and filters the data at analysis.
import type { Study } from '@legible/studies';

export type ExclusionConfig = Study['exclusions'];

/** What the rules read about one session (participant run). Unknown values are null. */
export interface ParticipantFacts {
  session: string;
  participant: string;
  /** Study mode of the session (`pilot`, `live`; `imported` for other tools' data), when known. */
  mode?: string | null;
  /** The session ran to its end (finished, or every assigned trial answered). */
  complete: boolean | null;
  trials_answered: number | null;
  trials_expected: number | null;
  total_time_s: number | null;
  instruction_time_s: number | null;
  catch_trials: number | null;
  catch_correct: number | null;
  distinct_responses: number | null;
  practice_passed: boolean | null;
  /** The device failed the browser check (legible's client turns such devices away; imported data may flag them). */
  browser_check_failed: boolean | null;
  browser_check_reason?: string | null;
  /** Earlier participation by the same person (a study id, or "session …"), or null. */
  prior_participation: string | null;
}

export const RULES = [
  { id: 'incomplete', column: 'excl_incomplete', label: 'did not finish' },
  { id: 'catch_accuracy', column: 'excl_catch_accuracy', label: 'catch-trial accuracy below the minimum' },
  { id: 'total_time', column: 'excl_total_time', label: 'total time out of bounds' },
  { id: 'instruction_time', column: 'excl_instruction_time', label: 'instruction time too short' },
  { id: 'distinct_responses', column: 'excl_distinct_responses', label: 'too few distinct buttons used' },
  { id: 'repeat_participation', column: 'excl_repeat_participation', label: 'took part before' },
  { id: 'practice', column: 'excl_practice', label: 'never met the practice criterion' },
  { id: 'browser_check', column: 'excl_browser_check', label: 'failed the browser check' },
] as const;
export type RuleId = (typeof RULES)[number]['id'];

export interface RuleOutcome {
  /** true: excluded by the rule; false: passed; null: rule off, or not evaluable for this participant. */
  excluded: boolean | null;
  reason?: string;
}

export interface ExclusionDecision {
  session: string;
  participant: string;
  excluded: boolean;
  rules: Record<RuleId, RuleOutcome>;
  reasons: string[];
}

export interface ExclusionOptions {
  /** Keep sessions that did not finish (default: exclude them, as a rule of its own). */
  includeIncomplete?: boolean;
}

const fmt = (x: number, digits = 2) => (Number.isInteger(x) ? String(x) : x.toFixed(digits));

export function decide(facts: ParticipantFacts, config: ExclusionConfig, opts: ExclusionOptions = {}): ExclusionDecision {
  const rules = {} as Record<RuleId, RuleOutcome>;
  const off = (): RuleOutcome => ({ excluded: null });

  rules.incomplete =
    opts.includeIncomplete || facts.complete === null
      ? off()
      : facts.complete
        ? { excluded: false }
        : {
            excluded: true,
            reason:
              facts.trials_expected !== null && facts.trials_answered !== null
                ? `did not finish (${facts.trials_answered} of ${facts.trials_expected} trials answered)`
                : 'did not finish',
          };

  if (config.catch_accuracy_min === undefined || !facts.catch_trials) rules.catch_accuracy = off();
  else {
    const acc = (facts.catch_correct ?? 0) / facts.catch_trials;
    rules.catch_accuracy =
      acc < config.catch_accuracy_min
        ? { excluded: true, reason: `catch accuracy ${fmt(acc)} (${facts.catch_correct}/${facts.catch_trials}) < ${config.catch_accuracy_min}` }
        : { excluded: false };
  }

  const bounds = config.total_time_s;
  if (!bounds || (bounds.min === undefined && bounds.max === undefined) || facts.total_time_s === null) rules.total_time = off();
  else {
    const t = facts.total_time_s;
    if (bounds.min !== undefined && t < bounds.min) rules.total_time = { excluded: true, reason: `total time ${fmt(t, 0)} s < ${bounds.min} s` };
    else if (bounds.max !== undefined && t > bounds.max) rules.total_time = { excluded: true, reason: `total time ${fmt(t, 0)} s > ${bounds.max} s` };
    else rules.total_time = { excluded: false };
  }

  if (config.instruction_time_s_min === undefined || facts.instruction_time_s === null) rules.instruction_time = off();
  else {
    const t = facts.instruction_time_s;
    rules.instruction_time =
      t < config.instruction_time_s_min ? { excluded: true, reason: `instruction time ${fmt(t, 1)} s < ${config.instruction_time_s_min} s` } : { excluded: false };
  }

  if (config.min_distinct_responses === undefined || facts.distinct_responses === null) rules.distinct_responses = off();
  else {
    const d = facts.distinct_responses;
    rules.distinct_responses =
      d < config.min_distinct_responses ? { excluded: true, reason: `used ${d} distinct button${d === 1 ? '' : 's'} < ${config.min_distinct_responses}` } : { excluded: false };
  }

  if (!config.repeat_participation) rules.repeat_participation = off();
  else rules.repeat_participation = facts.prior_participation ? { excluded: true, reason: `took part before (${facts.prior_participation})` } : { excluded: false };

  if (!config.practice_pass_required || facts.practice_passed === null) rules.practice = off();
  else rules.practice = facts.practice_passed ? { excluded: false } : { excluded: true, reason: 'never met the practice criterion' };

  if (facts.browser_check_failed === null) rules.browser_check = off();
  else
    rules.browser_check = facts.browser_check_failed
      ? { excluded: true, reason: `failed the browser check${facts.browser_check_reason ? ` (${facts.browser_check_reason})` : ''}` }
      : { excluded: false };

  const reasons = RULES.map((r) => rules[r.id]).filter((o) => o.excluded).map((o) => o.reason!);
  return { session: facts.session, participant: facts.participant, excluded: reasons.length > 0, rules, reasons };
}

/** The sessions of one mode and which of them the rules keep: `legible analyze`'s choice, shared with the explorer. */
export interface ModeSessions {
  /** `live` when the data has live sessions, else `all` (unless asked for another). */
  mode: string;
  /** Every mode in the data (trial rows and fact sheets). */
  modes: string[];
  /** Every session of the mode (fact sheet or trial rows). */
  sessions: Set<string>;
  /** One decision per session of the mode that has a fact sheet. */
  decisions: ExclusionDecision[];
  kept: Set<string>;
}

/**
 * Picks the mode (live data only when there is any) and decides each of its sessions by the rules.
 * `rows` are the trial rows' mode and session columns (mode null when the data has none); `include`
 * limits them (e.g. to one study). A session belongs to the mode by its fact sheet, else by its rows.
 */
export function sessionsOfMode(
  rows: { n: number; mode: readonly string[] | null; session: readonly string[] },
  participants: readonly ParticipantFacts[],
  config: ExclusionConfig,
  opts: ExclusionOptions & { mode?: string; include?: (i: number) => boolean } = {},
): ModeSessions {
  const include = opts.include ?? (() => true);
  const rowModes = new Set<string>();
  if (rows.mode) for (let i = 0; i < rows.n; i++) if (include(i)) rowModes.add(rows.mode[i]);
  const modes = [...new Set([...rowModes, ...participants.map((p) => p.mode ?? '').filter(Boolean)])];
  const mode = opts.mode ?? (modes.includes('live') ? 'live' : 'all');
  const inMode = new Set<string>();
  for (let i = 0; i < rows.n; i++) if (include(i) && (mode === 'all' || rows.mode![i] === mode)) inMode.add(rows.session[i]);
  for (const facts of participants) if (facts.mode && (mode === 'all' || facts.mode === mode)) inMode.add(facts.session);
  const decisions: ExclusionDecision[] = [];
  for (const facts of participants) {
    if (!inMode.has(facts.session)) continue;
    if (facts.mode && mode !== 'all' && facts.mode !== mode) continue;
    decisions.push(decide(facts, config, opts));
  }
  return { mode, modes, sessions: inMode, decisions, kept: new Set(decisions.filter((d) => !d.excluded).map((d) => d.session)) };
}

export interface RuleSummary {
  id: RuleId;
  label: string;
  /** The rule was configured and could be evaluated for at least one participant. */
  active: boolean;
  /** Participants it could be evaluated for. */
  evaluated: number;
  excluded: number;
  /** Excluded by this rule and no other. */
  only: number;
}

export interface ExclusionSummary {
  participants: number;
  excluded: number;
  kept: number;
  rules: RuleSummary[];
  /** overlap[a][b]: participants excluded by both rules a and b (a = b: by rule a). */
  overlap: Record<RuleId, Record<RuleId, number>>;
  /** Each combination of rules that excluded someone, with how many. */
  combinations: { rules: RuleId[]; count: number }[];
  /** The study file's rules as applied. */
  config: ExclusionConfig;
}

/** Incremental summary, so export can stream participants through it. */
export class ExclusionTally {
  private n = 0;
  private nExcluded = 0;
  private readonly evaluated = new Map<RuleId, number>();
  private readonly excludedBy = new Map<RuleId, number>();
  private readonly onlyBy = new Map<RuleId, number>();
  private readonly pairs = new Map<string, number>();
  private readonly combos = new Map<string, number>();

  constructor(private readonly config: ExclusionConfig) {}

  add(d: ExclusionDecision): void {
    this.n++;
    const hit: RuleId[] = [];
    for (const r of RULES) {
      const o = d.rules[r.id];
      if (o.excluded !== null) this.evaluated.set(r.id, (this.evaluated.get(r.id) ?? 0) + 1);
      if (o.excluded) hit.push(r.id);
    }
    if (hit.length) this.nExcluded++;
    for (const a of hit) {
      this.excludedBy.set(a, (this.excludedBy.get(a) ?? 0) + 1);
      for (const b of hit) this.pairs.set(`${a}|${b}`, (this.pairs.get(`${a}|${b}`) ?? 0) + 1);
    }
    if (hit.length === 1) this.onlyBy.set(hit[0], (this.onlyBy.get(hit[0]) ?? 0) + 1);
    if (hit.length) this.combos.set(hit.join('+'), (this.combos.get(hit.join('+')) ?? 0) + 1);
  }

  summary(): ExclusionSummary {
    const overlap = {} as Record<RuleId, Record<RuleId, number>>;
    for (const a of RULES) {
      overlap[a.id] = {} as Record<RuleId, number>;
      for (const b of RULES) overlap[a.id][b.id] = this.pairs.get(`${a.id}|${b.id}`) ?? 0;
    }
    return {
      participants: this.n,
      excluded: this.nExcluded,
      kept: this.n - this.nExcluded,
      rules: RULES.map((r) => ({
        id: r.id,
        label: r.label,
        active: (this.evaluated.get(r.id) ?? 0) > 0,
        evaluated: this.evaluated.get(r.id) ?? 0,
        excluded: this.excludedBy.get(r.id) ?? 0,
        only: this.onlyBy.get(r.id) ?? 0,
      })),
      overlap,
      combinations: [...this.combos]
        .map(([k, count]) => ({ rules: k.split('+') as RuleId[], count }))
        .sort((a, b) => b.count - a.count || a.rules.join().localeCompare(b.rules.join())),
      config: this.config,
    };
  }
}

/** The rules of a study file, with nothing configured when there is none. */
export function defaultExclusions(): ExclusionConfig {
  return { repeat_participation: true, practice_pass_required: false };
}

/**
 * The session counts that `legible export`, `legible analyze` and the dashboard report, each
 * defined once here (the data dictionary prints these definitions), per study mode.
 */
export interface SessionCounts {
  mode: string;
  sessions: number;
  incomplete: number;
  excluded_by_rules: number;
  excluded: number;
  analysed: number;
  /** Sessions each study-file rule excludes (incomplete not included). */
  by_rule: Partial<Record<RuleId, number>>;
}

export const COUNT_DEFINITIONS: { key: keyof Omit<SessionCounts, 'mode' | 'by_rule'>; label: string; definition: string }[] = [
  { key: 'sessions', label: 'sessions', definition: 'every session of the study in this mode that the database holds (created after consent), whether or not it answered a trial' },
  { key: 'incomplete', label: 'did not finish', definition: 'sessions the `incomplete` rule flags: not finished and not every assigned trial answered (0 with --include-incomplete; unknown, so 0, for imported data)' },
  {
    key: 'excluded_by_rules',
    label: 'excluded by the study\'s rules',
    definition: 'sessions that break at least one rule of the study file\'s `exclusions` (catch accuracy, total time, instruction time, distinct responses, repeat participation, practice, browser check), finished or not',
  },
  { key: 'excluded', label: 'excluded', definition: 'sessions excluded for any reason: `incomplete` or a study rule (each session counted once)' },
  { key: 'analysed', label: 'analysed', definition: 'sessions not excluded that answered at least one main trial: the ones `legible analyze` analyses' },
];

/** Counts over one mode's sessions, from their exclusion decisions and main-trial counts. */
export function countSessions(mode: string, sessions: { decision: ExclusionDecision; mainTrials: number }[]): SessionCounts {
  const c: SessionCounts = { mode, sessions: 0, incomplete: 0, excluded_by_rules: 0, excluded: 0, analysed: 0, by_rule: {} };
  for (const { decision: d, mainTrials } of sessions) {
    c.sessions++;
    if (d.rules.incomplete.excluded) c.incomplete++;
    const broken = RULES.filter((r) => r.id !== 'incomplete' && d.rules[r.id].excluded).map((r) => r.id);
    if (broken.length) c.excluded_by_rules++;
    for (const r of broken) c.by_rule[r] = (c.by_rule[r] ?? 0) + 1;
    if (d.excluded) c.excluded++;
    else if (mainTrials > 0) c.analysed++;
  }
  return c;
}

/** "live: 6 sessions — 2 did not finish, 1 excluded by the study's rules, 5 excluded, 1 analysed": the same words in every part. */
export function formatCounts(c: SessionCounts): string {
  return `${c.mode}: ${c.sessions} session${c.sessions === 1 ? '' : 's'} — ${COUNT_DEFINITIONS.slice(1)
    .map((d) => `${c[d.key]} ${d.label}`)
    .join(', ')}`;
}
