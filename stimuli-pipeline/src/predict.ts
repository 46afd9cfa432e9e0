// `legible predict`: a machine observer answers the study's trials before anyone is paid, in the
// manner of the Machine Interpretability Score (MIS; Zimmermann, Klindt & Brendel, "Measuring
// Per-Unit Interpretability at Scale Without Humans", NeurIPS 2024; its Fig. 1B shows this machine observer).
//
// For one task (maximal references E+, minimal references E−, queries q+ and q−), with s(a, b) the
// similarity of two images' embeddings:
//   Δ(q)        = mean_{e ∈ E+} s(q, e) − mean_{e ∈ E−} s(q, e)
//   P(correct)  = σ(α · (Δ(q+) − Δ(q−)))           (σ: the logistic function)
// The observer chooses the query whose Δ is larger; P is the MIS's graded version of that choice, and
// a feature's score is the mean P over its tasks. Embeddings come from any ONNX image model (the tensor
// the experimenter names, flattened); s is the cosine similarity of embeddings centred on the mean
// embedding of every image the observer sees for the study (so that all-positive ReLU maps do not
// look alike). α: the MIS fits it to human annotations (IMI) for DreamSim; here it is an option
// whose default (4) is NOT calibrated — no fit to human data stands behind it. It sets how far from
// 0.5 the scores spread, so read them as a ranking of features until α is fitted to your own pilot;
// ρ between machine and human scores, which `legible analyze` reports, does not depend on it.
//
// Tasks per feature: query pairs drawn the way the study draws its queries, many more than the
// study shows (`pairs`, default 100). The study ranks the held-out (query) split by the feature and
// takes the image at its difficulty's rank from the top as the max query and the one at the same
// rank from the bottom as the min query; predict takes each side's band of ranks within BAND (2.5%)
// of the split around those positions (cut where a max candidate would no longer lie clearly above
// a min one, as the study requires of its pair), and draws ⌈√pairs⌉ images per side from it
// (seeded; the study's own queries always among them), every max query crossed with every min
// query, against the feature's references of each reference kind its trials use. The CI is a
// bootstrap over the query images: each resample draws max and min queries with replacement, the
// same draw for every reference kind (the pairs and kinds share images, so resampling pairs would
// understate the spread).
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import type { Tensor } from 'onnxruntime-node';
import { type MachineScore, inputSize, LegibleError, Manifest, ModelInput, modelInput, rng, seedFrom, type LoadedStudy, type ManifestFeature, type ManifestTrial } from '@legible/studies';
import { studyFeatureSet } from './build.ts';
import { featureId, queryBands, rankContext } from './exemplars.ts';
import { checkInput } from './extract.ts';
import { addTaps } from './onnx/taps.ts';
import { channelCount, decodeForModel, normalise } from './preprocess.ts';
import { fixedBatch, openSession, type Device } from './runtime.ts';

export const PREDICT_FORMAT = 'legible-predict/1';
/** Default slope of the logistic rule (see the header): uncalibrated. */
export const DEFAULT_ALPHA = 4;
/** Default number of query pairs per feature and reference kind (⌈√pairs⌉ queries per side, crossed). */
export const DEFAULT_PAIRS = 100;
/** Half-width of the band of ranks queries are drawn from, as a share of the held-out split (at least ⌈√pairs⌉ ranks). */
export const BAND = 0.025;
const BOOTSTRAP = 2000;

export type { MachineScore } from '@legible/studies';

/** The MIS's logistic rule: P(correct) from the observer's decision variable. */
export function misProbability(decision: number, alpha: number): number {
  return 1 / (1 + Math.exp(-alpha * decision));
}

export function cosine(a: Float32Array, b: Float32Array): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
}

/** Δ(q): mean similarity to the maximal references minus mean similarity to the minimal ones. */
export function delta(q: Float32Array, max: Float32Array[], min: Float32Array[]): number {
  let plus = 0;
  for (const e of max) plus += cosine(q, e);
  let minus = 0;
  for (const e of min) minus += cosine(q, e);
  return plus / max.length - minus / min.length;
}

/** One task: the observer's decision variable Δ(q+) − Δ(q−) (> 0: it picks the right query) and P(correct). */
export function decide(task: { max: Float32Array[]; min: Float32Array[]; qMax: Float32Array; qMin: Float32Array }, alpha: number): { decision: number; p: number } {
  const decision = delta(task.qMax, task.max, task.min) - delta(task.qMin, task.max, task.min);
  return { decision, p: misProbability(decision, alpha) };
}

/**
 * A feature's score from its crossed tasks: `p[k][i][j]` is P(correct) for reference kind k, max
 * query i and min query j. The estimate is the mean over every task; the CI is a percentile
 * bootstrap that resamples the max queries and the min queries — one draw shared by every kind
 * where the kinds cross the same queries (same sizes: predictManifest's), else one per kind.
 */
export function scoreTasks(p: number[][][], seed: number, level = 0.95): { p: number; lo: number; hi: number; n_pairs: number } {
  const blocks = p.filter((k) => k.length && k[0].length);
  const n = blocks.reduce((s, k) => s + k.length * k[0].length, 0);
  if (n === 0) throw new LegibleError('no tasks to score (a feature without references or queries)');
  const meanOf = (pick: (k: number[][]) => { rows: number[]; cols: number[] }) => {
    let sum = 0;
    let count = 0;
    for (const k of blocks) {
      const { rows, cols } = pick(k);
      for (const i of rows) for (const j of cols) sum += k[i][j];
      count += rows.length * cols.length;
    }
    return sum / count;
  };
  const all = (m: number) => Array.from({ length: m }, (_, i) => i);
  const estimate = meanOf((k) => ({ rows: all(k.length), cols: all(k[0].length) }));
  const r = rng(seed);
  const draws = new Float64Array(BOOTSTRAP);
  const resample = (m: number) => Array.from({ length: m }, () => r.int(m));
  const shared = blocks.every((k) => k.length === blocks[0].length && k[0].length === blocks[0][0].length);
  for (let b = 0; b < BOOTSTRAP; b++) {
    if (shared) {
      const rows = resample(blocks[0].length);
      const cols = resample(blocks[0][0].length);
      draws[b] = meanOf(() => ({ rows, cols }));
    } else draws[b] = meanOf((k) => ({ rows: resample(k.length), cols: resample(k[0].length) }));
  }
  draws.sort();
  const q = (x: number) => draws[Math.min(BOOTSTRAP - 1, Math.max(0, Math.floor(x * BOOTSTRAP)))];
  return { p: estimate, lo: Math.min(estimate, q((1 - level) / 2)), hi: Math.max(estimate, q(1 - (1 - level) / 2)), n_pairs: n };
}

/** Which model embeds the images, at which tensor, with which preprocessing. */
export interface Observer {
  /** The ONNX model's bytes. */
  model: Uint8Array;
  /** Tensor whose values (flattened) are an image's embedding. */
  tensor: string;
  input: ModelInput;
  /** How reports name it. */
  label: string;
  /** The study's own model: a weak proxy for a perceptual similarity model. */
  weakProxy: boolean;
}

/** ImageNet preprocessing as torchvision's, the default input of a named observer model (DreamSim, DINO: 224 px). */
export const IMAGENET_INPUT = { size: 224, resize: 256, channels: 'rgb', range: 1, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] } as const;

/**
 * Parses "size=224,resize=256,mean=0.48/0.46/0.41,std=0.27/0.26/0.28,channels=rgb,range=1" into a
 * model input (missing keys: ImageNet's); the error names the key.
 */
export function parseObserverInput(text: string | undefined): ModelInput {
  const raw: Record<string, unknown> = { ...IMAGENET_INPUT, mean: [...IMAGENET_INPUT.mean], std: [...IMAGENET_INPUT.std] };
  for (const part of (text ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new LegibleError(`--observer-input: "${part}" is not key=value (keys: size, resize, mean, std, channels, range)`);
    const key = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    if (key === 'mean' || key === 'std') raw[key] = value.split('/').map(Number);
    else if (key === 'size') raw.size = value.includes('x') ? value.split('x').map(Number) : Number(value);
    else if (key === 'resize') {
      if (value === 'none') delete raw.resize;
      else raw.resize = Number(value);
    } else if (key === 'range') raw.range = Number(value);
    else if (key === 'channels') raw.channels = value;
    else throw new LegibleError(`--observer-input: unknown key "${key}" (keys: size, resize, mean, std, channels, range)`);
  }
  const parsed = ModelInput.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new LegibleError(`--observer-input: ${issue.path.join('.') || 'value'}: ${issue.message}`);
  }
  return parsed.data;
}

/** The observer a study's prediction uses: the named model, or the study's own at one of its layers (a weak proxy). */
export function resolveObserver(loaded: LoadedStudy, opts: { observer?: string; layer?: string; input?: string }): Observer {
  const { study, paths } = loaded;
  if (opts.observer) {
    if (!existsSync(opts.observer)) throw new LegibleError(`--observer: file not found: ${opts.observer} (an ONNX image model; the README has export recipes for DreamSim, CLIP and DINO)`);
    if (!opts.layer) throw new LegibleError(`--observer ${opts.observer} needs --observer-layer TENSOR: the tensor whose values are the embedding (\`legible layers ${opts.observer}\` lists them; usually the model's output)`);
    return { model: readFileSync(opts.observer), tensor: opts.layer, input: parseObserverInput(opts.input), label: `${basename(opts.observer)}:${opts.layer}`, weakProxy: false };
  }
  if (opts.input) throw new LegibleError('--observer-input applies to an --observer model; the study\'s own model uses model.input from the study file (or model.json)');
  const layers = study.model.layers;
  const layer = opts.layer ? layers.find((l) => l.name === opts.layer || l.tensor === opts.layer) : layers[layers.length - 1];
  if (!layer) throw new LegibleError(`--observer-layer "${opts.layer}": the study has no layer of that name or tensor (layers: ${layers.map((l) => l.name).join(', ')}); name one, or give --observer MODEL`);
  if (!existsSync(paths.model)) throw new LegibleError(`model file not found: ${paths.model} (model.onnx in the study file)`);
  return { model: readFileSync(paths.model), tensor: layer.tensor, input: modelInput(study), label: `${basename(paths.model)}:${layer.name} (the study's own model: weak proxy)`, weakProxy: true };
}

/** Embeddings of image files: the observer's tensor, flattened, per image (in the order of `files`). */
export async function embedImages(observer: Observer, files: string[], opts: { device?: Device; batchSize?: number; log?: (s: string) => void } = {}): Promise<Float32Array[]> {
  const ort = await import('onnxruntime-node');
  const [height, width] = inputSize(observer.input);
  const channels = channelCount(observer.input);
  const plane = channels * height * width;
  const { session } = await openSession(addTaps(observer.model, [observer.tensor]), { device: opts.device ?? 'cpu', log: opts.log });
  try {
    checkInput(session, observer.input);
    const batch = fixedBatch(session) ?? opts.batchSize ?? 32;
    const out: Float32Array[] = [];
    for (let start = 0; start < files.length; start += batch) {
      const chunk = files.slice(start, start + batch);
      const pixels = await Promise.all(
        chunk.map(async (f) => {
          try {
            return await decodeForModel(await readFile(f), observer.input);
          } catch (err) {
            throw new LegibleError(`cannot read image ${f}: ${(err as Error).message.split('\n')[0]} (rebuild the stimuli: legible stimuli <study>)`);
          }
        }),
      );
      const n = fixedBatch(session) ?? chunk.length;
      const data = new Float32Array(n * plane);
      pixels.forEach((p, i) => normalise(p, observer.input, data, i * plane));
      const result = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', data, [n, channels, height, width]) }, [observer.tensor]);
      const values = (result[observer.tensor] as Tensor).data as Float32Array;
      const size = values.length / n;
      for (let i = 0; i < chunk.length; i++) {
        const e = values.slice(i * size, (i + 1) * size);
        for (const v of e) if (!Number.isFinite(v)) throw new LegibleError(`the observer's tensor ${observer.tensor} is NaN or Inf on ${chunk[i]}: check --observer-input (size, mean, std)`);
        out.push(e);
      }
    }
    return out;
  } finally {
    await session.release();
  }
}

/** Embeddings centred on their mean (cosine similarity then compares how images differ, not what they share). */
export function centre(embeddings: Float32Array[]): Float32Array[] {
  if (!embeddings.length) return embeddings;
  const d = embeddings[0].length;
  const mean = new Float64Array(d);
  for (const e of embeddings) {
    if (e.length !== d) throw new LegibleError(`the observer's embeddings differ in size (${d} and ${e.length})`);
    for (let i = 0; i < d; i++) mean[i] += e[i];
  }
  for (let i = 0; i < d; i++) mean[i] /= embeddings.length;
  return embeddings.map((e) => Float32Array.from(e, (v, i) => v - mean[i]));
}

export interface Prediction {
  format: string;
  study: string;
  observer: string;
  weak_proxy: boolean;
  alpha: number;
  /** Query pairs asked for per feature and reference kind (fewer where a feature's band holds fewer images). */
  pairs: number;
  similarity: string;
  /** Per manifest feature. */
  features: Record<string, MachineScore>;
  /** P(correct) of each manifest trial, by trial id (what `legible pilot` answers with). */
  trials: Record<string, number>;
  seconds: number;
  images: number;
}

/** The images a feature's tasks of one reference kind show, as keys into the embedding table. */
function refsOf(f: ManifestFeature, kind: ManifestTrial['reference_kind']): { max: string[]; min: string[] } | null {
  if (kind === 'natural') return { max: f.references.max.map((id) => `n:${id}`), min: f.references.min.map((id) => `n:${id}`) };
  return f.visualizations ? { max: f.visualizations.max.map((p) => `v:${p}`), min: f.visualizations.min.map((p) => `v:${p}`) } : null;
}

/**
 * Score every feature and trial of a built study with an observer (embeddings: key → vector, keys
 * "n:<image id>" and "v:<build path>"). `queries`: per feature id, the query images to cross (from
 * drawQueries); without them, the manifest's query candidates (up to five per side).
 */
export function predictManifest(
  manifest: Manifest,
  embedding: (key: string) => Float32Array,
  opts: { alpha: number; observer: string; weakProxy: boolean; queries?: Map<string, { max: string[]; min: string[] }> },
): Pick<Prediction, 'features' | 'trials'> {
  const features: Record<string, MachineScore> = {};
  const trials: Record<string, number> = {};
  const byId = new Map(manifest.features.map((f) => [f.id, f]));
  const kindsOf = new Map<string, Set<ManifestTrial['reference_kind']>>();
  for (const t of manifest.trials) kindsOf.set(t.feature, (kindsOf.get(t.feature) ?? new Set()).add(t.reference_kind));
  const vecs = (keys: string[]) => keys.map(embedding);
  for (const f of manifest.features) {
    const blocks: number[][][] = [];
    for (const kind of kindsOf.get(f.id) ?? new Set(['natural' as const])) {
      const refs = refsOf(f, kind);
      if (!refs) continue;
      const max = vecs(refs.max);
      const min = vecs(refs.min);
      const q = opts.queries?.get(f.id) ?? f.queries;
      const qMax = vecs(q.max.map((id) => `n:${id}`));
      const qMin = vecs(q.min.map((id) => `n:${id}`));
      // Δ once per query (decide's arithmetic, in its order), then every pair from those.
      const dMax = qMax.map((e) => delta(e, max, min));
      const dMin = qMin.map((e) => delta(e, max, min));
      blocks.push(dMax.map((a) => dMin.map((b) => misProbability(a - b, opts.alpha))));
    }
    const s = scoreTasks(blocks, seedFrom('predict', manifest.seed, f.id));
    features[f.id] = { p: round(s.p), lo: round(s.lo), hi: round(s.hi), n_pairs: s.n_pairs, observer: opts.observer, weak_proxy: opts.weakProxy };
  }
  for (const t of manifest.trials) {
    const f = byId.get(t.feature);
    const refs = f && refsOf(f, t.reference_kind);
    if (!refs) continue;
    const right = `n:${t.query_images[t.answer]}`;
    const wrong = `n:${t.query_images[1 - t.answer]}`;
    trials[t.id] = round(decide({ max: vecs(refs.max), min: vecs(refs.min), qMax: embedding(right), qMin: embedding(wrong) }, opts.alpha).p);
  }
  return { features, trials };
}

/** Every image key a manifest's tasks show (and the drawn `queries`), and its file. */
export function imagesOf(manifest: Manifest, paths: { images: string; build: string }, queries?: Map<string, { max: string[]; min: string[] }>): Map<string, string> {
  const files = new Map<string, string>();
  const natural = (id: string) => files.set(`n:${id}`, join(paths.images, id));
  for (const q of queries?.values() ?? []) [...q.max, ...q.min].forEach(natural);
  for (const f of manifest.features) {
    [...f.references.max, ...f.references.min, ...f.queries.max, ...f.queries.min].forEach(natural);
    for (const p of [...(f.visualizations?.max ?? []), ...(f.visualizations?.min ?? [])]) files.set(`v:${p}`, join(paths.build, p));
  }
  for (const t of manifest.trials) t.query_images.forEach(natural);
  return files;
}

/**
 * Query images per feature, drawn the way the study draws its queries (see the header): per side
 * the study's own query and ⌈√pairs⌉ − 1 more drawn without replacement (seeded by the study seed
 * and the feature) from its band. Reads every image's value on the study's features as the build
 * computed them (studyFeatureSet: the build's activation store, its dictionaries refitted as the
 * build fitted them).
 */
export async function drawQueries(loaded: LoadedStudy, manifest: Manifest, pairs: number, opts: { device?: Device; log?: (s: string) => void } = {}): Promise<Map<string, { max: string[]; min: string[] }>> {
  const perSide = Math.ceil(Math.sqrt(pairs));
  const { fs } = await studyFeatureSet(loaded, { device: opts.device, quiet: true, log: opts.log ?? (() => {}) });
  try {
    const ctx = rankContext(loaded.study, fs.ids, fs.refRows, fs.queryRows, fs.hashes);
    const columns = new Map([...fs.selected, ...fs.spare].map((c) => [featureId(c), c]));
    const halfWidth = Math.max(perSide, Math.round(BAND * fs.queryRows.length));
    const out = new Map<string, { max: string[]; min: string[] }>();
    for (const f of manifest.features) {
      const column = columns.get(f.id);
      if (!column) throw new LegibleError(`${f.id}: a feature of the manifest that the study's features, computed from the activation store now, do not include: the build is stale (legible stimuli ${loaded.study.id})`);
      const band = queryBands(column, ctx, { references: f.references, queries: { max: f.queries.max[0], min: f.queries.min[0] } }, halfWidth);
      const r = rng(seedFrom('predict-queries', manifest.seed, f.id));
      const pick = (ids: string[], own: string) => {
        const rest = ids.filter((x) => x !== own);
        return [own, ...r.sample(rest, Math.min(perSide - 1, rest.length))];
      };
      out.set(f.id, { max: pick(band.max, f.queries.max[0]), min: pick(band.min, f.queries.min[0]) });
    }
    return out;
  } finally {
    await fs.release();
  }
}

export interface PredictOptions {
  /** Query pairs per feature and reference kind (default DEFAULT_PAIRS): ⌈√pairs⌉ queries per side, crossed. */
  pairs?: number;
  observer?: string;
  observerLayer?: string;
  observerInput?: string;
  alpha?: number;
  device?: Device;
  log?: (s: string) => void;
}

/**
 * `legible predict`: scores a built study's features and trials, writes machine_score into each
 * manifest feature, build/predict.json (per-trial probabilities for `legible pilot`) and a section
 * of build/report.html.
 */
export async function predictStudy(loaded: LoadedStudy, opts: PredictOptions = {}): Promise<Prediction> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const { paths, study } = loaded;
  const manifestFile = join(paths.build, 'manifest.json');
  if (!existsSync(manifestFile)) throw new LegibleError(`no stimuli built for ${study.id} (${manifestFile} is missing): run \`legible stimuli ${study.id}\` first`);
  const manifest = Manifest.parse(JSON.parse(readFileSync(manifestFile, 'utf8')));
  const alpha = opts.alpha ?? DEFAULT_ALPHA;
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new LegibleError(`--alpha expects a number > 0, got ${opts.alpha}`);
  const pairs = opts.pairs ?? DEFAULT_PAIRS;
  if (!Number.isInteger(pairs) || pairs < 1) throw new LegibleError(`--pairs expects a whole number ≥ 1, got ${opts.pairs}`);
  const observer = resolveObserver(loaded, { observer: opts.observer, layer: opts.observerLayer, input: opts.observerInput });
  const started = performance.now();
  const queries = await drawQueries(loaded, manifest, pairs, { device: opts.device, log });
  const files = imagesOf(manifest, paths, queries);
  const keys = [...files.keys()].sort();
  for (const k of keys) if (!existsSync(files.get(k)!)) throw new LegibleError(`image ${files.get(k)} (in ${relative(process.cwd(), manifestFile)}) is missing: rebuild the stimuli (legible stimuli ${study.id})`);
  const vectors = centre(await embedImages(observer, keys.map((k) => files.get(k)!), { device: opts.device, log }));
  const table = new Map(keys.map((k, i) => [k, vectors[i]]));
  const scored = predictManifest(manifest, (k) => table.get(k)!, { alpha, observer: observer.label, weakProxy: observer.weakProxy, queries });
  const seconds = (performance.now() - started) / 1000;
  const prediction: Prediction = {
    format: PREDICT_FORMAT,
    study: study.id,
    observer: observer.label,
    weak_proxy: observer.weakProxy,
    alpha,
    pairs,
    similarity: 'cosine of embeddings centred on their mean over the study\'s images',
    ...scored,
    seconds: Number(seconds.toFixed(3)),
    images: keys.length,
  };
  // The manifest, with each feature's machine score (the server reads the manifest: keep it valid).
  const raw = JSON.parse(readFileSync(manifestFile, 'utf8')) as { features: Record<string, unknown>[] };
  for (const f of raw.features) f.machine_score = scored.features[f.id as string];
  Manifest.parse(raw);
  writeAtomic(manifestFile, `${JSON.stringify(raw, null, 2)}\n`);
  writeAtomic(join(paths.build, 'predict.json'), `${JSON.stringify(prediction, null, 2)}\n`);
  const report = join(paths.build, 'report.html');
  if (existsSync(report)) writeAtomic(report, withPredictSection(readFileSync(report, 'utf8'), manifest, prediction));
  log(`${study.id}: machine observer ${observer.label}${observer.weakProxy ? ' — a weak proxy: give --observer a perceptual model (DreamSim, CLIP, DINO) for a real prediction' : ''}; ${manifest.features.length} features, ${keys.length} images in ${seconds.toFixed(1)} s (${((seconds / Math.max(1, manifest.features.length)) * 1000).toFixed(0)} ms per feature)`);
  return prediction;
}

const START = '<!-- legible:predict -->';
const END = '<!-- /legible:predict -->';
const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** The build report with its machine-observer section (replacing an earlier one). */
export function withPredictSection(html: string, manifest: Manifest, prediction: Prediction): string {
  const rows = manifest.features
    .map((f) => {
      const s = prediction.features[f.id];
      const kinds = [...new Set(manifest.trials.filter((t) => t.feature === f.id).map((t) => t.kind))].join(', ');
      return `<tr><td>${esc(f.id)}</td><td>${esc(kinds)}</td><td><b>${s.p.toFixed(3)}</b></td><td>${s.lo.toFixed(3)} – ${s.hi.toFixed(3)}</td><td>${s.n_pairs}</td></tr>`;
    })
    .join('');
  const section = `${START}<section id="machine-observer"><h2>Machine observer</h2>
${prediction.weak_proxy ? '<div class="warn"><b>Weak proxy.</b> The observer is the study\'s own model, which defines the features: its similarities are not a person\'s. Give <code>legible predict --observer</code> a perceptual similarity model (DreamSim, CLIP, DINO) for a prediction worth acting on.</div>' : ''}
<p class="info">Predicted P(correct) per feature, in the manner of the Machine Interpretability Score (Zimmermann, Klindt &amp; Brendel 2024): observer <b>${esc(prediction.observer)}</b>, similarity: ${esc(prediction.similarity)}, P = σ(${prediction.alpha} · (Δ(q+) − Δ(q−))), Δ(q) = mean similarity to the maximal references − to the minimal ones; mean over ${prediction.pairs} query pairs per feature and reference kind (n pairs in all), drawn from the held-out images around the study's query ranks; 95% CI: bootstrap over the query images. α ${prediction.alpha === DEFAULT_ALPHA ? `is the default (${DEFAULT_ALPHA}), not calibrated to human data: the scores rank features; their distance from 0.5 means little until α is fitted to a pilot` : 'as given'}. ${prediction.images} images embedded in ${prediction.seconds.toFixed(1)} s.</p>
<table><tr><th>feature</th><th>trials</th><th>machine score</th><th>95% CI</th><th>n pairs</th></tr>${rows}</table></section>${END}`;
  const at = html.indexOf(START);
  if (at >= 0) return html.slice(0, at) + section + html.slice(html.indexOf(END) + END.length);
  const body = html.lastIndexOf('</body>');
  return body >= 0 ? `${html.slice(0, body)}${section}\n${html.slice(body)}` : `${html}${section}`;
}

/** build/predict.json of a study, or null where `legible predict` has not run. */
export function readPrediction(build: string): Prediction | null {
  const file = join(build, 'predict.json');
  if (!existsSync(file)) return null;
  const p = JSON.parse(readFileSync(file, 'utf8')) as Prediction;
  if (p.format !== PREDICT_FORMAT) throw new LegibleError(`${file} is not a prediction of this version (format ${p.format}): run \`legible predict\` again`);
  return p;
}

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, file);
}

function round(x: number): number {
  return Number(x.toPrecision(6));
}
