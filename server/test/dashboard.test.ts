// The admin dashboard in a real browser (Chromium through playwright-core): it asks for a token,
// keeps it in sessionStorage, shows the progress the admin API reports, and runs under the
// server's CSP without a violation — with a study title that tries to inject HTML.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { test } from 'node:test';
import { chromium } from 'playwright-core';
import type { CreateSessionResponse } from '@legible/studies';
import type { Task } from '../src/assign.ts';
import { makeFixture } from './fixture.ts';
import { answer, bearer, call, createSession, serveFixture } from './http.ts';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

test('the dashboard: token prompt, sessionStorage, progress, participants, audit; no CSP violation, no injected HTML', { skip: !existsSync(CHROMIUM) && `no Chromium at ${CHROMIUM}` }, async () => {
  const fx = makeFixture({ title: '<img src=x onerror="window.__xss=1">Study', recruitment: ['  platform: generic', '  completed:', '    code: OK', '  reward:', '    amount: 1', '    currency: USD'] });
  const srv = await serveFixture(fx);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  try {
    for (let i = 0; i < 3; i++) {
      const s = (await createSession(srv.url, 'fixture', { participant: `dash-${i}` })).body as CreateSessionResponse;
      for (const t of JSON.parse(srv.db.sessionById(s.session)!.tasks) as Task[]) {
        await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(t.answer), bearer(s.token));
      }
      srv.clock.ms += 12 * 60_000;
      if (i < 2) await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      else await call(srv.url, 'POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'unsynced_end', at: 1 }] }, bearer(s.token));
    }
    const { token } = srv.db.createAdminToken('browser');
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || /Content Security Policy|Refused/.test(m.text())) problems.push(m.text());
    });
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(`${srv.url}/admin`);
    await page.waitForSelector('#login:not([hidden])');
    // A wrong token is refused, with the form still there.
    await page.fill('#token', 'lgb_wrongwrongwrongwrongwrongwrongwrongwrongwro');
    await page.click('#login button[type=submit]');
    await page.waitForFunction(() => document.getElementById('login-error')!.textContent!.includes('not accepted'));
    // The right one opens the dashboard and stays in this tab's sessionStorage.
    await page.fill('#token', token);
    await page.click('#login button[type=submit]');
    await page.waitForSelector('.study');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('legible-admin-token')), token);
    const text = await page.textContent('.study');
    assert.match(text!, /<img src=x onerror="window.__xss=1">Study/, 'the title is shown as text');
    assert.equal(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss), undefined, 'no injected script ran');
    assert.equal(await page.locator('.study img').count(), 0);
    assert.match(text!, /3sessions started/);
    assert.match(text!, /2completed/);
    assert.match(text!, /12\.0 minmedian completion/);
    assert.match(text!, /5\.00 USD\/h/, '1 USD per 12 minutes');
    assert.match(text!, /Below Prolific's minimum of 8 USD\/h/);
    assert.match(text!, /Progress per condition \(target 30 responses per feature × condition\)/);
    await page.click('button:has-text("Participants")');
    await page.waitForSelector('text=Participants (3)');
    assert.equal(await page.locator('.study table').last().locator('tbody tr').count(), 3);
    assert.match((await page.locator('.study table').last().textContent())!, /finished/);
    assert.match((await page.locator('.study table').last().textContent())!, /ended unsynced.*yes: 8 of 8 stored, review/, 'who ended unsynced, with the trials the server holds');
    assert.ok((await page.locator('#audit tbody tr').count()) >= 1);
    // A reload keeps the token (same tab); "Forget token" drops it.
    await page.reload();
    await page.waitForSelector('.study');
    await page.click('#forget');
    await page.waitForSelector('#login:not([hidden])');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('legible-admin-token')), null);
    assert.deepEqual(problems.filter((p) => !/401/.test(p)), []);
  } finally {
    await browser.close();
    await srv.close();
    fx.cleanup();
  }
});
