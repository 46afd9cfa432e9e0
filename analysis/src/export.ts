// `legible export`: the tidy trial CSV (one row per answered trial) and its data dictionary,
// streamed from the server's SQLite file so a million rows need no more memory than a thousand.
import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import { dirname, extname, join } from 'node:path';
import type { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import { LegibleError } from '@legible/studies';
import { TRIAL_COLUMNS } from './columns.ts';
import { csvCell } from './csv.ts';

export interface ExportOptions {
  db: string;
  study: string;
  /** Include practice trials (default: yes; they are flagged by is_practice). */
  practice?: boolean;
}

/** Stream the study's trials as CSV rows into `out`. Returns the number of rows. */
export async function writeTrialsCsv(out: Writable, opts: ExportOptions): Promise<number> {
  if (!existsSync(opts.db)) throw new LegibleError(`no database at ${opts.db}: give the file that \`legible serve\` writes with --db (or LEGIBLE_DB).`);
  const db = new Database(opts.db, { readonly: true, fileMustExist: true });
  try {
    const known = db.prepare('SELECT COUNT(*) AS n FROM sessions WHERE study = ?').get(opts.study) as { n: number };
    if (known.n === 0) {
      const studies = db.prepare('SELECT DISTINCT study FROM sessions ORDER BY study').all() as { study: string }[];
      throw new LegibleError(`no sessions for study "${opts.study}" in ${opts.db}${studies.length ? ` (it has: ${studies.map((s) => s.study).join(', ')})` : ''}.`);
    }
    const select = TRIAL_COLUMNS.map((c) => `${c.sql} AS "${c.name}"`).join(', ');
    const where = opts.practice === false ? "AND t.kind <> 'practice'" : '';
    const rows = db
      .prepare(`SELECT ${select} FROM trials t JOIN sessions s ON s.id = t.session_id WHERE t.study = ? ${where} ORDER BY t.participant, t.session_id, t.seq`)
      .raw(true)
      .iterate(opts.study) as IterableIterator<unknown[]>;
    const write = async (line: string) => {
      if (!out.write(line)) await once(out, 'drain');
    };
    await write(`${TRIAL_COLUMNS.map((c) => c.name).join(',')}\n`);
    let n = 0;
    for (const row of rows) {
      const cells = row.map((v, i) => {
        const col = TRIAL_COLUMNS[i];
        return csvCell(col.format ? col.format(v) : v, col.type);
      });
      await write(`${cells.join(',')}\n`);
      n++;
    }
    return n;
  } finally {
    db.close();
  }
}

export function dataDictionary(): string {
  const lines = [
    '# trials.csv — data dictionary',
    '',
    'One row per answered trial, in participant and task-list order. Written by `legible export`.',
    'Booleans are 1/0; empty cells are missing values. Text cells that would start with `=`, `+`, `-` or `@`',
    'are prefixed with `\'` so spreadsheets do not run them as formulas.',
    '',
    '| column | type | unit | description |',
    '| --- | --- | --- | --- |',
    ...TRIAL_COLUMNS.map((c) => `| \`${c.name}\` | ${c.type} | ${c.unit ?? ''} | ${c.description.replace(/\|/g, '\\|')} |`),
    '',
  ];
  return lines.join('\n');
}

/**
 * Export to `out`: a .csv file (the dictionary goes beside it as data-dictionary.md), or a folder
 * (trials.csv and data-dictionary.md inside it).
 */
export async function exportStudy(out: string, opts: ExportOptions): Promise<{ rows: number; files: string[] }> {
  const asFile = extname(out).toLowerCase() === '.csv' && !(existsSync(out) && statSync(out).isDirectory());
  const csvFile = asFile ? out : join(out, 'trials.csv');
  const dictFile = join(dirname(csvFile), 'data-dictionary.md');
  mkdirSync(dirname(csvFile), { recursive: true });
  const tmp = `${csvFile}.partial`;
  const stream = createWriteStream(tmp);
  let rows: number;
  try {
    rows = await writeTrialsCsv(stream, opts);
  } catch (err) {
    stream.destroy();
    rmSync(tmp, { force: true });
    throw err;
  }
  stream.end();
  await once(stream, 'close');
  renameSync(tmp, csvFile);
  writeFileSync(dictFile, dataDictionary());
  return { rows, files: [csvFile, dictFile] };
}
