// The hot route without Express: PUT /api/sessions/:id/trials/:seq, the request every answer
// makes. Express 5 spends much of the CPU of this request on routing, request/response
// decoration and body parsing, so the common shape of this one request is
// handled here on node:http directly. It does what the Express route does — the same security
// headers, rate limiters (the same express-rate-limit instances), token check, validation,
// exactly-once write, JSON bodies, errors and request log — and anything outside the common shape
// (another content type or encoding, a query string, escaped or odd path segments) is left to
// the Express route, which stays the reference: test/fastpath.test.ts sends the same requests to
// both and compares the answers.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { RequestHandler } from 'express';
import type { Logger } from 'pino';
import type { Authenticated, SessionService } from './sessions.ts';

/** The route pattern, as the Express route and the request log name it. */
export const TRIAL_ROUTE = '/sessions/:id/trials/:seq';

const PATH = /^\/api\/sessions\/([A-Za-z0-9_-]{1,64})\/trials\/(\d{1,7})$/;
const JSON_TYPE = /^application\/json(?:\s*;\s*charset=(?:"utf-8"|utf-8))?$/i;

export interface FastPathDeps {
  sessions: SessionService;
  perIp: RequestHandler;
  perSession: RequestHandler;
  /** Headers every response carries (helmet's, captured once). */
  securityHeaders: [string, string][];
  bodyLimit: number;
  log: Logger;
  logIp: boolean;
  /** The client address as Express computes req.ip (trust proxy included). */
  ipOf(req: IncomingMessage): string | undefined;
  /** Status and JSON body for an error, as the Express error handler makes them. */
  errorBody(err: unknown, route: string, method: string): { status: number; body: Record<string, unknown> };
}

/** Send a JSON body with the security headers and Cache-Control: no-store (node:http calls only). */
export function sendJson(res: ServerResponse, status: number, body: unknown, security: [string, string][]): void {
  const text = JSON.stringify(body);
  for (const [k, v] of security) res.setHeader(k, v);
  res.setHeader('Cache-Control', 'no-store');
  res.setHeader('Content-Type', 'application/json; charset=utf-8');
  res.setHeader('Content-Length', Buffer.byteLength(text));
  res.statusCode = status;
  res.end(text);
}

/** Runs an Express-style middleware on raw req/res; resolves true when it called next(). */
function runMiddleware(mw: RequestHandler, req: IncomingMessage, res: ServerResponse): Promise<boolean> {
  return new Promise((resolve, reject) => {
    let called = false;
    try {
      const out = mw(req as never, res as never, (err?: unknown) => {
        called = true;
        if (err) reject(err);
        else resolve(true);
      }) as unknown;
      if (out && typeof (out as Promise<unknown>).then === 'function') {
        (out as Promise<unknown>).then(() => {
          if (!called) resolve(false);
        }, reject);
      } else if (!called) {
        resolve(false);
      }
    } catch (e) {
      reject(e);
    }
  });
}

/** Returns a handler that takes the request (true) or leaves it to Express (false). */
export function trialFastPath(deps: FastPathDeps): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { sessions, securityHeaders: security, log } = deps;
  return (req, res) => {
    if (req.method !== 'PUT') return false;
    const url = req.url!;
    const m = PATH.exec(url);
    if (!m) return false;
    const type = req.headers['content-type'];
    if (type === undefined || !JSON_TYPE.test(type)) return false;
    const encoding = req.headers['content-encoding'];
    if (encoding !== undefined && encoding.toLowerCase() !== 'identity') return false;
    void handle(req, res, m[1], m[2]);
    return true;
  };

  async function handle(req: IncomingMessage, res: ServerResponse, id: string, seq: string): Promise<void> {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const entry: Record<string, unknown> = { method: 'PUT', route: TRIAL_ROUTE, status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      if (deps.logIp) entry.ip = deps.ipOf(req);
      log[res.statusCode >= 500 ? 'error' : 'debug'](entry, 'request');
    });
    const fail = (err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const { status, body } = deps.errorBody(err, TRIAL_ROUTE, 'PUT');
      sendJson(res, status, body, security);
    };
    try {
      // As Express: the client address for the limiters, res.locals for their key generators.
      (req as IncomingMessage & { ip?: string }).ip = deps.ipOf(req);
      (res as ServerResponse & { locals?: Record<string, unknown> }).locals = Object.create(null) as Record<string, unknown>;
      if (!(await runMiddleware(deps.perIp, req, res))) return;
      const body = await readJson(req, deps.bodyLimit);
      const auth: Authenticated = sessions.authenticate(id, req.headers.authorization, { cached: true });
      (res as ServerResponse & { locals: Record<string, unknown> }).locals.auth = auth;
      if (!(await runMiddleware(deps.perSession, req, res))) return;
      const ack = await sessions.answerAs(auth, seq, body);
      sendJson(res, 200, ack, security);
    } catch (err) {
      fail(err);
    }
  }
}

/** An error as body-parser makes them (status and type), for the shared error handler. */
class BodyError extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
  ) {
    super(type);
  }
}

/**
 * The body as express.json({strict: true}) reads it: at most `limit` bytes (413 before reading
 * when Content-Length says more), UTF-8 without a byte-order mark, empty → {}, and only an
 * object or array at the top level (400 otherwise).
 */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (declared !== undefined && !Number.isNaN(Number(declared)));
  if (!hasBody) return Promise.resolve(undefined);
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    return Promise.reject(new BodyError(413, 'entity.too.large'));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('aborted', onAborted);
      fn();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        finish(() => {
          req.resume();
          reject(new BodyError(413, 'entity.too.large'));
        });
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () =>
      finish(() => {
        let text = (chunks.length === 1 ? chunks[0] : Buffer.concat(chunks)).toString('utf8');
        if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
        if (text.length === 0) return resolve({});
        const first = /^[\x20\x09\x0a\x0d]*([^\x20\x09\x0a\x0d]|$)/.exec(text)![1];
        if (first !== '{' && first !== '[') return reject(new BodyError(400, 'entity.parse.failed'));
        try {
          resolve(JSON.parse(text));
        } catch {
          reject(new BodyError(400, 'entity.parse.failed'));
        }
      });
    const onError = () => finish(() => reject(new BodyError(400, 'request.aborted')));
    const onAborted = () => finish(() => reject(new BodyError(400, 'request.aborted')));
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('aborted', onAborted);
  });
}
