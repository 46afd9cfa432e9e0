// `legible pilot`: simulated participants go through the real server API — sessions, assignment,
// answers, finish — answering each trial correctly with the machine observer's predicted
// probability (build/predict.json from `legible predict`) or with accuracies given per condition.
// Their data goes into a database of simulated participants only (server: `simulated`), which every
// export marks (`simulated` = 1), the dashboard and the report announce, and no real participant is
// ever served from; so assignment, storage, exclusions, export, `legible analyze` and power can be
// tried on predicted data before anyone is recruited.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  LegibleError,
  Manifest,
  rng,
  seedFrom,
  type CreateSessionResponse,
  type FinishResponse,
  type LoadedStudy,
  type ManifestTrial,
  type StudyInfo,
  type TaskTrial,
} from '@legible/studies';
import { startServer, type RunningServer } from './app.ts';

export interface PilotOptions {
  participants: number;
  /** "nmf=0.85,channels=0.6,block3/nmf=0.9,catch=0.97,*=0.7": per condition instead of the machine observer. */
  accuracy?: string;
  /** Database file for an in-process server (default: pilot.db beside the study file). */
  db?: string;
  /** A running server of simulated participants (`legible serve --simulated`) instead of an in-process one. */
  url?: string;
  seed?: number;
  log?: (line: string) => void;
}

export interface PilotResult {
  db: string | null;
  url: string;
  participants: number;
  sessions: { participant: string; session: string; answered: number; correct: number; outcome: string }[];
  /** Where each trial's P(correct) came from. */
  source: string;
}

/** Parses --accuracy: keys are a basis, a layer, "layer/basis", "catch" or "*"; values probabilities. */
export function parseAccuracy(text: string, layers: string[], bases: string[]): (t: { layer: string; basis: string; kind: string }) => number | undefined {
  const table = new Map<string, number>();
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const eq = part.lastIndexOf('=');
    const key = eq < 0 ? '' : part.slice(0, eq).trim();
    const value = Number(part.slice(eq + 1));
    if (eq < 0 || !key) throw new LegibleError(`--accuracy: "${part}" is not CONDITION=P (e.g. nmf=0.85,channels=0.6)`);
    if (!(value >= 0 && value <= 1)) throw new LegibleError(`--accuracy: ${key} = "${part.slice(eq + 1)}" is not a probability between 0 and 1`);
    const [a, b] = key.split('/');
    const known = key === '*' || key === 'catch' || (b === undefined ? layers.includes(a) || bases.includes(a) : layers.includes(a) && bases.includes(b));
    if (!known) throw new LegibleError(`--accuracy: "${key}" is no condition of this study (layers: ${layers.join(', ')}; bases: ${bases.join(', ')}; also layer/basis, catch and *)`);
    if (b === undefined && layers.includes(a) && bases.includes(a)) throw new LegibleError(`--accuracy: "${a}" is both a layer and a basis: write layer/basis`);
    table.set(key, value);
  }
  if (!table.size) throw new LegibleError('--accuracy: give at least one CONDITION=P');
  return (t) => {
    if (t.kind === 'catch' && table.has('catch')) return table.get('catch');
    const combo = table.get(`${t.layer}/${t.basis}`);
    if (combo !== undefined) return combo;
    const byBasis = table.get(t.basis);
    const byLayer = table.get(t.layer);
    if (byBasis !== undefined && byLayer !== undefined) {
      throw new LegibleError(`--accuracy gives both ${t.basis}=${byBasis} and ${t.layer}=${byLayer}: say which holds for ${t.layer}/${t.basis} (e.g. ${t.layer}/${t.basis}=…)`);
    }
    return byBasis ?? byLayer ?? table.get('*');
  };
}

/** The manifest trial a task-list trial shows, found by its images (the task list carries no answer key). */
function trialIndex(manifest: Manifest, study: string): (t: TaskTrial) => { trial: ManifestTrial; right: 0 | 1 } {
  const byImages = new Map<string, ManifestTrial>();
  const key = (min: string, max: string, q: string[]) => [min, max, ...q.slice().sort()].join('\n');
  for (const t of manifest.trials) byImages.set(key(t.assets.min, t.assets.max, t.assets.queries), t);
  const prefix = `/stimuli/${encodeURIComponent(study)}/`;
  const asset = (url: string) => {
    const path = new URL(url, 'http://x').pathname;
    if (!path.startsWith(prefix)) throw new LegibleError(`the server sent a stimulus outside study ${study}: ${url}`);
    return path.slice(prefix.length).split('/').map(decodeURIComponent).join('/');
  };
  return (t) => {
    const q = t.query_urls.map(asset);
    const trial = byImages.get(key(asset(t.min_url), asset(t.max_url), q));
    if (!trial) throw new LegibleError(`the server's trial ${t.seq} shows images this build's manifest has no trial for: the server serves other stimuli than studies/…/build (rebuilt since?)`);
    return { trial, right: q[0] === trial.assets.queries[trial.answer] ? 0 : 1 };
  };
}

/** Runs N simulated participants through a server of simulated participants. */
export async function runPilot(loaded: LoadedStudy, opts: PilotOptions): Promise<PilotResult> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const { study, paths } = loaded;
  if (!Number.isInteger(opts.participants) || opts.participants < 1) throw new LegibleError(`--participants expects a whole number ≥ 1, got ${opts.participants}`);
  const manifestFile = join(paths.build, 'manifest.json');
  if (!existsSync(manifestFile)) throw new LegibleError(`no stimuli built for ${study.id} (${manifestFile} is missing): run \`legible stimuli ${study.id}\` first`);
  const manifest = Manifest.parse(JSON.parse(readFileSync(manifestFile, 'utf8')));
  const features = new Map(manifest.features.map((f) => [f.id, f]));

  // Each trial's P(correct): given per condition, or the machine observer's.
  let probability: (t: ManifestTrial) => number;
  let source: string;
  if (opts.accuracy) {
    const lookup = parseAccuracy(opts.accuracy, study.model.layers.map((l) => l.name), study.bases.map((b) => b.kind));
    probability = (t) => {
      const f = features.get(t.feature)!;
      const p = lookup({ layer: f.layer, basis: f.basis, kind: t.kind }) ?? (t.kind === 'catch' ? 0.97 : undefined);
      if (p === undefined) throw new LegibleError(`--accuracy says nothing for ${f.layer}/${f.basis} (trial ${t.id}): add ${f.basis}=P, ${f.layer}=P or *=P`);
      return p;
    };
    source = `--accuracy ${opts.accuracy}`;
  } else {
    const file = join(paths.build, 'predict.json');
    if (!existsSync(file)) throw new LegibleError(`no machine prediction for ${study.id} (${file} is missing): run \`legible predict ${study.id}\` first, or give --accuracy CONDITION=P,…`);
    const prediction = JSON.parse(readFileSync(file, 'utf8')) as { trials: Record<string, number>; observer: string; weak_proxy: boolean };
    probability = (t) => {
      const p = prediction.trials[t.id];
      if (p === undefined) throw new LegibleError(`${file} has no prediction for trial ${t.id}: the stimuli were rebuilt after \`legible predict\`; run it again`);
      return p;
    };
    source = `machine observer ${prediction.observer} (build/predict.json)`;
  }

  // The server: one given by URL (it must serve simulated participants), or one started here.
  const clock = { ms: Date.now() };
  let running: RunningServer | null = null;
  let base: string;
  let db: string | null = null;
  if (opts.url) {
    base = opts.url.replace(/\/+$/, '');
    const info = (await call(base, 'GET', `/api/studies/${encodeURIComponent(study.id)}`)) as StudyInfo;
    if (info.simulated !== true) {
      throw new LegibleError(`${base} serves real participants (its database is not one of simulated participants): simulated data never goes into live data. Start a server with \`legible serve --simulated --db pilot.db\`, or leave out --url.`);
    }
  } else {
    db = opts.db ?? join(dirname(loaded.file), 'pilot.db');
    running = await startServer({
      port: 0,
      host: '127.0.0.1',
      db,
      studies: [loaded.file],
      clientDir: join(dirname(db), '.no-client'),
      signals: false,
      simulated: true,
      watchMs: 0,
      // Simulated participants think in simulated time: the server's clock moves as they answer.
      now: () => new Date(clock.ms),
      limits: { ipPerMinute: 0, createPerMinute: 0, sessionPerMinute: 0 },
    });
    base = running.url;
  }
  const seed = opts.seed ?? study.seed;
  const sessions: PilotResult['sessions'] = [];
  try {
    const find = trialIndex(manifest, study.id);
    const runTag = seedFrom('pilot-run', seed, Date.now()).toString(36);
    for (let i = 0; i < opts.participants; i++) {
      const r = rng(seedFrom('pilot', seed, i));
      const participant = `pilot-${runTag}-${String(i + 1).padStart(4, '0')}`;
      let s = (await call(base, 'POST', '/api/sessions', { study: study.id, participant })) as CreateSessionResponse;
      clock.ms += 20_000 + r.int(40_000); // consent and instructions
      let answered = 0;
      let correct = 0;
      let outcome = '';
      for (let attempt = 0; attempt < 5 && !outcome; attempt++) {
        const done = new Set(s.recorded ?? []);
        for (const t of s.trials) {
          if (done.has(t.seq)) continue;
          const { trial, right } = find(t);
          const p = probability(trial);
          const ok = r.float() < p;
          // RT: log-normal around 2.5 s, longer where the observer is less sure; confidence from P.
          const rt = Math.round(2500 * Math.exp(0.35 * r.normal()) * (1.5 - Math.abs(p - 0.5)));
          const confidence = (Math.min(3, Math.max(1, Math.round(1 + 4 * Math.abs(p - 0.5) + 0.6 * r.normal()))) as 1 | 2 | 3);
          clock.ms += rt + 300;
          const query = (ok ? right : 1 - right) as 0 | 1;
          const order: [0 | 1, 0 | 1] = r.float() < 0.5 ? [0, 1] : [1, 0];
          await call(base, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, { query, confidence, rt_ms: rt, query_order: order, input: 'key', client_time: clock.ms }, s.token);
          answered++;
          if (ok && !t.practice) correct++;
        }
        clock.ms += 1500;
        const fin = await callRaw(base, 'POST', `/api/sessions/${s.session}/finish`, undefined, s.token);
        if (fin.status === 409 && Array.isArray((fin.body as { missing?: unknown }).missing)) {
          // More trials than the first task list (practice repeated until its criterion): take the new list.
          s = (await call(base, 'POST', '/api/sessions', { study: study.id, participant, resume: s.resume_secret })) as CreateSessionResponse;
          continue;
        }
        if (fin.status >= 300) throw new LegibleError(`finishing simulated participant ${participant}: ${fin.status} ${JSON.stringify(fin.body)}`);
        outcome = (fin.body as FinishResponse).outcome;
      }
      sessions.push({ participant, session: s.session, answered, correct, outcome: outcome || 'unfinished' });
      clock.ms += 30_000;
      if ((i + 1) % 10 === 0 || i + 1 === opts.participants) log(`pilot: ${i + 1} of ${opts.participants} simulated participants done`);
    }
  } finally {
    await running?.close();
  }
  return { db, url: base, participants: opts.participants, sessions, source };
}

async function callRaw(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
  let res: Response;
  try {
    res = await fetch(base + path, {
      method,
      headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new LegibleError(`cannot reach the server at ${base}: ${(e as Error).message}`);
  }
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, body: parsed };
}

async function call(base: string, method: string, path: string, body?: unknown, token?: string): Promise<unknown> {
  const r = await callRaw(base, method, path, body, token);
  if (r.status >= 300) throw new LegibleError(`${method} ${base}${path}: ${r.status} ${typeof r.body === 'string' ? r.body : JSON.stringify(r.body)}`);
  return r.body;
}
