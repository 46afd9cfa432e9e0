// Features, exemplars and trials: which features a study uses, their maximally and minimally
// activating references (from the reference split), their queries (from the held-out split, at the
// study's difficulty), and the trial pool with answer keys (main, catch, practice).
import { LegibleError, rng, seedFrom, type BasisKind, type ManifestTrial, type ReferenceKind, type Study } from '@legible/studies';

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
  stats: { mean: number; std: number; min: number; max: number };
}

/** How many query candidates per side the manifest records (the first is used). */
const QUERY_CANDIDATES = 5;

export function featureId(f: { layer: string; basis: string; index: number }): string {
  return `${f.layer}/${f.basis}/${f.index}`;
}

/**
 * Choose the features of one layer and basis: all, a seeded random sample, or the study's list.
 * Features that are constant over the reference split (dead units) can't be ranked and are left out;
 * `liveIndices`, when given, says which are alive (for columns whose values are not loaded yet).
 */
export function selectFeatures(study: Study, layer: string, basis: BasisKind, columns: FeatureColumn[], refRows: number[], liveIndices?: Set<number>): FeatureColumn[] {
  const live = columns.filter((c) => (liveIndices ? liveIndices.has(c.index) : !isConstant(c.values, refRows)));
  const sel = study.features;
  if (sel.select === 'all') return live;
  if (sel.select === 'list') {
    const wanted = (sel.list ?? []).filter((id) => id.startsWith(`${layer}/${basis}/`)).map((id) => Number(id.split('/')[2]));
    return wanted.map((index) => {
      const col = columns.find((c) => c.index === index);
      if (!col) throw new LegibleError(`features.list: "${layer}/${basis}/${index}" does not exist: ${layer} has ${columns.length} ${basis} features (0–${columns.length - 1}).`);
      if (!live.includes(col)) throw new LegibleError(`features.list: "${layer}/${basis}/${index}" is constant over the reference images (a dead unit) and can't be ranked.`);
      return col;
    });
  }
  const count = sel.count!;
  if (count > live.length) {
    throw new LegibleError(
      `features.count = ${count}, but layer "${layer}" has only ${live.length} usable ${basis} features${live.length < columns.length ? ` (${columns.length - live.length} are constant)` : ''}. Lower features.count or use select: all.`,
    );
  }
  return rng(seedFrom('features', sel.seed, layer, basis))
    .sample(live, count)
    .sort((a, b) => a.index - b.index);
}

function isConstant(values: Float32Array, rows: number[]): boolean {
  const first = values[rows[0]];
  return rows.every((r) => values[r] === first);
}

/** Rows sorted by activation, highest first; ties by image id so the order is deterministic. */
function rank(values: Float32Array, rows: number[], ids: string[]): number[] {
  return rows.slice().sort((a, b) => values[b] - values[a] || (ids[a] < ids[b] ? -1 : ids[a] > ids[b] ? 1 : 0));
}

export function exemplarsOf(feature: FeatureColumn, study: Study, ids: string[], refRows: number[], queryRows: number[]): Exemplars {
  const perSide = study.references.per_side;
  const ranked = rank(feature.values, refRows, ids);
  const max = ranked.slice(0, perSide).map((r) => ids[r]);
  const min = ranked.slice(-perSide).reverse().map((r) => ids[r]);
  const q = rank(feature.values, queryRows, ids);
  const m = q.length;
  let start = 0;
  if (study.queries.difficulty !== 'extreme') {
    const pct = Number(study.queries.difficulty.slice(1));
    // Position of the pct-th percentile counted from the top (max side), and symmetrically from the bottom.
    start = Math.round((1 - pct / 100) * (m - 1));
  }
  const take = Math.min(QUERY_CANDIDATES, Math.floor(m / 2) - start);
  const queries = {
    max: q.slice(start, start + take).map((r) => ids[r]),
    min: q.slice(m - start - take, m - start).reverse().map((r) => ids[r]),
  };
  let sum = 0;
  let sum2 = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (const r of refRows) {
    const v = feature.values[r];
    sum += v;
    sum2 += v * v;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const mean = sum / refRows.length;
  const std = Math.sqrt(Math.max(0, sum2 / refRows.length - mean * mean));
  return { min, max, queries, stats: { mean, std, min: lo, max: hi } };
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
