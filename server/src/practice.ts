// Practice rounds: which of a session's practice rounds count, decided from its recorded practice
// answers alone. Pure, so the database path, the preview path and the tests share one definition.
//
//   Round r is complete when all of its trials are recorded. Going through the rounds in order:
//   a complete round passes when correct / total ≥ the criterion (always, without a criterion);
//   practice is over after the first round that passes, or after the last round. Rounds after
//   that one are skipped: their seqs are no longer required, resume_at passes over them, and a
//   new answer to one of them is refused (409). An incomplete round leaves practice undecided
//   (and every later round still required).
//
// The round's summary (TrialAck.feedback.round) goes with the acknowledgement of the trial whose
// answer completed the round — the round's last seq when answers come in order, as the client
// sends them. "Completed" is fixed by the recording order, so a replay gets the same ack.
import type { Task } from './assign.ts';

/** One recorded practice answer; `order` increases with the time it was recorded (rowid). */
export interface PracticeAnswer {
  seq: number;
  correct: boolean;
  order: number;
}

export interface RoundSummary {
  round: number;
  correct: number;
  total: number;
  passed: boolean;
  practice_over: boolean;
}

export interface PracticeState {
  /** Complete rounds that count, in order, each with the seq whose answer completed it. */
  rounds: (RoundSummary & { completedBy: number })[];
  over: boolean;
  /** Once over: whether the last counted round passed (null without a criterion); null while undecided. */
  passed: boolean | null;
  /** Rounds counted (complete and not skipped). */
  roundsUsed: number;
  /** Seqs of the practice rounds after the one that ended practice. */
  skipped: Set<number>;
}

/** A session's practice seqs per round, in task-list order. */
export function practiceLayout(tasks: readonly Task[]): number[][] {
  const rounds: number[][] = [];
  for (const t of tasks) {
    if (t.kind !== 'practice') continue;
    const r = t.round ?? 0;
    (rounds[r] ??= []).push(t.seq);
  }
  return rounds.filter((r) => r !== undefined);
}

/** Whether a session's task list needs practice bookkeeping at all (it has practice trials). */
export const hasPractice = (tasks: readonly Task[]): boolean => tasks.length > 0 && tasks[0].kind === 'practice';

export function practiceState(tasks: readonly Task[], criterion: number | null, answers: Iterable<PracticeAnswer>): PracticeState {
  const layout = practiceLayout(tasks);
  const bySeq = new Map<number, PracticeAnswer>();
  for (const a of answers) bySeq.set(a.seq, a);
  const state: PracticeState = { rounds: [], over: false, passed: null, roundsUsed: 0, skipped: new Set() };
  if (layout.length === 0) return state;
  for (let r = 0; r < layout.length; r++) {
    const seqs = layout[r];
    const recorded = seqs.map((s) => bySeq.get(s));
    if (recorded.some((a) => a === undefined)) return state; // undecided
    const correct = recorded.filter((a) => a!.correct).length;
    const total = seqs.length;
    const passed = criterion === null ? true : correct / total >= criterion - 1e-12;
    const last = r === layout.length - 1;
    const over = passed || last;
    let completedBy = recorded[0]!;
    for (const a of recorded) if (a!.order > completedBy.order) completedBy = a!;
    state.rounds.push({ round: r, correct, total, passed, practice_over: over, completedBy: completedBy.seq });
    state.roundsUsed = r + 1;
    if (over) {
      state.over = true;
      state.passed = criterion === null ? null : passed;
      for (const later of layout.slice(r + 1)) for (const s of later) state.skipped.add(s);
      return state;
    }
  }
  return state;
}

/** The round summary that goes with the ack of `seq`, if its answer completed a counted round. */
export function roundSummaryFor(state: PracticeState, seq: number): RoundSummary | undefined {
  const r = state.rounds.find((x) => x.completedBy === seq);
  if (!r) return undefined;
  return { round: r.round, correct: r.correct, total: r.total, passed: r.passed, practice_over: r.practice_over };
}
