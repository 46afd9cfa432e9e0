// Faults, all in one session, in Chromium against the real server: 30% of API requests fail at
// random (half never reach the server, half are recorded but their response is lost), the
// connection drops for 20 s in the middle of a block while the participant keeps answering, the
// page is reloaded three times, and the tab is closed and opened again. The final data must hold
// every trial exactly once, in task-list order, with the answers given, and the participant must
// reach the completion code.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '@legible/server';
import { idbOutboxKeys, startRig, type Rig } from './helpers.ts';
import { bySeq, seeded, walk, type Given } from './participant.ts';

let srv: RunningServer;
let browser: Browser;

const MAIN = 22;
const CATCH = 2;
const PRACTICE = 2;
const TOTAL = MAIN + CATCH + PRACTICE;

let rig: Rig;

before(async () => {
  rig = await startRig({
    id: 'faults',
    mode: 'pilot',
    trialsPerParticipant: MAIN,
    catchTrials: CATCH,
    practiceTrials: PRACTICE,
    mainPerFeature: 3,
    recruitment: ['  platform: generic', '  completed:', '    code: FAULTS-DONE', '  failed_checks:', '    code: FAULTS-CHECK'],
  });
  ({ srv, browser } = rig);
});

after(() => rig?.close());

test('30% failed requests, 20 s offline mid-block, three reloads, a closed and reopened tab: every trial exactly once, in order, and the completion code', async () => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const problems: string[] = [];
  const watch = (p: Page) => p.on('pageerror', (e) => problems.push(e.message));
  const random = seeded(20240611);
  const faults = { requests: 0, lostBefore: 0, lostAfter: 0 };
  await context.route('**/api/**', async (route) => {
    faults.requests++;
    const r = random();
    if (r < 0.15) {
      faults.lostBefore++;
      return route.abort('failed');
    }
    if (r < 0.3) {
      // The server does the work; the browser never hears back.
      faults.lostAfter++;
      await route.fetch().catch(() => null);
      return route.abort('failed');
    }
    return route.continue();
  });
  const who = `faults-${Date.now()}`;
  const url = `${srv.url}/?study=faults&participant=${who}`;
  const given: Given[] = [];
  const think = (ms: number) => async () => {
    await new Promise((r) => setTimeout(r, ms));
    return 'answer' as const;
  };
  let page = await context.newPage();
  watch(page);
  const t0 = Date.now();
  try {
    await page.goto(url);
    given.push(...(await walk(page, { stopAfter: 4 })).given);

    // Reload 1, mid-block.
    await page.reload();
    given.push(...(await walk(page, { stopAfter: 2 })).given);

    // 20 s offline in the middle of the block; the participant keeps answering.
    await context.setOffline(true);
    const offlineAt = Date.now();
    let offlineAnswers = 0;
    while (Date.now() - offlineAt < 20_000) {
      given.push(...(await walk(page, { stopAfter: 1, beforeTrial: think(1500) })).given);
      offlineAnswers++;
      if (offlineAnswers === 2) {
        assert.match((await page.textContent('#banner'))!, /offline/, 'the banner says so');
        const stored = (await idbOutboxKeys(page)).filter((k) => k.includes('|t:')).map((k) => Number(k.split('|t:')[1]));
        const last = given.at(-1)!.seq;
        assert.ok(stored.includes(last) && stored.includes(last - 1), `answers given offline wait in IndexedDB (${stored})`);
      }
    }
    await context.setOffline(false);
    assert.ok(offlineAnswers >= 8, `answered ${offlineAnswers} trials while offline`);

    // Reload 2, the moment the connection is back (answers still waiting); reload 3 a bit later.
    await page.reload();
    given.push(...(await walk(page, { stopAfter: 2 })).given);
    await page.reload();
    given.push(...(await walk(page, { stopAfter: 2 })).given);

    // Close the tab and open the link again.
    await page.close();
    page = await context.newPage();
    watch(page);
    await page.goto(url);
    const rest = await walk(page, { timeoutMs: 60_000 });
    given.push(...rest.given);
    assert.equal(rest.end, 'completion');
    assert.ok(rest.pages.includes('break:continue'), 'a break after 20 main trials');
    assert.match((await page.textContent('[data-completion-code]'))!, /^FAULTS-(DONE|CHECK)$/);
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
  assert.ok(faults.lostBefore > 3 && faults.lostAfter > 3, `faults injected: ${JSON.stringify(faults)}`);

  // Each trial was shown (and answered) once: reloads resumed at the next unanswered one.
  assert.deepEqual(
    given.map((g) => g.seq),
    Array.from({ length: TOTAL }, (_, i) => i),
  );
  const session = srv.db.sessionsOfStudy('faults').find((s) => srv.db.sqlite.prepare('SELECT 1 FROM identities WHERE external_id = ? AND participant = ?').get(who, s.participant));
  assert.ok(session);
  assert.equal(session.status, 'finished');
  const rows = srv.db.sqlite.prepare('SELECT seq, choice, confidence FROM trials WHERE session_id = ? ORDER BY seq').all(session.id) as { seq: number; choice: number; confidence: number }[];
  assert.deepEqual(
    rows.map((r) => r.seq),
    Array.from({ length: TOTAL }, (_, i) => i),
    'every trial exactly once',
  );
  const answers = bySeq(given);
  for (const r of rows) assert.deepEqual([r.choice, r.confidence], [answers.get(r.seq)!.choice, answers.get(r.seq)!.confidence], `the answer given at seq ${r.seq}`);
  const types = (srv.db.sqlite.prepare('SELECT type FROM events WHERE session_id = ?').all(session.id) as { type: string }[]).map((e) => e.type);
  assert.ok(types.includes('offline') && types.includes('online'), `the connection drop is in the events: ${types.join(' ')}`);
  console.log(`faults: ${JSON.stringify(faults)}, ${((Date.now() - t0) / 1000).toFixed(1)} s`);
});
