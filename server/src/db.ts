// The server's database: one SQLite file through better-sqlite3. WAL with synchronous=FULL, so a
// commit that returned survives a crash or power loss; migrations keyed by PRAGMA user_version;
// every statement prepared once. The analysis package's export reads these tables and columns.
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { LegibleError } from '@legible/studies';
import { unitKey, type Load, type Task } from './assign.ts';
import { practiceState, type PracticeAnswer, type PracticeState } from './practice.ts';

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
  /** Once practice is over (design.practice_criterion): 1 passed, 0 never passed; null before, or without a criterion. */
  practice_passed?: number | null;
  /** Once practice is over: the practice rounds the participant went through. */
  practice_rounds?: number | null;
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
  /** SHA-256 (hex) of the resume secret the browser sent with its first request, if it sent one. */
  resume_hash: string | null;
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
  /** Practice round (0-based) of a practice trial; null for main and catch trials. */
  practice_round: number | null;
}

export interface PriorTrial {
  payload_hash: string;
  server_time: string;
  correct: number;
  kind: string;
}

export type RecordResult =
  | { inserted: true; practice?: PracticeState }
  | { inserted: false; prior: PriorTrial; practice?: PracticeState }
  /** Not recorded: a practice trial of a round that practice ended before. */
  | { inserted: false; refused: 'practice_over'; practice: PracticeState };

/** A client event as stored (events table). */
export interface EventRow {
  session_id: string;
  study: string;
  seq: number | null;
  type: string;
  /** Client wall clock, ms since the epoch. */
  at: number;
  /** JSON object, or null. */
  detail: string | null;
  server_time: string;
  mode: string;
  /** sha256 of the event's canonical JSON: the same event sent twice is stored once. */
  hash: string;
}

export interface AdminTokenRow {
  id: number;
  label: string | null;
  created_at: string;
  revoked_at: string | null;
  last_used_at: string | null;
}

export interface AuditRow {
  id: number;
  at: string;
  /** Who: "token <id> (<label>)" for the admin API, "cli" for the command line. */
  actor: string;
  token_id: number | null;
  action: string;
  study: string | null;
  /** JSON object with what the action touched (never raw participant ids). */
  detail: string | null;
}

/** How long a session creation waits for others to share its commit (see LegibleDb.createSession). */
export const CREATE_COMMIT_WINDOW_MS = 20;

/** Most events one session may store (a flood guard; a real session sends a few dozen). */
export const MAX_EVENTS_PER_SESSION = 5000;
/** Most bytes (UTF-8 JSON) of one event's detail; the client's own events stay well below. */
export const MAX_EVENT_DETAIL_BYTES = 4096;
/** Most bytes of event details one session may store, all events together. */
export const MAX_EVENT_DETAIL_BYTES_PER_SESSION = 256 * 1024;

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
  // 2: practice rounds, client events, admin tokens and the audit log.
  `
  ALTER TABLE sessions ADD COLUMN practice_passed INTEGER;
  ALTER TABLE sessions ADD COLUMN practice_rounds INTEGER;
  ALTER TABLE trials ADD COLUMN practice_round INTEGER;

  CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    study       TEXT NOT NULL,
    seq         INTEGER,
    type        TEXT NOT NULL,
    at          REAL NOT NULL,
    detail      TEXT,
    server_time TEXT NOT NULL,
    mode        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    UNIQUE (session_id, hash)
  ) STRICT;
  CREATE INDEX events_by_study ON events (study, type);

  CREATE TABLE admin_tokens (
    id           INTEGER PRIMARY KEY,
    label        TEXT,
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT,
    last_used_at TEXT
  ) STRICT;

  CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       TEXT NOT NULL,
    actor    TEXT NOT NULL,
    token_id INTEGER,
    action   TEXT NOT NULL,
    study    TEXT,
    detail   TEXT
  ) STRICT;
  `,
  // 3: the resume secret a browser chose before its first request (its SHA-256): a retried
  // creation whose first response was lost still resumes.
  `
  ALTER TABLE identities ADD COLUMN resume_hash TEXT;
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
  /** Do not resolve the secret (commands that need no pseudonyms or tokens: admin tokens, withdrawal by raw id). */
  withoutSecret?: boolean;
}

function prepareAll(db: Database.Database) {
  return {
    getMeta: db.prepare<[string], { value: string }>('SELECT value FROM meta WHERE key = ?'),
    setMeta: db.prepare<[string, string]>('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    sessionById: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE id = ?'),
    sessionMeta: db.prepare<[string], SessionMeta>(
      `SELECT id, study, participant, token_hash, mode, seed, condition, n_trials, status, outcome, code, created_at, lease_expires_at,
              finished_at, user_agent, manifest_sha256, practice_passed, practice_rounds
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
      `INSERT INTO identities (participant, study, prolific_pid, prolific_study_id, prolific_session_id, external_id, created_at, resume_hash)
       VALUES (@participant, @study, @prolific_pid, @prolific_study_id, @prolific_session_id, @external_id, @created_at, @resume_hash)
       ON CONFLICT (participant) DO NOTHING`,
    ),
    finishSession: db.prepare<[{ id: string; outcome: string; code: string | null; finished_at: string }]>(
      `UPDATE sessions SET status = 'finished', outcome = @outcome, code = @code, finished_at = @finished_at
       WHERE id = @id AND status != 'finished'`,
    ),
    insertTrial: db.prepare<[TrialRow]>(
      `INSERT INTO trials (session_id, seq, study, participant, trial_id, feature, layer, basis, feature_index, kind, reference_kind,
                           query_images, answer, choice, confidence, correct, rt_ms, query_order, input, onset_ms, response_ms,
                           client_time, server_time, window_w, window_h, screen_w, screen_h, dpr, plugin_version, payload_hash, mode,
                           practice_round)
       VALUES (@session_id, @seq, @study, @participant, @trial_id, @feature, @layer, @basis, @feature_index, @kind, @reference_kind,
               @query_images, @answer, @choice, @confidence, @correct, @rt_ms, @query_order, @input, @onset_ms, @response_ms,
               @client_time, @server_time, @window_w, @window_h, @screen_w, @screen_h, @dpr, @plugin_version, @payload_hash, @mode,
               @practice_round)
       ON CONFLICT (session_id, seq) DO NOTHING`,
    ),
    practiceAnswers: db.prepare<[string], { seq: number; correct: number; ord: number }>(
      "SELECT seq, correct, rowid AS ord FROM trials WHERE session_id = ? AND kind = 'practice'",
    ),
    setPractice: db.prepare<[number | null, number, string]>('UPDATE sessions SET practice_passed = ?, practice_rounds = ? WHERE id = ?'),
    insertEvent: db.prepare<[EventRow]>(
      `INSERT INTO events (session_id, study, seq, type, at, detail, server_time, mode, hash)
       VALUES (@session_id, @study, @seq, @type, @at, @detail, @server_time, @mode, @hash)
       ON CONFLICT (session_id, hash) DO NOTHING`,
    ),
    eventCount: db.prepare<[string], number>('SELECT count(*) FROM events WHERE session_id = ?').pluck(),
    eventDetailBytes: db.prepare<[string], number>('SELECT coalesce(sum(length(CAST(detail AS BLOB))), 0) FROM events WHERE session_id = ?').pluck(),
    savepoint: db.prepare('SAVEPOINT job'),
    release: db.prepare('RELEASE job'),
    rollbackTo: db.prepare('ROLLBACK TO job'),
    insertToken: db.prepare<[string | null, string, string]>('INSERT INTO admin_tokens (label, token_hash, created_at) VALUES (?, ?, ?)'),
    tokenByHash: db.prepare<[string], AdminTokenRow>(
      'SELECT id, label, created_at, revoked_at, last_used_at FROM admin_tokens WHERE token_hash = ? AND revoked_at IS NULL',
    ),
    touchToken: db.prepare<[string, number]>('UPDATE admin_tokens SET last_used_at = ? WHERE id = ?'),
    listTokens: db.prepare<[], AdminTokenRow>('SELECT id, label, created_at, revoked_at, last_used_at FROM admin_tokens ORDER BY id'),
    revokeToken: db.prepare<[string, number]>('UPDATE admin_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL'),
    insertAudit: db.prepare<[Omit<AuditRow, 'id'>]>(
      'INSERT INTO audit (at, actor, token_id, action, study, detail) VALUES (@at, @actor, @token_id, @action, @study, @detail)',
    ),
    auditPage: db.prepare<[number, number], AuditRow>('SELECT * FROM audit WHERE id < ? ORDER BY id DESC LIMIT ?'),
    identitiesByRawId: db.prepare<[string, string, string], { participant: string }>(
      'SELECT participant FROM identities WHERE study = ? AND (prolific_pid = ? OR external_id = ?)',
    ),
    identityOf: db.prepare<[string], IdentityRow>('SELECT * FROM identities WHERE participant = ?'),
    sessionsOfParticipant: db.prepare<[string, string], { id: string }>('SELECT id FROM sessions WHERE study = ? AND participant = ?'),
    countTrials: db.prepare<[string], number>('SELECT count(*) FROM trials WHERE session_id = ?').pluck(),
    deleteSession: db.prepare<[string]>('DELETE FROM sessions WHERE id = ?'),
    deleteIdentity: db.prepare<[string]>('DELETE FROM identities WHERE participant = ?'),
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
    leasedSessions: db.prepare<[string, string, string], { id: string; condition: string; lease_expires_at: string; answered: string }>(
      `SELECT s.id, s.condition, s.lease_expires_at, (SELECT json_group_array(t.seq) FROM trials t WHERE t.session_id = s.id) AS answered
       FROM sessions s WHERE s.study = ? AND s.mode = ? AND s.status = 'active' AND s.lease_expires_at > ?`,
    ),
    conditionCounts: db.prepare<[string, string, string], { condition: string; n: number }>(
      `SELECT condition, count(*) AS n FROM sessions
       WHERE study = ? AND mode = ? AND (status = 'finished' OR (status = 'active' AND lease_expires_at > ?))
       GROUP BY condition`,
    ),
    finishedConditions: db.prepare<[string, string], { condition: string; n: number }>(
      "SELECT condition, count(*) AS n FROM sessions WHERE study = ? AND mode = ? AND status = 'finished' GROUP BY condition",
    ),
    sessionsOfStudy: db.prepare<[string], SessionRow>('SELECT * FROM sessions WHERE study = ? ORDER BY created_at, id'),
  };
}

export class LegibleDb {
  readonly sqlite: Database.Database;
  /** Absolute path of the database file. */
  readonly file: string;
  private readonly q: ReturnType<typeof prepareAll>;
  private readonly secretValue: string | undefined;

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
      this.secretValue = opts.withoutSecret ? undefined : this.resolveSecret(opts.secret ?? process.env.LEGIBLE_SECRET);
    } catch (e) {
      this.sqlite.close();
      throw e;
    }
  }

  /**
   * Whether this database holds simulated participants (`legible pilot`): meta.simulated, set once
   * by markSimulated and never cleared. Such a database is never served to real participants.
   */
  get simulated(): boolean {
    return this.q.getMeta.get('simulated') !== undefined;
  }

  /** Marks the database as one of simulated participants; refused where it already holds sessions that are not. */
  markSimulated(by: string): void {
    if (this.simulated) return;
    const sessions = (this.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n;
    if (sessions > 0) {
      throw new LegibleError(`${this.file} holds ${sessions} sessions of real participants: simulated participants go into a database of their own, never beside live data. Give another database file.`);
    }
    this.q.setMeta.run('simulated', JSON.stringify({ by, at: new Date().toISOString() }));
  }

  /** Server secret for pseudonyms and session tokens. */
  get secret(): string {
    if (this.secretValue === undefined) throw new LegibleError(`${this.file}: opened without the server secret`);
    return this.secretValue;
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
  /** The recruitment ids stored for a pseudonym (for resume: Prolific's SESSION_ID of the attempt). */
  identity(participant: string): IdentityRow | undefined {
    return this.q.identityOf.get(participant);
  }
  /** Returns false when the session was already finished. */
  finishSession(id: string, outcome: string, code: string | null, finishedAt: string): boolean {
    return this.q.finishSession.run({ id, outcome, code, finished_at: finishedAt }).changes === 1;
  }
  /** Insert once: false (and nothing written) when (session_id, seq) is already recorded. */
  insertTrial(row: TrialRow): boolean {
    return this.q.insertTrial.run(row).changes === 1;
  }

  // ─── Group commit ────────────────────────────────────────────────────────────────────────
  /**
   * Run `fn` in the next group commit: the jobs that arrive while the event loop is busy (e.g.
   * during the previous commit's fsync) run in one transaction, so one fsync covers many
   * answers. Resolves with fn's result once the transaction has committed (durably:
   * synchronous=FULL), rejects with fn's error or the commit's. With `atomic`, the job runs in its
   * own savepoint, so a job of several statements that fails leaves nothing behind; a job of one
   * statement is atomic by itself. One failing job does not fail the others.
   */
  enqueue<T>(fn: () => T, atomic = false, windowMs = 0): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ fn, atomic, resolve: resolve as (v: unknown) => void, reject });
      if (windowMs <= 0) {
        // Commit at the next turn of the event loop, taking along any job waiting for its window.
        if (this.flushTimer) clearTimeout(this.flushTimer);
        this.flushTimer = undefined;
        if (!this.flushImmediate) this.flushImmediate = setImmediate(this.flushPending);
      } else if (!this.flushImmediate && !this.flushTimer) {
        this.flushTimer = setTimeout(this.flushPending, windowMs);
      }
    });
  }

  private pending: { fn: () => unknown; atomic: boolean; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  private flushImmediate: NodeJS.Immediate | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private readonly flushPending = () => this.flush();
  /** Group commits made (transactions of enqueued jobs), for tests and benchmarks. */
  commits = 0;

  private flush(): void {
    if (this.flushImmediate) clearImmediate(this.flushImmediate);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushImmediate = undefined;
    this.flushTimer = undefined;
    const batch = this.pending;
    if (batch.length === 0) return;
    this.pending = [];
    this.commits++;
    const results: unknown[] = new Array(batch.length);
    const failed: boolean[] = new Array(batch.length).fill(false);
    try {
      this.write(() => {
        for (let i = 0; i < batch.length; i++) {
          const job = batch[i];
          if (!job.atomic) {
            try {
              results[i] = job.fn();
            } catch (error) {
              results[i] = error;
              failed[i] = true;
            }
            continue;
          }
          this.q.savepoint.run();
          try {
            results[i] = job.fn();
            this.q.release.run();
          } catch (error) {
            this.q.rollbackTo.run();
            this.q.release.run();
            results[i] = error;
            failed[i] = true;
          }
        }
      });
    } catch (error) {
      for (const job of batch) job.reject(error);
      return;
    }
    for (let i = 0; i < batch.length; i++) {
      if (failed[i]) batch[i].reject(results[i]);
      else batch[i].resolve(results[i]);
    }
  }

  /**
   * Record a trial durably, exactly once (group commit): resolves after the commit with
   * `inserted: true`, or with the row already recorded for (session_id, seq). For a practice
   * trial (`practice` given), the session's practice state is worked out in the same
   * transaction: a trial of a round after the one that ended practice is refused (unless it was
   * recorded before), and the session's practice_passed / practice_rounds are set once practice
   * is over.
   */
  recordTrial(row: TrialRow, practice?: { tasks: readonly Task[]; criterion: number | null }): Promise<RecordResult> {
    if (!practice) {
      return this.enqueue((): RecordResult => {
        if (this.q.insertTrial.run(row).changes === 1) return { inserted: true };
        return { inserted: false, prior: this.q.trialRecord.get(row.session_id, row.seq)! };
      });
    }
    return this.enqueue((): RecordResult => {
      const prior = this.q.trialRecord.get(row.session_id, row.seq);
      if (prior) return { inserted: false, prior, practice: this.practiceOf(row.session_id, practice.tasks, practice.criterion) };
      const before = this.practiceOf(row.session_id, practice.tasks, practice.criterion);
      if (before.skipped.has(row.seq)) return { inserted: false, refused: 'practice_over', practice: before };
      this.q.insertTrial.run(row);
      const after = this.practiceOf(row.session_id, practice.tasks, practice.criterion);
      if (after.over && !before.over) this.q.setPractice.run(after.passed === null ? null : after.passed ? 1 : 0, after.roundsUsed, row.session_id);
      return { inserted: true, practice: after };
    }, true);
  }

  /** A session's practice state from its recorded practice answers. */
  practiceOf(sessionId: string, tasks: readonly Task[], criterion: number | null): PracticeState {
    const answers: PracticeAnswer[] = this.q.practiceAnswers.all(sessionId).map((a) => ({ seq: a.seq, correct: a.correct === 1, order: a.ord }));
    return practiceState(tasks, criterion, answers);
  }

  /**
   * Write a new session and its identity (group commit), unless the participant already has a
   * session in the study (then nothing is written and it resolves false). A creation waits up to
   * CREATE_COMMIT_WINDOW_MS for others to share its commit (or for the next answer's commit):
   * participants arriving a few milliseconds apart then pay one transaction and one fsync between
   * them instead of one each, which is what makes a burst of arrivals queue up otherwise (the
   * event loop waits for every fsync). Each still resolves only once its commit is durable.
   */
  createSession(row: SessionRow, identity: IdentityRow): Promise<boolean> {
    return this.enqueue(
      () => {
        if (this.q.sessionByParticipant.get(row.study, row.participant)) return false;
        this.q.insertSession.run(row);
        this.q.insertIdentity.run(identity);
        return true;
      },
      true,
      CREATE_COMMIT_WINDOW_MS,
    );
  }

  /**
   * Store client events (group commit). The same event sent again (a retried request) is stored
   * once. Resolves with the number of new rows; rejects with `too_many_events` when the session
   * has reached MAX_EVENTS_PER_SESSION.
   */
  recordEvents(rows: EventRow[]): Promise<number> {
    const bytes = rows.reduce((sum, r) => sum + (r.detail === null ? 0 : Buffer.byteLength(r.detail, 'utf8')), 0);
    return this.enqueue(() => {
      const have = this.q.eventCount.get(rows[0].session_id)!;
      if (have + rows.length > MAX_EVENTS_PER_SESSION) throw new TooManyEvents(have);
      if (bytes > 0) {
        const stored = this.q.eventDetailBytes.get(rows[0].session_id)!;
        if (stored + bytes > MAX_EVENT_DETAIL_BYTES_PER_SESSION) throw new TooManyEventBytes(stored, bytes);
      }
      let added = 0;
      for (const row of rows) added += this.q.insertEvent.run(row).changes;
      return added;
    }, true);
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
  /** Set a session's practice outcome (finish re-derives it from the trials, in case it was never set). */
  setPractice(sessionId: string, passed: boolean | null, rounds: number): void {
    this.q.setPractice.run(passed === null ? null : passed ? 1 : 0, rounds, sessionId);
  }

  /** Recorded main responses per unit (feature × reference kind). */
  recordedLoad(study: string, mode: Mode): { feature: string; reference_kind: string; n: number }[] {
    return this.q.recordedUnits.all(study, mode);
  }
  /** Sessions still within their lease at `now`, with the JSON array of their recorded seqs. */
  leasedSessions(study: string, mode: Mode, now: string): { id: string; condition: string; lease_expires_at: string; answered: string }[] {
    return this.q.leasedSessions.all(study, mode, now);
  }
  /** Finished sessions per between-subject condition. */
  finishedConditions(study: string, mode: Mode): { condition: string; n: number }[] {
    return this.q.finishedConditions.all(study, mode);
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

  // ─── Admin tokens and the audit log ──────────────────────────────────────────────────────
  /** A new admin token: returned once, stored only as its sha256. */
  createAdminToken(label: string | null, now = new Date()): { id: number; token: string } {
    const token = `lgb_${randomBytes(32).toString('base64url')}`;
    const id = Number(this.q.insertToken.run(label, sha256hex(token), now.toISOString()).lastInsertRowid);
    return { id, token };
  }
  /** The live (not revoked) token row for a presented token, or undefined. */
  adminToken(token: string): AdminTokenRow | undefined {
    return this.q.tokenByHash.get(sha256hex(token));
  }
  touchAdminToken(id: number, now: string): void {
    this.q.touchToken.run(now, id);
  }
  adminTokens(): AdminTokenRow[] {
    return this.q.listTokens.all();
  }
  /** False when there is no such live token. */
  revokeAdminToken(id: number, now = new Date()): boolean {
    return this.q.revokeToken.run(now.toISOString(), id).changes === 1;
  }
  audit(entry: { actor: string; token_id?: number | null; action: string; study?: string | null; detail?: Record<string, unknown> | null; at?: string }): void {
    this.q.insertAudit.run({
      at: entry.at ?? new Date().toISOString(),
      actor: entry.actor,
      token_id: entry.token_id ?? null,
      action: entry.action,
      study: entry.study ?? null,
      detail: entry.detail ? JSON.stringify(entry.detail) : null,
    });
  }
  /** Audit entries, newest first: `limit` of them with id below `before`. */
  auditLog(limit = 100, before = Number.MAX_SAFE_INTEGER): AuditRow[] {
    return this.q.auditPage.all(before, limit);
  }

  // ─── Withdrawal ──────────────────────────────────────────────────────────────────────────
  /**
   * Delete everything stored about a participant in a study — identity, sessions, their trials
   * and events — found by the raw Prolific or participant id (or by the pseudonym itself), in one
   * transaction, and record it in the audit log (counts only, no ids). Returns the counts.
   */
  withdraw(study: string, rawId: string, actor = 'cli', now = new Date()): { participants: number; sessions: number; trials: number; events: number } {
    return this.write(() => {
      const who = new Set(this.q.identitiesByRawId.all(study, rawId, rawId).map((r) => r.participant));
      if (/^[0-9a-f]{64}$/.test(rawId)) who.add(rawId);
      if (this.secretValue !== undefined) who.add(createHmac('sha256', this.secretValue).update(`${study}\0${rawId}`).digest('hex'));
      const counts = { participants: 0, sessions: 0, trials: 0, events: 0 };
      for (const participant of who) {
        const sessions = this.q.sessionsOfParticipant.all(study, participant);
        const identity = this.q.identityOf.get(participant);
        if (sessions.length === 0 && !(identity && identity.study === study)) continue;
        counts.participants++;
        for (const { id } of sessions) {
          counts.trials += this.q.countTrials.get(id)!;
          counts.events += this.q.eventCount.get(id)!;
          this.q.deleteSession.run(id); // trials and events go with it (ON DELETE CASCADE)
          this.taskCache.delete(id);
          counts.sessions++;
        }
        if (identity && identity.study === study) this.q.deleteIdentity.run(participant);
      }
      this.audit({ actor, action: 'withdraw', study, detail: counts, at: now.toISOString() });
      return counts;
    });
  }

  close(): void {
    if (this.pending.length) this.flush();
    if (this.sqlite.open) this.sqlite.close();
  }
}

/** recordEvents: the session has stored the most events allowed. */
export class TooManyEvents extends Error {
  constructor(readonly stored: number) {
    super(`this session has stored ${stored} events, the most allowed is ${MAX_EVENTS_PER_SESSION}`);
  }
}

/** recordEvents: the batch would take the session's stored event details past MAX_EVENT_DETAIL_BYTES_PER_SESSION. */
export class TooManyEventBytes extends Error {
  constructor(
    readonly stored: number,
    readonly bytes: number,
  ) {
    super(`this session has stored ${stored} bytes of event details and this request adds ${bytes}; the most allowed is ${MAX_EVENT_DETAIL_BYTES_PER_SESSION} bytes`);
  }
}

const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex');

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
