// The load benchmark:
//   node --import tsx server/bench/run.ts [--participants 50,200,1000] [--think 0,50] [--trials 40] [--ramp MS] [--json FILE]
//
// For each N: a fresh database and a `legible serve` child process (live mode, durable commits:
// WAL + synchronous=FULL), N simulated participants from this process over loopback (create,
// answer every trial with think time, finish); then the same N against a bare Express endpoint
// in its own process (bench/bare.ts), same think time, same number of requests. Participants
// start spread over --ramp ms (default 5 ms per participant: 200 arrivals a second). The server
// runs as deployed: the default log level (info; the per-request lines are at debug), rate limiters on (with limits set out of reach:
// the simulated participants answer 20–40× faster than people). Prints trial writes/s, latency
// and server CPU per request for both, and the ratio of their throughputs. Clients retry as the
// real client does (network errors, 5xx, 429), so overload shows as latency, not failures.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { makeFixture } from '../test/fixture.ts';
import { runLoad, type LoadResult } from './loadgen.ts';
import { spawnBare, spawnServe } from './spawn.ts';

/** CPU seconds (user + system) a process has used so far, from /proc (Linux); NaN elsewhere. */
export function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (CLK_TCK = 100)
  } catch {
    return NaN;
  }
}

export interface BenchRow {
  participants: number;
  thinkMs: number;
  rampMs: number;
  trialsPerParticipant: number;
  legible: Omit<LoadResult, 'acked'>;
  bare: Omit<LoadResult, 'acked'>;
  /** legible writes/s ÷ bare requests/s. */
  ratio: number;
  /** Server CPU time per request in µs (whole run: creates, answers, finishes), each server process. */
  cpuUsPerRequest: { legible: number; bare: number };
  /** Rows in the database afterwards = acknowledged answers (checked). */
  stored: number;
}

export async function benchOnce(opts: { participants: number; thinkMs: number; trials: number; rampMs?: number; serveArgs?: string[]; logLevel?: string }): Promise<BenchRow> {
  // 40 trials: 2 practice, 36 main, 2 catch, from 8 features × 6 main trials each.
  const mainTrials = opts.trials - 4;
  const fx = makeFixture({ mode: 'live', noModel: true, trialsPerParticipant: mainTrials, catchTrials: 2, practiceTrials: 2, mainPerFeature: Math.ceil(mainTrials / 8) });
  const db = join(fx.root, 'bench.db');
  const server = await spawnServe({
    db,
    studiesDir: fx.studiesDir,
    study: 'fixture',
    // The rate limiters run (as in production) but with limits no simulated participant meets.
    args: ['--limit-ip', '100000000', '--limit-create', '100000000', '--limit-session', '100000000', ...(opts.serveArgs ?? [])],
    // `legible serve`'s default log level (per-request lines are at debug, so not written).
    env: { LOG_LEVEL: opts.logLevel ?? 'info' },
  });
  let legible: LoadResult;
  let legibleCpu: number;
  try {
    const cpu0 = cpuSeconds(server.child.pid);
    legible = await runLoad({ base: server.url, study: 'fixture', participants: opts.participants, thinkMs: opts.thinkMs, rampMs: opts.rampMs, retryUntil: Date.now() + 10 * 60_000 });
    legibleCpu = cpuSeconds(server.child.pid) - cpu0;
  } finally {
    await server.stop();
  }
  const check = new Database(db, { readonly: true });
  const stored = check.prepare('SELECT count(*) FROM trials').pluck().get() as number;
  check.close();
  const bareServer = await spawnBare();
  let bare: LoadResult;
  let bareCpu: number;
  try {
    const cpu0 = cpuSeconds(bareServer.child.pid);
    bare = await runLoad({ base: bareServer.url, study: 'fixture', participants: opts.participants, thinkMs: opts.thinkMs, rampMs: opts.rampMs, bare: true, bareTrials: opts.trials, retryUntil: Date.now() + 10 * 60_000 });
    bareCpu = cpuSeconds(bareServer.child.pid) - cpu0;
  } finally {
    await bareServer.stop();
  }
  fx.cleanup();
  const strip = ({ acked: _a, ...rest }: LoadResult) => rest;
  return {
    participants: opts.participants,
    thinkMs: opts.thinkMs,
    rampMs: opts.rampMs ?? 0,
    trialsPerParticipant: opts.trials,
    legible: strip(legible),
    bare: strip(bare),
    ratio: legible.writesPerSecond / bare.writesPerSecond,
    cpuUsPerRequest: {
      legible: (legibleCpu * 1e6) / (legible.writes + 2 * opts.participants),
      bare: (bareCpu * 1e6) / (bare.writes + opts.participants),
    },
    stored,
  };
}

export function formatRow(r: BenchRow): string {
  const f = (x: number, d = 1) => x.toFixed(d);
  return [
    `N=${r.participants} think=${r.thinkMs}ms ramp=${r.rampMs}ms trials=${r.trialsPerParticipant}:`,
    `  legible ${f(r.legible.writesPerSecond, 0)} writes/s  p50 ${f(r.legible.latency.p50)} ms  p99 ${f(r.legible.latency.p99)} ms  max ${f(r.legible.latency.max)} ms  (${r.legible.writes} acked, ${r.stored} stored, ${r.legible.finished}/${r.participants} finished, create p50 ${f(r.legible.createLatency.p50)} ms p99 ${f(r.legible.createLatency.p99)} ms, errors ${r.legible.errors.length})`,
    `  bare    ${f(r.bare.writesPerSecond, 0)} req/s     p50 ${f(r.bare.latency.p50)} ms  p99 ${f(r.bare.latency.p99)} ms  max ${f(r.bare.latency.max)} ms`,
    `  ratio   ${f(r.ratio, 2)} (legible writes/s ÷ bare requests/s); server CPU per request: legible ${f(r.cpuUsPerRequest.legible, 0)} µs, bare ${f(r.cpuUsPerRequest.bare, 0)} µs`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  // `--think 0,50` runs each N with each think time (ms, mean; each draw uniform in ±50 %).
  const { values } = parseArgs({
    options: {
      participants: { type: 'string', default: '50,200,1000' },
      think: { type: 'string', default: '50' },
      trials: { type: 'string', default: '40' },
      ramp: { type: 'string' },
      json: { type: 'string' },
    },
  });
  const rows: BenchRow[] = [];
  for (const n of values.participants!.split(',').map(Number)) {
    for (const think of values.think!.split(',').map(Number)) {
      const row = await benchOnce({ participants: n, thinkMs: think, trials: Number(values.trials), rampMs: values.ramp === undefined ? 5 * n : Number(values.ramp) });
      console.log(formatRow(row));
      rows.push(row);
    }
  }
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ at: new Date().toISOString(), node: process.version, rows }, null, 2)}\n`);
}
