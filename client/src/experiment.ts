// The participant's experiment:
//
//   study info → browser check (phones/tablets and small windows are turned away politely) →
//   consent → session → full screen ("welcome back" on a resume) → [instructions → annotated
//   example → practice intro] → practice rounds until the criterion → main blocks with breaks and
//   a progress bar → debrief → saving (at most syncWaitMs) → completion code and redirect.
//
// The server is the source of truth: each answer goes to the outbox (IndexedDB) the moment it is
// given and is sent with the idempotent PUT; finish is called only when every answer is
// acknowledged, and only then does the participant get the redirect. If that does not happen
// within syncWaitMs, the participant still gets a code (the study's unsynced code), the session is
// flagged with an unsynced_end event, and the page keeps trying. A reload, or the same link in a
// new tab, gets the same session back and shows only trials that are neither recorded on the
// server nor waiting in this browser's outbox. A tab whose session another tab took over (or whose
// answer the server refused because another was recorded first) says so and stops.
import { initJsPsych } from 'jspsych';
import HtmlButtonResponsePlugin from '@jspsych/plugin-html-button-response';
import { Api, HttpError, retrying, type CreateSessionResponse, type FinishResponse, type StudyInfo } from './api.ts';
import { EventLog, watchWindow } from './events.ts';
import { buttonPage, firstUrls, taskTimeline, type PracticeState } from './flow.ts';
import { enterFullscreen, FullscreenKeeper, fullscreenSupported } from './fullscreen.ts';
import { identify, recallResume, rememberResume } from './identity.ts';
import { Outbox } from './outbox.ts';
import AwaitPlugin from './plugin-await.ts';
import BrowserCheckPlugin, { type BrowserCheckData } from './plugin-browser-check.ts';
import { imageCache } from './preload.ts';
import { browserStore, openOutboxStore, type KeyValueStore } from './store.ts';
import { Banner, messagePage, show } from './ui.ts';

export const RECONNECTING = 'Reconnecting… Your answers are kept and will be sent as soon as the connection is back.';
export const OFFLINE = 'You are offline. Your answers are kept in this browser and will be sent when the connection is back.';

/** Main trials per block: a break and a preload between blocks. */
export const BLOCK_SIZE = 20;
/** How long the end of the study waits for the server to confirm every answer. */
export const SYNC_WAIT_MS = 60_000;
/** Smallest window the study runs in (the trial layout fits from here up). */
export const MIN_WINDOW = { width: 1000, height: 600 } as const;

// ─── The experiment ────────────────────────────────────────────────────────────────────────
export interface ExperimentOptions {
  /** The element the experiment draws into (jsPsych's display element). */
  root: HTMLElement;
  /** The page's query string (default location.search). */
  search?: string;
  api?: Api;
  /** Small things kept across reloads (participant id, consent); default localStorage. */
  storage?: KeyValueStore;
  /** Delay before following a completion or no-consent redirect (default 5 s). */
  redirectDelayMs?: number;
  navigate?: (url: string) => void;
  blockSize?: number;
  /** Pause after each 2-AFC trial (blank screen), ms. */
  interTrialMs?: number;
  minWidth?: number;
  minHeight?: number;
  /** Default SYNC_WAIT_MS; studies not in live mode take `&sync_wait_s=` from the link (tests). */
  syncWaitMs?: number;
  /** Longest first wait for a block's images (then failed ones are retried). */
  preloadMaxMs?: number;
}

export type ExperimentResult =
  | { outcome: 'finished'; finish: FinishResponse }
  | { outcome: 'already-finished'; code: string | null; redirect: string | null }
  | { outcome: 'declined' }
  | { outcome: 'incompatible'; reason: string }
  | { outcome: 'unsynced'; code: string | null }
  | { outcome: 'stale'; reason: 'other_tab' | 'answer_conflict' }
  | { outcome: 'error'; message: string };

interface State {
  consented: boolean;
  session: CreateSessionResponse | null;
  token: string;
  outbox: Outbox | null;
  /** Nothing answered yet: the instructions come first. */
  fresh: boolean;
  /** Seq the task part starts at. */
  start: number;
  /** Seqs recorded on the server or waiting in the outbox when the page started: never shown. */
  done: Set<number>;
  finish: FinishResponse | null;
  /** Drain + finish, running until it succeeds (it outlives the wait when answers are stuck). */
  sync: Promise<FinishResponse> | null;
  unsynced: string | null;
  check: BrowserCheckData | null;
  /** Set when the experiment has to stop early: what to show. */
  stop: { page: HTMLElement; result: ExperimentResult } | null;
}

const errorText = (err: unknown) => (err instanceof HttpError && err.body && typeof err.body.error === 'string' ? err.body.error : String(err));

export async function runExperiment(opts: ExperimentOptions): Promise<ExperimentResult> {
  const { root } = opts;
  const local = opts.storage ? { storage: opts.storage, persistent: true } : browserStore();
  const storage = local.storage;
  const api = opts.api ?? new Api();
  const banner = new Banner(root.ownerDocument);
  const redirectDelayMs = opts.redirectDelayMs ?? 5000;
  const navigate = opts.navigate;
  const events = new EventLog();
  (window as unknown as { __legibleEvents: unknown }).__legibleEvents = events.seen;

  // The banner: offline beats "reconnecting"; both go once answers flow again.
  const net = { offline: typeof navigator !== 'undefined' && navigator.onLine === false, outboxFailing: false, retrying: false };
  const updateBanner = () => banner.set(net.offline ? OFFLINE : net.outboxFailing || net.retrying ? RECONNECTING : null);
  const onRetry = () => ((net.retrying = true), updateBanner());
  const retried = () => ((net.retrying = false), updateBanner());
  const stopWatching = watchWindow(events, (online) => {
    net.offline = !online;
    updateBanner();
    if (online) state.outbox?.nudge();
  });
  updateBanner();

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
    info = await retrying(() => api.study(who.study), { onRetry });
    retried();
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
  const params = new URLSearchParams(opts.search ?? location.search);
  const testWait = info.mode !== 'live' ? Number(params.get('sync_wait_s')) : NaN;
  const syncWaitMs = Number.isFinite(testWait) && testWait > 0 ? testWait * 1000 : (opts.syncWaitMs ?? SYNC_WAIT_MS);
  const prolific = info.platform === 'prolific';
  const backLabel = prolific ? 'Back to Prolific' : 'Continue';

  const consentKey = `legible:consent:${who.study}:${who.who}`;
  const state: State = {
    consented: storage.getItem(consentKey) === '1',
    session: null,
    token: '',
    outbox: null,
    fresh: true,
    start: 0,
    done: new Set(),
    finish: null,
    sync: null,
    unsynced: null,
    check: null,
    stop: null,
  };
  const practice: PracticeState = { over: false, last: null };
  const jsPsych = initJsPsych({
    display_element: root,
    show_progress_bar: true,
    auto_update_progress_bar: false,
    message_progress_bar: 'Progress',
  });
  const keeper = new FullscreenKeeper(root.ownerDocument);
  const stop = (page: HTMLElement, result: ExperimentResult) => {
    state.stop = { page, result };
    jsPsych.abortExperiment();
  };
  // Another tab, window or device answering the same session: this page stops (the newest tab
  // wins; across devices, the page whose answer the server refused). Told plainly, logged once per
  // cause and seq; a button takes the session back here (a reload claims it).
  let staleSince: string | null = null;
  const stale = (reason: 'other_tab' | 'answer_conflict', seq: number | null = events.seq) => {
    if (state.finish || state.unsynced !== null || (state.stop && !staleSince)) return;
    events.log('session_conflict', { reason }, seq);
    if (staleSince) return;
    staleSince = reason;
    const lines =
      reason === 'other_tab'
        ? ['You opened this study again in another tab or window, and it goes on there. So that no answer counts twice, this tab has stopped: please close it and continue in the other one.']
        : ['This study is being answered in another tab, window or on another device: the answer you just gave here had already been given there, and only the first one counts. So that no answer counts twice, this page has stopped.'];
    stop(
      messagePage({
        kind: 'stale',
        title: 'This study continues in another tab',
        lines: [...lines, 'Your earlier answers are saved. If you have closed the other one, you can continue here instead.'],
        buttons: [{ label: 'Continue here instead', name: 'continue-here', onClick: () => location.reload() }],
      }),
      { outcome: 'stale', reason },
    );
  };
  const pageId = Math.random().toString(36).slice(2);
  const channel = typeof BroadcastChannel === 'undefined' ? null : new BroadcastChannel(`legible:${who.study}:${who.who}`);
  const claimSession = (session: string) => {
    if (!channel) return;
    channel.onmessage = (e: MessageEvent) => {
      if (e.data?.session === session && e.data.page !== pageId) stale('other_tab');
    };
    channel.postMessage({ session, page: pageId });
  };
  const page = (kind: string, html: string) => `<div class="page" data-page="${kind}">${html}</div>`;
  const buttons = (names: string[]) => (choice: string, i: number) => `<button type="button" class="jspsych-btn" data-choice-name="${names[i]}">${choice}</button>`;

  // Filled in once the session exists.
  const tasksNode: { timeline: any[] } = { timeline: [] };

  const minWidth = opts.minWidth ?? MIN_WINDOW.width;
  const minHeight = opts.minHeight ?? MIN_WINDOW.height;
  const browserCheck = {
    type: BrowserCheckPlugin,
    min_width: minWidth,
    min_height: minHeight,
    data: { step: 'browser-check' },
    on_finish: (data: BrowserCheckData) => {
      state.check = data;
      if (data.passed) return;
      const { code, redirect } = info.incompatible_device;
      const mobile = data.reason === 'mobile';
      stop(
        messagePage({
          kind: 'incompatible',
          title: mobile ? 'This study needs a computer' : 'This window is too small for the study',
          lines: [
            mobile
              ? 'It shows many small pictures side by side and is answered with a keyboard or mouse, so it cannot be done on a phone or tablet.'
              : `The pictures need a browser window of at least ${minWidth} × ${minHeight} pixels; yours is ${data.width} × ${data.height}.`,
            mobile ? 'If you can, open the same link on a desktop or laptop computer.' : 'If you can, open the same link on a larger screen.',
            ...(prolific ? ['Otherwise, please return your submission on Prolific. Nothing you did has been stored.'] : ['Otherwise, thank you for your interest. Nothing you did has been stored.']),
          ],
          code,
          codeLabel: 'Your code',
          redirect,
          redirectLabel: backLabel,
          buttons: mobile ? [] : [{ label: 'Check again', name: 'recheck', onClick: () => location.reload() }],
        }),
        { outcome: 'incompatible', reason: data.reason },
      );
    },
  };

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
    run: async (say: (text: string) => void) => {
      let session: CreateSessionResponse;
      const refused = (err: unknown) => err instanceof HttpError && err.status === 403 && err.body?.detail?.resume_refused === true;
      try {
        try {
          session = await retrying(() => api.createSession(who.request), { onRetry });
        } catch (err) {
          // Another tab of this browser may have just started the session and kept its secret.
          if (!refused(err) || !recallResume(who, storage)) throw err;
          session = await retrying(() => api.createSession(who.request), { onRetry });
        }
        retried();
      } catch (err) {
        retried();
        if (refused(err)) {
          stop(
            messagePage({
              kind: 'resume-refused',
              title: 'This study was started in another browser',
              lines: [
                'Someone with your participant id has already started this study in another browser or on another device, so it cannot continue here.',
                'Please go on in the browser where you started, from the same link. If that is not possible, contact the researcher.',
              ],
            }),
            { outcome: 'error', message: errorText(err) },
          );
        } else if (err instanceof HttpError && err.status === 409) {
          const code = typeof err.body?.code === 'string' ? err.body.code : null;
          const redirect = typeof err.body?.redirect === 'string' ? err.body.redirect : null;
          stop(
            messagePage({
              kind: 'completion',
              title: 'You have already completed this study',
              lines: ['Thank you! Your answers were saved earlier.'],
              code,
              redirect,
              redirectLabel: backLabel,
              redirectDelayMs,
              navigate,
            }),
            { outcome: 'already-finished', code, redirect },
          );
        } else {
          stop(
            messagePage({ title: 'The study could not start', lines: [`The server said: ${errorText(err)}`, 'Please try again later, or contact the researcher.'] }),
            { outcome: 'error', message: errorText(err) },
          );
        }
        throw err;
      }
      state.session = session;
      state.token = session.token;
      claimSession(session.session);
      rememberResume(who, storage, session.resume_secret);
      const store = await openOutboxStore(session.session, local);
      document.documentElement.dataset.outbox = store.kind;
      const outbox = await Outbox.open({
        store,
        sendTrial: (seq, answer, o) => api.putTrial(session.session, state.token, seq, answer, o?.keepalive),
        sendEvents: (list, o) => api.events(session.session, state.token, list, o?.keepalive),
        onState: (s) => {
          net.outboxFailing = s.failing;
          updateBanner();
        },
        onConflict: (seq) => stale('answer_conflict', seq),
        reauthenticate: async () => {
          state.token = (await api.createSession(who.request)).token;
        },
      });
      state.outbox = outbox;
      if (state.check) {
        const c = state.check;
        events.log('browser_check', {
          width: c.width,
          height: c.height,
          screen_width: c.screen_width,
          screen_height: c.screen_height,
          dpr: c.dpr,
          vsync_rate: c.vsync_rate,
          touch_points: c.touch_points,
          browser: c.browser,
          os: c.os,
          resized: c.resized,
          fullscreen_supported: c.fullscreen_supported,
          storage: store.kind,
        });
      }
      events.attach(outbox);
      window.addEventListener('pagehide', () => outbox.flushKeepalive());
      document.addEventListener('visibilitychange', () => {
        if (document.visibilityState === 'hidden' && outbox.pending > 0) outbox.flushKeepalive();
      });
      outbox.start();

      // Practice answers an earlier page could not send decide whether another round is needed:
      // send them first, then ask the server where to go on.
      let resumeAt = session.resume_at;
      let recorded = session.recorded ?? [];
      const bySeq = new Map(session.trials.map((t) => [t.seq, t]));
      if (outbox.pendingSeqs().some((s) => bySeq.get(s)?.practice)) {
        say('Sending your earlier answers…');
        await outbox.drain();
        const again = await retrying(() => api.createSession(who.request), { onRetry });
        retried();
        resumeAt = again.resume_at;
        recorded = again.recorded ?? recorded;
      }
      // Never shown again: what the server holds (answers flushed on a closed page can arrive out
      // of order, so not only those before resume_at) and what waits in this browser's outbox.
      const done = new Set([...recorded, ...outbox.pendingSeqs()]);
      let start = resumeAt;
      while (done.has(start)) start++;
      state.start = start;
      state.done = done;
      state.fresh = start === 0 && done.size === 0;
      practice.over = !session.trials.some((t) => t.practice && t.seq >= start && !done.has(t.seq));
      const blockSize = opts.blockSize ?? BLOCK_SIZE;
      imageCache.prefetch(firstUrls(session.trials, start, blockSize));
      tasksNode.timeline = taskTimeline(
        session.trials,
        start,
        {
          done,
          example: session.example,
          jsPsych,
          config: session.config,
          outbox,
          events,
          blockSize,
          interTrialMs: opts.interTrialMs ?? 300,
          preloadMaxMs: opts.preloadMaxMs ?? 30_000,
          fresh: state.fresh,
          instructionsHtml: page('instructions', info.html.instructions),
          resumeAt: async () => {
            const at = (await retrying(() => api.createSession(who.request), { onRetry })).resume_at;
            retried();
            return at;
          },
        },
        practice,
      );
    },
  };

  const fullscreen = {
    ...buttonPage(
      'fullscreen',
      () => {
        const fs = fullscreenSupported();
        if (state.fresh) {
          return `<h1>Before you start</h1><p>${fs ? 'The study runs in full screen, so that the pictures have room and nothing else distracts you. ' : ''}Please close other programs and tabs that might send notifications, and keep this window open until the end.</p>${fs ? '<p class="muted">If you leave full screen (Esc), a button at the top brings you back.</p>' : ''}`;
        }
        const main = state.session?.trials.filter((t) => !t.practice) ?? [];
        const done = main.filter((t) => t.seq < state.start || state.done.has(t.seq)).length;
        return `<h1>Welcome back</h1><p>Your earlier answers are saved. You will continue where you left off${done ? ` (${done} of ${main.length} done)` : ''}.</p>`;
      },
      () => (fullscreenSupported() ? 'Continue in full screen' : 'Continue'),
      'fullscreen',
    ),
    on_load: () => {
      const button = document.querySelector<HTMLButtonElement>('.jspsych-content [data-choice-name="fullscreen"]');
      // In the click itself: browsers allow full screen only in response to one.
      button?.addEventListener('click', () => enterFullscreen());
      button?.focus({ preventScroll: true });
    },
    on_finish: () => keeper.keep(),
  };

  const debrief = {
    type: HtmlButtonResponsePlugin,
    stimulus: page('debrief', info.html.debrief),
    choices: ['Finish'],
    button_html: buttons(['finish']),
    data: { step: 'debrief' },
    on_start: () => {
      document.body.classList.remove('show-progress');
      events.seq = null;
    },
  };

  const finish = {
    type: AwaitPlugin,
    message: 'Saving your answers…',
    delay_ms: 0,
    data: { step: 'finish' },
    run: async (say: (text: string) => void) => {
      const { session, outbox } = state;
      if (!session || !outbox) throw new Error('no session');
      const sync = (async () => {
        await outbox.drain();
        if (outbox.failedSeqs().length) throw new Error(`the server refused answers ${outbox.failedSeqs().join(', ')}`);
        const done = await retrying(() => api.finish(session.session, state.token), { onRetry });
        retried();
        return done;
      })();
      sync.catch(() => {}); // handled below, or by the unsynced page
      state.sync = sync;
      const t0 = performance.now();
      const tick = setInterval(() => {
        const elapsed = performance.now() - t0;
        if (elapsed < 2000) return;
        const left = Math.max(0, Math.ceil((syncWaitMs - elapsed) / 1000));
        const n = outbox.pendingSeqs().length;
        say(
          `Still saving your answers${n ? ` (${n} to send)` : ''}… Please keep this page open. If this takes more than ${left} more second${left === 1 ? '' : 's'}, you will get your completion code anyway.`,
        );
      }, 250);
      try {
        const result = await Promise.race([sync, new Promise<null>((r) => setTimeout(() => r(null), syncWaitMs))]);
        if (result) state.finish = result;
        else state.unsynced = 'timeout';
      } catch (err) {
        state.unsynced = errorText(err);
      } finally {
        clearInterval(tick);
      }
    },
  };

  const timeline = [
    browserCheck,
    { timeline: [consent], conditional_function: () => !state.consented },
    { timeline: [createSession, fullscreen, tasksNode, debrief, finish], conditional_function: () => state.consented },
  ];
  const simulate = who.simulate && info.mode !== 'live' ? who.simulate : null;
  if (simulate) await jsPsych.simulate(timeline, simulate);
  else await jsPsych.run(timeline);

  keeper.release();
  document.body.classList.remove('show-progress');
  const display = jsPsych.getDisplayElement();
  if (state.stop) {
    stopWatching();
    show(display, state.stop.page);
    return state.stop.result;
  }
  if (!state.consented) {
    stopWatching();
    const { code, redirect } = info.no_consent;
    show(
      display,
      messagePage({
        kind: 'declined',
        title: 'Thank you for your time',
        lines: [
          'You chose not to take part, so the study ends here. Nothing you did has been stored.',
          ...(prolific ? ['Please return your submission on Prolific.'] : []),
          'If you clicked this by mistake, reload the page to see the consent form again.',
        ],
        code,
        codeLabel: 'Your code',
        redirect,
        redirectLabel: backLabel,
        redirectDelayMs,
        navigate,
      }),
    );
    return { outcome: 'declined' };
  }
  if (document.fullscreenElement) document.exitFullscreen().catch(() => {});

  const completed = (done: FinishResponse, later: boolean) => {
    const lines = later
      ? ['All your answers have now reached us. Thank you!']
      : [done.outcome === 'completed' ? 'All your answers are saved. You have completed the study.' : 'All your answers are saved. The study is over.'];
    const p = messagePage({ kind: 'completion', title: 'Thank you!', lines, code: done.code, redirect: done.redirect, redirectLabel: backLabel, redirectDelayMs, navigate });
    if (!done.code && !done.redirect) p.append(Object.assign(document.createElement('p'), { textContent: 'You may close this page now.' }));
    show(display, p);
  };

  if (state.unsynced !== null) {
    const session = state.session!;
    const outbox = state.outbox!;
    const code = session.unsynced_code;
    events.seq = null;
    events.log('unsynced_end', { reason: state.unsynced, pending: outbox.pendingSeqs().length, pending_seqs: outbox.pendingSeqs().join(' '), wait_ms: syncWaitMs });
    show(
      display,
      messagePage({
        kind: 'unsynced',
        title: 'Thank you — your answers are not all saved yet',
        lines: [
          'We could not confirm that all your answers reached us, probably because of the connection. You still get your code, so you lose nothing.',
          'If you can, keep this page open for a few minutes: it keeps trying to send your answers and will tell you when they are saved.',
          `If you contact the researcher, please mention this reference: ${session.session}`,
        ],
        code,
        codeLabel: code ? 'Your completion code' : undefined,
      }),
    );
    // Keep going: when the answers get through after all, say so and offer the usual redirect.
    state.sync!.then(
      (done) => {
        stopWatching();
        banner.set(null);
        completed(done, true);
      },
      () => {},
    );
    return { outcome: 'unsynced', code };
  }
  stopWatching();
  completed(state.finish!, false);
  return { outcome: 'finished', finish: state.finish! };
}
