// The experimenter's view: bearer-token authentication for the admin API, progress per condition
// and unit, completion and exclusion counts, median completion time and the implied hourly pay,
// the participant list, and the audit log of admin actions. HTTP-free: app.ts maps it onto routes.
import type Database from 'better-sqlite3';
import type { SessionCounts } from '@legible/analysis';
import { unitKey } from './assign.ts';
import type { AdminTokenRow, AuditRow, LegibleDb, Mode } from './db.ts';
import { importSource } from './lazy.ts';
import { practiceLayout } from './practice.ts';
import type { Registry, StudyEntry } from './registry.ts';
import { HttpError } from './sessions.ts';

// @legible/analysis (the exclusion rules, and the statistics its index also loads) is imported by the
// first dashboard request that needs it, not at start-up (server/BENCHMARKS.md, Start-up).
const analysis = () => importSource(() => import('@legible/analysis'));

export const adminUnauthorized = () =>
  new HttpError(401, 'invalid or missing admin token: create one with `legible admin-token create` and send it as "Authorization: Bearer <token>"');

/** Per-session figures the dashboard and the participant list are built from. */
interface SessionStats {
  id: string;
  participant: string;
  mode: Mode;
  status: 'active' | 'finished' | 'released';
  outcome: string | null;
  code: string | null;
  condition: string;
  n_trials: number;
  created_at: string;
  finished_at: string | null;
  lease_expires_at: string;
  practice_passed: number | null;
  practice_rounds: number | null;
  answered: number;
  catch_n: number;
  catch_correct: number;
  buttons: number;
  events: number;
  /** unsynced_end events: the browser ended the study before every answer was saved. */
  unsynced: number;
}

export interface ParticipantRow {
  session: string;
  /** The first 12 hex digits of the pseudonym (the CSV's participant column starts with them). */
  participant: string;
  mode: Mode;
  status: string;
  outcome: string | null;
  code: string | null;
  condition: string;
  created_at: string;
  finished_at: string | null;
  duration_s: number | null;
  /** Still within its time limit (counts for balancing). */
  leased: boolean;
  answered: number;
  /** Trials this session must answer (its task list, less the practice rounds it no longer needs). */
  required: number;
  catch: { n: number; correct: number };
  /** Distinct response buttons (side × confidence) used on main and catch trials. */
  distinct_buttons: number;
  practice: { passed: boolean | null; rounds: number | null };
  events: number;
  /**
   * The browser ended the study before every answer was saved (an unsynced_end event): the
   * participant was shown the unsynced code. `answered` is what the server holds; approve or
   * reject by hand.
   */
  unsynced_end: boolean;
  /** Exclusion rules of the study file this session breaks (as participants.csv: every rule, finished or not). */
  excluded_by: string[];
  /** Only with ?identities=1: the recruitment ids, for payment. */
  identity?: { prolific_pid: string | null; prolific_study_id: string | null; prolific_session_id: string | null; external_id: string | null };
}

export interface UnitProgress {
  feature: string;
  layer: string;
  basis: string;
  reference_kind: string;
  /** Recorded main responses. */
  responses: number;
  /** Main trials of this unit in task lists still within their time limit and not yet answered. */
  leased: number;
  target: number;
}

export interface ConditionProgress {
  /** Between-subject levels, "basis=nmf;layer=block2"; "" without between factors. */
  condition: string;
  units: UnitProgress[];
  responses: number;
  target: number;
  complete_units: number;
  sessions: { active: number; finished: number };
}

export interface StudyProgress {
  id: string;
  title: string;
  /** The study file's mode now. */
  study_mode: Mode;
  /** The data counted here: the study's mode, pilot for a preview study, or ?mode=. */
  mode: Mode;
  served: boolean;
  responses_per_feature: number;
  conditions: ConditionProgress[];
  sessions: { total: number; active: number; leased: number; finished: number; completed: number; failed_checks: number };
  /** excluded = counts.excluded_by_rules; counts: the session counts as `legible export` and `legible analyze` define them. */
  exclusions: { excluded: number; by_rule: Record<string, number>; not_evaluated: string[]; counts: SessionCounts };
  median_completion_minutes: number | null;
  reward: { amount: number; currency: string } | null;
  /** reward / median completion time, per hour. */
  hourly_pay: number | null;
  /** Prolific's minimum and recommended hourly pay for the reward's currency, where known. */
  pay_guidance: { minimum: number; recommended: number } | null;
  /** Sessions per mode in the database, whatever `mode` is. */
  by_mode: Record<string, number>;
}

/** Prolific's payment principles: minimum and recommended hourly pay (platform-anchors §5). */
const PAY_GUIDANCE: Record<string, { minimum: number; recommended: number }> = {
  GBP: { minimum: 6, recommended: 9 },
  USD: { minimum: 8, recommended: 12 },
};

const formatCondition = (key: string): string => {
  const levels = JSON.parse(key) as Record<string, string>;
  return Object.keys(levels)
    .sort()
    .map((k) => `${k}=${levels[k]}`)
    .join(';');
};

function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const durationS = (s: { created_at: string; finished_at: string | null }) =>
  s.finished_at === null ? null : (Date.parse(s.finished_at) - Date.parse(s.created_at)) / 1000;

export interface AdminActor {
  token: AdminTokenRow;
}

export class AdminService {
  private readonly statsQuery: Database.Statement<[string], SessionStats>;
  private readonly identitiesQuery: Database.Statement<[string], { participant: string; prolific_pid: string | null; prolific_study_id: string | null; prolific_session_id: string | null; external_id: string | null }>;
  private readonly unitsQuery: Database.Statement<[string, string], { feature: string; reference_kind: string; n: number }>;
  private readonly studiesInDb: Database.Statement<[], string>;

  constructor(
    private readonly db: LegibleDb,
    private readonly registry: Registry,
    private readonly now: () => Date = () => new Date(),
  ) {
    const sql = db.sqlite;
    this.statsQuery = sql.prepare(
      `SELECT s.id, s.participant, s.mode, s.status, s.outcome, s.code, s.condition, s.n_trials, s.created_at, s.finished_at, s.lease_expires_at,
              s.practice_passed, s.practice_rounds,
              count(t.seq) AS answered,
              coalesce(sum(t.kind = 'catch'), 0) AS catch_n,
              coalesce(sum(t.kind = 'catch' AND t.correct = 1), 0) AS catch_correct,
              count(DISTINCT CASE WHEN t.kind != 'practice' THEN
                (CASE WHEN t.query_order IS NULL THEN t.choice WHEN json_extract(t.query_order, '$[0]') = t.choice THEN 0 ELSE 1 END) * 10 + t.confidence
              END) AS buttons,
              (SELECT count(*) FROM events e WHERE e.session_id = s.id) AS events,
              (SELECT count(*) FROM events e WHERE e.session_id = s.id AND e.type = 'unsynced_end') AS unsynced
       FROM sessions s LEFT JOIN trials t ON t.session_id = s.id
       WHERE s.study = ?
       GROUP BY s.id
       ORDER BY s.created_at, s.id`,
    );
    this.identitiesQuery = sql.prepare(
      'SELECT participant, prolific_pid, prolific_study_id, prolific_session_id, external_id FROM identities WHERE study = ?',
    );
    this.unitsQuery = sql.prepare(
      `SELECT feature, reference_kind, count(*) AS n FROM trials WHERE study = ? AND mode = ? AND kind = 'main' GROUP BY feature, reference_kind`,
    );
    this.studiesInDb = sql.prepare<[], string>('SELECT DISTINCT study FROM sessions ORDER BY study').pluck() as Database.Statement<[], string>;
  }

  /** The admin token in an Authorization header, or 401. */
  authenticate(authorization: string | undefined): AdminActor {
    const m = /^Bearer (lgb_[A-Za-z0-9_-]{20,100})$/.exec(authorization?.trim() ?? '');
    const token = m ? this.db.adminToken(m[1]) : undefined;
    if (!token) throw adminUnauthorized();
    return { token };
  }

  /** Write an admin action to the audit log (durably, before the answer goes out). */
  record(actor: AdminActor, action: string, study: string | null = null, detail: Record<string, unknown> | null = null): void {
    const at = this.now().toISOString();
    const { token } = actor;
    this.db.write(() => {
      this.db.touchAdminToken(token.id, at);
      this.db.audit({ actor: `token ${token.id}${token.label ? ` (${token.label})` : ''}`, token_id: token.id, action, study, detail, at });
    });
  }

  auditLog(limit: number, before?: number): AuditRow[] {
    return this.db.auditLog(limit, before);
  }

  /** Served studies and studies with sessions in the database. */
  studyIds(): string[] {
    return [...new Set([...this.registry.ids(), ...this.studiesInDb.all()])].sort();
  }

  /** 404 unless the study is served or has data. */
  checkStudy(id: string): void {
    if (!this.registry.get(id) && !this.studiesInDb.all().includes(id)) throw new HttpError(404, `no study "${id}" on this server or in its database`);
  }

  async progress(id: string, mode?: string): Promise<StudyProgress> {
    const entry = this.registry.get(id);
    if (!entry) {
      this.checkStudy(id);
      throw new HttpError(404, `study "${id}" has data in the database but is not served now: serve its study file to see its progress (its trials.csv and participants are still available)`);
    }
    const { study } = entry;
    if (mode !== undefined && !['pilot', 'live'].includes(mode)) throw new HttpError(400, 'mode: expected "pilot" or "live"');
    const counted = (mode ?? (study.mode === 'preview' ? 'pilot' : study.mode)) as Mode;
    // Loaded before any row is read, so that every figure comes from the same moment.
    const { countSessions, studySessionCounts } = await analysis();
    const nowIso = this.now().toISOString();
    const all = this.statsQuery.all(id);
    const by_mode: Record<string, number> = {};
    for (const s of all) by_mode[s.mode] = (by_mode[s.mode] ?? 0) + 1;
    const sessions = all.filter((s) => s.mode === counted);

    const recorded = new Map(this.unitsQuery.all(id, counted).map((r) => [unitKey(r.feature, r.reference_kind), r.n]));
    const load = this.db.load(id, counted, nowIso).units;
    const target = study.design.responses_per_feature;
    const conditions: ConditionProgress[] = entry.plan.conditions.map((c) => {
      const units = new Map<string, UnitProgress>();
      for (const t of c.main) {
        const key = unitKey(t.feature, t.reference_kind);
        if (units.has(key)) continue;
        const f = entry.plan.features.get(t.feature)!;
        const responses = recorded.get(key) ?? 0;
        units.set(key, { feature: f.id, layer: f.layer, basis: f.basis, reference_kind: t.reference_kind, responses, leased: Math.max(0, (load.get(key) ?? 0) - responses), target });
      }
      const list = [...units.values()].sort((a, b) => (a.feature < b.feature ? -1 : a.feature > b.feature ? 1 : a.reference_kind < b.reference_kind ? -1 : 1));
      const inCondition = sessions.filter((s) => s.condition === c.key);
      return {
        condition: formatCondition(c.key),
        units: list,
        responses: list.reduce((n, u) => n + u.responses, 0),
        target: list.length * target,
        complete_units: list.filter((u) => u.responses >= target).length,
        sessions: { active: inCondition.filter((s) => s.status === 'active').length, finished: inCondition.filter((s) => s.status === 'finished').length },
      };
    });

    const finished = sessions.filter((s) => s.status === 'finished');
    // The same rows and rules as participants.csv and `legible analyze` (analysis/src/participants.ts).
    const counts = studySessionCounts(this.db.sqlite, id, study.exclusions).counts.get(counted) ?? countSessions(counted, []);
    const not_evaluated: string[] = [];
    const medianS = median(finished.map((s) => durationS(s)!).filter((d) => d >= 0));
    const reward = study.recruitment.reward ?? null;
    return {
      id,
      title: study.title,
      study_mode: study.mode,
      mode: counted,
      served: true,
      responses_per_feature: target,
      conditions,
      sessions: {
        total: sessions.length,
        active: sessions.filter((s) => s.status === 'active').length,
        leased: sessions.filter((s) => s.status === 'active' && s.lease_expires_at > nowIso).length,
        finished: finished.length,
        completed: finished.filter((s) => s.outcome === 'completed').length,
        failed_checks: finished.filter((s) => s.outcome === 'failed_checks').length,
      },
      exclusions: { excluded: counts.excluded_by_rules, by_rule: counts.by_rule, not_evaluated, counts },
      median_completion_minutes: medianS === null ? null : Math.round((medianS / 60) * 100) / 100,
      reward,
      hourly_pay: reward && medianS !== null && medianS > 0 ? Math.round(((reward.amount * 3600) / medianS) * 100) / 100 : null,
      pay_guidance: reward ? (PAY_GUIDANCE[reward.currency] ?? null) : null,
      by_mode,
    };
  }

  /** Every study: its progress when served, else only its session counts. */
  async studies(): Promise<(StudyProgress | { id: string; served: false; by_mode: Record<string, number> })[]> {
    const out: (StudyProgress | { id: string; served: false; by_mode: Record<string, number> })[] = [];
    for (const id of this.studyIds()) {
      if (this.registry.get(id)) {
        out.push(await this.progress(id));
        continue;
      }
      const by_mode: Record<string, number> = {};
      for (const s of this.statsQuery.all(id)) by_mode[s.mode] = (by_mode[s.mode] ?? 0) + 1;
      out.push({ id, served: false as const, by_mode });
    }
    return out;
  }

  async participants(id: string, withIdentities: boolean): Promise<ParticipantRow[]> {
    this.checkStudy(id);
    const { studySessionCounts } = await analysis();
    const entry: StudyEntry | undefined = this.registry.get(id);
    const nowIso = this.now().toISOString();
    const identities = withIdentities ? new Map(this.identitiesQuery.all(id).map((r) => [r.participant, r])) : undefined;
    const broken = entry ? studySessionCounts(this.db.sqlite, id, entry.study.exclusions).broken : undefined;
    return this.statsQuery.all(id).map((s) => {
      let required = s.n_trials;
      if (s.practice_rounds !== null) {
        const layout = practiceLayout(this.db.tasks(s.id) ?? []);
        for (const later of layout.slice(s.practice_rounds)) required -= later.length;
      }
      const row: ParticipantRow = {
        session: s.id,
        participant: s.participant.slice(0, 12),
        mode: s.mode,
        status: s.status,
        outcome: s.outcome,
        code: s.code,
        condition: formatCondition(s.condition),
        created_at: s.created_at,
        finished_at: s.finished_at,
        duration_s: durationS(s),
        leased: s.status === 'active' && s.lease_expires_at > nowIso,
        answered: s.answered,
        required,
        catch: { n: s.catch_n, correct: s.catch_correct },
        distinct_buttons: s.buttons,
        practice: { passed: s.practice_passed === null ? null : s.practice_passed === 1, rounds: s.practice_rounds },
        events: s.events,
        unsynced_end: s.unsynced > 0,
        excluded_by: broken?.get(s.id) ?? [],
      };
      if (identities) {
        const i = identities.get(s.participant);
        row.identity = {
          prolific_pid: i?.prolific_pid ?? null,
          prolific_study_id: i?.prolific_study_id ?? null,
          prolific_session_id: i?.prolific_session_id ?? null,
          external_id: i?.external_id ?? null,
        };
      }
      return row;
    });
  }
}
