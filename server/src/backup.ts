// `legible backup`: an online copy of the database through SQLite's backup API, safe while the
// server runs and writes. The copy is written beside the target, checked (integrity_check), turned
// into a self-contained file (journal_mode=DELETE), and only then renamed into place.
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { LegibleError } from '@legible/studies';

export interface BackupResult {
  file: string;
  bytes: number;
  pages: number;
  /** Rows per table in the copy. */
  rows: Record<string, number>;
  ms: number;
}

export async function backupDatabase(source: string, out: string, opts: { overwrite?: boolean } = {}): Promise<BackupResult> {
  const src = resolve(source);
  const dest = resolve(out);
  if (!existsSync(src)) throw new LegibleError(`no database at ${src}: give the file that \`legible serve\` writes with --db (or LEGIBLE_DB)`);
  if (src === dest) throw new LegibleError('--out must be another file than --db');
  if (!existsSync(dirname(dest))) throw new LegibleError(`folder ${dirname(dest)} does not exist: create it first`);
  if (existsSync(dest) && !opts.overwrite) throw new LegibleError(`${dest} exists: choose another --out, or add --force to replace it`);
  const started = performance.now();
  const partial = `${dest}.partial`;
  for (const f of [partial, `${partial}-wal`, `${partial}-shm`, `${partial}-journal`]) rmSync(f, { force: true });

  const db = new Database(src, { fileMustExist: true });
  let pages = 0;
  try {
    db.pragma('busy_timeout = 10000');
    // Everything in one step: the first call only sets up, the second copies all pages while
    // holding a read transaction, so the server's commits (to the WAL) neither block nor restart it.
    const progress = await db.backup(partial, { progress: () => 0x7fffffff });
    pages = progress.totalPages;
  } catch (e) {
    rmSync(partial, { force: true });
    throw new LegibleError(`backup of ${src} failed: ${(e as Error).message}`);
  } finally {
    db.close();
  }

  const copy = new Database(partial, { fileMustExist: true });
  const rows: Record<string, number> = {};
  try {
    const check = copy.pragma('integrity_check', { simple: true });
    if (check !== 'ok') throw new LegibleError(`the backup copy failed its integrity check (${String(check)}); the database was not changed, try again`);
    copy.pragma('journal_mode = DELETE');
    const tables = copy.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    for (const t of tables) rows[t] = copy.prepare(`SELECT count(*) FROM "${t.replace(/"/g, '""')}"`).pluck().get() as number;
  } catch (e) {
    copy.close();
    rmSync(partial, { force: true });
    throw e;
  }
  copy.close();
  if (opts.overwrite) rmSync(dest, { force: true });
  renameSync(partial, dest);
  return { file: dest, bytes: statSync(dest).size, pages, rows, ms: Math.round(performance.now() - started) };
}
