// Cheap fingerprints of what a served study depends on, and the fingerprints a server has
// checked, kept in its database. A restart (after a crash, a deploy) does not re-check a study
// whose files are as they were: the stimuli pipeline's staleness check (which reads and hashes
// the model and lists every image) runs only for studies whose fingerprint changed. The running
// server's study watcher (registry.ts) compares the same fingerprints to notice new and changed
// study folders.
//
// A fingerprint is sizes and modification times, never contents:
//   - the study file; the model file; the image folder and every folder under it (a file added,
//     removed or renamed changes its folder's time; an image edited in place under the same name
//     is not noticed here, as `legible stimuli` notices it);
//   - build/manifest.json, build/stamp.json and build/img (a rebuild rewrites them);
//   - the stimuli pipeline's own source files (an upgrade of legible).
import { readdirSync, statSync, type Stats } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LegibleDb } from './db.ts';

const statOf = (path: string): Stats | undefined => {
  try {
    return statSync(path);
  } catch {
    return undefined;
  }
};
const mark = (path: string): string => {
  const st = statOf(path);
  return st ? `${st.size}:${st.mtimeMs}` : '-';
};

/** Modification times of `dir` and of every folder under it (files are not stat'ed). */
function folderTimes(dir: string, out: string[], depth = 0): void {
  const st = statOf(dir);
  if (!st?.isDirectory()) {
    out.push(`${dir}=-`);
    return;
  }
  out.push(`${dir}=${st.mtimeMs}`);
  if (depth > 8) return;
  let names: import('node:fs').Dirent[];
  try {
    names = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const d of names) if (d.isDirectory() && !d.name.startsWith('.')) folderTimes(join(dir, d.name), out, depth + 1);
}

let pipelineMark: string | undefined;
/** Sizes and times of the stimuli pipeline's source files (computed once per process). */
function pipelineSources(): string {
  if (pipelineMark !== undefined) return pipelineMark;
  try {
    const src = dirname(fileURLToPath(import.meta.resolve('@legible/stimuli-pipeline')));
    pipelineMark = readdirSync(src)
      .sort()
      .map((name) => `${name}=${mark(join(src, name))}`)
      .join(',');
  } catch {
    pipelineMark = '-';
  }
  return pipelineMark;
}

export interface StudyPaths {
  model: string;
  images: string;
  build: string;
}

/** The fingerprint of a study file and (once it has been read) the files it names. */
export function studyFingerprint(studyFile: string, paths?: StudyPaths): string {
  const parts = [`study=${mark(studyFile)}`];
  const build = paths?.build ?? join(dirname(studyFile), 'build');
  parts.push(`manifest=${mark(join(build, 'manifest.json'))}`, `stamp=${mark(join(build, 'stamp.json'))}`, `img=${mark(join(build, 'img'))}`);
  if (paths) {
    parts.push(`model=${mark(paths.model)}`);
    const folders: string[] = [];
    folderTimes(paths.images, folders);
    parts.push(`images=${folders.join(';')}`, `pipeline=${pipelineSources()}`);
  }
  return parts.join('|');
}

/** Where the fingerprints of checked studies are kept. */
export interface CheckStore {
  get(studyId: string): string | undefined;
  set(studyId: string, fingerprint: string): void;
}

/** Fingerprints in the database's meta table (key "study_check:<id>"): they go with the data. */
export function dbCheckStore(db: LegibleDb): CheckStore {
  const get = db.sqlite.prepare<[string], string>('SELECT value FROM meta WHERE key = ?').pluck();
  const set = db.sqlite.prepare<[string, string]>('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value');
  return {
    get: (id) => get.get(`study_check:${id}`),
    set: (id, fp) => {
      set.run(`study_check:${id}`, fp);
    },
  };
}
