// Practice until a criterion (design.practice_criterion, practice_rounds), in Chromium against the
// real server: the server judges each round (the acknowledgement of its last answer carries
// feedback.round) and the client follows — "let's practise once more" after a failed round, the
// main part after a passed one (or after the last round), skipped rounds never shown or sent, and
// a reload between rounds resuming at the right round.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import type { RunningServer } from '@legible/server';
import type { Fixture } from '../../server/test/fixture.ts';
import { startRig, type Rig } from './helpers.ts';
import { walk, type TrialOnScreen } from './participant.ts';

let fx: Fixture;
let srv: RunningServer;
let browser: Browser;

let rig: Rig;

before(async () => {
  rig = await startRig({
    id: 'prac',
    mode: 'pilot',
    trialsPerParticipant: 4,
    catchTrials: 0,
    practiceTrials: 2,
    design: ['practice_criterion: 1', 'practice_rounds: 3'],
    recruitment: ['  platform: generic', '  completed:', '    code: PRAC-DONE'],
  });
  ({ fx, srv, browser } = rig);
});

after(() => rig?.close());

/** The key that picks the right (or a wrong) query, from the manifest's answer key. */
function keyFor(trial: TrialOnScreen, correct: boolean): number {
  const t = fx.manifest.trials.find((m) => trial.minSrc === `/stimuli/prac/${m.assets.min}`);
  assert.ok(t, `the trial on screen (${trial.minSrc}) is in the manifest`);
  const right = trial.queries.indexOf(`/stimuli/prac/${t.assets.queries[t.answer]}`);
  assert.ok(right === 0 || right === 1);
  const want = correct ? right : 1 - right;
  return trial.keys.find((k) => k.query === want && k.confidence === 3)!.key;
}

function sessionRows(who: string) {
  const session = srv.db.sessionsOfStudy('prac').find((s) => srv.db.sqlite.prepare('SELECT 1 FROM identities WHERE external_id = ? AND participant = ?').get(who, s.participant));
  assert.ok(session);
  const rows = srv.db.sqlite.prepare('SELECT seq, kind, practice_round, correct FROM trials WHERE session_id = ? ORDER BY seq').all(session.id) as {
    seq: number;
    kind: string;
    practice_round: number | null;
    correct: number;
  }[];
  const meta = srv.db.sqlite.prepare('SELECT status, practice_passed, practice_rounds FROM sessions WHERE id = ?').get(session.id) as { status: string; practice_passed: number | null; practice_rounds: number | null };
  return { rows, meta };
}

async function resultText(page: Page): Promise<{ result: string; text: string }> {
  const el = await page.waitForSelector('[data-result]', { timeout: 15_000 });
  return { result: (await el.getAttribute('data-result'))!, text: (await el.textContent())! };
}

test('failing round 1 and passing round 2 goes on to the main trials; round 3 is never shown; a reload between rounds resumes at round 2', async () => {
  const who = `pass-second-${Date.now()}`;
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  const url = `${srv.url}/?study=prac&participant=${who}`;
  try {
    await page.goto(url);
    // Round 1: the first answer wrong.
    const round1 = await walk(page, { stopAfter: 2, choose: (t, i) => keyFor(t, i !== 0) });
    assert.deepEqual(round1.pages.slice(-1), ['practice-intro:begin']);
    assert.deepEqual(round1.given.map((g) => g.seq), [0, 1]);
    const r1 = await resultText(page);
    assert.equal(r1.result, 'again');
    assert.match(r1.text, /practise once more/);
    assert.match(r1.text, /1 of 2/);
    assert.match(r1.text, /at least 2 of 2/);

    // Reload on the verdict: the server says round 2 is next.
    await page.reload();
    await page.click('[data-choice-name="fullscreen"]');
    const again = await page.waitForSelector('[data-page="practice-again"]');
    assert.match((await again.textContent())!, /round 2 of 3/);

    // Round 2: both right → practice complete → main trials.
    const round2 = await walk(page, { stopAfter: 2, choose: (t) => keyFor(t, true) });
    assert.deepEqual(round2.given.map((g) => g.seq), [2, 3]);
    const r2 = await resultText(page);
    assert.equal(r2.result, 'done');
    assert.match(r2.text, /Practice complete/);
    assert.match(r2.text, /2 of 2/);
    const rest = await walk(page);
    assert.equal(rest.end, 'completion');
    assert.deepEqual(
      rest.given.map((g) => g.seq),
      [6, 7, 8, 9],
      'main trials next; seqs 4 and 5 (round 3) skipped',
    );
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
  const { rows, meta } = sessionRows(who);
  assert.deepEqual(
    rows.map((r) => [r.seq, r.kind, r.practice_round, r.correct]),
    [
      [0, 'practice', 0, 0],
      [1, 'practice', 0, 1],
      [2, 'practice', 1, 1],
      [3, 'practice', 1, 1],
      [6, 'main', null, rows[4].correct],
      [7, 'main', null, rows[5].correct],
      [8, 'main', null, rows[6].correct],
      [9, 'main', null, rows[7].correct],
    ],
  );
  assert.deepEqual(meta, { status: 'finished', practice_passed: 1, practice_rounds: 2 });
});

test('failing every round ends practice after the last one and still goes on to the main trials', async () => {
  const who = `never-${Date.now()}`;
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  try {
    await page.goto(`${srv.url}/?study=prac&participant=${who}`);
    const verdicts: string[] = [];
    for (let round = 0; round < 3; round++) {
      await walk(page, { stopAfter: 2, choose: (t) => keyFor(t, false) });
      const r = await resultText(page);
      verdicts.push(r.result);
      if (round === 2) assert.match(r.text, /last practice round/);
    }
    assert.deepEqual(verdicts, ['again', 'again', 'done-not-passed']);
    const rest = await walk(page);
    assert.equal(rest.end, 'completion');
    assert.deepEqual(
      rest.given.map((g) => g.seq),
      [6, 7, 8, 9],
    );
  } finally {
    await page.close();
  }
  const { rows, meta } = sessionRows(who);
  assert.deepEqual(
    rows.map((r) => r.seq),
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
  );
  assert.deepEqual(meta, { status: 'finished', practice_passed: 0, practice_rounds: 3 });
});
