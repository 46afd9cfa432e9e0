// What a participant sees (issue 11, items 6–10), in Chromium against the real server and SQLite:
// query positions that stay put across reloads and devices, an annotated example that shows
// nothing of the session, no button that looks pre-selected at trial onset, a stale second tab that
// is told so and stops, and a resume after a closed browser that never shows a recorded trial again
// (and the CSV flags trials a participant saw twice).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import type { Page } from 'playwright-core';
import { parseCsvRecords, writeTrialsCsv } from '@legible/analysis';
import { startRig, type Rig } from './helpers.ts';
import { readTrial, walk, type Given } from './participant.ts';

let rig: Rig;
const STUDY = 'integ';
const MAIN = 6;
const PRACTICE = 2;
const TOTAL = MAIN + PRACTICE;

before(async () => {
  rig = await startRig({
    id: STUDY,
    mode: 'pilot',
    trialsPerParticipant: MAIN,
    catchTrials: 0,
    practiceTrials: PRACTICE,
    recruitment: ['  platform: generic', '  completed:', '    code: INTEG-DONE'],
  });
});

after(() => rig?.close());

const viewport = { width: 1280, height: 720 };
const url = (query: string) => `${rig.srv.url}/?study=${STUDY}&${query}`;

interface StoredTask {
  seq: number;
  trial: string;
  order: [0 | 1, 0 | 1];
}

/** The session of a generic participant id or a Prolific id, from the database. */
function sessionOf(who: string): { id: string; seed: number; tasks: StoredTask[] } {
  const row = rig.srv.db.sqlite
    .prepare(
      'SELECT s.id, s.seed, s.tasks FROM sessions s JOIN identities i ON i.participant = s.participant AND i.study = s.study WHERE i.external_id = ? OR i.prolific_pid = ?',
    )
    .get(who, who) as { id: string; seed: number; tasks: string } | undefined;
  assert.ok(row, `a session for ${who}`);
  return { id: row.id, seed: row.seed, tasks: JSON.parse(row.tasks) };
}

const recorded = (session: string) =>
  (rig.srv.db.sqlite.prepare('SELECT seq FROM trials WHERE session_id = ? ORDER BY seq').all(session) as { seq: number }[]).map((r) => r.seq);

const stimulus = (asset: string) => `/stimuli/${STUDY}/${asset}`;

/** Where the session's stored (seeded) task list puts a trial's queries: [upper, lower] image URLs. */
function seededPositions(task: StoredTask): [string, string] {
  const t = rig.fx.manifest.trials.find((m) => m.id === task.trial)!;
  return [stimulus(t.assets.queries[task.order[0]]), stimulus(t.assets.queries[task.order[1]])];
}

async function positionsOnScreen(page: Page): Promise<{ seq: number; upper: string; lower: string }> {
  // No function is named inside evaluate: tsx would wrap it in a helper the page lacks.
  return page.evaluate(() => {
    const root = document.querySelector<HTMLElement>('.f2afc[data-state="ready"]:not([data-example])')!;
    const [upper, lower] = ['upper', 'lower'].map((pos) => new URL(root.querySelector<HTMLImageElement>(`img[data-position="${pos}"]`)!.src).pathname);
    return { seq: Number(root.dataset.seq), upper, lower };
  });
}

/** The study's trial CSV (`legible export`), one record per row. */
async function exportedRows(): Promise<Record<string, string>[]> {
  let text = '';
  const out = new Writable({
    write(chunk, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  });
  await writeTrialsCsv(out, { db: join(rig.fx.root, 'legible.db'), study: STUDY });
  return parseCsvRecords(text);
}

// ─── item 6 ──────────────────────────────────────────────────────────────────────────────
test('query positions come from the stored seed: the same after three reloads and on a second device, for every trial', async () => {
  const pid = `pos-${Date.now()}`;
  const link = url(`PROLIFIC_PID=${pid}&STUDY_ID=integ-study&SESSION_ID=attempt-1`);
  const one = await rig.browser.newContext({ viewport });
  const two = await rig.browser.newContext({ viewport });
  const seen: { seq: number; upper: string; lower: string; where: string }[] = [];
  try {
    const page = await one.newPage();
    await page.goto(link);
    // The first practice trial, and the first main trial, each drawn five times.
    for (const stop of [0, PRACTICE]) {
      if (stop > 0) await walk(page, { stopAfter: stop });
      await walkTo(page);
      seen.push({ ...(await positionsOnScreen(page)), where: 'first draw' });
      for (let r = 0; r < 3; r++) {
        await page.reload();
        await walkTo(page, seen[seen.length - 1].seq);
        seen.push({ ...(await positionsOnScreen(page)), where: `reload ${r + 1}` });
      }
      const other = await two.newPage();
      await other.goto(link);
      await walkTo(other, seen[seen.length - 1].seq);
      seen.push({ ...(await positionsOnScreen(other)), where: 'second device' });
      await other.close();
    }
    // Every other trial once.
    const rest = await walk(page, {
      beforeTrial: async () => {
        seen.push({ ...(await positionsOnScreen(page)), where: 'walk' });
        return 'answer';
      },
    });
    assert.equal(rest.end, 'completion');
  } finally {
    await one.close();
    await two.close();
  }
  const { tasks } = sessionOf(pid);
  assert.ok(seen.length >= TOTAL + 8, `${seen.length} draws`);
  for (const s of seen) {
    const task = tasks.find((t) => t.seq === s.seq)!;
    assert.deepEqual([s.upper, s.lower], seededPositions(task), `seq ${s.seq} (${s.where}): upper and lower as the stored task list orders them`);
  }
});

/** Goes through pages (and the example) to the next trial, answering none; checks its seq when given. */
async function walkTo(page: Page, seq?: number): Promise<void> {
  for (;;) {
    const el = await page.waitForSelector('.f2afc[data-state="ready"], .jspsych-content [data-choice-name]', { timeout: 20_000 });
    const what = await el.evaluate((e) => (e.classList.contains('f2afc') ? (e.hasAttribute('data-example') ? 'example' : 'trial') : 'page'));
    if (what === 'trial') {
      if (seq !== undefined) assert.equal(Number(await el.getAttribute('data-seq')), seq, 'resumed at the same trial');
      return;
    }
    if (what === 'example') await page.keyboard.press('1');
    else await el.click();
    await page.waitForFunction((e) => !e.isConnected, el, { timeout: 20_000 }).catch(() => {});
  }
}

// ─── item 7 ──────────────────────────────────────────────────────────────────────────────
test('the annotated example shows images that appear nowhere else in the session', async () => {
  const who = `example-${Date.now()}`;
  const context = await rig.browser.newContext({ viewport });
  const page = await context.newPage();
  let example: string[] = [];
  let given: Given[] = [];
  try {
    await page.goto(url(`participant=${who}`));
    const run = await walk(page, {
      onExample: async () => {
        example = await page.evaluate(() =>
          [...document.querySelectorAll<HTMLImageElement>('.f2afc[data-example] img')].map((i) => new URL(i.src).pathname),
        );
      },
    });
    given = run.given;
    assert.equal(run.end, 'completion');
    assert.ok(run.pages.includes('example'), 'the example was shown');
  } finally {
    await context.close();
  }
  assert.equal(example.length, 4, 'two grids and two queries');
  const shown = new Set(given.flatMap((g) => [g.minSrc, g.maxSrc, ...g.queries]));
  const { tasks } = sessionOf(who);
  const inSession = new Set(
    tasks.flatMap((task) => {
      const t = rig.fx.manifest.trials.find((m) => m.id === task.trial)!;
      return [t.assets.min, t.assets.max, ...t.assets.queries].map(stimulus);
    }),
  );
  for (const src of example) {
    assert.ok(!shown.has(src), `${src} of the example was shown again in a trial`);
    assert.ok(!inSession.has(src), `${src} of the example is in the session's task list`);
  }
});

// ─── item 8 ──────────────────────────────────────────────────────────────────────────────
const LOOK = ['background-color', 'border-top-color', 'color', 'box-shadow', 'outline-style', 'font-weight', 'transform'];

test('no button looks selected at trial onset, even with the pointer resting where "6 very sure" was clicked', async () => {
  const context = await rig.browser.newContext({ viewport });
  const page = await context.newPage();
  try {
    await page.goto(url(`participant=hover-${Date.now()}`));
    await walkTo(page);
    const first = await readTrial(page);
    const box = (await (await page.$('.f2afc button[data-key="6"]'))!.boundingBox())!;
    const x = box.x + box.width / 2;
    const y = box.y + box.height / 2;
    await page.mouse.move(x, y, { steps: 4 });
    await page.mouse.down();
    await page.mouse.up();
    // The next trial, with the pointer resting where it was.
    await page.waitForSelector(`.f2afc[data-state="ready"]:not([data-seq="${first.seq}"])`, { timeout: 15_000 });
    await page.waitForTimeout(300);
    const style = (x: number, y: number) =>
      page.evaluate(
        ([x, y, look]) => {
          const b = document.elementFromPoint(x as number, y as number)?.closest('button');
          if (!b) return null;
          const cs = getComputedStyle(b);
          return { key: b.dataset.key, style: (look as string[]).map((p) => `${p}: ${cs.getPropertyValue(p)}`) };
        },
        [x, y, LOOK] as const,
      );
    const atOnset = await style(x, y);
    assert.equal(atOnset?.key, '6', 'the pointer rests on button 6 of the new trial');
    await page.mouse.move(5, 5);
    await page.waitForTimeout(100);
    const unhovered = await style(x, y);
    assert.deepEqual(atOnset.style, unhovered!.style, 'at onset the button under the resting pointer looks like any unhovered button');
    // A pointer that moves onto a button still highlights it.
    await page.mouse.move(x - 3, y, { steps: 3 });
    await page.waitForTimeout(100);
    const hovered = await style(x, y);
    assert.notDeepEqual(hovered!.style, unhovered!.style, 'hover still shows once the pointer moves');
  } finally {
    await context.close();
  }
});

// ─── item 9 ──────────────────────────────────────────────────────────────────────────────
const conflictEvents = (session: string) =>
  rig.srv.db.sqlite.prepare("SELECT seq, detail FROM events WHERE session_id = ? AND type = 'session_conflict'").all(session) as { seq: number | null; detail: string | null }[];

test('two tabs: the older one is told plainly and stops taking answers; the conflict is an event; the newer one finishes', async () => {
  const who = `tabs-${Date.now()}`;
  const context = await rig.browser.newContext({ viewport });
  const problems: string[] = [];
  try {
    const first = await context.newPage();
    first.on('pageerror', (e) => problems.push(e.message));
    await first.goto(url(`participant=${who}`));
    const start = await walk(first, { stopAfter: 1 });
    assert.deepEqual(start.given.map((g) => g.seq), [0]);
    await first.waitForSelector('.f2afc[data-state="ready"][data-seq="1"]');

    const second = await context.newPage();
    second.on('pageerror', (e) => problems.push(e.message));
    await second.goto(url(`participant=${who}`));
    await walkTo(second, 1);

    const stale = await first.waitForSelector('[data-page="stale"]', { timeout: 10_000 }).catch(() => null);
    assert.ok(stale, 'the older tab says the study continues elsewhere');
    assert.match((await stale.textContent())!, /another (tab|window)/i);
    assert.equal(await first.$('.f2afc'), null, 'no trial left in the older tab');
    await first.keyboard.press('6');
    await first.waitForTimeout(500);
    const { id } = sessionOf(who);
    assert.deepEqual(recorded(id), [0], 'nothing answered in the older tab after it stopped');

    const rest = await walk(second);
    assert.equal(rest.end, 'completion');
    assert.deepEqual(rest.given.map((g) => g.seq), Array.from({ length: TOTAL - 1 }, (_, i) => i + 1));
    assert.equal(await first.$('[data-completion-code]'), null, 'the older tab never gets the code');
    assert.ok(conflictEvents(id).length >= 1, 'the conflict is recorded as an event');
  } finally {
    await context.close();
  }
  assert.deepEqual(problems, []);
});

test('a second device answers first: the stale one gets the conflict, says so, stops, and the CSV flags the trial as seen twice', async () => {
  const pid = `devices-${Date.now()}`;
  const link = url(`PROLIFIC_PID=${pid}&STUDY_ID=integ-study&SESSION_ID=attempt-1`);
  const one = await rig.browser.newContext({ viewport });
  const two = await rig.browser.newContext({ viewport });
  try {
    const a = await one.newPage();
    await a.goto(link);
    await walk(a, { stopAfter: 3 });
    await a.waitForSelector('.f2afc[data-state="ready"][data-seq="3"]');
    const b = await two.newPage();
    await b.goto(link);
    const onB = await walk(b, { stopAfter: 1, choose: () => 1 });
    assert.deepEqual(onB.given.map((g) => g.seq), [3]);
    // The first device answers the same trial differently: the server keeps the first answer.
    await a.keyboard.press('6');
    const stale = await a.waitForSelector('[data-page="stale"]', { timeout: 15_000 }).catch(() => null);
    assert.ok(stale, 'the stale device says the study continued elsewhere');
    assert.equal(await a.$('.f2afc'), null, 'and stops taking answers');
    const { id } = sessionOf(pid);
    await waitFor(() => conflictEvents(id).some((e) => e.seq === 3), 'a session_conflict event at seq 3');
    const rest = await walk(b);
    assert.equal(rest.end, 'completion');
  } finally {
    await one.close();
    await two.close();
  }
  const rows = (await exportedRows()).filter((r) => r.session === sessionOf(pid).id);
  assert.deepEqual(
    rows.map((r) => [Number(r.seq), r.seen_twice]),
    rows.map((r) => [Number(r.seq), r.seq === '3' ? '1' : '0']),
  );
});

async function waitFor(check: () => boolean, what: string, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// ─── item 10 ─────────────────────────────────────────────────────────────────────────────
test('answers flushed out of order on close: the resume never shows a recorded trial again, and the CSV flags the trials seen twice', async () => {
  const pid = `flush-${Date.now()}`;
  const link = url(`PROLIFIC_PID=${pid}&STUDY_ID=integ-study&SESSION_ID=attempt-1`);
  const closed = await rig.browser.newContext({ viewport });
  let firstRun: Given[] = [];
  let session = '';
  try {
    // Answers 2–5 never get through from this browser; everything else does.
    await closed.route(/\/api\/sessions\/[^/]+\/trials\/[2-5]$/, (route) => route.abort('failed'));
    const page = await closed.newPage();
    await page.goto(link);
    firstRun = (await walk(page, { stopAfter: 7 })).given;
    assert.deepEqual(firstRun.map((g) => g.seq), [0, 1, 2, 3, 4, 5, 6]);
    session = sessionOf(pid).id;
    assert.deepEqual(recorded(session), [0, 1], 'answers go in order: 2 blocks the rest');
    // The browser is closed: the page fires what it holds with keepalive, in parallel (its own
    // pagehide handler, run while the route still holds 2–5 back; requests of a page already
    // gone would bypass the route), and then it is gone without sending anything more.
    await page.evaluate(() => window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: false })));
    await waitFor(() => recorded(session).includes(6), 'seq 6 stored by the keepalive flush');
    const cdp = await closed.newCDPSession(page);
    // (The crashed page never answers the command.)
    void cdp.send('Page.crash').catch(() => {});
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    await closed.close();
  }
  assert.deepEqual(recorded(session), [0, 1, 6], 'a non-prefix: 6 without 2–5');

  // The same link in a fresh browser (what a private window or another computer has).
  const fresh = await rig.browser.newContext({ viewport });
  let secondRun: Given[] = [];
  try {
    const page = await fresh.newPage();
    await page.goto(link);
    const run = await walk(page);
    assert.equal(run.end, 'completion');
    secondRun = run.given;
  } finally {
    await fresh.close();
  }
  assert.deepEqual(secondRun.map((g) => g.seq), [2, 3, 4, 5, 7], 'never seq 6 again: it is recorded');
  assert.deepEqual(recorded(session), Array.from({ length: TOTAL }, (_, i) => i));
  const rows = (await exportedRows()).filter((r) => r.session === session);
  assert.deepEqual(
    rows.map((r) => [Number(r.seq), r.seen_twice]),
    rows.map((r) => [Number(r.seq), ['2', '3', '4', '5'].includes(r.seq) ? '1' : '0']),
    'seqs 2–5 were on screen in both browsers',
  );
});
