// `legible explore`: the explorer of a study, a static site in studies/<id>/build/explorer/.
//   index.html, assets/   the page (built once from explorer/src/site by vite into explorer/dist)
//   data/explorer.json    the overview: layers × bases, one card per study feature
//   data/features/*.json  a feature page: histogram over the reference split, exemplars at quantiles,
//                         the trials that use it, human answers
//   data/try.json         what the "try an image" panel needs: the probe model's outputs per layer,
//                         NMF dictionaries, every study feature's reference values (for percentiles)
//   model/probe.onnx      the model truncated at the tapped tensors (model.ts)
//   ort/                  onnxruntime-web's module and wasm, loaded only when the panel opens
//   img/, inputs/         exemplar thumbnails; model-size inputs of some data set images
// Trial images and feature visualizations stay where the build put them (../img, ../fv): serve the
// build folder and open explorer/, or use `legible serve`'s admin route.
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { LegibleError, modelInput, type LoadedStudy, type ManifestFeature } from '@legible/studies';
import { decodeForModel, ensureBuilt, featureId, studyFeatureSet, type BuildOptions } from '@legible/stimuli-pipeline';
import { readAnswers, summarise, type Answer, type HumanSummary } from './human.ts';
import { probeModel, type ProbeLayer } from './model.ts';

export const EXPLORER_FORMAT = 'legible-explorer/1';
/** The built page (explorer/dist). */
export const distDir = (): string => resolve(dirname(fileURLToPath(import.meta.url)), '../dist');
/** onnxruntime-web's dist folder. */
const ortDir = (): string => dirname(fileURLToPath(import.meta.resolve('onnxruntime-web/ort-wasm-simd-threaded.jsep.wasm')));
/** onnxruntime-web's files the panel loads: the wasm build, and the WebGPU build (only fetched where the browser has a GPU adapter). */
export const ORT_FILES = ['ort.wasm.min.mjs', 'ort-wasm-simd-threaded.mjs', 'ort-wasm-simd-threaded.wasm', 'ort.webgpu.min.mjs', 'ort-wasm-simd-threaded.asyncify.mjs', 'ort-wasm-simd-threaded.asyncify.wasm'];

/** Quantiles of the reference split at which a feature page shows exemplars. */
export const QUANTILES = [0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1];
const PER_QUANTILE = 3;
const BINS = 40;
/** Reference values kept per feature for percentiles: all of them up to this many, else this many quantiles. */
const PERCENTILE_POINTS = 4001;
/** Data set images offered in the panel per feature (its most activating references). */
const TRY_IMAGES_PER_FEATURE = 3;

export interface ExploreOptions extends BuildOptions {
  /** Human answers: the server's database, or a trials.csv/.jsonl from `legible export`. */
  data?: string;
  /** The mode of the sessions shown: `live`, `pilot` or `all` (default: live when the data has any). */
  mode?: string;
  /** Leave out the "try an image" panel (no probe model, no onnxruntime-web files). */
  noTry?: boolean;
}

export interface ImageRef {
  id: string;
  img: string;
  value: number;
}

export interface FeatureCard {
  id: string;
  layer: string;
  basis: string;
  index: number;
  role: 'study' | 'practice' | 'example';
  page: string;
  importance: number | null;
  contribution: ManifestFeature['contribution'] | null;
  stats: ManifestFeature['stats'];
  machine_score: Record<string, unknown> | null;
  visualizations: { min: string[]; max: string[]; attributions: string[] } | null;
  exemplars: { max: ImageRef[]; min: ImageRef[] };
  human: HumanSummary | null;
}

export interface FeaturePage {
  id: string;
  histogram: { lo: number; hi: number; counts: number[]; references: number };
  quantiles: { q: number; images: ImageRef[] }[];
  trials: {
    id: string;
    kind: string;
    reference_kind: string;
    assets: { min: string; max: string; queries: string[] };
    query_images: string[];
    answer: number;
    human: HumanSummary | null;
  }[];
  human: HumanSummary | null;
}

export interface ExplorerData {
  format: string;
  study: { id: string; title: string };
  model: { file: string; sha256: string };
  layers: { name: string; tensor: string; shape: number[] }[];
  bases: { layer: string; basis: string; features: number; info: Record<string, unknown> }[];
  cells: { layer: string; basis: string; features: string[] }[];
  features: FeatureCard[];
  contribution: Record<string, unknown> | null;
  human: { source: string; trials: number; participants: number; note: string; simulated: boolean } | null;
  try: boolean;
}

export interface TryData {
  model: string;
  input: NonNullable<LoadedStudy['study']['model']['input']>;
  size: [number, number];
  layers: ProbeLayer[];
  /** Per NMF layer: the dictionary W (k × c), from which the panel solves codes as the pipeline does (hals.ts). */
  nmf: Record<string, { k: number; W: number[] }>;
  /** Per SAE layer: the encoder (W_enc c × d), `active` latents kept per image (TopK). */
  sae: Record<string, { d: number; active: number; W_enc: number[]; b_enc: number[]; b_pre: number[]; scale: number; inv_scale: number }>;
  features: { id: string; layer: string; basis: string; index: number; aggregate: 'mean' | 'max'; references: number; sorted: number[]; exact: boolean }[];
  images: { id: string; input: string; img: string; values: Record<string, number> }[];
}

const slug = (id: string, i: number) => `f${i}-${id.replace(/[^A-Za-z0-9_.-]+/g, '_')}`;
const round = (x: number) => Number(x.toPrecision(6));

/** Writes the explorer of a loaded study; returns its folder. */
export async function buildExplorer(loaded: LoadedStudy, opts: ExploreOptions = {}): Promise<{ dir: string; features: number; seconds: number }> {
  const started = performance.now();
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const { study, paths } = loaded;
  const manifest = await ensureBuilt(loaded, opts);
  // The raw manifest keeps fields other tools add (machine_score) that the contract does not list.
  const raw = JSON.parse(readFileSync(join(paths.build, 'manifest.json'), 'utf8')) as { features: Record<string, unknown>[] };
  const rawById = new Map(raw.features.map((f) => [String(f.id), f]));
  const human = opts.data ? readAnswers(opts.data, study.id, { rules: study.exclusions, mode: opts.mode }) : null;
  const answers = human ? human.answers : null;
  if (human?.simulated) log(`explore: ${opts.data} holds simulated participants (legible pilot): every human figure is labelled "simulated (pilot)"`);
  if (answers && answers.length === 0) log(`explore: no main-trial answers for ${study.id} in ${opts.data} (mode ${human!.mode}, ${human!.excluded} of ${human!.sessions} sessions excluded)`);

  const dist = distDir();
  if (!existsSync(join(dist, 'index.html'))) {
    throw new LegibleError(`the explorer page is not built (${join(dist, 'index.html')} is missing): run \`npm run build -w explorer\`, then explore again.`);
  }

  const out = join(paths.build, 'explorer');
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  for (const d of ['data/features', 'img', 'inputs', 'assets']) mkdirSync(join(tmp, d), { recursive: true });

  const { fs, images, modelBytes } = await studyFeatureSet(loaded, opts);
  try {
    const byId = new Map(images.map((img) => [img.id, img]));
    const rowOf = new Map(fs.ids.map((id, r) => [id, r]));
    const columns = new Map([...fs.selected, ...fs.spare].map((c) => [featureId(c), c]));
    const role = new Map<string, FeatureCard['role']>();
    for (const t of manifest.trials) {
      const r: FeatureCard['role'] = t.kind === 'main' || t.kind === 'catch' ? 'study' : t.kind === 'practice' ? 'practice' : 'example';
      if (!role.has(t.feature) || r === 'study') role.set(t.feature, r);
    }

    // Thumbnails of data set images, once each.
    const thumbs = new Map<string, string>();
    const cell = Math.min(study.stimuli.cell_px, 160);
    const thumb = async (id: string): Promise<string> => {
      let name = thumbs.get(id);
      if (name) return name;
      const entry = byId.get(id);
      if (!entry) throw new LegibleError(`image "${id}" of the manifest is not in ${paths.images}: rebuild with \`legible stimuli ${study.id}\``);
      name = `img/${createHash('sha256').update(id).digest('hex').slice(0, 20)}.webp`;
      const kernel = study.stimuli.resample === 'nearest' ? 'nearest' : 'lanczos3';
      await sharp(entry.path).resize(cell, cell, { fit: 'inside', kernel }).webp({ quality: 85 }).toFile(join(tmp, name));
      thumbs.set(id, name);
      return name;
    };
    const ref = async (id: string, value: number): Promise<ImageRef> => ({ id, img: await thumb(id), value: round(value) });

    const byFeature = new Map<string, Answer[]>();
    const byTrial = new Map<string, Answer[]>();
    for (const a of answers ?? []) {
      byFeature.set(a.feature, [...(byFeature.get(a.feature) ?? []), a]);
      byTrial.set(a.trial, [...(byTrial.get(a.trial) ?? []), a]);
    }

    const studyFeatures = manifest.features.filter((f) => role.get(f.id) === 'study');
    const cards: FeatureCard[] = [];
    const tryFeatures: TryData['features'] = [];
    const useMax = study.bases.some((b) => b.kind === 'channels' && b.aggregate === 'max');
    for (const [i, f] of studyFeatures.entries()) {
      const col = columns.get(f.id);
      if (!col) throw new LegibleError(`feature ${f.id} of the manifest is not among the features the build's activations give: the manifest is stale; run \`legible stimuli ${study.id}\`.`);
      // The reference split's values, ascending (ties by image id, for a stable display).
      const refs = fs.refRows.map((r) => ({ id: fs.ids[r], v: col.values[r] })).sort((a, b) => a.v - b.v || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
      const lo = refs[0].v;
      const hi = refs[refs.length - 1].v;
      const counts = new Array<number>(BINS).fill(0);
      for (const { v } of refs) counts[hi > lo ? Math.min(BINS - 1, Math.floor(((v - lo) / (hi - lo)) * BINS)) : 0]++;
      const quantiles: FeaturePage['quantiles'] = [];
      for (const q of QUANTILES) {
        const at = Math.round(q * (refs.length - 1));
        const from = Math.max(0, Math.min(refs.length - PER_QUANTILE, at - (PER_QUANTILE >> 1)));
        quantiles.push({ q, images: await Promise.all(refs.slice(from, from + PER_QUANTILE).map((r) => ref(r.id, r.v))) });
      }
      const trials = await Promise.all(
        manifest.trials
          .filter((t) => t.feature === f.id)
          .map(async (t) => ({
            id: t.id,
            kind: t.kind,
            reference_kind: t.reference_kind,
            assets: { min: `../${t.assets.min}`, max: `../${t.assets.max}`, queries: t.assets.queries.map((q) => `../${q}`) },
            query_images: t.query_images,
            answer: t.answer,
            human: summarise(byTrial.get(t.id) ?? [], t.id),
          })),
      );
      const human = answers ? summarise(byFeature.get(f.id) ?? [], f.id) : null;
      const page = `data/features/${slug(f.id, i)}.json`;
      const pageData: FeaturePage = { id: f.id, histogram: { lo: round(lo), hi: round(hi), counts, references: refs.length }, quantiles, trials, human };
      writeFileSync(join(tmp, page), JSON.stringify(pageData));
      const vis = f.visualizations;
      const ms = rawById.get(f.id)?.machine_score;
      const value = (id: string) => col.values[rowOf.get(id)!];
      cards.push({
        id: f.id,
        layer: f.layer,
        basis: f.basis,
        index: f.index,
        role: 'study',
        page,
        importance: f.importance,
        contribution: f.contribution ?? null,
        stats: f.stats,
        machine_score: ms && typeof ms === 'object' ? (ms as Record<string, unknown>) : null,
        visualizations: vis ? { min: vis.min.map((p) => `../${p}`), max: vis.max.map((p) => `../${p}`), attributions: (vis.attributions ?? []).map((p) => `../${p}`) } : null,
        exemplars: {
          max: await Promise.all(f.references.max.map((id) => ref(id, value(id)))),
          min: await Promise.all(f.references.min.map((id) => ref(id, value(id)))),
        },
        human,
      });
      const exact = refs.length <= PERCENTILE_POINTS;
      const sorted = exact ? refs.map((r) => r.v) : Array.from({ length: PERCENTILE_POINTS }, (_, j) => refs[Math.round((j / (PERCENTILE_POINTS - 1)) * (refs.length - 1))].v);
      tryFeatures.push({ id: f.id, layer: f.layer, basis: f.basis, index: f.index, aggregate: f.basis === 'channels' && useMax ? 'max' : 'mean', references: refs.length, sorted, exact });
    }

    const layerOrder = study.model.layers.map((l) => l.name);
    const cells = fs.bases
      .map((b) => ({ layer: b.layer, basis: b.basis, features: cards.filter((c) => c.layer === b.layer && c.basis === b.basis).map((c) => c.id) }))
      .sort((a, b) => layerOrder.indexOf(a.layer) - layerOrder.indexOf(b.layer));
    const data: ExplorerData = {
      format: EXPLORER_FORMAT,
      study: { id: study.id, title: study.title },
      model: { file: manifest.model.file, sha256: manifest.model.sha256 },
      layers: manifest.layers,
      bases: manifest.bases,
      cells,
      features: cards,
      contribution: (manifest.contribution as Record<string, unknown> | undefined) ?? null,
      human: answers
        ? {
            source: opts.data!,
            trials: answers.length,
            participants: new Set(answers.map((a) => a.participant)).size,
            note: `${human!.simulated ? 'SIMULATED participants (legible pilot), no person took part; ' : ''}main trials of the ${human!.mode === 'all' ? '' : `${human!.mode} `}sessions the study's exclusion rules keep (${human!.sessions - human!.excluded} of ${human!.sessions}, as \`legible analyze\`); intervals: 95 % bootstrap over participants`,
            simulated: human!.simulated,
          }
        : null,
      try: !opts.noTry,
    };
    writeFileSync(join(tmp, 'data/explorer.json'), JSON.stringify(data));

    if (!opts.noTry) {
      // The probe model, the NMF dictionaries, reference values and a few data set images.
      const nmfData: TryData['nmf'] = {};
      const sae = new Map<string, { W_enc: Float32Array; b_enc: Float32Array; b_pre: Float32Array; scale: number }>();
      const saeData: TryData['sae'] = {};
      for (const [key, d] of fs.dictionaries) {
        const [layer, basis] = key.split('/');
        if (basis === 'sae' && d.sae) {
          sae.set(layer, d.sae);
          saeData[layer] = { d: d.k, active: d.sae.active, W_enc: Array.from(d.sae.W_enc), b_enc: Array.from(d.sae.b_enc), b_pre: Array.from(d.sae.b_pre), scale: d.sae.scale, inv_scale: Math.fround(1 / d.sae.scale) };
        }
        if (basis !== 'nmf') continue;
        nmfData[layer] = { k: d.k, W: Array.from(d.directions) };
      }
      const probe = await probeModel(modelBytes, study, sae);
      mkdirSync(join(tmp, 'model'), { recursive: true });
      writeFileSync(join(tmp, 'model/probe.onnx'), probe.bytes);
      mkdirSync(join(tmp, 'ort'), { recursive: true });
      for (const f of ORT_FILES) copyFileSync(join(ortDir(), f), join(tmp, 'ort', f));
      const tryImages: TryData['images'] = [];
      const seen = new Set<string>();
      for (const f of studyFeatures) {
        for (const id of [...f.references.max.slice(0, TRY_IMAGES_PER_FEATURE), f.references.min[0]]) {
          if (seen.has(id)) continue;
          seen.add(id);
          const entry = byId.get(id)!;
          const pixels = await decodeForModel(readFileSync(entry.path), modelInput(study));
          const [h, w] = sizeOf(modelInput(study).size);
          const channels = modelInput(study).channels === 'gray' ? 1 : 3;
          const name = `inputs/${createHash('sha256').update(id).digest('hex').slice(0, 20)}.png`;
          await sharp(pixels, { raw: { width: w, height: h, channels } }).png({ compressionLevel: 9 }).toFile(join(tmp, name));
          const values: Record<string, number> = {};
          for (const g of studyFeatures) values[g.id] = columns.get(g.id)!.values[rowOf.get(id)!];
          tryImages.push({ id, input: name, img: await thumb(id), values });
        }
      }
      const tryData: TryData = { model: 'model/probe.onnx', input: modelInput(study), size: sizeOf(modelInput(study).size), layers: probe.layers, nmf: nmfData, sae: saeData, features: tryFeatures, images: tryImages };
      writeFileSync(join(tmp, 'data/try.json'), JSON.stringify(tryData));
    }
    copyDir(dist, tmp);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    await fs.release();
  }
  rmSync(out, { recursive: true, force: true });
  renameSync(tmp, out);
  const seconds = (performance.now() - started) / 1000;
  log(`${study.id}: explorer with ${cardsCount(out)} features in ${out} (${seconds.toFixed(1)}s). Open it from \`legible serve\` at /admin/explorer/${study.id}/ with an admin token, or serve ${paths.build} and open /explorer/.`);
  return { dir: out, features: cardsCount(out), seconds };
}

function cardsCount(dir: string): number {
  return (JSON.parse(readFileSync(join(dir, 'data/explorer.json'), 'utf8')) as ExplorerData).features.length;
}

function sizeOf(size: number | [number, number]): [number, number] {
  return typeof size === 'number' ? [size, size] : [size[0], size[1]];
}

function copyDir(from: string, to: string): void {
  for (const name of readdirSync(from)) {
    const src = join(from, name);
    const dst = join(to, name);
    if (statSync(src).isDirectory()) {
      mkdirSync(dst, { recursive: true });
      copyDir(src, dst);
    } else copyFileSync(src, dst);
  }
}
