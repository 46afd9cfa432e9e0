// jsPsych 8 plugin for the feature 2-AFC trial (Borowski et al. 2021; Zimmermann et al. 2023, IMI):
// minimally activating references on one side, maximally activating on the other (`max_side`),
// two query images stacked in the centre, six buttons (upper/lower × confidence 1–3) and keys 1–6.
//
// Each reference grid is one composed image (the pipeline composes the 3×3 grid). The query
// drawn upper is random unless `query_order` is given; the data report `query` as the TASK-LIST
// index of the chosen image, so the server can score it without knowing the screen layout.
//
// DOM hooks (stable, for automated tests): the trial root `.f2afc[data-state]` (waiting | ready |
// responded | feedback; it enters the DOM only once all four images are decoded), the grids `img[data-side="min"|"max"]`, the query images
// `img[data-query="0"|"1"]` (task-list index) with `data-position="upper"|"lower"`, each button
// `button[data-query][data-confidence][data-key]`, the feedback line `[data-feedback]`;
// `data-pointer="moved"` on the root once the pointer has moved during the trial (hover shows only then).
import { ParameterType, type JsPsych, type JsPsychPlugin, type TrialType } from 'jspsych';
import { buttonMeaning, PLUGIN_VERSION, type Answer, type Confidence, type Feedback, type Position, type Query } from './answer.ts';

export { buttonMeaning, PLUGIN_VERSION, toTrialAnswer, type Answer, type Feedback } from './answer.ts';

type SimulationMode = 'visual' | 'data-only';

const info = {
  name: 'feature-2afc',
  version: PLUGIN_VERSION,
  parameters: {
    /** URL of the composed grid of minimally activating references. */
    min_url: { type: ParameterType.IMAGE, default: undefined },
    /** URL of the composed grid of maximally activating references. */
    max_url: { type: ParameterType.IMAGE, default: undefined },
    /** The two query images, in task-list order (index 0, index 1). */
    query_urls: { type: ParameterType.IMAGE, array: true, default: undefined },
    /** Side of the screen that shows the maximally activating references. */
    max_side: { type: ParameterType.SELECT, options: ['left', 'right'], default: 'right' },
    /** Grid columns and images per side: only used to describe the grids to screen readers. */
    columns: { type: ParameterType.INT, default: 3 },
    per_side: { type: ParameterType.INT, default: 9 },
    /** Side of one grid cell before fitting to the window. Images may be stored smaller (the
     *  study's stimuli.image_px; a query's width is one stored cell): they are scaled so that a
     *  cell is drawn at cell_px, and queries at cell_px times `query_scale`. null: the images'
     *  own sizes. */
    cell_px: { type: ParameterType.INT, default: null },
    query_scale: { type: ParameterType.FLOAT, default: 1.25 },
    /** Largest magnification of the images (they are fitted to the window up to this). */
    max_scale: { type: ParameterType.FLOAT, default: 3 },
    /** CSS image-rendering for the stimuli ('auto' | 'pixelated'). */
    image_rendering: { type: ParameterType.SELECT, options: ['auto', 'pixelated'], default: 'auto' },
    /** Responses are accepted only this long after stimulus onset (buttons disabled until then). */
    initial_wait_ms: { type: ParameterType.INT, default: 0 },
    /** Which task-list query to draw upper and lower, e.g. [1, 0]; empty: random. */
    query_order: { type: ParameterType.INT, array: true, default: [] },
    /** Practice trial: show feedback after the response. */
    practice: { type: ParameterType.BOOL, default: false },
    /** Example for the instructions: numbered notes explain each part of the screen; the
     *  response only shows that nothing was recorded (use it without on_response). */
    example: { type: ParameterType.BOOL, default: false },
    /** Called with the answer (TrialAnswer-shaped) the moment the response is given, before any
     *  feedback: the place to save it. Its return value is ignored. */
    on_response: { type: ParameterType.FUNCTION, default: null },
    /** Practice trials only: `(answer) => {correct} | null`, or a promise of one (e.g. the server's
     *  acknowledgement). The plugin waits up to `feedback_timeout_ms` for it. */
    feedback: { type: ParameterType.FUNCTION, default: null },
    feedback_duration_ms: { type: ParameterType.INT, default: 1000 },
    feedback_timeout_ms: { type: ParameterType.INT, default: 5000 },
    /** Labels above the grids and the question above the queries (plain text). */
    max_label: { type: ParameterType.STRING, default: 'These have the pattern' },
    min_label: { type: ParameterType.STRING, default: 'These lack the pattern' },
    question: { type: ParameterType.STRING, default: 'Which one has the pattern?' },
    /** Button labels per confidence 1, 2, 3. */
    confidence_labels: { type: ParameterType.STRING, array: true, default: ['guessing', 'fairly sure', 'very sure'] },
  },
  data: {
    /** Task-list index (0 or 1) of the chosen query. */
    query: { type: ParameterType.INT },
    /** 1 guessing, 2 fairly sure, 3 very sure. */
    confidence: { type: ParameterType.INT },
    /** Response time in ms from stimulus onset (response_ms − onset_ms). */
    rt: { type: ParameterType.FLOAT },
    /** query_order[0] is the task-list index drawn upper, query_order[1] the one drawn lower. */
    query_order: { type: ParameterType.INT, array: true },
    /** Screen position of the chosen query: 'upper' | 'lower'. */
    position: { type: ParameterType.STRING },
    /** Button 0–5 in screen order (= key − 1). */
    button: { type: ParameterType.INT },
    /** 'key' or 'pointer'. */
    input: { type: ParameterType.STRING },
    /** performance.now() at the first painted frame with the stimuli, at which responses were
     *  enabled, and at the response (the event's timeStamp). */
    onset_ms: { type: ParameterType.FLOAT },
    enabled_ms: { type: ParameterType.FLOAT },
    response_ms: { type: ParameterType.FLOAT },
    /** Time from the start of the trial to all four images decoded (cache misses show up here). */
    load_ms: { type: ParameterType.FLOAT },
    /** Wall clock (ms since epoch) at the response. */
    client_time: { type: ParameterType.INT },
    /** [innerWidth, innerHeight], [screen.width, screen.height], devicePixelRatio. */
    window: { type: ParameterType.INT, array: true },
    screen: { type: ParameterType.INT, array: true },
    dpr: { type: ParameterType.FLOAT },
    /** Magnification the stimuli were drawn at (CSS px per image px). */
    scale: { type: ParameterType.FLOAT },
    practice: { type: ParameterType.BOOL },
    /** Practice feedback: true/false, null when none came (main trials, or a timeout). */
    correct: { type: ParameterType.BOOL },
    max_side: { type: ParameterType.STRING },
    min_url: { type: ParameterType.STRING },
    max_url: { type: ParameterType.STRING },
    query_urls: { type: ParameterType.STRING, array: true },
  },
} as const;

type Info = typeof info;

function viewportData() {
  const w = typeof window === 'undefined' ? undefined : window;
  return {
    window: [Math.round(w?.innerWidth ?? 0), Math.round(w?.innerHeight ?? 0)] as [number, number],
    screen: [Math.round(w?.screen?.width ?? 0), Math.round(w?.screen?.height ?? 0)] as [number, number],
    dpr: w?.devicePixelRatio || 1,
  };
}

const round1 = (x: number) => Math.round(x * 10) / 10;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Loads and decodes one image; retries a failed load twice before giving up. */
async function loadImage(url: string, attempts = 3): Promise<HTMLImageElement> {
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 400 * 3 ** (i - 1)));
    const img = new Image();
    img.decoding = 'async';
    img.src = url;
    try {
      await img.decode();
      return img;
    } catch (e) {
      lastError = e;
    }
  }
  throw new Error(`could not load ${url}: ${String(lastError)}`);
}

/** Where the pointer was last seen on this page (any pointermove), to tell a move from a rest. */
let lastPointer: { x: number; y: number } | null = null;
if (typeof document !== 'undefined') {
  document.addEventListener('pointermove', (e) => (lastPointer = { x: e.clientX, y: e.clientY }), { passive: true });
}

/**
 * Sets `data-pointer="moved"` on `root` at the first pointer move to a new place (styles show
 * hover only then); a browser's synthetic move for a pointer at rest over new content does not
 * count. Returns a function that stops watching.
 */
function watchPointer(root: HTMLElement): () => void {
  let rest = lastPointer;
  const onMove = (e: PointerEvent) => {
    if (rest && (e.clientX !== rest.x || e.clientY !== rest.y)) {
      root.dataset.pointer = 'moved';
      stop();
    } else rest = { x: e.clientX, y: e.clientY };
  };
  const stop = () => document.removeEventListener('pointermove', onMove, true);
  document.addEventListener('pointermove', onMove, { capture: true, passive: true });
  return stop;
}

/**
 * **feature-2afc**: which of two query images fits the maximally activating references? The
 * participant answers with one of six buttons (or keys 1–6): upper/lower × confidence.
 */
class FeatureTwoAfcPlugin implements JsPsychPlugin<Info> {
  static info = info;

  /** Resolves when responses are enabled (used by visual simulation). */
  private enabled: Promise<void> = Promise.resolve();

  constructor(private jsPsych: JsPsych) {}

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.jsPsych.pluginAPI.setTimeout(resolve, ms));
  }

  private queryOrder(trial: TrialType<Info>): [Query, Query] {
    const given = trial.query_order;
    if (Array.isArray(given) && given.length === 2) {
      const [a, b] = given;
      if ((a === 0 && b === 1) || (a === 1 && b === 0)) return [a, b];
      throw new Error(`feature-2afc: query_order must be [0, 1] or [1, 0], got ${JSON.stringify(given)}`);
    }
    return this.jsPsych.randomization.sampleBernoulli(0.5) === 1 ? [1, 0] : [0, 1];
  }

  async trial(display_element: HTMLElement, trial: TrialType<Info>, on_load?: () => void): Promise<Record<string, unknown>> {
    if (!Array.isArray(trial.query_urls) || trial.query_urls.length !== 2) {
      throw new Error('feature-2afc: query_urls must hold exactly two URLs');
    }
    const start = performance.now();
    const order = this.queryOrder(trial);
    const maxSide = trial.max_side === 'left' ? 'left' : 'right';
    let markEnabled!: () => void;
    this.enabled = new Promise((resolve) => (markEnabled = resolve));

    // ── skeleton: header (labels), stage (grids + queries), responses, feedback ──
    const root = el('div', 'f2afc');
    root.dataset.state = 'loading';
    root.dataset.maxSide = maxSide;
    if (trial.image_rendering === 'pixelated') root.classList.add('f2afc-pixelated');

    const side = (kind: 'min' | 'max') => {
      const col = el('figure', `f2afc-side f2afc-side-${kind}`);
      const label = el('figcaption', 'f2afc-label', kind === 'max' ? trial.max_label : trial.min_label);
      col.append(label);
      return col;
    };
    const minCol = side('min');
    const maxCol = side('max');
    const centre = el('div', 'f2afc-centre');
    centre.append(el('div', 'f2afc-label f2afc-question', trial.question));
    const queryBox = el('div', 'f2afc-queries');
    centre.append(queryBox);
    const stage = el('div', 'f2afc-stage');
    stage.append(...(maxSide === 'left' ? [maxCol, centre, minCol] : [minCol, centre, maxCol]));

    const labels = trial.confidence_labels ?? ['guessing', 'fairly sure', 'very sure'];
    const responses = el('div', 'f2afc-responses');
    responses.setAttribute('role', 'group');
    responses.setAttribute('aria-label', 'Your answer');
    const buttons: HTMLButtonElement[] = [];
    for (const position of ['upper', 'lower'] as const) {
      const group = el('div', `f2afc-group f2afc-group-${position}`);
      group.dataset.position = position;
      group.append(el('div', 'f2afc-group-label', position === 'upper' ? 'Upper picture' : 'Lower picture'));
      const row = el('div', 'f2afc-buttons');
      for (let b = position === 'upper' ? 0 : 3; b < (position === 'upper' ? 3 : 6); b++) {
        const { confidence } = buttonMeaning(b);
        const btn = el('button', 'f2afc-btn');
        btn.type = 'button';
        btn.disabled = true;
        btn.dataset.button = String(b);
        btn.dataset.key = String(b + 1);
        btn.dataset.position = position;
        btn.dataset.query = String(order[position === 'upper' ? 0 : 1]);
        btn.dataset.confidence = String(confidence);
        btn.append(el('kbd', 'f2afc-key', String(b + 1)), el('span', 'f2afc-btn-text', labels[confidence - 1]));
        btn.setAttribute('aria-label', `${position === 'upper' ? 'Upper' : 'Lower'} picture, ${labels[confidence - 1]} (key ${b + 1})`);
        row.append(btn);
        buttons.push(btn);
      }
      group.append(row);
      responses.append(group);
    }
    const feedbackLine = el('p', 'f2afc-feedback');
    feedbackLine.dataset.feedback = '';
    feedbackLine.setAttribute('aria-live', 'polite');
    root.append(stage, responses, feedbackLine);
    if (trial.example) {
      root.dataset.example = 'true';
      root.classList.add('f2afc-example');
      const note = (n: number, text: string) => {
        const p = el('p', 'f2afc-note');
        p.append(el('span', 'f2afc-note-n', String(n)), document.createTextNode(text));
        return p;
      };
      // Numbered in reading order, left to right.
      const [left, right] = maxSide === 'left' ? [maxCol, minCol] : [minCol, maxCol];
      const text = (col: HTMLElement) =>
        col === maxCol ? 'All nine pictures on this side share one visual pattern.' : 'These nine pictures lack the pattern that the other side shares.';
      left.insertBefore(note(1, text(left)), left.firstChild);
      centre.insertBefore(note(2, 'Which of these two has the pattern too?'), centre.firstChild);
      right.insertBefore(note(3, text(right)), right.firstChild);
      const tag = el('p', 'f2afc-example-tag', 'Example: not recorded');
      root.insertBefore(tag, stage);
      root.insertBefore(
        note(4, 'Answer with a button or a key: 1–3 for the upper picture, 4–6 for the lower one. The outer buttons (1 and 6) mean you are very sure, the inner ones (3 and 4) that you are guessing.'),
        feedbackLine,
      );
    }

    // ── images: decoded before they enter the DOM, so the first frame shows all of them ──
    const loadingNote = el('p', 'f2afc-loading', 'Loading pictures…');
    const slow = this.jsPsych.pluginAPI.setTimeout(() => {
      if (!root.isConnected) display_element.replaceChildren(loadingNote);
    }, 300);
    const urls = [trial.min_url, trial.max_url, trial.query_urls[0], trial.query_urls[1]];
    let images: HTMLImageElement[];
    for (;;) {
      try {
        images = await Promise.all(urls.map((u) => loadImage(u)));
        break;
      } catch (err) {
        console.error('feature-2afc:', err);
        await this.offerRetry(display_element);
      }
    }
    clearTimeout(slow);
    const loadMs = performance.now() - start;
    const [minImg, maxImg, q0, q1] = images;
    minImg.dataset.side = 'min';
    maxImg.dataset.side = 'max';
    minImg.alt = `${trial.per_side} pictures in a ${trial.columns}-column grid that lack the pattern`;
    maxImg.alt = `${trial.per_side} pictures in a ${trial.columns}-column grid that have the pattern`;
    minImg.className = maxImg.className = 'f2afc-grid';
    minCol.append(minImg);
    maxCol.append(maxImg);
    const byIndex = [q0, q1];
    const queryImgs = order.map((q, i) => {
      const img = byIndex[q];
      img.className = 'f2afc-query';
      img.dataset.query = String(q);
      img.dataset.position = i === 0 ? 'upper' : 'lower';
      img.alt = `${i === 0 ? 'Upper' : 'Lower'} picture`;
      return img;
    });
    queryBox.append(...queryImgs);

    let scale = 1;
    const fit = () => {
      if (root.isConnected) scale = this.fit(root, stage, centre, minImg, maxImg, queryImgs, trial);
      else window.removeEventListener('resize', fit); // the trial was aborted
    };
    display_element.replaceChildren(root);
    // Hover highlights only once the pointer moves: a pointer resting where the last trial's answer
    // was clicked must not make a button of this one look chosen.
    const stopWatchingPointer = watchPointer(root);
    scale = this.fit(root, stage, centre, minImg, maxImg, queryImgs, trial);
    root.dataset.state = 'waiting';
    on_load?.();
    window.addEventListener('resize', fit);

    // ── onset: the frame after the first one that contains the stimuli has begun, so that first
    //    frame has been painted; its rAF timestamp is the onset (performance.now() time base) ──
    const onset = await new Promise<number>((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    const wait = Math.max(0, trial.initial_wait_ms ?? 0);
    let enabledAt = onset;
    const enable = () => {
      enabledAt = performance.now();
      for (const b of buttons) b.disabled = false;
      root.dataset.state = 'ready';
      markEnabled();
    };
    // A wait that has already elapsed (slow frames) enables at once; otherwise time it from onset.
    const remaining = onset + wait - performance.now();
    if (remaining > 0) this.jsPsych.pluginAPI.setTimeout(enable, remaining);
    else enable();

    // ── response ──
    const response = await new Promise<{ button: number; at: number; input: 'key' | 'pointer' }>((resolve) => {
      const accept = (button: number, at: number, input: 'key' | 'pointer') => {
        if (root.dataset.state !== 'ready') return;
        root.dataset.state = 'responded';
        document.removeEventListener('keydown', onKey);
        resolve({ button, at, input });
      };
      const onKey = (e: KeyboardEvent) => {
        if (!root.isConnected) return document.removeEventListener('keydown', onKey);
        if (e.repeat || e.ctrlKey || e.altKey || e.metaKey) return;
        const k = Number(e.key);
        if (!Number.isInteger(k) || k < 1 || k > 6 || e.key.length !== 1) return;
        e.preventDefault();
        accept(k - 1, e.timeStamp, 'key');
      };
      document.addEventListener('keydown', onKey);
      for (const btn of buttons) {
        btn.addEventListener('click', (e) => {
          // A click from Enter/Space on a focused button is a PointerEvent with no pointer type.
          const input = typeof PointerEvent !== 'undefined' && e instanceof PointerEvent && e.pointerType === '' ? 'key' : 'pointer';
          accept(Number(btn.dataset.button), e.timeStamp, input);
        });
      }
    });
    const clientTime = Date.now();
    window.removeEventListener('resize', fit);
    stopWatchingPointer();
    for (const b of buttons) b.disabled = true;
    const chosenButton = buttons[response.button];
    chosenButton.classList.add('is-chosen');
    chosenButton.setAttribute('aria-pressed', 'true');

    const { position, confidence } = buttonMeaning(response.button);
    const query = order[position === 'upper' ? 0 : 1];
    const responseMs = Math.max(response.at, onset);
    const answer: Answer = {
      query,
      confidence,
      rt_ms: round1(responseMs - onset),
      query_order: order,
      input: response.input,
      onset_ms: round1(onset),
      response_ms: round1(responseMs),
      client_time: clientTime,
      ...viewportData(),
      plugin_version: PLUGIN_VERSION,
    };
    try {
      trial.on_response?.(answer);
    } catch (err) {
      console.error('feature-2afc: on_response failed', err);
    }

    let correct: boolean | null = null;
    if (trial.example) {
      root.dataset.state = 'feedback';
      feedbackLine.dataset.feedback = 'example';
      feedbackLine.textContent = 'That was only an example: nothing was recorded.';
      await this.sleep(Math.max(0, (trial.feedback_duration_ms ?? 1000) * 1.5));
    } else if (trial.practice && typeof trial.feedback === 'function') {
      root.dataset.state = 'feedback';
      const result = await this.awaitFeedback(trial, answer);
      if (result && typeof result.correct === 'boolean') {
        correct = result.correct;
        const answerPosition: Position = correct === (position === 'upper') ? 'upper' : 'lower';
        queryImgs[answerPosition === 'upper' ? 0 : 1].classList.add('is-answer');
        feedbackLine.dataset.feedback = correct ? 'correct' : 'incorrect';
        feedbackLine.textContent = correct ? 'Correct!' : `Not quite: the ${answerPosition} picture has the pattern.`;
        await this.sleep(Math.max(0, trial.feedback_duration_ms ?? 1000));
      }
    }

    return {
      query,
      confidence,
      rt: answer.rt_ms,
      query_order: order,
      position,
      button: response.button,
      input: response.input,
      onset_ms: answer.onset_ms,
      enabled_ms: round1(enabledAt),
      response_ms: answer.response_ms,
      load_ms: round1(loadMs),
      client_time: clientTime,
      window: answer.window,
      screen: answer.screen,
      dpr: answer.dpr,
      scale: round1(scale * 100) / 100,
      practice: trial.practice ?? false,
      correct,
      max_side: maxSide,
      min_url: trial.min_url,
      max_url: trial.max_url,
      query_urls: [...trial.query_urls],
      plugin_version: PLUGIN_VERSION,
    };
  }

  /** Waits for the feedback function, at most feedback_timeout_ms; null on timeout or error. */
  private async awaitFeedback(trial: TrialType<Info>, answer: Answer): Promise<Feedback> {
    const feedback = trial.feedback;
    if (typeof feedback !== 'function') return null;
    try {
      const result = Promise.resolve(feedback(answer) as Feedback | Promise<Feedback>);
      const timeout = this.sleep(Math.max(0, trial.feedback_timeout_ms ?? 5000)).then(() => null);
      return await Promise.race([result, timeout]);
    } catch (err) {
      console.error('feature-2afc: feedback failed', err);
      return null;
    }
  }

  /** Shows a "could not load" message with a Try again button; resolves when it is pressed. */
  private offerRetry(display_element: HTMLElement): Promise<void> {
    return new Promise((resolve) => {
      const box = el('div', 'f2afc-error');
      box.setAttribute('role', 'alert');
      box.append(el('p', undefined, 'Some pictures could not be loaded. Please check your internet connection.'));
      const btn = el('button', 'jspsych-btn', 'Try again');
      btn.type = 'button';
      btn.addEventListener('click', () => resolve(), { once: true });
      box.append(btn);
      display_element.replaceChildren(box);
      btn.focus();
    });
  }

  /** Scales the stimuli to fit the space left in the window; returns the scale used. */
  private fit(root: HTMLElement, stage: HTMLElement, centre: HTMLElement, minImg: HTMLImageElement, maxImg: HTMLImageElement, queries: HTMLImageElement[], trial: TrialType<Info>): number {
    const qn = Math.max(...queries.map((q) => q.naturalWidth)) || 1;
    // One stored cell (a query's width) is drawn at cell_px before fitting.
    const unit = trial.cell_px ? trial.cell_px / qn : 1;
    const gw = (Math.max(minImg.naturalWidth, maxImg.naturalWidth) || 1) * unit;
    const gh = (Math.max(minImg.naturalHeight, maxImg.naturalHeight) || 1) * unit;
    const qScale = unit * (trial.query_scale ?? 1.25);
    const qw = qn * qScale;
    const qh = (Math.max(...queries.map((q) => q.naturalHeight)) || 1) * qScale;

    // Everything but the images keeps its size, so measure it with the images at zero size.
    for (const img of [minImg, maxImg, ...queries]) img.style.width = img.style.height = '0px';
    const style = getComputedStyle(stage);
    const colGap = parseFloat(style.columnGap) || 0;
    const qGap = parseFloat(getComputedStyle(centre.querySelector('.f2afc-queries')!).rowGap) || 0;
    // The content wrapper's top does not move with the trial's height (the trial may be centred).
    const top = (root.closest('.jspsych-content-wrapper') ?? root).getBoundingClientRect().top;
    const fixedHeight = root.getBoundingClientRect().height; // labels, buttons, feedback, paddings
    // The centre column is at least as wide as its question; the outlines need a few pixels.
    const centreMin = centre.getBoundingClientRect().width;
    const availW = stage.clientWidth - 2 * colGap - 24;
    const availH = document.documentElement.clientHeight - Math.max(0, top) - fixedHeight - 16;
    const s = Math.max(
      0.25,
      Math.min(trial.max_scale ?? 3, availW / (2 * gw + qw), (availW - centreMin) / (2 * gw), availH / gh, (availH - qGap) / (2 * qh)),
    );

    for (const img of [minImg, maxImg]) {
      img.style.width = `${Math.floor(img.naturalWidth * unit * s)}px`;
      img.style.height = `${Math.floor(img.naturalHeight * unit * s)}px`;
    }
    for (const img of queries) {
      img.style.width = `${Math.floor(img.naturalWidth * qScale * s)}px`;
      img.style.height = `${Math.floor(img.naturalHeight * qScale * s)}px`;
    }
    return s;
  }

  simulate(trial: TrialType<Info>, simulation_mode: SimulationMode, simulation_options: any, load_callback?: () => void): Promise<Record<string, unknown>> {
    return simulation_mode === 'visual'
      ? this.simulateVisual(trial, simulation_options, load_callback)
      : this.simulateDataOnly(trial, simulation_options, load_callback);
  }

  private createSimulationData(trial: TrialType<Info>, simulation_options: any) {
    const r = this.jsPsych.randomization;
    const order = this.queryOrder(trial);
    const defaults = {
      button: r.randomInt(0, 5),
      rt: r.sampleExGaussian(1500, 400, 1 / 600, true) + (trial.initial_wait_ms ?? 0),
      query_order: order,
    };
    return this.jsPsych.pluginAPI.mergeSimulationData(defaults, simulation_options) as Record<string, any>;
  }

  private async simulateDataOnly(trial: TrialType<Info>, simulation_options: any, load_callback?: () => void) {
    load_callback?.();
    const sim = this.createSimulationData(trial, simulation_options);
    const order = sim.query_order as [Query, Query];
    const { position, confidence: defaultConfidence } = buttonMeaning(sim.button);
    const query = (sim.query as Query | undefined) ?? order[position === 'upper' ? 0 : 1];
    const confidence = (sim.confidence as Confidence | undefined) ?? defaultConfidence;
    const onset = typeof performance === 'undefined' ? 0 : performance.now();
    // Whole milliseconds, as jsPsych's ensureSimulationDataConsistency rounds rt.
    const rt = Math.round(Math.max(0, sim.rt));
    const answer: Answer = {
      query,
      confidence,
      rt_ms: rt,
      query_order: order,
      input: sim.input ?? 'key',
      onset_ms: round1(onset),
      response_ms: round1(onset + rt),
      client_time: Date.now(),
      ...viewportData(),
      plugin_version: PLUGIN_VERSION,
    };
    trial.on_response?.(answer);
    let correct: boolean | null = null;
    if (trial.practice && typeof trial.feedback === 'function') {
      const result = await this.awaitFeedback(trial, answer);
      correct = result ? result.correct : null;
    }
    const data = {
      query,
      confidence,
      rt,
      query_order: order,
      position: order[0] === query ? 'upper' : 'lower',
      button: sim.button,
      input: answer.input,
      onset_ms: answer.onset_ms,
      enabled_ms: round1(onset + (trial.initial_wait_ms ?? 0)),
      response_ms: answer.response_ms,
      load_ms: 0,
      client_time: answer.client_time,
      window: answer.window,
      screen: answer.screen,
      dpr: answer.dpr,
      scale: 1,
      practice: trial.practice ?? false,
      correct,
      max_side: trial.max_side === 'left' ? 'left' : 'right',
      min_url: trial.min_url,
      max_url: trial.max_url,
      query_urls: [...trial.query_urls],
      plugin_version: PLUGIN_VERSION,
    };
    this.jsPsych.pluginAPI.ensureSimulationDataConsistency(trial, data);
    return data;
  }

  private async simulateVisual(trial: TrialType<Info>, simulation_options: any, load_callback?: () => void) {
    const sim = this.createSimulationData(trial, simulation_options);
    const display = this.jsPsych.getDisplayElement();
    const result = this.trial(display, { ...trial, query_order: sim.query_order }, load_callback);
    await this.enabled;
    const delay = Math.max(0, sim.rt - (trial.initial_wait_ms ?? 0));
    const target = display.querySelector<HTMLButtonElement>(`.f2afc-btn[data-button="${sim.button}"]`);
    if (target) this.jsPsych.pluginAPI.clickTarget(target, delay);
    return result;
  }
}

export default FeatureTwoAfcPlugin;
