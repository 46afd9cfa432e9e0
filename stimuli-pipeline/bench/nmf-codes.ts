// NMF codes of new images with the dictionary fixed (NmfEncoder.encode: W·a and WWᵀ in float64, the
// exact active-set solve of hals.ts) against SciPy's scipy.optimize.nnls (Lawson–Hanson on the
// c × k least-squares form, the usual reference), on the same rows in the same run: time per row and
// the largest difference. SciPy is called the way it is used — one nnls per row, float64 inputs —
// and its clock covers the loop of solves only (not Python's start-up or reading the data); ours
// covers encode (the products included).
//
//   node --import tsx stimuli-pipeline/bench/nmf-codes.ts
//
// Data (seeded): activation-like rows, ReLU of a shared positive profile times a random gain plus
// noise; dictionaries (1) k = 25 over c = 512 with independent entries, (2) k = 4 over c = 1024 whose
// concepts share most of one profile (cosines ≈ 0.999, as NMF on ResNet-50's layer3 gave).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { rng } from '@legible/studies';
import { NmfEncoder, nmfGram } from '../src/nmf.ts';
import { machine, PYTHON } from './lib.ts';
import { symmetricEigen } from '../../analysis/src/stats/linalg.ts';

const SCIPY = `
import sys, json, time
import numpy as np
from scipy.optimize import nnls
n, c, k = (int(x) for x in sys.argv[2:5])
A = np.fromfile(sys.argv[1] + '/A.bin', dtype=np.float32).reshape(n, c).astype(np.float64)
W = np.fromfile(sys.argv[1] + '/W.bin', dtype=np.float32).reshape(k, c).astype(np.float64)
Wt = np.ascontiguousarray(W.T)
t = time.perf_counter()
U = np.array([nnls(Wt, a, maxiter=50 * k)[0] for a in A])
s = time.perf_counter() - t
U.astype(np.float64).tofile(sys.argv[1] + '/U.bin')
import scipy
print(json.dumps({'seconds': s, 'scipy': scipy.__version__}))
`;

const cases = [
  { label: 'k = 25, c = 512, independent concepts', n: 2000, c: 512, k: 25, shared: 0 },
  { label: 'k = 4, c = 1024, nearly parallel concepts', n: 2000, c: 1024, k: 4, shared: 1 },
];
console.log(`machine: ${await machine()}; load average at start ${loadavg()[0].toFixed(2)}`);
console.log('| dictionary | rows | cond(WWᵀ) | ours: ms per 1,000 rows | SciPy nnls: ms per 1,000 rows | ratio (SciPy / ours) | largest difference (of the row\'s largest code) |');
console.log('|---|---|---|---|---|---|---|');
for (const { label, n, c, k, shared } of cases) {
  const r = rng(7 + k);
  const profile = Float64Array.from({ length: c }, () => r.next());
  const W = Float32Array.from({ length: k * c }, (_, i) => (shared ? profile[i % c] * (1 + 0.05 * r.normal()) + 0.01 * r.next() : Math.max(0, r.normal() + 0.3)));
  const A = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    const gain = 3 * r.next();
    for (let q = 0; q < c; q++) A[i * c + q] = Math.max(0, gain * profile[q] + 0.5 * r.normal());
  }
  const dir = mkdtempSync(join(tmpdir(), 'legible-bench-nnls-'));
  try {
    writeFileSync(join(dir, 'A.bin'), A);
    writeFileSync(join(dir, 'W.bin'), W);
    const enc = await NmfEncoder.create(W, k, c);
    await enc.encode(A.subarray(0, 50 * c), 50); // warm-up
    const t0 = performance.now();
    const U = await enc.encode(A, n);
    const ours = performance.now() - t0;
    const py = spawnSync(PYTHON, ['-c', SCIPY, dir, String(n), String(c), String(k)], { encoding: 'utf8' });
    if (py.status !== 0) throw new Error(`SciPy reference failed (${PYTHON}; needs python3-scipy):\n${py.stderr}`);
    const ref = JSON.parse(py.stdout.trim().split('\n').pop()!) as { seconds: number; scipy: string };
    const bytes = readFileSync(join(dir, 'U.bin'));
    const Uref = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    let worst = 0;
    for (let i = 0; i < n; i++) {
      let top = 0;
      for (let j = 0; j < k; j++) top = Math.max(top, Uref[i * k + j]);
      for (let j = 0; j < k; j++) {
        const u = U[i * k + j] <= 1.1e-10 ? 0 : U[i * k + j];
        worst = Math.max(worst, Math.abs(u - Uref[i * k + j]) / Math.max(top, 1e-12));
      }
    }
    const cond = condition(nmfGram(W, k, c), k);
    const perK = (ms: number) => (ms / n) * 1000;
    console.log(`| ${label} | ${n} | ${cond.toExponential(1)} | ${perK(ours).toFixed(0)} | ${perK(ref.seconds * 1000).toFixed(0)} (SciPy ${ref.scipy}) | ${((ref.seconds * 1000) / ours).toFixed(1)}× | ${worst.toExponential(1)} |`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
console.log(`load average at end ${loadavg()[0].toFixed(2)}`);

/** The 2-norm condition number of a symmetric positive-definite k × k matrix, from its eigenvalues. */
function condition(G: Float64Array, k: number): number {
  const { values } = symmetricEigen(Float64Array.from(G), k);
  let lo = Infinity;
  let hi = 0;
  for (const v of values) {
    lo = Math.min(lo, Math.abs(v));
    hi = Math.max(hi, Math.abs(v));
  }
  return hi / lo;
}
