// Client benchmarks for client/BENCHMARKS.md. Run from the repository root:
//
//   node --import tsx client/bench/run.ts [--runs 5] [--mbit 10] [--rtt 40]
//
// 1. Bundle: the client built with its vite config; gzip (level 9, as the build's budget) and
//    brotli sizes of the JS and CSS.
// 2. Link → first trial under a throttled link (CDP Network.emulateNetworkConditions, default
//    10 Mbit/s both ways, 40 ms round trip, empty cache): the real server serves the demo study; a
//    scripted participant clicks through every page the moment it is usable. Marks taken in the
//    page (performance.now(), from navigation start): consent shown, first real trial drawn with
//    all four images, and the deliberate pause after the example (its "not recorded" note and the
//    inter-trial gap), which is interface time, not loading.
// 3. Bytes per trial: every response's encoded size (CDP loadingFinished) over a whole session,
//    by kind; and the demo's trials as they are sent (2 composed grids + 2 queries, WebP) against
//    the IMI way (18 references + 2 queries, each its own JPEG at the same cell size, same
//    quality, made with sharp from the same source images), response headers included alike.
import { mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync, brotliCompressSync, constants as zlib } from 'node:zlib';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { loadStudy } from '@legible/studies';
import { ensureBuilt } from '@legible/stimuli-pipeline';
import { startServer } from '@legible/server';
import { buildClient, launchChromium } from '../test/helpers.ts';
import { walk } from '../test/participant.ts';

const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '5' }, mbit: { type: 'string', default: '10' }, rtt: { type: 'string', default: '40' } } });
const RUNS = Number(args.runs);
const MBIT = Number(args.mbit);
const RTT = Number(args.rtt);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const kB = (b: number) => `${(b / 1024).toFixed(1)} kB`;

const tmp = mkdtempSync(join(tmpdir(), 'legible-bench-'));
try {
  // ── 1. bundle ──
  const dist = join(tmp, 'dist');
  await buildClient(dist);
  const bundle = readdirSync(join(dist, 'assets'))
    .filter((f) => /\.(js|css)$/.test(f))
    .map((f) => {
      const raw = readFileSync(join(dist, 'assets', f));
      return { file: f, raw: raw.length, gzip: gzipSync(raw, { level: 9 }).length, brotli: brotliCompressSync(raw, { params: { [zlib.BROTLI_PARAM_QUALITY]: 11 } }).length };
    });
  const html = statSync(join(dist, 'index.html')).size;

  // ── 2. the demo under a throttled link ──
  const loaded = loadStudy('demo');
  const manifest = await ensureBuilt(loaded, { quiet: true });
  const srv = await startServer({ port: 0, db: join(tmp, 'bench.db'), studies: ['demo'], clientDir: dist, signals: false });
  const browser = await launchChromium();
  const chromium = browser.version();
  const MARKS = `(() => {
    const marks = (window.__marks = {});
    const seen = (name, sel) => { if (!marks[name] && document.querySelector(sel)) marks[name] = performance.now(); };
    new MutationObserver(() => {
      seen('consent', '[data-page="consent"]');
      seen('example', '.f2afc[data-example][data-state="ready"]');
      seen('exampleAnswered', '.f2afc[data-example][data-state="feedback"]');
      seen('practiceIntro', '[data-page="practice-intro"]');
      seen('firstTrial', '.f2afc[data-state="ready"]:not([data-example])');
    }).observe(document, { childList: true, subtree: true, attributes: true, attributeFilter: ['data-state'] });
  })();`;
  interface Run {
    consent: number;
    firstTrial: number;
    pause: number;
    bytes: Record<string, { n: number; bytes: number; headers: number }>;
    apiTrialBytes: number;
    trials: number;
  }
  const runs: Run[] = [];
  for (let i = 0; i < RUNS; i++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
    await context.addInitScript({ content: MARKS });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false,
      latency: RTT,
      downloadThroughput: (MBIT * 1e6) / 8,
      uploadThroughput: (MBIT * 1e6) / 8,
    });
    const requests = new Map<string, { url: string; method: string; body: number; headers: number }>();
    const bytes: Run['bytes'] = {};
    let apiTrialBytes = 0;
    cdp.on('Network.requestWillBeSent', (e) => requests.set(e.requestId, { url: e.request.url, method: e.request.method, body: e.request.postData?.length ?? 0, headers: 0 }));
    cdp.on('Network.responseReceivedExtraInfo', (e) => {
      const r = requests.get(e.requestId);
      if (r) r.headers = (e.headersText?.length ?? 0) || Object.entries(e.headers).reduce((n, [k, v]) => n + k.length + String(v).length + 4, 0);
    });
    cdp.on('Network.loadingFinished', (e) => {
      const r = requests.get(e.requestId);
      if (!r) return;
      const path = new URL(r.url).pathname;
      const kind = path.startsWith('/stimuli/') ? 'stimuli' : path.startsWith('/assets/') ? 'assets' : path.startsWith('/api/') ? 'api' : path === '/' ? 'html' : 'other';
      const k = (bytes[kind] ??= { n: 0, bytes: 0, headers: 0 });
      k.n++;
      k.bytes += e.encodedDataLength;
      k.headers += r.headers;
      if (/\/api\/sessions\/[^/]+\/trials\//.test(path)) apiTrialBytes += e.encodedDataLength + r.body;
    });
    await page.goto(`${srv.url}/?study=demo&participant=bench-${Date.now()}-${i}`);
    const result = await walk(page, { timeoutMs: 60_000 });
    if (result.end !== 'completion') throw new Error(`bench run ${i} ended with ${result.end}`);
    const marks = (await page.evaluate(() => (window as unknown as { __marks: Record<string, number> }).__marks)) as Record<string, number>;
    runs.push({
      consent: marks.consent,
      firstTrial: marks.firstTrial,
      pause: marks.practiceIntro - marks.exampleAnswered,
      bytes,
      apiTrialBytes,
      trials: result.given.length,
    });
    await context.close();
  }
  await browser.close();
  await srv.close();

  // ── 3. bytes per trial: as sent vs. 20 separate JPEGs ──
  const build = loaded.paths.build;
  const images = loaded.paths.images;
  const features = new Map(manifest.features.map((f) => [f.id, f]));
  const size = (rel: string) => statSync(join(build, rel)).size;
  const { quality, resample } = loaded.study.stimuli;
  const px = loaded.study.stimuli.image_px ?? loaded.study.stimuli.cell_px; // the same pixels as legible stores
  const jpegCache = new Map<string, number>();
  const jpeg = async (id: string) => {
    let n = jpegCache.get(id);
    if (n === undefined) {
      const buf = await sharp(join(images, id))
        .toColourspace('srgb')
        .flatten({ background: '#ffffff' })
        .resize(px, px, { fit: 'cover', kernel: resample === 'nearest' ? 'nearest' : 'lanczos3' })
        .removeAlpha()
        .jpeg({ quality, mozjpeg: true })
        .toBuffer();
      n = buf.length;
      jpegCache.set(id, n);
    }
    return n;
  };
  let oursBody = 0;
  let jpegBody = 0;
  for (const t of manifest.trials) {
    oursBody += size(t.assets.min) + size(t.assets.max) + size(t.assets.queries[0]) + size(t.assets.queries[1]);
    const f = features.get(t.feature)!;
    const ids = [...f.references.min.slice(0, loaded.study.references.per_side), ...f.references.max.slice(0, loaded.study.references.per_side), ...t.query_images];
    for (const id of ids) jpegBody += await jpeg(id);
  }
  const nTrials = manifest.trials.length;
  const perRequestHeaders = median(runs.map((r) => r.bytes.stimuli.headers / r.bytes.stimuli.n));
  const ours = oursBody / nTrials + 4 * perRequestHeaders;
  const theirs = jpegBody / nTrials + 20 * perRequestHeaders;

  const out = {
    conditions: { mbit: MBIT, rtt_ms: RTT, runs: RUNS, chromium },
    bundle: { files: bundle, gzip: bundle.reduce((n, b) => n + b.gzip, 0), brotli: bundle.reduce((n, b) => n + b.brotli, 0), raw: bundle.reduce((n, b) => n + b.raw, 0), html },
    link: {
      consent_ms: runs.map((r) => Math.round(r.consent)),
      first_trial_ms: runs.map((r) => Math.round(r.firstTrial)),
      example_pause_ms: runs.map((r) => Math.round(r.pause)),
      first_trial_minus_pause_ms: runs.map((r) => Math.round(r.firstTrial - r.pause)),
    },
    session: runs.map((r) => ({ trials: r.trials, ...Object.fromEntries(Object.entries(r.bytes).map(([k, v]) => [k, { n: v.n, bytes: v.bytes }])), api_trial_bytes: r.apiTrialBytes })),
    per_trial: {
      trials: nTrials,
      ours_body: Math.round(oursBody / nTrials),
      jpeg20_body: Math.round(jpegBody / nTrials),
      response_headers_per_request: Math.round(perRequestHeaders),
      ours_wire: Math.round(ours),
      jpeg20_wire: Math.round(theirs),
      ratio: Math.round((ours / theirs) * 1000) / 1000,
      session_stimuli_per_trial: Math.round(median(runs.map((r) => r.bytes.stimuli.bytes / r.trials))),
      api_per_trial: Math.round(median(runs.map((r) => r.apiTrialBytes / r.trials))),
    },
  };
  console.log(JSON.stringify(out, null, 2));
  console.log(`
bundle: ${kB(out.bundle.gzip)} gzip, ${kB(out.bundle.brotli)} brotli (${kB(out.bundle.raw)} raw), index.html ${html} B
consent shown: median ${median(out.link.consent_ms)} ms; first trial: median ${median(out.link.first_trial_ms)} ms (of which the example's pause ${median(out.link.example_pause_ms)} ms) → ${median(out.link.first_trial_minus_pause_ms)} ms without it
per trial: ${kB(out.per_trial.ours_wire)} as sent vs ${kB(out.per_trial.jpeg20_wire)} as 20 JPEGs (ratio ${out.per_trial.ratio}); whole session ${kB(out.per_trial.session_stimuli_per_trial)} stimuli + ${out.per_trial.api_per_trial} B API per trial`);
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
