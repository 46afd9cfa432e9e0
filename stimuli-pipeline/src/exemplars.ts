// Features, exemplars and trials: which features a study uses, their maximally and minimally
// activating references (from the reference split), their queries (from the held-out split, at the
// study's difficulty), and the trial pool with answer keys (main, catch, practice).
//
// Trial validity: a feature is used only where it separates what a trial shows. Its `per_side`
// maximal references must all lie clearly above its `per_side` minimal ones, and its two queries
// (at the study's difficulty) clearly apart: the gap must be above zero and at least
// `features.min_separation` × the feature's range over the reference split. A feature that fails is
// rejected, with the reason and the numbers. Images with equal activations are ordered by a seeded
// random draw (per study seed and feature), never by file name; byte-identical files count once.
import { LegibleError, mix32, rng, seedFrom, type BasisKind, type ManifestTrial, type ReferenceKind, type Study } from '@legible/studies';
import { NMF_ZERO } from './nmf.ts';

/** One feature's activation over every image row. */
export interface FeatureColumn {
  layer: string;
  basis: BasisKind;
  index: number;
  values: Float32Array;
}

export interface Exemplars {
  min: string[];
  max: string[];
  queries: { min: string[]; max: string[] };
  /** Over the reference split; zero_fraction: the share of reference images at exactly 0 (NMF codes: at the solver's floor, 1e-10). */
  stats: { mean: number; std: number; min: number; max: number; zero_fraction: number };
  /** The feature's activation on each of `min`, `max` and the queries, in the same order. */
  activations: { min: number[]; max: number[]; queries: { min: number[]; max: number[] } };
}

export type Difficulty = Study['queries']['difficulty'];

/** A feature left out of the study (or of practice), why, and the numbers that decided it. */
export interface Rejection {
  id: string;
  layer: string;
  basis: BasisKind;
  index: number;
  for: 'study' | 'practice';
  reason: 'constant' | 'references' | 'queries';
  message: string;
  numbers: Record<string, number>;
}

export type Assessment = { ok: true; exemplars: Exemplars } | { ok: false; rejection: Rejection };

/** How many query candidates per side the manifest records (the first is used). */
const QUERY_CANDIDATES = 5;

export function featureId(f: { layer: string; basis: string; index: number }): string {
  return `${f.layer}/${f.basis}/${f.index}`;
}

/** What ranking needs besides a feature's values: the study, the splits, and per row a tie key and a content class. */
export interface RankContext {
  study: Study;
  ids: string[];
  refRows: number[];
  queryRows: number[];
  /** Per row: two seeded random keys (from the study seed and the image id; 64 bits, so no two images share them) that order equal activations. */
  keys: Uint32Array;
  keys2: Uint32Array;
  /** Per row: rows whose files are byte-identical share a number. */
  content: Int32Array;
}

export function rankContext(study: Study, ids: string[], refRows: number[], queryRows: number[], hashes?: Map<string, string>): RankContext {
  const keys = Uint32Array.from(ids, (id) => seedFrom('ties', study.seed, id));
  const keys2 = Uint32Array.from(ids, (id) => seedFrom('ties-2', study.seed, id));
  const classes = new Map<string, number>();
  const content = Int32Array.from(ids, (id, row) => {
    const h = hashes?.get(id);
    if (h === undefined) return -1 - row;
    if (!classes.has(h)) classes.set(h, classes.size);
    return classes.get(h)!;
  });
  return { study, ids, refRows, queryRows, keys, keys2, content };
}

/** One key per image, mixed with a per-feature salt: an unrelated order per feature. */
const mix = mix32;

/** Rows sorted by activation, highest first; equal activations in a seeded random order (`salt`: per feature). */
function rank(values: Float32Array, rows: number[], salt: number, ctx: RankContext): number[] {
  const { keys, keys2 } = ctx;
  return rows.slice().sort((a, b) => values[b] - values[a] || mix(keys[a] ^ salt) - mix(keys[b] ^ salt) || mix(keys2[a] ^ salt) - mix(keys2[b] ^ salt));
}

/** The first `n` rows of `ranked` whose contents are not yet in `seen` (which they join). */
function distinct(ranked: Iterable<number>, n: number, content: Int32Array, seen: Set<number>): number[] {
  const out: number[] = [];
  for (const r of ranked) {
    if (out.length === n) break;
    if (seen.has(content[r])) continue;
    seen.add(content[r]);
    out.push(r);
  }
  return out;
}

function* reversed(xs: number[]): Generator<number> {
  for (let i = xs.length - 1; i >= 0; i--) yield xs[i];
}

/** The value at or below which a feature counts as exactly zero: 0, or NMF's solver floor (1e-10). */
export function zeroOf(basis: BasisKind): number {
  return basis === 'nmf' ? NMF_ZERO : 0;
}

function statsOf(values: Float32Array, rows: number[], zero: number): Exemplars['stats'] {
  let sum = 0;
  let sum2 = 0;
  let lo = Infinity;
  let hi = -Infinity;
  let zeros = 0;
  for (const r of rows) {
    const v = values[r];
    sum += v;
    sum2 += v * v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    if (v <= zero && v >= -zero) zeros++;
  }
  const mean = sum / rows.length;
  return { mean, std: Math.sqrt(Math.max(0, sum2 / rows.length - mean * mean)), min: lo, max: hi, zero_fraction: zeros / rows.length };
}

/** Distinct contents among `rows` whose value passes `keep`. */
function countDistinct(values: Float32Array, rows: number[], content: Int32Array, keep: (v: number) => boolean): number {
  const seen = new Set<number>();
  for (const r of rows) if (keep(values[r])) seen.add(content[r]);
  return seen.size;
}

const fmt = (x: number) => String(Number(x.toPrecision(4)));
const ordinal = (n: number) => `${n}${n % 100 >= 11 && n % 100 <= 13 ? 'th' : ['th', 'st', 'nd', 'rd'][n % 10] ?? 'th'}`;
const round6 = (x: number) => Number(x.toPrecision(6));

/** Relative range below which a feature counts as constant: float32 round-off after a few operations. */
const ROUND_OFF = 1e-5;

/**
 * Whether a feature can make valid trials, and if so its references and queries. `difficulty`
 * defaults to the study's (practice trials use `extreme`).
 */
export function assessFeature(feature: FeatureColumn, ctx: RankContext, opts: { difficulty?: Difficulty; for?: Rejection['for'] } = {}): Assessment {
  const { study, ids, refRows, queryRows, content } = ctx;
  const perSide = study.references.per_side;
  const separation = study.features.min_separation;
  const difficulty = opts.difficulty ?? study.queries.difficulty;
  const v = feature.values;
  const id = featureId(feature);
  const stats = statsOf(v, refRows, zeroOf(feature.basis));
  const reject = (reason: Rejection['reason'], message: string, numbers: Record<string, number>): Assessment => ({
    ok: false,
    rejection: {
      id,
      layer: feature.layer,
      basis: feature.basis,
      index: feature.index,
      for: opts.for ?? 'study',
      reason,
      message,
      numbers: Object.fromEntries(Object.entries({ ...numbers, zero_fraction: stats.zero_fraction }).map(([k, x]) => [k, round6(x)])),
    },
  });
  const range = stats.max - stats.min;
  if (!(range > 0)) return reject('constant', `constant over the ${refRows.length} reference images (every one at ${fmt(stats.min)})`, { value: stats.min });
  // A range within float32 round-off of the values' magnitude is no variation: the ranking would
  // order rounding errors, and its references print (and look) identical.
  const magnitude = Math.max(Math.abs(stats.max), Math.abs(stats.min));
  if (range <= ROUND_OFF * magnitude) {
    return reject('constant', `constant over the ${refRows.length} reference images up to float32 round-off (${stats.min.toPrecision(6)} to ${stats.max.toPrecision(6)}: a range of ${range.toExponential(2)}, below ${ROUND_OFF.toExponential(0)} of its magnitude)`, { value: stats.min, range });
  }
  const required = separation * range;
  const separated = (gap: number) => gap > 0 && gap >= required;
  const need = `needs a gap above 0 and at least ${fmt(required)} = features.min_separation ${separation} × its range ${fmt(range)}`;

  // References: the top and bottom of the reference split.
  const salt = seedFrom('ties', study.seed, id);
  const ranked = rank(v, refRows, salt, ctx);
  const seen = new Set<number>();
  const max = distinct(ranked, perSide, content, seen);
  const min = distinct(reversed(ranked), perSide, content, seen);
  if (max.length < perSide || min.length < perSide) {
    return reject('references', `the reference split holds only ${seen.size} distinct images (needs ${2 * perSide}: references.per_side ${perSide} on each side)`, { distinct: seen.size, needed: 2 * perSide });
  }
  const weakestMax = v[max[perSide - 1]];
  const strongestMin = v[min[perSide - 1]];
  const gap = weakestMax - strongestMin;
  if (!separated(gap)) {
    const numbers = { references: refRows.length, weakest_max: weakestMax, strongest_min: strongestMin, gap, required, range };
    const above = countDistinct(v, refRows, content, (x) => x > stats.min);
    if (above < perSide) {
      return reject('references', `only ${above} of ${refRows.length} reference images above ${fmt(stats.min)} (needs ${perSide} distinct maximal references)`, { ...numbers, above });
    }
    const below = countDistinct(v, refRows, content, (x) => x < stats.max);
    if (below < perSide) {
      return reject('references', `only ${below} of ${refRows.length} reference images below ${fmt(stats.max)} (needs ${perSide} distinct minimal references)`, { ...numbers, below });
    }
    return reject(
      'references',
      `its ${ordinal(perSide)} maximal reference (${fmt(weakestMax)}) is not clearly above its ${ordinal(perSide)} minimal reference (${fmt(strongestMin)}): gap ${fmt(gap)}, ${need}`,
      numbers,
    );
  }

  // Queries: held-out images that are not copies of a reference, at the difficulty's positions.
  const refContents = new Set([...max, ...min].map((r) => content[r]));
  const pool = distinct(rank(v, queryRows, salt, ctx), Infinity, content, refContents);
  const m = pool.length;
  const pct = difficulty === 'extreme' ? 100 : Number(difficulty.slice(1));
  // Position of the pct-th percentile counted from the top (max side), and symmetrically from the bottom.
  const start = Math.round((1 - pct / 100) * (m - 1));
  const hi = pool[start];
  const lo = pool[m - 1 - start];
  const qgap = m >= 2 && start < m - 1 - start ? v[hi] - v[lo] : 0;
  if (!separated(qgap)) {
    const where = pct === 100 ? ['highest', 'lowest'] : [`at the ${pct}th percentile`, `at the ${100 - pct}th`];
    const numbers = { queries: m, max_query: m ? v[hi] : NaN, min_query: m ? v[lo] : NaN, gap: qgap, required, range };
    if (m < 2) return reject('queries', `only ${m} held-out images that are not copies of a reference`, numbers);
    let qmin = Infinity;
    for (const r of pool) if (v[r] < qmin) qmin = v[r];
    const above = countDistinct(v, pool, content, (x) => x > qmin);
    return reject(
      'queries',
      `its queries at difficulty ${difficulty} are not separated: the held-out image ${where[0]} activates it at ${fmt(v[hi])}, the one ${where[1]} at ${fmt(v[lo])} (gap ${fmt(qgap)}; ${need}); ${above} of ${m} held-out images are above ${fmt(qmin)}`,
      { ...numbers, above },
    );
  }
  // Candidates beyond the first pair, while every max candidate stays clearly above every min candidate.
  const qmax: number[] = [];
  const qmin: number[] = [];
  for (let i = 0; i < QUERY_CANDIDATES && start + i < m - 1 - start - i && separated(v[pool[start + i]] - v[pool[m - 1 - start - i]]); i++) {
    qmax.push(pool[start + i]);
    qmin.push(pool[m - 1 - start - i]);
  }
  const name = (rows: number[]) => rows.map((r) => ids[r]);
  const act = (rows: number[]) => rows.map((r) => v[r]);
  return {
    ok: true,
    exemplars: {
      min: name(min),
      max: name(max),
      queries: { min: name(qmin), max: name(qmax) },
      stats,
      activations: { min: act(min), max: act(max), queries: { min: act(qmin), max: act(qmax) } },
    },
  };
}

/**
 * The held-out images around a feature's study queries, for drawing more query pairs the way the
 * study draws its one (`legible predict`): the query split ranked as assessFeature ranks it (copies
 * of a reference left out, ties in the same seeded order), the study's max query at rank `start`
 * from the top and its min query at the same rank from the bottom; each side's band is the ranks
 * within `halfWidth` of that position (clipped at the ends of the ranking), cut on the inner side
 * where a max candidate would no longer lie clearly above the min candidate of the same rank
 * (features.min_separation, as for the study's pair). Ids in rank order, the study's query
 * included; `start` and the split's size `m` say where the band lies. An error where the study's
 * queries are not at mirrored ranks of this ranking (a build from other activations: rebuild).
 */
export function queryBands(
  feature: FeatureColumn,
  ctx: RankContext,
  chosen: { references: { max: string[]; min: string[] }; queries: { max: string; min: string } },
  halfWidth: number,
): { max: string[]; min: string[]; start: number; m: number } {
  const { study, ids, refRows, queryRows, content } = ctx;
  const v = feature.values;
  const id = featureId(feature);
  const rowOf = new Map<string, number>();
  for (const r of [...refRows, ...queryRows]) rowOf.set(ids[r], r);
  const rowsOf = (xs: string[]) =>
    xs.map((x) => {
      const r = rowOf.get(x);
      if (r === undefined) throw new LegibleError(`${id}: image ${x} of the manifest is not in the study's splits: the build is stale (legible stimuli ${study.id})`);
      return r;
    });
  const refContents = new Set(rowsOf([...chosen.references.max, ...chosen.references.min]).map((r) => content[r]));
  const salt = seedFrom('ties', study.seed, id);
  const pool = distinct(rank(v, queryRows, salt, ctx), Infinity, content, refContents);
  const m = pool.length;
  const [qMax, qMin] = rowsOf([chosen.queries.max, chosen.queries.min]);
  const start = pool.indexOf(qMax);
  if (start < 0 || pool[m - 1 - start] !== qMin) {
    throw new LegibleError(`${id}: the manifest's queries (${chosen.queries.max}, ${chosen.queries.min}) are not at mirrored ranks of the held-out split's ranking by this feature: the build is stale (legible stimuli ${study.id})`);
  }
  const stats = statsOf(v, refRows, zeroOf(feature.basis));
  const required = study.features.min_separation * (stats.max - stats.min);
  const separated = (i: number) => i < m - 1 - i && v[pool[i]] - v[pool[m - 1 - i]] > 0 && v[pool[i]] - v[pool[m - 1 - i]] >= required;
  const lo = Math.max(0, start - halfWidth);
  let hi = start;
  while (hi + 1 <= start + halfWidth && separated(hi + 1)) hi++;
  const max: string[] = [];
  const min: string[] = [];
  for (let i = lo; i <= hi; i++) {
    max.push(ids[pool[i]]);
    min.push(ids[pool[m - 1 - i]]);
  }
  return { max, min, start, m };
}

/** A feature's exemplars; an error with the reason where it can't make valid trials. */
export function exemplarsOf(feature: FeatureColumn, ctx: RankContext, difficulty?: Difficulty): Exemplars {
  const a = assessFeature(feature, ctx, { difficulty });
  if (!a.ok) throw new LegibleError(`${a.rejection.id}: ${a.rejection.message}`);
  return a.exemplars;
}

/** The order in which a layer's live features of one basis are drawn (seeded; features.seed). */
export function drawOrder(study: Study, layer: string, basis: BasisKind, live: number[]): number[] {
  return rng(seedFrom('features', study.features.seed, layer, basis)).sample(live, live.length);
}

export interface FeaturePick {
  selected: { column: FeatureColumn; exemplars: Exemplars }[];
  /** Valid features outside the study, with the most extreme queries: for practice trials. */
  spare: { column: FeatureColumn; exemplars: Exemplars }[];
  rejected: Rejection[];
}

/**
 * Choose the features of one layer and basis: all, a seeded random draw, or the study's list, of
 * those that make valid trials (assessFeature). The draw walks a seeded order and skips (rejects)
 * invalid features until it has `features.count`; then goes on to find `spareCount` valid features
 * for practice trials. `constant(i)` says, without loading values, whether feature i is constant over
 * the reference split (its value) or not (null); `load` gives the values of features.
 */
export async function pickFeatures(opts: {
  ctx: RankContext;
  layer: string;
  basis: BasisKind;
  features: number;
  constant: (index: number) => number | null;
  load: (indices: number[]) => FeatureColumn[] | Promise<FeatureColumn[]>;
  spareCount: number;
}): Promise<FeaturePick> {
  const { ctx, layer, basis } = opts;
  const study = ctx.study;
  const sel = study.features;
  const rejected: Rejection[] = [];
  const live: number[] = [];
  for (let i = 0; i < opts.features; i++) {
    const value = opts.constant(i);
    if (value === null) {
      live.push(i);
    } else {
      rejected.push({
        id: featureId({ layer, basis, index: i }),
        layer,
        basis,
        index: i,
        for: 'study',
        reason: 'constant',
        message: `constant over the ${ctx.refRows.length} reference images (every one at ${fmt(value)})`,
        numbers: { value: round6(value), zero_fraction: Math.abs(value) <= zeroOf(basis) ? 1 : 0 },
      });
    }
  }
  const order = drawOrder(study, layer, basis, live);
  const selected: FeaturePick['selected'] = [];
  let rest: number[];

  if (sel.select === 'list') {
    const wanted = (sel.list ?? []).map((item, position) => ({ item, position })).filter(({ item }) => item.startsWith(`${layer}/${basis}/`));
    const problems: string[] = [];
    const indices: number[] = [];
    for (const { item } of wanted) {
      const index = Number(item.split('/')[2]);
      if (index >= opts.features) {
        throw new LegibleError(`features.list: "${item}" does not exist: ${layer} has ${opts.features} ${basis} features (0–${opts.features - 1}).`);
      }
      if (!live.includes(index)) throw new LegibleError(`features.list: "${item}" is constant over the reference images (a dead unit) and can't be ranked.`);
      indices.push(index);
    }
    const columns = await opts.load(indices);
    columns.forEach((column, i) => {
      const a = assessFeature(column, ctx);
      if (a.ok) selected.push({ column, exemplars: a.exemplars });
      else problems.push(`features.list[${wanted[i].position}] "${wanted[i].item}": ${a.rejection.message}`);
    });
    if (problems.length) {
      throw new LegibleError(
        `${problems.length === 1 ? 'a listed feature does' : `${problems.length} listed features do`} not separate their references or queries, so their trials would be decided by chance:\n  ${problems.join('\n  ')}\n  Remove ${problems.length === 1 ? 'it' : 'them'} from features.list, add images, or lower features.min_separation.`,
      );
    }
    rest = order.filter((i) => !indices.includes(i));
  } else {
    const target = sel.select === 'all' ? live.length : sel.count!;
    if (target > live.length) {
      throw new LegibleError(
        `features.count = ${target}, but layer "${layer}" has only ${live.length} usable ${basis} features${live.length < opts.features ? ` (${opts.features - live.length} are constant)` : ''}. Lower features.count or use select: all.`,
      );
    }
    let pos = 0;
    while (selected.length < target && pos < order.length) {
      const chunk = order.slice(pos, pos + Math.max(16, 2 * (target - selected.length)));
      const columns = await opts.load(chunk);
      for (const column of columns) {
        if (selected.length === target) break;
        pos++;
        const a = assessFeature(column, ctx);
        if (a.ok) selected.push({ column, exemplars: a.exemplars });
        else rejected.push(a.rejection);
      }
    }
    if (sel.select === 'random' && selected.length < target) {
      const tally = tallyOf(rejected);
      throw new LegibleError(
        `features.count = ${target}, but only ${selected.length} of layer "${layer}"'s ${opts.features} ${basis} features separate their references and queries (${tally}). ` +
          `Lower features.count, add images, lower features.min_separation, or use select: all (the build report then lists every rejected feature and why).`,
      );
    }
    selected.sort((a, b) => a.column.index - b.column.index);
    rest = order.slice(pos);
  }
  if (selected.length === 0) {
    throw new LegibleError(`no ${basis} feature of layer "${layer}" separates its references and queries (${tallyOf(rejected)}): add images, lower features.min_separation, or drop the basis.`);
  }

  // Practice: the next valid features of the draw, with the most extreme queries.
  const spare: FeaturePick['spare'] = [];
  let pos = 0;
  while (spare.length < opts.spareCount && pos < rest.length) {
    const columns = await opts.load(rest.slice(pos, pos + Math.max(8, 2 * (opts.spareCount - spare.length))));
    for (const column of columns) {
      if (spare.length === opts.spareCount) break;
      pos++;
      const a = assessFeature(column, ctx, { difficulty: 'extreme', for: 'practice' });
      if (a.ok) spare.push({ column, exemplars: a.exemplars });
      else rejected.push(a.rejection);
    }
  }
  rejected.sort((a, b) => a.index - b.index);
  return { selected, spare, rejected };
}

/** "3 constant, 5 with references not separated, 1 with queries not separated". */
export function tallyOf(rejected: Rejection[]): string {
  const n = (reason: Rejection['reason']) => rejected.filter((r) => r.reason === reason).length;
  const parts = [
    n('constant') && `${n('constant')} constant`,
    n('references') && `${n('references')} with references not separated`,
    n('queries') && `${n('queries')} with queries not separated`,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : 'none rejected';
}

/** The data set must hold enough images for every feature's references and queries. */
export function checkSplitSizes(study: Study, refCount: number, queryCount: number, total: number): void {
  const needRef = 2 * study.references.per_side;
  const pct = study.queries.difficulty === 'extreme' ? 100 : Number(study.queries.difficulty.slice(1));
  // A percentile query needs enough held-out images for the percentile to differ from the extreme.
  const needQuery = pct === 100 ? 2 : Math.ceil(2 / (1 - pct / 100)) + 2;
  const problems: string[] = [];
  if (refCount < needRef) {
    problems.push(`${needRef} reference images (2 × references.per_side), but the reference split has ${refCount}`);
  }
  if (queryCount < needQuery) {
    problems.push(`${needQuery} held-out images for queries at difficulty ${study.queries.difficulty}, but the query split has ${queryCount}`);
  }
  if (problems.length) {
    const s = study.dataset.split;
    throw new LegibleError(
      `the data set is too small: ${total} usable images, split ${s.reference} / ${s.query} (reference / query).\n  Needs ${problems.join('; and ')}.\n  Add images to dataset.images, or change dataset.split, references.per_side or queries.difficulty.`,
    );
  }
}

export interface TrialSpec {
  id: string;
  feature: string;
  kind: ManifestTrial['kind'];
  reference_kind: ReferenceKind;
  min: string[];
  max: string[];
  queries: [string, string];
  answer: 0 | 1;
}

/** A trial's two queries in a seeded order, with the index of the one that matches the max side. */
function orderQueries(id: string, seed: number, maxQuery: string, minQuery: string): { queries: [string, string]; answer: 0 | 1 } {
  return rng(seedFrom('query-order', seed, id)).next() < 0.5 ? { queries: [maxQuery, minQuery], answer: 0 } : { queries: [minQuery, maxQuery], answer: 1 };
}

/**
 * Main and catch trials of a study feature, one of each per reference kind; catch trials ask about a
 * reference image itself. Visualization trials show `visual`'s images as references and the same
 * natural held-out queries as natural trials.
 */
export function trialsOf(feature: string, ex: Exemplars, kinds: ReferenceKind[], seed: number, visual?: { min: string[]; max: string[] }): TrialSpec[] {
  const trials: TrialSpec[] = [];
  for (const reference_kind of kinds) {
    const refs = reference_kind === 'visualization' ? visual : ex;
    if (!refs) throw new LegibleError(`references.kinds: "visualization" without feature visualizations for ${feature} (internal: none were made).`);
    const id = `${feature}/main/${reference_kind}`;
    trials.push({ id, feature, kind: 'main', reference_kind, min: refs.min, max: refs.max, ...orderQueries(id, seed, ex.queries.max[0], ex.queries.min[0]) });
    // Catch: the queries are a max and a min reference, taken at a seeded position in each grid.
    const r = rng(seedFrom('catch', seed, feature, reference_kind));
    const catchId = `${feature}/catch/${reference_kind}`;
    const pick = (side: string[]) => side[r.int(side.length)];
    trials.push({ id: catchId, feature, kind: 'catch', reference_kind, min: refs.min, max: refs.max, ...orderQueries(catchId, seed, pick(refs.max), pick(refs.min)) });
  }
  return trials;
}

/** A practice trial: like a main trial, with the most extreme queries, on a feature outside the study. */
export function practiceTrialOf(feature: string, ex: Exemplars, seed: number): TrialSpec {
  const id = `${feature}/practice/natural`;
  return { id, feature, kind: 'practice', reference_kind: 'natural', min: ex.min, max: ex.max, ...orderQueries(id, seed, ex.queries.max[0], ex.queries.min[0]) };
}
