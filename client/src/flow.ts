// The task part of the timeline, built once the session (task list + resume point) is known:
//
//   fresh start:  instructions → annotated example (not recorded; a trial the server picked from
//                 outside the task list) → practice intro
//   practice:     round r: preload → trials with feedback → the server's verdict on the round →
//                 "practice complete" (go on) or "let's practise once more" (round r+1)
//   main:         per block of `blockSize` trials: a break page (not before the first block of
//                 a page load) → preload with a progress bar → trials with the progress bar
//
// The server decides whether a round passed (the client never holds answer keys): the
// acknowledgement of a round's last answer carries feedback.round. Rounds after the one that
// ended practice are skipped — never shown, never sent. The verdict waits for the server only
// where it decides something: without a criterion practice ends after its one round at once; after
// the last round it ends anyway (the score is shown if it comes within VERDICT_WAIT_MS); otherwise
// the page says it is reconnecting after VERDICT_WAIT_MS and goes on when the verdict arrives.
import HtmlButtonResponsePlugin from '@jspsych/plugin-html-button-response';
import type { JsPsych } from 'jspsych';
import type { CreateSessionResponse, TaskTrial, TrialAck } from './api.ts';
import type { EventLog } from './events.ts';
import type { Outbox } from './outbox.ts';
import AwaitPlugin from './plugin-await.ts';
import FeatureTwoAfcPlugin, { type Answer } from './plugin-feature-2afc.ts';
import PreloadPlugin, { imageCache, type PreloadData } from './preload.ts';

/** How long a practice round's verdict waits for the server before the page says it is reconnecting. */
export const VERDICT_WAIT_MS = 4000;
export const RECONNECTING_VERDICT =
  'Reconnecting… We cannot reach the server to check your practice answers. Your answers are kept, and the study goes on by itself as soon as the connection is back.';

export type RoundSummary = NonNullable<NonNullable<TrialAck['feedback']>['round']>;

export interface FlowContext {
  jsPsych: JsPsych;
  config: CreateSessionResponse['config'];
  outbox: Outbox;
  events: EventLog;
  /** Main trials per block (a break between blocks; images preloaded per block). */
  blockSize: number;
  interTrialMs: number;
  preloadMaxMs: number;
  /** First visit of this session: instructions and the example come first. */
  fresh: boolean;
  /** The study's instructions (HTML from the server). */
  instructionsHtml: string;
  /** Seqs recorded on the server or waiting in the outbox when the page started: never shown. */
  done?: ReadonlySet<number>;
  /** The annotated example (images that appear nowhere in the task list); none: no example screen. */
  example?: CreateSessionResponse['example'];
  /** Longest wait for a practice round's verdict before saying so (default VERDICT_WAIT_MS). */
  verdictWaitMs?: number;
  /** The server's resume point now (asks again), for a round verdict that did not arrive. */
  resumeAt: () => Promise<number>;
}

/** Everything about practice the pages need, updated as rounds end. */
export interface PracticeState {
  over: boolean;
  /** The last round's verdict (null when unknown). */
  last: RoundSummary | null;
}

const urlsOf = (trials: TaskTrial[]) => [...new Set(trials.flatMap((t) => [t.min_url, t.max_url, ...t.query_urls]))];

/** A page with one button (data-page=`kind`, data-choice-name=`name`); `html` may be computed when it is shown. */
export function buttonPage(kind: string, html: string | (() => string), label: string | (() => string), name: string | (() => string), autofocus = true): any {
  const value = <T,>(v: T | (() => T)) => (typeof v === 'function' ? (v as () => T)() : v);
  return {
    type: HtmlButtonResponsePlugin,
    stimulus: () => `<div class="page" data-page="${kind}">${value(html)}</div>`,
    choices: () => [value(label)],
    button_html: (choice: string) => `<button type="button" class="jspsych-btn" data-choice-name="${value(name)}">${choice}</button>`,
    data: { step: kind },
    on_load: () => {
      // Enter continues (keyboard use); not on consent-like pages, where a stray key must not agree.
      if (autofocus) document.querySelector<HTMLButtonElement>(`.jspsych-content [data-choice-name]`)?.focus({ preventScroll: true });
    },
  };
}

export function taskTimeline(trials: TaskTrial[], start: number, ctx: FlowContext, practice: PracticeState): any[] {
  const sorted = [...trials].sort((a, b) => a.seq - b.seq);
  const main = sorted.filter((t) => !t.practice);
  const practiceTrials = sorted.filter((t) => t.practice);
  const rounds: TaskTrial[][] = [];
  for (const t of practiceTrials) (rounds[t.practice_round ?? 0] ??= []).push(t);
  const roundList = rounds.filter((r) => r !== undefined);
  const firstMain = main[0]?.seq ?? sorted.length;
  const P = roundList[0]?.length ?? 0;
  const R = roundList.length;
  const criterion = ctx.config.practice_criterion;
  const needed = criterion === null ? 0 : Math.min(P, Math.ceil(criterion * P - 1e-9));
  const maxSide = ctx.config.max_side;
  const rule = `Pick the picture in the middle that fits the group on the <strong>${maxSide}</strong>.`;

  const done = ctx.done ?? new Set<number>();
  const ahead = (t: TaskTrial) => t.seq >= start && !done.has(t.seq);
  const mainTotal = main.length;
  let mainDone = main.filter((t) => !ahead(t)).length;
  const setProgress = () => {
    if (ctx.jsPsych.progressBar && mainTotal > 0) ctx.jsPsych.progressBar.progress = Math.min(1, mainDone / mainTotal);
  };
  setProgress();

  const nodes: any[] = [];
  const preload = (label: string, urls: string[], next: string[]) => ({
    type: PreloadPlugin,
    urls,
    max_load_time_ms: ctx.preloadMaxMs,
    data: { step: 'preload', block: label },
    on_start: () => document.body.classList.remove('show-progress'),
    on_finish: (data: PreloadData) => {
      if (data.failed_first.length) {
        ctx.events.log('preload_failed', {
          block: label,
          images: data.images,
          failed_first: data.failed_first.length,
          failed: data.failed.length,
          timed_out: data.timed_out,
          ms: data.duration_ms,
          urls: data.failed_first.join(' '),
        });
      }
      // Keep this block's and the next one's images; fetch the next one while this one runs.
      imageCache.retainOnly(new Set([...urls, ...next]));
      imageCache.prefetch(next);
    },
  });
  const trialNode = (t: TaskTrial, opts: { example?: boolean } = {}) => ({
    type: FeatureTwoAfcPlugin,
    min_url: t.min_url,
    max_url: t.max_url,
    query_urls: [...t.query_urls],
    // Upper is task-list query 0: the server put the two queries in an order drawn from the
    // participant's stored seed (assign.ts), so every reload and device draws the same screen.
    query_order: [0, 1],
    max_side: ctx.config.max_side,
    columns: ctx.config.columns,
    per_side: ctx.config.per_side,
    cell_px: ctx.config.cell_px,
    image_rendering: ctx.config.pixelated ? 'pixelated' : 'auto',
    initial_wait_ms: ctx.config.initial_wait_ms,
    practice: !opts.example && t.practice,
    example: opts.example ?? false,
    on_response: opts.example
      ? null
      : (answer: Answer) => {
          ctx.outbox.submit(t.seq, answer).catch(() => {});
        },
    feedback: !opts.example && t.practice ? () => ctx.outbox.ack(t.seq).then((ack) => (ack.feedback ? { correct: ack.feedback.correct } : null)) : null,
    post_trial_gap: ctx.interTrialMs,
    data: { step: opts.example ? 'example' : 'trial', seq: opts.example ? null : t.seq, block: opts.example ? 'example' : t.practice ? 'practice' : 'main' },
    on_load: () => {
      // DOM hook for tests: which seq is on screen.
      if (!opts.example) document.querySelector<HTMLElement>('.f2afc')?.setAttribute('data-seq', String(t.seq));
    },
    on_start: () => {
      if (!opts.example) ctx.events.seq = t.seq;
      document.body.classList.toggle('show-progress', !t.practice && !opts.example);
    },
    on_finish: () => {
      if (!opts.example && !t.practice) mainDone++;
      setProgress();
    },
  });

  // ── the first visit: instructions, the annotated example, what practice is ──
  // Never one of the session's own trials: its first scored answer would come on a screen already seen.
  const example: TaskTrial | null = ctx.example ? { ...ctx.example, seq: -1, practice: false, practice_round: null } : null;
  if (ctx.fresh) {
    nodes.push(buttonPage('instructions', ctx.instructionsHtml, 'Continue', 'next'));
    if (example) {
      nodes.push(
        buttonPage(
          'example-intro',
          `<h2>An example</h2><p>The next screen is an example, with notes on what each part means. Try answering it: it does not count.</p>`,
          'Show the example',
          'example',
        ),
      );
      nodes.push(preload('example', urlsOf([example]), urlsOf(roundList[0] ?? main.slice(0, ctx.blockSize))));
      nodes.push(trialNode(example, { example: true }));
    }
    if (R > 0) {
      const rounds = R > 1 && needed > 0 ? ` To go on to the main part, at least ${needed} of ${P} should be right; if not, you practise once more (at most ${R} rounds).` : '';
      nodes.push(
        buttonPage(
          'practice-intro',
          `<h2>Practice</h2><p>First, ${P} practice screen${P === 1 ? '' : 's'}. After each one you will see whether you were right.${rounds}</p><p>${rule}</p>`,
          'Begin the practice',
          'begin',
        ),
      );
    } else {
      nodes.push(buttonPage('main-intro', `<h2>Ready?</h2><p>${rule} Take your time, and answer as well as you can.</p>`, 'Start', 'start'));
    }
  }

  // ── practice rounds ──
  const nextUrls = (r: number) => urlsOf(roundList[r + 1] ?? main.filter(ahead).slice(0, ctx.blockSize));
  let firstShownRound = true;
  roundList.forEach((round, r) => {
    const remaining = round.filter(ahead);
    if (!remaining.length) return;
    const last = round[round.length - 1];
    const isLastRound = r === R - 1;
    const timeline: any[] = [];
    if (!ctx.fresh && firstShownRound && r > 0 && remaining[0].seq === round[0].seq) {
      timeline.push(buttonPage('practice-again', `<h2>Practice, round ${r + 1} of ${R}</h2><p>${rule}</p>`, 'Practise again', 'again'));
    }
    firstShownRound = false;
    timeline.push(preload(`practice ${r + 1}`, urlsOf(remaining), nextUrls(r)));
    for (const t of remaining) timeline.push(trialNode(t));
    timeline.push({
      type: AwaitPlugin,
      message: 'Checking your practice answers…',
      delay_ms: 400,
      data: { step: 'practice-verdict', round: r },
      run: async (say: (text: string) => void) => {
        // Without a criterion practice is over after its one round: nothing to ask the server.
        if (criterion === null) {
          practice.last = null;
          practice.over = true;
          return;
        }
        // A last answer the server held before this page started is never sent from here, so no
        // acknowledgement comes: ask where the server goes on (below).
        const acked = ctx.outbox.has(last.seq) ? ctx.outbox.ack(last.seq).catch(() => null) : Promise.resolve(null);
        let ack = await Promise.race([acked, new Promise<'late'>((r) => setTimeout(() => r('late'), ctx.verdictWaitMs ?? VERDICT_WAIT_MS))]);
        if (ack === 'late') {
          // After the last round practice ends whatever the verdict: go on without the score.
          if (isLastRound) {
            practice.last = null;
            practice.over = true;
            return;
          }
          // Whether another round is needed is the server's call: wait for it, and say so.
          say(RECONNECTING_VERDICT);
          ack = await acked;
        }
        const summary = ack?.feedback?.round ?? null;
        practice.last = summary;
        if (summary) practice.over = summary.practice_over;
        else if (isLastRound || criterion === null) practice.over = true;
        else {
          // No verdict in the acknowledgement (e.g. the answer had been recorded by an earlier
          // page): where the server wants to go on says whether another round is needed.
          const at = await ctx.resumeAt();
          practice.over = !(roundList[r + 1] ?? []).some((t) => t.seq === at);
        }
      },
    });
    timeline.push(
      buttonPage(
        'practice-result',
        () => {
          const s = practice.last;
          const score = s ? `<p>You answered <strong>${s.correct} of ${s.total}</strong> practice screens correctly.</p>` : '';
          const onwards = '<p>From now on you will not be told whether your answer was right. Take your time, and answer as well as you can.</p>';
          if (!practice.over) {
            return `<div data-result="again"><h2>Let's practise once more</h2>${score}<p>To go on, at least ${needed} of ${P} should be right. ${rule}</p></div>`;
          }
          if (s && !s.passed) {
            return `<div data-result="done-not-passed"><h2>That was the last practice round</h2>${score}<p>The main part starts now. ${rule}</p>${onwards}</div>`;
          }
          return `<div data-result="done"><h2>${s ? 'Practice complete' : 'That was the practice'}</h2>${score}${onwards}</div>`;
        },
        () => (practice.over ? 'Start' : 'Practise again'),
        () => (practice.over ? 'start' : 'again'),
      ),
    );
    nodes.push({ timeline, conditional_function: () => !practice.over });
  });

  // ── resuming right at the main part, after a practice finished on an earlier page ──
  if (!ctx.fresh && R > 0 && start === firstMain && main.length) {
    nodes.push(buttonPage('practice-done', `<h2>That was the practice</h2><p>From now on you will not be told whether your answer was right. Take your time, and answer as well as you can.</p>`, 'Start', 'start'));
  }

  // ── main blocks ──
  const blockSize = Math.max(1, ctx.blockSize);
  const blocks = new Map<number, TaskTrial[]>();
  main.forEach((t, i) => {
    if (!ahead(t)) return;
    const b = Math.floor(i / blockSize);
    blocks.set(b, [...(blocks.get(b) ?? []), t]);
  });
  const blockList = [...blocks.entries()];
  blockList.forEach(([b, block], k) => {
    if (k > 0) {
      const done = b * blockSize;
      nodes.push({
        ...buttonPage(
          'break',
          `<h2>Time for a short break</h2><p>You have done ${done} of ${mainTotal}. Rest your eyes for a moment, and continue when you are ready.</p>`,
          'Continue',
          'continue',
        ),
        on_start: () => document.body.classList.add('show-progress'),
      });
    }
    nodes.push(preload(`main ${b + 1}`, urlsOf(block), urlsOf(blockList[k + 1]?.[1] ?? [])));
    for (const t of block) nodes.push(trialNode(t));
  });
  return nodes;
}

/** The images needed first (the example / first practice round / first main block), to fetch while the participant reads. */
export function firstUrls(trials: TaskTrial[], start: number, blockSize: number): string[] {
  const next = [...trials].sort((a, b) => a.seq - b.seq).filter((t) => t.seq >= start);
  const first = next[0];
  if (!first) return [];
  const group = first.practice ? next.filter((t) => t.practice && t.practice_round === first.practice_round) : next.filter((t) => !t.practice).slice(0, blockSize);
  return urlsOf(group);
}
