// `legible stimuli`: from a study file to studies/<id>/build/ — trial images and manifest.json.
// Deterministic: the same study, model, images and seeds give a byte-identical manifest.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  LegibleError,
  Manifest,
  MANIFEST_FORMAT,
  modelInput,
  rng,
  seedFrom,
  StudyFileError,
  type LoadedStudy,
  type ManifestFeature,
  type ManifestTrial,
  type Study,
} from '@legible/studies';
import { Composer } from './compose.ts';
import { listImages, splitOf, datasetHash, writeFashionMnist, type ImageEntry } from './dataset.ts';
import { featureId, practiceTrialOf, trialsOf, type Exemplars, type FeatureColumn, type TrialSpec } from './exemplars.ts';
import { contributionSkipReason, studyContribution } from './evaluate.ts';
import { studyComplexity } from './complexity.ts';
import { extractToStore } from './extract.ts';
import { visualReferences, VISUALIZATION_FOLDER } from './visual-references.ts';
import { computeFeatures, type FeatureSet } from './features.ts';
import { decodeModel } from './onnx/proto.ts';
import { buildReport } from './report.ts';
import { modelProblems } from './study-check.ts';
import type { Device } from './runtime.ts';
import { ActivationStore, storeKey, type ShardSlice } from './store.ts';

/** Bump when the pipeline's output for the same inputs changes, so cached builds are redone. */
export const PIPELINE_VERSION = 5;

export interface BuildOptions {
  device?: Device;
  batchSize?: number;
  log?: (line: string) => void;
  /** No progress bars (tests). */
  quiet?: boolean;
  /** Extract only this slice of the activation shards and stop (a job of an array). */
  slice?: ShardSlice;
  /** Extract nothing: every shard must be there already (after the jobs of an array). */
  merge?: boolean;
  /** Images per activation shard (default 1024). */
  shardSize?: number;
  /** Called after each activation shard is written. */
  onShard?: (index: number) => void;
}

const stderrLog = (line: string) => process.stderr.write(`${line}\n`);

/** The manifest of a study, building its stimuli first if they are missing or out of date. */
export async function ensureBuilt(loaded: LoadedStudy, opts: BuildOptions = {}): Promise<Manifest> {
  const log = opts.log ?? stderrLog;
  const manifestFile = join(loaded.paths.build, 'manifest.json');
  const reason = staleReason(loaded);
  if (!reason && existsSync(manifestFile)) return Manifest.parse(JSON.parse(readFileSync(manifestFile, 'utf8')));
  log(`${loaded.study.id}: building stimuli (${reason ?? 'no manifest yet'})`);
  return (await buildStimuli(loaded, opts))!;
}

/**
 * Build the study's stimuli. With `slice`, only extracts that part of the activations and returns
 * null; a later run without it (or with `merge`) uses every part.
 */
export async function buildStimuli(loaded: LoadedStudy, opts: BuildOptions = {}): Promise<Manifest | null> {
  const log = opts.log ?? stderrLog;
  const { study, paths } = loaded;
  const started = performance.now();
  // A build in progress is never mistaken for a finished one: the manifest is written last.
  for (const f of ['manifest.json', 'stamp.json']) rmSync(join(paths.build, f), { force: true });

  if (study.dataset.generate && !existsSync(paths.images)) {
    await writeFashionMnist(paths.images, study.dataset.generate.per_class, log);
  }
  const listing = listImages(paths.images, study.dataset.limit);
  const inSplit = listing.images.filter((img) => splitOf(img.id, study.dataset.split) !== 'unused');
  if (inSplit.length === 0) {
    throw new LegibleError(`no images in ${paths.images}${listing.skipped.length ? ` (${listing.skipped.length} files of other types)` : ''}: dataset.images must hold jpg, png, webp, gif, tiff or avif files.`);
  }
  const modelBytes = readModel(paths.model);
  const modelSha = sha256(modelBytes);
  // Every layer's tensor and layout against the model, located in the study file.
  const layerProblems = await modelProblems(loaded, readFileSync(loaded.file, 'utf8'));
  if (layerProblems.length) throw new StudyFileError(loaded.file, layerProblems);

  // Activations, in a resumable on-disk store shared by the jobs of a sharded run.
  const store = ActivationStore.open(
    join(paths.build, 'cache', 'activations'),
    storeKey({
      model: modelSha,
      input: modelInput(study),
      tensors: study.model.layers.map((l) => `${l.name}=${l.tensor}${l.layout ? `:${l.layout}` : ''}${l.class_token !== undefined ? `:class_token=${l.class_token}` : ''}`),
      ids: inSplit.map((i) => i.id),
    }),
    inSplit.length,
    opts.shardSize ?? 1024,
    log,
  );
  let device = 'none';
  if (!opts.merge) {
    const done = store.shardCount - store.missing().length;
    if (done > 0 && store.missing(opts.slice).length > 0) log(`resuming: ${done} of ${store.shardCount} activation shards already extracted`);
    const extracted = await extractToStore({
      model: modelBytes,
      input: modelInput(study),
      layers: study.model.layers,
      images: inSplit,
      store,
      slice: opts.slice,
      batchSize: opts.batchSize,
      device: opts.device,
      log,
      quiet: opts.quiet,
      onShard: opts.onShard,
    });
    device = extracted.device;
  }
  if (opts.slice) {
    const left = store.missing().length;
    log(`${study.id}: part ${opts.slice.k}/${opts.slice.n} done; ${left ? `${left} shards of other parts still missing` : 'every part is done'}. When all parts are done: legible stimuli ${study.id} --merge`);
    return null;
  }
  const missing = store.missing();
  if (missing.length) {
    throw new LegibleError(`${missing.length} of ${store.shardCount} activation shards are missing (e.g. ${missing.slice(0, 3).join(', ')}): run the remaining --shard k/n parts, or build without --merge to extract them here.`);
  }

  const fs = await computeFeatures(study, store, { model: modelBytes, images: inSplit, device: opts.device, batchSize: opts.batchSize, log, quiet: opts.quiet });
  try {
    return await finishBuild(loaded, opts, { listing, inSplit, modelSha, modelBytes, fs, device, started });
  } finally {
    await fs.release();
  }
}

interface Extracted {
  listing: ReturnType<typeof listImages>;
  inSplit: ImageEntry[];
  modelSha: string;
  modelBytes: Uint8Array;
  fs: FeatureSet;
  device: string;
  started: number;
}

/** From the features to the trial images, the manifest and the report. */
async function finishBuild(loaded: LoadedStudy, opts: BuildOptions, x: Extracted): Promise<Manifest> {
  const log = opts.log ?? stderrLog;
  const { study, paths } = loaded;
  const { listing, inSplit, modelSha, fs, device, started } = x;

  // Decision contribution of the study's features, over held-out images.
  const skipContribution = contributionSkipReason(study, x.modelBytes);
  if (skipContribution) log(`contribution: not measured (${skipContribution})`);
  const contribution = skipContribution ? null : await studyContribution(study, x.modelBytes, fs, inSplit, { device: opts.device, log });

  // Feature complexity (disentangler nets), where the study file asks for it.
  const complexity = await studyComplexity(study, x.modelBytes, fs, inSplit, { device: opts.device, log, secondModel: study.complexity?.reliability && readSecondModel(join(dirname(loaded.file), study.complexity.reliability.model)) });

  // Exemplars and the trial pool.
  const features: ManifestFeature[] = [];
  const specs: TrialSpec[] = [];
  const describe = (col: FeatureColumn, ex: Exemplars): ManifestFeature => ({
    id: featureId(col),
    layer: col.layer,
    basis: col.basis,
    index: col.index,
    ...contributionOf(featureId(col)),
    ...complexityOf(featureId(col)),
    stats: { mean: round(ex.stats.mean), std: round(ex.stats.std), min: round(ex.stats.min), max: round(ex.stats.max), zero_fraction: round(ex.stats.zero_fraction) },
    references: { min: ex.min, max: ex.max },
    queries: ex.queries,
    activations: {
      min: ex.activations.min.map(round),
      max: ex.activations.max.map(round),
      queries: { min: ex.activations.queries.min.map(round), max: ex.activations.queries.max.map(round) },
    },
  });
  const contributionOf = (id: string): Pick<ManifestFeature, 'importance' | 'contribution'> => {
    const c = contribution?.features.get(id);
    if (!c) return { importance: null };
    return { importance: round(c.logitDrop), contribution: { logit_drop: round(c.logitDrop), accuracy_drop: round(c.accuracyDrop), changed: round(c.changed) } };
  };
  const complexityOf = (id: string): Pick<ManifestFeature, 'complexity'> => {
    const c = complexity?.features.get(id);
    if (!c) return {};
    return { complexity: { order: c.order, explained: c.explained.map(round), rho: c.rho.map(round), ...(c.reason && { reason: c.reason }) } };
  };
  // Feature visualizations as references, for every study feature in batched runs.
  rmSync(join(paths.build, VISUALIZATION_FOLDER), { recursive: true, force: true });
  const visual = study.references.kinds.includes('visualization') ? await visualReferences(study, x.modelBytes, fs, fs.selected, paths.build, { device: opts.device, log }) : null;
  // Every study and spare feature was checked to separate its references and queries (exemplars.ts).
  for (const col of fs.selected) {
    const ex = fs.exemplars.get(featureId(col))!;
    const vis = visual?.features.get(featureId(col));
    features.push({ ...describe(col, ex), ...(vis && { visualizations: { min: vis.min, max: vis.max, attributions: vis.attributions } }) });
    specs.push(...trialsOf(featureId(col), ex, study.references.kinds, study.seed, vis));
  }
  const practiceCount = Math.min(study.design.practice_trials, fs.spare.length);
  const practiceCols = rng(seedFrom('practice', study.seed)).sample(fs.spare, practiceCount);
  for (const col of practiceCols) {
    const ex = fs.exemplars.get(featureId(col))!;
    features.push(describe(col, ex));
    specs.push(practiceTrialOf(featureId(col), ex, study.seed));
  }
  // The instructions' annotated example: like a practice trial, on one more feature outside the
  // study, with the most extreme queries that no other trial uses, so that none of its images is in
  // a participant's trials (the server sends it, kind "example").
  // The first spare feature whose grids and queries no other trial shows makes it; none, no example.
  const taken = new Set(specs.flatMap((t) => t.queries));
  const grids = new Set(specs.flatMap((t) => [t.min.join('\n'), t.max.join('\n')]));
  for (const col of fs.spare.filter((c) => !practiceCols.includes(c))) {
    const ex = fs.exemplars.get(featureId(col))!;
    const max = ex.queries.max.find((id) => !taken.has(id));
    const min = ex.queries.min.find((id) => !taken.has(id));
    if (max === undefined || min === undefined) continue;
    const spec = practiceTrialOf(featureId(col), { ...ex, queries: { max: [max], min: [min] } }, study.seed);
    if (grids.has(spec.min.join('\n')) || grids.has(spec.max.join('\n'))) continue;
    features.push(describe(col, ex));
    specs.push({ ...spec, id: `${featureId(col)}/example/natural`, kind: 'example' });
    break;
  }
  if (practiceCount < study.design.practice_trials) {
    log(`note: design.practice_trials = ${study.design.practice_trials}, but only ${practiceCount} features are left outside the study for practice`);
  }

  // Trial images.
  rmSync(join(paths.build, 'img'), { recursive: true, force: true });
  const byId = new Map<string, ImageEntry>(inSplit.map((img) => [img.id, img]));
  const composer = new Composer((id) => visual?.files.get(id) ?? byId.get(id)!.path, study.stimuli, paths.build);
  const columns = study.references.columns;
  const trials: ManifestTrial[] = await Promise.all(
    specs.map(async (t): Promise<ManifestTrial> => ({
      id: t.id,
      feature: t.feature,
      kind: t.kind,
      reference_kind: t.reference_kind,
      assets: {
        min: await composer.grid(t.min, columns),
        max: await composer.grid(t.max, columns),
        queries: [await composer.single(t.queries[0]), await composer.single(t.queries[1])],
      },
      query_images: t.queries,
      answer: t.answer,
    })),
  );

  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    study: study.id,
    seed: study.seed,
    model: { file: study.model.onnx, sha256: modelSha, input: { ...modelInput(study) } },
    dataset: {
      images: study.dataset.images,
      sha256: datasetHash(fs.hashes),
      count: fs.ids.length,
      skipped: [...listing.skipped, ...fs.skipped].sort((a, b) => (a.path < b.path ? -1 : 1)),
      reference: fs.refRows.length,
      query: fs.queryRows.length,
    },
    config: manifestConfig(study),
    layers: fs.layers.map((l) => ({ name: l.name, tensor: l.tensor, shape: l.shape })),
    bases: fs.bases,
    features,
    trials,
    rejected: fs.rejected,
    ...(complexity && {
      complexity: {
        depths: complexity.depths,
        width: complexity.width,
        epochs: complexity.epochs,
        threshold: complexity.threshold,
        layers: complexity.layers.map((l) => ({
          layer: l.layer,
          images: { train: l.images.train, held_out: l.images.heldOut },
          held_out_loss: l.heldOutLoss.map(round),
          train_loss: l.trainLoss.map(round),
          explained: l.explained.map(round),
          rho: l.rho.map(round),
          ...(l.reliability && { reliability: l.reliability.map(round) }),
        })),
      },
    }),
    ...(contribution && {
      contribution: {
        images: contribution.images,
        labels: contribution.labels,
        baseline_accuracy: round(contribution.baselineAccuracy),
        ...(contribution.note && { note: contribution.note }),
      },
    }),
  };
  Manifest.parse(manifest);
  writeAtomic(join(paths.build, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
  const seconds = (performance.now() - started) / 1000;
  writeAtomic(join(paths.build, 'report.html'), buildReport(manifest, study, { seconds, device, fitSeconds: fs.fitSeconds, contributionSeconds: contribution?.seconds, contributionSkipped: skipContribution, visual, complexitySeconds: complexity?.seconds }));
  writeAtomic(join(paths.build, 'stamp.json'), `${JSON.stringify(stamp(loaded), null, 2)}\n`);
  log(
    `${study.id}: ${features.length} features, ${trials.length} trials, ${composer.assets().length} images in ${paths.build} (${seconds.toFixed(1)}s, ${device === 'none' ? 'activations from the store' : device}` +
      `${manifest.dataset.skipped.length ? `, ${manifest.dataset.skipped.length} files skipped` : ''}); report: ${join(paths.build, 'report.html')}`,
  );
  return manifest;
}

/** The parts of the study that determine the stimuli. */
function manifestConfig(study: Study): Record<string, unknown> {
  return {
    layers: study.model.layers,
    split: study.dataset.split,
    limit: study.dataset.limit ?? null,
    classes: study.dataset.classes ?? null,
    bases: study.bases,
    features: study.features,
    references: study.references,
    queries: study.queries,
    stimuli: study.stimuli,
    practice_trials: study.design.practice_trials,
    contribution: study.contribution ?? null,
    ...(study.complexity && { complexity: study.complexity }),
  };
}

/** What a build depends on, cheaply: config, model bytes, and the image folder's names, sizes and times. */
function stamp(loaded: LoadedStudy): Record<string, unknown> {
  const { study, paths } = loaded;
  const listing = existsSync(paths.images) ? listImages(paths.images, study.dataset.limit) : { images: [] };
  const files = createHash('sha256');
  for (const img of listing.images) files.update(`${img.id}\t${img.bytes}\t${statSync(img.path).mtimeMs}\n`);
  return {
    pipeline: PIPELINE_VERSION,
    config: sha256(Buffer.from(JSON.stringify({ ...manifestConfig(study), seed: study.seed, input: study.model.input }))),
    model: existsSync(paths.model) ? sha256(readFileSync(paths.model)) : null,
    ...(study.complexity?.reliability && { reliability_model: secondModelHash(join(dirname(loaded.file), study.complexity.reliability.model)) }),
    images: files.digest('hex'),
  };
}

function staleReason(loaded: LoadedStudy): string | null {
  const file = join(loaded.paths.build, 'stamp.json');
  if (!existsSync(join(loaded.paths.build, 'manifest.json'))) return 'no manifest yet';
  // A build folder that came without its stamp (copied to a server, made by another tool) is used as it is.
  if (!existsSync(file)) return null;
  const old = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const now = stamp(loaded);
  for (const key of ['pipeline', 'config', 'model', 'images', 'reliability_model'] as const) {
    if (old[key] !== now[key]) return { pipeline: 'pipeline updated', config: 'study changed', model: 'model changed', images: 'images changed', reliability_model: 'complexity.reliability.model changed' }[key];
  }
  return null;
}

function secondModelHash(file: string): string | null {
  return existsSync(file) ? sha256(readFileSync(file)) : null;
}

/** complexity.reliability's model file. */
function readSecondModel(file: string): Uint8Array {
  if (!existsSync(file)) throw new LegibleError(`complexity.reliability.model: file not found: ${file} (a path relative to the study file)`);
  return readModel(file);
}

function readModel(file: string): Uint8Array {
  if (!existsSync(file)) throw new LegibleError(`model file not found: ${file} (model.onnx in the study file, relative to it)`);
  const bytes = readFileSync(file);
  try {
    decodeModel(bytes);
  } catch (err) {
    throw new LegibleError(`${file} is not a valid ONNX model (${(err as Error).message}). Export it again, e.g. with torch.onnx.export.`);
  }
  return bytes;
}

function writeAtomic(file: string, text: string): void {
  mkdirSync(join(file, '..'), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function round(x: number): number {
  return Number(x.toPrecision(6));
}

/**
 * The study's features as its build computed them — every image's value on every study feature,
 * the fitted dictionaries — from the build's activation store (shards a build left missing are
 * extracted first). For tools that look at whole distributions (the explorer). The caller releases
 * `fs`. Run after `legible stimuli` (ensureBuilt): the features then match the manifest's.
 */
export async function studyFeatureSet(loaded: LoadedStudy, opts: BuildOptions = {}): Promise<{ fs: FeatureSet; images: ImageEntry[]; modelBytes: Uint8Array }> {
  const log = opts.log ?? stderrLog;
  const { study, paths } = loaded;
  const listing = listImages(paths.images, study.dataset.limit);
  const inSplit = listing.images.filter((img) => splitOf(img.id, study.dataset.split) !== 'unused');
  const modelBytes = readModel(paths.model);
  const dir = join(paths.build, 'cache', 'activations');
  // The shard size the build used (its store's header), so its shards are found again.
  let shardSize = opts.shardSize ?? 1024;
  if (!opts.shardSize && existsSync(join(dir, 'store.json'))) shardSize = Number(JSON.parse(readFileSync(join(dir, 'store.json'), 'utf8')).shardSize) || shardSize;
  const store = ActivationStore.open(
    dir,
    storeKey({
      model: sha256(modelBytes),
      input: study.model.input,
      tensors: study.model.layers.map((l) => `${l.name}=${l.tensor}${l.layout ? `:${l.layout}` : ''}${l.class_token !== undefined ? `:class_token=${l.class_token}` : ''}`),
      ids: inSplit.map((i) => i.id),
    }),
    inSplit.length,
    shardSize,
    log,
  );
  if (store.missing().length) {
    await extractToStore({ model: modelBytes, input: modelInput(study), layers: study.model.layers, images: inSplit, store, batchSize: opts.batchSize, device: opts.device, log, quiet: opts.quiet });
  }
  const fs = await computeFeatures(study, store, { model: modelBytes, images: inSplit, device: opts.device, batchSize: opts.batchSize, log, quiet: opts.quiet });
  return { fs, images: inSplit, modelBytes };
}
