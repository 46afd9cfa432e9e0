// The feature explorer of a study (`legible explore` writes it into build/explorer/), served at
// /admin/explorer/<study>/explorer/. It shows the exemplars — the answer keys — so every file is
// behind the admin token: a bearer header, or the cookie that the sign-in form sets (a browser
// cannot add a header to the page's own image and script requests). Participants' session tokens
// are not admin tokens and get 401 like no token. The pages are cross-origin isolated (COOP/COEP),
// so onnxruntime-web runs its wasm backend multi-threaded; the CSP adds 'wasm-unsafe-eval'.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import express, { type Express, type RequestHandler, type Response } from 'express';
import type { AdminActor, AdminService } from './admin.ts';
import type { Registry } from './registry.ts';
import { HttpError } from './sessions.ts';

export const EXPLORER_COOKIE = 'legible_explorer';
/** Folders of the build the explorer shows: its own, the trial images, the feature visualizations. */
const SERVED = ['explorer', 'img', 'fv'];

export const EXPLORER_CSP =
  "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; style-src 'self'; img-src 'self' data: blob:; connect-src 'self' blob: data:; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

function cookieToken(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [k, ...v] = part.trim().split('=');
    if (k === EXPLORER_COOKIE) return decodeURIComponent(v.join('='));
  }
  return undefined;
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function signIn(res: Response, study: string, message: string): void {
  res
    .status(401)
    .type('html')
    .send(
      `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Explorer: admin sign-in</title></head><body>` +
        `<h1>Feature explorer of ${escape(study)}</h1><p>${escape(message)}</p>` +
        `<form method="post" action="/admin/explorer/${encodeURIComponent(study)}/sign-in"><label>Admin token <input name="token" type="password" autocomplete="off" required></label> <button type="submit">Open</button></form>` +
        `<p>Make a token with <code>legible admin-token create</code>.</p></body></html>\n`,
    );
}

export function mountExplorer(app: Express, deps: { admin: AdminService; registry: Registry; failures: RequestHandler }): void {
  const { admin, registry } = deps;
  const isolate: RequestHandler = (_req, res, next) => {
    res.setHeader('Content-Security-Policy', EXPLORER_CSP);
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
    res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Robots-Tag', 'noindex');
    next();
  };
  // Who asks: an admin (header or cookie) or nobody; counted by the failed-admin limiter.
  const who: RequestHandler = (req, res, next) => {
    const header = req.get('authorization');
    const cookie = cookieToken(req.get('cookie'));
    res.locals.admin = undefined;
    for (const auth of [header, cookie !== undefined ? `Bearer ${cookie}` : undefined]) {
      if (auth === undefined) continue;
      try {
        res.locals.admin = admin.authenticate(auth);
        break;
      } catch {
        // Not an admin token: try the next credential, else 401 below.
      }
    }
    next();
  };

  app.post('/admin/explorer/:study/sign-in', isolate, express.urlencoded({ extended: false, limit: '2kb' }), (req, res, next) => {
    const token = typeof req.body?.token === 'string' ? req.body.token.trim() : '';
    let actor: AdminActor;
    try {
      actor = admin.authenticate(`Bearer ${token}`);
    } catch {
      res.locals.admin = undefined;
      return deps.failures(req, res, () => signIn(res, String(req.params.study), 'That is not an admin token of this server.'));
    }
    res.locals.admin = actor;
    admin.record(actor, 'explorer.open', String(req.params.study));
    const secure = req.secure ? '; Secure' : '';
    res.setHeader('Set-Cookie', `${EXPLORER_COOKIE}=${encodeURIComponent(token)}; Path=/admin/explorer/; HttpOnly; SameSite=Strict${secure}`);
    res.redirect(303, `/admin/explorer/${encodeURIComponent(String(req.params.study))}/explorer/`);
    void next;
  });

  app.get('/admin/explorer/:study', (req, res) => res.redirect(302, `/admin/explorer/${encodeURIComponent(String(req.params.study))}/explorer/`));
  app.get('/admin/explorer/:study/*path', isolate, who, deps.failures, (req, res, next) => {
    const study = String(req.params.study);
    if (res.locals.admin === undefined) {
      if (req.accepts(['html', 'json']) === 'html') return signIn(res, study, 'The explorer shows every feature\'s exemplars (the answer keys): admin only.');
      return next(new HttpError(401, 'admin token required: send Authorization: Bearer <admin token>, or sign in at /admin/explorer/<study>/'));
    }
    const entry = registry.get(study);
    if (!entry) return next(new HttpError(404, `no study "${study}" is served here`));
    const parts = ([] as string[]).concat(req.params.path as string | string[]).filter((p) => p !== '');
    if (parts.length === 0) return res.redirect(302, `/admin/explorer/${encodeURIComponent(study)}/explorer/`);
    if (!SERVED.includes(parts[0])) return next(new HttpError(404, `not part of the explorer: ${parts.join('/')}`));
    if (parts.some((p) => p === '..' || p.startsWith('.'))) return next(new HttpError(404, 'no such file'));
    if (!existsSync(join(entry.buildDir, 'explorer', 'index.html'))) {
      return next(new HttpError(404, `the explorer of "${study}" is not built: run \`legible explore ${study}\` (with --data <database> for human answers), then reload`));
    }
    if (parts.length === 1 && parts[0] === 'explorer' && !req.path.endsWith('/')) return res.redirect(302, `/admin/explorer/${encodeURIComponent(study)}/explorer/`);
    const rel = parts.length === 1 && parts[0] === 'explorer' ? 'explorer/index.html' : parts.join('/');
    res.sendFile(rel, { root: entry.buildDir, dotfiles: 'deny', lastModified: false, etag: false }, (err) => {
      if (err && !res.headersSent) next(new HttpError(404, 'no such file'));
    });
  });
}
