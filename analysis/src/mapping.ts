// Trial data from other tools (a jsPsych CSV export, a published data set) read through a small
// YAML mapping that names which of the file's columns are participant, feature, conditions,
// correct, rt, confidence, catch, practice, … The result is a Dataset like a legible export's.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { isMap, isScalar, isSeq, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { Exclusions, LegibleError } from '@legible/studies';
import { factsFromTrials, type Dataset } from './dataset.ts';
import { readTable, Table } from './table.ts';

const columnName = z.string().min(1);
/** A column, or a constant written as { value: … }. */
const Source = z.union([columnName, z.strictObject({ value: z.union([z.string(), z.number()]) })]);
/** Keep rows where each named column has (one of) the given value(s), compared as the file's text. */
const Where = z.record(z.string(), z.union([z.string(), z.array(z.string())]));
/** A flag column: true/false, 1/0 (or the `truthy` list); or { column, values }: the values that mark the kind of trial. */
const Flag = z.union([
  columnName,
  z.strictObject({ column: columnName, values: z.array(z.string()).min(1).describe('Values (as written in the file) that mark this kind of trial; every other value is a main trial.') }),
]);
/** A condition factor: a column, a constant, or a column with its level order, reference level and display labels. */
const Factor = z.strictObject({
  column: columnName,
  levels: z.array(z.string()).min(1).optional().describe('Every level, in order (as written in the file); a value not listed is an error.'),
  reference: z.string().optional().describe('The reference level of the model\'s treatment contrasts (default: the first level).'),
  labels: z.record(z.string(), z.string()).optional().describe('Display labels: file value → label, used everywhere after loading.'),
});

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
  catch: Flag.optional().describe('Catch trials: a true/false column, or { column, values } naming the values that mark them.'),
  practice: Flag.optional().describe('Practice/demo trials: a true/false column, or { column, values } naming the values that mark them.'),
  mode: Source.optional(),
  conditions: z.record(z.string().regex(/^[A-Za-z][A-Za-z0-9_]*$/, { error: 'condition names are letters, digits and "_"' }), z.union([Source, Factor])).default({}),
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

/**
 * Values that are compared with the data file's cells are taken as written: an unquoted False,
 * 1.0 or 007 in the mapping means the text "False", "1.0", "007", as in a CSV cell — not YAML's
 * boolean false or the number 1.
 */
function valuesAsWritten(doc: Document): void {
  const text = (node: unknown) => {
    if (isScalar(node) && node.type === 'PLAIN' && node.source !== undefined) node.value = node.source;
  };
  const each = (node: unknown) => (isSeq(node) ? node.items.forEach(text) : text(node));
  const values = (map: unknown) => {
    if (!isMap(map)) return;
    for (const item of map.items) {
      text(item.key);
      each(item.value);
    }
  };
  values(doc.getIn(['rows']));
  values(doc.getIn(['instructions', 'rows']));
  for (const k of ['catch', 'practice']) each(doc.getIn([k, 'values']));
  const conditions = doc.getIn(['conditions']);
  if (isMap(conditions)) {
    for (const item of conditions.items) {
      if (!isMap(item.value)) continue;
      each(item.value.get('levels', true));
      text(item.value.get('reference', true));
      values(item.value.get('labels', true));
    }
  }
}

export function parseMapping(text: string, file = 'mapping'): Mapping {
  const doc = parseDocument(text);
  if (doc.errors.length) throw new LegibleError(`${file}: YAML syntax: ${doc.errors[0].message.split('\n')[0]}`);
  valuesAsWritten(doc);
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
    const wanted = new Set(Array.isArray(want) ? want : [want]);
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
  for (const k of ['participant', 'session', 'correct', 'rt', 'confidence', 'response', 'time_elapsed', 'passed_checks', 'repeat'] as const) add(mapping[k]);
  for (const k of ['catch', 'practice'] as const) add(typeof mapping[k] === 'object' ? mapping[k].column : mapping[k]);
  (Array.isArray(mapping.feature) ? mapping.feature : [mapping.feature]).forEach(add);
  Object.values(mapping.conditions).forEach((c) => add(typeof c === 'object' && 'column' in c ? c.column : c));
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
  const falsy = new Set(['0', 'false', 'FALSE', 'False', 'no', 'No', 'NO', 'n', 'N', '']);
  // A flag column is read only when every value is recognised: practice trials analysed as main
  // trials because a column said "practice" instead of "true" would go unnoticed.
  const flag = (what: 'catch' | 'practice', spec: z.output<typeof Flag> | undefined): string[] => {
    if (!spec) return new Array<string>(src.n).fill('0');
    if (typeof spec === 'object') {
      const marks = new Set(spec.values);
      const values = col(spec.column);
      const seen = new Set(values);
      const absent = spec.values.filter((v) => !seen.has(v));
      if (absent.length === spec.values.length) {
        throw new LegibleError(
          `${file}: the mapping's ${what}.values ${JSON.stringify(spec.values)} match no row of column "${spec.column}" (its values: ${[...seen].slice(0, 8).map((v) => JSON.stringify(v)).join(', ')}${seen.size > 8 ? ', …' : ''})`,
        );
      }
      return values.map((v) => (marks.has(v) ? '1' : '0'));
    }
    const values = col(spec);
    const unknown = new Map<string, number>();
    for (const v of values) if (!truthy.has(v.trim()) && !falsy.has(v.trim())) unknown.set(v, (unknown.get(v) ?? 0) + 1);
    if (unknown.size) {
      const list = [...unknown].sort((a, b) => b[1] - a[1]);
      throw new LegibleError(
        `${file}: the ${what} column "${spec}" has values that are neither true nor false: ${list
          .slice(0, 8)
          .map(([v, n]) => `"${v}" (${n} row${n === 1 ? '' : 's'})`)
          .join(', ')}${list.length > 8 ? ', …' : ''}. Name the values that mark ${what} trials: ${what}: { column: ${spec}, values: [${list[0][0]}] } — or add true-values to the mapping's \`truthy\` list.`,
      );
    }
    return values.map((v) => (truthy.has(v.trim()) ? '1' : '0'));
  };
  const participant = col(mapping.participant);
  t.setColumn('participant', participant);
  const session = mapping.session ? col(mapping.session) : participant;
  t.setColumn('session', session);
  const featureCols = (Array.isArray(mapping.feature) ? mapping.feature : [mapping.feature]).map(col);
  t.setColumn('feature', Array.from({ length: src.n }, (_, i) => featureCols.map((c) => c[i]).join('/')));
  const isCatch = flag('catch', mapping.catch);
  const isPractice = flag('practice', mapping.practice);
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
  // Imported data is neither legible's pilot nor its live data: it is labelled as what it is.
  t.setColumn('mode', mapping.mode ? constOrCol(mapping.mode) : new Array(src.n).fill('imported'));
  for (const [name, s] of Object.entries(mapping.conditions)) {
    if (typeof s === 'string' || 'value' in s) {
      t.setColumn(name, constOrCol(s));
      continue;
    }
    const values = col(s.column);
    const present = [...new Set(values)];
    if (s.levels) {
      const unlisted = present.filter((v) => !s.levels!.includes(v));
      if (unlisted.length) throw new LegibleError(`${file}: column "${s.column}" (condition ${name}) has values not in its levels ${JSON.stringify(s.levels)}: ${unlisted.map((v) => JSON.stringify(v)).join(', ')}. List every level, or filter those rows out with \`rows:\`.`);
    }
    let order = s.levels ?? present.slice().sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
    if (s.reference !== undefined) {
      if (!order.includes(s.reference)) throw new LegibleError(`${file}: conditions.${name}.reference "${s.reference}" is not one of its levels (${order.join(', ')})`);
      order = [s.reference, ...order.filter((l) => l !== s.reference)];
    }
    for (const key of Object.keys(s.labels ?? {})) {
      if (!order.includes(key)) throw new LegibleError(`${file}: conditions.${name}.labels names "${key}", which is not a level (${order.join(', ')})`);
    }
    const label = (v: string) => s.labels?.[v] ?? v;
    const labelled = order.map(label);
    if (new Set(labelled).size !== labelled.length) throw new LegibleError(`${file}: conditions.${name}.labels give two levels the same label`);
    t.setColumn(name, values.map(label));
    t.orders.set(name, labelled);
  }

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
    source: basename(file),
    trials: t,
    factors: Object.keys(mapping.conditions),
    participants,
    exclusions: mapping.exclusions,
  };
}
