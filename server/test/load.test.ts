// The load benchmark (server/bench/run.ts) at CI size: 50 participants over loopback against a
// `legible serve` process and against a bare Express endpoint. It checks what must hold on any
// machine — every answer acknowledged and stored, every participant finished, no errors — and
// prints the figures (which depend on the machine; server/BENCHMARKS.md has measured ones).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchOnce, formatRow } from '../bench/run.ts';

test('50 participants × 20 trials with think time: all stored, all finished; figures printed', { timeout: 120_000 }, async () => {
  const row = await benchOnce({ participants: 50, thinkMs: 20, trials: 20 });
  console.log(formatRow(row));
  assert.deepEqual(row.legible.errors, []);
  assert.equal(row.legible.finished, 50);
  assert.equal(row.legible.writes, 50 * 20);
  assert.equal(row.stored, 50 * 20, 'every acknowledged answer is in the database');
  assert.equal(row.bare.finished, 50);
  // Loose floors that hold on a loaded CI machine; the real targets are in BENCHMARKS.md.
  assert.ok(row.legible.writesPerSecond > 100, `${row.legible.writesPerSecond.toFixed(0)} writes/s`);
  assert.ok(row.legible.latency.p99 < 2000, `p99 ${row.legible.latency.p99.toFixed(1)} ms`);
});
