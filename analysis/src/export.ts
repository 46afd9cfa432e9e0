// `legible export`: the tidy trial table (one row per answered trial), the participant table (one
// row per session, with exclusion flags) and their data dictionary, streamed from the server's
// SQLite file so a million rows need no more memory than a thousand: trials are read session by
// session along the primary key, written as they come, and the writer waits for the stream to
// drain. CSV (RFC 4180) or JSON Lines.
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { basename, dirname, extname, join } from 'node:path';
import type { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { LegibleError } from '@legible/studies';
import { TRIAL_COLUMNS, type Column } from './columns.ts';
import { csvCell } from './csv.ts';
import { COUNT_DEFINITIONS, countSessions, ExclusionTally, RULES, type ExclusionConfig, type ExclusionDecision, type ExclusionSummary, type SessionCounts } from './exclusions.ts';
import { PARTICIPANT_COLUMNS, participantRows, type ParticipantDetails } from './participants.ts';

export type ExportFormat = 'csv' | 'jsonl';

export interface ExportOptions {
  db: string;
  study: string;
  /** Include practice trials (default: yes; they are flagged by is_practice). */
  practice?: boolean;
  format?: ExportFormat;
  /** The study file's exclusion rules; null or absent: participants.csv has no exclusion flags. */
  exclusions?: ExclusionConfig | null;
  /** Keep unfinished sessions out of the `incomplete` rule (default: they are flagged). */
  includeIncomplete?: boolean;
  /** The study file's data.participant_details (default coarse: no quasi-identifiers in participants.csv). */
  participantDetails?: ParticipantDetails;
}

function openStudyDb(opts: ExportOptions): Database.Database {
  if (!existsSync(opts.db)) throw new LegibleError(`no database at ${opts.db}: give the file that \`legible serve\` writes with --db (or LEGIBLE_DB).`);
  const db = new Database(opts.db, { readonly: true, fileMustExist: true });
  const known = db.prepare('SELECT COUNT(*) AS n FROM sessions WHERE study = ?').get(opts.study) as { n: number };
  if (known.n === 0) {
    const studies = db.prepare('SELECT DISTINCT study FROM sessions ORDER BY study').all() as { study: string }[];
    db.close();
    throw new LegibleError(`no sessions for study "${opts.study}" in ${opts.db}${studies.length ? ` (it has: ${studies.map((s) => s.study).join(', ')})` : ''}.`);
  }
  return db;
}

/** The trial columns' SQL, with columns an older database lacks read as NULL. */
function trialSelect(db: Database.Database): string {
  const have = new Map<string, Set<string>>();
  const cols = (table: string) => {
    if (!have.has(table)) have.set(table, new Set((db.prepare(`PRAGMA table_info(${table})`).all() as { name: string }[]).map((c) => c.name)));
    return have.get(table)!;
  };
  return TRIAL_COLUMNS.map((c) => `${c.requires && !cols(c.requires[0]).has(c.requires[1]) ? 'NULL' : c.sql} AS "${c.name}"`).join(', ');
}

/**
 * The study's trials, row by row (raw SQL values, in TRIAL_COLUMNS order), participant by
 * participant. Each session's trials are read along the primary key; the session's own columns
 * (s.…) are bound as parameters rather than joined on every row.
 */
function* trialRows(db: Database.Database, opts: ExportOptions): Generator<unknown[]> {
  const where = opts.practice === false ? "AND t.kind <> 'practice'" : '';
  const sessionCols = new Set<string>();
  const select = trialSelect(db).replace(/\bs\.([a-z_]+)/g, (_, c: string) => {
    sessionCols.add(c);
    return `@s_${c}`;
  });
  const sessions = db.prepare(`SELECT id${[...sessionCols].map((c) => `, ${c}`).join('')} FROM sessions WHERE study = ? ORDER BY participant, id`).all(opts.study) as Record<string, unknown>[];
  const rows = db.prepare(`SELECT ${select} FROM trials t WHERE t.session_id = @id ${where} ORDER BY t.seq`).raw(true);
  for (const s of sessions) {
    const params: Record<string, unknown> = { id: s.id };
    for (const c of sessionCols) params[`s_${c}`] = s[c];
    yield* rows.iterate(params) as IterableIterator<unknown[]>;
  }
}

async function writeAll(out: Writable, lines: Iterable<string>): Promise<number> {
  let n = 0;
  let buffer = '';
  for (const line of lines) {
    buffer += line;
    n++;
    if (buffer.length > 1 << 16) {
      if (!out.write(buffer)) await once(out, 'drain');
      buffer = '';
    }
  }
  if (buffer && !out.write(buffer)) await once(out, 'drain');
  return n;
}

const cellOf = (col: Pick<Column, 'type' | 'format'>, v: unknown) => (col.format ? col.format(v) : v);
const jsonValue = (type: Column['type'], v: unknown) => (v === undefined ? null : type === 'boolean' && (v === 0 || v === 1) ? v === 1 : v);

function* trialLines(db: Database.Database, opts: ExportOptions, format: ExportFormat): Generator<string> {
  if (format === 'csv') yield `${TRIAL_COLUMNS.map((c) => c.name).join(',')}\n`;
  for (const row of trialRows(db, opts)) {
    if (format === 'csv') yield `${row.map((v, i) => csvCell(cellOf(TRIAL_COLUMNS[i], v), TRIAL_COLUMNS[i].type)).join(',')}\n`;
    else {
      const obj: Record<string, unknown> = {};
      row.forEach((v, i) => (obj[TRIAL_COLUMNS[i].name] = jsonValue(TRIAL_COLUMNS[i].type, cellOf(TRIAL_COLUMNS[i], v))));
      yield `${JSON.stringify(obj)}\n`;
    }
  }
}

/** Stream the study's trials as CSV into `out` (header first). Returns the number of rows. */
export async function writeTrialsCsv(out: Writable, opts: ExportOptions): Promise<number> {
  const db = openStudyDb(opts);
  try {
    return (await writeAll(out, trialLines(db, opts, 'csv'))) - 1;
  } finally {
    db.close();
  }
}

/** Stream the study's trials as JSON Lines (one object per trial). Returns the number of rows. */
export async function writeTrialsJsonl(out: Writable, opts: ExportOptions): Promise<number> {
  const db = openStudyDb(opts);
  try {
    return await writeAll(out, trialLines(db, opts, 'jsonl'));
  } finally {
    db.close();
  }
}

/** Stream the participant table; returns its row count and the exclusion summary (when rules are given). */
export async function writeParticipants(out: Writable, opts: ExportOptions): Promise<{ rows: number; exclusions: ExclusionSummary | null; counts: SessionCounts[] }> {
  const db = openStudyDb(opts);
  const format = opts.format ?? 'csv';
  const tally = opts.exclusions ? new ExclusionTally(opts.exclusions) : null;
  const byMode = new Map<string, { decision: ExclusionDecision; mainTrials: number }[]>();
  try {
    function* lines(): Generator<string> {
      if (format === 'csv') yield `${PARTICIPANT_COLUMNS.map((c) => c.name).join(',')}\n`;
      for (const { row, decision } of participantRows(db, opts.study, opts.exclusions ?? null, { includeIncomplete: opts.includeIncomplete, details: opts.participantDetails })) {
        if (decision) {
          tally!.add(decision);
          const list = byMode.get(row.mode) ?? [];
          list.push({ decision, mainTrials: row.main_trials });
          byMode.set(row.mode, list);
        }
        if (format === 'csv') yield `${PARTICIPANT_COLUMNS.map((c) => csvCell(c.value(row, decision), c.type)).join(',')}\n`;
        else yield `${JSON.stringify(Object.fromEntries(PARTICIPANT_COLUMNS.map((c) => [c.name, jsonValue(c.type, c.value(row, decision))])))}\n`;
      }
    }
    const n = await writeAll(out, lines());
    const counts = [...byMode].sort(([a], [b]) => (a === 'live' ? -1 : b === 'live' ? 1 : a.localeCompare(b))).map(([mode, list]) => countSessions(mode, list));
    return { rows: format === 'csv' ? n - 1 : n, exclusions: tally ? tally.summary() : null, counts };
  } finally {
    db.close();
  }
}

const table = (cols: { name: string; type: string; unit?: string; description: string }[]) => [
  '| column | type | unit | description |',
  '| --- | --- | --- | --- |',
  ...cols.map((c) => `| \`${c.name}\` | ${c.type} | ${c.unit ?? ''} | ${c.description.replace(/\|/g, '\\|')} |`),
];

type Described = { name: string; type: Column['type']; unit?: string; description: string };

/**
 * A Frictionless Table Schema (https://specs.frictionlessdata.io/table-schema/) of one CSV table:
 * the type of every column, "" as the only missing value (so the text "NA" stays text), booleans
 * as 1/0. R and pandas readers take their column types from it (see analysis/README.md).
 */
export function tableSchema(cols: Described[]): Record<string, unknown> {
  const type = { text: 'string', integer: 'integer', number: 'number', boolean: 'boolean', timestamp: 'datetime' } as const;
  return {
    fields: cols.map((c) => ({
      name: c.name,
      type: type[c.type],
      ...(c.type === 'timestamp' ? { format: 'any' } : {}),
      ...(c.type === 'boolean' ? { trueValues: ['1'], falseValues: ['0'] } : {}),
      description: c.unit ? `${c.description} Unit: ${c.unit}.` : c.description,
    })),
    missingValues: [''],
  };
}

/** datapackage.json: both CSV tables with their Table Schemas (a Frictionless Tabular Data Package). */
export function dataPackage(names: { trials: string; participants: string }, extraTrialColumns: Described[] = []): Record<string, unknown> {
  const resource = (name: string, path: string, cols: Described[]) => ({
    name,
    path,
    profile: 'tabular-data-resource',
    format: 'csv',
    mediatype: 'text/csv',
    encoding: 'utf-8',
    dialect: { delimiter: ',', doubleQuote: true, header: true, lineTerminator: '\n' },
    schema: tableSchema(cols),
  });
  return {
    profile: 'tabular-data-package',
    name: 'legible-export',
    description: 'Written by `legible export`: one row per answered trial, one row per session. Empty cells are missing values; text cells that would start with =, +, - or @ are prefixed with \' (see data-dictionary.md).',
    resources: [resource('trials', names.trials, [...TRIAL_COLUMNS, ...extraTrialColumns]), resource('participants', names.participants, PARTICIPANT_COLUMNS)],
  };
}

/** The data dictionary of both tables (Markdown). */
export function dataDictionary(format: ExportFormat = 'csv', names = { trials: `trials.${format}`, participants: `participants.${format}` }): string {
  const cells =
    format === 'csv'
      ? [
          'Booleans are 1/0; empty cells are missing values (and only they: the text `NA` is text). Text cells that start',
          'with `=`, `+`, `-` or `@` (also after leading spaces or line breaks), or with a tab or line break, are prefixed',
          'with `\'` so spreadsheets do not run them as formulas. `datapackage.json` gives every column\'s type as a',
          'Frictionless Table Schema, for typed reading in R and pandas.',
        ]
      : ['One JSON object per line. Booleans are true/false; missing values are null.'];
  return [
    `# ${names.trials} — data dictionary`,
    '',
    'One row per answered trial, in participant and task-list order. Written by `legible export`.',
    ...cells,
    '',
    ...table(TRIAL_COLUMNS),
    '',
    `# ${names.participants} — data dictionary`,
    '',
    'One row per session (a participant\'s run through the study), in participant order. Exclusion flags come from the',
    '`exclusions` section of the study file as it was at export; `legible analyze` applies the rules again from the study file.',
    '',
    'Device and time details are coarse by default, as they can single a person out together with other data: browser family',
    'and major version, OS family, a screen width class, and times rounded down to the hour. The User-Agent header, screen',
    'size, devicePixelRatio and exact times are written only when the study file asks for them with',
    '`data.participant_details: full` (and were then read from the study file at export; without a study file: coarse).',
    '',
    ...table(PARTICIPANT_COLUMNS),
    '',
    '## Exclusion rules',
    '',
    ...RULES.map((r) => `- \`${r.column}\`: ${r.label}.`),
    '',
    '`incomplete` is not a study-file rule: sessions that did not finish are flagged unless `--include-incomplete` is given.',
    '`repeat_participation` matches the raw recruitment id (Prolific or participant id) against other studies in the same',
    'database: the server already allows one session per person and study. `browser_check` fires on a `browser_check` client',
    'event whose detail says `passed: false` (legible\'s client turns failing devices away before a session exists, so this',
    'mostly concerns imported data).',
    '',
    '## Session counts',
    '',
    '`legible export`, `legible analyze` and the dashboard report the same counts, per study mode, defined once:',
    '',
    ...COUNT_DEFINITIONS.map((d) => `- **${d.label}** (\`${d.key}\`): ${d.definition}.`),
    '',
  ].join('\n');
}

export interface ExportResult {
  rows: number;
  participants: number;
  files: string[];
  exclusions: ExclusionSummary | null;
  /** Session counts per mode (live first), when the study file's rules were given. */
  counts: SessionCounts[];
}

async function streamTo(file: string, write: (out: Writable) => Promise<void>): Promise<void> {
  const tmp = `${file}.partial`;
  const stream = createWriteStream(tmp);
  try {
    await write(stream);
  } catch (err) {
    stream.destroy();
    if (!stream.closed) await once(stream, 'close');
    rmSync(tmp, { force: true });
    throw err;
  }
  stream.end();
  await once(stream, 'close');
  renameSync(tmp, file);
}

/**
 * Export to `out`: a folder (trials.csv, participants.csv, data-dictionary.md inside it), or a
 * .csv / .jsonl file for the trials, with participants.csv (.jsonl) and data-dictionary.md beside it.
 */
export async function exportStudy(out: string, opts: ExportOptions): Promise<ExportResult> {
  const ext = extname(out).toLowerCase();
  const asFile = (ext === '.csv' || ext === '.jsonl') && !(existsSync(out) && statSync(out).isDirectory());
  const format: ExportFormat = opts.format ?? (asFile && ext === '.jsonl' ? 'jsonl' : 'csv');
  if (asFile && ext !== `.${format}`) throw new LegibleError(`--out ${out} ends in ${ext} but --format is ${format}: use a .${format} file name or a folder`);
  const dir = asFile ? dirname(out) : out;
  const trialsFile = asFile ? out : join(dir, `trials.${format}`);
  let participantsFile = join(dir, `participants.${format}`);
  if (participantsFile === trialsFile) participantsFile = join(dir, `participants-summary.${format}`);
  const dictFile = join(dir, 'data-dictionary.md');
  const packageFile = join(dir, 'datapackage.json');
  openStudyDb(opts).close(); // fail on a wrong database or study before writing anything
  mkdirSync(dir, { recursive: true });
  const o = { ...opts, format };
  let rows = 0;
  await streamTo(trialsFile, async (s) => {
    rows = format === 'csv' ? await writeTrialsCsv(s, o) : await writeTrialsJsonl(s, o);
  });
  let participants = { rows: 0, exclusions: null as ExclusionSummary | null, counts: [] as SessionCounts[] };
  await streamTo(participantsFile, async (s) => {
    participants = await writeParticipants(s, o);
  });
  writeFileSync(dictFile, dataDictionary(format, { trials: basename(trialsFile), participants: basename(participantsFile) }));
  const files = [trialsFile, participantsFile, dictFile];
  if (format === 'csv') {
    writeFileSync(packageFile, `${JSON.stringify(dataPackage({ trials: basename(trialsFile), participants: basename(participantsFile) }), null, 2)}\n`);
    files.push(packageFile);
  }
  return { rows, participants: participants.rows, files, exclusions: participants.exclusions, counts: participants.counts };
}
