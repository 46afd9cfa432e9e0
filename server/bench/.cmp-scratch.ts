import { join } from 'node:path';
import { makeFixture } from '../test/fixture.ts';
import { runLoad } from './loadgen.ts';
import { spawnServe } from './spawn.ts';
import { cpuSeconds } from './run.ts';
const N = Number(process.argv[2] ?? 200), think = Number(process.argv[3] ?? 0);
for (const [name, mod, args] of [['first slice', '/tmp/legible-head/server/src/commands.ts', []], ['now', undefined, ['--limit-ip', '100000000', '--limit-create', '100000000', '--limit-session', '100000000']], ['first slice', '/tmp/legible-head/server/src/commands.ts', []], ['now', undefined, ['--limit-ip', '100000000', '--limit-create', '100000000', '--limit-session', '100000000']]] as const) {
  const fx = makeFixture({ mode: 'live', noModel: true, trialsPerParticipant: 36, catchTrials: 2, practiceTrials: 2, mainPerFeature: 5 });
  const server = await spawnServe({ db: join(fx.root, 'b.db'), studiesDir: fx.studiesDir, study: 'fixture', args: [...args], env: { LOG_LEVEL: 'info' }, commandsModule: mod });
  const c0 = cpuSeconds(server.child.pid);
  const r = await runLoad({ base: server.url, study: 'fixture', participants: N, thinkMs: think, rampMs: 1000, retryUntil: Date.now() + 600_000 });
  const cpu = cpuSeconds(server.child.pid) - c0;
  console.log(`${name.padEnd(12)} N=${N} think=${think}: ${r.writesPerSecond.toFixed(0)} writes/s, p50 ${r.latency.p50.toFixed(1)} ms, p99 ${r.latency.p99.toFixed(1)} ms, create p50 ${r.createLatency.p50.toFixed(0)} ms, server CPU ${(cpu * 1e6 / (r.writes + 2 * N)).toFixed(0)} µs/request, errors ${r.errors.length}`);
  await server.stop(); fx.cleanup();
}
