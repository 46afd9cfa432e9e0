// A whole session in Chromium against the real server (server/src/app.ts) with a fixture study
// (server/test/fixture.ts): consent, full screen (left and re-entered), instructions, the example,
// practice with feedback, main trials with a progress bar, a 503 and a dropped request on the
// way, one reload while an answer is still unsent (kept in IndexedDB), debrief, finish, completion
// code and redirect. Then the database must hold every trial exactly once, with the answers the
// browser gave, and the client's events. Also: the localStorage path when IndexedDB is missing,
// coming back after finishing, declining consent, and ?simulate=data-only.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { CreateSessionResponse } from '@legible/studies/contracts';
import type { RunningServer } from '@legible/server';
import { idbOutboxKeys, startRig, WITHOUT_INDEXEDDB, type Rig } from './helpers.ts';
import { bySeq, walk } from './participant.ts';

const REDIRECT = 'https://completion.example/done';

let srv: RunningServer;
let browser: Browser;

let rig: Rig;

// The real client build (client/vite.config.ts), the fixture study and the server.
before(async () => {
  rig = await startRig({
    id: 'e2e',
    mode: 'pilot',
    trialsPerParticipant: 4,
    catchTrials: 2,
    practiceTrials: 2,
    design: ['initial_wait_ms: 150'],
    recruitment: [
      '  platform: generic',
      '  completed:',
      '    code: E2E-DONE',
      `    redirect: ${REDIRECT}?cc={code}`,
      '  failed_checks:',
      '    code: E2E-CHECK',
      `    redirect: ${REDIRECT}?cc={code}`,
      '  no_consent:',
      '    code: E2E-NOCONSENT',
      `    redirect: ${REDIRECT}?cc={code}`,
    ],
  });
  ({ srv, browser } = rig);
});

after(() => rig?.close());

/**
 * The session as the server sees it: a create with the same participant and the resume secret the
 * page's browser keeps is a resume.
 */
async function sessionOf(page: Page, participant: string): Promise<CreateSessionResponse> {
  const resume = await page.evaluate((key) => localStorage.getItem(key), `legible:resume:e2e:participant:${participant}`);
  assert.ok(resume, 'the browser keeps the resume secret');
  const res = await fetch(`${srv.url}/api/sessions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ study: 'e2e', participant, resume }) });
  assert.ok(res.status === 200 || res.status === 201, `create session: ${res.status}`);
  return CreateSessionResponse.parse(await res.json());
}

interface Given {
  seq: number;
  choice: number;
  confidence: number;
}

/** Answers the trial on screen with `key`; returns what the browser answered, in task-list terms. */
async function answer(page: Page, trials: CreateSessionResponse['trials'], key: number): Promise<Given & { practice: boolean }> {
  const root = await page.waitForSelector('.f2afc[data-state="ready"]:not([data-example])', { timeout: 15_000 });
  const shown = await page.evaluate((k) => {
    const b = document.querySelector<HTMLButtonElement>(`button[data-key="${k}"]`)!;
    return { q: Number(b.dataset.query), c: Number(b.dataset.confidence), seq: Number(document.querySelector<HTMLElement>('.f2afc')!.dataset.seq), src0: document.querySelector('img[data-query="0"]')!.getAttribute('src') };
  }, key);
  const trial = trials.find((t) => t.seq === shown.seq);
  assert.ok(trial, `seq ${shown.seq} is in the task list`);
  assert.equal(trial.query_urls[0], shown.src0, 'the images on screen are that trial\'s');
  await page.keyboard.press(String(key));
  if (trial.practice) await page.waitForSelector('[data-feedback="correct"], [data-feedback="incorrect"]');
  await page.waitForFunction((el) => !el.isConnected, root, { timeout: 10_000 });
  return { seq: trial.seq, choice: shown.q, confidence: shown.c, practice: trial.practice };
}

/** Consent → full screen → instructions → example → practice intro, as a new participant. */
async function begin(page: Page): Promise<void> {
  await page.waitForSelector('[data-page="consent"]');
  await page.click('[data-choice-name="agree"]');
  await page.click('[data-choice-name="fullscreen"]');
  await page.click('[data-choice-name="next"]');
  await page.click('[data-choice-name="example"]');
  const example = await page.waitForSelector('.f2afc[data-example][data-state="ready"]');
  assert.equal(await example.$$eval('.f2afc-note', (n) => n.length), 4, 'the example explains its four parts');
  await page.keyboard.press('2');
  await page.waitForSelector('[data-feedback="example"]');
  await page.click('[data-choice-name="begin"]', { timeout: 10_000 });
}

const participant = `e2e-${Date.now()}`;
let firstSession = '';
/** The first test's browser storage (its resume secret), for coming back in the same browser. */
let firstStorage: Awaited<ReturnType<BrowserContext['storageState']>> | undefined;

test('a whole session in Chromium: every trial recorded exactly once, through a reload and failed requests', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  await context.addInitScript(() => {
    (window as any).__csp = [];
    document.addEventListener('securitypolicyviolation', (e) => (window as any).__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  let redirectedTo: string | null = null;
  await context.route(`${REDIRECT}**`, (route) => {
    redirectedTo = route.request().url();
    return route.fulfill({ status: 200, contentType: 'text/html', body: '<p>back on the platform</p>' });
  });
  const given: Given[] = [];
  try {
    await page.goto(`${srv.url}/?study=e2e&participant=${participant}`);
    await begin(page);
    assert.equal(await page.evaluate(() => document.fullscreenElement !== null), true, 'in full screen after its page');
    assert.equal(await page.evaluate(() => document.documentElement.dataset.outbox), 'indexeddb');
    const { trials } = await sessionOf(page, participant);
    assert.equal(trials.length, 8);
    assert.deepEqual(
      trials.map((t) => t.practice),
      [true, true, false, false, false, false, false, false],
    );

    // Practice, with feedback, and no progress bar.
    for (const key of [1, 6]) {
      assert.equal(await page.evaluate(() => document.body.classList.contains('show-progress')), false);
      given.push(await answer(page, trials, key));
    }
    await page.click('[data-choice-name="start"]');

    // Leaving full screen offers a way back, without interrupting the trial.
    await page.waitForSelector('.f2afc[data-state="ready"]');
    await page.evaluate(() => document.exitFullscreen());
    await page.waitForSelector('.fs-bar:not([hidden])');
    await page.click('[data-choice-name="refullscreen"]');
    await page.waitForSelector('.fs-bar', { state: 'hidden' });
    assert.equal(await page.evaluate(() => document.fullscreenElement !== null), true, 'back in full screen');

    // Main trials: the progress bar shows; seq 2 goes through after one 503.
    let failedOnce = false;
    await page.route('**/api/sessions/*/trials/2', (route) => {
      if (failedOnce) return route.continue();
      failedOnce = true;
      return route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":"busy"}' });
    });
    given.push(await answer(page, trials, 3));
    assert.equal(await page.evaluate(() => document.body.classList.contains('show-progress')), true);

    // seq 3 cannot be sent at all: the banner says so and the answer waits in IndexedDB.
    await page.route('**/api/sessions/*/trials/3', (route) => route.abort('failed'));
    given.push(await answer(page, trials, 4));
    await page.waitForSelector('#banner:not([hidden])');
    assert.match((await page.textContent('#banner'))!, /Reconnecting/);
    const stored = (await idbOutboxKeys(page)).filter((k) => k.includes('|t:'));
    assert.deepEqual(stored.map((k) => k.split('|t:')[1]), ['000003'], 'the unsent answer is in IndexedDB');
    assert.equal((await sessionOf(page, participant)).resume_at, 3, 'the server has 0–2');

    // Reload while seq 3 is unsent: no consent, no instructions; "welcome back", then seq 4.
    await page.waitForSelector('.f2afc[data-state="ready"]');
    await page.reload();
    await page.waitForSelector('[data-page="fullscreen"]');
    assert.match((await page.textContent('[data-page="fullscreen"]'))!, /Welcome back/);
    await page.click('[data-choice-name="fullscreen"]');
    const resumed = await page.waitForSelector('.f2afc[data-state="ready"]', { timeout: 15_000 });
    assert.equal(await page.$('[data-page="consent"], [data-page="instructions"]'), null);
    assert.equal(await resumed.getAttribute('data-seq'), '4', 'resumes after the unsent answer');
    const width = await page.$eval('#jspsych-progressbar-inner', (e) => (e as HTMLElement).style.width);
    assert.ok(Math.abs(parseFloat(width) - (2 / 6) * 100) < 0.01, `progress counts the main trials answered before the reload: ${width}`);
    await page.unroute('**/api/sessions/*/trials/3');
    await page.waitForSelector('#banner', { state: 'hidden', timeout: 15_000 });

    for (const key of [2, 5, 1, 6]) given.push(await answer(page, trials, key));

    // Debrief, finish, completion page with the code, then the redirect.
    await page.click('[data-choice-name="finish"]');
    const code = await page.waitForSelector('[data-completion-code]', { timeout: 15_000 });
    const codeText = await code.textContent();
    assert.ok(codeText === 'E2E-DONE' || codeText === 'E2E-CHECK', codeText ?? '');
    assert.equal(await page.getAttribute('a[data-redirect]', 'href'), `${REDIRECT}?cc=${codeText}`);
    const cspBeforeRedirect = await page.evaluate(() => (window as any).__csp);
    assert.deepEqual(cspBeforeRedirect, [], 'no CSP violations');
    await page.waitForURL(`${REDIRECT}**`, { timeout: 10_000 });
    assert.equal(redirectedTo, `${REDIRECT}?cc=${codeText}`);
    firstStorage = await context.storageState();
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);

  // The database: the session finished, every seq once, with the browser's answers.
  const sessions = srv.db.sessionsOfStudy('e2e');
  assert.equal(sessions.length, 1, 'the reload resumed the same session');
  const [session] = sessions;
  firstSession = session.id;
  assert.equal(session.status, 'finished');
  const rows = srv.db.sqlite
    .prepare('SELECT seq, choice, confidence, kind, rt_ms, onset_ms, query_order, input FROM trials WHERE session_id = ? ORDER BY seq')
    .all(session.id) as { seq: number; choice: number; confidence: number; kind: string; rt_ms: number; onset_ms: number; query_order: string; input: string }[];
  assert.deepEqual(
    rows.map((r) => r.seq),
    [0, 1, 2, 3, 4, 5, 6, 7],
    'every trial exactly once',
  );
  assert.deepEqual(
    rows.map((r) => ({ seq: r.seq, choice: r.choice, confidence: r.confidence })),
    given.map(({ seq, choice, confidence }) => ({ seq, choice, confidence })).sort((a, b) => a.seq - b.seq),
    'the answers the browser gave',
  );
  for (const r of rows) {
    assert.ok(r.rt_ms >= 150, `rt ${r.rt_ms} respects initial_wait_ms`);
    assert.ok(r.onset_ms > 0);
    assert.equal(r.input, 'key');
    assert.ok(['[0,1]', '[1,0]'].includes(r.query_order));
  }
  // The client's events reached the server: the browser check (once per page load), full screen left and re-entered at seq 2.
  const events = srv.db.sqlite.prepare('SELECT type, seq, detail FROM events WHERE session_id = ? ORDER BY at, id').all(session.id) as { type: string; seq: number | null; detail: string | null }[];
  const types = events.map((e) => e.type);
  assert.equal(types.filter((t) => t === 'browser_check').length, 2, types.join(' '));
  const check = JSON.parse(events.find((e) => e.type === 'browser_check')!.detail!);
  assert.equal(check.width, 1280);
  assert.equal(check.storage, 'indexeddb');
  const exit = events.find((e) => e.type === 'fullscreen_exit');
  assert.equal(exit?.seq, 2, 'left full screen during seq 2');
  assert.ok(events.some((e) => e.type === 'fullscreen_enter' && e.seq === 2), 'and came back');
});

test('coming back after finishing shows the completion code again in the same browser, none in another; nothing new is stored', async () => {
  assert.ok(firstStorage, 'the first test kept its browser storage');
  // The same browser (its storage: the resume secret; consent is asked again once the page's
  // consent flag is gone, as no session is looked up before consent), then the server says this
  // participant has finished.
  const same = await browser.newContext({ viewport: { width: 1280, height: 720 }, storageState: firstStorage });
  try {
    const page = await same.newPage();
    await page.goto(`${srv.url}/?study=e2e&participant=${participant}`);
    await page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('legible:consent:')).forEach((k) => localStorage.removeItem(k)));
    await page.reload();
    await page.click('[data-choice-name="agree"]');
    await page.waitForSelector('text=You have already completed this study');
    assert.match((await page.textContent('[data-completion-code]'))!, /^E2E-(DONE|CHECK)$/);
    assert.match((await page.getAttribute('a[data-redirect]', 'href'))!, /^https:\/\/completion\.example\/done\?cc=E2E-/);
  } finally {
    await same.close();
  }
  // Another browser with only the participant id: told plainly, no code.
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  try {
    await page.goto(`${srv.url}/?study=e2e&participant=${participant}`);
    await page.click('[data-choice-name="agree"]');
    await page.waitForSelector('[data-page="resume-refused"]');
    const text = (await page.textContent('[data-page="resume-refused"]'))!;
    assert.match(text, /started in another browser/);
    assert.doesNotMatch(text, /E2E-(DONE|CHECK)/);
    assert.equal(await page.locator('[data-completion-code]').count(), 0);
  } finally {
    await page.close();
  }
  assert.equal(srv.db.sessionsOfStudy('e2e').length, 1);
});

test('declining consent ends politely with the no-consent code and link, and creates no session', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  await context.route(`${REDIRECT}**`, (route) => route.fulfill({ status: 200, contentType: 'text/html', body: 'ok' }));
  const page = await context.newPage();
  try {
    await page.goto(`${srv.url}/?study=e2e`);
    await page.click('[data-choice-name="decline"]');
    await page.waitForSelector('text=Thank you for your time');
    assert.equal(await page.textContent('[data-completion-code]'), 'E2E-NOCONSENT');
    assert.equal(await page.getAttribute('a[data-redirect]', 'href'), `${REDIRECT}?cc=E2E-NOCONSENT`);
    const id = await page.evaluate(() => localStorage.getItem('legible:participant:e2e'));
    assert.match(id!, /^anon-[0-9a-f]{32}$/, 'a random participant id, kept for reloads');
  } finally {
    await context.close();
  }
  assert.equal(srv.db.sessionsOfStudy('e2e').length, 1, 'no session for a participant who declined');
});

test('?simulate=data-only (not in live studies) runs a whole session through the server', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  try {
    await page.goto(`${srv.url}/?study=e2e&participant=simulated&simulate=data-only`);
    await page.waitForSelector('[data-completion-code]', { timeout: 20_000 });
  } finally {
    await page.close();
  }
  const session = srv.db.sessionsOfStudy('e2e').find((s) => s.id !== firstSession);
  assert.equal(session?.status, 'finished', 'a second, finished session');
  assert.deepEqual(srv.db.answeredSeqs(session.id).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7]);
});

test('without IndexedDB (private modes) the outbox keeps answers in localStorage, and a reload still resumes', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  await context.addInitScript({ content: WITHOUT_INDEXEDDB });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  const who = `private-${Date.now()}`;
  const url = `${srv.url}/?study=e2e&participant=${who}`;
  const given: Awaited<ReturnType<typeof walk>>['given'] = [];
  try {
    await page.goto(url);
    given.push(...(await walk(page, { stopAfter: 3 })).given);
    assert.equal(await page.evaluate(() => document.documentElement.dataset.outbox), 'localstorage');
    // Offline: the next answer waits in localStorage, and the banner says so.
    await context.setOffline(true);
    given.push(...(await walk(page, { stopAfter: 1 })).given);
    await page.waitForSelector('#banner:not([hidden])');
    assert.match((await page.textContent('#banner'))!, /offline/);
    const stored = await page.evaluate(() => Object.entries(localStorage).filter(([k]) => k.startsWith('legible:outbox:')).map(([, v]) => Object.keys(JSON.parse(v)).filter((k) => k.startsWith('t:'))));
    assert.deepEqual(stored, [['t:000003']]);
    await context.setOffline(false);
    await page.reload();
    given.push(...(await walk(page)).given);
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
  const session = srv.db.sessionsOfStudy('e2e').find((s) => s.status === 'finished' && srv.db.sqlite.prepare('SELECT 1 FROM identities WHERE external_id = ? AND participant = ?').get(who, s.participant));
  assert.ok(session, 'a finished session for this participant');
  const rows = srv.db.sqlite.prepare('SELECT seq, choice, confidence FROM trials WHERE session_id = ? ORDER BY seq').all(session.id) as { seq: number; choice: number; confidence: number }[];
  assert.deepEqual(rows.map((r) => r.seq), [0, 1, 2, 3, 4, 5, 6, 7]);
  const first = bySeq(given);
  for (const r of rows) assert.deepEqual([r.choice, r.confidence], [first.get(r.seq)!.choice, first.get(r.seq)!.confidence], `seq ${r.seq}`);
});
