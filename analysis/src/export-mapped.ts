// `legible export FILE --mapping MAP`: another tool's trial file, read through its mapping, written
// as the same tidy tables a legible database exports — trials.csv with legible's columns (those the
// source lacks are empty), participants.csv with the session facts and exclusion flags, the data
// dictionary and datapackage.json — so imported and collected data have one format.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRIAL_COLUMNS } from './columns.ts';
import { csvCell } from './csv.ts';
import { dataDictionary, dataPackage, type ExportResult } from './export.ts';
import { countSessions, decide, defaultExclusions, ExclusionTally, type ExclusionConfig, type ExclusionDecision } from './exclusions.ts';
import { loadMapped, type Mapping } from './mapping.ts';
import { PARTICIPANT_COLUMNS, type ParticipantRow } from './participants.ts';
import { median } from './stats/descriptive.ts';

export interface MappedExportOptions {
  /** Exclusion rules when the mapping has none (a study file's). */
  exclusions?: ExclusionConfig | null;
  /** The study id to write in the `study` column. */
  study?: string;
}

export function exportMapped(outDir: string, input: string, mapping: Mapping, opts: MappedExportOptions = {}): ExportResult {
  const data = loadMapped(input, mapping);
  const t = data.trials;
  const rules = data.exclusions ?? opts.exclusions ?? defaultExclusions();
  mkdirSync(outDir, { recursive: true });
  const names = { trials: 'trials.csv', participants: 'participants.csv' };

  // Trials: legible's columns in legible's order, then condition factors legible has no column for.
  const known = new Set(TRIAL_COLUMNS.map((c) => c.name));
  const extra = data.factors.filter((f) => !known.has(f));
  const get = (name: string) => (t.has(name) ? t.column(name)! : null);
  const kind = t.column('kind')!;
  const session = t.column('session')!;
  const seqOf = new Map<string, number>();
  const seq = session.map((s) => {
    const n = seqOf.get(s) ?? 0;
    seqOf.set(s, n + 1);
    return String(n);
  });
  const derived: Record<string, string[]> = {
    study: new Array<string>(t.n).fill(opts.study ?? data.study ?? ''),
    seq,
    is_catch: kind.map((k) => (k === 'catch' ? '1' : '0')),
    is_practice: kind.map((k) => (k === 'practice' ? '1' : '0')),
  };
  const columns = [...TRIAL_COLUMNS.map((c) => ({ name: c.name, type: c.type })), ...extra.map((name) => ({ name, type: 'text' as const }))];
  const values = columns.map((c) => derived[c.name] ?? get(c.name));
  const lines = [columns.map((c) => c.name).join(',')];
  for (let i = 0; i < t.n; i++) lines.push(columns.map((c, j) => csvCell(values[j] ? values[j]![i] : null, c.type)).join(','));
  writeFileSync(join(outDir, names.trials), `${lines.join('\n')}\n`);

  // Participants: the facts the mapping gives, the rest empty; the same exclusion columns.
  const per = new Map<string, { main: number; mainK: number; practice: number; practiceK: number; rts: number[]; conf: number[] }>();
  const correct = t.numbers('correct');
  const rt = t.numbers('rt_ms');
  const conf = t.numbers('confidence');
  for (let i = 0; i < t.n; i++) {
    const p = per.get(session[i]) ?? { main: 0, mainK: 0, practice: 0, practiceK: 0, rts: [], conf: [] };
    if (kind[i] === 'main') {
      p.main++;
      p.mainK += correct[i] === 1 ? 1 : 0;
      if (Number.isFinite(rt[i])) p.rts.push(rt[i]);
      if (Number.isFinite(conf[i])) p.conf.push(conf[i]);
    } else if (kind[i] === 'practice') {
      p.practice++;
      p.practiceK += correct[i] === 1 ? 1 : 0;
    }
    per.set(session[i], p);
  }
  const tally = new ExclusionTally(rules);
  const byMode = new Map<string, { decision: ExclusionDecision; mainTrials: number }[]>();
  const plines = [PARTICIPANT_COLUMNS.map((c) => c.name).join(',')];
  for (const f of data.participants) {
    const p = per.get(f.session)!;
    const row: ParticipantRow = {
      ...f,
      study: opts.study ?? data.study ?? '',
      mode: f.mode ?? 'imported',
      condition: '',
      seed: null,
      status: '',
      outcome: '',
      started_at: null,
      finished_at: null,
      last_answer_at: null,
      main_trials: p.main,
      main_correct: p.mainK,
      practice_trials: p.practice,
      practice_correct: p.practiceK,
      practice_rounds: null,
      median_rt_ms: p.rts.length ? median(p.rts) : null,
      mean_confidence: p.conf.length ? p.conf.reduce((a, b) => a + b, 0) / p.conf.length : null,
      window_w: null,
      window_h: null,
      screen_w: null,
      screen_h: null,
      screen_class: '',
      dpr: null,
      input: '',
      browser: '',
      os: '',
      vsync_hz: null,
      user_agent: '',
      blur_events: null,
      fullscreen_exits: null,
      preload_failures: null,
      unsynced_end: null,
    };
    const d = decide(f, rules);
    tally.add(d);
    const list = byMode.get(row.mode) ?? [];
    list.push({ decision: d, mainTrials: p.main });
    byMode.set(row.mode, list);
    plines.push(PARTICIPANT_COLUMNS.map((c) => csvCell(c.value(row, d), c.type)).join(','));
  }
  writeFileSync(join(outDir, names.participants), `${plines.join('\n')}\n`);

  const extraDescribed = extra.map((name) => ({ name, type: 'text' as const, description: `Condition factor \`${name}\` from the import mapping.` }));
  const dict = dataDictionary('csv', names).replace(
    'Written by `legible export`.',
    `Written by \`legible export --mapping\` from ${data.source}: columns the source file does not have are empty.${extra.length ? ` Condition factors from the mapping follow legible's columns: ${extra.join(', ')}.` : ''}`,
  );
  writeFileSync(join(outDir, 'data-dictionary.md'), dict);
  writeFileSync(join(outDir, 'datapackage.json'), `${JSON.stringify(dataPackage(names, extraDescribed), null, 2)}\n`);
  return {
    rows: t.n,
    participants: data.participants.length,
    files: [join(outDir, names.trials), join(outDir, names.participants), join(outDir, 'data-dictionary.md'), join(outDir, 'datapackage.json')],
    exclusions: tally.summary(),
    counts: [...byMode].map(([mode, list]) => countSessions(mode, list)),
  };
}
