// The session-creation burst benchmark:
//   node --import tsx server/bench/burst.ts [--arrivals 1000] [--ramp 5000] [--features 10] [--per-feature 6]
//                                           [--trials 36] [--think 0] [--runs 3] [--json FILE]
//                                           [--compare OTHER/server/src/commands.ts] [--profile DIR] [--no-bare]
//
// N participants arrive spread evenly over --ramp ms (1000 in 5 s: 200 a second) against a
// `legible serve` child process as deployed (live mode, WAL + synchronous=FULL, request logs at
// their default level, rate limiters on with limits out of reach). Each one creates its session
// (POST /api/sessions, measured by the client from the first attempt); with --think > 0 it then
// answers its trials with that mean think time, so that later arrivals meet a server busy with
// answers (churn). Then the same arrivals against the bare Express endpoint (bench/bare.ts).
// Afterwards the database is checked: one session per arrival, and the main trials leased per
// unit (feature × reference kind) within one of each other — every creation balanced and durable.
// With --compare, each run also drives another version of the server (its commands.ts, e.g. an
// earlier commit's server/src extracted with `git archive`), interleaved with this one's runs so
// that both meet the same machine noise.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import Database from 'better-sqlite3';
import { makeFixture } from '../test/fixture.ts';
import { HttpClient, percentile } from './loadgen.ts';
import { cpuSeconds } from './run.ts';
import { spawnBare, spawnServe } from './spawn.ts';

export interface BurstOptions {
  arrivals: number;
  rampMs: number;
  /** Features per layer × basis cell of the fixture (4 cells). */
  features?: number;
  /** Main trials per feature. */
  perFeature?: number;
  /** Main trials per participant. */
  trials?: number;
  /** Mean think time between answers (ms); 0: create only. */
  thinkMs?: number;
  serveArgs?: string[];
  logLevel?: string;
  /** Another server's commands.ts to run instead of this one's. */
  commandsModule?: string;
  /** Skip the bare-endpoint baseline. */
  noBare?: boolean;
  /** Flags for the server's node, e.g. ['--cpu-prof', '--cpu-prof-dir=DIR'] (--profile DIR). */
  nodeArgs?: string[];
}

export interface BurstSide {
  create: { p50: number; p90: number; p99: number; max: number };
  errors: string[];
  cpuMsPerCreate: number;
  answers: number;
}

export interface BurstResult {
  arrivals: number;
  rampMs: number;
  mainTrials: number;
  trialsPerParticipant: number;
  thinkMs: number;
  legible: BurstSide;
  bare: BurstSide;
  /** Sessions in the database afterwards (= arrivals when every creation is durable). */
  stored: number;
  /** Main trials leased per unit: most and least (balanced: most − least ≤ 1 when nobody answered). */
  unitSpread: { most: number; least: number; units: number };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function arrive(base: string, opts: Required<Pick<BurstOptions, 'arrivals' | 'rampMs' | 'thinkMs'>> & { bare: boolean; prefix: string }): Promise<{ latencies: number[]; errors: string[]; answers: number }> {
  const latencies: number[] = [];
  const errors: string[] = [];
  let answers = 0;
  const t0 = performance.now();
  const one = async (i: number) => {
    // Arrival i at i × ramp / N after the start, however late the previous ones are.
    const due = (i * opts.rampMs) / opts.arrivals - (performance.now() - t0);
    if (due > 0) await sleep(due);
    const client = new HttpClient(base);
    try {
      const start = performance.now();
      let r;
      for (;;) {
        r = await client.send('POST', '/api/sessions', { study: 'fixture', participant: `${opts.prefix}-${i}` }, {}, 60_000);
        if (r.status !== 429 && r.status < 500) break;
        await sleep(100);
      }
      latencies.push(performance.now() - start);
      if (r.status !== 201) {
        errors.push(`create ${i}: ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
        return;
      }
      if (opts.thinkMs <= 0 || opts.bare) return;
      const { session, token, trials } = r.body as { session: string; token: string; trials: { seq: number }[] };
      for (const t of trials) {
        await sleep(opts.thinkMs * (0.5 + Math.random()));
        const a = await client.send('PUT', `/api/sessions/${session}/trials/${t.seq}`, { query: 0, confidence: 2, rt_ms: 900 }, { authorization: `Bearer ${token}` }, 60_000);
        if (a.status === 200) answers++;
        else if (!(a.status === 409 && (a.body as { detail?: { practice_over?: boolean } })?.detail?.practice_over)) errors.push(`answer ${i}/${t.seq}: ${a.status}`);
      }
    } catch (e) {
      errors.push(`arrival ${i}: ${(e as Error).message}`);
    } finally {
      client.close();
    }
  };
  await Promise.all(Array.from({ length: opts.arrivals }, (_, i) => one(i)));
  return { latencies, errors, answers };
}

const summary = (latencies: number[]) => {
  const s = [...latencies].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s.at(-1) ?? NaN };
};

export async function burstOnce(opts: BurstOptions): Promise<BurstResult> {
  const perFeature = opts.perFeature ?? 6;
  const features = opts.features ?? 10;
  const trials = opts.trials ?? 36;
  const thinkMs = opts.thinkMs ?? 0;
  const fx = makeFixture({ mode: 'live', noModel: true, trialsPerParticipant: trials, catchTrials: 2, practiceTrials: 2, mainPerFeature: perFeature, featuresPerCell: features });
  const mainTrials = fx.manifest.trials.filter((t) => t.kind === 'main').length;
  const db = join(fx.root, 'burst.db');
  try {
    const server = await spawnServe({
      db,
      studiesDir: fx.studiesDir,
      study: 'fixture',
      args: ['--limit-ip', '100000000', '--limit-create', '100000000', '--limit-session', '100000000', ...(opts.serveArgs ?? [])],
      // `legible serve`'s own default level (info), as `npm start` runs it.
      env: { LOG_LEVEL: opts.logLevel ?? 'info' },
      commandsModule: opts.commandsModule,
      nodeArgs: opts.nodeArgs,
    });
    let legible: BurstSide;
    try {
      const cpu0 = cpuSeconds(server.child.pid);
      const r = await arrive(server.url, { arrivals: opts.arrivals, rampMs: opts.rampMs, thinkMs, bare: false, prefix: 'burst' });
      legible = { create: summary(r.latencies), errors: r.errors, cpuMsPerCreate: ((cpuSeconds(server.child.pid) - cpu0) * 1000) / opts.arrivals, answers: r.answers };
    } finally {
      await server.stop();
    }
    const check = new Database(db, { readonly: true });
    const stored = check.prepare('SELECT count(*) FROM sessions').pluck().get() as number;
    const leased = new Map<string, number>();
    for (const row of check.prepare('SELECT tasks FROM sessions').pluck().all() as string[]) {
      for (const t of JSON.parse(row) as { kind: string; feature: string; reference_kind: string }[]) {
        if (t.kind === 'main') leased.set(`${t.feature}#${t.reference_kind}`, (leased.get(`${t.feature}#${t.reference_kind}`) ?? 0) + 1);
      }
    }
    check.close();
    const counts = [...leased.values()];

    let bare: BurstSide = { create: { p50: NaN, p90: NaN, p99: NaN, max: NaN }, errors: [], cpuMsPerCreate: NaN, answers: 0 };
    const bareServer = opts.noBare ? undefined : await spawnBare();
    if (bareServer) try {
      const cpu0 = cpuSeconds(bareServer.child.pid);
      const r = await arrive(bareServer.url, { arrivals: opts.arrivals, rampMs: opts.rampMs, thinkMs: 0, bare: true, prefix: 'bare' });
      bare = { create: summary(r.latencies), errors: r.errors, cpuMsPerCreate: ((cpuSeconds(bareServer.child.pid) - cpu0) * 1000) / opts.arrivals, answers: 0 };
    } finally {
      await bareServer.stop();
    }
    return {
      arrivals: opts.arrivals,
      rampMs: opts.rampMs,
      mainTrials,
      trialsPerParticipant: trials,
      thinkMs,
      legible,
      bare,
      stored,
      unitSpread: { most: Math.max(...counts), least: Math.min(...counts), units: counts.length },
    };
  } finally {
    fx.cleanup();
  }
}

export function formatBurst(r: BurstResult): string {
  const f = (x: number) => x.toFixed(1);
  return [
    `${r.arrivals} arrivals in ${r.rampMs} ms, ${r.mainTrials} main trials, ${r.trialsPerParticipant} per participant, think ${r.thinkMs} ms:`,
    `  legible create p50 ${f(r.legible.create.p50)} ms  p90 ${f(r.legible.create.p90)} ms  p99 ${f(r.legible.create.p99)} ms  max ${f(r.legible.create.max)} ms  (server CPU ${f(r.legible.cpuMsPerCreate)} ms per arrival, ${r.legible.answers} answers, errors ${r.legible.errors.length})`,
    `  bare    create p50 ${f(r.bare.create.p50)} ms  p90 ${f(r.bare.create.p90)} ms  p99 ${f(r.bare.create.p99)} ms  max ${f(r.bare.create.max)} ms`,
    `  stored ${r.stored}/${r.arrivals} sessions; main trials leased per unit: ${r.unitSpread.least}–${r.unitSpread.most} over ${r.unitSpread.units} units`,
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      arrivals: { type: 'string', default: '1000' },
      ramp: { type: 'string', default: '5000' },
      features: { type: 'string', default: '10' },
      'per-feature': { type: 'string', default: '6' },
      trials: { type: 'string', default: '36' },
      think: { type: 'string', default: '0' },
      runs: { type: 'string', default: '3' },
      json: { type: 'string' },
      compare: { type: 'string' },
      profile: { type: 'string' },
      bare: { type: 'boolean', default: true },
    },
    allowNegative: true,
  });
  const rows: BurstResult[] = [];
  const other: BurstResult[] = [];
  const common = {
    arrivals: Number(values.arrivals),
    rampMs: Number(values.ramp),
    features: Number(values.features),
    perFeature: Number(values['per-feature']),
    trials: Number(values.trials),
    thinkMs: Number(values.think),
    // --profile DIR: a CPU profile of each run's server (node --cpu-prof), written when it stops.
    nodeArgs: values.profile ? ['--cpu-prof', `--cpu-prof-dir=${values.profile}`] : undefined,
    noBare: !values.bare,
  };
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  for (let i = 0; i < Number(values.runs); i++) {
    const row = await burstOnce(common);
    console.log(formatBurst(row));
    rows.push(row);
    if (values.compare) {
      const o = await burstOnce({ ...common, commandsModule: values.compare, noBare: true });
      console.log(`  compared server (${values.compare}): create p50 ${o.legible.create.p50.toFixed(1)} ms  p99 ${o.legible.create.p99.toFixed(1)} ms  max ${o.legible.create.max.toFixed(1)} ms  (server CPU ${o.legible.cpuMsPerCreate.toFixed(1)} ms per arrival, stored ${o.stored}/${o.arrivals}, errors ${o.legible.errors.length})`);
      other.push(o);
    }
  }
  if (rows.length > 1) {
    console.log(`median of ${rows.length}: legible create p99 ${med(rows.map((r) => r.legible.create.p99)).toFixed(1)} ms (runs: ${rows.map((r) => r.legible.create.p99.toFixed(0)).join(', ')}), p50 ${med(rows.map((r) => r.legible.create.p50)).toFixed(1)} ms, server CPU ${med(rows.map((r) => r.legible.cpuMsPerCreate)).toFixed(2)} ms per arrival; bare p99 ${med(rows.map((r) => r.bare.create.p99)).toFixed(1)} ms`);
    if (other.length) console.log(`median of ${other.length}, compared server: create p99 ${med(other.map((r) => r.legible.create.p99)).toFixed(1)} ms (runs: ${other.map((r) => r.legible.create.p99.toFixed(0)).join(', ')}), p50 ${med(other.map((r) => r.legible.create.p50)).toFixed(1)} ms, server CPU ${med(other.map((r) => r.legible.cpuMsPerCreate)).toFixed(2)} ms per arrival`);
  }
  if (values.json) writeFileSync(values.json, `${JSON.stringify({ at: new Date().toISOString(), node: process.version, rows, compared: other }, null, 2)}\n`);
}
