// The server's database: one SQLite file through better-sqlite3. WAL with synchronous=FULL, so a
// commit that returned survives a crash or power loss; migrations keyed by PRAGMA user_version;
// every statement prepared once. The analysis package's export reads these tables and columns.
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { LegibleError } from '@legible/studies';
import { unitKey, type Load, type Task } from './assign.ts';

export type Mode = 'preview' | 'pilot' | 'live';
export type SessionStatus = 'active' | 'finished' | 'released';

export interface SessionRow {
  id: string;
  study: string;
  /** HMAC pseudonym of the raw participant id. */
  participant: string;
  token_hash: string;
  mode: Mode;
  seed: number;
  /** JSON of the between-subject levels, e.g. {"basis":"nmf"}. */
  condition: string;
  /** JSON Task[]: the server-side task list with the answer keys. */
  tasks: string;
  n_trials: number;
  status: SessionStatus;
  outcome: string | null;
  code: string | null;
  created_at: string;
  lease_expires_at: string;
  finished_at: string | null;
  user_agent: string | null;
  manifest_sha256: string | null;
}

/** A session without its task list (what authentication and finishing read). */
export type SessionMeta = Omit<SessionRow, 'tasks'>;

export interface IdentityRow {
  participant: string;
  study: string;
  prolific_pid: string | null;
  prolific_study_id: string | null;
  prolific_session_id: string | null;
  /** A generic (non-Prolific) participant id, as given. */
  external_id: string | null;
  created_at: string;
}

export interface TrialRow {
  session_id: string;
  seq: number;
  study: string;
  participant: string;
  trial_id: string;
  feature: string;
  layer: string;
  basis: string;
  feature_index: number;
  kind: string;
  reference_kind: string;
  query_images: string;
  answer: number;
  choice: number;
  confidence: number;
  correct: number;
  rt_ms: number;
  query_order: string | null;
  input: string | null;
  onset_ms: number | null;
  response_ms: number | null;
  client_time: number | null;
  server_time: string;
  window_w: number | null;
  window_h: number | null;
  screen_w: number | null;
  screen_h: number | null;
  dpr: number | null;
  plugin_version: string | null;
  payload_hash: string;
  mode: string;
}

export type RecordResult =
  | { inserted: true }
  | { inserted: false; prior: { payload_hash: string; server_time: string; correct: number; kind: string } };

/** Ordered schema steps; step i brings user_version from i to i + 1. Append, never edit. */
const MIGRATIONS: string[] = [
  `
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  ) STRICT;

  CREATE TABLE identities (
    participant         TEXT PRIMARY KEY,
    study               TEXT NOT NULL,
    prolific_pid        TEXT,
    prolific_study_id   TEXT,
    prolific_session_id TEXT,
    external_id         TEXT,
    created_at          TEXT NOT NULL
  ) STRICT;

  CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    study            TEXT NOT NULL,
    participant      TEXT NOT NULL,
    token_hash       TEXT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('preview', 'pilot', 'live')),
    seed             INTEGER NOT NULL,
    condition        TEXT NOT NULL,
    tasks            TEXT NOT NULL,
    n_trials         INTEGER NOT NULL,
    status           TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'finished', 'released')),
    outcome          TEXT,
    code             TEXT,
    created_at       TEXT NOT NULL,
    lease_expires_at TEXT NOT NULL,
    finished_at      TEXT,
    user_agent       TEXT,
    manifest_sha256  TEXT,
    UNIQUE (study, participant)
  ) STRICT;
  CREATE INDEX sessions_by_lease ON sessions (study, mode, status, lease_expires_at);

  CREATE TABLE trials (
    session_id     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    seq            INTEGER NOT NULL,
    study          TEXT NOT NULL,
    participant    TEXT NOT NULL,
    trial_id       TEXT NOT NULL,
    feature        TEXT NOT NULL,
    layer          TEXT NOT NULL,
    basis          TEXT NOT NULL,
    feature_index  INTEGER NOT NULL,
    kind           TEXT NOT NULL CHECK (kind IN ('main', 'catch', 'practice')),
    reference_kind TEXT NOT NULL,
    query_images   TEXT NOT NULL,
    answer         INTEGER NOT NULL,
    choice         INTEGER NOT NULL,
    confidence     INTEGER NOT NULL,
    correct        INTEGER NOT NULL,
    rt_ms          REAL NOT NULL,
    query_order    TEXT,
    input          TEXT,
    onset_ms       REAL,
    response_ms    REAL,
    client_time    REAL,
    server_time    TEXT NOT NULL,
    window_w       INTEGER,
    window_h       INTEGER,
    screen_w       INTEGER,
    screen_h       INTEGER,
    dpr            REAL,
    plugin_version TEXT,
    payload_hash   TEXT NOT NULL,
    mode           TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
  ) STRICT;
  CREATE INDEX trials_by_unit ON trials (study, mode, kind, feature, reference_kind);
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Parsed task lists kept in memory: enough for every active session of a large study. */
const TASK_CACHE_SIZE = 20_000;

export interface OpenOptions {
  /** Server secret for pseudonyms and session tokens; default: env LEGIBLE_SECRET, else the one stored in the file. */
  secret?: string;
  /** Milliseconds a statement waits for a lock held by another connection. */
  busyTimeoutMs?: number;
}

function prepareAll(db: Database.Database) {
  return {
    getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
    setMeta: db.prepare<[string, string]>('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    sessionById: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
    sessionMeta: db.prepare<[string], SessionMeta>(
      `SELECT id, study, participant, token_hash, mode, seed, condition, n_trials, status, outcome, code, created_at, lease_expires_at,
              finished_at, user_agent, manifest_sha256
       FROM sessions WHERE id = ?`,
    ),
    sessionTasks: db.prepare<[string], string>('SELECT tasks FROM sessions WHERE id = ?').pluck(),
    sessionByParticipant: db.prepare<[string, string], SessionRow>('SELECT * FROM sessions WHERE study = ? AND participant = ?'),
    insertSession: db.prepare<[SessionRow]>(
      `INSERT INTO sessions (id, study, participant, token_hash, mode, seed, condition, tasks, n_trials, status, outcome, code,
                             created_at, lease_expires_at, finished_at, user_agent, manifest_sha256)
       VALUES (@id, @study, @participant, @token_hash, @mode, @seed, @condition, @tasks, @n_trials, @status, @outcome, @code,
               @created_at, @lease_expires_at, @finished_at, @user_agent, @manifest_sha256)`,
    ),
    insertIdentity: db.prepare<[IdentityRow]>(
      `INSERT INTO identities (participant, study, prolific_pid, prolific_study_id, prolific_session_id, external_id, created_at)
       VALUES (@participant, @study, @prolific_pid, @prolific_study_id, @prolific_session_id, @external_id, @created_at)
       ON CONFLICT (participant) DO NOTHING`,
    ),
    finishSession: db.prepare<[{ id: string; outcome: string; code: string | null; finished_at: string }]>(
      `UPDATE sessions SET status = 'finished', outcome = @outcome, code = @code, finished_at = @finished_at
       WHERE id = @id AND status != 'finished'`,
    ),
    insertTrial: db.prepare<[TrialRow]>(
      `INSERT INTO trials (session_id, seq, study, participant, trial_id, feature, layer, basis, feature_index, kind, reference_kind,
                           query_images, answer, choice, confidence, correct, rt_ms, query_order, input, onset_ms, response_ms,
                           client_time, server_time, window_w, window_h, screen_w, screen_h, dpr, plugin_version, payload_hash, mode)
       VALUES (@session_id, @seq, @study, @participant, @trial_id, @feature, @layer, @basis, @feature_index, @kind, @reference_kind,
               @query_images, @answer, @choice, @confidence, @correct, @rt_ms, @query_order, @input, @onset_ms, @response_ms,
               @client_time, @server_time, @window_w, @window_h, @screen_w, @screen_h, @dpr, @plugin_version, @payload_hash, @mode)
       ON CONFLICT (session_id, seq) DO NOTHING`,
    ),
    trialRecord: db.prepare<[string, number], { payload_hash: string; server_time: string; correct: number; kind: string }>(
      'SELECT payload_hash, server_time, correct, kind FROM trials WHERE session_id = ? AND seq = ?',
    ),
    answeredSeqs: db.prepare<[string], number>('SELECT seq FROM trials WHERE session_id = ? ORDER BY seq').pluck(),
    catchScore: db.prepare<[string], { n: number; correct: number | null }>(
      "SELECT count(*) AS n, sum(correct) AS correct FROM trials WHERE session_id = ? AND kind = 'catch'",
    ),
    recordedUnits: db.prepare<[string, string], { feature: string; reference_kind: string; n: number }>(
      `SELECT feature, reference_kind, count(*) AS n FROM trials
       WHERE study = ? AND mode = ? AND kind = 'main' GROUP BY feature, reference_kind`,
    ),
    leasedSessions: db.prepare<[string, string, string], { id: string; answered: string }>(
      `SELECT s.id, (SELECT json_group_array(t.seq) FROM trials t WHERE t.session_id = s.id) AS answered
       FROM sessions s WHERE s.study = ? AND s.mode = ? AND s.status = 'active' AND s.lease_expires_at > ?`,
    ),
    conditionCounts: db.prepare<[string, string, string], { condition: string; n: number }>(
      `SELECT condition, count(*) AS n FROM sessions
       WHERE study = ? AND mode = ? AND (status = 'finished' OR (status = 'active' AND lease_expires_at > ?))
       GROUP BY condition`,
    ),
    sessionsOfStudy: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE study = ? ORDER BY created_at, id'),
  };
}

export class LegibleDb {
  readonly sqlite: Database.Database;
  /** Absolute path of the database file. */
  readonly file: string;
  readonly secret: string;
  private readonly q: ReturnType<typeof prepareAll>;

  constructor(file: string, opts: OpenOptions = {}) {
    this.file = resolve(file);
    const dir = dirname(this.file);
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
    this.sqlite = new Database(this.file);
    try {
      const mode = this.sqlite.pragma('journal_mode = WAL', { simple: true });
      if (mode !== 'wal') throw new LegibleError(`${this.file}: could not switch the database to WAL mode (got "${String(mode)}"); put the database on a local disk`);
      this.sqlite.pragma('synchronous = FULL');
      this.sqlite.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000))}`);
      this.sqlite.pragma('foreign_keys = ON');
      migrate(this.sqlite, this.file);
      this.q = prepareAll(this.sqlite);
      this.secret = this.resolveSecret(opts.secret ?? process.env.LEGIBLE_SECRET);
    } catch (e) {
      this.sqlite.close();
      throw e;
    }
  }

  /**
   * The secret: given (env LEGIBLE_SECRET) or generated on first open and kept in meta.secret.
   * A given secret is not stored; meta.secret_check (an HMAC of it) makes sure the same one is
   * used every time, since pseudonyms and tokens depend on it.
   */
  private resolveSecret(given: string | undefined): string {
    const check = (s: string) => createHmac('sha256', s).update('legible secret check').digest('hex');
    const storedCheck = this.q.getMeta.get('secret_check')?.value;
    if (given !== undefined && given !== '') {
      if (given.length < 16) throw new LegibleError('LEGIBLE_SECRET is too short: use at least 16 random characters (e.g. `openssl rand -hex 32`)');
      if (storedCheck && storedCheck !== check(given)) {
        throw new LegibleError(`${this.file}: LEGIBLE_SECRET differs from the secret this database was created with; participants' pseudonyms and session tokens would change. Use the original secret.`);
      }
      if (!storedCheck) this.q.setMeta.run('secret_check', check(given));
      return given;
    }
    const stored = this.q.getMeta.get('secret')?.value;
    if (stored) return stored;
    if (storedCheck) {
      throw new LegibleError(`${this.file}: this database was created with LEGIBLE_SECRET set; set it to the same value again`);
    }
    const secret = randomBytes(32).toString('hex');
    this.sqlite.transaction(() => {
      this.q.setMeta.run('secret', secret);
      this.q.setMeta.run('secret_check', check(secret));
    })();
    return secret;
  }

  get schemaVersion(): number {
    return this.sqlite.pragma('user_version', { simple: true }) as number;
  }

  /** Run fn in one write transaction (BEGIN IMMEDIATE: the write lock is taken up front). */
  write<T>(fn: () => T): T {
    return this.sqlite.transaction(fn).immediate();
  }

  sessionById(id: string): SessionRow | undefined {
    return this.q.sessionById.get(id);
  }
  sessionMeta(id: string): SessionMeta | undefined {
    return this.q.sessionMeta.get(id);
  }

  /** A session's task list, parsed once and kept (task lists never change); undefined for no such session. */
  tasks(sessionId: string): Task[] | undefined {
    let tasks = this.taskCache.get(sessionId);
    if (tasks) {
      // Most recently used last, so the oldest entries go first when the cache is full.
      this.taskCache.delete(sessionId);
    } else {
      const text = this.q.sessionTasks.get(sessionId);
      if (text === undefined) return undefined;
      tasks = JSON.parse(text) as Task[];
      if (this.taskCache.size >= TASK_CACHE_SIZE) this.taskCache.delete(this.taskCache.keys().next().value!);
    }
    this.taskCache.set(sessionId, tasks);
    return tasks;
  }
  private readonly taskCache = new Map<string, Task[]>();
  sessionByParticipant(study: string, participant: string): SessionRow | undefined {
    return this.q.sessionByParticipant.get(study, participant);
  }
  sessionsOfStudy(study: string): SessionRow[] {
    return this.q.sessionsOfStudy.all(study);
  }
  insertSession(row: SessionRow): void {
    this.q.insertSession.run(row);
  }
  insertIdentity(row: IdentityRow): void {
    this.q.insertIdentity.run(row);
  }
  /** Returns false when the session was already finished. */
  finishSession(id: string, outcome: string, code: string | null, finishedAt: string): boolean {
    return this.q.finishSession.run({ id, outcome, code, finished_at: finishedAt }).changes === 1;
  }
  /** Insert once: false (and nothing written) when (session_id, seq) is already recorded. */
  insertTrial(row: TrialRow): boolean {
    return this.q.insertTrial.run(row).changes === 1;
  }

  /**
   * Record a trial durably, exactly once, with group commit: the trials that arrive while the
   * event loop is busy (e.g. during the previous commit's fsync) are written in one transaction,
   * so one fsync covers many answers. Resolves after the commit with `inserted: true`, or with
   * the row already recorded for (session_id, seq). Each trial has its own savepoint, so one
   * failing row does not fail the others.
   */
  recordTrial(row: TrialRow): Promise<RecordResult> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      if (this.pending.length === 1) setImmediate(() => this.flush());
    });
  }

  private pending: { row: TrialRow; resolve: (r: RecordResult) => void; reject: (e: unknown) => void }[] = [];

  private flush(): void {
    const batch = this.pending;
    this.pending = [];
    const outcomes: ({ ok: RecordResult } | { error: unknown })[] = [];
    try {
      this.write(() => {
        for (const { row } of batch) {
          try {
            outcomes.push({
              ok: this.sqlite.transaction(() => {
                if (this.insertTrial(row)) return { inserted: true as const };
                return { inserted: false as const, prior: this.trialRecord(row.session_id, row.seq)! };
              })(),
            });
          } catch (error) {
            outcomes.push({ error });
          }
        }
      });
    } catch (error) {
      for (const item of batch) item.reject(error);
      return;
    }
    batch.forEach((item, i) => {
      const o = outcomes[i];
      if ('ok' in o) item.resolve(o.ok);
      else item.reject(o.error);
    });
  }
  trialRecord(sessionId: string, seq: number) {
    return this.q.trialRecord.get(sessionId, seq);
  }
  answeredSeqs(sessionId: string): number[] {
    return this.q.answeredSeqs.all(sessionId);
  }
  catchScore(sessionId: string): { n: number; correct: number } {
    const r = this.q.catchScore.get(sessionId)!;
    return { n: r.n, correct: r.correct ?? 0 };
  }

  /** The load that balances assignment (see tallyLoad in assign.ts, which defines it). */
  load(study: string, mode: Mode, now: string): Load {
    const units = new Map<string, number>();
    const conditions = new Map<string, number>();
    for (const r of this.q.recordedUnits.all(study, mode)) units.set(unitKey(r.feature, r.reference_kind), r.n);
    for (const s of this.q.leasedSessions.all(study, mode, now)) {
      const answered = new Set<number>(JSON.parse(s.answered) as number[]);
      for (const t of this.tasks(s.id) ?? []) {
        if (t.kind !== 'main' || answered.has(t.seq)) continue;
        const k = unitKey(t.feature, t.reference_kind);
        units.set(k, (units.get(k) ?? 0) + 1);
      }
    }
    for (const r of this.q.conditionCounts.all(study, mode, now)) conditions.set(r.condition, r.n);
    return { units, conditions };
  }

  close(): void {
    if (this.pending.length) this.flush();
    if (this.sqlite.open) this.sqlite.close();
  }
}

function migrate(db: Database.Database, file: string): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new LegibleError(`${file}: database schema version ${version} is newer than this legible (${MIGRATIONS.length}); upgrade legible`);
  }
  for (let i = version; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i]);
      db.pragma(`user_version = ${i + 1}`);
    }).immediate();
  }
}

export function openDatabase(file: string, opts: OpenOptions = {}): LegibleDb {
  return new LegibleDb(file, opts);
}
