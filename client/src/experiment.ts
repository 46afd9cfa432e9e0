// The participant's experiment: study info → consent → session → instructions → practice (with
// feedback) → main trials (progress bar) → debrief → finish → completion page.
//
// The server is the source of truth: each answer goes to the outbox the moment it is given and is
// sent with the idempotent PUT; finish is called only when every answer is acknowledged. A reload
// with the same participant id gets the same session back and continues at the first trial that
// is neither recorded on the server nor waiting in this browser's outbox.
import { initJsPsych, type JsPsych } from 'jspsych';
import HtmlButtonResponsePlugin from '@jspsych/plugin-html-button-response';
import PreloadPlugin from '@jspsych/plugin-preload';
import { Api, HttpError, retrying, type CreateSessionResponse, type FinishResponse, type StudyInfo, type TaskTrial } from './api.ts';
import { browserStore, Outbox, type KeyValueStore } from './outbox.ts';
import FeatureTwoAfcPlugin, { type Answer } from './plugin-feature-2afc.ts';
import AwaitPlugin from './plugin-await.ts';
import { identify } from './identity.ts';
import { Banner, messagePage, show } from './ui.ts';

export const RECONNECTING = 'Reconnecting… Your answers are kept and will be sent as soon as the connection is back.';

/** Trials per preload block. */
export const BLOCK_SIZE = 20;

// ─── The experiment ────────────────────────────────────────────────────────────────────────
export interface ExperimentOptions {
  /** The element the experiment draws into (jsPsych's display element). */
  root: HTMLElement;
  /** The page's query string (default location.search). */
  search?: string;
  api?: Api;
  storage?: KeyValueStore;
  /** Delay before following a completion or no-consent redirect (default 5 s). */
  redirectDelayMs?: number;
  navigate?: (url: string) => void;
  blockSize?: number;
  /** Pause after each 2-AFC trial (blank screen), ms. */
  interTrialMs?: number;
}

export type ExperimentResult =
  | { outcome: 'finished'; finish: FinishResponse }
  | { outcome: 'already-finished'; code: string | null; redirect: string | null }
  | { outcome: 'declined' }
  | { outcome: 'error'; message: string };

interface State {
  consented: boolean;
  session: CreateSessionResponse | null;
  token: string;
  outbox: Outbox | null;
  finish: FinishResponse | null;
  /** Set when the experiment has to stop early: what to show. */
  stop: { page: HTMLElement; result: ExperimentResult } | null;
}

const errorText = (err: unknown) => (err instanceof HttpError && err.body && typeof err.body.error === 'string' ? err.body.error : String(err));

export async function runExperiment(opts: ExperimentOptions): Promise<ExperimentResult> {
  const { root } = opts;
  const storage = opts.storage ?? browserStore();
  const api = opts.api ?? new Api();
  const banner = new Banner(root.ownerDocument);
  const redirectDelayMs = opts.redirectDelayMs ?? 5000;
  const navigate = opts.navigate;
  const reconnecting = () => banner.set(RECONNECTING);
  const fail = (title: string, lines: string[], message: string): ExperimentResult => {
    banner.set(null);
    show(root, messagePage({ title, lines }));
    return { outcome: 'error', message };
  };

  const who = identify(opts.search ?? location.search, storage);
  if ('error' in who) return fail('This link is incomplete', [who.error], who.error);

  show(root, messagePage({ title: 'Loading…' }));
  let info: StudyInfo;
  try {
    info = await retrying(() => api.study(who.study), { onRetry: reconnecting });
    banner.set(null);
  } catch (err) {
    const missing = err instanceof HttpError && err.status === 404;
    return fail(
      'This study is not available',
      [missing ? `There is no study "${who.study}" on this site. Please check the link you were given.` : 'Something went wrong while loading the study. Please try again later.'],
      errorText(err),
    );
  }
  document.title = info.title;
  if (info.mode === 'preview') {
    const tag = document.createElement('div');
    tag.className = 'mode-tag';
    tag.textContent = 'Preview: nothing is stored';
    document.body.append(tag);
  }
  root.replaceChildren();

  const consentKey = `legible:consent:${who.study}:${who.who}`;
  const state: State = { consented: storage.getItem(consentKey) === '1', session: null, token: '', outbox: null, finish: null, stop: null };
  const jsPsych = initJsPsych({
    display_element: root,
    show_progress_bar: true,
    auto_update_progress_bar: false,
    message_progress_bar: 'Progress',
  });
  const stop = (page: HTMLElement, result: ExperimentResult) => {
    state.stop = { page, result };
    jsPsych.abortExperiment();
  };
  const page = (kind: string, html: string) => `<div class="page" data-page="${kind}">${html}</div>`;
  const buttons = (names: string[]) => (choice: string, i: number) => `<button type="button" class="jspsych-btn" data-choice-name="${names[i]}">${choice}</button>`;

  // Filled in once the session exists.
  const trialsNode: { timeline: any[] } = { timeline: [] };
  let showInstructions = true;

  const consent = {
    type: HtmlButtonResponsePlugin,
    stimulus: page('consent', info.html.consent),
    choices: ['I agree', 'I do not agree'],
    button_html: buttons(['agree', 'decline']),
    button_layout: 'flex',
    data: { step: 'consent' },
    simulation_options: { data: { response: 0 } },
    on_finish: (data: { response: number }) => {
      if (data.response !== 0) return;
      state.consented = true;
      try {
        storage.setItem(consentKey, '1');
      } catch {
        // Not stored: a reload asks again, which is harmless.
      }
    },
  };

  const createSession = {
    type: AwaitPlugin,
    message: 'Preparing your session…',
    data: { step: 'session' },
    run: async () => {
      try {
        state.session = await retrying(() => api.createSession(who.request), { onRetry: reconnecting });
        banner.set(null);
      } catch (err) {
        if (err instanceof HttpError && err.status === 409) {
          const code = typeof err.body?.code === 'string' ? err.body.code : null;
          const redirect = typeof err.body?.redirect === 'string' ? err.body.redirect : null;
          stop(
            messagePage({
              title: 'You have already completed this study',
              lines: ['Thank you! Your answers were saved earlier.'],
              code,
              redirect,
              redirectLabel: 'Continue',
              redirectDelayMs,
              navigate,
            }),
            { outcome: 'already-finished', code, redirect },
          );
        } else {
          banner.set(null);
          stop(
            messagePage({ title: 'The study could not start', lines: [`The server said: ${errorText(err)}`, 'Please try again later, or contact the researcher.'] }),
            { outcome: 'error', message: errorText(err) },
          );
        }
        throw err;
      }
      const session = state.session;
      state.token = session.token;
      const outbox = new Outbox({
        key: `legible:outbox:${session.session}`,
        storage,
        send: (seq, answer, o) => api.putTrial(session.session, state.token, seq, answer, o?.keepalive),
        onState: (s) => banner.set(s.failing ? RECONNECTING : null),
        reauthenticate: async () => {
          state.token = (await api.createSession(who.request)).token;
        },
      });
      state.outbox = outbox;
      window.addEventListener('online', () => outbox.nudge());
      window.addEventListener('pagehide', () => outbox.flushKeepalive());
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'hidden' && outbox.pending > 0) outbox.flushKeepalive();
      });
      outbox.start();

      const pending = new Set(outbox.pendingSeqs());
      let start = session.resume_at;
      while (pending.has(start)) start++;
      showInstructions = session.resume_at === 0 && pending.size === 0;
      const trials = [...session.trials].sort((a, b) => a.seq - b.seq);
      trialsNode.timeline = trialNodes(trials, start, {
        jsPsych,
        config: session.config,
        outbox,
        blockSize: opts.blockSize ?? BLOCK_SIZE,
        interTrialMs: opts.interTrialMs ?? 300,
      });
    },
  };

  const instructions = {
    timeline: [
      {
        type: HtmlButtonResponsePlugin,
        stimulus: page('instructions', info.html.instructions),
        choices: ['Begin'],
        button_html: buttons(['begin']),
        data: { step: 'instructions' },
      },
    ],
    conditional_function: () => showInstructions,
  };

  const debrief = {
    type: HtmlButtonResponsePlugin,
    stimulus: page('debrief', info.html.debrief),
    choices: ['Finish'],
    button_html: buttons(['finish']),
    data: { step: 'debrief' },
    on_start: () => document.body.classList.remove('show-progress'),
  };

  const finish = {
    type: AwaitPlugin,
    message: 'Saving your answers…',
    delay_ms: 0,
    data: { step: 'finish' },
    run: async () => {
      const { session, outbox } = state;
      if (!session || !outbox) throw new Error('no session');
      await outbox.drain();
      try {
        state.finish = await retrying(() => api.finish(session.session, state.token), { onRetry: reconnecting });
        banner.set(null);
      } catch (err) {
        banner.set(null);
        stop(
          messagePage({
            title: 'Some answers could not be saved',
            lines: [
              'We are sorry: the server did not confirm all of your answers, so the study cannot be completed automatically.',
              `Please contact the researcher and give them this reference: ${session.session}`,
            ],
          }),
          { outcome: 'error', message: errorText(err) },
        );
        throw err;
      }
    },
  };

  const timeline = [
    { timeline: [consent], conditional_function: () => !state.consented },
    { timeline: [createSession, instructions, trialsNode, debrief, finish], conditional_function: () => state.consented },
  ];
  const simulate = who.simulate && info.mode !== 'live' ? who.simulate : null;
  if (simulate) await jsPsych.simulate(timeline, simulate);
  else await jsPsych.run(timeline);

  document.body.classList.remove('show-progress');
  const display = jsPsych.getDisplayElement();
  if (state.stop) {
    show(display, state.stop.page);
    return state.stop.result;
  }
  if (!state.consented) {
    const { code, redirect } = info.no_consent;
    show(
      display,
      messagePage({
        title: 'Thank you for your time',
        lines: [
          'You chose not to take part, so the study ends here. Nothing you did has been stored.',
          ...(info.platform === 'prolific' ? ['Please return your submission on Prolific.'] : []),
          'If you clicked this by mistake, reload the page to see the consent form again.',
        ],
        code,
        codeLabel: 'Your code',
        redirect,
        redirectLabel: info.platform === 'prolific' ? 'Back to Prolific' : 'Continue',
        redirectDelayMs,
        navigate,
      }),
    );
    return { outcome: 'declined' };
  }
  const done = state.finish!;
  show(
    display,
    messagePage({
      title: 'Thank you!',
      lines: [done.outcome === 'completed' ? 'All your answers are saved. You have completed the study.' : 'All your answers are saved. The study is over.'],
      code: done.code,
      redirect: done.redirect,
      redirectLabel: info.platform === 'prolific' ? 'Back to Prolific' : 'Continue',
      redirectDelayMs,
      navigate,
    }),
  );
  if (!done.code && !done.redirect) display.querySelector('.page')?.append(Object.assign(document.createElement('p'), { textContent: 'You may close this page now.' }));
  return { outcome: 'finished', finish: done };
}

// ─── Trials ────────────────────────────────────────────────────────────────────────────────
interface TrialContext {
  jsPsych: JsPsych;
  config: CreateSessionResponse['config'];
  outbox: Outbox;
  blockSize: number;
  interTrialMs: number;
}

/** Timeline nodes for the trials from `start` on: per block a preload (and one retry), then the trials. */
export function trialNodes(trials: TaskTrial[], start: number, ctx: TrialContext): any[] {
  const remaining = trials.filter((t) => t.seq >= start);
  const mainTotal = trials.filter((t) => !t.practice).length;
  let mainDone = trials.filter((t) => !t.practice && t.seq < start).length;
  const setProgress = () => {
    if (ctx.jsPsych.progressBar && mainTotal > 0) ctx.jsPsych.progressBar.progress = Math.min(1, mainDone / mainTotal);
  };
  setProgress();

  // Runs of practice / main trials, in task-list order.
  const segments: { practice: boolean; trials: TaskTrial[] }[] = [];
  for (const t of remaining) {
    const last = segments.at(-1);
    if (last && last.practice === t.practice) last.trials.push(t);
    else segments.push({ practice: t.practice, trials: [t] });
  }

  const nodes: any[] = [];
  let practiceShown = false;
  for (const segment of segments) {
    if (!segment.practice && practiceShown) {
      nodes.push({
        type: HtmlButtonResponsePlugin,
        stimulus:
          '<div class="page" data-page="practice-done"><h2>That was the practice</h2><p>From now on you will not be told whether your answer was right. Take your time, and answer as well as you can.</p></div>',
        choices: ['Start'],
        button_html: (choice: string) => `<button type="button" class="jspsych-btn" data-choice-name="start">${choice}</button>`,
        data: { step: 'practice-done' },
      });
    }
    for (let i = 0; i < segment.trials.length; i += ctx.blockSize) {
      const block = segment.trials.slice(i, i + ctx.blockSize);
      nodes.push(...preloadNodes([...new Set(block.flatMap((t) => [t.min_url, t.max_url, ...t.query_urls]))]));
      for (const t of block) {
        nodes.push({
          type: FeatureTwoAfcPlugin,
          min_url: t.min_url,
          max_url: t.max_url,
          query_urls: [...t.query_urls],
          max_side: ctx.config.max_side,
          columns: ctx.config.columns,
          per_side: ctx.config.per_side,
          cell_px: ctx.config.cell_px,
          initial_wait_ms: ctx.config.initial_wait_ms,
          practice: t.practice,
          on_response: (answer: Answer) => {
            ctx.outbox.submit(t.seq, answer).catch(() => {});
          },
          feedback: t.practice ? () => ctx.outbox.ack(t.seq).then((ack) => ack.feedback ?? null) : null,
          post_trial_gap: ctx.interTrialMs,
          data: { step: 'trial', seq: t.seq, block: t.practice ? 'practice' : 'main' },
          on_start: () => document.body.classList.toggle('show-progress', !t.practice),
          on_finish: () => {
            if (!t.practice) mainDone++;
            setProgress();
          },
        });
      }
    }
    if (segment.practice) practiceShown = true;
  }
  return nodes;
}

/** Preloads `urls` with a progress bar and a time limit, then retries what failed once. */
function preloadNodes(urls: string[]): any[] {
  const loaded = new Set<string>();
  const failed = new Set<string>();
  const update = (total: number) => {
    const bar = document.getElementById('legible-loadbar');
    if (bar) bar.style.width = `${Math.round((100 * Math.min(total, loaded.size + failed.size)) / Math.max(1, total))}%`;
  };
  const missing = () => urls.filter((u) => !loaded.has(u));
  const make = (retry: boolean) => {
    let total = urls.length;
    return {
      type: PreloadPlugin,
      images: () => (retry ? missing() : urls),
      message: `<p class="muted preload-message">${retry ? 'Loading the remaining pictures…' : 'Loading pictures…'}</p><div class="loadbar"><div class="loadbar-fill" id="legible-loadbar"></div></div>`,
      show_progress_bar: false,
      max_load_time: retry ? 60_000 : 30_000,
      continue_after_error: true,
      data: { step: 'preload', retry },
      on_start: () => {
        total = retry ? missing().length : urls.length;
        failed.clear();
      },
      on_success: (src: string) => {
        loaded.add(src);
        update(total);
      },
      on_error: (src: string) => {
        if (urls.includes(src)) failed.add(src);
        update(total);
      },
      on_finish: (data: Record<string, unknown>) => {
        // The plugin's own failed_images misses errors in current browsers; record ours.
        data.failed_images = missing();
        data.images = total;
      },
    };
  };
  return [make(false), { timeline: [make(true)], conditional_function: () => missing().length > 0 }];
}
