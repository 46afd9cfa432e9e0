// What one feature-2afc response means, independent of jsPsych (which needs a window to load):
// the button layout, and the answer the plugin hands to the outbox (the contract's TrialAnswer).

/** Kept equal to client/package.json's version (a test checks it). */
export const PLUGIN_VERSION = '0.1.0';

export type Query = 0 | 1;
export type Confidence = 1 | 2 | 3;
export type Position = 'upper' | 'lower';

/** The fields of the contract's TrialAnswer (studies/src/contracts.ts), as the plugin fills them. */
export interface Answer {
  /** Task-list index of the chosen query. */
  query: Query;
  confidence: Confidence;
  rt_ms: number;
  /** [task-list index drawn upper, task-list index drawn lower]. */
  query_order: [Query, Query];
  input: 'key' | 'pointer';
  onset_ms: number;
  response_ms: number;
  client_time: number;
  window: [number, number];
  screen: [number, number];
  dpr: number;
  plugin_version: string;
}

export type Feedback = { correct: boolean } | null;

/** Button i (0–5, = key i+1): 0–2 upper very sure → guessing, 3–5 lower guessing → very sure. */
export function buttonMeaning(button: number): { position: Position; confidence: Confidence } {
  if (!Number.isInteger(button) || button < 0 || button > 5) throw new RangeError(`button must be 0–5, got ${button}`);
  return button < 3
    ? { position: 'upper', confidence: (3 - button) as Confidence }
    : { position: 'lower', confidence: (button - 2) as Confidence };
}

/** Picks the contract's TrialAnswer fields out of the plugin's trial data. */
export function toTrialAnswer(data: Record<string, unknown>): Answer {
  const keys: (keyof Answer)[] = ['query', 'confidence', 'query_order', 'input', 'onset_ms', 'response_ms', 'client_time', 'window', 'screen', 'dpr', 'plugin_version'];
  const out: Record<string, unknown> = { rt_ms: data.rt };
  for (const k of keys) if (data[k] !== undefined && data[k] !== null) out[k] = data[k];
  return out as unknown as Answer;
}
