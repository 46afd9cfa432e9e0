// The HTTP server: routes (documented in server/API.md, the public contract), static files,
// security headers, JSON errors, and a server that shuts down without dropping a write.
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import type { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import express, { type ErrorRequestHandler, type Express, type Request, type RequestHandler, type Response } from 'express';
import { rateLimit, type Options as RateLimitOptions } from 'express-rate-limit';
import helmet from 'helmet';
import { pino, type Logger } from 'pino';
import { defaultStudiesDir, LegibleError, type StudyInfo } from '@legible/studies';
// @legible/analysis (exports, and the statistics its index also loads) is imported when an export
// is asked for, not at start-up: it is half of the server's start-up time otherwise.
const analysis = () => importSource(() => import('@legible/analysis'));
import { AdminService, adminUnauthorized, type AdminActor } from './admin.ts';
import { mountExplorer } from './explorer.ts';
import { openDatabase, type LegibleDb } from './db.ts';
import { sendJson, TRIAL_ROUTE, trialFastPath } from './fastpath.ts';
import { importSource } from './lazy.ts';
import { loadRegistry, type Builder, type Registry } from './registry.ts';
import { dbCheckStore } from './studycheck.ts';
import { StudyWatcher } from './watch.ts';
import { completion, HttpError, SessionService, type Authenticated } from './sessions.ts';

/** The repository's client/dist (built by `npm run build -w client`). */
export const defaultClientDir = (): string => resolve(dirname(fileURLToPath(import.meta.url)), '../../client/dist');
/** The admin dashboard's static files (server/admin). */
const adminDir = resolve(dirname(fileURLToPath(import.meta.url)), '../admin');

export const BODY_LIMIT = '16kb';
/** Client events come in batches of up to 100. */
export const EVENTS_BODY_LIMIT = '64kb';

/** Request rates; 0 turns a limit off. Generous: a participant with think time never meets them. */
export interface RateLimits {
  /** Requests per minute to /api from one client address (a lab behind one NAT shares it). */
  ipPerMinute: number;
  /** Session creations (POST /api/sessions) per minute from one client address. */
  createPerMinute: number;
  /** Requests per minute for one session: answers, finish and events together. */
  sessionPerMinute: number;
  /** Failed admin authentications per 15 minutes from one client address. */
  adminFailuresPer15Min: number;
}

import { DEFAULT_RATE_LIMITS } from './limits.ts';

export { DEFAULT_RATE_LIMITS };

export interface AppOptions {
  db: LegibleDb;
  registry: Registry;
  /** Folder with the built client (index.html, assets/). Default: client/dist. */
  clientDir?: string;
  log?: Logger;
  /** The clock (injected in tests). */
  now?: () => Date;
  /** Rate limits (defaults: DEFAULT_RATE_LIMITS). */
  limits?: Partial<RateLimits>;
  /** Express's "trust proxy" setting, for a server behind a reverse proxy (e.g. "loopback" or 1); default false. */
  trustProxy?: boolean | number | string;
  /** Log client addresses (default false: no IPs in the logs). */
  logIp?: boolean;
  /** Answer PUT …/trials/:seq without Express where it can (default true; see fastpath.ts). */
  fastPath?: boolean;
  /** The study watcher: asked to look for a study id the registry does not have yet. */
  watcher?: StudyWatcher;
}

/** The Express app (every route). startServer serves createHandler's handler, which adds the fast path. */
export function createApp(opts: AppOptions): Express {
  return build(opts).app;
}

/** The request handler the server runs: the fast path for answers, Express for everything else. */
export function createHandler(opts: AppOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { app, fast } = build(opts);
  if (opts.fastPath === false) return app;
  return (req, res) => {
    if (!fast(req, res)) app(req, res);
  };
}

function build(opts: AppOptions): { app: Express; fast: (req: IncomingMessage, res: ServerResponse) => boolean } {
  const { registry, db } = opts;
  const log = opts.log ?? pino({ level: 'silent' });
  const clientDir = resolve(opts.clientDir ?? defaultClientDir());
  const sessions = new SessionService({ db, registry, now: opts.now });
  const admin = new AdminService(db, registry, opts.now);
  const limits: RateLimits = { ...DEFAULT_RATE_LIMITS, ...opts.limits };
  const app = express();

  app.set('trust proxy', opts.trustProxy ?? false);
  app.set('etag', false);
  const security = helmet({
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          'default-src': ["'self'"],
          'script-src': ["'self'"],
          // jsPsych's plugins write style="" attributes into their HTML; <style> elements stay blocked.
          'style-src': ["'self'"],
          'style-src-attr': ["'unsafe-inline'"],
          'img-src': ["'self'", 'data:'],
          'font-src': ["'self'"],
          'connect-src': ["'self'"],
          'object-src': ["'none'"],
          'base-uri': ["'none'"],
          'form-action': ["'self'"],
          'frame-ancestors': ["'none'"],
        },
      },
      crossOriginEmbedderPolicy: false,
    });
  // helmet's headers are static (no nonces): captured once, and set on every response from the
  // list (here and on the fast path) rather than worked out again per request.
  const securityHeaders: [string, string][] = [];
  security({} as Request, { setHeader: (k: string, v: unknown) => securityHeaders.push([k, String(v)]), removeHeader: () => {} } as unknown as Response, () => {});
  app.disable('x-powered-by');
  app.use((_req, res, next) => {
    for (const [k, v] of securityHeaders) res.setHeader(k, v);
    next();
  });

  // Request log: route pattern, status, duration — no URLs, ids, IPs or bodies.
  app.use((req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      // Nothing to work out when the line would not be written (the default level logs only faults).
      if (res.statusCode < 500 && !log.isLevelEnabled('debug')) return;
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const route = (req.route?.path as string | undefined) ?? (req.path.startsWith('/stimuli/') ? '/stimuli' : req.path.startsWith('/assets/') ? '/assets' : 'unmatched');
      // Every request at debug (LOG_LEVEL=debug or --log-file shows them); server faults at error.
      const level = res.statusCode >= 500 ? 'error' : 'debug';
      const entry: Record<string, unknown> = { method: req.method, route, status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      if (opts.logIp) entry.ip = req.ip;
      log[level](entry, 'request');
    });
    next();
  });

  // Health check for a container runtime, systemd or a load balancer (docs/deploy.md): outside
  // /api, so no rate limit applies; 503 when the database no longer answers.
  app.get('/healthz', (_req, res) => {
    res.set('Cache-Control', 'no-store');
    try {
      db.sqlite.prepare('SELECT 1').get();
    } catch (e) {
      res.status(503).json({ status: 'error', error: `the database does not answer: ${(e as Error).message}` });
      return;
    }
    res.json({ status: 'ok', studies: registry.ids().length });
  });

  // ─── Rate limits (express-rate-limit, in memory): 429 with Retry-After and a JSON error ──
  const limiter = (name: string, windowMs: number, limit: number, extra: Partial<RateLimitOptions> = {}): RequestHandler => {
    if (limit <= 0) return (_req, _res, next) => next();
    return rateLimit({
      windowMs,
      limit,
      standardHeaders: false,
      legacyHeaders: false,
      // No X-Forwarded-For warnings for requests that carry one while trust proxy is off. Its
      // trust-proxy check reads req.app, which the fast path's requests lack (a TypeError on the
      // first answer otherwise); docs/deploy.md says to give a hop count or address, never true.
      validate: { xForwardedForHeader: false, trustProxy: false },
      // Written with node:http calls only, so that it also answers for the fast path.
      handler: (req, res) => {
        const reset = (req as Request & { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
        const seconds = Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + windowMs) - Date.now()) / 1000));
        log.warn({ limit: name, route: routePattern((req as Request).originalUrl ?? req.url ?? '') }, 'rate limited');
        res.setHeader('Retry-After', String(seconds));
        sendJson(res, 429, { error: `too many requests (${name}): try again in ${seconds} s` }, securityHeaders);
      },
      ...extra,
    });
  };
  const perIp = limiter('per address', 60_000, limits.ipPerMinute);
  const perIpCreate = limiter('session creations per address', 60_000, limits.createPerMinute);
  const perSession = limiter('per session', 60_000, limits.sessionPerMinute, {
    keyGenerator: (_req, res) => `session:${(res.locals.auth as Authenticated).row.id}`,
  });
  // Counts only requests without a valid admin token; a valid token is never held up.
  const adminFailures = limiter('failed admin logins per address', 15 * 60_000, limits.adminFailuresPer15Min, {
    skip: (_req, res) => res.locals.admin !== undefined,
  });

  // body-parser decodes utf-16 and utf-32 too; the API takes UTF-8 only (415 otherwise, as the fast path).
  const utf8Only: RequestHandler = (req, _res, next) => {
    const charset = /;\s*charset\s*=\s*"?([^";\s]*)/i.exec(req.get('content-type') ?? '')?.[1];
    if (charset !== undefined && charset.toLowerCase() !== 'utf-8') throw new HttpError(415, 'unsupported body encoding: send UTF-8 JSON');
    next();
  };
  const json = [utf8Only, express.json({ limit: BODY_LIMIT, strict: true, type: ['application/json', 'application/*+json'] })];
  const jsonEvents = [utf8Only, express.json({ limit: EVENTS_BODY_LIMIT, strict: true, type: ['application/json', 'application/*+json'] })];
  /** The session token: the session goes to res.locals.auth, or 401. */
  const sessionAuth: RequestHandler = (req, res, next) => {
    res.locals.auth = sessions.authenticate(String(req.params.id), req.get('authorization'));
    next();
  };
  const adminAuth: RequestHandler = (req, res, next) => {
    try {
      res.locals.admin = admin.authenticate(req.get('authorization'));
    } catch {
      res.locals.admin = undefined;
    }
    next();
  };
  const adminRequired: RequestHandler = (_req, res, next) => {
    if (res.locals.admin === undefined) throw adminUnauthorized();
    next();
  };

  const api = express.Router();
  api.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  api.use(perIp);

  api.get('/studies/:id', async (req, res) => {
    // A study folder added a moment ago is looked for before the answer is 404.
    await opts.watcher?.lookFor(req.params.id);
    const entry = sessions.study(req.params.id);
    const { study } = entry;
    const info: StudyInfo = {
      id: study.id,
      title: study.title,
      mode: study.mode,
      platform: study.recruitment.platform,
      html: entry.html,
      no_consent: completion(study, 'no_consent'),
      incompatible_device: completion(study, 'incompatible_device'),
      trials: { main: study.design.trials_per_participant + study.design.catch_trials, practice: study.design.practice_trials },
      ...(db.simulated && { simulated: true }),
    };
    res.json(info);
  });

  api.post('/sessions', perIpCreate, ...json, async (req, res) => {
    const result = await sessions.create(req.body, req.get('user-agent'));
    res.status(result.status).json(result.body);
  });

  // The route the fast path (fastpath.ts) takes over for its common shape; both must answer alike.
  api.put(TRIAL_ROUTE, ...json, sessionAuth, perSession, async (req, res) => {
    res.json(await sessions.answerAs(res.locals.auth as Authenticated, req.params.seq as string, req.body));
  });

  api.post('/sessions/:id/finish', sessionAuth, perSession, (_req, res) => {
    res.json(sessions.finishAs(res.locals.auth as Authenticated));
  });

  api.post('/sessions/:id/events', ...jsonEvents, sessionAuth, perSession, async (req, res) => {
    await sessions.events(res.locals.auth as Authenticated, req.body);
    res.status(204).end();
  });

  // ─── Admin API: bearer admin tokens; every call is written to the audit log ─────────────
  const actor = (res: Response) => res.locals.admin as AdminActor;
  const adminApi = express.Router();
  adminApi.use(adminAuth, adminFailures, adminRequired);

  adminApi.get('/studies', async (_req, res) => {
    const studies = await admin.studies();
    admin.record(actor(res), 'studies.list');
    res.json({ studies, ...(db.simulated && { simulated: true }) });
  });

  adminApi.get('/studies/:id', async (req, res) => {
    const progress = await admin.progress(req.params.id, typeof req.query.mode === 'string' ? req.query.mode : undefined);
    admin.record(actor(res), 'study.progress', req.params.id);
    res.json(progress);
  });

  adminApi.get('/studies/:id/participants', async (req, res) => {
    const identities = req.query.identities === '1' || req.query.identities === 'true';
    const participants = await admin.participants(req.params.id, identities);
    admin.record(actor(res), identities ? 'participants.identities' : 'participants.list', req.params.id, { rows: participants.length });
    res.json({ participants });
  });

  adminApi.get('/studies/:id/trials.csv', async (req, res) => {
    const id = req.params.id;
    admin.checkStudy(id);
    admin.record(actor(res), 'trials.csv', id);
    res.status(200).type('text/csv; charset=utf-8').set('Content-Disposition', `attachment; filename="${id}-trials.csv"`);
    const hasSessions = db.sqlite.prepare('SELECT 1 FROM sessions WHERE study = ? LIMIT 1').get(id) !== undefined;
    const { TRIAL_COLUMNS, writeTrialsCsv } = await analysis();
    if (!hasSessions) {
      res.end(`${TRIAL_COLUMNS.map((c) => c.name).join(',')}\n`);
      return;
    }
    // The export writes into `sink`, which passes rows on to the response with its backpressure,
    // and stops the export (so that its database connection closes) if the client goes away.
    let gone = false;
    const sink = new EventEmitter() as EventEmitter & { write(chunk: string): boolean };
    sink.write = (chunk: string) => {
      if (gone) throw new ClientGone();
      const ok = res.write(chunk);
      if (!ok) res.once('drain', () => sink.emit('drain'));
      return ok;
    };
    res.on('close', () => {
      if (res.writableFinished) return;
      gone = true;
      if (sink.listenerCount('error') > 0) sink.emit('error', new ClientGone());
    });
    try {
      await writeTrialsCsv(sink as unknown as Writable, { db: db.file, study: id });
      res.end();
    } catch (err) {
      if (err instanceof ClientGone) {
        log.info({ route: '/api/admin/studies/:id/trials.csv' }, 'export stopped: the client went away');
        return;
      }
      // Headers are gone: cut the response so the download is visibly incomplete.
      log.error({ err: { message: (err as Error).message }, route: '/api/admin/studies/:id/trials.csv' }, 'export failed');
      res.destroy(err as Error);
    }
  });

  adminApi.get('/studies/:id/data-dictionary.md', async (req, res) => {
    admin.checkStudy(req.params.id);
    admin.record(actor(res), 'data_dictionary', req.params.id);
    const { dataDictionary } = await analysis();
    res.type('text/markdown; charset=utf-8').send(dataDictionary());
  });

  adminApi.get('/audit', (req, res) => {
    const limit = Math.min(1000, Math.max(1, Number.parseInt(String(req.query.limit ?? '100'), 10) || 100));
    const beforeText = req.query.before;
    if (beforeText !== undefined && (typeof beforeText !== 'string' || !/^[1-9]\d{0,15}$/.test(beforeText))) {
      throw new HttpError(400, 'before: expected an audit entry id (a whole number above 0)');
    }
    const before = beforeText === undefined ? undefined : Number(beforeText);
    admin.record(actor(res), 'audit.read');
    res.json({ entries: admin.auditLog(limit, before).map((e) => ({ ...e, detail: e.detail === null ? null : JSON.parse(e.detail) })) });
  });

  api.use('/admin', adminApi);

  api.use((req, _res, next) => next(new HttpError(404, `no API route ${req.method} ${req.baseUrl}${req.path}: see server/API.md`)));
  app.use('/api', api);

  // The feature explorer that `legible explore` writes (explorer.ts): admin only, cross-origin isolated.
  mountExplorer(app, { admin, registry, failures: adminFailures });

  // The admin dashboard: a static page and its script and style sheet (no inline scripts).
  app.get('/admin', (_req, res) => {
    res.set('Cache-Control', 'no-cache').sendFile(join(adminDir, 'index.html'));
  });
  app.use('/admin', express.static(adminDir, { index: false, dotfiles: 'deny', redirect: false, maxAge: 0, setHeaders: (res) => res.setHeader('Cache-Control', 'no-cache') }));

  // Stimuli: only the files a trial of a served study shows (never manifest.json, which holds the
  // answer keys), so there is nothing to list and no path to traverse.
  app.get('/stimuli/:study/*path', (req, res, next) => {
    const rel = ([] as string[]).concat(req.params.path as string | string[]).join('/');
    // The current version's files, or those of an earlier version that running sessions still show.
    const entry = registry.withAsset(req.params.study, rel);
    if (!entry) return next(new HttpError(404, 'no such stimulus'));
    const immutable = rel.startsWith('img/');
    res.sendFile(rel, { root: entry.buildDir, dotfiles: 'deny', immutable, maxAge: immutable ? '365d' : 0, lastModified: !immutable }, (err) => {
      if (err && !res.headersSent) next(new HttpError(404, 'no such stimulus'));
    });
  });

  // The participant page. `/?study=<id>&PROLIFIC_PID=…` keeps its query string for the client.
  const sendIndex = (req: Request, res: Response) => {
    // A link without a study, to a server with exactly one study, means that study.
    const ids = opts.registry.ids();
    const params = new URL(req.originalUrl, 'http://localhost').searchParams;
    if (!params.has('study') && ids.length === 1) {
      params.set('study', ids[0]);
      res.redirect(302, `/?${params.toString()}`);
      return;
    }
    const index = join(clientDir, 'index.html');
    if (!existsSync(index)) {
      res
        .status(503)
        .type('text/plain')
        .send(`The participant client is not built (${index} is missing). Run \`npm run build -w client\`, then reload this page.\n`);
      return;
    }
    res.set('Cache-Control', 'no-cache').sendFile(index);
  };
  app.get('/', sendIndex);
  app.use('/assets', express.static(join(clientDir, 'assets'), { index: false, immutable: true, maxAge: '365d', dotfiles: 'deny', redirect: false }));

  app.use((req, _res, next) => next(new HttpError(404, `not found: ${req.method} ${req.path}`)));

  const onError: ErrorRequestHandler = (err, req, res, _next) => {
    const { status, body } = errorBody(err, req.route?.path, req.method);
    if (res.headersSent) return;
    res.status(status).set('Cache-Control', 'no-store').json(body);
  };
  app.use(onError);

  /** Status and JSON body for an error; server faults are logged (message and stack, no request data). */
  function errorBody(err: any, route: string | undefined, method: string): { status: number; body: Record<string, unknown> } {
    if (err instanceof HttpError) return { status: err.status, body: err.body() };
    if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) return { status: err.status, body: { error: clientErrorMessage(err) } };
    log.error({ err: { message: err?.message, name: err?.name, stack: err?.stack }, method, route }, 'request failed');
    return { status: 500, body: { error: 'internal server error; the request was not completed, try again' } };
  }

  const trustProxy = opts.trustProxy ?? false;
  // req.ip as Express computes it: the socket address, or with trust proxy the X-Forwarded-For hop it trusts.
  const ipGetter = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(app.request), 'ip')?.get;
  const ipOf = (req: IncomingMessage): string | undefined =>
    trustProxy === false || !ipGetter ? req.socket.remoteAddress : (ipGetter.call({ app, headers: req.headers, socket: req.socket, connection: req.socket }) as string | undefined);
  const fast = trialFastPath({
    sessions,
    perIp,
    perSession,
    securityHeaders,
    bodyLimit: 16 * 1024,
    log,
    logIp: opts.logIp ?? false,
    ipOf,
    errorBody: (err, route, method) => errorBody(err, route, method),
  });
  return { app, fast };
}

/**
 * The route pattern of a request path, for logs: ids and seqs replaced by :id and :seq (session
 * ids are never logged; see server/API.md, Conventions).
 */
export function routePattern(url: string): string {
  const path = url.split('?')[0];
  let m: RegExpExecArray | null;
  if ((m = /^\/api\/sessions\/[^/]+\/(trials)\/[^/]*$/.exec(path))) return '/api/sessions/:id/trials/:seq';
  if ((m = /^\/api\/sessions\/[^/]+\/(finish|events)$/.exec(path))) return `/api/sessions/:id/${m[1]}`;
  if (/^\/api\/sessions\/?$/.test(path)) return '/api/sessions';
  if (/^\/api\/studies\/[^/]+$/.test(path)) return '/api/studies/:id';
  if (/^\/api\/admin(\/|$)/.test(path)) return '/api/admin';
  return path.startsWith('/api/') ? '/api (other)' : '(other)';
}

/** The admin's client closed the connection during an export. */
class ClientGone extends Error {
  constructor() {
    super('the client went away');
  }
}

function clientErrorMessage(err: { type?: string; status: number; message?: string }): string {
  switch (err.type) {
    case 'entity.parse.failed':
      return 'request body is not valid JSON: send a JSON object';
    case 'entity.too.large':
      return `request body too large: at most ${BODY_LIMIT}`;
    case 'encoding.unsupported':
    case 'charset.unsupported':
      return 'unsupported body encoding: send UTF-8 JSON';
    case 'request.aborted':
      return 'request aborted';
    default:
      return err.status === 400 ? 'bad request (malformed URL or body)' : `request failed (${err.status})`;
  }
}

// ─── A running server ──────────────────────────────────────────────────────────────────────
export interface ServerOptions {
  /** 0 picks a free port. */
  port: number;
  host?: string;
  /** The database file. */
  db: string;
  studiesDir?: string;
  /** Study ids, folders or files; default: every valid study in studiesDir. */
  studies?: string[];
  clientDir?: string;
  log?: Logger;
  /** Progress lines while loading studies (e.g. building stimuli). */
  progress?: (line: string) => void;
  build?: Builder;
  /** Re-check builds that may be stale with `build` (default: only when `build` is the pipeline's; see loadRegistry). */
  recheck?: boolean;
  now?: () => Date;
  /** Shut down on SIGINT and SIGTERM (default true). */
  signals?: boolean;
  limits?: Partial<RateLimits>;
  trustProxy?: boolean | number | string;
  logIp?: boolean;
  fastPath?: boolean;
  /**
   * Milliseconds between scans for new and changed study folders (default 2000; 0: no watching,
   * the studies are the ones loaded at start). See watch.ts.
   */
  watchMs?: number;
  /**
   * Serve simulated participants (`legible pilot`): the database is marked as simulated (refused
   * where it already holds real sessions). Without it, a database so marked is refused: simulated
   * and real participants never share one.
   */
  simulated?: boolean;
}

export interface RunningServer {
  server: Server;
  db: LegibleDb;
  registry: Registry;
  /** The study watcher (undefined with watchMs 0). */
  watcher?: StudyWatcher;
  port: number;
  host: string;
  /** http://host:port */
  url: string;
  /** Stop accepting, let in-flight requests finish, close the database. */
  close(): Promise<void>;
  /** Resolves once the server has shut down. */
  closed: Promise<void>;
}

export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const log = opts.log ?? pino({ level: 'silent' });
  const host = opts.host ?? '127.0.0.1';
  const db = openDatabase(opts.db);
  try {
    if (opts.simulated) db.markSimulated('legible pilot');
    else if (db.simulated) {
      throw new LegibleError(`${opts.db} is a database of simulated participants (legible pilot): serve real participants from another database file (--db or LEGIBLE_DB), so that the two are never mixed.`);
    }
  } catch (e) {
    db.close();
    throw e;
  }
  let server: Server;
  let registry: Registry;
  let watcher: StudyWatcher | undefined;
  try {
    // Studies checked by an earlier start and unchanged since are not re-checked (studycheck.ts).
    ({ registry } = await loadRegistry({ studiesDir: opts.studiesDir, studies: opts.studies, log: opts.progress, build: opts.build, recheck: opts.recheck, checks: dbCheckStore(db) }));
    if ((opts.watchMs ?? 2000) > 0) {
      const explicit = opts.studies && opts.studies.length > 0 ? opts.studies : undefined;
      watcher = new StudyWatcher({ registry, studiesDir: opts.studiesDir ?? defaultStudiesDir(), studies: explicit, log, intervalMs: opts.watchMs ?? 2000 });
    }
    const handler = createHandler({
      db,
      registry,
      clientDir: opts.clientDir,
      log,
      now: opts.now,
      limits: opts.limits,
      trustProxy: opts.trustProxy,
      logIp: opts.logIp,
      fastPath: opts.fastPath,
      watcher,
    });
    server = await new Promise<Server>((resolveListen, reject) => {
      const s = createServer(handler);
      s.once('error', reject);
      s.listen(opts.port, host, () => resolveListen(s));
    });
  } catch (e) {
    db.close();
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EADDRINUSE') throw new LegibleError(`port ${opts.port} is in use: choose another with --port or PORT`);
    throw e;
  }
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;

  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const onSignal = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'shutting down');
    void close();
  };
  const close = () => {
    closing ??= (async () => {
      watcher?.stop();
      if (opts.signals !== false) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      await new Promise<void>((r) => {
        server.close(() => r());
        // Keep-alive connections close as soon as they are idle; a stuck one is cut after 10 s.
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        const force = setTimeout(() => server.closeAllConnections(), 10_000);
        server.once('close', () => {
          clearInterval(idle);
          clearTimeout(force);
        });
        server.closeIdleConnections();
      });
      db.close();
      log.info('stopped');
      resolveClosed();
    })();
    return closing;
  };
  if (opts.signals !== false) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  watcher?.start();
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return { server, db, registry, watcher, port, host, url: `http://${shownHost}:${port}`, close, closed };
}
