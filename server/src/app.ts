// The HTTP server: routes (documented in server/API.md, the public contract), static files,
// security headers, JSON errors, and a server that shuts down without dropping a write.
import { existsSync } from 'node:fs';
import type { Server } from 'node:http';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type ErrorRequestHandler, type Express, type Request, type Response } from 'express';
import helmet from 'helmet';
import { pino, type Logger } from 'pino';
import { LegibleError, type StudyInfo } from '@legible/studies';
import { openDatabase, type LegibleDb } from './db.ts';
import { loadRegistry, type Builder, type Registry } from './registry.ts';
import { completion, HttpError, SessionService } from './sessions.ts';

/** The repository's client/dist (built by `npm run build -w client`). */
export const defaultClientDir = (): string => resolve(dirname(fileURLToPath(import.meta.url)), '../../client/dist');

export const BODY_LIMIT = '16kb';

export interface AppOptions {
  db: LegibleDb;
  registry: Registry;
  /** Folder with the built client (index.html, assets/). Default: client/dist. */
  clientDir?: string;
  log?: Logger;
  /** The clock (injected in tests). */
  now?: () => Date;
}

export function createApp(opts: AppOptions): Express {
  const { registry } = opts;
  const log = opts.log ?? pino({ level: 'silent' });
  const clientDir = resolve(opts.clientDir ?? defaultClientDir());
  const sessions = new SessionService({ db: opts.db, registry, now: opts.now });
  const app = express();

  app.set('trust proxy', false);
  app.set('etag', false);
  app.use(
    helmet({
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
    }),
  );

  // Request log: route pattern, status, duration — no URLs, ids, IPs or bodies.
  app.use((req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const route = (req.route?.path as string | undefined) ?? (req.path.startsWith('/stimuli/') ? '/stimuli' : req.path.startsWith('/assets/') ? '/assets' : 'unmatched');
      const level = res.statusCode >= 500 ? 'error' : route === '/stimuli' || route === '/assets' ? 'debug' : 'info';
      log[level]({ method: req.method, route, status: res.statusCode, ms: Math.round(ms * 10) / 10 }, 'request');
    });
    next();
  });

  const api = express.Router();
  api.use(express.json({ limit: BODY_LIMIT, strict: true, type: ['application/json', 'application/*+json'] }));
  api.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });

  api.get('/studies/:id', (req, res) => {
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
    };
    res.json(info);
  });

  api.post('/sessions', (req, res) => {
    const result = sessions.create(req.body, req.get('user-agent'));
    res.status(result.status).json(result.body);
  });

  api.put('/sessions/:id/trials/:seq', async (req, res) => {
    res.json(await sessions.answer(req.params.id, req.get('authorization'), req.params.seq, req.body));
  });

  api.post('/sessions/:id/finish', (req, res) => {
    res.json(sessions.finish(req.params.id, req.get('authorization')));
  });

  api.use((req, _res, next) => next(new HttpError(404, `no API route ${req.method} ${req.baseUrl}${req.path}: see server/API.md`)));
  app.use('/api', api);

  // Stimuli: only the files a trial of a served study shows (never manifest.json, which holds the
  // answer keys), so there is nothing to list and no path to traverse.
  app.get('/stimuli/:study/*path', (req, res, next) => {
    const entry = registry.get(req.params.study);
    const rel = ([] as string[]).concat(req.params.path as string | string[]).join('/');
    if (!entry || !entry.assets.has(rel)) return next(new HttpError(404, 'no such stimulus'));
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
    let status = 500;
    let body: Record<string, unknown> = { error: 'internal server error; the request was not completed, try again' };
    if (err instanceof HttpError) {
      status = err.status;
      body = err.body();
    } else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) {
      status = err.status;
      body = { error: clientErrorMessage(err) };
    } else {
      log.error({ err: { message: err?.message, name: err?.name, stack: err?.stack }, method: req.method, route: req.route?.path }, 'request failed');
    }
    if (res.headersSent) return;
    res.status(status).set('Cache-Control', 'no-store').json(body);
  };
  app.use(onError);
  return app;
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
  now?: () => Date;
  /** Shut down on SIGINT and SIGTERM (default true). */
  signals?: boolean;
}

export interface RunningServer {
  server: Server;
  db: LegibleDb;
  registry: Registry;
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
  const { registry } = await loadRegistry({ studiesDir: opts.studiesDir, studies: opts.studies, log: opts.progress, build: opts.build });
  const db = openDatabase(opts.db);
  let server: Server;
  try {
    const app = createApp({ db, registry, clientDir: opts.clientDir, log, now: opts.now });
    server = await new Promise<Server>((resolveListen, reject) => {
      const s = app.listen(opts.port, host, (err?: Error) => (err ? reject(err) : resolveListen(s)));
      s.once('error', reject);
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
  const shownHost = host === '0.0.0.0' || host === '::' ? 'localhost' : host.includes(':') ? `[${host}]` : host;
  return { server, db, registry, port, host, url: `http://${shownHost}:${port}`, close, closed };
}
