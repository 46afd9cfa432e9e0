// The report's figures as a reader sees them: rendered by Chromium (headless), measured in the page,
// and kept as screenshots (LEGIBLE_KEEP_TMP=1 keeps them). The accuracy figure shows, per condition,
// one dot per participant and the mean with its participant-level interval, and the chance line; a
// single-condition design draws no "all" axis; every figure is drawn at the same scale (so at the
// same font size); the confidence figure's "mean …" labels clear its legend; imported data gets no
// empty image cards; features that tie for easiest are said to tie.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : 'Chromium is not installed (Debian: apt-get install chromium)';
const tmp = mkdtempSync(join(tmpdir(), 'legible-figures-'));
let browser: Browser;
before(async () => {
  if (!skip) browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'] });
});
after(async () => {
  await browser?.close();
  if (process.env.LEGIBLE_KEEP_TMP) console.log(`kept ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
});

/** trials.csv with the given cells (basis × layer or one condition), `perfect` features always right. */
function write(dir: string, cells: { basis: string; layer: string }[], opts: { participants: number; features: number; perfect?: number }): void {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(77);
  const rows = ['participant,session,feature,layer,basis,kind,correct,rt_ms,confidence'];
  for (let p = 0; p < opts.participants; p++) {
    for (const c of cells) {
      for (let f = 0; f < opts.features; f++) {
        const always = f < (opts.perfect ?? 0);
        const correct = always || rng.float() < (c.basis === 'nmf' ? 0.8 : 0.62) ? 1 : 0;
        // Confidence mostly 3, so the stacked bars reach the top (where the "mean" label sits).
        rows.push(`P${p},S${p},${c.layer}/${c.basis}/${f},${c.layer},${c.basis},main,${correct},${1300 + rng.int(800)},${rng.float() < 0.8 ? 3 : 1 + rng.int(2)}`);
      }
    }
  }
  writeFileSync(join(dir, 'trials.csv'), `${rows.join('\n')}\n`);
}

async function open(report: string, shot: string) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(pathToFileURL(report).href);
  await page.screenshot({ path: shot, fullPage: true });
  return page;
}

test('four conditions: a dot per participant, the mean with its interval, chance; every figure at one scale; labels clear the legend', { skip }, async () => {
  const dir = join(tmp, 'four');
  write(dir, [
    { basis: 'channels', layer: 'block2' },
    { basis: 'nmf', layer: 'block2' },
    { basis: 'channels', layer: 'block3' },
    { basis: 'nmf', layer: 'block3' },
  ], { participants: 9, features: 5 });
  const out = join(tmp, 'out-four');
  const result = await analyze({ input: join(dir, 'trials.csv'), out, boot: 100, permutations: 100, power: false });
  const page = await open(join(out, 'report.html'), join(tmp, 'four.png'));
  // As a string: the page runs it as written (no transpiler helpers).
  const m = (await page.evaluate(`(() => {
    const figs = [...document.querySelectorAll('figure svg')];
    const scale = figs.map((s) => ({ label: s.getAttribute('aria-label'), scale: s.getBoundingClientRect().width / s.viewBox.baseVal.width }));
    const acc = figs.find((s) => s.getAttribute('aria-label').startsWith('Accuracy by'));
    const texts = (svg) => [...svg.querySelectorAll('text')].map((t) => ({ text: t.textContent, box: t.getBoundingClientRect() }));
    const conf = figs.find((s) => s.getAttribute('aria-label') === 'Confidence by condition');
    const ct = texts(conf);
    const means = ct.filter((t) => t.text.startsWith('mean '));
    const legendLabels = ct.filter((t) => /^[123] /.test(t.text));
    const overlaps = means.flatMap((a) => legendLabels.filter((b) => !(a.box.right <= b.box.left || b.box.right <= a.box.left || a.box.bottom <= b.box.top || b.box.bottom <= a.box.top)).map((b) => a.text + ' / ' + b.text));
    return {
      scale,
      dots: acc.querySelectorAll('circle.participant').length,
      means: acc.querySelectorAll('circle.mean').length,
      chance: texts(acc).some((t) => t.text === 'chance'),
      overlaps,
      meanLabels: means.length,
    };
  })()`)) as { scale: { label: string; scale: number }[]; dots: number; means: number; chance: boolean; overlaps: string[]; meanLabels: number };
  for (const s of m.scale) assert.ok(Math.abs(s.scale - 1) < 0.01, `${s.label} drawn at ${s.scale.toFixed(2)}× (fonts ${s.scale.toFixed(2)}× their size)`);
  assert.equal(m.dots, result.cells.reduce((a, c) => a + c.participants, 0), 'one dot per participant and condition');
  assert.equal(m.means, 4);
  assert.ok(m.chance);
  assert.equal(m.meanLabels, 4);
  assert.deepEqual(m.overlaps, [], 'the "mean" labels clear the legend');
  await page.close();
});

test('one condition: no "all" axis; a narrow figure keeps the common scale; tied easiest features are said to tie', { skip }, async () => {
  const dir = join(tmp, 'one');
  write(dir, [{ basis: 'nmf', layer: 'block2' }], { participants: 6, features: 12, perfect: 4 });
  const out = join(tmp, 'out-one');
  const result = await analyze({ input: join(dir, 'trials.csv'), out, boot: 100, permutations: 100, power: false });
  const perfect = result.units.filter((u) => u.accuracy === 1).length;
  assert.ok(perfect > 5, 'more features at 100% than the five cards');
  const page = await open(join(out, 'report.html'), join(tmp, 'one.png'));
  const m = (await page.evaluate(`(() => {
    const figs = [...document.querySelectorAll('figure svg')];
    return {
      all: figs.filter((s) => [...s.querySelectorAll('text')].some((t) => t.textContent === 'all')).map((s) => s.getAttribute('aria-label')),
      scale: figs.map((s) => s.getBoundingClientRect().width / s.viewBox.baseVal.width),
      body: document.body.innerText,
    };
  })()`)) as { all: string[]; scale: number[]; body: string };
  assert.deepEqual(m.all, [], 'no figure labels an axis "all"');
  for (const s of m.scale) assert.ok(Math.abs(s - 1) < 0.01, `scale ${s}`);
  assert.ok(m.body.includes(`${perfect} features tie at 100.0% correct: none of them is easier than the others; 5 of them are shown, in id order.`), 'the tie is said');
  assert.doesNotMatch(m.body, /\(no image\)/);
  await page.close();
});
