// The data an analysis runs on, whatever its source: trial rows in canonical columns
// (participant, session, feature, kind, correct, rt_ms, confidence, button, mode, and the
// condition factors) and one fact sheet per session for the exclusion rules. Sources: a legible
// export (trials.csv/.jsonl, with participants.csv beside it), or another tool's trial file read
// through a mapping file (mapping.ts).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { LegibleError } from '@legible/studies';
import type { ExclusionConfig, ParticipantFacts } from './exclusions.ts';
import { readTable, Table } from './table.ts';

export interface Dataset {
  /** Where the trials came from (for messages and the report). */
  source: string;
  trials: Table;
  /** Condition factors present in the data, in analysis order (e.g. basis, layer, reference_kind). */
  factors: string[];
  /** One fact sheet per session. */
  participants: ParticipantFacts[];
  /** Exclusion rules that came with the data (a mapping file's `exclusions`), if any. */
  exclusions?: ExclusionConfig;
  /** The study id named in the data, if any. */
  study?: string;
}

const LEGIBLE_FACTORS = ['basis', 'layer', 'reference_kind'];
const LEGIBLE_KEEP = new Set([
  'study',
  'mode',
  'session',
  'participant',
  'condition_layer',
  'condition_basis',
  'condition_reference_kind',
  'seq',
  'kind',
  'feature',
  'layer',
  'basis',
  'feature_index',
  'reference_kind',
  'choice',
  'confidence',
  'button',
  'correct',
  'rt_ms',
  'practice_round',
]);

/** A legible export: trials.csv (or .jsonl) and, when present, participants.csv beside it. */
export function loadLegibleExport(file: string, extraColumns: string[] = []): Dataset {
  if (!existsSync(file)) throw new LegibleError(`no file ${file}: give a trials.csv that \`legible export\` wrote, or a study id with --db`);
  const trials = readTable(file, (name) => LEGIBLE_KEEP.has(name) || extraColumns.includes(name));
  for (const need of ['participant', 'feature', 'kind', 'correct']) {
    if (!trials.has(need)) {
      throw new LegibleError(
        `${file} has no "${need}" column: is it a legible export? For other tools' files give a mapping with --mapping (see analysis/README.md)`,
      );
    }
  }
  if (!trials.has('session')) trials.setColumn('session', trials.column('participant')!);
  // A factor column that is empty throughout (an export of imported data without it) is no factor.
  const factors = LEGIBLE_FACTORS.filter((f) => trials.has(f) && trials.column(f)!.some((v) => v !== ''));
  const ext = file.toLowerCase().endsWith('.jsonl') ? 'jsonl' : 'csv';
  const pfile = join(dirname(file), `participants.${ext}`);
  let participants: ParticipantFacts[];
  if (existsSync(pfile)) {
    const p = readTable(pfile);
    const cols = p.names();
    const get = (name: string) => (cols.includes(name) ? p.column(name)! : new Array<string>(p.n).fill(''));
    const num = (name: string) => (cols.includes(name) ? p.numbers(name) : new Float64Array(p.n).fill(NaN));
    const bool = (v: string) => (v === '1' || v === 'true' ? true : v === '0' || v === 'false' ? false : null);
    const opt = (x: number) => (Number.isFinite(x) ? x : null);
    const session = get('session');
    const participant = get('participant');
    const complete = get('complete');
    const answered = num('trials_answered');
    const expected = num('trials_expected');
    const total = num('total_time_s');
    const instr = num('instruction_time_s');
    const catchN = num('catch_trials');
    const catchC = num('catch_correct');
    const distinct = num('distinct_responses');
    const practice = get('practice_passed');
    const prior = get('prior_participation');
    const checkFailed = get('excl_browser_check');
    const modeOf = get('mode');
    participants = session.map((s, i) => ({
      session: s,
      participant: participant[i],
      mode: modeOf[i] || null,
      complete: bool(complete[i]),
      trials_answered: opt(answered[i]),
      trials_expected: opt(expected[i]),
      total_time_s: opt(total[i]),
      instruction_time_s: opt(instr[i]),
      catch_trials: opt(catchN[i]),
      catch_correct: opt(catchC[i]),
      distinct_responses: opt(distinct[i]),
      practice_passed: bool(practice[i]),
      browser_check_failed: bool(checkFailed[i]),
      prior_participation: prior[i] || null,
    }));
  } else participants = factsFromTrials(trials);
  const study = trials.has('study') ? trials.column('study')!.find((s) => s) : undefined;
  return { source: file, trials, factors, participants, study };
}

/** Fact sheets derived from trial rows alone (imported data, or an export without participants.csv). */
export function factsFromTrials(
  trials: Table,
  extra: { totalTime?: Float64Array; instructionTime?: Map<string, number>; checkFailed?: string[]; repeat?: string[] } = {},
): ParticipantFacts[] {
  const session = trials.codes('session');
  const participant = trials.codes('participant');
  const kind = trials.column('kind')!;
  const correct = trials.numbers('correct');
  const button = trials.has('button') ? trials.column('button')! : null;
  const modeCol = trials.has('mode') ? trials.column('mode')! : null;
  const bySession = new Map<number, ParticipantFacts & { buttons: Set<string>; order: number }>();
  for (let i = 0; i < trials.n; i++) {
    const s = session.codes[i];
    let f = bySession.get(s);
    if (!f) {
      f = {
        session: session.levels[s],
        participant: participant.levels[participant.codes[i]],
        mode: modeCol ? modeCol[i] || null : null,
        complete: null,
        trials_answered: 0,
        trials_expected: null,
        total_time_s: null,
        instruction_time_s: extra.instructionTime?.get(session.levels[s]) ?? null,
        catch_trials: 0,
        catch_correct: 0,
        distinct_responses: null,
        practice_passed: null,
        browser_check_failed: null,
        prior_participation: null,
        buttons: new Set(),
        order: bySession.size,
      };
      bySession.set(s, f);
    }
    f.trials_answered!++;
    if (kind[i] === 'catch') {
      f.catch_trials!++;
      if (correct[i] === 1) f.catch_correct!++;
    }
    if (button && kind[i] !== 'practice' && button[i] !== '') f.buttons.add(button[i]);
    const t = extra.totalTime?.[i];
    if (t !== undefined && Number.isFinite(t)) f.total_time_s = Math.max(f.total_time_s ?? 0, t);
    const failed = extra.checkFailed?.[i];
    if (failed === '1') f.browser_check_failed = true;
    else if (failed === '0' && f.browser_check_failed === null) f.browser_check_failed = false;
    if (extra.repeat?.[i] === '1') f.prior_participation = 'flagged in the data';
  }
  const facts = [...bySession.values()].sort((a, b) => a.order - b.order);
  // A participant with several sessions took part again: the second and later ones are repeats.
  const seen = new Map<string, string>();
  for (const f of facts) {
    const before = seen.get(f.participant);
    if (before !== undefined && !f.prior_participation) f.prior_participation = `session ${before}`;
    if (before === undefined) seen.set(f.participant, f.session);
  }
  return facts.map(({ buttons, order: _order, ...f }) => ({ ...f, distinct_responses: button ? buttons.size : null }));
}
