// The running server's study watcher: study folders added to the studies folder, and study
// folders whose files change (the study file edited, the stimuli rebuilt), are picked up without a
// restart. Every few seconds it compares cheap fingerprints (sizes and times, studycheck.ts) with
// the ones it saw last; a new or changed study is loaded and checked in full (study file against
// the schema, manifest against the contract, the study and the files in build/) and only then
// served. A broken one is reported (a warning in the log, once per change) and not served: a new
// study stays unknown (404), a changed one keeps its previous version. Running sessions are not
// touched: the registry keeps the version a session started with (Registry.forSession).
//
// The watcher never builds stimuli (that would stall the running server for minutes): a study
// folder without build/manifest.json is reported with the command to build it, and is picked up
// once the build is written. Studies given by name (`--study`) are watched for changes; only a
// server that serves a whole studies folder picks up new folders.
import { existsSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LegibleError, loadStudy, resolveStudyFile } from '@legible/studies';
import type { Logger } from 'pino';
import { findStudies, loadOne, manifestPath, type Registry } from './registry.ts';
import { studyFingerprint } from './studycheck.ts';

export interface WatchOptions {
  registry: Registry;
  studiesDir: string;
  /** The study refs the server was started with (--study); undefined: every study in studiesDir. */
  studies?: string[];
  log: Logger;
  /** Milliseconds between scans (default 2000). */
  intervalMs?: number;
}

interface Seen {
  fingerprint: string;
  /** The study id it was served as (undefined while it is not served). */
  id?: string;
  /** Why it is not served, as last reported. */
  problem?: string;
}

export class StudyWatcher {
  private readonly seen = new Map<string, Seen>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** The studies folder's modification time at the start of the last scan. */
  private folderTime: number | undefined;
  /** Scans done (for tests and the log). */
  scans = 0;

  constructor(private readonly opts: WatchOptions) {
    // What the server started with counts as seen.
    this.folderTime = folderTime(opts.studiesDir);
    for (const entry of opts.registry.entries()) {
      this.seen.set(resolve(entry.loaded.file), { fingerprint: studyFingerprint(entry.loaded.file, entry.loaded.paths), id: entry.id });
    }
  }

  start(): void {
    const ms = this.opts.intervalMs ?? 2000;
    if (ms <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.scan(), ms);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Scan now (one at a time: a call during a scan waits for it). */
  scan(): Promise<void> {
    this.running ??= this.scanOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * For a study id nobody serves (a link to a study folder just added): scan now if the studies
   * folder changed since the last scan (a folder added changes its time), so that the request is
   * answered with the new study rather than a 404; otherwise nothing (requests for ids that do not
   * exist cost one stat).
   */
  async lookFor(id: string): Promise<void> {
    if (this.opts.registry.get(id) || this.opts.studies) return;
    if (this.running) return this.running;
    if (folderTime(this.opts.studiesDir) === this.folderTime) return;
    return this.scan();
  }

  /** The study files to look at: the studies folder's, or the ones the server was started with. */
  private files(): string[] {
    const refs = this.opts.studies ?? (existsSync(this.opts.studiesDir) ? findStudies(this.opts.studiesDir) : []);
    const files: string[] = [];
    for (const ref of refs) {
      try {
        files.push(resolveStudyFile(ref, this.opts.studiesDir));
      } catch {
        files.push(resolve(join(ref, 'study.yaml')));
      }
    }
    return files;
  }

  private async scanOnce(): Promise<void> {
    this.scans++;
    this.folderTime = folderTime(this.opts.studiesDir);
    const { registry, log } = this.opts;
    for (const file of this.files()) {
      const before = this.seen.get(file);
      const served = before?.id ? registry.get(before.id) : undefined;
      const fingerprint = studyFingerprint(file, served?.loaded.paths ?? pathsOf(file));
      if (before?.fingerprint === fingerprint) continue;
      try {
        // No builds here: a study without a manifest is reported with the command that builds it.
        const one = await loadOne(file, {
          studiesDir: this.opts.studiesDir,
          // Not recorded as checked (studycheck.ts): the next start still runs the staleness check.
          recheck: false,
          build: async (loaded) => {
            throw new LegibleError(`${manifestPath(loaded)} not found: build the stimuli with \`legible stimuli ${loaded.file}\`; this server serves the study once they are built`);
          },
        });
        const { entry } = one;
        const previous = registry.get(entry.id);
        if (previous && resolve(previous.loaded.file) !== file) {
          throw new LegibleError(`its id "${entry.id}" is already served from ${previous.loaded.file}: give the study another id`);
        }
        registry.set(entry);
        this.seen.set(file, { fingerprint: one.fingerprint, id: entry.id });
        if (!previous) log.info({ study: entry.id, mode: entry.study.mode, title: entry.study.title }, `study added: /?study=${encodeURIComponent(entry.id)}`);
        else if (previous.manifestSha256 !== entry.manifestSha256) log.info({ study: entry.id }, 'study reloaded with new stimuli: new sessions get them, running sessions keep theirs');
        else log.info({ study: entry.id }, 'study reloaded (study file or inputs changed; stimuli as built: `legible stimuli` rebuilds stale ones)');
      } catch (e) {
        const problem = (e as Error).name === 'LegibleError' ? (e as Error).message : `${(e as Error).name}: ${(e as Error).message}`;
        this.seen.set(file, { fingerprint, id: before?.id, problem });
        if (before?.problem === problem) continue;
        if (served) log.warn({ study: served.id, file, problem }, 'study changed but does not check out: still serving its previous version');
        else log.warn({ file, problem }, 'study not served: it does not check out');
      }
    }
  }
}

function folderTime(dir: string): number | undefined {
  try {
    return statSync(dir).mtimeMs;
  } catch {
    return undefined;
  }
}

/** The paths a study file names, if it can be read (for its fingerprint before it is served). */
function pathsOf(file: string) {
  try {
    return loadStudy(file, { checkFiles: false }).paths;
  } catch {
    return undefined;
  }
}
