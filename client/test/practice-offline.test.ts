// The network goes away after the first practice answer (issue 11, item 5), in Chromium against the
// real server. Without a practice criterion the round's verdict needs nothing from the server: the
// page goes on by itself within a bounded wait. With a criterion it does need the server: the page
// says plainly that it is reconnecting, and carries on by itself once the connection is back.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Page } from 'playwright-core';
import { startRig, type Rig } from './helpers.ts';
import { walk, type TrialOnScreen } from './participant.ts';

let free: Rig;
let judged: Rig;

before(async () => {
  free = await startRig({
    id: 'offfree',
    mode: 'pilot',
    trialsPerParticipant: 2,
    catchTrials: 0,
    practiceTrials: 2,
    recruitment: ['  platform: generic', '  completed:', '    code: OFF-DONE'],
  });
  judged = await startRig({
    id: 'offjudged',
    mode: 'pilot',
    trialsPerParticipant: 2,
    catchTrials: 0,
    practiceTrials: 2,
    design: ['practice_criterion: 1', 'practice_rounds: 2'],
    recruitment: ['  platform: generic', '  completed:', '    code: OFFJ-DONE'],
  });
});

after(async () => {
  await free?.close();
  await judged?.close();
});

function recorded(rig: Rig, who: string): number[] {
  const row = rig.srv.db.sqlite
    .prepare('SELECT s.id FROM sessions s JOIN identities i ON i.participant = s.participant AND i.study = s.study WHERE i.external_id = ?')
    .get(who) as { id: string } | undefined;
  assert.ok(row, `a session for ${who}`);
  return (rig.srv.db.sqlite.prepare('SELECT seq FROM trials WHERE session_id = ? ORDER BY seq').all(row.id) as { seq: number }[]).map((r) => r.seq);
}

/** The key that picks the right query of the trial on screen, from the fixture's answer keys. */
function rightKey(rig: Rig, trial: TrialOnScreen): number {
  const t = rig.fx.manifest.trials.find((m) => trial.minSrc === `/stimuli/${rig.fx.manifest.study}/${m.assets.min}`);
  assert.ok(t, 'the trial on screen is in the manifest');
  const right = trial.queries.indexOf(`/stimuli/${rig.fx.manifest.study}/${t.assets.queries[t.answer]}`);
  return trial.keys.find((k) => k.query === right && k.confidence === 3)!.key;
}

async function statusText(page: Page): Promise<string> {
  return (await page.textContent('.jspsych-content'))?.trim() ?? '';
}

test('no practice criterion: offline after the first practice answer, the page still goes on to the main part within a bounded wait', async () => {
  const who = `off-free-${Date.now()}`;
  const context = await free.browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    await page.goto(`${free.srv.url}/?study=offfree&participant=${who}`);
    const first = await walk(page, { stopAfter: 1 });
    assert.deepEqual(first.given.map((g) => g.seq), [0]);
    await context.setOffline(true);
    const second = await walk(page, { stopAfter: 1 });
    assert.deepEqual(second.given.map((g) => g.seq), [1]);
    const t0 = Date.now();
    // The verdict is local: no waiting for the server's acknowledgement that cannot come.
    const result = await page.waitForSelector('[data-result]', { timeout: 10_000 }).catch(() => null);
    assert.ok(result, `the practice result within 10 s while offline (on screen: "${await statusText(page)}")`);
    assert.equal(await result.getAttribute('data-result'), 'done');
    assert.ok(Date.now() - t0 < 10_000);
    assert.match((await page.textContent('#banner')) ?? '', /offline/);
    await context.setOffline(false);
    const rest = await walk(page, { timeoutMs: 30_000 });
    assert.equal(rest.end, 'completion');
    assert.deepEqual(rest.given.map((g) => g.seq), [2, 3]);
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
  assert.deepEqual(recorded(free, who), [0, 1, 2, 3], 'the answer given offline was sent once the connection was back');
});

test('with a practice criterion: offline after the first practice answer, the verdict page says it is reconnecting and goes on by itself when the connection is back', async () => {
  const who = `off-judged-${Date.now()}`;
  const context = await judged.browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  try {
    await page.goto(`${judged.srv.url}/?study=offjudged&participant=${who}`);
    await walk(page, { stopAfter: 1, choose: (t) => rightKey(judged, t) });
    await context.setOffline(true);
    await walk(page, { stopAfter: 1, choose: (t) => rightKey(judged, t) });
    // The server's verdict is needed (another round or not): a clear reconnecting state, no result yet.
    await page.waitForFunction(() => /reconnect/i.test(document.querySelector('.jspsych-content')?.textContent ?? ''), null, { timeout: 15_000 }).catch(() => {});
    assert.match(await statusText(page), /reconnect/i, 'the verdict page says it is reconnecting');
    assert.match(await statusText(page), /by itself|automatically/i, 'and that it goes on by itself');
    assert.equal(await page.$('[data-result]'), null, 'no verdict without the server');
    await context.setOffline(false);
    // No click: the page resumes by itself once the answers reach the server.
    const result = await page.waitForSelector('[data-result]', { timeout: 20_000 });
    assert.equal(await result.getAttribute('data-result'), 'done');
    assert.match((await result.textContent())!, /2 of 2/);
    const rest = await walk(page);
    assert.equal(rest.end, 'completion');
    assert.deepEqual(rest.given.map((g) => g.seq), [4, 5], 'round 2 skipped');
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
  assert.deepEqual(recorded(judged, who), [0, 1, 4, 5]);
});
