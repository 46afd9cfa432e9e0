// Assignment: from a study's manifest to one participant's task list. Pure and deterministic —
// the same plan, seed and load give the same list — so it is tested without a database.
//
//   practice trials (design.practice_trials)            first, fixed at the start; with
//                                                        design.practice_criterion repeated in
//                                                        design.practice_rounds rounds
//   main trials (design.trials_per_participant)          ┐ shuffled together
//   catch trials (design.catch_trials)                    ┘ with the seed
//
// With design.order: latin_square, the main trials come in blocks, one per within-subject cell,
// in the order of one row of a balanced Latin square (Williams' design: every cell once in every
// position, and every cell right after every other equally often, over the rows); the row is the
// participant's place among the sessions of their condition, so consecutive participants take
// consecutive rows. Catch trials go to seeded places among the main trials.
//
// Practice rounds: round r (0-based) is seqs r·P … r·P+P−1 (P = practice_trials): the same
// practice trials in the same order each round, each trial's two queries in a new seeded order.
// Which rounds a participant needs is decided as they answer (see practice.ts).
//
// Balance: main trials go to the units (feature × reference kind) with the least load, where
// load = recorded main responses + main trials leased to active sessions whose time limit has
// not passed (unanswered ones only). A participant sees each feature once unless the pool is too
// small; among equally loaded units the one in the participant's least-used within-subject cell
// (e.g. layer × basis) wins, then the seed decides. Between-subject factors: the participant gets
// the level (combination) with the fewest finished or leased sessions, ties by seed, and only
// trials of that level. Each trial's two queries are put in a seeded order; the answer key (the
// task-list index of the max-matching query) stays on the server.
import { FACTORS, LegibleError, rng, type Factor, type Manifest, type ManifestFeature, type ManifestTrial, type ReferenceKind, type Study, type TrialKind } from '@legible/studies';

export type Bit = 0 | 1;

/** A participant's level of each between-subject factor, e.g. {"basis": "nmf"}; {} without any. */
export type Condition = Partial<Record<Factor, string>>;

/** One entry of the server-side task list (sessions.tasks). Never sent to the client as is. */
export interface Task {
  seq: number;
  /** Manifest trial id. */
  trial: string;
  kind: TrialKind;
  feature: string;
  layer: string;
  basis: string;
  feature_index: number;
  reference_kind: ReferenceKind;
  /** order[i] = index in the manifest's assets.queries of the query shown at task-list position i. */
  order: [Bit, Bit];
  /** Image ids of the queries in task-list order. */
  query_images: [string, string];
  /** Task-list index of the query that matches the max side. */
  answer: Bit;
  /** Practice trials only: the practice round (0-based). Absent in task lists stored before rounds existed (= 0). */
  round?: number;
}

/** Responses per unit (feature × reference kind) and sessions per between-subject condition. */
export interface Load {
  units: Map<string, number>;
  conditions: Map<string, number>;
}

export interface Assignment {
  condition: Condition;
  /** conditionKey(condition): the canonical JSON stored in sessions.condition. */
  conditionKey: string;
  tasks: Task[];
}

type DesignPart = Pick<Study['design'], 'trials_per_participant' | 'catch_trials' | 'practice_trials' | 'within' | 'between'> &
  Partial<Pick<Study['design'], 'practice_criterion' | 'practice_rounds' | 'order'>>;

/** Practice rounds in a task list: design.practice_rounds with a practice criterion, else 1. */
export const practiceRoundsOf = (design: DesignPart): number =>
  design.practice_criterion === undefined || design.practice_trials === 0 ? 1 : Math.max(1, design.practice_rounds ?? 1);

/** What assignment needs from a study and its manifest, checked once when the study is loaded. */
export interface Plan {
  design: DesignPart;
  features: Map<string, ManifestFeature>;
  /** Every condition that has main trials, in canonical order. */
  conditions: { condition: Condition; key: string; main: ManifestTrial[] }[];
  catch: ManifestTrial[];
  practice: ManifestTrial[];
  /** Dedicated example trials (kind `example`), by id. */
  example: ManifestTrial[];
}

export const unitKey = (feature: string, referenceKind: string): string => `${feature}#${referenceKind}`;

/** Canonical JSON of a condition: factors in schema order. */
export function conditionKey(condition: Condition): string {
  const out: Record<string, string> = {};
  for (const f of FACTORS) if (condition[f] !== undefined) out[f] = condition[f]!;
  return JSON.stringify(out);
}

export function emptyLoad(): Load {
  return { units: new Map(), conditions: new Map() };
}

// ─── Plan: checked once per study ──────────────────────────────────────────────────────────
function levelOf(factor: Factor, trial: ManifestTrial, feature: ManifestFeature): string {
  return factor === 'layer' ? feature.layer : factor === 'basis' ? feature.basis : trial.reference_kind;
}

export function makePlan(design: DesignPart, manifest: Pick<Manifest, 'features' | 'trials'>): Plan {
  const features = new Map(manifest.features.map((f) => [f.id, f]));
  const problems: string[] = [];
  for (const t of manifest.trials) {
    if (!features.has(t.feature)) problems.push(`trial "${t.id}" refers to feature "${t.feature}", which is not in the manifest's features`);
  }
  if (problems.length) throw new LegibleError(`manifest: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`);

  const byKind = (kind: TrialKind) => manifest.trials.filter((t) => t.kind === kind).sort((a, b) => cmp(a.id, b.id));
  const main = byKind('main');
  // Conditions: every combination of the between factors' levels that has main trials.
  const groups = new Map<string, { condition: Condition; key: string; main: ManifestTrial[] }>();
  for (const t of main) {
    const condition: Condition = {};
    for (const f of design.between) condition[f] = levelOf(f, t, features.get(t.feature)!);
    const key = conditionKey(condition);
    if (!groups.has(key)) groups.set(key, { condition, key, main: [] });
    groups.get(key)!.main.push(t);
  }
  const conditions = [...groups.values()].sort((a, b) => cmp(a.key, b.key));
  const need = (n: number, have: number, what: string, fix: string) => {
    if (have < n) problems.push(`design asks for ${n} ${what} per participant but the manifest has ${have}: ${fix}`);
  };
  if (conditions.length === 0) need(design.trials_per_participant, 0, 'main trials', 'rebuild the stimuli (legible stimuli <study>)');
  for (const c of conditions) {
    const where = design.between.length ? ` in condition ${c.key}` : '';
    need(design.trials_per_participant, c.main.length, `main trials${where}`, 'lower design.trials_per_participant or select more features');
  }
  const catchTrials = byKind('catch');
  const practice = byKind('practice');
  need(design.catch_trials, catchTrials.length, 'catch trials', 'lower design.catch_trials or rebuild the stimuli');
  need(design.practice_trials, practice.length, 'practice trials', 'lower design.practice_trials or rebuild the stimuli');
  if (problems.length) throw new LegibleError(problems.join('; '));
  return { design, features, conditions, catch: catchTrials, practice, example: byKind('example') };
}

// ─── Assignment ────────────────────────────────────────────────────────────────────────────
/** A unit (feature × reference kind) of a condition's main trials, as assignment goes through it. */
interface UnitBase {
  key: string;
  feature: string;
  /** Numbers of the unit's feature and within-subject cell (indexes into per-participant counts). */
  featureNo: number;
  cellNo: number;
  cell: string;
  /** The unit's trials in the plan's order (by id). */
  trials: ManifestTrial[];
}
interface Unit extends UnitBase {
  taken: number;
  load: number;
  tie: number;
}

/** Units of a condition, sorted by key: computed once per plan and condition, not per session. */
const unitCache = new WeakMap<Plan['conditions'][number], UnitBase[]>();
function unitsOf(plan: Plan, condition: Plan['conditions'][number]): UnitBase[] {
  let list = unitCache.get(condition);
  if (list) return list;
  const units = new Map<string, UnitBase>();
  const featureNos = new Map<string, number>();
  const cellNos = new Map<string, number>();
  for (const t of condition.main) {
    const key = unitKey(t.feature, t.reference_kind);
    let u = units.get(key);
    if (!u) {
      const feature = plan.features.get(t.feature)!;
      const cell = plan.design.within.map((f) => levelOf(f, t, feature)).join('|');
      if (!featureNos.has(t.feature)) featureNos.set(t.feature, featureNos.size);
      if (!cellNos.has(cell)) cellNos.set(cell, cellNos.size);
      u = { key, feature: t.feature, featureNo: featureNos.get(t.feature)!, cellNo: cellNos.get(cell)!, cell, trials: [] };
      units.set(key, u);
    }
    u.trials.push(t);
  }
  list = [...units.values()].sort((a, b) => cmp(a.key, b.key));
  unitCache.set(condition, list);
  return list;
}

export function assignTasks(plan: Plan, seed: number, load: Load): Assignment {
  const r = rng(seed);
  const random = () => r.next();
  const { design, features } = plan;

  // 1. Between-subject condition: fewest sessions, ties by seed.
  const least = Math.min(...plan.conditions.map((c) => load.conditions.get(c.key) ?? 0));
  const tied = plan.conditions.filter((c) => (load.conditions.get(c.key) ?? 0) === least);
  const chosen = tied[Math.floor(random() * tied.length)];

  // 2. Main trials: greedy over units (their keys, cells and trials worked out once per plan and
  //    condition; the trial lists copied, as they are shuffled per participant).
  const unitList = unitsOf(plan, chosen).map(
    (u): Unit => ({ key: u.key, feature: u.feature, featureNo: u.featureNo, cellNo: u.cellNo, cell: u.cell, trials: u.trials.slice(), taken: 0, load: load.units.get(u.key) ?? 0, tie: 0 }),
  );
  for (const u of unitList) {
    u.tie = random();
    r.shuffle(u.trials);
  }
  const featureUse = new Array<number>(unitList.length).fill(0);
  const cellUse = new Array<number>(unitList.length).fill(0);
  const main: ManifestTrial[] = [];
  for (let i = 0; i < design.trials_per_participant; i++) {
    // The unit with the least (feature use, load, cell use, tie), compared in that order. Written
    // out rather than as rank arrays: this loop runs units × trials times for every new session.
    let best: Unit | undefined;
    let bf = 0;
    let bl = 0;
    let bc = 0;
    for (const u of unitList) {
      if (u.taken >= u.trials.length) continue;
      const f = featureUse[u.featureNo];
      if (best) {
        if (f !== bf) {
          if (f > bf) continue;
        } else if (u.load !== bl) {
          if (u.load > bl) continue;
        } else {
          const c = cellUse[u.cellNo];
          if (c !== bc) {
            if (c > bc) continue;
          } else if (!(u.tie < best.tie)) continue;
        }
      }
      best = u;
      bf = f;
      bl = u.load;
      bc = cellUse[u.cellNo];
    }
    if (!best) throw new LegibleError('not enough main trials for this participant (the study plan should have caught this)');
    main.push(best.trials[best.taken++]);
    best.load++;
    featureUse[best.featureNo]++;
    cellUse[best.cellNo]++;
  }
  const usedFeatures = new Set<string>();
  for (const u of unitList) if (u.taken > 0) usedFeatures.add(u.feature);

  // 3. Catch and practice trials: prefer the participant's condition, then features not among
  //    their main trials, then the seed.
  const inCondition = (t: ManifestTrial) => design.between.every((f) => levelOf(f, t, features.get(t.feature)!) === chosen.condition[f]);
  const pick = (pool: ManifestTrial[], n: number, extra: (t: ManifestTrial) => number) =>
    pool
      .map((t) => ({ t, rank: [inCondition(t) ? 0 : 1, extra(t), random()] }))
      .sort((a, b) => (lexLess(a.rank, b.rank) ? -1 : lexLess(b.rank, a.rank) ? 1 : 0))
      .slice(0, n)
      .map((x) => x.t);
  const catchTrials = pick(plan.catch, design.catch_trials, (t) => (usedFeatures.has(t.feature) ? 1 : 0));
  const practice = pick(plan.practice, design.practice_trials, (t) => (usedFeatures.has(t.feature) ? 1 : 0));

  // 4. Order: practice first (once per round), then main and catch trials (shuffled, or main in
  //    Latin-square blocks with the catch trials at seeded places); each trial's queries in seeded
  //    order (drawn anew for every round of practice).
  let rest: ManifestTrial[];
  if (design.order === 'latin_square') {
    const cellOf = (t: ManifestTrial) => design.within.map((f) => levelOf(f, t, features.get(t.feature)!)).join('|');
    const cells = [...new Set(main.map(cellOf))].sort(cmp);
    const row = latinSquareRow(cells.length, load.conditions.get(chosen.key) ?? 0);
    rest = row.flatMap((c) => r.shuffle(main.filter((t) => cellOf(t) === cells[c])));
    for (const t of catchTrials) rest.splice(Math.floor(random() * (rest.length + 1)), 0, t);
  } else {
    rest = [...main, ...catchTrials];
    r.shuffle(rest);
  }
  const rounds = practiceRoundsOf(design);
  const practiceRounds = Array.from({ length: rounds }, (_, round) => practice.map((t) => ({ t, round })));
  const tasks = [...practiceRounds.flat(), ...rest.map((t) => ({ t, round: undefined }))].map(({ t, round }, seq): Task => {
    const flip = random() < 0.5;
    const order: [Bit, Bit] = flip ? [1, 0] : [0, 1];
    const f = features.get(t.feature)!;
    const task: Task = {
      seq,
      trial: t.id,
      kind: t.kind,
      feature: t.feature,
      layer: f.layer,
      basis: f.basis,
      feature_index: f.index,
      reference_kind: t.reference_kind,
      order,
      query_images: [t.query_images[order[0]], t.query_images[order[1]]],
      answer: order[0] === t.answer ? 0 : 1,
    };
    if (round !== undefined) task.round = round;
    return task;
  });
  return { condition: chosen.condition, conditionKey: chosen.key, tasks };
}

/**
 * The annotated example for a task list: the first dedicated example trial (by id), else the first
 * practice trial of the pool, whose images (grids and queries) appear nowhere in the task list; null
 * when there is none. Depends only on the task list, so a resume gets the same.
 */
export function exampleFor(plan: Pick<Plan, 'example' | 'practice'>, tasks: Pick<Task, 'trial'>[], trials: Map<string, ManifestTrial>): ManifestTrial | null {
  const used = new Set<string>();
  for (const task of tasks) {
    const t = trials.get(task.trial);
    if (!t) continue;
    used.add(t.assets.min);
    used.add(t.assets.max);
    for (const q of t.assets.queries) used.add(q);
  }
  const fits = (t: ManifestTrial) => !used.has(t.assets.min) && !used.has(t.assets.max) && !t.assets.queries.some((a) => used.has(a));
  return plan.example.find(fits) ?? plan.practice.find(fits) ?? null;
}

// ─── Load: the reference definition (the database computes the same with SQL) ──────────────
export interface SessionSnapshot {
  status: 'active' | 'finished' | 'released';
  /** ISO time; the lease counts while now < lease_expires_at. */
  lease_expires_at: string;
  condition: string;
  tasks: Pick<Task, 'seq' | 'kind' | 'feature' | 'reference_kind'>[];
  answered: Iterable<number>;
}

export function isLeased(s: Pick<SessionSnapshot, 'status' | 'lease_expires_at'>, now: string): boolean {
  return s.status === 'active' && s.lease_expires_at > now;
}

/** Recorded main responses count always; unanswered main tasks only while leased; sessions count per condition while finished or leased. */
export function tallyLoad(sessions: Iterable<SessionSnapshot>, now: string): Load {
  const load = emptyLoad();
  const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  for (const s of sessions) {
    const leased = isLeased(s, now);
    const answered = new Set(s.answered);
    if (leased || s.status === 'finished') bump(load.conditions, s.condition);
    for (const t of s.tasks) {
      if (t.kind !== 'main') continue;
      if (answered.has(t.seq) || leased) bump(load.units, unitKey(t.feature, t.reference_kind));
    }
  }
  return load;
}

/**
 * Row `p` of a balanced Latin square of order n (Williams, 1949): the first row is 0, 1, n−1, 2,
 * n−2, …, row i adds i to every entry (mod n). For even n these n rows put every cell in every
 * position once and every cell right after every other once; for odd n the mirrored rows n … 2n−1
 * complete the balance (each ordered pair twice over 2n rows). p wraps around.
 */
export function latinSquareRow(n: number, p: number): number[] {
  if (n <= 1) return n === 1 ? [0] : [];
  const first = Array.from({ length: n }, (_, j) => (j === 0 ? 0 : j % 2 === 1 ? (j + 1) / 2 : n - j / 2));
  const rows = n % 2 === 0 ? n : 2 * n;
  const i = p % rows;
  const row = first.map((c) => (c + (i % n)) % n);
  return i < n ? row : row.reverse();
}

function lexLess(a: number[], b: number[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] < b[i];
  return false;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
