// Human answers for the explorer: per feature and per trial, accuracy (with a participant-level
// bootstrap interval: participants are resampled, so one participant's many trials count once),
// mean confidence and median response time. From the server's SQLite database or from a trials
// file that `legible export` wrote (CSV or JSON lines).
import { existsSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import Database from 'better-sqlite3';
import { LegibleError, rng, seedFrom } from '@legible/studies';
import { parseCsvRecords } from '@legible/analysis';

export interface Answer {
  participant: string;
  feature: string;
  trial: string;
  kind: string;
  mode: string;
  correct: boolean;
  confidence: number | null;
  rt_ms: number | null;
}

export interface HumanSummary {
  trials: number;
  participants: number;
  accuracy: number;
  /** 95 % percentile interval of the accuracy over participants resampled with replacement. */
  ci: [number, number] | null;
  mean_confidence: number | null;
  median_rt_ms: number | null;
}

/** Main-trial answers of `study` from a database or an export file. */
export function readAnswers(source: string, study: string): Answer[] {
  if (!existsSync(source)) throw new LegibleError(`--data ${source}: no such file. Give the database \`legible serve\` writes (--db) or a trials.csv/.jsonl from \`legible export\`.`);
  const ext = extname(source).toLowerCase();
  if (ext === '.csv' || ext === '.jsonl') {
    const text = readFileSync(source, 'utf8');
    const records = ext === '.csv' ? parseCsvRecords(text) : text.split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const need of ['participant', 'feature', 'trial_id', 'kind', 'correct']) {
      if (records.length && !(need in records[0])) throw new LegibleError(`--data ${source} has no "${need}" column: give a trials file that \`legible export\` wrote.`);
    }
    return records
      .filter((r) => (r.study === undefined || r.study === '' || String(r.study) === study) && String(r.kind) === 'main')
      .map((r) => ({
        participant: String(r.participant),
        feature: String(r.feature),
        trial: String(r.trial_id),
        kind: String(r.kind),
        mode: String(r.mode ?? ''),
        correct: String(r.correct) === '1' || r.correct === true,
        confidence: num(r.confidence),
        rt_ms: num(r.rt_ms),
      }));
  }
  let db: Database.Database;
  try {
    db = new Database(source, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new LegibleError(`--data ${source}: not a SQLite database (${(err as Error).message}). Give the database \`legible serve\` writes, or a trials.csv/.jsonl from \`legible export\`.`);
  }
  try {
    const rows = db
      .prepare("SELECT participant, feature, trial_id, kind, mode, correct, confidence, rt_ms FROM trials WHERE study = ? AND kind = 'main' ORDER BY session_id, seq")
      .all(study) as { participant: string; feature: string; trial_id: string; kind: string; mode: string; correct: number; confidence: number | null; rt_ms: number | null }[];
    return rows.map((r) => ({ participant: r.participant, feature: r.feature, trial: r.trial_id, kind: r.kind, mode: r.mode, correct: r.correct === 1, confidence: r.confidence, rt_ms: r.rt_ms }));
  } catch (err) {
    throw new LegibleError(`--data ${source}: no trials table in it (${(err as Error).message}). Give the database \`legible serve\` writes.`);
  } finally {
    db.close();
  }
}

function num(v: unknown): number | null {
  if (v === null || v === undefined || v === '') return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

/**
 * Accuracy over the answers with a 95 % participant-level bootstrap interval: `draws` resamples
 * of the participants (with replacement), each taking all of a drawn participant's answers;
 * seeded by `key`, so the same data give the same interval.
 */
export function summarise(answers: readonly Answer[], key: string, draws = 2000): HumanSummary | null {
  if (answers.length === 0) return null;
  const byParticipant = new Map<string, { n: number; k: number }>();
  for (const a of answers) {
    const p = byParticipant.get(a.participant) ?? { n: 0, k: 0 };
    p.n++;
    if (a.correct) p.k++;
    byParticipant.set(a.participant, p);
  }
  const parts = [...byParticipant.values()];
  const correct = answers.filter((a) => a.correct).length;
  let ci: [number, number] | null = null;
  if (parts.length >= 2) {
    const r = rng(seedFrom('explorer-ci', 0, key));
    const stats = new Float64Array(draws);
    for (let d = 0; d < draws; d++) {
      let n = 0;
      let k = 0;
      for (let i = 0; i < parts.length; i++) {
        const p = parts[Math.floor(r.next() * parts.length)];
        n += p.n;
        k += p.k;
      }
      stats[d] = k / n;
    }
    stats.sort();
    ci = [stats[Math.floor(0.025 * (draws - 1))], stats[Math.ceil(0.975 * (draws - 1))]];
  }
  const conf = answers.map((a) => a.confidence).filter((c): c is number => c !== null);
  const rts = answers.map((a) => a.rt_ms).filter((c): c is number => c !== null).sort((a, b) => a - b);
  return {
    trials: answers.length,
    participants: parts.length,
    accuracy: correct / answers.length,
    ci,
    mean_confidence: conf.length ? conf.reduce((a, b) => a + b, 0) / conf.length : null,
    median_rt_ms: rts.length ? (rts[(rts.length - 1) >> 1] + rts[rts.length >> 1]) / 2 : null,
  };
}
