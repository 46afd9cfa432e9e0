// Trial data from other tools (a jsPsych CSV export, a published data set) read through a small
// YAML mapping that names which of the file's columns are participant, feature, conditions,
// correct, rt, confidence, catch, practice, … The result is a Dataset like a legible export's.
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { Exclusions, LegibleError } from '@legible/studies';
import { factsFromTrials, type Dataset } from './dataset.ts';
import { readTable, Table } from './table.ts';

const columnName = z.string().min(1);
/** A column, or a constant written as { value: … }. */
const Source = z.union([columnName, z.strictObject({ value: z.union([z.string(), z.number()]) })]);
/** Keep rows where each named column has (one of) the given value(s). */
const Where = z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.array(z.union([z.string(), z.number(), z.boolean()]))]));

export const Mapping = z.strictObject({
  format: z.enum(['csv', 'jsonl']).optional().describe('Default: from the file name.'),
  rows: Where.optional().describe('Keep only trial rows where these columns have these values (e.g. trial_type: imi-2afc).'),
  participant: columnName.describe('Participant id column.'),
  session: columnName.optional().describe('Session (run) id column; default: one session per participant.'),
  feature: z.union([columnName, z.array(columnName).min(1)]).describe('Unit/feature id: a column, or several joined with "/".'),
  correct: columnName.describe('1/0 or true/false.'),
  rt: columnName.optional().describe('Response time column.'),
  rt_unit: z.enum(['ms', 's']).default('ms'),
  confidence: columnName.optional(),
  response: columnName.optional().describe('The button or key pressed: used for the distinct-responses rule.'),
  catch: columnName.optional().describe('Catch-trial flag (truthy values mark catch trials).'),
  practice: columnName.optional().describe('Practice/demo flag (truthy values mark practice trials).'),
  mode: Source.optional(),
  conditions: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/, { error: 'condition names are letters, digits and "_"' }), Source).default({}),
  time_elapsed: columnName.optional().describe('Milliseconds since the participant started (jsPsych): total time = its largest value.'),
  instructions: z
    .strictObject({ rows: Where, rt: columnName })
    .optional()
    .describe('Instruction time = the sum of `rt` (ms) over the rows matching `rows` (e.g. trial_type: instructions).'),
  passed_checks: columnName.optional().describe('Browser/device check flag: a falsy value marks a failed check.'),
  repeat: columnName.optional().describe('Flag of a repeat participation (e.g. multi_participation).'),
  truthy: z.array(z.string()).default(['1', 'true', 'TRUE', 'True', 'yes', 'Yes', 'y']),
  exclusions: Exclusions.optional().describe('The exclusion rules (the study file\'s `exclusions` section).'),
});
export type Mapping = z.output<typeof Mapping>;

export function parseMapping(text: string, file = 'mapping'): Mapping {
  const doc = parseDocument(text);
  if (doc.errors.length) throw new LegibleError(`${file}: YAML syntax: ${doc.errors[0].message.split('\n')[0]}`);
  const parsed = Mapping.safeParse(doc.toJS());
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(top level)'}: ${i.message}`);
    throw new LegibleError(`${file}: ${lines.length} problem${lines.length > 1 ? 's' : ''}\n${lines.join('\n')}`);
  }
  return parsed.data;
}

export function loadMapping(file: string): Mapping {
  return parseMapping(readFileSync(file, 'utf8'), file);
}

function matcher(where: z.output<typeof Where>, table: Table, file: string): (i: number) => boolean {
  const tests = Object.entries(where).map(([col, want]) => {
    const values = table.column(col);
    if (!values) throw new LegibleError(`${file}: the mapping's rows filter names column "${col}", which the file does not have`);
    const wanted = new Set((Array.isArray(want) ? want : [want]).map(String));
    return (i: number) => wanted.has(values[i]);
  });
  return (i) => tests.every((t) => t(i));
}

/** Read another tool's trial file through a mapping. */
export function loadMapped(file: string, mapping: Mapping): Dataset {
  const sourceCols = new Set<string>();
  const add = (c: unknown) => {
    if (typeof c === 'string') sourceCols.add(c);
  };
  for (const k of ['participant', 'session', 'correct', 'rt', 'confidence', 'response', 'catch', 'practice', 'time_elapsed', 'passed_checks', 'repeat'] as const) add(mapping[k]);
  (Array.isArray(mapping.feature) ? mapping.feature : [mapping.feature]).forEach(add);
  Object.values(mapping.conditions).forEach(add);
  add(mapping.mode);
  Object.keys(mapping.rows ?? {}).forEach(add);
  if (mapping.instructions) {
    Object.keys(mapping.instructions.rows).forEach(add);
    add(mapping.instructions.rt);
  }
  const raw = readTable(file, (name) => sourceCols.has(name));
  const missing = [...sourceCols].filter((c) => !raw.has(c));
  if (missing.length) throw new LegibleError(`${file}: the mapping names column${missing.length > 1 ? 's' : ''} ${missing.map((c) => `"${c}"`).join(', ')} that the file does not have`);

  const truthy = new Set(mapping.truthy);
  // Instruction time per session, from the rows that are not trials.
  const participantCol = raw.column(mapping.participant)!;
  const sessionCol = mapping.session ? raw.column(mapping.session)! : participantCol;
  let instructionTime: Map<string, number> | undefined;
  if (mapping.instructions) {
    instructionTime = new Map();
    const match = matcher(mapping.instructions.rows, raw, file);
    const rt = raw.numbers(mapping.instructions.rt);
    for (let i = 0; i < raw.n; i++) {
      if (match(i) && Number.isFinite(rt[i])) instructionTime.set(sessionCol[i], (instructionTime.get(sessionCol[i]) ?? 0) + rt[i] / 1000);
    }
  }
  // Total time per session from every row (the last row of a jsPsych run has the largest time_elapsed).
  const totalBySession = new Map<string, number>();
  if (mapping.time_elapsed) {
    const te = raw.numbers(mapping.time_elapsed);
    for (let i = 0; i < raw.n; i++) if (Number.isFinite(te[i])) totalBySession.set(sessionCol[i], Math.max(totalBySession.get(sessionCol[i]) ?? 0, te[i] / 1000));
  }
  const keep = mapping.rows ? matcher(mapping.rows, raw, file) : () => true;
  const src = raw.filter(keep);
  if (src.n === 0) throw new LegibleError(`${file}: no rows left after the mapping's rows filter ${JSON.stringify(mapping.rows)}`);

  const t = new Table(file);
  t.n = src.n;
  const col = (name: string) => src.column(name)!;
  const flag = (name: string | undefined) => (name ? col(name).map((v) => (truthy.has(v.trim()) ? '1' : '0')) : new Array<string>(src.n).fill('0'));
  const participant = col(mapping.participant);
  t.setColumn('participant', participant);
  const session = mapping.session ? col(mapping.session) : participant;
  t.setColumn('session', session);
  const featureCols = (Array.isArray(mapping.feature) ? mapping.feature : [mapping.feature]).map(col);
  t.setColumn('feature', Array.from({ length: src.n }, (_, i) => featureCols.map((c) => c[i]).join('/')));
  const isCatch = flag(mapping.catch);
  const isPractice = flag(mapping.practice);
  t.setColumn('kind', Array.from({ length: src.n }, (_, i) => (isPractice[i] === '1' ? 'practice' : isCatch[i] === '1' ? 'catch' : 'main')));
  const correct = col(mapping.correct).map((v, i) => {
    const s = v.trim();
    if (truthy.has(s)) return '1';
    if (s === '0' || s.toLowerCase() === 'false' || s.toLowerCase() === 'no') return '0';
    throw new LegibleError(`${file}: row ${i + 1} of the trial rows has "${v}" in the correct column "${mapping.correct}"; expected 1/0 or true/false (add values to the mapping's \`truthy\` list)`);
  });
  t.setColumn('correct', correct);
  const scale = mapping.rt_unit === 's' ? 1000 : 1;
  t.setColumn('rt_ms', mapping.rt ? Array.from(src.numbers(mapping.rt), (x) => (Number.isFinite(x) ? String(x * scale) : '')) : new Array(src.n).fill(''));
  t.setColumn('confidence', mapping.confidence ? col(mapping.confidence) : new Array(src.n).fill(''));
  if (mapping.response) t.setColumn('button', col(mapping.response));
  const constOrCol = (s: z.output<typeof Source>) => (typeof s === 'string' ? col(s) : new Array<string>(src.n).fill(String(s.value)));
  t.setColumn('mode', mapping.mode ? constOrCol(mapping.mode) : new Array(src.n).fill('live'));
  for (const [name, s] of Object.entries(mapping.conditions)) t.setColumn(name, constOrCol(s));

  const totalTime = mapping.time_elapsed ? Float64Array.from(session, (s) => totalBySession.get(s) ?? NaN) : undefined;
  // Check and repeat flags may sit on any row of a session (jsPsych's browser-check row, say).
  const perSession = (name: string | undefined, failedWhenTruthy: boolean) => {
    if (!name) return undefined;
    const values = raw.column(name)!;
    const flagged = new Map<string, string>();
    for (let i = 0; i < raw.n; i++) {
      const v = values[i].trim();
      if (v === '') continue;
      const bad = truthy.has(v) === failedWhenTruthy;
      if (bad || !flagged.has(sessionCol[i])) flagged.set(sessionCol[i], bad ? '1' : '0');
    }
    return session.map((s) => flagged.get(s) ?? '');
  };
  const checkFailed = perSession(mapping.passed_checks, false);
  const repeat = perSession(mapping.repeat, true);
  const participants = factsFromTrials(t, { totalTime, instructionTime, checkFailed, repeat });
  return {
    source: file,
    trials: t,
    factors: Object.keys(mapping.conditions),
    participants,
    exclusions: mapping.exclusions,
  };
}
