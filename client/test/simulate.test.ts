// jsPsych's data-only simulation of every example study in studies/ (each folder with a
// study.yaml), through the real client in Chromium and the real server: consent, browser check,
// practice (with its rounds), main trials, finish. Each must end on the completion page with a
// finished session that holds every required trial once.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import { defaultStudiesDir, loadStudy, type LoadedStudy } from '@legible/studies';
import { ensureBuilt } from '@legible/stimuli-pipeline';
import { startServer, type RunningServer } from '@legible/server';
import { buildClient, launchChromium } from './helpers.ts';

const studiesDir = defaultStudiesDir();
const examples = readdirSync(studiesDir)
  .filter((d) => existsSync(join(studiesDir, d, 'study.yaml')))
  .sort();

let tmp: string;
let srv: RunningServer;
let browser: Browser;
const loaded = new Map<string, LoadedStudy>();

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'legible-simulate-'));
  for (const id of examples) {
    const study = loadStudy(id);
    await ensureBuilt(study, { quiet: true });
    loaded.set(id, study);
  }
  const dist = join(tmp, 'dist');
  await buildClient(dist);
  srv = await startServer({ port: 0, db: join(tmp, 'legible.db'), studies: examples, clientDir: dist, signals: false });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await srv?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('data-only simulation of every example study', () => {
  test('there is at least one example study', () => assert.ok(examples.length > 0, fileURLToPath(new URL('../../studies', import.meta.url))));

  for (const id of examples) {
    test(`studies/${id}`, async (t) => {
      const { study } = loaded.get(id)!;
      if (study.mode === 'live') return t.skip('live studies refuse ?simulate (by design)');
      const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
      const problems: string[] = [];
      page.on('pageerror', (e) => problems.push(e.message));
      const participant = `simulated-${id}-${Date.now()}`;
      try {
        await page.goto(`${srv.url}/?study=${id}&participant=${participant}&simulate=data-only`);
        await page.waitForSelector('[data-page="completion"]', { timeout: 60_000 });
      } finally {
        await page.close();
      }
      assert.deepEqual(problems, []);
      const [session] = srv.db.sessionsOfStudy(id).filter((s) => srv.db.sqlite.prepare('SELECT 1 FROM identities WHERE external_id = ? AND participant = ?').get(participant, s.participant));
      assert.equal(session?.status, 'finished');
      const design = study.design;
      const rows = srv.db.sqlite.prepare('SELECT seq, kind FROM trials WHERE session_id = ? ORDER BY seq').all(session.id) as { seq: number; kind: string }[];
      assert.equal(rows.filter((r) => r.kind !== 'practice').length, design.trials_per_participant + design.catch_trials, 'every main and catch trial');
      assert.ok(rows.filter((r) => r.kind === 'practice').length >= design.practice_trials, 'at least one practice round');
      assert.equal(new Set(rows.map((r) => r.seq)).size, rows.length, 'each once');
      const checks = srv.db.sqlite.prepare("SELECT count(*) AS n FROM events WHERE session_id = ? AND type = 'browser_check'").get(session.id) as { n: number };
      assert.equal(checks.n, 1, 'the browser check result was recorded');
    });
  }
});
