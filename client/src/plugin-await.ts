// A small jsPsych 8 plugin that shows a message while an asynchronous step runs (creating the
// session, saving the last answers), and ends when the step settles. The step's value is kept
// by the caller; the trial data only say whether it succeeded and how long it took.
import { ParameterType, type JsPsych, type JsPsychPlugin, type TrialType } from 'jspsych';
import { PLUGIN_VERSION } from './plugin-feature-2afc.ts';

const info = {
  name: 'legible-await',
  version: PLUGIN_VERSION,
  parameters: {
    /** Text shown while the step runs (after `delay_ms`, so quick steps do not flash). */
    message: { type: ParameterType.STRING, default: 'Please wait…' },
    delay_ms: { type: ParameterType.INT, default: 250 },
    /** `(say: (text: string) => void) => Promise<unknown>`: the step; `say` replaces the message. */
    run: { type: ParameterType.FUNCTION, default: undefined },
  },
  data: {
    ok: { type: ParameterType.BOOL },
    error: { type: ParameterType.STRING },
    duration_ms: { type: ParameterType.FLOAT },
  },
} as const;

type Info = typeof info;

class AwaitPlugin implements JsPsychPlugin<Info> {
  static info = info;

  constructor(private jsPsych: JsPsych) {}

  async trial(display_element: HTMLElement, trial: TrialType<Info>, on_load?: () => void) {
    const start = performance.now();
    const note = document.createElement('p');
    note.className = 'muted';
    note.setAttribute('role', 'status');
    display_element.replaceChildren(note);
    let said = false;
    this.jsPsych.pluginAPI.setTimeout(() => {
      if (!said) note.textContent = trial.message ?? null;
    }, trial.delay_ms ?? 250);
    const say = (text: string) => {
      said = true;
      note.textContent = text;
    };
    on_load?.();
    try {
      await trial.run(say);
      return { ok: true, error: null, duration_ms: performance.now() - start };
    } catch (err) {
      return { ok: false, error: String(err), duration_ms: performance.now() - start };
    }
  }

  async simulate(trial: TrialType<Info>, _mode: 'visual' | 'data-only', _options: unknown, load_callback?: () => void) {
    return this.trial(this.jsPsych.getDisplayElement(), trial, load_callback);
  }
}

export default AwaitPlugin;
