// The feature-2afc plugin in real Chromium: the test page (fixtures/plugin-page) is built with vite
// and served with the strict CSP; images are real PNGs made with sharp, optionally delayed.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { TrialAnswer } from '@legible/studies/contracts';
import { buttonMeaning, PLUGIN_VERSION, toTrialAnswer } from '../src/answer.ts';
import type { TrialOutcome, TrialSpec } from './fixtures/plugin-page/main.ts';
import { buildPage, launchChromium, serve } from './helpers.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const CELL = 84;
const GAP = 4;
const GRID = 3 * CELL + 2 * GAP;

let browser: Browser;
let server: { url: string; close: () => Promise<void> };
let outDir: string;
const images = new Map<string, Buffer>();

async function grid(hue: number, cell = CELL, gap = GAP): Promise<Buffer> {
  const cells = Array.from({ length: 9 }, (_, i) => ({
    input: { create: { width: cell, height: cell, channels: 3 as const, background: { r: (hue + i * 25) % 256, g: 90, b: (255 - hue) % 256 } } },
    left: (i % 3) * (cell + gap),
    top: Math.floor(i / 3) * (cell + gap),
  }));
  const side = 3 * cell + 2 * gap;
  return sharp({ create: { width: side, height: side, channels: 3, background: '#ffffff' } }).composite(cells).png().toBuffer();
}
const square = (background: string, cell = CELL) => sharp({ create: { width: cell, height: cell, channels: 3, background } }).png().toBuffer();

before(async () => {
  outDir = mkdtempSync(join(tmpdir(), 'legible-plugin-page-'));
  images.set('min.png', await grid(30));
  images.set('max.png', await grid(200));
  images.set('q0.png', await square('#2a9d8f'));
  images.set('q1.png', await square('#e9c46a'));
  // The same stimuli stored at a third of the size (a study's stimuli.image_px), gap scaled alike.
  images.set('min_small.png', await grid(30, CELL / 3, 1));
  images.set('max_small.png', await grid(200, CELL / 3, 1));
  images.set('q0_small.png', await square('#2a9d8f', CELL / 3));
  images.set('q1_small.png', await square('#e9c46a', CELL / 3));
  await buildPage(join(here, 'fixtures/plugin-page'), outDir);
  server = await serve(outDir, [
    async (_req, res, url) => {
      const m = /^\/img\/([\w.]+)$/.exec(url.pathname);
      if (!m) return false;
      const body = images.get(m[1]);
      const delay = Number(url.searchParams.get('delay') ?? 0);
      if (delay > 0) await new Promise((r) => setTimeout(r, delay));
      if (!body) res.writeHead(404).end();
      else res.writeHead(200, { 'Content-Type': 'image/png', 'Cache-Control': 'no-store' }).end(body);
      return true;
    },
  ]);
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await server?.close();
  if (outDir) rmSync(outDir, { recursive: true, force: true });
});

interface Session {
  context: BrowserContext;
  page: Page;
  problems: string[];
}

async function open(viewport = { width: 1280, height: 720 }): Promise<Session> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon/.test(m.location().url)) problems.push(`console: ${m.text()}`);
  });
  await page.goto(`${server.url}/`);
  await page.waitForFunction(() => window.ready === true);
  return { context, page, problems };
}

async function close(s: Session): Promise<void> {
  const csp = await s.page.evaluate(() => window.cspViolations);
  await s.context.close();
  assert.deepEqual(csp, [], 'no CSP violations');
  assert.deepEqual(s.problems, [], 'no page errors');
}

const params = (extra: Record<string, unknown> = {}, delay = 0) => {
  const q = delay ? `?delay=${delay}` : '';
  return { min_url: `/img/min.png${q}`, max_url: `/img/max.png${q}`, query_urls: [`/img/q0.png${q}`, `/img/q1.png${q}`], cell_px: CELL, ...extra };
};

/** Starts a trial; the returned promise settles when the trial ends. */
function start(page: Page, spec: TrialSpec): Promise<TrialOutcome> {
  return page.evaluate((s) => window.runTrial(s), spec);
}

const ready = (page: Page) => page.waitForSelector('.f2afc[data-state="ready"]');

type Box = { x: number; y: number; width: number; height: number };
async function box(page: Page, selector: string): Promise<Box> {
  const b = await page.locator(selector).boundingBox();
  assert.ok(b, `${selector} is visible`);
  return b;
}
const cx = (b: Box) => b.x + b.width / 2;

describe('feature-2afc plugin', () => {
  test('the plugin version matches client/package.json', () => {
    const pkg = JSON.parse(readFileSync(join(here, '../package.json'), 'utf8'));
    assert.equal(PLUGIN_VERSION, pkg.version);
  });

  test('button i means key i+1: upper very sure … lower very sure', () => {
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5].map(buttonMeaning),
      [
        { position: 'upper', confidence: 3 },
        { position: 'upper', confidence: 2 },
        { position: 'upper', confidence: 1 },
        { position: 'lower', confidence: 1 },
        { position: 'lower', confidence: 2 },
        { position: 'lower', confidence: 3 },
      ],
    );
    assert.throws(() => buttonMeaning(6), RangeError);
  });

  test('layout at 1280×720: grids on their sides, two stacked queries, six buttons, all on screen', async () => {
    const s = await open();
    for (const maxSide of ['right', 'left'] as const) {
      const done = start(s.page, { params: params({ max_side: maxSide, query_order: [1, 0] }) });
      await ready(s.page);
      const min = await box(s.page, 'img[data-side="min"]');
      const max = await box(s.page, 'img[data-side="max"]');
      const upper = await box(s.page, 'img[data-query][data-position="upper"]');
      const lower = await box(s.page, 'img[data-query][data-position="lower"]');
      if (maxSide === 'right') assert.ok(cx(min) < cx(upper) && cx(upper) < cx(max), 'min | queries | max');
      else assert.ok(cx(max) < cx(upper) && cx(upper) < cx(min), 'max | queries | min');
      assert.ok(Math.abs(cx(upper) - cx(lower)) < 2, 'queries in one column');
      assert.ok(upper.y + upper.height <= lower.y, 'upper above lower');
      assert.ok(Math.abs(min.width - max.width) < 1 && min.width >= GRID, 'grids drawn at the same size, not shrunk');
      assert.ok(Math.abs((min.x + max.x + max.width) / 2 - 640) < 40 || Math.abs((max.x + min.x + min.width) / 2 - 640) < 40, 'centred');

      const dom = await s.page.evaluate(() => ({
        queries: [...document.querySelectorAll<HTMLImageElement>('img[data-query]')].map((i) => ({ q: i.dataset.query, pos: i.dataset.position, src: i.getAttribute('src') })),
        grids: [...document.querySelectorAll<HTMLImageElement>('img[data-side]')].map((i) => ({ side: i.dataset.side, src: i.getAttribute('src') })),
        buttons: [...document.querySelectorAll<HTMLButtonElement>('button[data-confidence]')].map((b) => ({ q: b.dataset.query, c: b.dataset.confidence, key: b.dataset.key, text: b.textContent })),
        maxLabel: document.querySelector('.f2afc-side-max figcaption')?.textContent,
        minLabel: document.querySelector('.f2afc-side-min figcaption')?.textContent,
      }));
      assert.deepEqual(dom.queries, [
        { q: '1', pos: 'upper', src: '/img/q1.png' },
        { q: '0', pos: 'lower', src: '/img/q0.png' },
      ]);
      assert.deepEqual(dom.grids.sort((a, b) => a.side!.localeCompare(b.side!)), [
        { side: 'max', src: '/img/max.png' },
        { side: 'min', src: '/img/min.png' },
      ]);
      assert.deepEqual(
        dom.buttons.map((b) => [b.key, b.q, b.c]),
        [
          ['1', '1', '3'],
          ['2', '1', '2'],
          ['3', '1', '1'],
          ['4', '0', '1'],
          ['5', '0', '2'],
          ['6', '0', '3'],
        ],
      );
      assert.match(dom.buttons[0].text!, /very sure/);
      assert.match(dom.buttons[2].text!, /guessing/);
      assert.match(dom.maxLabel!, /have the pattern/);
      assert.match(dom.minLabel!, /lack the pattern/);

      for (const sel of ['img[data-side="min"]', 'img[data-side="max"]', 'button[data-key="1"]', 'button[data-key="6"]', '[data-feedback]']) {
        const b = await box(s.page, sel).catch(() => s.page.locator(sel).evaluate((e) => e.getBoundingClientRect().toJSON()));
        assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.width <= 1280 && b.y + b.height <= 720, `${sel} inside 1280×720: ${JSON.stringify(b)}`);
      }
      if (process.env.LEGIBLE_SCREENSHOTS) await s.page.screenshot({ path: join(process.env.LEGIBLE_SCREENSHOTS, `plugin-${maxSide}.png`) });
      await s.page.keyboard.press('1');
      const { data } = await done;
      assert.equal(data.max_side, maxSide);
    }
    await close(s);
  });

  test('images stored smaller than cell_px are drawn at the same size as full-size ones, pixelated on request', async () => {
    const s = await open();
    const sizes: Box[][] = [];
    const rendering: string[] = [];
    for (const small of [false, true]) {
      const at = (name: string) => `/img/${name}${small ? '_small' : ''}.png`;
      const extra = small ? { min_url: at('min'), max_url: at('max'), query_urls: [at('q0'), at('q1')], image_rendering: 'pixelated' } : {};
      const done = start(s.page, { params: params({ ...extra, query_order: [0, 1] }) });
      await ready(s.page);
      sizes.push([await box(s.page, 'img[data-side="min"]'), await box(s.page, 'img[data-side="max"]'), await box(s.page, 'img[data-query="0"]')]);
      rendering.push(await s.page.$eval('img[data-side="min"]', (img) => getComputedStyle(img).imageRendering));
      await s.page.keyboard.press('1');
      await done;
    }
    const [full, small] = sizes;
    for (let i = 0; i < full.length; i++) {
      assert.ok(Math.abs(small[i].width - full[i].width) <= 0.03 * full[i].width, `image ${i}: ${small[i].width} px wide vs ${full[i].width} px at full size`);
      assert.ok(Math.abs(small[i].height - full[i].height) <= 0.03 * full[i].height, `image ${i}: ${small[i].height} px high vs ${full[i].height} px`);
    }
    assert.ok(full[0].width >= GRID, 'the full-size grid is not shrunk');
    assert.deepEqual(rendering, ['auto', 'pixelated']);
    await close(s);
  });

  test('keys 1–6, Enter on a focused button and clicks map to (task-list query, confidence) under both orders', async () => {
    const s = await open();
    for (const order of [
      [0, 1],
      [1, 0],
    ] as const) {
      for (let button = 0; button < 6; button++) {
        for (const how of ['key', 'enter', 'click'] as const) {
          const done = start(s.page, { params: params({ query_order: order }) });
          await ready(s.page);
          const upperQuery = await s.page.getAttribute('img[data-position="upper"]', 'data-query');
          assert.equal(upperQuery, String(order[0]));
          const sel = `button[data-button="${button}"]`;
          const attrs = await s.page.$eval(sel, (b) => ({ q: Number(b.dataset.query), c: Number(b.dataset.confidence) }));
          if (how === 'key') await s.page.keyboard.press(String(button + 1));
          else if (how === 'enter') {
            await s.page.focus(sel);
            await s.page.keyboard.press('Enter');
          } else await s.page.click(sel);
          const { data, answers } = await done;
          const { position, confidence } = buttonMeaning(button);
          const expected = order[position === 'upper' ? 0 : 1];
          const label = `order ${order} button ${button} by ${how}`;
          assert.equal(data.query, expected, label);
          assert.equal(data.confidence, confidence, label);
          assert.deepEqual([data.query, data.confidence], [attrs.q, attrs.c], `${label}: the button's data attributes`);
          assert.equal(data.position, position, label);
          assert.equal(data.button, button, label);
          assert.deepEqual(data.query_order, order, label);
          assert.equal(data.input, how === 'click' ? 'pointer' : 'key', label);
          assert.equal(answers.length, 1, `${label}: on_response called once`);
          assert.deepEqual(answers[0], toTrialAnswer(data), `${label}: on_response got the trial's answer`);
          TrialAnswer.parse(answers[0]);
        }
      }
    }
    await close(s);
  });

  test('the query drawn upper is random when no order is given', async () => {
    const s = await open();
    const seen = new Set<string>();
    for (let i = 0; i < 16; i++) {
      const done = start(s.page, { params: params() });
      await ready(s.page);
      await s.page.keyboard.press('6');
      const { data } = await done;
      seen.add(JSON.stringify(data.query_order));
      assert.equal(data.query, data.query_order[1], 'key 6 picks the lower image, reported by its task-list index');
    }
    assert.deepEqual([...seen].sort(), ['[0,1]', '[1,0]']);
    await close(s);
  });

  test('buttons and keys do nothing during initial_wait_ms', async () => {
    const s = await open();
    const wait = 700;
    const done = start(s.page, { params: params({ initial_wait_ms: wait }) });
    await s.page.waitForSelector('.f2afc[data-state="waiting"]');
    assert.equal(await s.page.$$eval('button[data-confidence]', (bs) => bs.filter((b) => (b as HTMLButtonElement).disabled).length), 6);
    await s.page.keyboard.press('1');
    await s.page.click('button[data-key="2"]', { force: true });
    assert.equal(await s.page.getAttribute('.f2afc', 'data-state'), 'waiting', 'early responses ignored');
    await ready(s.page);
    assert.equal(await s.page.$$eval('button[data-confidence]:not([disabled])', (bs) => bs.length), 6);
    await s.page.keyboard.press('5');
    const { data } = await done;
    assert.equal(data.button, 4, 'the first response after the wait counts');
    assert.ok(data.enabled_ms - data.onset_ms >= wait - 1, `enabled ${data.enabled_ms - data.onset_ms} ms after onset`);
    assert.ok(data.enabled_ms - data.onset_ms < wait + 400);
    assert.ok(data.rt >= wait - 1);
    await close(s);
  });

  test('onset is the first painted frame after all images loaded; rt = response − onset', async () => {
    const s = await open();
    const delay = 400;
    const t0 = await s.page.evaluate(() => performance.now());
    const done = start(s.page, { params: params({}, delay) });
    // While the images load there is nothing to answer.
    await s.page.waitForTimeout(150);
    assert.equal(await s.page.$$eval('button[data-confidence]', (bs) => bs.length), 0);
    await ready(s.page);
    const enabledAt = await s.page.evaluate(() => performance.now());
    await s.page.waitForTimeout(500);
    await s.page.keyboard.press('3');
    const { data } = await done;
    const loadedAt = await s.page.evaluate(() => Math.max(...performance.getEntriesByType('resource').filter((e) => e.name.includes('/img/')).map((e) => (e as PerformanceResourceTiming).responseEnd)));
    assert.ok(data.onset_ms - t0 >= delay, `onset ${data.onset_ms - t0} ms after the start, images take ${delay}`);
    assert.ok(data.onset_ms >= loadedAt, `onset ${data.onset_ms} after the last image arrived at ${loadedAt}`);
    assert.ok(data.load_ms >= delay - 5);
    assert.ok(Math.abs(data.rt - (data.response_ms - data.onset_ms)) < 0.11, 'rt = response_ms − onset_ms');
    assert.ok(data.response_ms >= enabledAt + 500 - 1, 'response timestamp after the key press');
    assert.ok(data.rt >= 500 && data.rt < 3000, `rt ${data.rt}`);
    assert.deepEqual(data.window, [1280, 720]);
    assert.equal(data.dpr, 1);
    assert.equal(data.screen.length, 2);
    await close(s);
  });

  test('practice trials show the server feedback for about a second; main trials show none', async () => {
    const s = await open();
    // Correct, after a 150 ms round trip.
    let done = start(s.page, { params: params({ practice: true, query_order: [0, 1] }), feedback: { result: { correct: true }, delay_ms: 150 } });
    await ready(s.page);
    await s.page.keyboard.press('1');
    await s.page.waitForSelector('[data-feedback="correct"]');
    assert.match((await s.page.textContent('[data-feedback]'))!, /Correct/);
    assert.equal(await s.page.getAttribute('img.is-answer', 'data-query'), '0');
    let out = await done;
    assert.equal(out.data.correct, true);
    assert.equal(out.feedback_calls, 1);
    const shown = out.ended_ms - out.data.response_ms;
    assert.ok(shown >= 1150 - 5 && shown < 3000, `trial ended ${shown} ms after the response`);

    // Incorrect: the other picture is marked.
    done = start(s.page, { params: params({ practice: true, query_order: [1, 0] }), feedback: { result: { correct: false } } });
    await ready(s.page);
    await s.page.keyboard.press('6'); // lower = task-list query 0
    await s.page.waitForSelector('[data-feedback="incorrect"]');
    assert.match((await s.page.textContent('[data-feedback]'))!, /upper picture has the pattern/);
    assert.equal(await s.page.getAttribute('img.is-answer', 'data-position'), 'upper');
    out = await done;
    assert.equal(out.data.correct, false);
    assert.equal(out.data.query, 0);

    // No answer from the server in time: the trial goes on without feedback.
    done = start(s.page, { params: params({ practice: true, feedback_timeout_ms: 300 }), feedback: { result: { correct: true }, delay_ms: 5000 } });
    await ready(s.page);
    await s.page.keyboard.press('2');
    out = await done;
    assert.equal(out.data.correct, null);
    assert.ok(out.ended_ms - out.data.response_ms < 1000);

    // Main trial: feedback is never asked for.
    done = start(s.page, { params: params({ practice: false }), feedback: { result: { correct: true } } });
    await ready(s.page);
    await s.page.keyboard.press('4');
    out = await done;
    assert.equal(out.feedback_calls, 0);
    assert.equal(out.data.correct, null);
    assert.ok(out.ended_ms - out.data.response_ms < 300);
    await close(s);
  });

  test('simulate(): data-only and visual runs give valid TrialAnswers', async () => {
    const s = await open();
    for (let i = 0; i < 6; i++) {
      const practice = i % 2 === 0;
      const out = await start(s.page, {
        params: params({ practice, initial_wait_ms: 200 }),
        feedback: { result: { correct: i % 4 === 0 } },
        simulate: 'data-only',
      });
      assert.equal(out.answers.length, 1);
      const answer = TrialAnswer.parse(out.answers[0]);
      assert.deepEqual(answer, toTrialAnswer(out.data));
      assert.equal(out.data.query, out.data.query_order[buttonMeaning(out.data.button).position === 'upper' ? 0 : 1]);
      assert.ok(out.data.rt >= 200);
      assert.equal(out.data.correct, practice ? i % 4 === 0 : null);
    }
    const out = await start(s.page, {
      params: params({ query_order: [1, 0] }),
      simulate: 'visual',
      simulation_options: { data: { button: 4, rt: 600 } },
    });
    assert.equal(out.data.button, 4);
    assert.equal(out.data.query, 0, 'button 5 = lower = task-list query 0');
    assert.equal(out.data.confidence, 2);
    assert.ok(out.data.rt >= 590 && out.data.rt < 2500, `visual rt ${out.data.rt}`);
    TrialAnswer.parse(out.answers[0]);
    await close(s);
  });
});
