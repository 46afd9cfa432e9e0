// Sessions: creation and resume, exactly-once trial records, scoring and completion. HTTP-free:
// app.ts maps these calls and their HttpErrors onto routes. Preview-mode studies keep their
// sessions in memory only (see PreviewStore); pilot and live ones are in the database.
import { createHash, createHmac, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import {
  CreateSessionRequest,
  EventsRequest,
  TrialAnswer,
  type ClientConfig,
  type CreateSessionResponse,
  type FinishResponse,
  type ManifestTrial,
  type Study,
  type TaskTrial,
  type TrialAck,
} from '@legible/studies';
import { assignTasks, emptyLoad, exampleFor, type Task } from './assign.ts';
import { LoadTracker } from './balance.ts';
import { MAX_EVENT_DETAIL_BYTES, MAX_EVENT_DETAIL_BYTES_PER_SESSION, TooManyEventBytes, TooManyEvents, type EventRow, type IdentityRow, type LegibleDb, type Mode, type SessionMeta, type SessionRow, type TrialRow } from './db.ts';
import { hasPractice, practiceState, roundSummaryFor, type PracticeAnswer, type PracticeState } from './practice.ts';
import type { Registry, StudyEntry } from './registry.ts';

/** An error with an HTTP status and a JSON body {error, ...extra}. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
  body(): Record<string, unknown> {
    return { error: this.message, ...this.extra };
  }
}

/**
 * 403 for a claim of a participant id whose session the request cannot prove to hold (neither the
 * browser's resume secret nor Prolific's SESSION_ID of the attempt): no token, no code.
 */
export const resumeRefused = () =>
  new HttpError(
    403,
    'this participant id already has a session, started in another browser: continue in the browser (and from the link) you started in; if that is not possible, contact the researcher',
    { detail: { resume_refused: true } },
  );

export const unauthorized = () => new HttpError(401, 'invalid or missing session token: send the token from POST /api/sessions as "Authorization: Bearer <token>"');

// ─── Validation with field-level messages ──────────────────────────────────────────────────
interface FieldProblem {
  field: string;
  message: string;
}

type ZodLike<T> = { safeParse(data: unknown): { success: true; data: T } | { success: false; error: { issues: ZodIssueLike[] } } };
interface ZodIssueLike {
  code: string;
  path: PropertyKey[];
  message: string;
  keys?: string[];
}

/** Friendlier messages where zod's are generic ("Invalid input"). */
const HINTS: Record<string, string> = {
  query: 'expected 0 or 1: which of the two queries was chosen, in the order the task list gave them',
  confidence: 'expected 1, 2 or 3',
  rt_ms: 'expected the response time in milliseconds, a number from 0 to 86400000',
  query_order: 'expected [0, 1] or [1, 0]',
  input: 'expected "key" or "pointer"',
  window: 'expected [width, height] in whole CSS pixels',
  screen: 'expected [width, height] in whole CSS pixels',
  dpr: 'expected devicePixelRatio, a number above 0 and at most 16',
  plugin_version: 'expected a version string of at most 32 characters',
  study: 'expected the study id, e.g. "demo"',
  participant: 'expected a participant id of 1–128 characters',
  PROLIFIC_PID: "expected Prolific's PROLIFIC_PID URL parameter (1–128 characters)",
  STUDY_ID: "expected Prolific's STUDY_ID URL parameter (1–128 characters)",
  SESSION_ID: "expected Prolific's SESSION_ID URL parameter (1–128 characters)",
  resume: 'expected the resume_secret this browser got with its session (1–128 characters)',
};

function valueAt(body: unknown, path: (string | number)[]): unknown {
  let v = body;
  for (const step of path) v = v && typeof v === 'object' ? (v as Record<string | number, unknown>)[step] : undefined;
  return v;
}

function problems(issues: ZodIssueLike[], allowed: string[], body: unknown): FieldProblem[] {
  return issues.flatMap((issue) => {
    const path = issue.path.filter((p): p is string | number => typeof p !== 'symbol');
    const field = path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i ? `.${p}` : p)).join('') || '(body)';
    if (issue.code === 'unrecognized_keys') {
      return (issue.keys ?? []).map((k) => ({ field: k, message: `unknown field; allowed: ${allowed.join(', ')}` }));
    }
    const generic = issue.message.startsWith('Invalid input') || issue.message.startsWith('Invalid option');
    const hint = HINTS[String(path[0])];
    const missing = path.length > 0 && valueAt(body, path) === undefined;
    return [{ field, message: missing ? `required: ${hint ?? issue.message}` : generic && hint ? hint : `${issue.message}${hint && hint !== issue.message ? ` (${hint})` : ''}` }];
  });
}

function validate<T>(schema: ZodLike<T>, body: unknown, what: string, allowed: string[]): T {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new HttpError(400, `${what}: expected a JSON object as the request body, sent with "Content-Type: application/json"`);
  }
  const parsed = schema.safeParse(body);
  if (parsed.success) return parsed.data;
  const fields = problems(parsed.error.issues, allowed, body);
  throw new HttpError(400, `${what}: ${fields.map((f) => `${f.field}: ${f.message}`).join('; ')}`, { detail: { fields } });
}

const [ProlificRequest, GenericRequest] = CreateSessionRequest.options;

export function parseCreateRequest(body: unknown): CreateSessionRequest {
  if (body && typeof body === 'object' && !Array.isArray(body)) {
    const prolific = 'PROLIFIC_PID' in body;
    if (!prolific && !('participant' in body)) {
      throw new HttpError(400, 'invalid session request: give either "participant" (any id) or "PROLIFIC_PID" (with optional STUDY_ID and SESSION_ID)', {
        detail: { fields: [{ field: 'participant', message: 'required (or PROLIFIC_PID)' }] },
      });
    }
    if (prolific) return validate(ProlificRequest, body, 'invalid session request', ['study', 'PROLIFIC_PID', 'STUDY_ID', 'SESSION_ID', 'resume']);
    return validate(GenericRequest, body, 'invalid session request', ['study', 'participant', 'resume']);
  }
  return validate(CreateSessionRequest, body, 'invalid session request', []);
}

const ANSWER_FIELDS = Object.keys(TrialAnswer.shape);
export const parseTrialAnswer = (body: unknown): TrialAnswer => validate(TrialAnswer, body, 'invalid trial answer', ANSWER_FIELDS);
export const parseEvents = (body: unknown): EventsRequest => validate(EventsRequest, body, 'invalid events', ['events']);
type EventsRequest = ReturnType<typeof EventsRequest.parse>;

// ─── Helpers ───────────────────────────────────────────────────────────────────────────────
/** JSON with object keys sorted at every level: the canonical form that payload hashes cover. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    return `{${Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(value);
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

export function clientConfig(study: Study): ClientConfig {
  return {
    initial_wait_ms: study.design.initial_wait_ms,
    max_side: study.design.max_side,
    columns: study.references.columns,
    per_side: study.references.per_side,
    cell_px: study.stimuli.cell_px,
    gap_px: study.stimuli.gap_px,
    pixelated: study.stimuli.resample === 'nearest',
    practice_criterion: study.design.practice_criterion ?? null,
  };
}

type Outcome = 'completed' | 'failed_checks' | 'no_consent' | 'incompatible_device';

/** Code and redirect for an outcome, from the study's recruitment section. */
export function completion(study: Study, outcome: Outcome): { code: string | null; redirect: string | null } {
  const code = study.recruitment[outcome]?.code ?? null;
  return { code, redirect: redirectFor(study, outcome, code) };
}

/**
 * The outcome's own redirect, else recruitment.redirect, else (platform: prolific) Prolific's
 * completion URL; "{code}" is replaced by the code. Null when there is none, or when the URL
 * needs a code and the outcome has none.
 */
export function redirectFor(study: Study, outcome: Outcome, code: string | null): string | null {
  const r = study.recruitment;
  const template = r[outcome]?.redirect ?? r.redirect ?? (r.platform === 'prolific' ? 'https://app.prolific.com/submissions/complete?cc={code}' : undefined);
  if (!template) return null;
  if (!template.includes('{code}')) return template;
  return code === null ? null : template.replaceAll('{code}', encodeURIComponent(code));
}

/** Stimulus URLs, made once per asset (a task list names a few hundred). */
const stimulusUrls = new Map<string, string>();
const stimulusUrl = (study: string, asset: string): string => {
  const key = `${study}\0${asset}`;
  let url = stimulusUrls.get(key);
  if (url === undefined) {
    url = `/stimuli/${encodeURIComponent(study)}/${asset.split('/').map(encodeURIComponent).join('/')}`;
    if (stimulusUrls.size > 200_000) stimulusUrls.clear();
    stimulusUrls.set(key, url);
  }
  return url;
};

/** The study's practice criterion, or null (every practice round passes). */
export const criterionOf = (study: Study): number | null => study.design.practice_criterion ?? null;

/**
 * The unsynced code: recruitment.unsynced, else null — never the completed code, as every participant
 * gets it before the first trial (the study schema keeps it distinct from every other code).
 */
export const unsyncedCode = (study: Study): string | null => study.recruitment.unsynced?.code ?? null;

/** A manifest trial's stimulus URLs, worked out once per trial (not for every session's response). */
const trialUrls = new WeakMap<ManifestTrial, { min: string; max: string; queries: string[] }>();
function urlsOf(study: string, t: ManifestTrial): { min: string; max: string; queries: string[] } {
  let urls = trialUrls.get(t);
  if (!urls) {
    urls = { min: stimulusUrl(study, t.assets.min), max: stimulusUrl(study, t.assets.max), queries: t.assets.queries.map((q) => stimulusUrl(study, q)) };
    trialUrls.set(t, urls);
  }
  return urls;
}

function taskTrials(entry: StudyEntry, tasks: Task[]): TaskTrial[] {
  return tasks.map((task) => {
    const t = entry.trials.get(task.trial);
    if (!t) {
      throw new HttpError(409, `this session's trials are no longer in study "${entry.id}" (its stimuli were rebuilt after the session started); ask the experimenter`);
    }
    const urls = urlsOf(entry.id, t);
    return {
      seq: task.seq,
      practice: task.kind === 'practice',
      practice_round: task.kind === 'practice' ? (task.round ?? 0) : null,
      reference_kind: task.reference_kind,
      min_url: urls.min,
      max_url: urls.max,
      query_urls: [urls.queries[task.order[0]], urls.queries[task.order[1]]],
    };
  });
}

/** The annotated example the client shows before practice (see exampleFor). */
function exampleOf(entry: StudyEntry, tasks: Task[]): CreateSessionResponse['example'] {
  const t = exampleFor(entry.plan, tasks, entry.trials);
  if (!t) return null;
  return {
    reference_kind: t.reference_kind,
    min_url: stimulusUrl(entry.id, t.assets.min),
    max_url: stimulusUrl(entry.id, t.assets.max),
    query_urls: [stimulusUrl(entry.id, t.assets.queries[0]), stimulusUrl(entry.id, t.assets.queries[1])],
  };
}

// ─── Preview sessions: in memory, never in the database ────────────────────────────────────
interface PreviewSession {
  row: SessionRow;
  /** Prolific's SESSION_ID at creation (binds resume, as identities.prolific_session_id does). */
  prolificSession: string | null;
  /** SHA-256 of the resume secret the browser sent at creation (as identities.resume_hash). */
  resumeHash: string | null;
  tasks: Task[];
  /** In the order they were recorded. */
  answers: Map<number, { hash: string; ack: TrialAck; correct: boolean }>;
  expires: number;
}

function previewPractice(s: PreviewSession, criterion: number | null): PracticeState {
  const answers: PracticeAnswer[] = [];
  let order = 0;
  for (const [seq, a] of s.answers) {
    order++;
    if (s.tasks[seq].kind === 'practice') answers.push({ seq, correct: a.correct, order });
  }
  return practiceState(s.tasks, criterion, answers);
}

class PreviewStore {
  private readonly byId = new Map<string, PreviewSession>();
  private readonly byParticipant = new Map<string, string>();
  constructor(private readonly capacity = 10_000) {}

  sweep(nowMs: number): void {
    for (const [id, s] of this.byId) {
      if (s.expires <= nowMs || this.byId.size > this.capacity) this.delete(id);
    }
  }
  get(id: string): PreviewSession | undefined {
    return this.byId.get(id);
  }
  byWho(study: string, participant: string): PreviewSession | undefined {
    const id = this.byParticipant.get(`${study}\0${participant}`);
    return id === undefined ? undefined : this.byId.get(id);
  }
  add(s: PreviewSession): void {
    this.byId.set(s.row.id, s);
    this.byParticipant.set(`${s.row.study}\0${s.row.participant}`, s.row.id);
  }
  delete(id: string): void {
    const s = this.byId.get(id);
    if (!s) return;
    this.byId.delete(id);
    this.byParticipant.delete(`${s.row.study}\0${s.row.participant}`);
  }
}

/** The first seq after `from` that is still required, for error messages. */
function firstRequired(tasks: Task[], skipped: Set<number>, from: number): number {
  for (const t of tasks) if (t.seq > from && !skipped.has(t.seq)) return t.seq;
  return tasks.length;
}

// ─── The service ───────────────────────────────────────────────────────────────────────────
/** A session opened with its bearer token. */
export interface Authenticated {
  row: SessionMeta;
  tasks: Task[];
  preview?: PreviewSession;
}

export interface SessionServiceOptions {
  db: LegibleDb;
  registry: Registry;
  /** The clock (injected in tests). */
  now?: () => Date;
}

export interface CreateResult {
  status: 200 | 201;
  body: CreateSessionResponse;
}

export class SessionService {
  private readonly db: LegibleDb;
  private readonly registry: Registry;
  private readonly now: () => Date;
  private readonly preview = new PreviewStore();
  /** sha256 of a token that matches no session: compared against when the session id is unknown. */
  private readonly nobody = sha256('no session');
  /** Session rows by id, for answers (see authenticate). */
  private readonly metaCache = new Map<string, SessionMeta>();
  /** The balancing load per study and mode, kept in memory. */
  readonly loads: LoadTracker;

  constructor(opts: SessionServiceOptions) {
    this.db = opts.db;
    this.registry = opts.registry;
    this.now = opts.now ?? (() => new Date());
    this.loads = new LoadTracker(this.db);
  }

  /** Pseudonym: HMAC-SHA256(secret, study + "\0" + raw id), hex. */
  pseudonym(study: string, rawId: string): string {
    return createHmac('sha256', this.db.secret).update(`${study}\0${rawId}`).digest('hex');
  }

  /** A session's bearer token, derived from the secret so that a resumed session gets the same one. */
  private token(sessionId: string): string {
    return createHmac('sha256', this.db.secret).update(`session token\0${sessionId}`).digest('base64url');
  }

  /** A session's resume secret (derived like the token, nothing stored): what the browser keeps to come back. */
  private resumeSecret(sessionId: string): string {
    return createHmac('sha256', this.db.secret).update(`resume secret\0${sessionId}`).digest('base64url');
  }

  /**
   * Whether a create request may resume `sessionId`: it carries the session's resume secret — the
   * one the server handed out, or the one the browser chose and sent with its first request (so a
   * retried creation whose response was lost still resumes) — or, Prolific, the SESSION_ID the
   * session was created with (Prolific's id of that attempt). Knowing the participant id alone is
   * not enough (ids are seen by others: screen shares, shared links).
   */
  private mayResume(req: CreateSessionRequest, sessionId: string, bound: { prolificSession: string | null; resumeHash: string | null } | undefined): boolean {
    if (req.resume !== undefined) {
      const given = createHash('sha256').update(req.resume).digest();
      const expected = createHash('sha256').update(this.resumeSecret(sessionId)).digest();
      if (timingSafeEqual(given, expected)) return true;
      if (bound?.resumeHash && timingSafeEqual(given, Buffer.from(bound.resumeHash, 'hex'))) return true;
    }
    const prolificSession = bound?.prolificSession;
    return 'PROLIFIC_PID' in req && req.SESSION_ID !== undefined && !!prolificSession && req.SESSION_ID === prolificSession;
  }

  study(id: string): StudyEntry {
    const entry = this.registry.get(id);
    if (!entry) throw new HttpError(404, `no study "${id}" on this server: check the study id in the link`);
    return entry;
  }

  /** The version of its study a session started with (Registry.forSession: a rebuilt study's new stimuli go to new sessions only). */
  private entryOf(row: Pick<SessionMeta, 'study' | 'manifest_sha256'>): StudyEntry {
    return this.registry.forSession(row.study, row.manifest_sha256) ?? this.study(row.study);
  }

  async create(body: unknown, userAgent?: string): Promise<CreateResult> {
    const req = parseCreateRequest(body);
    const entry = this.study(req.study);
    const { study } = entry;
    const rawId = 'PROLIFIC_PID' in req ? req.PROLIFIC_PID : req.participant;
    const participant = this.pseudonym(study.id, rawId);
    const now = this.now();
    const nowIso = now.toISOString();
    const mode = study.mode as Mode;
    const resumeHash = req.resume !== undefined ? createHash('sha256').update(req.resume).digest('hex') : null;

    const newRow = (): { row: SessionRow; tasks: Task[] } => {
      const seed = randomInt(0, 2 ** 31);
      const load = mode === 'preview' ? emptyLoad() : this.loads.load(study.id, mode, nowIso);
      const { conditionKey, tasks } = assignTasks(entry.plan, seed, load);
      const id = randomUUID();
      return {
        tasks,
        row: {
          id,
          study: study.id,
          participant,
          token_hash: sha256(this.token(id)),
          mode,
          seed,
          condition: conditionKey,
          tasks: JSON.stringify(tasks),
          n_trials: tasks.length,
          status: 'active',
          outcome: null,
          code: null,
          created_at: nowIso,
          lease_expires_at: new Date(now.getTime() + study.design.time_limit_minutes * 60_000).toISOString(),
          finished_at: null,
          user_agent: userAgent ? userAgent.slice(0, 512) : null,
          manifest_sha256: entry.manifestSha256,
        },
      };
    };

    if (mode === 'preview') {
      this.preview.sweep(now.getTime());
      let s = this.preview.byWho(study.id, participant);
      // A finished preview session is forgotten, so the experimenter can go through it again.
      if (s && s.row.status === 'finished') {
        this.preview.delete(s.row.id);
        s = undefined;
      }
      if (s && !this.mayResume(req, s.row.id, s)) throw resumeRefused();
      const created = !s;
      if (!s) {
        const { row, tasks } = newRow();
        const prolificSession = 'PROLIFIC_PID' in req ? (req.SESSION_ID ?? null) : null;
        s = { row, tasks, prolificSession, resumeHash, answers: new Map(), expires: now.getTime() + study.design.time_limit_minutes * 60_000 };
        this.preview.add(s);
      }
      const skipped = hasPractice(s.tasks) ? previewPractice(s, criterionOf(study)).skipped : undefined;
      return { status: created ? 201 : 200, body: this.response(this.entryOf(s.row), s.row.id, s.tasks, [...s.answers.keys()], skipped) };
    }

    // Pilot and live. A participant who is back resumes their session (or is told they finished),
    // if the request proves to hold it; any other claim of the id is refused without token or code.
    const resume = (existing: SessionRow): CreateResult => {
      const bound = this.db.identity(participant);
      if (!this.mayResume(req, existing.id, bound && { prolificSession: bound.prolific_session_id, resumeHash: bound.resume_hash })) throw resumeRefused();
      if (existing.status === 'finished') {
        const redirect = redirectFor(study, existing.outcome as Outcome, existing.code);
        throw new HttpError(409, 'already completed', { code: existing.code, redirect });
      }
      const tasks = this.db.tasks(existing.id)!;
      const skipped = hasPractice(tasks) ? this.db.practiceOf(existing.id, tasks, criterionOf(study)).skipped : undefined;
      return { status: 200, body: this.response(this.entryOf(existing), existing.id, tasks, this.db.answeredSeqs(existing.id), skipped) };
    };
    const existing = this.db.sessionByParticipant(study.id, participant);
    if (existing) return resume(existing);
    // A new one: assigned against the in-memory load, which counts it at once (so that the
    // sessions created before this one commits see it), then written with the next group commit
    // — unless a request for the same participant got there first, whose session is then resumed.
    const { row, tasks } = newRow();
    this.loads.created(study.id, mode, row.id, row.condition, row.lease_expires_at, tasks);
    const identity: IdentityRow = {
      participant,
      study: study.id,
      prolific_pid: 'PROLIFIC_PID' in req ? req.PROLIFIC_PID : null,
      prolific_study_id: 'PROLIFIC_PID' in req ? (req.STUDY_ID ?? null) : null,
      prolific_session_id: 'PROLIFIC_PID' in req ? (req.SESSION_ID ?? null) : null,
      external_id: 'participant' in req ? req.participant : null,
      created_at: nowIso,
      resume_hash: resumeHash,
    };
    let inserted: boolean;
    try {
      inserted = await this.db.createSession(row, identity);
    } catch (e) {
      this.loads.discard(study.id, mode, row.id);
      throw e;
    }
    if (!inserted) {
      this.loads.discard(study.id, mode, row.id);
      return resume(this.db.sessionByParticipant(study.id, participant)!);
    }
    return { status: 201, body: this.response(entry, row.id, tasks, []) };
  }

  private response(entry: StudyEntry, sessionId: string, tasks: Task[], answered: number[], skipped?: Set<number>): CreateSessionResponse {
    const done = new Set(answered);
    let resumeAt = tasks.length;
    for (const t of tasks) {
      if (!done.has(t.seq) && !skipped?.has(t.seq)) {
        resumeAt = t.seq;
        break;
      }
    }
    return {
      session: sessionId,
      token: this.token(sessionId),
      trials: taskTrials(entry, tasks),
      resume_at: resumeAt,
      recorded: [...done].sort((a, b) => a - b),
      example: exampleOf(entry, tasks),
      config: clientConfig(entry.study),
      unsynced_code: unsyncedCode(entry.study),
      resume_secret: this.resumeSecret(sessionId),
    };
  }

  /**
   * The session a bearer token opens, or 401 — the same 401 whether or not the session exists.
   * With `cached`, the session's row may come from memory: for answers, which read only what never
   * changes (id, study, participant, token, mode, task list). A session deleted meanwhile (by
   * `legible withdraw`, another process) then fails at the write, as a 401 too.
   */
  authenticate(sessionId: string, authorization: string | undefined, opts: { cached?: boolean } = {}): Authenticated {
    const m = /^Bearer ([A-Za-z0-9_-]{1,200})$/.exec(authorization?.trim() ?? '');
    const preview = this.preview.get(sessionId);
    let row: SessionMeta | undefined = preview?.row;
    if (!row && sessionId.length <= 64) {
      row = opts.cached ? this.metaCache.get(sessionId) : undefined;
      if (!row) {
        row = this.db.sessionMeta(sessionId);
        if (row) {
          if (this.metaCache.size >= 20_000) this.metaCache.delete(this.metaCache.keys().next().value!);
          this.metaCache.set(sessionId, row);
        }
      }
    }
    const expected = Buffer.from(row?.token_hash ?? this.nobody, 'hex');
    const given = Buffer.from(sha256(m?.[1] ?? ''), 'hex');
    if (!timingSafeEqual(expected, given) || !row || !m) throw unauthorized();
    const tasks = preview ? preview.tasks : this.db.tasks(row.id);
    if (!tasks) throw unauthorized(); // deleted in between (withdrawal)
    return { row, tasks, preview };
  }

  private task(row: SessionMeta, tasks: Task[], seqText: string): Task {
    const seq = /^(0|[1-9]\d{0,5})$/.test(seqText) ? Number(seqText) : NaN;
    if (!(seq >= 0 && seq < row.n_trials)) {
      throw new HttpError(404, `no trial ${JSON.stringify(seqText)} in this session: seq is a whole number from 0 to ${row.n_trials - 1}`);
    }
    return tasks[seq];
  }

  async answer(sessionId: string, authorization: string | undefined, seqText: string, body: unknown): Promise<TrialAck> {
    return this.answerAs(this.authenticate(sessionId, authorization), seqText, body);
  }

  /** Record one answer for an authenticated session (see authenticate). */
  async answerAs(auth: Authenticated, seqText: string, body: unknown): Promise<TrialAck> {
    const { row, tasks, preview } = auth;
    const task = this.task(row, tasks, seqText);
    const answer = parseTrialAnswer(body);
    const hash = sha256(canonicalJson(answer));
    const correct = answer.query === task.answer;
    const recordedAt = this.now().toISOString();
    const isPractice = task.kind === 'practice';
    const criterion = isPractice ? criterionOf(this.entryOf(row).study) : null;
    const ack = (at: string, isCorrect: boolean, practice?: PracticeState): TrialAck => {
      if (!isPractice) return { seq: task.seq, recorded_at: at };
      const round = practice && criterion !== null ? roundSummaryFor(practice, task.seq) : undefined;
      return { seq: task.seq, recorded_at: at, feedback: round ? { correct: isCorrect, round } : { correct: isCorrect } };
    };
    const conflict = (at: string) =>
      new HttpError(409, `trial ${task.seq} is already recorded with a different answer; answers cannot be changed`, { detail: { seq: task.seq, recorded_at: at } });
    const practiceOver = (state: PracticeState) =>
      new HttpError(409, `practice trial ${task.seq} is not needed: practice ended after round ${state.roundsUsed - 1}; go on with trial ${firstRequired(tasks, state.skipped, task.seq)}`, {
        detail: { seq: task.seq, practice_over: true },
      });

    if (preview) {
      const prior = preview.answers.get(task.seq);
      if (prior) {
        if (prior.hash !== hash) throw conflict(prior.ack.recorded_at);
        return prior.ack;
      }
      let state: PracticeState | undefined;
      if (isPractice) {
        const before = previewPractice(preview, criterion);
        if (before.skipped.has(task.seq)) throw practiceOver(before);
        preview.answers.set(task.seq, { hash, ack: { seq: task.seq, recorded_at: recordedAt }, correct });
        state = previewPractice(preview, criterion);
      }
      const a = ack(recordedAt, correct, state);
      preview.answers.set(task.seq, { hash, ack: a, correct });
      return a;
    }

    const trialRow: TrialRow = {
      session_id: row.id,
      seq: task.seq,
      study: row.study,
      participant: row.participant,
      trial_id: task.trial,
      feature: task.feature,
      layer: task.layer,
      basis: task.basis,
      feature_index: task.feature_index,
      kind: task.kind,
      reference_kind: task.reference_kind,
      query_images: JSON.stringify(task.query_images),
      answer: task.answer,
      choice: answer.query,
      confidence: answer.confidence,
      correct: correct ? 1 : 0,
      rt_ms: answer.rt_ms,
      query_order: answer.query_order ? JSON.stringify(answer.query_order) : null,
      input: answer.input ?? null,
      onset_ms: answer.onset_ms ?? null,
      response_ms: answer.response_ms ?? null,
      client_time: answer.client_time ?? null,
      server_time: recordedAt,
      window_w: answer.window?.[0] ?? null,
      window_h: answer.window?.[1] ?? null,
      screen_w: answer.screen?.[0] ?? null,
      screen_h: answer.screen?.[1] ?? null,
      dpr: answer.dpr ?? null,
      plugin_version: answer.plugin_version ?? null,
      payload_hash: hash,
      mode: row.mode,
      practice_round: isPractice ? (task.round ?? 0) : null,
    };
    let result;
    try {
      result = await this.db.recordTrial(trialRow, isPractice ? { tasks, criterion } : undefined);
    } catch (e) {
      // The session was deleted (withdrawn) between authentication and the write.
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw unauthorized();
      throw e;
    }
    if (result.inserted) {
      if (task.kind === 'main') this.loads.recorded(row.study, row.mode, row.id, task);
      return ack(recordedAt, correct, result.practice);
    }
    if ('refused' in result) throw practiceOver(result.practice);
    const { prior } = result;
    if (prior.payload_hash !== hash) throw conflict(prior.server_time);
    return ack(prior.server_time, prior.correct === 1, result.practice);
  }

  /** Seqs still to answer: neither recorded nor in a practice round that is no longer needed. */
  missing(row: SessionMeta, tasks: Task[], preview?: PreviewSession): { missing: number[]; practice?: PracticeState } {
    const answered = new Set(preview ? preview.answers.keys() : this.db.answeredSeqs(row.id));
    let practice: PracticeState | undefined;
    if (hasPractice(tasks)) {
      const criterion = criterionOf(this.entryOf(row).study);
      practice = preview ? previewPractice(preview, criterion) : this.db.practiceOf(row.id, tasks, criterion);
    }
    const missing = tasks.filter((t) => !answered.has(t.seq) && !practice?.skipped.has(t.seq)).map((t) => t.seq);
    return { missing, practice };
  }

  /**
   * Store a batch of client events (preview: validated, then dropped). The same event sent again
   * is stored once.
   */
  async events(auth: Authenticated, body: unknown): Promise<void> {
    const req = parseEvents(body);
    const details = req.events.map((e) => (e.detail === undefined ? null : JSON.stringify(e.detail)));
    details.forEach((d, i) => {
      const bytes = d === null ? 0 : Buffer.byteLength(d, 'utf8');
      if (bytes > MAX_EVENT_DETAIL_BYTES) {
        throw new HttpError(413, `events[${i}].detail is ${bytes} bytes of JSON, the most is ${MAX_EVENT_DETAIL_BYTES} per event; nothing of this request was stored`, {
          detail: { event: i, bytes, limit: MAX_EVENT_DETAIL_BYTES },
        });
      }
    });
    if (auth.preview) return;
    const serverTime = this.now().toISOString();
    const rows: EventRow[] = req.events.map((e, i) => ({
      session_id: auth.row.id,
      study: auth.row.study,
      seq: e.seq ?? null,
      type: e.type,
      at: e.at,
      detail: details[i],
      server_time: serverTime,
      mode: auth.row.mode,
      hash: sha256(canonicalJson(e)),
    }));
    try {
      await this.db.recordEvents(rows);
    } catch (e) {
      if (e instanceof TooManyEvents) throw new HttpError(409, `${e.message}; further events are not stored`, { detail: { stored: e.stored } });
      if (e instanceof TooManyEventBytes) {
        throw new HttpError(413, `${e.message}; nothing of this request was stored`, { detail: { stored: e.stored, bytes: e.bytes, limit: MAX_EVENT_DETAIL_BYTES_PER_SESSION } });
      }
      if ((e as { code?: string }).code === 'SQLITE_CONSTRAINT_FOREIGNKEY') throw unauthorized();
      throw e;
    }
  }

  finish(sessionId: string, authorization: string | undefined): FinishResponse {
    return this.finishAs(this.authenticate(sessionId, authorization));
  }

  finishAs(auth: Authenticated): FinishResponse {
    const { row, tasks, preview } = auth;
    const entry = this.entryOf(row);
    const { study } = entry;
    const stored = (r: SessionMeta): FinishResponse => {
      const outcome = r.outcome as FinishResponse['outcome'];
      return { outcome, code: r.code, redirect: redirectFor(study, outcome, r.code) };
    };
    if (row.status === 'finished' && row.outcome) return stored(row);

    const { missing, practice } = this.missing(row, tasks, preview);
    if (missing.length) {
      throw new HttpError(409, `${missing.length} trial${missing.length === 1 ? '' : 's'} not yet recorded: send them with PUT /api/sessions/:id/trials/:seq, then finish`, { missing });
    }
    let score: { n: number; correct: number };
    if (preview) {
      const catches = tasks.filter((t) => t.kind === 'catch');
      score = { n: catches.length, correct: catches.filter((t) => preview.answers.get(t.seq)!.correct).length };
    } else {
      score = this.db.catchScore(row.id);
    }
    const min = study.exclusions.catch_accuracy_min;
    const failed = min !== undefined && score.n > 0 && score.correct / score.n < min && study.recruitment.failed_checks !== undefined;
    const outcome: FinishResponse['outcome'] = failed ? 'failed_checks' : 'completed';
    const { code, redirect } = completion(study, outcome);
    const finishedAt = this.now().toISOString();
    if (preview) {
      Object.assign(preview.row, { status: 'finished', outcome, code, finished_at: finishedAt });
      return { outcome, code, redirect };
    }
    // Two finishes racing: the first one's outcome stands.
    const first = this.db.write(() => {
      if (practice?.over && row.practice_rounds == null) this.db.setPractice(row.id, practice.passed, practice.roundsUsed);
      return this.db.finishSession(row.id, outcome, code, finishedAt);
    });
    if (!first) {
      const now = this.db.sessionMeta(row.id);
      if (!now) throw unauthorized(); // withdrawn meanwhile
      return stored(now);
    }
    this.loads.finished(row.study, row.mode, row.id, row.condition);
    return { outcome, code, redirect };
  }
}
