// `legible backup`: an online copy of the database through SQLite's backup API, safe while the
// server runs and writes. The copy is written beside the target, checked (integrity_check), turned
// into a self-contained file (journal_mode=DELETE), and only then renamed into place.
import { copyFileSync, existsSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
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

/** `legible backup --dir`: the copy's name, `<database name>-<UTC time to the millisecond>.db`. */
export function timestampedName(source: string, at: Date): string {
  const stem = basename(source).replace(/\.(db|sqlite3?)$/i, '');
  const t = at.toISOString().replace(/[-:]/g, '').replace('.', ''); // 20301231T235959123Z
  return `${stem}-${t}.db`;
}

/**
 * `legible backup --dir DIR [--keep N]`: a time-stamped copy in DIR; with keep, the copies of this
 * database beyond the newest `keep` are deleted (only files named as timestampedName names them).
 */
export async function backupToDir(source: string, dir: string, opts: { keep?: number; now?: Date } = {}): Promise<BackupResult & { removed: string[] }> {
  const folder = resolve(dir);
  if (!existsSync(folder) || !statSync(folder).isDirectory()) throw new LegibleError(`--dir ${folder} is not a folder: create it first (mkdir -p ${folder})`);
  const result = await backupDatabase(source, join(folder, timestampedName(source, opts.now ?? new Date())));
  const removed: string[] = [];
  if (opts.keep !== undefined) {
    const stem = basename(result.file).replace(/-\d{8}T\d{9}Z\.db$/, '');
    const own = new RegExp(`^${stem.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}-\\d{8}T\\d{9}Z\\.db$`);
    const copies = readdirSync(folder).filter((f) => own.test(f)).sort();
    for (const f of copies.slice(0, Math.max(0, copies.length - opts.keep))) {
      rmSync(join(folder, f), { force: true });
      removed.push(join(folder, f));
    }
  }
  return { ...result, removed };
}

export interface RestoreResult {
  /** Rows per table in the restored database. */
  rows: Record<string, number>;
  /** Where the database it replaced was moved (null when there was none). */
  aside: string | null;
}

/**
 * `legible restore --from BACKUP --db FILE`: checks the backup (SQLite, integrity, legible's tables),
 * refuses while another process (a running server) has FILE open, moves FILE (with its -wal and
 * -shm) aside to FILE.before-restore-<time>, and puts a copy of the backup in its place.
 */
export function restoreDatabase(from: string, target: string, now: Date = new Date()): RestoreResult {
  const src = resolve(from);
  const dest = resolve(target);
  if (!existsSync(src)) throw new LegibleError(`no backup at ${src}: give a file that \`legible backup\` wrote with --from`);
  if (src === dest) throw new LegibleError('--from must be another file than --db');
  if (!existsSync(dirname(dest))) throw new LegibleError(`folder ${dirname(dest)} does not exist: create it first`);
  const rows: Record<string, number> = {};
  let check: Database.Database | undefined;
  try {
    check = new Database(src, { readonly: true, fileMustExist: true });
    const tables = check.prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    if (!['sessions', 'trials', 'meta'].every((t) => tables.includes(t))) throw new LegibleError(`${src} is not a legible database backup (no sessions, trials or meta table): give a file that \`legible backup\` wrote`);
    const ok = check.pragma('integrity_check', { simple: true });
    if (ok !== 'ok') throw new LegibleError(`${src} failed its integrity check (${String(ok)}): restore an older backup`);
    for (const t of tables) rows[t] = check.prepare(`SELECT count(*) FROM "${t.replace(/"/g, '""')}"`).pluck().get() as number;
  } catch (e) {
    if (e instanceof LegibleError) throw e;
    throw new LegibleError(`${src} is not a legible database backup (${(e as Error).message}): give a file that \`legible backup\` wrote`);
  } finally {
    check?.close();
  }

  let aside: string | null = null;
  if (existsSync(dest)) {
    // An exclusive lock fails at once while any other connection (a running server) has the file open.
    const probe = new Database(dest, { fileMustExist: true, timeout: 0 });
    try {
      probe.pragma('locking_mode = EXCLUSIVE');
      probe.exec('BEGIN EXCLUSIVE');
      probe.exec('COMMIT');
    } catch (e) {
      probe.close();
      if ((e as { code?: string }).code === 'SQLITE_BUSY') {
        throw new LegibleError(`${dest} is open in another process (a running \`legible serve\`?): stop the server first (systemctl stop legible, or docker compose stop legible), then restore; nothing was changed`);
      }
      throw new LegibleError(`could not open ${dest} to replace it (${(e as Error).message}); nothing was changed`);
    }
    probe.close(); // the last connection: SQLite folds the WAL into the file
    aside = `${dest}.before-restore-${now.toISOString().replace(/[-:]/g, '').replace('.', '')}`;
    for (const suffix of ['', '-wal', '-shm']) if (existsSync(dest + suffix)) renameSync(dest + suffix, aside + suffix);
  }
  const partial = `${dest}.partial`;
  copyFileSync(src, partial);
  renameSync(partial, dest);
  return { rows, aside };
}
