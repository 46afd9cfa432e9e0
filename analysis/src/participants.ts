// participants.csv: one row per session (a participant's run through the study), summarised from
// the server's tables by SQL (aggregates stream inside SQLite; memory grows with sessions, not
// trials). Like the trial table, every column is defined once here, with its type, unit and
// description, and the data dictionary is written from these definitions.
import type Database from 'better-sqlite3';
import { FACTORS } from '@legible/studies';
import { countSessions, decide, RULES, type ExclusionConfig, type ExclusionDecision, type ExclusionOptions, type ParticipantFacts, type RuleId, type SessionCounts } from './exclusions.ts';

export interface ParticipantRow extends ParticipantFacts {
  /** From a database of simulated participants (`legible pilot`). */
  simulated?: boolean;
  study: string;
  mode: string;
  /** The session's between-participant levels as the server stores them (JSON, e.g. {"basis":"nmf"}). */
  condition: string;
  seed: number | null;
  status: string;
  outcome: string;
  started_at: string | null;
  finished_at: string | null;
  last_answer_at: string | null;
  main_trials: number;
  main_correct: number;
  practice_trials: number;
  practice_correct: number;
  practice_rounds: number | null;
  median_rt_ms: number | null;
  mean_confidence: number | null;
  window_w: number | null;
  window_h: number | null;
  screen_w: number | null;
  screen_h: number | null;
  dpr: number | null;
  screen_class: string;
  input: string;
  browser: string;
  os: string;
  vsync_hz: number | null;
  user_agent: string;
  blur_events: number | null;
  fullscreen_exits: number | null;
  preload_failures: number | null;
  unsynced_end: boolean | null;
}

export interface ParticipantColumn {
  name: string;
  type: 'text' | 'integer' | 'number' | 'boolean' | 'timestamp';
  unit?: string;
  description: string;
  value: (r: ParticipantRow, d: ExclusionDecision | null) => unknown;
}

/** How much participants.csv says about devices and times (the study file's data.participant_details). */
export type ParticipantDetails = 'coarse' | 'full';

const FULL_ONLY = 'Only with `data.participant_details: full` in the study file (a quasi-identifier); empty by default.';
const HOUR = 'Rounded down to the hour unless the study file has `data.participant_details: full` (durations are computed from the exact times).';

/** Browser family and major version ("chrome 130"), and OS family, from a User-Agent header. */
export function coarseUserAgent(ua: string): { browser: string; os: string } {
  const rules: [RegExp, string][] = [
    [/Edg(?:e|A|iOS)?\/(\d+)/, 'edge'],
    [/OPR\/(\d+)/, 'opera'],
    [/(?:Firefox|FxiOS)\/(\d+)/, 'firefox'],
    [/HeadlessChrome\/(\d+)/, 'chrome-headless'],
    [/(?:Chrome|CriOS)\/(\d+)/, 'chrome'],
    [/Version\/(\d+).*Safari\//, 'safari'],
  ];
  const hit = rules.map(([re, name]) => [re.exec(ua), name] as const).find(([m]) => m);
  const browser = hit ? `${hit[1]} ${hit[0]![1]}` : 'other';
  const os = /Windows/.test(ua)
    ? 'windows'
    : /iPhone|iPad|iPod/.test(ua)
      ? 'ios'
      : /Mac OS X/.test(ua)
        ? 'macos'
        : /Android/.test(ua)
          ? 'android'
          : /CrOS/.test(ua)
            ? 'chromeos'
            : /Linux/.test(ua)
              ? 'linux'
              : 'other';
  return { browser, os };
}

/** The start of a client-reported name that is coarse by construction (family, major version), or null. */
function coarseName(value: unknown, pattern: RegExp): string | null {
  return typeof value === 'string' ? (pattern.exec(value)?.[0] ?? null) : null;
}

/** The screen width class of participants.csv. */
export function screenClass(width: number | null): string {
  if (width === null || !(width > 0)) return '';
  return width < 1280 ? 'under 1280' : width < 1920 ? '1280-1919' : width < 2560 ? '1920-2559' : '2560 or more';
}

/** An ISO time rounded down to the hour (null stays null). */
const toHour = (iso: string | null): string | null => (iso === null ? null : `${iso.slice(0, 13)}:00:00.000Z`);

const ratio = (a: number | null, b: number | null) => (a === null || !b ? null : a / b);
const round = (x: number | null, digits: number) => (x === null ? null : Number(x.toFixed(digits)));

export const PARTICIPANT_COLUMNS: ParticipantColumn[] = [
  { name: 'study', type: 'text', description: 'Study id.', value: (r) => r.study },
  { name: 'mode', type: 'text', description: '`pilot` or `live` (the study mode when the session started).', value: (r) => r.mode },
  { name: 'session', type: 'text', description: 'Session id (the `session` column of trials.csv).', value: (r) => r.session },
  { name: 'participant', type: 'text', description: 'Pseudonymous participant id (as in trials.csv).', value: (r) => r.participant },
  ...FACTORS.map(
    (f): ParticipantColumn => ({
      name: `condition_${f}`,
      type: 'text',
      description: `Level of the between-participant factor \`${f}\` assigned to this session (empty when ${f} varies within participants).`,
      value: (r) => levelOf(r.condition, f),
    }),
  ),
  { name: 'seed', type: 'integer', description: 'Seed of the participant\'s randomisation.', value: (r) => r.seed },
  { name: 'status', type: 'text', description: 'Session status at export: `active`, `finished` or `released`.', value: (r) => r.status },
  { name: 'outcome', type: 'text', description: 'Outcome decided by the server at finish: `completed` or `failed_checks` (empty while unfinished).', value: (r) => r.outcome },
  { name: 'complete', type: 'boolean', description: '1 when the session was finished or every assigned trial was answered.', value: (r) => r.complete },
  { name: 'started_at', type: 'timestamp', unit: 'ISO 8601 UTC', description: `Server time the session was created (after consent, before the instructions). ${HOUR}`, value: (r) => r.started_at },
  { name: 'finished_at', type: 'timestamp', unit: 'ISO 8601 UTC', description: `Server time of finishing (empty while unfinished). ${HOUR}`, value: (r) => r.finished_at },
  { name: 'last_answer_at', type: 'timestamp', unit: 'ISO 8601 UTC', description: `Server time the last answer was recorded. ${HOUR}`, value: (r) => r.last_answer_at },
  {
    name: 'total_time_s',
    type: 'number',
    unit: 's',
    description: 'From session start to finish (to the last answer for unfinished sessions), from the exact times. Consent time is not included: the session starts after consent.',
    value: (r) => round(r.total_time_s, 1),
  },
  {
    name: 'instruction_time_s',
    type: 'number',
    unit: 's',
    description:
      'From session start to the first trial\'s onset, i.e. reading the instructions: the first answer\'s server time minus its response time minus the session start. Approximate (includes loading the first images and network delay).',
    value: (r) => round(r.instruction_time_s, 1),
  },
  { name: 'trials_expected', type: 'integer', description: 'Trials in the participant\'s task list (practice, main and catch).', value: (r) => r.trials_expected },
  { name: 'trials_answered', type: 'integer', description: 'Trials answered (recorded by the server).', value: (r) => r.trials_answered },
  { name: 'main_trials', type: 'integer', description: 'Main trials answered.', value: (r) => r.main_trials },
  { name: 'main_accuracy', type: 'number', unit: '0–1', description: 'Proportion correct on main trials.', value: (r) => round(ratio(r.main_correct, r.main_trials), 4) },
  { name: 'catch_trials', type: 'integer', description: 'Catch trials answered.', value: (r) => r.catch_trials },
  { name: 'catch_correct', type: 'integer', description: 'Catch trials answered correctly.', value: (r) => r.catch_correct },
  { name: 'catch_accuracy', type: 'number', unit: '0–1', description: 'Proportion correct on catch trials (empty without catch trials).', value: (r) => round(ratio(r.catch_correct, r.catch_trials), 4) },
  { name: 'practice_trials', type: 'integer', description: 'Practice trials answered (all rounds).', value: (r) => r.practice_trials },
  { name: 'practice_accuracy', type: 'number', unit: '0–1', description: 'Proportion correct on practice trials.', value: (r) => round(ratio(r.practice_correct, r.practice_trials), 4) },
  { name: 'practice_passed', type: 'boolean', description: 'With design.practice_criterion: 1 if a practice round met it, 0 if none did (empty otherwise).', value: (r) => r.practice_passed },
  { name: 'practice_rounds', type: 'integer', description: 'Practice rounds gone through (with design.practice_criterion).', value: (r) => r.practice_rounds },
  {
    name: 'distinct_responses',
    type: 'integer',
    unit: '1–6',
    description: 'How many of the six on-screen buttons (upper/lower × confidence) the participant used on main and catch trials.',
    value: (r) => r.distinct_responses,
  },
  { name: 'median_rt_ms', type: 'number', unit: 'ms', description: 'Median response time on main trials.', value: (r) => round(r.median_rt_ms, 1) },
  { name: 'mean_confidence', type: 'number', unit: '1–3', description: 'Mean confidence on main trials.', value: (r) => round(r.mean_confidence, 3) },
  { name: 'window_w', type: 'integer', unit: 'CSS px', description: 'Smallest browser window width over the session\'s trials.', value: (r) => r.window_w },
  { name: 'window_h', type: 'integer', unit: 'CSS px', description: 'Smallest browser window height over the session\'s trials.', value: (r) => r.window_h },
  { name: 'screen_w', type: 'integer', unit: 'CSS px', description: `Screen width. ${FULL_ONLY}`, value: (r) => r.screen_w },
  { name: 'screen_h', type: 'integer', unit: 'CSS px', description: `Screen height. ${FULL_ONLY}`, value: (r) => r.screen_h },
  { name: 'dpr', type: 'number', description: `devicePixelRatio (largest seen). ${FULL_ONLY}`, value: (r) => r.dpr },
  {
    name: 'screen_class',
    type: 'text',
    unit: 'CSS px',
    description: 'Screen width class (the widest seen): `under 1280`, `1280-1919`, `1920-2559` or `2560 or more` (empty if not reported). Always written.',
    value: (r) => r.screen_class,
  },
  { name: 'input', type: 'text', description: '`key`, `pointer`, or `mixed`: how the participant answered.', value: (r) => r.input },
  {
    name: 'browser',
    type: 'text',
    description: 'Browser family and major version, e.g. `chrome 130`, from the client\'s browser check, else from the User-Agent header (`other` if unknown, empty if neither).',
    value: (r) => r.browser,
  },
  { name: 'os', type: 'text', description: 'Operating system family (`windows`, `macos`, `linux`, `chromeos`, `android`, `ios`, `other`), as `browser`.', value: (r) => r.os },
  { name: 'vsync_hz', type: 'number', unit: 'Hz', description: 'Display refresh rate measured by the browser check.', value: (r) => round(r.vsync_hz, 1) },
  { name: 'user_agent', type: 'text', description: `The browser's User-Agent header at session start (first 512 characters). ${FULL_ONLY}`, value: (r) => r.user_agent },
  { name: 'blur_events', type: 'integer', description: 'Times the page lost focus (client events; empty when the database has none).', value: (r) => r.blur_events },
  { name: 'fullscreen_exits', type: 'integer', description: 'Times the participant left fullscreen.', value: (r) => r.fullscreen_exits },
  { name: 'preload_failures', type: 'integer', description: 'Stimulus images that failed to load.', value: (r) => r.preload_failures },
  { name: 'unsynced_end', type: 'boolean', description: '1 when the browser ended the study before every answer was saved (review before paying).', value: (r) => r.unsynced_end },
  { name: 'prior_participation', type: 'text', description: 'Earlier study in this database the same recruitment id took part in (the id itself is never exported).', value: (r) => r.prior_participation ?? '' },
  { name: 'excluded', type: 'boolean', description: '1 when any exclusion rule of the study file applies (empty when the study file was not available).', value: (_, d) => (d ? d.excluded : null) },
  { name: 'exclusion_reasons', type: 'text', description: 'Why, one reason per rule, separated by "; ".', value: (_, d) => (d ? d.reasons.join('; ') : '') },
  ...RULES.map(
    (rule): ParticipantColumn => ({
      name: rule.column,
      type: 'boolean',
      description: `1 if excluded because: ${rule.label}; 0 if the rule passed; empty when the rule is off in the study file or cannot be evaluated for this session.`,
      value: (_, d) => (d ? d.rules[rule.id].excluded : null),
    }),
  ),
  {
    name: 'simulated',
    type: 'boolean',
    description: '1 when the session is a simulated participant of `legible pilot` (a database of simulated participants; no person took part), else 0.',
    value: (r) => r.simulated ?? false,
  },
];

interface SessionAggregate {
  id: string;
  study: string;
  mode: string;
  participant: string;
  condition: string;
  seed: number;
  status: string;
  outcome: string | null;
  n_trials: number;
  created_at: string;
  finished_at: string | null;
  user_agent: string | null;
  practice_passed: number | null;
  practice_rounds: number | null;
  answered: number;
  main_n: number;
  main_correct: number;
  catch_n: number;
  catch_correct: number;
  practice_n: number;
  practice_correct: number;
  buttons: number;
  last_answer_at: string | null;
  mean_confidence: number | null;
  window_w: number | null;
  window_h: number | null;
  screen_w: number | null;
  screen_h: number | null;
  dpr: number | null;
  inputs: number;
  input: string | null;
}

function hasColumn(db: Database.Database, table: string, column: string): boolean {
  return (db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).some((c) => c.name === column);
}
function hasTable(db: Database.Database, table: string): boolean {
  return db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table) !== undefined;
}

/**
 * Sessions of a study in the database with who took part in another study of the same database
 * before (matched by the raw recruitment id in `identities`, which never leaves this function).
 */
function priorParticipation(db: Database.Database, study: string): Map<string, string> {
  const out = new Map<string, string>();
  if (!hasTable(db, 'identities')) return out;
  const ids = db.prepare('SELECT participant, study, prolific_pid, external_id FROM identities').all() as {
    participant: string;
    study: string;
    prolific_pid: string | null;
    external_id: string | null;
  }[];
  const byRaw = new Map<string, string[]>();
  const rawOf = new Map<string, string>();
  for (const i of ids) {
    const raw = i.prolific_pid ? `p:${i.prolific_pid}` : i.external_id ? `e:${i.external_id}` : null;
    if (!raw) continue;
    rawOf.set(i.participant, raw);
    const list = byRaw.get(raw) ?? [];
    list.push(i.participant);
    byRaw.set(raw, list);
  }
  const sessionsOf = db.prepare('SELECT study, created_at FROM sessions WHERE participant = ?');
  const mine = db.prepare('SELECT id, participant, created_at FROM sessions WHERE study = ?').iterate(study) as IterableIterator<{ id: string; participant: string; created_at: string }>;
  for (const s of mine) {
    const raw = rawOf.get(s.participant);
    const others = raw ? byRaw.get(raw)!.filter((p) => p !== s.participant) : [];
    let earliest: { study: string; created_at: string } | null = null;
    for (const p of others) {
      for (const o of sessionsOf.all(p) as { study: string; created_at: string }[]) {
        if (o.created_at < s.created_at && (!earliest || o.created_at < earliest.created_at)) earliest = o;
      }
    }
    if (earliest) out.set(s.id, `study ${earliest.study}, ${earliest.created_at.slice(0, 10)}`);
  }
  return out;
}

const seconds = (iso: string) => Date.parse(iso) / 1000;

/**
 * One summary per session of the study, in participant order, each with its exclusion decision
 * (null when no rules are given). A generator: rows are produced one at a time.
 */
export function* participantRows(
  db: Database.Database,
  study: string,
  rules: ExclusionConfig | null,
  opts: ExclusionOptions & { practice?: boolean; details?: ParticipantDetails } = {},
): Generator<{ row: ParticipantRow; decision: ExclusionDecision | null }> {
  const full = opts.details === 'full';
  const practiceCols = hasColumn(db, 'sessions', 'practice_passed');
  const events = hasTable(db, 'events');
  const prior = priorParticipation(db, study);
  const simulated = hasTable(db, 'meta') && db.prepare("SELECT 1 FROM meta WHERE key = 'simulated'").get() !== undefined;
  const button = "(CASE WHEN t.query_order IS NULL THEN t.choice WHEN json_extract(t.query_order, '$[0]') = t.choice THEN 0 ELSE 1 END) * 10 + t.confidence";
  const sessions = db
    .prepare(
      `SELECT s.id, s.study, s.mode, s.participant, s.condition, s.seed, s.status, s.outcome, s.n_trials, s.created_at, s.finished_at, s.user_agent,
              ${practiceCols ? 's.practice_passed, s.practice_rounds' : 'NULL AS practice_passed, NULL AS practice_rounds'},
              count(t.seq) AS answered,
              coalesce(sum(t.kind = 'main'), 0) AS main_n,
              coalesce(sum(t.kind = 'main' AND t.correct = 1), 0) AS main_correct,
              coalesce(sum(t.kind = 'catch'), 0) AS catch_n,
              coalesce(sum(t.kind = 'catch' AND t.correct = 1), 0) AS catch_correct,
              coalesce(sum(t.kind = 'practice'), 0) AS practice_n,
              coalesce(sum(t.kind = 'practice' AND t.correct = 1), 0) AS practice_correct,
              count(DISTINCT CASE WHEN t.kind != 'practice' THEN ${button} END) AS buttons,
              max(t.server_time) AS last_answer_at,
              avg(CASE WHEN t.kind = 'main' THEN t.confidence END) AS mean_confidence,
              min(t.window_w) AS window_w, min(t.window_h) AS window_h, max(t.screen_w) AS screen_w, max(t.screen_h) AS screen_h, max(t.dpr) AS dpr,
              count(DISTINCT t.input) AS inputs, max(t.input) AS input
       FROM sessions s LEFT JOIN trials t ON t.session_id = s.id
       WHERE s.study = ?
       GROUP BY s.id
       ORDER BY s.participant, s.id`,
    )
    .iterate(study) as IterableIterator<SessionAggregate>;
  const firstTrial = db.prepare('SELECT server_time, rt_ms FROM trials WHERE session_id = ? ORDER BY seq LIMIT 1');
  const mainRts = db.prepare("SELECT rt_ms FROM trials WHERE session_id = ? AND kind = 'main' ORDER BY rt_ms").pluck();
  const eventCounts = events
    ? db.prepare(
        `SELECT coalesce(sum(type = 'blur'), 0) AS blur, coalesce(sum(type = 'fullscreen_exit'), 0) AS fs_exit,
                coalesce(sum(type = 'preload_failed'), 0) AS preload, coalesce(sum(type = 'unsynced_end'), 0) AS unsynced,
                (SELECT detail FROM events e2 WHERE e2.session_id = ? AND e2.type = 'browser_check' ORDER BY e2.id DESC LIMIT 1) AS check_detail
         FROM events WHERE session_id = ?`,
      )
    : null;
  for (const s of sessions) {
    const first = firstTrial.get(s.id) as { server_time: string; rt_ms: number } | undefined;
    const rts = mainRts.all(s.id) as number[];
    const median = rts.length === 0 ? null : rts.length % 2 ? rts[(rts.length - 1) / 2] : (rts[rts.length / 2 - 1] + rts[rts.length / 2]) / 2;
    const finished = s.status === 'finished';
    const complete = finished || (s.n_trials > 0 && s.answered >= s.n_trials);
    const end = s.finished_at ?? s.last_answer_at;
    type EventCounts = { blur: number; fs_exit: number; preload: number; unsynced: number; check_detail: string | null };
    const ev = eventCounts ? (eventCounts.get(s.id, s.id) as EventCounts) : null;
    let check: Record<string, unknown> = {};
    try {
      check = ev?.check_detail ? (JSON.parse(ev.check_detail) as Record<string, unknown>) : {};
    } catch {
      check = {};
    }
    const ua = s.user_agent ? coarseUserAgent(s.user_agent) : null;
    const failed = check.passed === false || check.ok === false ? true : ev?.check_detail ? false : null;
    const row: ParticipantRow = {
      simulated,
      study: s.study,
      mode: s.mode,
      session: s.id,
      participant: s.participant,
      condition: s.condition ?? '',
      seed: s.seed,
      status: s.status,
      outcome: s.outcome ?? '',
      complete,
      started_at: full ? s.created_at : toHour(s.created_at),
      finished_at: full ? s.finished_at : toHour(s.finished_at),
      last_answer_at: full ? s.last_answer_at : toHour(s.last_answer_at),
      total_time_s: end ? seconds(end) - seconds(s.created_at) : null,
      instruction_time_s: first ? seconds(first.server_time) - first.rt_ms / 1000 - seconds(s.created_at) : null,
      trials_expected: s.n_trials,
      trials_answered: s.answered,
      main_trials: s.main_n,
      main_correct: s.main_correct,
      catch_trials: s.catch_n,
      catch_correct: s.catch_correct,
      practice_trials: s.practice_n,
      practice_correct: s.practice_correct,
      practice_passed: s.practice_passed === null ? null : s.practice_passed === 1,
      practice_rounds: s.practice_rounds,
      distinct_responses: s.answered > s.practice_n ? s.buttons : null,
      median_rt_ms: median,
      mean_confidence: s.mean_confidence,
      window_w: s.window_w,
      window_h: s.window_h,
      screen_w: full ? s.screen_w : null,
      screen_h: full ? s.screen_h : null,
      dpr: full ? s.dpr : null,
      screen_class: screenClass(s.screen_w ?? (typeof check.screen_width === 'number' ? check.screen_width : null)),
      input: s.inputs > 1 ? 'mixed' : (s.input ?? ''),
      browser: coarseName(check.browser, /^[A-Za-z][A-Za-z-]{0,20}(?: \d{1,4})?/) ?? ua?.browser ?? '',
      os: coarseName(check.os, /^[A-Za-z]{2,12}/) ?? ua?.os ?? '',
      vsync_hz: typeof check.vsync_rate === 'number' ? check.vsync_rate : null,
      user_agent: full ? (s.user_agent ?? '') : '',
      blur_events: ev ? ev.blur : null,
      fullscreen_exits: ev ? ev.fs_exit : null,
      preload_failures: ev ? ev.preload : null,
      unsynced_end: ev ? ev.unsynced > 0 : null,
      browser_check_failed: failed,
      browser_check_reason: typeof check.reason === 'string' ? check.reason : null,
      prior_participation: prior.get(s.id) ?? null,
    };
    yield { row, decision: rules ? decide(row, rules, opts) : null };
  }
}

/** The level of one factor in a session's condition (JSON such as {"basis":"nmf"}), or null. */
function levelOf(condition: string, factor: string): string | null {
  if (!condition) return null;
  try {
    const levels = JSON.parse(condition) as Record<string, unknown>;
    return typeof levels[factor] === 'string' ? (levels[factor] as string) : null;
  } catch {
    return null;
  }
}

/**
 * The session counts of a study straight from the database, per mode (COUNT_DEFINITIONS), and
 * the study-file rules each session breaks: what the dashboard shows, computed by the same rows
 * and rules as participants.csv.
 */
export function studySessionCounts(db: Database.Database, study: string, rules: ExclusionConfig, opts: ExclusionOptions = {}): { counts: Map<string, SessionCounts>; broken: Map<string, RuleId[]> } {
  const byMode = new Map<string, { decision: ExclusionDecision; mainTrials: number }[]>();
  const broken = new Map<string, RuleId[]>();
  for (const { row, decision } of participantRows(db, study, rules, opts)) {
    const list = byMode.get(row.mode) ?? [];
    list.push({ decision: decision!, mainTrials: row.main_trials });
    byMode.set(row.mode, list);
    broken.set(row.session, RULES.filter((r) => r.id !== 'incomplete' && decision!.rules[r.id].excluded).map((r) => r.id));
  }
  return { counts: new Map([...byMode].map(([mode, list]) => [mode, countSessions(mode, list)])), broken };
}
