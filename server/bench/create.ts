// Session creation in one process, without HTTP: the CPU one creation costs (SessionService.create
// on a real database file, five creations sharing each group commit), for this server and, with
// --compare, another version's server/src/index.ts (e.g. an earlier commit's server/src extracted
// with `git archive` into server/dist/before), interleaved round by round on the same machine noise:
//   node --import tsx server/bench/create.ts [--creations 600] [--rounds 3] [--compare OTHER/server/src/index.ts]
// The burst's study: 240 main trials (40 units of 6), 36 main + 2 catch + 2 practice per participant.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { makeFixture } from '../test/fixture.ts';
import * as here from '../src/index.ts';

const { values } = parseArgs({ options: { creations: { type: 'string', default: '600' }, rounds: { type: 'string', default: '3' }, compare: { type: 'string' } } });
const n = Number(values.creations);
const fx = makeFixture({ mode: 'live', noModel: true, trialsPerParticipant: 36, catchTrials: 2, practiceTrials: 2, mainPerFeature: 6, featuresPerCell: 10 });
const other = values.compare ? ((await import(values.compare)) as typeof here) : undefined;

async function measure(M: typeof here, tag: string): Promise<{ cpuUs: number; wallUs: number }> {
  const db = M.openDatabase(join(fx.root, `${tag}.db`));
  const { registry } = await M.loadRegistry({ studiesDir: fx.studiesDir, studies: ['fixture'], build: async () => { throw new Error('the fixture brings its manifest'); } });
  const sessions = new M.SessionService({ db, registry });
  for (let i = 0; i < 30; i++) await sessions.create({ study: 'fixture', participant: `warm-${i}` });
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < n; i += 5) await Promise.all(Array.from({ length: 5 }, (_, j) => sessions.create({ study: 'fixture', participant: `p-${i + j}` })));
  const c = process.cpuUsage(c0);
  const wallUs = ((performance.now() - t0) * 1000) / n;
  db.close();
  return { cpuUs: (c.user + c.system) / n, wallUs };
}

try {
  for (let r = 0; r < Number(values.rounds); r++) {
    const before = other ? await measure(other, `other-${r}`) : undefined;
    const now = await measure(here, `here-${r}`);
    console.log(
      `round ${r + 1}: ${now.cpuUs.toFixed(0)} µs CPU per creation (${now.wallUs.toFixed(0)} µs wall, commits' fsync included)` +
        (before ? `; compared server ${before.cpuUs.toFixed(0)} µs CPU (${before.wallUs.toFixed(0)} µs wall)` : ''),
    );
  }
} finally {
  fx.cleanup();
}
