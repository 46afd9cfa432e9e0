// `legible pilot`: simulated participants through the real server on 127.0.0.1 (a real SQLite
// file), answering with the machine observer's probabilities or given accuracies; then `legible
// export` and `legible analyze` on the pilot database. Simulated data is marked in every export row,
// the admin API and the report, and never shares a database with real participants.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { chromium } from 'playwright-core';
import { loadStudy, type LoadedStudy } from '@legible/studies';
import { ensureBuilt, predictStudy } from '@legible/stimuli-pipeline';
import { startServer } from '../src/app.ts';
import { openDatabase } from '../src/db.ts';
import { parseAccuracy, runPilot } from '../src/pilot.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** 50 simulated participants, as the issue asks; LEGIBLE_PILOT_N lowers it on a slow machine. */
const N = Number(process.env.LEGIBLE_PILOT_N ?? 50);
let tmp: string;
let study: LoadedStudy;
const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), ...args], { encoding: 'utf8' });

/** CSV rows as records (no quoted commas in the columns read here). */
function records(file: string): Record<string, string>[] {
  const [head, ...lines] = readFileSync(file, 'utf8').trim().split('\n');
  const names = head.split(',');
  return lines.map((l) => {
    const cells = l.split(',');
    return Object.fromEntries(names.map((n, i) => [n, cells[i]]));
  });
}

before(async () => {
  const demo = loadStudy('demo');
  await ensureBuilt(demo, { quiet: true });
  // A copy of the demo beside its build, so the pilot database (default: beside the study file) and
  // the prediction stay out of the repository's demo.
  tmp = mkdtempSync(join(tmpdir(), 'legible-pilot-'));
  const yaml = readFileSync(demo.file, 'utf8').replace('onnx: model.onnx', `onnx: ${demo.paths.model}`).replace('images: data/fashion-mnist', `images: ${demo.paths.images}`);
  writeFileSync(join(tmp, 'study.yaml'), yaml);
  for (const f of ['manifest.json', 'report.html', 'stamp.json', 'img']) cpSync(join(demo.paths.build, f), join(tmp, 'build', f), { recursive: true });
  study = loadStudy(join(tmp, 'study.yaml'));
  await predictStudy(study, { log: () => {} });
});

after(() => {
  if (process.env.LEGIBLE_KEEP_TMP) console.log(`kept ${tmp}`);
  else if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe(`legible pilot: ${N} simulated participants through the server`, () => {
  let db: string;
  const prediction = () => JSON.parse(readFileSync(join(tmp, 'build/predict.json'), 'utf8')) as { trials: Record<string, number> };

  it('stores every answer in a database marked simulated, answering with the predicted probabilities', async () => {
    const result = await runPilot(study, { participants: N, log: () => {} });
    db = result.db!;
    assert.equal(db, join(tmp, 'pilot.db'), 'default: pilot.db beside the study file');
    assert.equal(result.sessions.length, N);
    assert.ok(result.sessions.every((s) => s.outcome === 'completed' || s.outcome === 'failed_checks'), 'every simulated participant finished');
    const sqlite = new Database(db, { readonly: true });
    try {
      assert.ok(sqlite.prepare("SELECT value FROM meta WHERE key = 'simulated'").get(), 'the database is marked simulated');
      assert.equal((sqlite.prepare("SELECT count(*) AS n FROM sessions WHERE status = 'finished'").get() as { n: number }).n, N);
      const rows = sqlite.prepare('SELECT trial_id, kind, feature, correct FROM trials').all() as { trial_id: string; kind: string; feature: string; correct: number }[];
      assert.equal(rows.length, result.sessions.reduce((a, s) => a + s.answered, 0), 'every answer stored once');
      // Correct answers as predicted: the count is within 4 SD of the sum of the trials' P(correct).
      const p = prediction().trials;
      const main = rows.filter((r) => r.kind === 'main');
      const expected = main.reduce((a, r) => a + p[r.trial_id], 0);
      const sd = Math.sqrt(main.reduce((a, r) => a + p[r.trial_id] * (1 - p[r.trial_id]), 0));
      const observed = main.reduce((a, r) => a + r.correct, 0);
      assert.ok(Math.abs(observed - expected) <= 4 * sd + 1, `${observed} correct main answers, ${expected.toFixed(1)} ± ${sd.toFixed(1)} predicted`);
      // Assignment spread the main trials over every study feature.
      const studyFeatures = new Set(JSON.parse(readFileSync(join(tmp, 'build/manifest.json'), 'utf8')).trials.filter((t: { kind: string }) => t.kind === 'main').map((t: { feature: string }) => t.feature));
      assert.deepEqual(new Set(main.map((r) => r.feature)), studyFeatures);
    } finally {
      sqlite.close();
    }
  });

  it('legible export marks every trial and participant row simulated', () => {
    const out = join(tmp, 'export');
    const run = cli('export', study.file, '--db', db, '--out', out);
    assert.equal(run.status, 0, run.stderr);
    const trials = records(join(out, 'trials.csv'));
    assert.ok(trials.length > N * 10);
    assert.ok(trials.every((t) => t.simulated === '1'), 'simulated = 1 in every trial row');
    const people = records(join(out, 'participants.csv'));
    assert.equal(people.length, N);
    assert.ok(people.every((p) => p.simulated === '1'), 'simulated = 1 in every participant row');
    assert.match(readFileSync(join(out, 'data-dictionary.md'), 'utf8'), /simulated.*legible pilot/);
  });

  it('legible analyze runs on it, with the simulated-data banner and the machine comparison', () => {
    const out = join(tmp, 'report');
    const run = cli('analyze', study.file, '--db', db, '--out', out, '--no-power', '--boot', '300', '--permutations', '200');
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /^SIMULATED DATA \(legible pilot\): no person took part\./);
    assert.match(run.stdout, /machine observer \(model\.onnx:block3 .*weak proxy\)\): Spearman's rho with per-feature accuracy -?\d\.\d\d \[/);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /<p class="simulated"><b>Simulated data\.<\/b>/);
    assert.match(html, /<h2>Machine observer<\/h2>/);
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { simulated: boolean; counts: { participants: number }; machine: { features: unknown[] } };
    assert.equal(results.simulated, true);
    assert.equal(results.counts.participants, N);
    assert.equal(results.machine.features.length, 12);
  });

  it('the admin API and dashboard (in Chromium) say the data is simulated', async () => {
    // A server on the pilot database is refused unless it serves simulated participants too.
    await assert.rejects(startServer({ port: 0, db, studies: [study.file], clientDir: join(tmp, 'none'), signals: false, watchMs: 0 }), /is a database of simulated participants .*serve real participants from another database file/);
    const srv = await startServer({ port: 0, db, studies: [study.file], clientDir: join(tmp, 'none'), signals: false, watchMs: 0, simulated: true });
    try {
      const { token } = srv.db.createAdminToken('test');
      const list = (await (await fetch(`${srv.url}/api/admin/studies`, { headers: { authorization: `Bearer ${token}` } })).json()) as { simulated?: boolean };
      assert.equal(list.simulated, true);
      const info = (await (await fetch(`${srv.url}/api/studies/demo`)).json()) as { simulated?: boolean };
      assert.equal(info.simulated, true);
      if (!existsSync(CHROMIUM)) return;
      // The dashboard in a real browser: the banner shows once the token is given.
      const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
      try {
        const page = await browser.newPage();
        await page.goto(`${srv.url}/admin`);
        await page.waitForSelector('#login:not([hidden])');
        assert.equal(await page.isVisible('#simulated'), false, 'no banner before the data is loaded');
        await page.fill('#token', token);
        await page.click('#login button[type=submit]');
        await page.waitForSelector('.study');
        assert.equal(await page.isVisible('#simulated'), true);
        assert.match((await page.textContent('#simulated'))!, /Simulated data\. Every session in this database is a simulated participant of legible pilot/);
      } finally {
        await browser.close();
      }
    } finally {
      await srv.close();
    }
  });
});

describe('legible pilot never mixes simulated and real participants', () => {
  it('refuses a database that holds real sessions', async () => {
    const live = join(tmp, 'live.db');
    const srv = await startServer({ port: 0, db: live, studies: [study.file], clientDir: join(tmp, 'none'), signals: false, watchMs: 0 });
    try {
      const res = await fetch(`${srv.url}/api/sessions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ study: 'demo', participant: 'real-1' }) });
      assert.ok(res.status < 300, await res.text());
    } finally {
      await srv.close();
    }
    await assert.rejects(runPilot(study, { participants: 1, db: live, log: () => {} }), /holds 1 sessions of real participants: simulated participants go into a database of their own/);
    const check = openDatabase(live);
    try {
      assert.equal(check.simulated, false, 'the live database is left unmarked');
      assert.equal((check.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 1, 'and its data as it was');
    } finally {
      check.close();
    }
  });

  it('talks to a server given by URL only when it serves simulated participants', async () => {
    const real = await startServer({ port: 0, db: join(tmp, 'real2.db'), studies: [study.file], clientDir: join(tmp, 'none'), signals: false, watchMs: 0 });
    try {
      await assert.rejects(runPilot(study, { participants: 1, url: real.url, log: () => {} }), /serves real participants .*legible serve --simulated/);
      assert.equal((real.db.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 0, 'nothing was sent to it');
    } finally {
      await real.close();
    }
    const sim = await startServer({ port: 0, db: join(tmp, 'sim2.db'), studies: [study.file], clientDir: join(tmp, 'none'), signals: false, watchMs: 0, simulated: true, limits: { createPerMinute: 0 } });
    try {
      const r = await runPilot(study, { participants: 2, url: sim.url, log: () => {} });
      assert.equal(r.db, null);
      assert.equal((sim.db.sqlite.prepare('SELECT count(*) AS n FROM sessions').get() as { n: number }).n, 2);
    } finally {
      await sim.close();
    }
  });

  it('legible analyze refuses data that mixes simulated and real rows', async () => {
    const trials = records(join(tmp, 'export/trials.csv'));
    const header = readFileSync(join(tmp, 'export/trials.csv'), 'utf8').split('\n')[0];
    const cols = header.split(',');
    const lines = trials.slice(0, 40).map((t, i) => cols.map((c) => (c === 'simulated' && i % 2 ? '0' : t[c])).join(','));
    const mixed = join(tmp, 'mixed.csv');
    writeFileSync(mixed, `${header}\n${lines.join('\n')}\n`);
    const run = cli('analyze', mixed, '--study', study.file, '--out', join(tmp, 'mixed-out'), '--no-power');
    assert.equal(run.status, 1);
    assert.match(run.stderr, /20 of 40 trials come from simulated participants .*never analysed together/);
    assert.ok(!existsSync(join(tmp, 'mixed-out/report.html')));
  });
});

describe('legible pilot --accuracy', () => {
  it('answers each condition with its given accuracy', async () => {
    const r = await runPilot(study, { participants: 4, accuracy: 'nmf=1,channels=0,catch=1', db: join(tmp, 'acc.db'), log: () => {} });
    assert.equal(r.sessions.length, 4);
    const sqlite = new Database(join(tmp, 'acc.db'), { readonly: true });
    try {
      const rows = sqlite.prepare("SELECT basis, kind, correct FROM trials WHERE kind != 'practice'").all() as { basis: string; kind: string; correct: number }[];
      assert.ok(rows.some((x) => x.basis === 'nmf') && rows.some((x) => x.basis === 'channels'));
      for (const x of rows) assert.equal(x.correct, x.kind === 'catch' || x.basis === 'nmf' ? 1 : 0, `${x.kind} ${x.basis}`);
    } finally {
      sqlite.close();
    }
  });

  it('names what is wrong in --accuracy', () => {
    const layers = ['block2', 'block3'];
    const bases = ['channels', 'nmf'];
    assert.throws(() => parseAccuracy('sae=0.8', layers, bases), /"sae" is no condition of this study .*bases: channels, nmf/);
    assert.throws(() => parseAccuracy('nmf=1.2', layers, bases), /nmf = "1.2" is not a probability/);
    assert.throws(() => parseAccuracy('nmf', layers, bases), /"nmf" is not CONDITION=P/);
    const both = parseAccuracy('nmf=0.9,block3=0.7', layers, bases);
    assert.throws(() => both({ layer: 'block3', basis: 'nmf', kind: 'main' }), /both nmf=0.9 and block3=0.7/);
    assert.equal(parseAccuracy('block3/nmf=0.8,nmf=0.9,block3=0.7', layers, bases)({ layer: 'block3', basis: 'nmf', kind: 'main' }), 0.8);
    assert.equal(parseAccuracy('*=0.6', layers, bases)({ layer: 'block2', basis: 'channels', kind: 'main' }), 0.6);
  });

  it('the CLI asks for a prediction or --accuracy', () => {
    rmSync(join(tmp, 'build/predict.json.bak'), { force: true });
    cpSync(join(tmp, 'build/predict.json'), join(tmp, 'build/predict.json.bak'));
    rmSync(join(tmp, 'build/predict.json'));
    try {
      const run = cli('pilot', study.file, '--participants', '2', '--db', join(tmp, 'none.db'));
      assert.equal(run.status, 1);
      assert.match(run.stderr, /no machine prediction for demo .*run `legible predict demo` first, or give --accuracy/);
      assert.ok(!existsSync(join(tmp, 'none.db')), 'no database made');
    } finally {
      cpSync(join(tmp, 'build/predict.json.bak'), join(tmp, 'build/predict.json'));
    }
  });
});
