// The fuzz test (server/bench/fuzz.ts) at full size: 10,000 malformed or hostile requests over raw
// TCP against a `legible serve` process — no 5xx, no crash, no cross-session read or write.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runFuzz } from '../bench/fuzz.ts';

test('10,000 hostile requests: no 5xx, no crash, no cross-session read or write', { timeout: 180_000 }, async () => {
  const report = await runFuzz({ requests: 10_000, seed: 3 });
  assert.deepEqual(report.problems.slice(0, 10), [], `${report.problems.length} problems`);
  const total = Object.values(report.statuses).reduce((a, b) => a + b, 0);
  assert.equal(total, 10_000);
  for (const status of Object.keys(report.statuses)) assert.ok(status === 'none' || Number(status) < 500, `status ${status}`);
  // The fuzz reached the code behind the doors, not only the 404s.
  for (const status of ['200', '400', '401', '404', '413']) assert.ok((report.statuses[status] ?? 0) > 0, `some ${status}s`);
  console.log(`fuzz: ${JSON.stringify(report.statuses)} in ${report.seconds.toFixed(1)} s`);
});
