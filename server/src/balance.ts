// The load that balances assignment, kept up to date in memory. LegibleDb.load computes it from
// the database (its definition is tallyLoad in assign.ts), but that costs a pass over every leased
// session's task list — per new session, so O(N²) when N participants start together. This
// tracker starts from that SQL load and follows the events that change it:
//
//   a session is created      → its main trials count as leased, its condition as taken
//   a main trial is recorded  → counted as recorded (no longer as leased)
//   a session finishes        → no longer leased; its condition counts as finished
//   a lease expires (now ≥ lease_expires_at) → its unanswered trials and its condition stop counting
//
// It is rebuilt from the database every `resyncMs` (changes made by other processes, such as
// `legible withdraw`, are seen then), and test/balance.test.ts checks it against LegibleDb.load.
import { unitKey, type Load, type Task } from './assign.ts';
import type { LegibleDb, Mode } from './db.ts';

interface Leased {
  condition: string;
  expires: string;
  /** seq → unit of the main trials not yet recorded. */
  unanswered: Map<number, string>;
}

class StudyLoad {
  /** Recorded main responses per unit (every session). */
  readonly recorded = new Map<string, number>();
  /** Unrecorded main trials of leased sessions per unit. */
  readonly pending = new Map<string, number>();
  readonly leased = new Map<string, Leased>();
  /** Finished sessions per condition. */
  readonly finished = new Map<string, number>();
  /** Leased sessions per condition. */
  readonly leasedConditions = new Map<string, number>();
  /** Leased session ids by expiry time, ascending. */
  private readonly expiries: { at: string; id: string }[] = [];

  constructor(readonly builtAt: number) {}

  lease(id: string, condition: string, expires: string, unanswered: Map<number, string>): void {
    this.leased.set(id, { condition, expires, unanswered });
    for (const unit of unanswered.values()) bump(this.pending, unit, 1);
    bump(this.leasedConditions, condition, 1);
    // Leases are nearly always created in expiry order: insert from the end.
    let i = this.expiries.length;
    while (i > 0 && this.expiries[i - 1].at > expires) i--;
    this.expiries.splice(i, 0, { at: expires, id });
  }

  unlease(id: string): Leased | undefined {
    const l = this.leased.get(id);
    if (!l) return undefined;
    this.leased.delete(id);
    for (const unit of l.unanswered.values()) bump(this.pending, unit, -1);
    bump(this.leasedConditions, l.condition, -1);
    return l;
  }

  expire(now: string): void {
    let n = 0;
    while (n < this.expiries.length && this.expiries[n].at <= now) {
      const { id, at } = this.expiries[n++];
      if (this.leased.get(id)?.expires === at) this.unlease(id);
    }
    if (n) this.expiries.splice(0, n);
  }

  load(now: string): Load {
    this.expire(now);
    const units = new Map(this.recorded);
    for (const [u, n] of this.pending) if (n) bump(units, u, n);
    const conditions = new Map(this.finished);
    for (const [c, n] of this.leasedConditions) if (n) bump(conditions, c, n);
    for (const [k, v] of units) if (v === 0) units.delete(k);
    for (const [k, v] of conditions) if (v === 0) conditions.delete(k);
    return { units, conditions };
  }
}

function bump(m: Map<string, number>, k: string, by: number): void {
  m.set(k, (m.get(k) ?? 0) + by);
}

const mainUnits = (tasks: readonly Task[], answered: Set<number>): Map<number, string> => {
  const out = new Map<number, string>();
  for (const t of tasks) if (t.kind === 'main' && !answered.has(t.seq)) out.set(t.seq, unitKey(t.feature, t.reference_kind));
  return out;
};

export class LoadTracker {
  private readonly studies = new Map<string, StudyLoad>();

  constructor(
    private readonly db: LegibleDb,
    /** Rebuild from the database after this long (real time, ms). */
    private readonly resyncMs = 60_000,
    private readonly clock: () => number = Date.now,
  ) {}

  private key(study: string, mode: Mode): string {
    return `${study}\0${mode}`;
  }

  /** The study's load at `now` (ISO time), as LegibleDb.load(study, mode, now) would compute it. */
  load(study: string, mode: Mode, now: string): Load {
    return this.get(study, mode, now).load(now);
  }

  private get(study: string, mode: Mode, now: string): StudyLoad {
    const key = this.key(study, mode);
    let s = this.studies.get(key);
    if (!s || this.clock() - s.builtAt >= this.resyncMs) {
      s = this.build(study, mode, now);
      this.studies.set(key, s);
    }
    return s;
  }

  private build(study: string, mode: Mode, now: string): StudyLoad {
    const s = new StudyLoad(this.clock());
    for (const r of this.db.recordedLoad(study, mode)) s.recorded.set(unitKey(r.feature, r.reference_kind), r.n);
    for (const r of this.db.finishedConditions(study, mode)) s.finished.set(r.condition, r.n);
    for (const l of this.db.leasedSessions(study, mode, now)) {
      const tasks = this.db.tasks(l.id) ?? [];
      s.lease(l.id, l.condition, l.lease_expires_at, mainUnits(tasks, new Set(JSON.parse(l.answered) as number[])));
    }
    return s;
  }

  /** A new session (counted as soon as it is assigned, before its commit; see discard). */
  created(study: string, mode: Mode, id: string, condition: string, expires: string, tasks: readonly Task[]): void {
    const s = this.studies.get(this.key(study, mode));
    if (s) s.lease(id, condition, expires, mainUnits(tasks, new Set()));
  }

  /** A session counted by `created` that was not written after all. */
  discard(study: string, mode: Mode, id: string): void {
    this.studies.get(this.key(study, mode))?.unlease(id);
  }

  /** A main trial recorded for the first time (committed). */
  recorded(study: string, mode: Mode, id: string, task: Pick<Task, 'seq' | 'feature' | 'reference_kind'>): void {
    const s = this.studies.get(this.key(study, mode));
    if (!s) return;
    const unit = unitKey(task.feature, task.reference_kind);
    bump(s.recorded, unit, 1);
    const l = s.leased.get(id);
    if (l?.unanswered.delete(task.seq)) bump(s.pending, unit, -1);
  }

  /** A session finished (committed). */
  finished(study: string, mode: Mode, id: string, condition: string): void {
    const s = this.studies.get(this.key(study, mode));
    if (!s) return;
    s.unlease(id);
    bump(s.finished, condition, 1);
  }
}
