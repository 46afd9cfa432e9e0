// jsPsych 8 plugin `legible-browser-check`: is this device fit for the study? Phones and tablets
// are not (the stimuli need a large screen and a keyboard or mouse); a window smaller than the
// minimum gets a prompt to enlarge it (maximise, or full screen with one click) that updates as
// the window changes and continues by itself once it is large enough, with a button for
// participants who cannot. The trial ends with `passed` and `reason`; the experiment decides
// what to show. Also records what timing analyses need: screen, devicePixelRatio, refresh rate.
//
// Unlike jsPsych's browser-check plugin, tablets (Android tablets, iPads with a desktop user
// agent, touch-only devices) count as mobile, and nothing is parsed by a third-party library.
import { ParameterType, type JsPsych, type JsPsychPlugin, type TrialType } from 'jspsych';
import { detectDevice, type Device } from './device.ts';
import { PLUGIN_VERSION } from './answer.ts';

const info = {
  name: 'legible-browser-check',
  version: PLUGIN_VERSION,
  parameters: {
    min_width: { type: ParameterType.INT, default: 1000 },
    min_height: { type: ParameterType.INT, default: 600 },
    /** Refuse phones and tablets. */
    exclude_mobile: { type: ParameterType.BOOL, default: true },
    /** Frames sampled for the refresh rate (about 30 → half a second at 60 Hz). */
    vsync_frames: { type: ParameterType.INT, default: 30 },
  },
  data: {
    passed: { type: ParameterType.BOOL },
    /** 'ok' | 'mobile' | 'window' (too small, and the participant said it cannot be enlarged). */
    reason: { type: ParameterType.STRING },
    mobile_reason: { type: ParameterType.STRING },
    width: { type: ParameterType.INT },
    height: { type: ParameterType.INT },
    screen_width: { type: ParameterType.INT },
    screen_height: { type: ParameterType.INT },
    dpr: { type: ParameterType.FLOAT },
    touch_points: { type: ParameterType.INT },
    browser: { type: ParameterType.STRING },
    os: { type: ParameterType.STRING },
    /** Estimated display refresh rate, frames per second (null if it could not be measured). */
    vsync_rate: { type: ParameterType.FLOAT },
    /** The window had to be enlarged (the prompt was shown). */
    resized: { type: ParameterType.BOOL },
    fullscreen_supported: { type: ParameterType.BOOL },
  },
} as const;

type Info = typeof info;

export type BrowserCheckData = {
  passed: boolean;
  reason: 'ok' | 'mobile' | 'window';
  mobile_reason: string;
  width: number;
  height: number;
  screen_width: number;
  screen_height: number;
  dpr: number;
  touch_points: number;
  browser: string;
  os: string;
  vsync_rate: number | null;
  resized: boolean;
  fullscreen_supported: boolean;
};

export function readDevice(): Device {
  const nav = navigator as Navigator & { userAgentData?: { mobile?: boolean } };
  return detectDevice({
    userAgent: nav.userAgent,
    uaMobile: nav.userAgentData?.mobile,
    platform: nav.platform,
    maxTouchPoints: nav.maxTouchPoints ?? 0,
    anyFinePointer: typeof matchMedia === 'function' ? matchMedia('(any-pointer: fine)').matches : true,
  });
}

/** Mean frame interval over `frames` animation frames, as a rate (Hz); null if frames are throttled away. */
function measureVsync(frames: number): Promise<number | null> {
  return new Promise((resolve) => {
    const times: number[] = [];
    const give = setTimeout(() => resolve(null), 3000);
    const step = (t: number) => {
      times.push(t);
      if (times.length <= frames) requestAnimationFrame(step);
      else {
        clearTimeout(give);
        const mean = (times[times.length - 1] - times[0]) / (times.length - 1);
        resolve(mean > 0 ? Math.round((1000 / mean) * 10) / 10 : null);
      }
    };
    requestAnimationFrame(step);
  });
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

class BrowserCheckPlugin implements JsPsychPlugin<Info> {
  static info = info;

  constructor(private jsPsych: JsPsych) {}

  private measure(device: Device, vsync: number | null, resized: boolean, passed: boolean, reason: BrowserCheckData['reason']): BrowserCheckData {
    return {
      passed,
      reason,
      mobile_reason: device.reason,
      width: Math.round(window.innerWidth),
      height: Math.round(window.innerHeight),
      screen_width: Math.round(screen.width),
      screen_height: Math.round(screen.height),
      dpr: window.devicePixelRatio || 1,
      touch_points: navigator.maxTouchPoints ?? 0,
      browser: device.browser,
      os: device.os,
      vsync_rate: vsync,
      resized,
      fullscreen_supported: document.fullscreenEnabled === true,
    };
  }

  async trial(display_element: HTMLElement, trial: TrialType<Info>, on_load?: () => void): Promise<BrowserCheckData> {
    const device = readDevice();
    const vsync = measureVsync(trial.vsync_frames ?? 30);
    on_load?.();
    if (trial.exclude_mobile && device.mobile) return this.measure(device, await vsync, false, false, 'mobile');
    const minW = trial.min_width ?? 0;
    const minH = trial.min_height ?? 0;
    const large = () => window.innerWidth >= minW && window.innerHeight >= minH;
    if (large()) return this.measure(device, await vsync, false, true, 'ok');
    const ok = await this.promptResize(display_element, minW, minH, large);
    return this.measure(device, await vsync, true, ok, ok ? 'ok' : 'window');
  }

  /** Asks for a larger window until it is large enough (true) or the participant gives up (false). */
  private promptResize(display: HTMLElement, minW: number, minH: number, large: () => boolean): Promise<boolean> {
    return new Promise((resolve) => {
      const page = el('div', 'page');
      page.dataset.page = 'resize';
      const h = el('h1', undefined, 'Please make this window larger');
      h.tabIndex = -1;
      const why = el('p', undefined, `The pictures in this study need a browser window of at least ${minW} × ${minH} pixels.`);
      const now = el('p', 'resize-now');
      now.setAttribute('aria-live', 'polite');
      const how = el('p', undefined, 'Maximise the window, or switch to full screen with the button below (or F11; on a Mac, Ctrl+⌘+F). You can also zoom out with Ctrl and − (⌘ and − on a Mac).');
      const actions = el('p', 'actions');
      const full = el('button', 'jspsych-btn', 'Use full screen');
      full.type = 'button';
      full.dataset.choiceName = 'fullscreen';
      const cannot = el('button', 'jspsych-btn', 'I cannot make it larger');
      cannot.type = 'button';
      cannot.dataset.choiceName = 'cannot-resize';
      if (document.fullscreenEnabled) actions.append(full);
      actions.append(cannot);
      page.append(h, why, now, how, actions);
      display.replaceChildren(page);
      h.focus({ preventScroll: true });

      const update = () => {
        now.textContent = `Your window is now ${Math.round(window.innerWidth)} × ${Math.round(window.innerHeight)} pixels.`;
        if (large()) finish(true);
      };
      const timer = setInterval(update, 250);
      const finish = (ok: boolean) => {
        clearInterval(timer);
        window.removeEventListener('resize', update);
        resolve(ok);
      };
      window.addEventListener('resize', update);
      full.addEventListener('click', () => {
        document.documentElement.requestFullscreen?.().catch(() => {});
      });
      cannot.addEventListener('click', () => finish(large()));
      update();
    });
  }

  async simulate(trial: TrialType<Info>, simulation_mode: 'visual' | 'data-only', _options: unknown, load_callback?: () => void): Promise<BrowserCheckData> {
    if (simulation_mode === 'visual') return this.trial(this.jsPsych.getDisplayElement(), trial, load_callback);
    // Data only: measure, but a small window counts as enlarged (as jsPsych's own plugin does).
    load_callback?.();
    const device = readDevice();
    const mobile = trial.exclude_mobile !== false && device.mobile;
    return this.measure(device, null, false, !mobile, mobile ? 'mobile' : 'ok');
  }
}

export default BrowserCheckPlugin;
