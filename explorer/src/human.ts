// Human answers for the explorer: per feature and per trial, accuracy (with a participant-level
// bootstrap interval: participants are resampled, so one participant's many trials count once),
// mean confidence and median response time. From the server's SQLite database or from a trials
// file that `legible export` wrote (CSV or JSON lines): one mode, the sessions the study's
// exclusion rules keep, simulated data (`legible pilot`) flagged and never mixed with real data.
import { existsSync, readFileSync } from 'node:fs';
import { extname } from 'node:path';
import Database from 'better-sqlite3';
import { LegibleError, rng, seedFrom } from '@legible/studies';
import { loadLegibleExport, parseCsvRecords, participantRows, sessionsOfMode, type ExclusionConfig } from '@legible/analysis';

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

/** The answers the explorer shows, and what they are. */
export interface HumanData {
  answers: Answer[];
  /** From simulated participants (`legible pilot`): every figure is labelled so. */
  simulated: boolean;
  /** The mode whose sessions are shown: `live` when the data has any, else `all` (or as asked). */
  mode: string;
  /** Sessions of that mode, and how many of them the study's exclusion rules remove. */
  sessions: number;
  excluded: number;
}

export interface ReadOptions {
  /** The study's exclusion rules (study.exclusions), applied as `legible analyze` applies them. */
  rules: ExclusionConfig;
  /** `live`, `pilot` or `all`; default: `live` when the data has live sessions, else `all`. */
  mode?: string;
  includeIncomplete?: boolean;
}

const isTrue = (v: unknown) => v === true || v === 1 || v === '1' || v === 'true';

/**
 * Main-trial answers of `study` from a database or an export file: of one mode only (as
 * `legible analyze`: live when there is live data), of the sessions the study's exclusion rules
 * keep (analysis's `decide` on the same fact sheets as participants.csv). Simulated data
 * (`legible pilot`) is flagged; a file that mixes simulated and real rows is refused.
 */
export function readAnswers(source: string, study: string, opts: ReadOptions): HumanData {
  if (!existsSync(source)) throw new LegibleError(`--data ${source}: no such file. Give the database \`legible serve\` writes (--db) or a trials.csv/.jsonl from \`legible export\`.`);
  if (opts.mode !== undefined && !['live', 'pilot', 'all'].includes(opts.mode)) throw new LegibleError(`--mode ${opts.mode}: give live, pilot or all.`);
  const ext = extname(source).toLowerCase();
  const pickMode = (modes: Set<string>) => opts.mode ?? (modes.has('live') ? 'live' : 'all');
  if (ext === '.csv' || ext === '.jsonl') {
    const text = readFileSync(source, 'utf8');
    const first = ext === '.csv' ? parseCsvRecords(text.split('\n').slice(0, 2).join('\n'))[0] : text.split('\n').filter((l) => l.trim()).slice(0, 1).map((l) => JSON.parse(l) as Record<string, unknown>)[0];
    for (const need of ['participant', 'feature', 'trial_id', 'kind', 'correct']) {
      if (first && !(need in first)) throw new LegibleError(`--data ${source} has no "${need}" column: give a trials file that \`legible export\` wrote.`);
    }
    // The analysis package's reader: trial rows, and the fact sheets (participants.csv beside the file, else from the rows).
    const data = loadLegibleExport(source, ['trial_id', 'simulated', 'study']);
    const t = data.trials;
    const col = (name: string) => t.column(name) ?? new Array<string>(t.n).fill('');
    const [studyCol, modeCol, sessionCol, kindCol, simCol] = ['study', 'mode', 'session', 'kind', 'simulated'].map(col);
    const ofStudy = (i: number) => studyCol[i] === '' || studyCol[i] === study;
    let simulatedRows = 0;
    let rows = 0;
    for (let i = 0; i < t.n; i++) {
      if (!ofStudy(i)) continue;
      rows++;
      if (isTrue(simCol[i])) simulatedRows++;
    }
    if (simulatedRows > 0 && simulatedRows < rows) {
      throw new LegibleError(
        `--data ${source}: ${simulatedRows} of ${rows} rows of study ${study} come from simulated participants (\`legible pilot\`, column simulated = 1) and the others from real ones: the explorer never shows the two together. Give the export of one database.`,
      );
    }
    // The mode and the kept sessions as `legible analyze` decides them.
    const { mode, decisions, kept } = sessionsOfMode({ n: t.n, mode: modeCol, session: sessionCol }, data.participants, opts.rules, { mode: opts.mode, includeIncomplete: opts.includeIncomplete, include: ofStudy });
    const [participant, feature, trial, correct, confidence, rt] = ['participant', 'feature', 'trial_id', 'correct', 'confidence', 'rt_ms'].map(col);
    const answers: Answer[] = [];
    for (let i = 0; i < t.n; i++) {
      if (!ofStudy(i) || kindCol[i] !== 'main' || !kept.has(sessionCol[i]) || (mode !== 'all' && modeCol[i] !== mode)) continue;
      answers.push({ participant: participant[i], feature: feature[i], trial: trial[i], kind: kindCol[i], mode: modeCol[i], correct: isTrue(correct[i]), confidence: num(confidence[i]), rt_ms: num(rt[i]) });
    }
    return { answers, simulated: simulatedRows > 0, mode, sessions: decisions.length, excluded: decisions.length - kept.size };
  }
  let db: Database.Database;
  try {
    db = new Database(source, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new LegibleError(`--data ${source}: not a SQLite database (${(err as Error).message}). Give the database \`legible serve\` writes, or a trials.csv/.jsonl from \`legible export\`.`);
  }
  try {
    let rows: { session_id: string; participant: string; feature: string; trial_id: string; kind: string; mode: string; correct: number; confidence: number | null; rt_ms: number | null }[];
    try {
      rows = db
        .prepare("SELECT session_id, participant, feature, trial_id, kind, mode, correct, confidence, rt_ms FROM trials WHERE study = ? AND kind = 'main' ORDER BY session_id, seq")
        .all(study) as typeof rows;
    } catch (err) {
      throw new LegibleError(`--data ${source}: no trials table in it (${(err as Error).message}). Give the database \`legible serve\` writes.`);
    }
    // The sessions and their exclusion decisions exactly as participants.csv and the dashboard have them.
    const sessions = [...participantRows(db, study, opts.rules, { includeIncomplete: opts.includeIncomplete })];
    const mode = pickMode(new Set(sessions.map((s) => s.row.mode).filter(Boolean)));
    const inMode = sessions.filter((s) => mode === 'all' || s.row.mode === mode);
    const kept = new Set(inMode.filter((s) => !s.decision!.excluded).map((s) => s.row.session));
    let simulated = false;
    try {
      simulated = db.prepare("SELECT 1 FROM meta WHERE key = 'simulated'").get() !== undefined;
    } catch {
      simulated = false; // a database from before the meta table: real participants
    }
    const answers = rows
      .filter((r) => kept.has(r.session_id) && (mode === 'all' || r.mode === mode))
      .map((r) => ({ participant: r.participant, feature: r.feature, trial: r.trial_id, kind: r.kind, mode: r.mode, correct: r.correct === 1, confidence: r.confidence, rt_ms: r.rt_ms }));
    return { answers, simulated, mode, sessions: inMode.length, excluded: inMode.length - kept.size };
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
