// How a session can end other than by completing normally, in Chromium against the real server:
// the browser check turns away a small window (after a resize prompt) and phones and tablets with
// the study's incompatible-device code; a window enlarged during the prompt goes on; and a
// session whose last answer cannot be saved ends, after the wait, with the unsynced code and no
// redirect — then, when the answer gets through, the session is flagged (unsynced_end) and
// finished, and the page offers the redirect.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { devices, type Browser } from 'playwright-core';
import type { RunningServer } from '@legible/server';
import { startRig, type Rig } from './helpers.ts';
import { walk } from './participant.ts';

let srv: RunningServer;
let browser: Browser;
const PROLIFIC = 'https://app.prolific.com/submissions/complete';

let rig: Rig;

before(async () => {
  rig = await startRig({
    id: 'ends',
    mode: 'pilot',
    trialsPerParticipant: 3,
    catchTrials: 0,
    practiceTrials: 1,
    recruitment: [
      '  platform: prolific',
      '  completed:',
      '    code: END-DONE',
      '  incompatible_device:',
      '    code: END-DEVICE',
      '  unsynced:',
      '    code: END-UNSYNCED',
    ],
  });
  ({ srv, browser } = rig);
});

after(() => rig?.close());

const sessions = () => srv.db.sessionsOfStudy('ends').length;

test('a window smaller than 1000×600 gets a resize prompt; "I cannot make it larger" ends with the incompatible-device code', async () => {
  const before = sessions();
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  try {
    await page.goto(`${srv.url}/?study=ends&PROLIFIC_PID=small-${Date.now()}`);
    const prompt = await page.waitForSelector('[data-page="resize"]');
    assert.match((await prompt.textContent())!, /at least 1000 × 600 pixels/);
    assert.match((await prompt.textContent())!, /now 900 × 560/);
    await page.click('[data-choice-name="cannot-resize"]');
    const end = await page.waitForSelector('[data-page="incompatible"]');
    const text = (await end.textContent())!;
    assert.match(text, /This window is too small/);
    assert.match(text, /return your submission on Prolific/);
    assert.equal(await page.textContent('[data-completion-code]'), 'END-DEVICE');
    assert.equal(await page.getAttribute('a[data-redirect]', 'href'), `${PROLIFIC}?cc=END-DEVICE`);
    assert.ok(await page.$('[data-choice-name="recheck"]'), 'a way to check again after enlarging');
    assert.equal(await page.$('[data-page="consent"]'), null);
  } finally {
    await page.close();
  }
  assert.equal(sessions(), before, 'no session');
});

test('enlarging the window during the prompt goes straight on to consent', async () => {
  const page = await browser.newPage({ viewport: { width: 900, height: 560 } });
  try {
    await page.goto(`${srv.url}/?study=ends&PROLIFIC_PID=grows-${Date.now()}`);
    await page.waitForSelector('[data-page="resize"]');
    await page.setViewportSize({ width: 1280, height: 720 });
    await page.waitForSelector('[data-page="consent"]', { timeout: 5000 });
  } finally {
    await page.close();
  }
});

for (const name of ['iPhone 13', 'Galaxy Tab S4 landscape', 'iPad Pro 11 landscape'] as const) {
  test(`${name}: told that the study needs a computer, with the incompatible-device code`, async () => {
    const before = sessions();
    const context = await browser.newContext({ ...devices[name] });
    const page = await context.newPage();
    try {
      await page.goto(`${srv.url}/?study=ends&PROLIFIC_PID=mobile-${Date.now()}`);
      const end = await page.waitForSelector('[data-page="incompatible"]');
      const text = (await end.textContent())!;
      assert.match(text, /This study needs a computer/);
      assert.match(text, /phone or tablet/);
      assert.equal(await page.textContent('[data-completion-code]'), 'END-DEVICE');
      assert.equal(await page.getAttribute('a[data-redirect]', 'href'), `${PROLIFIC}?cc=END-DEVICE`);
      assert.equal(await page.$('[data-page="resize"], [data-page="consent"]'), null, 'no resize prompt, no consent');
    } finally {
      await context.close();
    }
    assert.equal(sessions(), before);
  });
}

test('an answer that cannot be saved: after the wait the unsynced code and no redirect; once it gets through, the session is flagged and finished', async () => {
  const pid = `unsynced-${Date.now()}`;
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  await context.route(`${PROLIFIC}**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: 'prolific' }));
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    // The last trial (seq 3) never reaches the server.
    await page.route('**/api/sessions/*/trials/3', (route) => route.abort('failed'));
    await page.goto(`${srv.url}/?study=ends&PROLIFIC_PID=${pid}&sync_wait_s=4`);
    const run = walk(page);
    const saving = await page.waitForSelector('text=/Still saving your answers \\(1 to send\\)/', { timeout: 30_000 });
    assert.match((await saving.textContent())!, /completion code anyway/, 'the wait is explained, with a countdown');
    assert.equal((await run).end, 'unsynced');
    const text = (await page.textContent('[data-page="unsynced"]'))!;
    assert.match(text, /not all saved yet/);
    assert.equal(await page.textContent('[data-completion-code]'), 'END-UNSYNCED');
    assert.equal(await page.$('a[data-redirect]'), null, 'no redirect before the server confirms every answer');
    const [session] = srv.db.sessionsOfStudy('ends').filter((s) => srv.db.sqlite.prepare('SELECT 1 FROM identities WHERE prolific_pid = ? AND participant = ?').get(pid, s.participant));
    assert.equal(session.status, 'active');
    assert.match(text, new RegExp(session.id), 'a reference for the researcher');

    // The connection to that answer comes back: it is sent, then the unsynced_end event, then finish.
    await page.unroute('**/api/sessions/*/trials/3');
    await page.waitForSelector('text=All your answers have now reached us', { timeout: 30_000 });
    assert.equal(await page.textContent('[data-completion-code]'), 'END-DONE');
    assert.equal(await page.getAttribute('a[data-redirect]', 'href'), `${PROLIFIC}?cc=END-DONE`);
    const events = srv.db.sqlite.prepare("SELECT detail FROM events WHERE session_id = ? AND type = 'unsynced_end'").all(session.id) as { detail: string }[];
    assert.equal(events.length, 1);
    assert.deepEqual(
      { ...JSON.parse(events[0].detail), wait_ms: 0 },
      { reason: 'timeout', pending: 1, pending_seqs: '3', wait_ms: 0 },
    );
    assert.equal(srv.db.sessionMeta(session.id)?.status, 'finished');
    assert.deepEqual(srv.db.answeredSeqs(session.id).sort(), [0, 1, 2, 3]);
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
});
