// The explorer's admin route (/admin/explorer/<study>/…): it shows the answer keys, so no token, a
// wrong token and a participant's session token all get 401 for every file; an admin gets the files
// by bearer header or through the sign-in form's cookie, cross-origin isolated (COOP/COEP).
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { CreateSessionResponse } from '@legible/studies';
import { makeFixture, type Fixture } from './fixture.ts';
import { bearer, createSession, serveFixture, type TestServer } from './http.ts';

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

function get(base: string, path: string, headers: Record<string, string> = {}, method = 'GET', body?: string): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, base), { method, headers: { ...headers, ...(body ? { 'content-type': 'application/x-www-form-urlencoded', 'content-length': String(Buffer.byteLength(body)) } : {}) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('the explorer route', () => {
  let fx: Fixture;
  let srv: TestServer;
  let token: string;
  let participantToken: string;
  const files = ['explorer/', 'explorer/data/explorer.json', 'explorer/img/a.webp', 'img/grid.png'];

  before(async () => {
    fx = makeFixture({ id: 'fixture' });
    const build = join(fx.studyDir, 'build');
    mkdirSync(join(build, 'explorer/data'), { recursive: true });
    mkdirSync(join(build, 'explorer/img'), { recursive: true });
    writeFileSync(join(build, 'explorer/index.html'), '<!doctype html><title>explorer</title><p>EXPLORER PAGE</p>');
    writeFileSync(join(build, 'explorer/data/explorer.json'), JSON.stringify({ answer_keys: 'SECRET' }));
    writeFileSync(join(build, 'explorer/img/a.webp'), 'not really an image');
    writeFileSync(join(build, 'img/grid.png'), 'grid');
    srv = await serveFixture(fx);
    token = srv.db.createAdminToken('explorer test').token;
    const s = (await createSession(srv.url, 'fixture', { participant: 'p-explorer' })).body as CreateSessionResponse;
    participantToken = s.token;
  });
  after(async () => {
    await srv?.close();
    fx?.cleanup();
  });

  test('no token, a wrong token or a participant\'s session token: 401 for every file, and no content', async () => {
    for (const f of files) {
      for (const headers of [{} as Record<string, string>, bearer('lgb_' + 'x'.repeat(43)), bearer(participantToken), { cookie: `legible_explorer=${participantToken}` }]) {
        const r = await get(srv.url, `/admin/explorer/fixture/${f}`, headers);
        assert.equal(r.status, 401, `${f} with ${JSON.stringify(headers)}`);
        assert.ok(!r.text.includes('SECRET') && !r.text.includes('EXPLORER PAGE'), 'nothing of the explorer leaks');
      }
    }
    // A browser asking for the page gets the sign-in form.
    const page = await get(srv.url, '/admin/explorer/fixture/explorer/', { accept: 'text/html' });
    assert.equal(page.status, 401);
    assert.match(page.text, /<form method="post" action="\/admin\/explorer\/fixture\/sign-in">/);
    // The participant's own routes are no way in either.
    assert.equal((await get(srv.url, '/stimuli/fixture/explorer/data/explorer.json')).status, 404);
  });

  test('an admin token opens every file, cross-origin isolated, with wasm allowed by the CSP', async () => {
    for (const f of files) {
      const r = await get(srv.url, `/admin/explorer/fixture/${f}`, bearer(token));
      assert.equal(r.status, 200, f);
      assert.equal(r.headers['cross-origin-opener-policy'], 'same-origin');
      assert.equal(r.headers['cross-origin-embedder-policy'], 'require-corp');
      assert.match(String(r.headers['content-security-policy']), /script-src 'self' 'wasm-unsafe-eval'/);
      assert.equal(r.headers['cache-control'], 'no-store');
    }
    assert.match((await get(srv.url, '/admin/explorer/fixture/explorer/', bearer(token))).text, /EXPLORER PAGE/);
    // Only the explorer's folders: not the manifest, not the activation cache.
    assert.equal((await get(srv.url, '/admin/explorer/fixture/manifest.json', bearer(token))).status, 404);
    assert.equal((await get(srv.url, '/admin/explorer/fixture/explorer/../manifest.json', bearer(token))).status, 404);
    assert.equal((await get(srv.url, '/admin/explorer/nosuch/explorer/', bearer(token))).status, 404);
  });

  test('the sign-in form sets an HttpOnly cookie that opens the files; a wrong token sets none', async () => {
    const bad = await get(srv.url, '/admin/explorer/fixture/sign-in', {}, 'POST', `token=${encodeURIComponent(participantToken)}`);
    assert.equal(bad.status, 401);
    assert.equal(bad.headers['set-cookie'], undefined);
    const ok = await get(srv.url, '/admin/explorer/fixture/sign-in', {}, 'POST', `token=${encodeURIComponent(token)}`);
    assert.equal(ok.status, 303);
    assert.equal(ok.headers.location, '/admin/explorer/fixture/explorer/');
    const cookie = String(ok.headers['set-cookie']);
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Path=\/admin\/explorer\//);
    const r = await get(srv.url, '/admin/explorer/fixture/explorer/data/explorer.json', { cookie: cookie.split(';')[0] });
    assert.equal(r.status, 200);
    assert.match(r.text, /SECRET/);
    const audit = srv.db.sqlite.prepare("SELECT action, study FROM audit WHERE action = 'explorer.open'").all();
    assert.deepEqual(audit, [{ action: 'explorer.open', study: 'fixture' }]);
  });
});
