// NMF, k = 25, on a 50,000 × 2048 non-negative matrix (the size of ResNet-50 layer4 spatial means
// of 50,000 images): time for legible to reach scikit-learn's final loss (solver `mu`, default
// max_iter 200 and tol 1e-4), both from the same initial factors, float32, same threads, one run.
//
//   node --import tsx stimuli-pipeline/bench/nmf.ts [rows=50000] [cols=2048] [k=25] [threads=2]
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rng } from '@legible/studies';
import { fitNmf, randomInit } from '../src/nmf.ts';
import { CACHE, machine, reference } from './lib.ts';

const n = Number(process.argv[2] ?? 50_000);
const c = Number(process.argv[3] ?? 2048);
const k = Number(process.argv[4] ?? 25);
const threads = Number(process.argv[5] ?? 2);
const dir = join(CACHE, `nmf-${n}x${c}-k${k}`);

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
function makeMatrix(): Float32Array {
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

mkdirSync(dir, { recursive: true });
let A: Float32Array;
let init: { U: Float32Array; W: Float32Array };
if (existsSync(join(dir, 'H0.npy'))) {
  A = readNpy(join(dir, 'A.npy'));
  init = { U: readNpy(join(dir, 'W0.npy')), W: readNpy(join(dir, 'H0.npy')) };
} else {
  console.error(`making a ${n} × ${c} matrix …`);
  A = makeMatrix();
  init = randomInit(A, n, c, k, 1);
  writeNpy(join(dir, 'A.npy'), A, [n, c]);
  writeNpy(join(dir, 'W0.npy'), init.U, [n, k]);
  writeNpy(join(dir, 'H0.npy'), init.W, [k, c]);
}

console.error('scikit-learn (mu) …');
const sk = reference(['nmf', dir, String(k), '200', '1e-4', String(threads)]) as { seconds: number; iterations: number; error: number; relative_error: number; sklearn: string };
console.error(`scikit-learn: ${sk.seconds.toFixed(1)} s, ${sk.iterations} iterations, error ${sk.error.toFixed(1)}`);

const results: { solver: string; seconds: number; iterations: number; error: number; reached: boolean }[] = [];
for (const solver of ['hals', 'mu'] as const) {
  console.error(`legible (${solver}) …`);
  const t0 = performance.now();
  const fit = await fitNmf(A, n, c, { k, maxIter: 2000, tol: 0, seed: 0, solver, init, targetError: sk.error, device: 'cpu' });
  const seconds = (performance.now() - t0) / 1000;
  const last = fit.history[fit.history.length - 1];
  results.push({ solver, seconds, iterations: last.iteration, error: last.error, reached: last.error <= sk.error });
}

console.log(`machine: ${await machine()}; scikit-learn ${sk.sklearn}; ${threads} threads`);
console.log(`| NMF k=${k}, ${n} × ${c}, float32, same initial factors | seconds | iterations | Frobenius error | ratio to scikit-learn |`);
console.log('| --- | --- | --- | --- | --- |');
console.log(`| scikit-learn \`mu\` (max_iter 200, tol 1e-4) | ${sk.seconds.toFixed(1)} | ${sk.iterations} | ${sk.error.toFixed(1)} | 1 |`);
for (const r of results) {
  console.log(
    `| legible \`${r.solver}\` (onnxruntime products), until ≤ scikit-learn's error | ${r.seconds.toFixed(1)} | ${r.iterations} | ${r.error.toFixed(1)}${r.reached ? '' : ' (not reached)'} | **${(sk.seconds / r.seconds).toFixed(2)}× faster** |`,
  );
}
