// The demo study end to end, through the real server: simulated participants answer over the
// HTTP API (the server's clock is moved as they think), some of them in ways the study file's
// exclusion rules catch; then `legible export` writes trials, participants and the dictionary,
// and `legible analyze` applies the rules, fits the model and writes the report. Every number
// checked here is computed by the test from what the participants sent, not read back from the
// code under test.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { loadStudy, rng, type CreateSessionResponse } from '@legible/studies';
import { ensureBuilt } from '@legible/stimuli-pipeline';
import { startServer, type RunningServer } from '@legible/server';
import { analyze, type AnalysisResult } from '../src/analyze.ts';
import { parseCsvRecords } from '../src/csv.ts';
import { PARTICIPANT_COLUMNS } from '../src/participants.ts';
import { TRIAL_COLUMNS } from '../src/columns.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const T0 = Date.parse('2030-03-01T09:00:00Z');
const clock = { ms: T0 };
let tmp: string;
let srv: RunningServer;
let dbFile: string;

type Profile = 'good' | 'speeder' | 'straightliner' | 'catch-failer' | 'quitter';
interface Sent {
  participant: string;
  profile: Profile;
  session: string;
  answered: number;
  expected: number;
  catchCorrect: number;
  catchTotal: number;
  buttons: Set<number>;
  mainByBasis: Map<string, [number, number]>;
  seconds: number;
}
const sent: Sent[] = [];

const profiles: Profile[] = [...Array<Profile>(14).fill('good'), 'speeder', 'straightliner', 'catch-failer', 'quitter'];

async function call(method: string, path: string, body?: unknown, token?: string): Promise<any> {
  const res = await fetch(srv.url + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

before(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'legible-analysis-demo-'));
  await ensureBuilt(loadStudy('demo'), { quiet: true });
  dbFile = join(tmp, 'legible.db');
  srv = await startServer({ port: 0, db: dbFile, studies: ['demo'], clientDir: join(tmp, 'no-client'), signals: false, now: () => new Date(clock.ms) });
  const r = rng(99);
  for (const [i, profile] of profiles.entries()) {
    const participant = `sim-${String(i + 1).padStart(2, '0')}`;
    const s = (await call('POST', '/api/sessions', { study: 'demo', participant })) as CreateSessionResponse;
    // The server's task list, with the answer keys, decides what a correct answer is.
    const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as { seq: number; kind: string; basis: string; answer: 0 | 1 }[];
    const rec: Sent = { participant, profile, session: s.session, answered: 0, expected: tasks.length, catchCorrect: 0, catchTotal: 0, buttons: new Set(), mainByBasis: new Map(), seconds: 0 };
    const start = clock.ms;
    clock.ms += profile === 'speeder' ? 2_000 : 20_000 + r.int(20_000); // reading the instructions
    await call('POST', `/api/sessions/${s.session}/events`, { events: [{ type: 'browser_check', at: clock.ms, detail: { browser: 'Chrome', os: 'Linux', vsync_rate: 60 } }, { type: 'blur', at: clock.ms }] }, s.token);
    for (const t of tasks) {
      if (profile === 'quitter' && rec.answered === 5) break;
      const rt = profile === 'speeder' ? 300 + r.int(300) : 1500 + r.int(3000);
      clock.ms += rt + 400;
      let correctProb = t.basis === 'nmf' ? 0.85 : 0.6;
      if (t.kind === 'catch') correctProb = profile === 'catch-failer' ? 0 : 0.97;
      const right = r.float() < correctProb;
      let query: 0 | 1 = right ? t.answer : ((1 - t.answer) as 0 | 1);
      let confidence = (right ? 2 + r.int(2) : 1 + r.int(2)) as 1 | 2 | 3;
      let order: [0 | 1, 0 | 1] = r.float() < 0.5 ? [0, 1] : [1, 0];
      if (profile === 'straightliner') {
        query = 0;
        confidence = 3;
        order = [0, 1];
      }
      await call('PUT', `/api/sessions/${s.session}/trials/${t.seq}`, { query, confidence, rt_ms: rt, query_order: order, input: 'key', window: [1280, 800], screen: [1920, 1080], dpr: 1 }, s.token);
      rec.answered++;
      const correct = query === t.answer;
      if (t.kind !== 'practice') rec.buttons.add(order[0] === query ? 4 - confidence : 3 + confidence);
      if (t.kind === 'catch') {
        rec.catchTotal++;
        if (correct) rec.catchCorrect++;
      }
      if (t.kind === 'main') {
        const m = rec.mainByBasis.get(t.basis) ?? [0, 0];
        m[0] += correct ? 1 : 0;
        m[1]++;
        rec.mainByBasis.set(t.basis, m);
      }
    }
    if (profile !== 'quitter') {
      clock.ms += 1500;
      await call('POST', `/api/sessions/${s.session}/finish`, undefined, s.token);
    }
    rec.seconds = (clock.ms - start) / 1000;
    sent.push(rec);
    clock.ms += 60_000;
  }
});

after(async () => {
  await srv?.close();
  // LEGIBLE_KEEP_TMP=1 keeps the database, exports and report for a look.
  if (process.env.LEGIBLE_KEEP_TMP) console.log(`kept ${tmp}`);
  else if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** The exclusions the demo study file asks for, worked out from what each participant sent. */
function expectedExclusions(s: Sent): string[] {
  const out: string[] = [];
  if (s.profile === 'quitter') out.push('incomplete');
  if (s.catchTotal > 0 && s.catchCorrect / s.catchTotal < 0.5) out.push('catch_accuracy');
  if (s.profile !== 'quitter' && s.seconds < 30) out.push('total_time');
  if (s.buttons.size < 2) out.push('distinct_responses');
  return out;
}

let result: AnalysisResult;

test('legible export writes trials, participants (with exclusion flags) and a dictionary of every column', () => {
  const out = join(tmp, 'export');
  const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'export', 'demo', '--out', out, '--db', dbFile], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  const trials = parseCsvRecords(readFileSync(join(out, 'trials.csv'), 'utf8'));
  assert.equal(trials.length, sent.reduce((a, s) => a + s.answered, 0), 'one row per answered trial');
  const people = parseCsvRecords(readFileSync(join(out, 'participants.csv'), 'utf8'));
  assert.equal(people.length, sent.length, 'one row per session');
  const dict = readFileSync(join(out, 'data-dictionary.md'), 'utf8');
  for (const c of [...TRIAL_COLUMNS, ...PARTICIPANT_COLUMNS]) assert.match(dict, new RegExp(`\\| \`${c.name}\` \\|`), `dictionary describes ${c.name}`);
  for (const s of sent) {
    const row = people.find((p) => p.session === s.session);
    assert.ok(row, `participants.csv has session ${s.session}`);
    assert.equal(Number(row.trials_answered), s.answered);
    assert.equal(Number(row.trials_expected), s.expected);
    assert.equal(row.complete, s.profile === 'quitter' ? '0' : '1');
    assert.equal(Number(row.catch_trials), s.catchTotal);
    assert.equal(Number(row.catch_correct), s.catchCorrect);
    assert.equal(Number(row.distinct_responses), s.buttons.size, `buttons of ${s.participant}`);
    assert.ok(Math.abs(Number(row.total_time_s) - s.seconds) < 0.2, `total time ${row.total_time_s} vs ${s.seconds}`);
    assert.ok(Number(row.instruction_time_s) > (s.profile === 'speeder' ? 1 : 19), `instruction time ${row.instruction_time_s}`);
    assert.equal(row.browser, 'Chrome');
    assert.equal(row.blur_events, '1');
    assert.equal(row.window_w, '1280');
    const flagged = row.exclusion_reasons ? row.exclusion_reasons.split('; ').length : 0;
    assert.equal(flagged, expectedExclusions(s).length, `${s.participant} (${s.profile}): ${row.exclusion_reasons}`);
    assert.equal(row.excluded, expectedExclusions(s).length ? '1' : '0');
  }
  // JSON Lines as well, with the same rows.
  const jl = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'export', 'demo', '--out', join(tmp, 'export-jsonl'), '--format', 'jsonl', '--db', dbFile], { encoding: 'utf8' });
  assert.equal(jl.status, 0, jl.stderr);
  const lines = readFileSync(join(tmp, 'export-jsonl', 'trials.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, trials.length);
  assert.equal(typeof lines[0].correct, 'boolean');
  assert.deepEqual(Object.keys(lines[0]), TRIAL_COLUMNS.map((c) => c.name));
});

test('legible analyze applies the rules, reports each rule, and finds the simulated basis effect', async () => {
  const out = join(tmp, 'analysis');
  result = await analyze({ input: join(tmp, 'export', 'trials.csv'), out, boot: 500, permutations: 2000, power: { sims: 8, ns: [6, 12], postHoc: true } });
  const byRule = new Map(result.exclusions.rules.map((r) => [r.id, r]));
  for (const id of ['incomplete', 'catch_accuracy', 'total_time', 'distinct_responses'] as const) {
    const want = sent.filter((s) => expectedExclusions(s).includes(id)).length;
    assert.equal(byRule.get(id)!.excluded, want, `rule ${id}`);
    assert.ok(want > 0, `the simulation triggers ${id}`);
  }
  assert.equal(byRule.get('instruction_time')!.active, false, 'not configured in the demo study');
  const excluded = sent.filter((s) => expectedExclusions(s).length > 0);
  assert.equal(result.exclusions.excluded, excluded.length);
  assert.equal(result.counts.keptParticipants, sent.length - excluded.length);
  // Overlap: the straightliner may also fail the catch trials; the matrix says so consistently.
  const both = sent.filter((s) => expectedExclusions(s).includes('distinct_responses') && expectedExclusions(s).includes('catch_accuracy')).length;
  assert.equal(result.exclusions.overlap.distinct_responses.catch_accuracy, both);

  // Accuracy per basis × layer; pooled over layers the simulated nmf advantage shows.
  assert.deepEqual(result.factors, ['basis', 'layer', 'reference_kind']);
  assert.equal(result.cells.length, 4);
  const kept = sent.filter((s) => expectedExclusions(s).length === 0);
  for (const basis of ['channels', 'nmf']) {
    const [k, n] = kept.reduce(([a, b], s) => [a + s.mainByBasis.get(basis)![0], b + s.mainByBasis.get(basis)![1]], [0, 0]);
    const cells = result.cells.filter((c) => c.levels[0] === basis);
    const pooled = cells.reduce((a, c) => a + c.accuracy * c.trials, 0) / cells.reduce((a, c) => a + c.trials, 0);
    assert.ok(Math.abs(pooled - k / n) < 1e-12, `${basis} accuracy ${pooled} = ${k}/${n}`);
    for (const c of cells) {
      assert.ok(c.ciParticipants[0] <= c.accuracy && c.accuracy <= c.ciParticipants[1]);
      assert.ok(c.ciUnits[0] <= c.accuracy && c.accuracy <= c.ciUnits[1]);
    }
  }
  const fit = result.glmm!.fit;
  assert.deepEqual(fit.xNames, ['(Intercept)', 'basisnmf', 'layerblock3', 'basisnmf:layerblock3']);
  assert.ok(fit.converged);
  assert.equal(result.glmm!.lrt.length, 1, 'the interaction is tested');
  assert.ok(result.rankTest && result.rankTest.test === 'kruskal-wallis' && result.rankTest.pairwise.length === 6, 'features are nested in basis × layer: independent samples');
  assert.ok(result.permutation.some((p) => p.factor === 'basis' && p.within === 'layer = block2'));
  assert.equal(result.power!.rows.length, 2);

  // The report: one self-contained file, every figure as SVG and PNG, the gallery's images inside.
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, 'no external requests');
  assert.doesNotMatch(html, /<script|<link /, 'no scripts or linked files');
  assert.match(html, /<img src="data:image\/webp;base64,/, 'reference images embedded');
  assert.equal((html.match(/<svg /g) ?? []).length, 6, 'six inline figures');
  for (const name of ['accuracy-by-layer', 'feature-accuracy', 'rt-by-condition', 'confidence-by-condition', 'exclusions', 'power']) {
    assert.ok(existsSync(join(out, 'figures', `${name}.svg`)));
    const meta = await sharp(join(out, 'figures', `${name}.png`)).metadata();
    assert.equal(meta.format, 'png');
    assert.ok(meta.width! > 600, `${name}.png is ${meta.width} px wide`);
  }
  for (const f of ['accuracy.csv', 'features.csv', 'exclusions.csv', 'glmm.csv', 'ranef.csv', 'model.R', 'glmm-data.csv', 'results.json']) assert.ok(existsSync(join(out, f)), f);
  const exclusionsCsv = parseCsvRecords(readFileSync(join(out, 'exclusions.csv'), 'utf8'));
  assert.equal(exclusionsCsv.filter((r) => r.excluded === '1').length, excluded.length);
});

test('legible analyze <study> reads the database itself (the CLI path)', () => {
  const out = join(tmp, 'analysis-cli');
  mkdirSync(out);
  const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'analyze', 'demo', '--db', dbFile, '--out', out, '--no-power', '--boot', '200', '--permutations', '500'], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stderr);
  assert.match(run.stdout, /^pilot: 18 sessions — \d+ did not finish, \d+ excluded by the study's rules, \d+ excluded, \d+ analysed\n/);
  assert.ok(existsSync(join(out, 'data', 'participants.csv')), 'the export is kept beside the analysis');
  assert.ok(existsSync(join(out, 'report.html')));
  const again = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.equal(again.exclusions.excluded, result.exclusions.excluded);
  assert.equal(again.glmm.fit.logLik.toFixed(6), result.glmm!.fit.logLik.toFixed(6), 'the same model from the same data');
});
