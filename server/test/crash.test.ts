// The crash test at CI size (server/bench/crash.ts runs it at full size): participants answer
// while the server is killed with SIGKILL at random moments (5 times) and restarted on the same
// database; every acknowledged answer must be in the database, none twice, and every participant
// must finish with a complete record.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runCrashTest } from '../bench/crash.ts';

test('kill -9 under load, 5 times: every acknowledged answer stored once, every participant complete', { timeout: 120_000 }, async () => {
  const report = await runCrashTest({ participants: 40, trials: 20, kills: 5, seed: 7, thinkMs: 20 });
  assert.deepEqual(report.problems.slice(0, 10), [], `${report.problems.length} problems`);
  assert.equal(report.kills, 5);
  assert.equal(report.finished, 40);
  assert.equal(report.acked, 40 * 20);
  assert.equal(report.stored, 40 * 20);
  assert.ok((report.statuses.network ?? 0) > 0, 'the kills cut requests off (the clients had to retry)');
  console.log(`crash test: ${report.kills} kills, ${report.acked} answers acknowledged and stored, ${report.retries} retries, ${report.seconds.toFixed(1)} s`);
});
