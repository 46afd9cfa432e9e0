// The crash test: `node --import tsx server/bench/crash.ts [--participants 200] [--trials 40] [--kills 10]`
//
// Simulated participants answer over HTTP while the server process is killed with SIGKILL at
// random moments and restarted on the same database and port; the clients retry (network errors,
// 5xx, 429) as the real client's outbox does. Afterwards the database must hold every
// acknowledged answer exactly as acknowledged, nothing twice, and a finished, complete session
// for every participant.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { rng } from '@legible/studies';
import { makeFixture } from '../test/fixture.ts';
import { runLoad, type Acked } from './loadgen.ts';
import { spawnServe, type Spawned } from './spawn.ts';

export interface CrashReport {
  participants: number;
  kills: number;
  acked: number;
  stored: number;
  finished: number;
  retries: number;
  /** Answers acknowledged only after a retry, and of those, the ones an earlier, unacknowledged attempt had already recorded. */
  retriedAcks: number;
  recordedBeforeAck: number;
  seconds: number;
  /** Everything that is wrong; empty when the test passes. */
  problems: string[];
  statuses: Record<string, number>;
}

export async function runCrashTest(opts: { participants: number; trials: number; kills: number; seed?: number; thinkMs?: number; log?: (line: string) => void }): Promise<CrashReport> {
  const log = opts.log ?? (() => {});
  const r = rng(opts.seed ?? 1);
  const mainTrials = opts.trials - 4;
  const fx = makeFixture({ mode: 'live', noModel: true, trialsPerParticipant: mainTrials, catchTrials: 2, practiceTrials: 2, mainPerFeature: Math.ceil(mainTrials / 8) });
  const db = join(fx.root, 'crash.db');
  const serveArgs = ['--limit-ip', '0', '--limit-create', '0', '--limit-session', '0'];
  const start = (port?: number) => spawnServe({ db, studiesDir: fx.studiesDir, study: 'fixture', port, args: serveArgs });
  let server: Spawned = await start();
  const port = Number(new URL(server.url).port);
  const started = performance.now();
  const acked: Acked[] = [];
  let done = false;
  let kills = 0;
  const problems: string[] = [];

  // Kill k of K comes once a random point of the k-th stretch of the answers has been acknowledged
  // (then a random 0–50 ms more), so that every kill lands while participants are answering.
  const total = opts.participants * opts.trials;
  const thresholds = Array.from({ length: opts.kills }, (_, k) => Math.floor(((k + 0.2 + 0.6 * r.next()) / (opts.kills + 1)) * total));
  const killer = (async () => {
    for (const threshold of thresholds) {
      while (acked.length < threshold && !done) await new Promise((res) => setTimeout(res, 5));
      if (done) break;
      await new Promise((res) => setTimeout(res, r.next() * 50));
      await server.kill9();
      kills++;
      log(`kill -9 #${kills} after ${acked.length} acknowledged answers`);
      await new Promise((res) => setTimeout(res, r.next() * 300));
      for (let attempt = 0; ; attempt++) {
        try {
          server = await start(port);
          break;
        } catch (e) {
          // The port can take a moment to be free again.
          if (attempt > 20) throw e;
          await new Promise((res) => setTimeout(res, 200));
        }
      }
    }
  })();

  const load = await runLoad({
    base: `http://127.0.0.1:${port}`,
    study: 'fixture',
    participants: opts.participants,
    thinkMs: opts.thinkMs ?? 10,
    retryUntil: Date.now() + 10 * 60_000,
    rampMs: 500,
    random: () => r.next(),
    onAck: (a) => acked.push(a),
  });
  done = true;
  await killer;
  if (kills < opts.kills) problems.push(`only ${kills} of ${opts.kills} kills happened before the participants finished: use more participants or trials`);
  const code = await server.stop();
  if (code !== 0) problems.push(`the last server did not stop cleanly (exit ${code})`);
  for (const e of load.errors) problems.push(`client: ${e}`);

  // Check the database against what the clients were told.
  const check = new Database(db, { readonly: true });
  try {
    const row = check.prepare('SELECT choice, confidence, server_time FROM trials WHERE session_id = ? AND seq = ?');
    for (const a of acked) {
      const t = row.get(a.session, a.seq) as { choice: number; confidence: number; server_time: string } | undefined;
      if (!t) problems.push(`acknowledged answer ${a.session}/${a.seq} is missing`);
      else if (t.choice !== a.choice || t.confidence !== a.confidence || t.server_time !== a.recorded_at) {
        problems.push(`answer ${a.session}/${a.seq} differs from its acknowledgement: ${JSON.stringify(t)} vs ${JSON.stringify(a)}`);
      }
    }
    const dupes = check.prepare('SELECT count(*) FROM (SELECT session_id, seq FROM trials GROUP BY session_id, seq HAVING count(*) > 1)').pluck().get() as number;
    if (dupes) problems.push(`${dupes} answers stored twice`);
    const sessions = check
      .prepare(
        `SELECT s.id, s.participant, s.status, s.n_trials, (SELECT count(*) FROM trials t WHERE t.session_id = s.id) AS answered
         FROM sessions s WHERE s.study = 'fixture'`,
      )
      .all() as { id: string; participant: string; status: string; n_trials: number; answered: number }[];
    if (sessions.length !== opts.participants) problems.push(`${sessions.length} sessions for ${opts.participants} participants`);
    for (const s of sessions) {
      if (s.status !== 'finished') problems.push(`session ${s.id} is ${s.status}`);
      if (s.answered !== s.n_trials) problems.push(`session ${s.id} has ${s.answered} of ${s.n_trials} answers`);
    }
    const identities = check.prepare('SELECT count(*) FROM identities').pluck().get() as number;
    if (identities !== opts.participants) problems.push(`${identities} identities for ${opts.participants} participants`);
    if (check.pragma('integrity_check', { simple: true }) !== 'ok') problems.push('integrity_check failed');
    const stored = check.prepare('SELECT count(*) FROM trials').pluck().get() as number;
    const finished = sessions.filter((s) => s.status === 'finished').length;
    return {
      participants: opts.participants,
      kills,
      acked: acked.length,
      stored,
      finished,
      retries: load.retries,
      retriedAcks: acked.filter((a) => a.retried).length,
      recordedBeforeAck: acked.filter((a) => a.recordedBefore).length,
      seconds: (performance.now() - started) / 1000,
      problems,
      statuses: load.statuses,
    };
  } finally {
    check.close();
    fx.cleanup();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { participants: { type: 'string', default: '200' }, trials: { type: 'string', default: '40' }, kills: { type: 'string', default: '10' }, seed: { type: 'string', default: '1' } } });
  const report = await runCrashTest({
    participants: Number(values.participants),
    trials: Number(values.trials),
    kills: Number(values.kills),
    seed: Number(values.seed),
    log: (line) => console.log(line),
  });
  console.log(JSON.stringify({ ...report, problems: report.problems.slice(0, 20), problemCount: report.problems.length }, null, 2));
  process.exitCode = report.problems.length ? 1 : 0;
}
