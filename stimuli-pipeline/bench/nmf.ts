// NMF against scikit-learn's default solver (`cd`, coordinate descent, with its default tol 1e-4
// and max_iter 200), both from the same initial factors, float32, the same thread count, in one run:
// the time legible's default solver takes to reach scikit-learn's final loss, at each size.
//
//   node --import tsx stimuli-pipeline/bench/nmf.ts [SIZES] [K] [THREADS] [REPS] [VARIANTS]
//   (positional; defaults 50000x2048,5000x512 25 2 1 hals)
//
// scikit-learn runs with `threads` and with 1 OpenBLAS thread, the faster counts (legible too runs
// small products on one thread). variants: `hals` (legible's default: one sweep per pair of
// products; U's rows swept on two threads), `hals-one-thread-sweep` (the same on one thread, as before
// the sweep worker: the same result bit for bit), `hals-accelerated` (up to 8 sweeps over U and 16
// over W per pair; Gillis & Glineur), `mu`. Each side's loss is measured alike, ‖A − U·W‖_F in float64 by numpy on
// the returned factors. With reps > 1 the sides alternate and the fastest run of each counts.
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import { rng } from '@legible/studies';
import { fitNmf, randomInit, type NmfFitOptions } from '../src/nmf.ts';
import { CACHE, machine, reference } from './lib.ts';

const sizes = (process.argv[2] ?? '50000x2048,5000x512').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const k = Number(process.argv[3] ?? 25);
const threads = Number(process.argv[4] ?? 2);
const reps = Number(process.argv[5] ?? 1);
const variants = (process.argv[6] ?? 'hals').split(',');
const SETTINGS: Record<string, Pick<NmfFitOptions, 'solver' | 'sweeps' | 'sweepWorker'>> = {
  hals: { solver: 'hals' },
  'hals-accelerated': { solver: 'hals', sweeps: { U: 8, W: 16 } },
  'hals-one-thread-sweep': { solver: 'hals', sweepWorker: false },
  mu: { solver: 'mu' },
};

function writeNpy(file: string, data: Float32Array, shape: number[]): void {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header = header.padEnd(header.length + ((64 - (total % 64)) % 64), ' ') + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  writeFileSync(file, Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

function readNpy(file: string): Float32Array {
  const buf = readFileSync(file);
  const len = buf.readUInt16LE(8);
  const bytes = buf.subarray(10 + len);
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/**
 * Activation-like data: a sparse non-negative mixture of 40 parts plus noise, rectified (as a ReLU
 * layer's spatial means are). Not exactly low rank, so NMF has a real optimisation to do.
 */
function makeMatrix(n: number, c: number): Float32Array {
  const r = rng(7);
  const parts = 40;
  const U0 = Float32Array.from({ length: n * parts }, () => (r.next() < 0.3 ? -Math.log(1 - r.next()) : 0));
  const W0 = Float32Array.from({ length: parts * c }, () => (r.next() < 0.2 ? -Math.log(1 - r.next()) : 0));
  const A = new Float32Array(n * c);
  for (let i = 0; i < n; i++) {
    const row = A.subarray(i * c, (i + 1) * c);
    for (let p = 0; p < parts; p++) {
      const u = U0[i * parts + p];
      if (u === 0) continue;
      const w = W0.subarray(p * c, (p + 1) * c);
      for (let j = 0; j < c; j++) row[j] += u * w[j];
    }
    for (let j = 0; j < c; j++) row[j] = Math.max(0, row[j] + 0.3 * r.normal());
  }
  return A;
}

interface Sk { threads?: number; seconds: number; iterations: number; error: number; relative_error: number; sklearn: string; numpy: string; blas: string[] }
const lines: string[] = [];
const load: string[] = [];
let skVersion = '';
for (const [n, c] of sizes) {
  const dir = join(CACHE, `nmf-${n}x${c}-k${k}`);
  mkdirSync(dir, { recursive: true });
  let A: Float32Array;
  let init: { U: Float32Array; W: Float32Array };
  if (existsSync(join(dir, 'H0.npy'))) {
    A = readNpy(join(dir, 'A.npy'));
    init = { U: readNpy(join(dir, 'W0.npy')), W: readNpy(join(dir, 'H0.npy')) };
  } else {
    console.error(`making a ${n} × ${c} matrix …`);
    A = makeMatrix(n, c);
    init = randomInit(A, n, c, k, 1);
    writeNpy(join(dir, 'A.npy'), A, [n, c]);
    writeNpy(join(dir, 'W0.npy'), init.U, [n, k]);
    writeNpy(join(dir, 'H0.npy'), init.W, [k, c]);
  }
  let sk: Sk | null = null;
  const best = new Map<string, { seconds: number; iterations: number; error: number; estimate: number }>();
  for (let rep = 0; rep < reps; rep++) {
    load.push(loadavg()[0].toFixed(1));
    // legible runs small products on one thread; scikit-learn gets the same choice: `threads`
    // and 1 OpenBLAS thread, the faster counts (its loss is the same either way).
    let s: Sk | null = null;
    for (const t of threads > 1 ? [threads, 1] : [threads]) {
      console.error(`${n} × ${c}: scikit-learn (cd), ${t} thread(s) …`);
      const run = { ...(reference(['nmf', dir, String(k), '200', '1e-4', String(t), 'cd']) as unknown as Sk), threads: t };
      console.error(`  ${run.seconds.toFixed(2)} s, ${run.iterations} iterations, error ${run.error.toFixed(2)} (${run.blas.join('; ')})`);
      if (!s || run.seconds < s.seconds) s = run;
    }
    if (!sk || s!.seconds < sk.seconds) sk = s!;
    skVersion = `scikit-learn ${s!.sklearn}, numpy ${s!.numpy}, ${s!.blas.join('; ')}`;
    for (const v of variants) {
      console.error(`${n} × ${c}: legible (${v}) …`);
      const t0 = performance.now();
      const fit = await fitNmf(A, n, c, { k, maxIter: 5000, tol: 0, seed: 0, init, targetError: s!.error, device: 'cpu', threads, ...SETTINGS[v] });
      const seconds = (performance.now() - t0) / 1000;
      const last = fit.history[fit.history.length - 1];
      // The loss measured as scikit-learn's: float64, on the returned factors.
      writeNpy(join(dir, 'U.legible.npy'), fit.U, [n, k]);
      writeNpy(join(dir, 'W.legible.npy'), fit.W, [k, c]);
      const { error } = reference(['nmf-error', dir, join(dir, 'U.legible.npy'), join(dir, 'W.legible.npy')]) as { error: number };
      rmSync(join(dir, 'U.legible.npy'));
      rmSync(join(dir, 'W.legible.npy'));
      console.error(`  ${seconds.toFixed(2)} s, ${last.iteration} iterations, error ${error.toFixed(2)} (solver's estimate ${last.error.toFixed(2)})`);
      const prev = best.get(v);
      if (!prev || seconds < prev.seconds) best.set(v, { seconds, iterations: last.iteration, error, estimate: last.error });
    }
  }
  const ref = sk!;
  lines.push(`| ${n.toLocaleString('en')} × ${c} | scikit-learn \`cd\` (defaults: tol 1e-4, max_iter 200), ${ref.threads} thread(s) | ${ref.seconds.toFixed(2)} | ${ref.iterations} | ${ref.error.toFixed(2)} | 1 |`);
  for (const [v, r] of best) {
    const ratio = ref.seconds / r.seconds;
    const lossNote = r.error <= ref.error ? '' : ` (> scikit-learn's by ${(((r.error - ref.error) / ref.error) * 100).toFixed(3)} %)`;
    lines.push(`| ${n.toLocaleString('en')} × ${c} | legible \`${v}\`, until ≤ scikit-learn's loss | ${r.seconds.toFixed(2)} | ${r.iterations} | ${r.error.toFixed(2)}${lossNote} | **${ratio >= 1 ? `${ratio.toFixed(2)}× faster` : `${(1 / ratio).toFixed(2)}× slower`}** |`);
  }
}

console.log(`machine: ${await machine()}; ${skVersion}; at most ${threads} threads each side (legible: one for products under 2^27 multiply-adds); ${reps} run(s) each, fastest counts; load average at each start: ${load.join(', ')}`);
console.log(`| NMF k = ${k}, float32, same initial factors | | seconds | iterations | Frobenius error (float64) | ratio to scikit-learn |`);
console.log('| --- | --- | ---: | ---: | ---: | ---: |');
for (const l of lines) console.log(l);
