// The whole path, on the embedded demo study: the pipeline builds the demo's stimuli (or reuses
// them), the real server serves the real client, headless Chromium completes the study as a
// participant, and `legible export` writes the CSV. The CSV must hold exactly the answers given —
// count, choices, confidence — and a correctness that we compute here, independently of the
// server's scoring, from the manifest's answer keys and the images the participant clicked.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { loadStudy, rng, type Manifest } from '@legible/studies';
import { ensureBuilt } from '@legible/stimuli-pipeline';
import { startServer, type RunningServer } from '@legible/server';
import { parseCsvRecords } from '@legible/analysis';
import { buildClient, launchChromium } from './helpers.ts';
import { walk } from './participant.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
let tmp: string;
let manifest: Manifest;
let srv: RunningServer;
let browser: Browser;

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'legible-demo-e2e-'));
  manifest = await ensureBuilt(loadStudy('demo'), { quiet: true });
  const dist = join(tmp, 'dist');
  await buildClient(dist);
  srv = await startServer({ port: 0, db: join(tmp, 'legible.db'), studies: ['demo'], clientDir: dist, signals: false });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await srv?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

interface Clicked {
  minSrc: string;
  maxSrc: string;
  chosenSrc: string;
  choice: number;
  confidence: number;
}

test('a participant completes the demo study in Chromium, and the exported CSV holds exactly their answers', async () => {
  const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  const policy = rng(2024);
  let clicked: Clicked[] = [];
  try {
    await page.goto(`${srv.url}/?study=demo&participant=demo-e2e-1`);
    await page.waitForSelector('[data-page="consent"]');
    // Every page a participant sees (consent, full screen, instructions, the example, practice,
    // debrief), answering each trial with a seeded choice of the six buttons.
    const run = await walk(page, { choose: () => policy.int(6) + 1 });
    assert.equal(run.end, 'completion');
    assert.ok(run.pages.includes('example'), 'the annotated example was shown');
    assert.match((await page.textContent('[data-completion-code]')) ?? '', /^DEMO-(DONE|CHECK)$/);
    clicked = run.given.map((g) => ({ minSrc: g.minSrc, maxSrc: g.maxSrc, chosenSrc: g.queries[g.choice], choice: g.choice, confidence: g.confidence }));
  } finally {
    await page.close();
  }
  assert.deepEqual(errors, [], 'no page errors');
  const design = loadStudy('demo').study.design;
  assert.equal(clicked.length, design.practice_trials + design.trials_per_participant + design.catch_trials, 'trials answered in the browser');

  // Export through the command line, as an analyst would.
  const csvFile = join(tmp, 'out', 'trials.csv');
  const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'export', 'demo', '--out', csvFile, '--db', join(tmp, 'legible.db')], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const rows = parseCsvRecords(readFileSync(csvFile, 'utf8'));
  assert.equal(rows.length, clicked.length, 'one CSV row per answered trial');
  assert.match(readFileSync(join(tmp, 'out', 'data-dictionary.md'), 'utf8'), /\| `correct` \| boolean/);

  const byTrial = new Map(manifest.trials.map((t) => [t.id, t]));
  const prefix = '/stimuli/demo/';
  rows.forEach((row, i) => {
    const given = clicked[i];
    assert.equal(Number(row.seq), i, 'rows in task-list order');
    assert.equal(Number(row.choice), given.choice, `choice at seq ${i}`);
    assert.equal(Number(row.confidence), given.confidence, `confidence at seq ${i}`);
    // The trial the CSV names is the one that was on screen.
    const trial = byTrial.get(row.trial_id);
    assert.ok(trial, `trial ${row.trial_id} is in the manifest`);
    assert.equal(given.minSrc, prefix + trial.assets.min, `min grid at seq ${i}`);
    assert.equal(given.maxSrc, prefix + trial.assets.max, `max grid at seq ${i}`);
    // Correct means the participant clicked the query the manifest keys as matching the max side.
    const expected = given.chosenSrc === prefix + trial.assets.queries[trial.answer];
    assert.equal(row.correct, expected ? '1' : '0', `correct at seq ${i}`);
    assert.equal(row.is_practice, trial.kind === 'practice' ? '1' : '0');
    assert.equal(row.is_catch, trial.kind === 'catch' ? '1' : '0');
    assert.equal(row.feature, trial.feature);
    assert.ok(Number(row.rt_ms) > 0);
  });
  // Practice first, then main and catch trials over distinct features covering both layers and bases.
  assert.deepEqual(rows.slice(0, design.practice_trials).map((r) => r.kind), Array(design.practice_trials).fill('practice'));
  const main = rows.filter((r) => r.kind === 'main');
  assert.equal(main.length, design.trials_per_participant);
  assert.equal(new Set(main.map((r) => r.feature)).size, main.length, 'no feature twice');
  assert.deepEqual(new Set(main.map((r) => `${r.layer}/${r.basis}`)), new Set(['block2/channels', 'block2/nmf', 'block3/channels', 'block3/nmf']));
});
