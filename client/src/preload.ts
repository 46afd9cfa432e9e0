// Stimulus preloading. `imageCache` loads and decodes images and keeps them referenced (so the
// browser's memory cache cannot evict them mid-block, a known jsPsych pain point); the
// `legible-preload` plugin waits for one block's images with a visible progress bar and a
// maximum load time, retries what failed, and reports what still failed in its data (the
// experiment turns that into a preload_failed event). The next block is prefetched while the
// current one runs, so the wait before a block is usually nothing.
import { ParameterType, type JsPsych, type JsPsychPlugin, type TrialType } from 'jspsych';
import { PLUGIN_VERSION } from './answer.ts';

type Status = 'loading' | 'loaded' | 'failed';

interface Entry {
  img: HTMLImageElement;
  status: Status;
  done: Promise<boolean>;
}

export class ImageCache {
  private readonly entries = new Map<string, Entry>();

  status(url: string): Status | undefined {
    return this.entries.get(url)?.status;
  }

  /** Starts loading `url` (again, if an earlier attempt failed); resolves true once decoded. */
  load(url: string): Promise<boolean> {
    const known = this.entries.get(url);
    if (known && known.status !== 'failed') return known.done;
    const img = new Image();
    img.decoding = 'async';
    const entry: Entry = { img, status: 'loading', done: Promise.resolve(false) };
    entry.done = new Promise<boolean>((resolve) => {
      img.onload = () => {
        // decode() so that drawing the trial's first frame costs nothing.
        img.decode().then(
          () => ((entry.status = 'loaded'), resolve(true)),
          () => ((entry.status = 'loaded'), resolve(true)),
        );
      };
      img.onerror = () => ((entry.status = 'failed'), resolve(false));
    });
    img.src = url;
    this.entries.set(url, entry);
    return entry.done;
  }

  prefetch(urls: Iterable<string>): void {
    for (const u of urls) void this.load(u);
  }

  /** Drops every image not in `keep` (the blocks still to come keep theirs). */
  retainOnly(keep: Set<string>): void {
    for (const url of this.entries.keys()) if (!keep.has(url)) this.entries.delete(url);
  }
}

export const imageCache = new ImageCache();

const info = {
  name: 'legible-preload',
  version: PLUGIN_VERSION,
  parameters: {
    urls: { type: ParameterType.STRING, array: true, default: [] },
    /** Longest wait for the first attempt, ms; after it, failed images are retried. */
    max_load_time_ms: { type: ParameterType.INT, default: 30_000 },
    /** Retries of images that failed (each after a short pause), within retry_time_ms. */
    retries: { type: ParameterType.INT, default: 2 },
    retry_time_ms: { type: ParameterType.INT, default: 15_000 },
    /** The bar appears only when loading takes longer than this (no flash when all is cached). */
    show_after_ms: { type: ParameterType.INT, default: 300 },
  },
  data: {
    images: { type: ParameterType.INT },
    /** Images that failed (or had not loaded by max_load_time_ms) at the first attempt. */
    failed_first: { type: ParameterType.STRING, array: true },
    /** Images still missing after the retries (the trial tries them again when it needs them). */
    failed: { type: ParameterType.STRING, array: true },
    timed_out: { type: ParameterType.BOOL },
    duration_ms: { type: ParameterType.FLOAT },
  },
} as const;

type Info = typeof info;

export interface PreloadData {
  images: number;
  failed_first: string[];
  failed: string[];
  timed_out: boolean;
  duration_ms: number;
}

class PreloadPlugin implements JsPsychPlugin<Info> {
  static info = info;

  constructor(private jsPsych: JsPsych) {}

  async trial(display: HTMLElement, trial: TrialType<Info>, on_load?: () => void): Promise<PreloadData> {
    const start = performance.now();
    const urls = [...new Set(trial.urls ?? [])];
    const page = document.createElement('div');
    page.className = 'page preload';
    page.dataset.page = 'preload';
    const text = document.createElement('p');
    text.className = 'muted preload-message';
    text.textContent = 'Loading pictures…';
    const bar = document.createElement('div');
    bar.className = 'loadbar';
    bar.setAttribute('role', 'progressbar');
    bar.setAttribute('aria-label', 'Loading pictures');
    bar.setAttribute('aria-valuemin', '0');
    bar.setAttribute('aria-valuemax', String(urls.length));
    const fill = document.createElement('div');
    fill.className = 'loadbar-fill';
    bar.append(fill);
    page.append(text, bar);
    display.replaceChildren();
    const shown = this.jsPsych.pluginAPI.setTimeout(() => display.replaceChildren(page), trial.show_after_ms ?? 300);
    on_load?.();

    let settled = 0;
    const progress = () => {
      settled++;
      fill.style.width = `${Math.round((100 * Math.min(settled, urls.length)) / Math.max(1, urls.length))}%`;
      bar.setAttribute('aria-valuenow', String(Math.min(settled, urls.length)));
    };
    const wait = (ms: number) => new Promise<void>((r) => this.jsPsych.pluginAPI.setTimeout(r, ms));
    const all = (list: string[]) => Promise.all(list.map((u) => imageCache.load(u).then((ok) => (progress(), ok))));

    let timedOut = false;
    await Promise.race([all(urls), wait(trial.max_load_time_ms ?? 30_000).then(() => (timedOut = true))]);
    const missing = () => urls.filter((u) => imageCache.status(u) !== 'loaded');
    const failedFirst = missing();
    if (failedFirst.length) {
      text.textContent = 'Some pictures are slow to load. Trying again…';
      const deadline = performance.now() + (trial.retry_time_ms ?? 15_000);
      for (let attempt = 0; attempt < (trial.retries ?? 2) && missing().length && performance.now() < deadline; attempt++) {
        await wait(1000 * 2 ** attempt);
        // Only failed images start again; ones still loading keep their request.
        settled = urls.length - missing().length;
        await Promise.race([all(missing()), wait(Math.max(0, deadline - performance.now()))]);
      }
    }
    clearTimeout(shown);
    display.replaceChildren();
    return { images: urls.length, failed_first: failedFirst, failed: missing(), timed_out: timedOut, duration_ms: Math.round(performance.now() - start) };
  }

  async simulate(trial: TrialType<Info>, _mode: 'visual' | 'data-only', _options: unknown, load_callback?: () => void): Promise<PreloadData> {
    load_callback?.();
    return { images: (trial.urls ?? []).length, failed_first: [], failed: [], timed_out: false, duration_ms: 0 };
  }
}

export default PreloadPlugin;
