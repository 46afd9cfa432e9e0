// A scripted participant for the browser tests: goes through whatever page is on screen (consent,
// full screen, instructions, the example, practice and break pages, trials, debrief) until the
// completion code (or another end page) shows. Robust to reloads and new tabs: it only ever
// looks at what is on screen now.
import type { Page } from 'playwright-core';

/** What the browser answered on one trial, in task-list terms. */
export interface Given {
  seq: number;
  /** Task-list index of the chosen query. */
  choice: number;
  confidence: number;
  key: number;
  /** The query images as drawn: [src of task-list query 0, of query 1]. */
  queries: [string, string];
  minSrc: string;
  maxSrc: string;
}

export interface TrialOnScreen {
  seq: number;
  queries: [string, string];
  minSrc: string;
  maxSrc: string;
  /** key (1–6) → task-list query and confidence */
  keys: { key: number; query: number; confidence: number }[];
}

export type End = 'completion' | 'unsynced' | 'incompatible' | 'declined' | 'message';

export interface WalkOptions {
  /** Which key to press on a trial (default: a seeded choice of 1–6). */
  choose?: (trial: TrialOnScreen, index: number) => number;
  /** Called before answering each trial (the place to inject faults); may reload the page. */
  beforeTrial?: (trial: TrialOnScreen, index: number) => Promise<'answer' | 'skip'>;
  /** Called when the annotated example is on screen, before it is answered. */
  onExample?: () => Promise<void> | void;
  /** Called on each page button before it is pressed. */
  onPage?: (name: string) => Promise<void> | void;
  timeoutMs?: number;
  /** Stop after this many answered trials (returns 'paused'). */
  stopAfter?: number;
}

const SCREEN =
  '[data-page="completion"] h1, [data-page="declined"] h1, .f2afc[data-state="ready"]:not([data-example]), .f2afc[data-example][data-state="ready"], .jspsych-content [data-choice-name], [data-completion-code], [data-page="unsynced"], [data-page="incompatible"], [data-page="message"] h1';

/** Reads the trial on screen (names no functions inside evaluate: tsx would wrap them in a helper the page lacks). */
export async function readTrial(page: Page): Promise<TrialOnScreen> {
  return page.evaluate(() => {
    const root = document.querySelector<HTMLElement>('.f2afc[data-state="ready"]')!;
    const [q0, q1, minSrc, maxSrc] = ['img[data-query="0"]', 'img[data-query="1"]', 'img[data-side="min"]', 'img[data-side="max"]'].map(
      (sel) => new URL(root.querySelector<HTMLImageElement>(sel)!.src).pathname,
    );
    return {
      seq: Number(root.dataset.seq),
      queries: [q0, q1] as [string, string],
      minSrc,
      maxSrc,
      keys: [...root.querySelectorAll<HTMLButtonElement>('button[data-key]')].map((b) => ({ key: Number(b.dataset.key), query: Number(b.dataset.query), confidence: Number(b.dataset.confidence) })),
    };
  });
}

/** A small seeded generator, so a failing run can be replayed. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/**
 * Walks the study from whatever is on screen to its end. Returns the answers given (in the order
 * given) and how it ended.
 */
export async function walk(page: Page, opts: WalkOptions = {}): Promise<{ given: Given[]; end: End | 'paused'; pages: string[] }> {
  const random = seeded(7);
  const choose = opts.choose ?? (() => 1 + Math.floor(random() * 6));
  const given: Given[] = [];
  const pages: string[] = [];
  const timeout = opts.timeoutMs ?? 30_000;
  for (let guard = 0; guard < 2000; guard++) {
    const el = await page.waitForSelector(SCREEN, { timeout });
    const what = await el.evaluate((e) => ({
      name: e.getAttribute('data-choice-name'),
      trial: e.classList.contains('f2afc'),
      example: e.hasAttribute('data-example'),
      page: (e.closest('[data-page]') ?? e.closest('.jspsych-content')?.querySelector('[data-page]'))?.getAttribute('data-page') ?? null,
      code: e.hasAttribute('data-completion-code') || e.closest('[data-page="completion"]') !== null,
    }));
    if (what.code) return { given, end: 'completion', pages };
    if (what.page === 'unsynced' || what.page === 'incompatible' || what.page === 'declined') return { given, end: what.page, pages };
    if (what.page === 'message' && !what.name) {
      // "Loading…", "Preparing…": transient; a message without buttons that stays is an end.
      const text = await el.textContent();
      if (/Loading|Preparing|Saving|Checking|Sending/.test(text ?? '')) {
        await page.waitForTimeout(100);
        continue;
      }
      return { given, end: 'message', pages };
    }
    if (what.example) {
      pages.push('example');
      await opts.onExample?.();
      await page.keyboard.press('1');
      await el.evaluate((e) => new Promise<void>((r) => (e.isConnected ? new MutationObserver((_, o) => !e.isConnected && (o.disconnect(), r())).observe(document.body, { childList: true, subtree: true }) : r())));
      continue;
    }
    if (what.trial) {
      const trial = await readTrial(page);
      if (!Number.isInteger(trial.seq)) throw new Error('walk: the trial on screen has no data-seq');
      if (opts.beforeTrial && (await opts.beforeTrial(trial, given.length)) === 'skip') continue;
      const key = choose(trial, given.length);
      const meaning = trial.keys.find((k) => k.key === key)!;
      // The trial may have gone (a reload in beforeTrial): answer only what is still there.
      const still = await page.$(`.f2afc[data-state="ready"][data-seq="${trial.seq}"]`);
      if (!still) continue;
      await page.keyboard.press(String(key));
      given.push({ seq: trial.seq, choice: meaning.query, confidence: meaning.confidence, key, queries: trial.queries, minSrc: trial.minSrc, maxSrc: trial.maxSrc });
      await page.waitForFunction((seq) => !document.querySelector(`.f2afc[data-seq="${seq}"]`), trial.seq, { timeout });
      if (opts.stopAfter !== undefined && given.length >= opts.stopAfter) return { given, end: 'paused', pages };
      continue;
    }
    if (what.name) {
      pages.push(`${what.page}:${what.name}`);
      await opts.onPage?.(what.name);
      if (what.name === 'decline') {
        await page.click('[data-choice-name="agree"]');
        continue;
      }
      await el.click();
      await page.waitForFunction((e) => !e.isConnected, el, { timeout }).catch(() => {});
      continue;
    }
  }
  throw new Error('walk: too many screens');
}

/**
 * The answer the server should hold per seq: the last one given. (A seq is shown again only if
 * its first answer never reached the outbox, e.g. a reload in the same instant.)
 */
export function bySeq(given: Given[]): Map<number, Given> {
  const m = new Map<number, Given>();
  for (const g of given) m.set(g.seq, g);
  return m;
}
