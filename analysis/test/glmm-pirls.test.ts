// The speed-ups of the Laplace deviance must not change what it computes: PIRLS warm-started from
// the previous evaluation (chord steps on an earlier factorisation of H, the start that keeps
// b = Λu after a large change of θ) gives the same deviance, gradient and conditional modes as a
// cold start at the same point, in whatever order the points come; and the blocked row products
// of the dense Schur complement and of the observations' inverse equal the plain sums.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseFormula } from '../src/stats/formula.ts';
import { LaplaceObjective } from '../src/stats/glmm.ts';
import { buildInput } from '../src/stats/models.ts';
import { simulateStudy } from '../src/stats/simulate.ts';
import { BlockSystem, rowProducts } from '../src/stats/system.ts';
import { Table } from '../src/table.ts';

test('rowProducts equals the plain sums of products of rows (full and lower triangle, any sizes)', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
  for (const [rowsA, rowsB, len] of [
    [7, 6, 5],
    [3, 4, 1],
    [2, 9, 3],
    [13, 13, 11],
  ]) {
    const A = Float64Array.from({ length: rowsA * len }, rnd);
    const B = Float64Array.from({ length: rowsB * len }, rnd);
    for (const lower of [false, true]) {
      for (const sign of [1, -1]) {
        const ldo = rowsB + 2;
        const out = Float64Array.from({ length: rowsA * ldo }, rnd);
        const before = Float64Array.from(out);
        rowProducts(A, rowsA, B, rowsB, len, out, ldo, sign, lower);
        for (let i = 0; i < rowsA; i++) {
          for (let j = 0; j < ldo; j++) {
            let want = before[i * ldo + j];
            if (j < rowsB && (!lower || j <= i)) {
              let s = 0;
              for (let k = 0; k < len; k++) s += A[i * len + k] * B[j * len + k];
              want += sign * s;
            }
            assert.ok(Math.abs(out[i * ldo + j] - want) < 1e-12, `${rowsA}×${rowsB}×${len} lower=${lower} sign=${sign}: [${i}][${j}] ${out[i * ldo + j]} vs ${want}`);
          }
        }
      }
    }
  }
});

test('the Laplace deviance, its gradient and û do not depend on the evaluations before (warm starts, chord steps)', () => {
  // Every participant answers every feature once: the cross block is dense (the benchmark's case).
  const frame = Table.fromRows(
    simulateStudy({
      participants: 40,
      factors: { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] },
      featuresPerCell: 6,
      intercept: 0.3,
      effects: { 'basis=nmf': 0.5 },
      participantSlopes: [{ effect: 'basis=nmf', sd: 0.6, cor: 0.3 }],
      sdParticipant: 0.5,
      sdFeature: 0.8,
      trialsPerParticipant: 24,
      seed: 3,
    }),
  );
  const { input } = buildInput(parseFormula('correct ~ basis + (1 + basis | participant) + (1 | feature)'), frame);
  assert.equal(new BlockSystem(input.groups).dense, true, 'the test covers the dense Schur complement');
  // θ = (T11, T21, T22 of participant; T of feature), then β: far jumps, small steps (as the
  // finite-difference Hessian takes them), a nearly singular T and back.
  const points = [
    [1, 0, 1, 1, 0, 0],
    [0.2, 0.9, 1.8, 0.1, 0.6, -0.4],
    [0.2001, 0.9, 1.8, 0.1, 0.6, -0.4],
    [0.2, 0.9, 1.8001, 0.1, 0.6, -0.4],
    [0.5, 0.2, 0.4, 0.8, 0.3, 0.5],
    [0.5, 0.2, 1e-7, 0.8, 0.3, 0.5],
    [1.5, -0.7, 0.3, 2, 0.4, 0.45],
    [0.5, 0.2, 0.4, 0.8, 0.3, 0.5],
  ].map((x) => Float64Array.from(x));
  const warm = new LaplaceObjective(input);
  for (const x of points) {
    const a = warm.valueGrad(x);
    const cold = new LaplaceObjective(input);
    const b = cold.valueGrad(x);
    const at = `at x = ${Array.from(x).join(', ')}`;
    assert.ok(Math.abs(a.f - b.f) < 1e-9, `deviance ${at}: warm ${a.f} vs cold ${b.f}`);
    for (let j = 0; j < x.length; j++) {
      assert.ok(Math.abs(a.g[j] - b.g[j]) < 1e-6 * Math.max(1, Math.abs(b.g[j])), `∂/∂x${j} ${at}: warm ${a.g[j]} vs cold ${b.g[j]}`);
    }
    let du = 0;
    for (let j = 0; j < warm.u.length; j++) du = Math.max(du, Math.abs(warm.u[j] - cold.u[j]));
    assert.ok(du < 1e-6, `û ${at}: largest difference ${du}`);
  }
  assert.equal(warm.warnings.size, 0, [...warm.warnings].join('; '));
});
