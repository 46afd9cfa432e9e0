import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { rng } from '@legible/studies';
import { fitNmf, halsRows, nmfGram } from '../src/nmf.ts';
import { RowSweep } from '../src/nmf-sweep.ts';

/** A sweep's inputs: U (n × k) ≥ 0, WWᵀ of a random non-negative W (k × c), the gradient U·WWᵀ − AWᵀ. */
function problem(n: number, k: number, c: number, seed: number) {
  const r = rng(seed);
  // Some codes at the floor, so that the sweep's "coordinate stays put" path runs too.
  const U = Float32Array.from({ length: n * k }, () => (r.next() < 0.3 ? 1e-10 : r.next()));
  const W = Float32Array.from({ length: k * c }, () => (r.next() < 0.5 ? 0 : r.next()));
  const A = Float32Array.from({ length: n * c }, () => 2 * r.next());
  const WWt = Float32Array.from(nmfGram(W, k, c));
  const grad = new Float32Array(n * k);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let q = 0; q < c; q++) s -= A[i * c + q] * W[j * c + q];
      for (let l = 0; l < k; l++) s += U[i * k + l] * WWt[l * k + j];
      grad[i * k + j] = s;
    }
  }
  return { U, WWt, grad };
}

async function ready(sweep: RowSweep): Promise<void> {
  const t0 = Date.now();
  while (!sweep.ready) {
    assert.ok(Date.now() - t0 < 60_000, 'the sweep worker did not start within 60 s');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const bits = (a: Float32Array) => new Uint32Array(a.buffer, a.byteOffset, a.length);

describe('HALS sweep over U on two threads (src/nmf-sweep.ts)', () => {
  for (const [n, k, sweeps] of [
    [2001, 7, 1],
    [1500, 25, 4],
  ] as const) {
    it(`gives bitwise the one-thread sweep's U (n = ${n}, k = ${k}, ${sweeps} sweep(s) per call)`, async () => {
      const { U, WWt, grad } = problem(n, k, 16, n + k);
      const one = Float32Array.from(U);
      const mine = Float32Array.from(U);
      const two = new RowSweep(n, k, sweeps, 0.01);
      try {
        await ready(two);
        // Sweep after sweep (both copies from one start), until the worker has taken part (a thread claims
        // chunks as it comes: a sweep this small can be over before the worker wakes up).
        for (let call = 1; call <= 2 || two.workerRows === 0; call++) {
          assert.ok(call <= 500, 'the worker swept no rows in 500 sweeps');
          halsRows(one, new Float32Array(0), WWt, n, k, sweeps, 0.01, grad);
          await two.sweep(mine, WWt, grad);
          assert.deepEqual(bits(mine), bits(one), `sweep ${call}`);
        }
        // The sweep changed U (the comparison is not between two untouched copies).
        assert.notDeepEqual(bits(one), bits(U));
      } finally {
        await two.close();
      }
      assert.equal(RowSweep.live, 0, 'a sweep worker is still running after close');
    });
  }

  it('gives the one-thread fit bitwise, with the worker helping', async () => {
    const n = 3000;
    const c = 32;
    const k = 6;
    const r = rng(5);
    const A = Float32Array.from({ length: n * c }, () => (r.next() < 0.4 ? 0 : r.next()));
    // threads: 1 sweeps on one thread; 2 uses the worker (the products run on one thread either way
    // at this size, so the fits must agree bit for bit). The worker boots while the fit runs (the
    // main thread sweeps alone meanwhile): longer fits until it has taken part.
    for (const maxIter of [100, 400, 1600, 6400]) {
      const opts = { k, maxIter, tol: 0, seed: 2, device: 'cpu' as const };
      const logs: string[] = [];
      const two = await fitNmf(A, n, c, { ...opts, threads: 2, log: (s) => logs.push(s) });
      assert.equal(RowSweep.live, 0, 'a sweep worker is still running after the fit');
      assert.ok(logs.some((l) => /two threads/.test(l)), logs.join('\n'));
      if (!logs.some((l) => /the worker took [1-9]/.test(l))) {
        assert.notEqual(maxIter, 6400, `the worker never took part: ${logs.join('; ')}`);
        continue;
      }
      const one = await fitNmf(A, n, c, { ...opts, threads: 1 });
      assert.equal(two.iterations, one.iterations);
      assert.deepEqual(bits(two.U), bits(one.U));
      assert.deepEqual(bits(two.W), bits(one.W));
      assert.deepEqual(two.history.map((h) => h.error), one.history.map((h) => h.error));
      break;
    }
  });

  it('shuts the worker down when the fit throws', async () => {
    const n = 2000;
    const A = new Float32Array(n * 8).fill(1);
    // Started before the products' session, which cannot open on a device that is not here.
    await assert.rejects(fitNmf(A, n, 8, { k: 3, maxIter: 5, tol: 0, seed: 1, device: 'cuda', threads: 2 }), /cuda/);
    assert.equal(RowSweep.live, 0, 'a sweep worker is still running after the fit threw');
    // And after a sweep, mid-fit: close is what fitNmf's `finally` runs.
    const sweep = new RowSweep(n, 3, 1, 0.01);
    try {
      await ready(sweep);
      const { U, WWt, grad } = problem(n, 3, 4, 9);
      await sweep.sweep(U, WWt, grad);
      throw new Error('thrown mid-fit');
    } catch (e) {
      assert.match(String(e), /thrown mid-fit/);
    } finally {
      await sweep.close();
    }
    assert.equal(RowSweep.live, 0);
    await assert.rejects(sweep.sweep(new Float32Array(n * 3), new Float32Array(9), new Float32Array(n * 3)), /after close/);
  });

  it('leaves no process hanging: a script whose fit throws after the worker has swept exits by itself', () => {
    // In a process of its own: the fit's last step (its log line, after the iterations) throws; the
    // process must then end without being told to.
    const nmf = new URL('../src/nmf.ts', import.meta.url).href;
    const script = `
      const { fitNmf } = await import(${JSON.stringify(nmf)});
      const n = 3000, c = 16;
      const A = Float32Array.from({ length: n * c }, (_, i) => ((i * 7919) % 13) / 13);
      const log = (s) => { if (/^NMF: /.test(s)) throw new Error('thrown at the end: ' + s); };
      await fitNmf(A, n, c, { k: 4, maxIter: 300, tol: 0, seed: 1, device: 'cpu', threads: 2, log }).then(
        () => console.log('the fit did not throw'),
        (e) => console.log('caught: ' + e.message),
      );`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.signal, null, `the process did not exit by itself within 60 s (${r.stderr})`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /caught: thrown at the end: NMF: \d+ iterations; U's rows swept on two threads \(the worker took [1-9]/);
  });
});
