// WorkerTeam (src/parallel.ts): plain-JS workers stepping in lockstep with the main thread through
// shared memory, and every failure — a step that throws, a worker that exits, a missing handler —
// rejecting the caller instead of hanging, with close() ending the workers.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sharedFloat32, WorkerTeam } from '../src/parallel.ts';

const ADDER = `
const out = new Float64Array(workerData.out);
let calls = 0;
handle('add', async (b) => b.a + b.b);
handle('calls', async () => calls);
steps(async () => {
  calls++;
  if (calls === workerData.throwAt) throw new Error('step ' + calls + ' failed on purpose');
  if (calls === workerData.exitAt) process.exit(3);
  out[workerData.slot] += calls * (workerData.slot + 1);
});
`;

function team(count: number, opts: { throwAt?: number; exitAt?: number } = {}) {
  const out = new Float64Array(new SharedArrayBuffer(8 * count));
  return { out, team: new WorkerTeam('test', count, ADDER, (slot) => ({ out: out.buffer, slot, ...opts })) };
}

describe('WorkerTeam', () => {
  it('steps every worker once per step(), in lockstep, writing shared memory', async (t) => {
    const { out, team: w } = team(2);
    try {
      assert.equal(await w.request(0, 'add', { a: 2, b: 3 }), 5);
      w.startSteps();
      const steps = 200;
      const t0 = performance.now();
      for (let s = 0; s < steps; s++) {
        w.step();
        await w.stepped();
      }
      const ms = (performance.now() - t0) / steps;
      t.diagnostic(`${ms.toFixed(3)} ms per empty step (2 workers, signal + wait)`);
      // Σ_{k=1..200} k · (slot + 1): each worker ran each step exactly once.
      assert.deepEqual(Array.from(out), [20100, 40200]);
      await w.stopSteps();
      assert.deepEqual(await w.broadcast('calls'), [200, 200]);
      // Loops can restart after requests; a step signalled at once is not missed.
      w.startSteps();
      w.step();
      await w.stepped();
      await w.stopSteps();
      assert.deepEqual(await w.broadcast('calls'), [201, 201]);
    } finally {
      await w.close();
    }
    assert.equal(w.alive, 0);
  });

  it('a step that throws rejects stepped() with the worker\'s error; close() ends the workers', async () => {
    const { team: w } = team(2, { throwAt: 3 });
    try {
      w.startSteps();
      for (let s = 0; s < 2; s++) {
        w.step();
        await w.stepped();
      }
      w.step();
      // Both workers fail at step 3: whichever failure arrives first is the team's.
      await assert.rejects(w.stepped(), /test worker [12]: Error: step 3 failed on purpose/);
      assert.throws(() => w.step(), /step 3 failed on purpose/);
    } finally {
      await w.close();
    }
    assert.equal(w.alive, 0);
  });

  it('a worker that exits mid-step rejects stepped(); a request without a handler rejects', async () => {
    const { team: w } = team(1, { exitAt: 2 });
    try {
      await assert.rejects(w.request(0, 'nothing'), /no handler for request "nothing"/);
      w.startSteps();
      w.step();
      await w.stepped();
      w.step();
      await assert.rejects(w.stepped(), /test worker 1 exited \(code 3\)/);
    } finally {
      await w.close();
    }
    assert.equal(w.alive, 0);
    await w.close();
  });

  it('refuses a team of no workers and gives shared float arrays', () => {
    assert.throws(() => new WorkerTeam('test', 0, ''), /test: a worker team needs 1–64 workers, got 0/);
    const a = sharedFloat32(4);
    assert.ok(a.buffer instanceof SharedArrayBuffer);
    assert.equal(a.length, 4);
  });
});
