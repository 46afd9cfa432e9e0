// The studies this server serves: each study file (through @legible/studies) with its built
// manifest (build/manifest.json, checked against the Manifest contract), the assignment plan,
// the set of stimulus files participants may fetch, and the rendered study texts.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, normalize, relative, sep } from 'node:path';
import {
  defaultStudiesDir,
  formatPath,
  LegibleError,
  loadStudy,
  Manifest,
  MANIFEST_FORMAT,
  type LoadedStudy,
  type ManifestTrial,
  type Study,
} from '@legible/studies';
import { makePlan, type Plan } from './assign.ts';
import { importSource } from './lazy.ts';
import { renderMarkdown } from './markdown.ts';
import { studyFingerprint, type CheckStore } from './studycheck.ts';

export interface StudyEntry {
  id: string;
  study: Study;
  loaded: LoadedStudy;
  manifest: Manifest;
  /** sha256 of manifest.json as read (stored with each session). */
  manifestSha256: string;
  /** Absolute path of the build folder that stimuli are served from. */
  buildDir: string;
  plan: Plan;
  trials: Map<string, ManifestTrial>;
  /** Paths (relative to buildDir) of every file a trial shows: the only files /stimuli serves. */
  assets: Set<string>;
  html: { consent: string; instructions: string; debrief: string };
}

export class Registry {
  private readonly byId = new Map<string, StudyEntry>();
  /**
   * Earlier versions of a study (by manifest sha256) replaced while this server runs: the sessions
   * that started with one keep its trials, answer keys and stimuli (see forSession).
   */
  private readonly earlier = new Map<string, Map<string, StudyEntry>>();

  constructor(entries: Iterable<StudyEntry>) {
    for (const e of entries) {
      if (this.byId.has(e.id)) throw new LegibleError(`two studies with id "${e.id}": ${this.byId.get(e.id)!.loaded.file} and ${e.loaded.file}`);
      this.byId.set(e.id, e);
    }
  }
  /** The current version of a study: the one new sessions get. */
  get(id: string): StudyEntry | undefined {
    return this.byId.get(id);
  }
  ids(): string[] {
    return [...this.byId.keys()].sort();
  }
  entries(): StudyEntry[] {
    return [...this.byId.values()];
  }
  /**
   * Add a study, or replace its current version (the study watcher, once the new version is
   * checked). A replaced version whose manifest differs is kept for the sessions that use it.
   */
  set(entry: StudyEntry): void {
    const prev = this.byId.get(entry.id);
    if (prev && prev.loaded.file !== entry.loaded.file) {
      throw new LegibleError(`two studies with id "${entry.id}": ${prev.loaded.file} and ${entry.loaded.file}`);
    }
    if (prev && prev.manifestSha256 !== entry.manifestSha256) {
      let versions = this.earlier.get(entry.id);
      if (!versions) this.earlier.set(entry.id, (versions = new Map()));
      versions.set(prev.manifestSha256, prev);
    }
    this.earlier.get(entry.id)?.delete(entry.manifestSha256);
    this.byId.set(entry.id, entry);
  }
  /**
   * The version of a study a session started with (by the manifest sha256 stored with it): its
   * trials, answer keys and stimuli, with the current study file's texts, codes and rules. The
   * current version when the manifest is unchanged or the session's version was replaced before
   * this server started.
   */
  forSession(id: string, manifestSha256: string | null): StudyEntry | undefined {
    const current = this.byId.get(id);
    if (!current || manifestSha256 === null || current.manifestSha256 === manifestSha256) return current;
    const old = this.earlier.get(id)?.get(manifestSha256);
    if (!old) return current;
    return { ...old, study: current.study, loaded: { ...old.loaded, study: current.study }, html: current.html };
  }
  /** The version of study `id` that shows the stimulus file `rel` (the current one first). */
  withAsset(id: string, rel: string): StudyEntry | undefined {
    const current = this.byId.get(id);
    if (current?.assets.has(rel)) return current;
    for (const v of this.earlier.get(id)?.values() ?? []) if (v.assets.has(rel)) return v;
    return undefined;
  }
}

/** Builds a study's stimuli and returns its manifest (the stimuli pipeline's ensureBuilt). */
export type Builder = (loaded: LoadedStudy, opts: { log: (line: string) => void }) => Promise<unknown>;

/** The stimuli pipeline's ensureBuilt: builds missing stimuli and redoes stale ones. */
export const pipelineBuilder: Builder = async (loaded, opts) => {
  const pipeline = (await importSource(() => import('@legible/stimuli-pipeline'))) as { ensureBuilt?: Builder };
  if (typeof pipeline.ensureBuilt !== 'function') {
    throw new LegibleError(`study "${loaded.study.id}" has no ${join(loaded.paths.build, 'manifest.json')} and this version of the stimuli pipeline cannot build it: run \`legible stimuli ${loaded.file}\``);
  }
  return pipeline.ensureBuilt(loaded, opts);
};

export interface LoadRegistryOptions {
  /** Folder with one sub-folder per study (<dir>/<id>/study.yaml). Default: the repository's studies/. */
  studiesDir?: string;
  /** Study ids, folders or files to serve. Default: every valid study in studiesDir. */
  studies?: string[];
  log?: (line: string) => void;
  /** Builds missing manifests; default: the stimuli pipeline. */
  build?: Builder;
  /** Check that the model and image files exist (default false: the server needs only the build). */
  checkFiles?: boolean;
  /**
   * Where the study's inputs are here (its model file), run `build` on a study that has a manifest
   * too, so that a stale build is redone (a no-op when it is up to date). Default: only when
   * `build` is the stimuli pipeline's.
   */
  recheck?: boolean;
  /** Fingerprints of the studies checked before (see studycheck.ts): an unchanged study is not re-checked. */
  checks?: CheckStore;
}

export interface LoadedRegistry {
  registry: Registry;
  /** Studies found in studiesDir that could not be served, and why (only when `studies` is not given). */
  skipped: { ref: string; reason: string }[];
  /** Ids of the studies whose build was checked (or built) by `build` in this load. */
  rechecked: string[];
  /** Ids of the studies not re-checked: unchanged since the check recorded in `checks`. */
  unchanged: string[];
}

/** One study, loaded and checked: its entry, and its fingerprint once loaded. */
export interface LoadedOne {
  entry: StudyEntry;
  fingerprint: string;
  /** `build` ran (a missing manifest, or a build that may be stale). */
  rechecked: boolean;
  /** Not re-checked: `checks` holds this fingerprint. */
  unchanged: boolean;
}

/**
 * Load one study (an id, folder or file): read and validate its study file, build its stimuli
 * when it has no manifest, re-check a build that may be stale (unless `checks` says the study is
 * unchanged since it was last checked), and check the manifest against the study and build/.
 * Throws what is wrong; records the study's fingerprint in `checks` only once it is servable.
 */
export async function loadOne(ref: string, opts: LoadRegistryOptions = {}): Promise<LoadedOne> {
  const studiesDir = opts.studiesDir ?? defaultStudiesDir();
  const log = opts.log ?? (() => {});
  const build = opts.build ?? pipelineBuilder;
  const recheck = opts.recheck ?? opts.build === undefined;
  const loaded = loadStudy(ref, { studiesDir, checkFiles: opts.checkFiles ?? false });
  const id = loaded.study.id;
  const before = studyFingerprint(loaded.file, loaded.paths);
  let rechecked = false;
  let unchanged = false;
  if (!existsSync(manifestPath(loaded))) {
    log(`study "${id}": no manifest yet, building the stimuli…`);
    await build(loaded, { log });
    rechecked = true;
  } else if (recheck && existsSync(loaded.paths.model)) {
    // Where the study's inputs are here, rebuild a stale build (a no-op when it is up to date) —
    // unless nothing it depends on changed since the last check. A server given only a build
    // folder serves it as it is.
    if (opts.checks?.get(id) === before) {
      log(`study "${id}": unchanged since it was last checked, not re-checked`);
      unchanged = true;
    } else {
      await build(loaded, { log });
      rechecked = true;
    }
  }
  const entry = studyEntry(loaded);
  const fingerprint = rechecked ? studyFingerprint(loaded.file, loaded.paths) : before;
  opts.checks?.set(id, fingerprint);
  return { entry, fingerprint, rechecked, unchanged };
}

export async function loadRegistry(opts: LoadRegistryOptions = {}): Promise<LoadedRegistry> {
  const studiesDir = opts.studiesDir ?? defaultStudiesDir();
  const log = opts.log ?? (() => {});
  const explicit = opts.studies && opts.studies.length > 0;
  const refs = explicit ? opts.studies! : findStudies(studiesDir);
  const entries: StudyEntry[] = [];
  const skipped: LoadedRegistry['skipped'] = [];
  const rechecked: string[] = [];
  const unchanged: string[] = [];
  for (const ref of refs) {
    try {
      const one = await loadOne(ref, { ...opts, studiesDir, log });
      entries.push(one.entry);
      if (one.rechecked) rechecked.push(one.entry.id);
      if (one.unchanged) unchanged.push(one.entry.id);
    } catch (e) {
      // Asked for by name: its problem is the answer. Found by scanning: serve the others.
      if (explicit) throw e;
      const reason = (e as Error).name === 'LegibleError' ? (e as Error).message : `${(e as Error).name}: ${(e as Error).message}`;
      skipped.push({ ref, reason });
      log(`skipping study "${ref}": ${reason}`);
    }
  }
  if (entries.length === 0) {
    throw new LegibleError(
      explicit
        ? 'no studies to serve'
        : `no servable studies in ${studiesDir}${skipped.length ? `:\n${skipped.map((s) => `  ${s.ref}: ${s.reason}`).join('\n')}` : ' (expected <id>/study.yaml folders)'}`,
    );
  }
  return { registry: new Registry(entries), skipped, rechecked, unchanged };
}

/** Sub-folders of dir that hold a study.yaml. */
export function findStudies(dir: string): string[] {
  if (!existsSync(dir)) throw new LegibleError(`studies folder not found: ${dir}`);
  return readdirSync(dir)
    .filter((name) => !name.startsWith('.') && name !== 'node_modules' && existsSync(join(dir, name, 'study.yaml')))
    .sort()
    .map((name) => join(dir, name));
}

export const manifestPath = (loaded: LoadedStudy): string => join(loaded.paths.build, 'manifest.json');

/** Read and check build/manifest.json; errors name the field and what to do. */
export function readManifest(loaded: LoadedStudy): { manifest: Manifest; sha256: string } {
  const file = manifestPath(loaded);
  if (!existsSync(file)) throw new LegibleError(`${file}: not found; build the stimuli with \`legible stimuli ${loaded.file}\``);
  const text = readFileSync(file, 'utf8');
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new LegibleError(`${file}: not valid JSON (${(e as Error).message}); rebuild the stimuli`);
  }
  const parsed = Manifest.safeParse(data);
  if (!parsed.success) {
    const format = (data as { format?: unknown } | null)?.format;
    const hint = format !== MANIFEST_FORMAT ? ` (format is ${JSON.stringify(format)}, this server reads "${MANIFEST_FORMAT}")` : '';
    const issues = parsed.error.issues.slice(0, 8).map((i) => `  ${formatPath(i.path.filter((p): p is string | number => typeof p !== 'symbol')) || '(top level)'}: ${i.message}`);
    throw new LegibleError(`${file}: does not match the manifest contract${hint}; rebuild the stimuli\n${issues.join('\n')}`);
  }
  return { manifest: parsed.data, sha256: createHash('sha256').update(text).digest('hex') };
}

/** A servable study: manifest read and checked against the study and the files in build/. */
export function studyEntry(loaded: LoadedStudy): StudyEntry {
  const { study } = loaded;
  const { manifest, sha256 } = readManifest(loaded);
  const file = manifestPath(loaded);
  if (manifest.study !== study.id) {
    throw new LegibleError(`${file}: built for study "${manifest.study}", not "${study.id}"; rebuild the stimuli`);
  }
  // A manifest from an older version of the study file is stale.
  const layers = new Set(study.model.layers.map((l) => l.name));
  const bases = new Set<string>(study.bases.map((b) => b.kind));
  for (const f of manifest.features) {
    const problem = !layers.has(f.layer) ? `is on layer "${f.layer}", which the study file does not list` : !bases.has(f.basis) ? `uses basis "${f.basis}", which the study file does not list` : '';
    if (problem) throw new LegibleError(`${file}: feature "${f.id}" ${problem}; the manifest is older than the study file: rebuild the stimuli`);
  }
  let plan: Plan;
  try {
    plan = makePlan(study.design, manifest);
  } catch (e) {
    throw new LegibleError(`study "${study.id}": ${(e as Error).message}`);
  }
  const buildDir = loaded.paths.build;
  const assets = new Set<string>();
  const missing: string[] = [];
  for (const t of manifest.trials) {
    for (const asset of [t.assets.min, t.assets.max, ...t.assets.queries]) {
      if (assets.has(asset)) continue;
      const norm = normalize(asset);
      if (isAbsolute(asset) || norm.startsWith('..') || norm.split(sep).includes('..') || asset.includes('\\')) {
        throw new LegibleError(`${file}: trial "${t.id}" has asset path "${asset}" outside the build folder; rebuild the stimuli`);
      }
      const path = join(buildDir, asset);
      if (!existsSync(path) || !statSync(path).isFile()) missing.push(asset);
      assets.add(asset);
    }
  }
  if (missing.length) {
    throw new LegibleError(
      `study "${study.id}": ${missing.length} stimulus file${missing.length === 1 ? '' : 's'} named in the manifest missing from ${relative(process.cwd(), buildDir) || buildDir} (${missing.slice(0, 3).join(', ')}${missing.length > 3 ? ', …' : ''}); rebuild the stimuli`,
    );
  }
  const entry = {
    id: study.id,
    study,
    loaded,
    manifest,
    manifestSha256: sha256,
    buildDir,
    plan,
    trials: new Map(manifest.trials.map((t) => [t.id, t])),
    assets,
  } as StudyEntry;
  // The texts are rendered when first asked for (GET /api/studies/:id), not while the server starts:
  // marked's first rendering compiles its patterns (tens of ms). Rendering cannot fail.
  let html: StudyEntry['html'] | undefined;
  Object.defineProperty(entry, 'html', {
    enumerable: true,
    get: () =>
      (html ??= {
        consent: renderMarkdown(study.text.consent),
        instructions: renderMarkdown(study.text.instructions),
        debrief: renderMarkdown(study.text.debrief),
      }),
  });
  return entry;
}
