// `legible explore demo` end to end: the explorer built from the demo's real build and a real
// database of answers given through the server's API, then opened in Chromium from `legible
// serve`'s admin route: every card, a feature page, and "try an image" on onnxruntime-web, whose
// values must equal the pipeline's (manifest activations) within 1e-4 relative.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import sharp from 'sharp';
import type { Browser } from 'playwright-core';
import { build } from 'vite';
import { loadStudy, type CreateSessionResponse, type Manifest } from '@legible/studies';
import { decodeModel, ensureBuilt, nmfCodes, nmfGram, normalise } from '@legible/stimuli-pipeline';
import { startServer, type RunningServer } from '@legible/server';
import { launchChromium, serve } from '../../client/test/helpers.ts';
import { answer, bearer, call, createSession } from '../../server/test/http.ts';
import { buildExplorer, distDir, QUANTILES, type ExplorerData, type FeaturePage, type TryData } from '../src/index.ts';

const config = fileURLToPath(new URL('../vite.config.ts', import.meta.url));
const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-6);
/**
 * Relative difference, relative to the value or, for values near zero, to the feature's spread over
 * the reference images (its standard deviation): an NMF code near 0 is the solution of a
 * non-negative least-squares problem, where float32 round-off in the layer's mean (a different
 * summation order in another runtime) moves it by ~1e-7 in absolute terms.
 */
const relToFeature = (a: number, b: number, std: number) => Math.abs(a - b) / Math.max(Math.abs(b), std, 1e-6);

describe('legible explore demo', () => {
  let tmp: string;
  let srv: RunningServer;
  let manifest: Manifest;
  let dir: string;
  let data: ExplorerData;
  let dbFile: string;
  let allWrong = '';
  let adminToken: string;
  let browser: Browser | undefined;

  before(async () => {
    tmp = mkdtempSync(join(tmpdir(), 'legible-explorer-'));
    await build({ configFile: config, logLevel: 'warn' });
    const loaded = loadStudy('demo');
    manifest = await ensureBuilt(loaded, { quiet: true });
    dbFile = join(tmp, 'legible.db');
    // A clock that moves 3 s per reading, so that sessions last longer than the demo's minimum
    // total time (30 s) and only the exclusion rule this test means to break is broken.
    let clock = Date.parse('2026-03-01T09:00:00Z');
    srv = await startServer({ port: 0, host: '127.0.0.1', db: dbFile, studies: ['demo'], clientDir: join(tmp, 'no-client'), signals: false, now: () => new Date((clock += 3000)) });
    // Three participants through the real API: one right on every trial, one wrong on every trial
    // (catch trials too: the demo's catch_accuracy_min excludes it), one right on even seqs and on
    // every catch trial (wherever they fall, so that it is always kept).
    for (const [who, right] of [
      ['all-right', () => true],
      ['all-wrong', () => false],
      ['even', (seq: number, kind: string) => kind === 'catch' || seq % 2 === 0],
    ] as const) {
      const s = (await createSession(srv.url, 'demo', { participant: who })).body as CreateSessionResponse;
      if (who === 'all-wrong') allWrong = s.session;
      const tasks = JSON.parse(srv.db.sessionById(s.session)!.tasks) as { seq: number; kind: string; answer: 0 | 1 }[];
      for (const t of tasks) {
        const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer((right(t.seq, t.kind) ? t.answer : 1 - t.answer) as 0 | 1, { confidence: 2, rt_ms: 1000 + t.seq }), bearer(s.token));
        assert.equal(r.status, 200, JSON.stringify(r.body));
      }
    }
    adminToken = srv.db.createAdminToken('explorer test').token;
    ({ dir } = await buildExplorer(loaded, { data: dbFile, quiet: true, log: () => {} }));
    data = JSON.parse(readFileSync(join(dir, 'data/explorer.json'), 'utf8')) as ExplorerData;
  });
  after(async () => {
    await browser?.close();
    await srv?.close();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('one card per study feature, by layer × basis, with the manifest\'s exemplars and values', () => {
    const studyFeatures = new Set(manifest.trials.filter((t) => t.kind === 'main').map((t) => t.feature));
    assert.deepEqual(new Set(data.features.map((f) => f.id)), studyFeatures);
    assert.deepEqual(new Set(data.cells.map((c) => `${c.layer}/${c.basis}`)), new Set(manifest.bases.map((b) => `${b.layer}/${b.basis}`)));
    for (const f of data.features) {
      const m = manifest.features.find((x) => x.id === f.id)!;
      assert.deepEqual(f.exemplars.max.map((r) => r.id), m.references.max);
      assert.deepEqual(f.exemplars.min.map((r) => r.id), m.references.min);
      f.exemplars.max.forEach((r, i) => assert.ok(rel(r.value, m.activations!.max[i]) < 1e-5, `${f.id} max ${i}: ${r.value} vs ${m.activations!.max[i]}`));
      for (const r of [...f.exemplars.max, ...f.exemplars.min]) assert.ok(existsSync(join(dir, r.img)), r.img);
      assert.equal(f.machine_score, null, 'no machine score in this build: the card says "not predicted yet"');
    }
  });

  test('feature pages: the histogram counts every reference image; exemplars at quantiles climb from min to max', () => {
    for (const f of data.features) {
      const page = JSON.parse(readFileSync(join(dir, f.page), 'utf8')) as FeaturePage;
      assert.equal(page.histogram.references, manifest.dataset.reference);
      assert.equal(page.histogram.counts.reduce((a, b) => a + b, 0), manifest.dataset.reference);
      assert.deepEqual(page.quantiles.map((q) => q.q), QUANTILES);
      const mids = page.quantiles.map((q) => q.images[Math.min(1, q.images.length - 1)].value);
      for (let i = 1; i < mids.length; i++) assert.ok(mids[i] >= mids[i - 1], `${f.id}: quantile ${QUANTILES[i]} below ${QUANTILES[i - 1]}`);
      assert.ok(rel(page.quantiles[0].images[0].value, f.stats.min) < 1e-5, `${f.id} min`);
      assert.ok(rel(page.quantiles.at(-1)!.images.at(-1)!.value, f.stats.max) < 1e-5, `${f.id} max`);
      assert.deepEqual(page.trials.map((t) => t.id).sort(), manifest.trials.filter((t) => t.feature === f.id).map((t) => t.id).sort());
    }
  });

  test('human accuracy per feature equals the database\'s over the sessions the exclusions keep, with a participant-level interval around it', () => {
    const db = new Database(dbFile, { readonly: true });
    // all-wrong fails the catch trials (demo: catch_accuracy_min 0.5): its answers are left out, as `legible analyze` leaves them out.
    const rows = db.prepare("SELECT feature, AVG(correct) AS acc, COUNT(*) AS n, COUNT(DISTINCT participant) AS p FROM trials WHERE kind = 'main' AND session_id <> ? GROUP BY feature").all(allWrong) as { feature: string; acc: number; n: number; p: number }[];
    db.close();
    assert.ok(rows.length > 0);
    for (const r of rows) {
      const h = data.features.find((f) => f.id === r.feature)!.human!;
      assert.ok(h, `${r.feature}: no human figures (${data.human!.note})`);
      assert.ok(Math.abs(h.accuracy - r.acc) < 1e-12, r.feature);
      assert.equal(h.trials, r.n);
      assert.equal(h.participants, r.p);
      assert.equal(h.mean_confidence, 2);
      if (h.ci) assert.ok(h.ci[0] <= h.accuracy + 1e-12 && h.accuracy - 1e-12 <= h.ci[1], `${r.feature}: ${h.accuracy} in ${h.ci}`);
    }
    assert.equal(data.human!.participants, 2);
    assert.match(data.human!.note, /main trials of the sessions the study's exclusion rules keep \(2 of 3, as `legible analyze`\)/);
    assert.equal(data.human!.simulated, false);
  });

  test('the probe model, run by onnxruntime-node, gives the pipeline\'s values; it is truncated (no classifier)', async () => {
    const ort = await import('onnxruntime-node');
    const spec = JSON.parse(readFileSync(join(dir, 'data/try.json'), 'utf8')) as TryData;
    const bytes = readFileSync(join(dir, spec.model));
    const session = await ort.InferenceSession.create(bytes);
    const original = await ort.InferenceSession.create(readFileSync(loadStudy('demo').paths.model));
    assert.ok(!session.outputNames.some((o) => original.outputNames.includes(o)), 'the classifier\'s output is pruned away');
    // Truncated: of the original nodes, only those the taps depend on (the classifier after block3 is gone).
    const originalNodes = (decodeModel(readFileSync(loadStudy('demo').paths.model)).graph!.node ?? []).map((n) => n.output![0]);
    const probeNodes = new Set((decodeModel(bytes).graph!.node ?? []).map((n) => n.output![0]));
    const kept = originalNodes.filter((o) => probeNodes.has(o));
    assert.ok(kept.length < originalNodes.length, `${kept.length} of ${originalNodes.length} original nodes kept`);
    assert.ok(!probeNodes.has(original.outputNames[0]), 'the logits are not computed');
    const [h, w] = spec.size;
    let checked = 0;
    for (const im of spec.images) {
      const pixels = await sharp(join(dir, im.input)).extractChannel(0).raw().toBuffer();
      const x = new Float32Array(h * w);
      normalise(pixels, spec.input, x);
      const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [1, 1, h, w]) });
      for (const f of spec.features) {
        const m = manifest.features.find((x) => x.id === f.id)!;
        const layer = spec.layers.find((l) => l.name === f.layer)!;
        const v =
          f.basis === 'channels'
            ? (out[layer.outputs.mean].data as Float32Array)[f.index]
            : nmfCodes(out[layer.outputs.mean].data as Float32Array, 1, spec.nmf[f.layer].W, nmfGram(spec.nmf[f.layer].W, spec.nmf[f.layer].k, layer.channels), spec.nmf[f.layer].k, layer.channels)[f.index];
        const at = m.references.max.indexOf(im.id);
        if (at >= 0) {
          assert.ok(relToFeature(v, m.activations!.max[at], m.stats.std) < 1e-4, `${f.id} on ${im.id}: ${v} vs the manifest's ${m.activations!.max[at]}`);
          checked++;
        }
        assert.ok(relToFeature(v, im.values[f.id], m.stats.std) < 1e-4, `${f.id} on ${im.id}: ${v} vs the build's ${im.values[f.id]}`);
      }
    }
    assert.ok(checked >= data.features.length, `${checked} values checked against the manifest`);
  });

  test('Chromium: the admin route refuses a participant, signs the admin in, renders every card and a feature page', async () => {
    // Machine scores as `legible predict` adds them to the manifest (copied onto the cards): shown
    // when present (with the weak-proxy label), "not predicted yet" otherwise.
    const file = join(dir, 'data/explorer.json');
    const shown = JSON.parse(readFileSync(file, 'utf8')) as ExplorerData;
    shown.features[0].machine_score = { p: 0.62, lo: 0.55, hi: 0.69, n_pairs: 200, observer: 'dreamsim.onnx', weak_proxy: false };
    shown.features[1].machine_score = { p: 0.51, lo: 0.44, hi: 0.58, n_pairs: 200, observer: 'model block3', weak_proxy: true };
    writeFileSync(file, JSON.stringify(shown));
    browser = await launchChromium();
    const page = await browser.newPage();
    const requests: string[] = [];
    page.on('request', (r) => requests.push(r.url()));
    const base = `${srv.url}/admin/explorer/demo/explorer/`;
    const refused = await page.goto(base);
    assert.equal(refused!.status(), 401);
    assert.equal(await page.locator('article.card').count(), 0);
    await page.fill('input[name=token]', adminToken);
    await Promise.all([page.waitForURL(base), page.click('button[type=submit]')]);
    await page.waitForSelector('body[data-ready="#"]');
    assert.equal(await page.locator('article.card').count(), data.features.length);
    assert.equal(await page.evaluate(() => globalThis.crossOriginIsolated), true, 'COOP/COEP make the page cross-origin isolated');
    for (const [i, f] of data.features.entries()) {
      const card = page.locator(`article.card[data-feature="${f.id}"]`);
      assert.equal(await card.locator('.strip').first().locator('img').count(), f.exemplars.max.length);
      assert.match((await card.locator('[data-field=human]').textContent())!, /%.*trials.*participant/);
      const machine = await card.locator('[data-field=machine]').textContent();
      if (i === 0) assert.equal(machine, '62.0 % [55.0 %, 69.0 %] · 200 pairs · dreamsim.onnx ');
      else if (i === 1) assert.equal(machine, '51.0 % [44.0 %, 58.0 %] · 200 pairs · model block3 weak proxy');
      else assert.equal(machine, 'not predicted yet');
    }
    const broken = await page.evaluate(() => [...document.images].filter((i) => i.complete && i.naturalWidth === 0).map((i) => i.src));
    assert.deepEqual(broken, []);
    const f = data.features[0];
    await page.click(`article.card[data-feature="${f.id}"] h3 a`);
    await page.waitForSelector(`body[data-ready="#feature=${encodeURIComponent(f.id)}"]`);
    assert.equal(await page.locator('svg.hist rect.bar').count(), 40);
    assert.equal(await page.locator('#quantiles .strip').count(), QUANTILES.length);
    assert.equal(await page.locator('.trial').count(), manifest.trials.filter((t) => t.feature === f.id).length);
    assert.ok(!requests.some((u) => u.includes('/ort/') || u.includes('/model/') || u.includes('try.json')), 'no runtime or model before the panel opens');
    await page.close();
  });

  /** The demo's build folder on a plain file server, and the explorer's overview open in Chromium. */
  const overviewFromFiles = async () => {
    browser ??= await launchChromium();
    const files = await serve(loadStudy('demo').paths.build);
    const page = await browser.newPage();
    await page.goto(`${files.url}/explorer/index.html`);
    await page.waitForSelector('body[data-ready="#"]');
    return { files, page };
  };

  test('Chromium: from a plain file server (the build folder served as it is), the overview and a feature page render', async () => {
    const { files, page } = await overviewFromFiles();
    try {
      assert.equal(await page.locator('article.card').count(), data.features.length);
      await page.goto(`${files.url}/explorer/index.html#feature=${encodeURIComponent(data.features[1].id)}`);
      await page.waitForSelector(`body[data-ready="#feature=${encodeURIComponent(data.features[1].id)}"]`);
      assert.equal(await page.locator('#feature-title').textContent(), data.features[1].id);
      const missing = await page.evaluate(async () => (await Promise.all([...document.images].map(async (i) => ((await fetch(i.src)).ok ? null : i.src)))).filter((u) => u !== null));
      assert.ok((await page.locator('.trial img').count()) > 0);
      assert.deepEqual(missing, [], 'every image, the trial images (../img) included, resolves from the build folder');
      await page.close();
    } finally {
      await files.close();
    }
  });

  test('Chromium: try an image — onnxruntime-web\'s values equal the pipeline\'s within 1e-4 (of the value; of the feature\'s spread for values near 0)', async () => {
    browser ??= await launchChromium();
    const context = await browser.newContext({ extraHTTPHeaders: { authorization: `Bearer ${adminToken}` } });
    const page = await context.newPage();
    await page.goto(`${srv.url}/admin/explorer/demo/explorer/`);
    await page.waitForSelector('body[data-ready="#"]');
    await page.click('#try-open');
    await page.waitForSelector('#try[data-backend]', { timeout: 60_000 });
    const backend = await page.locator('#try').getAttribute('data-backend');
    assert.match(backend!, /wasm \(\d+ threads?, cross-origin isolated\)/);
    const spec = JSON.parse(readFileSync(join(dir, 'data/try.json'), 'utf8')) as TryData;
    let compared = 0;
    let worst = 0;
    /** Per basis: the largest difference relative to the value, and relative to the value or the feature's spread. */
    const worstBy: Record<string, [number, number]> = {};
    for (const im of spec.images) {
      await page.selectOption('#try-pick', im.id);
      await page.waitForSelector(`#try[data-ran="${im.id}"]`, { timeout: 30_000 });
      const rows = await page.locator('#try-table tr[data-feature]').evaluateAll((trs) => trs.map((tr) => ({ id: tr.getAttribute('data-feature')!, value: Number(tr.getAttribute('data-value')) })));
      assert.equal(rows.length, data.features.length);
      for (const r of rows) {
        const m = manifest.features.find((x) => x.id === r.id)!;
        const at = m.references.max.indexOf(im.id);
        const expected = at >= 0 ? m.activations!.max[at] : im.values[r.id];
        assert.ok(relToFeature(r.value, expected, m.stats.std) < 1e-4, `${r.id} on ${im.id}: browser ${r.value}, pipeline ${expected}`);
        worst = Math.max(worst, rel(r.value, expected));
        const w = (worstBy[m.basis] ??= [0, 0]);
        w[0] = Math.max(w[0], rel(r.value, expected));
        w[1] = Math.max(w[1], relToFeature(r.value, expected, m.stats.std));
        compared++;
      }
      assert.equal(await page.locator('#try-table .heat canvas').count(), data.features.length);
    }
    // A photo given through the file input (the drop path): a data set file at the model's size, so
    // no resampling, gives the pipeline's values too.
    const im = spec.images[0];
    await page.setInputFiles('#try-file', join(loadStudy('demo').paths.images, im.id));
    await page.waitForSelector(`#try[data-ran="${im.id.split('/').at(-1)}"]`, { timeout: 30_000 });
    const dropped = await page.locator('#try-table tr[data-feature]').evaluateAll((trs) => trs.map((tr) => ({ id: tr.getAttribute('data-feature')!, value: Number(tr.getAttribute('data-value')) })));
    assert.equal(dropped.length, data.features.length);
    for (const r of dropped) {
      const m = manifest.features.find((x) => x.id === r.id)!;
      assert.ok(relToFeature(r.value, im.values[r.id], m.stats.std) < 1e-4, `dropped ${im.id}, ${r.id}: browser ${r.value}, pipeline ${im.values[r.id]}`);
    }
    assert.ok(compared >= spec.images.length * data.features.length);
    console.log(`try an image: ${compared} values over ${spec.images.length} images; largest difference relative to the value ${worst.toExponential(2)}; per basis, relative to the value / to the value or the feature's spread: ${Object.entries(worstBy).map(([b, [a, f]]) => `${b} ${a.toExponential(2)} / ${f.toExponential(2)}`).join(', ')}`);
    await context.close();
  });

  test('the explorer shell is small and the participant bundle has none of it', async () => {
    const { gzipSync } = await import('node:zlib');
    const { readdirSync } = await import('node:fs');
    const assets = readdirSync(join(distDir(), 'assets'));
    const shell = assets.reduce((n, a) => n + gzipSync(readFileSync(join(distDir(), 'assets', a)), { level: 9 }).length, 0);
    assert.ok(shell < 150 * 1024, `explorer shell ${shell} B gzip`);
    // The participant client, built as it ships: no module of the explorer or onnxruntime-web in it.
    const out = join(tmp, 'client-dist');
    const result = (await build({ configFile: fileURLToPath(new URL('../../client/vite.config.ts', import.meta.url)), logLevel: 'silent', build: { outDir: out, emptyOutDir: true, write: false } })) as { output: { type: string; moduleIds?: string[] }[] } | { output: { type: string; moduleIds?: string[] }[] }[];
    const outputs = (Array.isArray(result) ? result : [result]).flatMap((r) => r.output);
    const modules = outputs.flatMap((o) => o.moduleIds ?? []);
    assert.ok(modules.length > 0);
    const root = fileURLToPath(new URL('../..', import.meta.url));
    assert.deepEqual(modules.map((m) => relative(root, m)).filter((m) => m.includes('onnxruntime') || m.startsWith('explorer/') || m.includes('stimuli-pipeline')), []);
  });

  // Last: it rebuilds the explorer in place from a trials file of simulated participants.
  test('Chromium: data of simulated participants (legible pilot) is labelled "simulated (pilot)" on every human figure', async () => {
    const db = new Database(dbFile, { readonly: true });
    const rows = db.prepare('SELECT study, mode, session_id, participant, trial_id, kind, feature, correct, confidence, rt_ms FROM trials ORDER BY session_id, seq').all() as Record<string, string | number>[];
    db.close();
    const csv = join(tmp, 'simulated', 'trials.csv');
    mkdirSync(join(tmp, 'simulated'));
    writeFileSync(csv, 'study,mode,session,participant,trial_id,kind,feature,correct,confidence,rt_ms,simulated\n' + rows.map((r) => `${r.study},${r.mode},${r.session_id},${r.participant},${r.trial_id},${r.kind},${r.feature},${r.correct},${r.confidence},${r.rt_ms},1\n`).join(''));
    const { dir: simDir } = await buildExplorer(loadStudy('demo'), { data: csv, noTry: true, quiet: true, log: () => {} });
    const sim = JSON.parse(readFileSync(join(simDir, 'data/explorer.json'), 'utf8')) as ExplorerData;
    assert.equal(sim.human!.simulated, true);
    assert.match(sim.human!.note, /^SIMULATED participants \(legible pilot\), no person took part; /);
    const { files, page } = await overviewFromFiles();
    try {
      const texts = await page.locator('[data-field=human]').allTextContents();
      assert.equal(texts.length, sim.features.length);
      for (const t of texts) assert.match(t, /^simulated \(pilot\) \d.*%.*trials/);
      assert.match((await page.locator('body').textContent())!, /Simulated \(pilot\) answers: \d+ trials/);
      await page.close();
    } finally {
      await files.close();
    }
  });
});
