// Where an NMF iteration's time goes, part by part, at bench/nmf.ts's 50,000 × 2048, k = 25 (its
// cached matrix; run bench/nmf.ts once first): the three ways of computing UᵀA with onnxruntime (A
// as the second operand of a k-row product, Aᵀ·U over a transposed copy, or Aᵀ·U with the Gemm
// transposing A), A·Wᵀ, the transposed copy itself, allocating and filling a fresh array of A's size,
// a sum over A by `for … of` and by index, the HALS sweep over U's rows on one thread and on two
// (nmf-sweep.ts), the sweep worker's boot, the sweep over W and the error's dot product. Each part's
// time is the fastest of `reps`. The products run with onnxruntime's default spinning.
//
//   node --import tsx stimuli-pipeline/bench/nmf-parts.ts [THREADS] [REPS]   (positional; defaults 2 5)
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadavg } from 'node:os';
import * as ort from 'onnxruntime-node';
import { attr, makeGraph, makeModel, node, tensorInfo } from '../src/onnx/graph.ts';
import { DataType, encodeModel } from '../src/onnx/proto.ts';
import { openSession } from '../src/runtime.ts';
import { halsRows, nmfGram } from '../src/hals.ts';
import { columnGram, halsW } from '../src/nmf.ts';
import { RowSweep } from '../src/nmf-sweep.ts';
import { CACHE, machine } from './lib.ts';

const threads = Number(process.argv[2] ?? 2);
const reps = Number(process.argv[3] ?? 5);
const [n, c, k] = [50000, 2048, 25];
const dir = join(CACHE, `nmf-${n}x${c}-k${k}`);
if (!existsSync(join(dir, 'A.npy'))) throw new Error(`no cached matrix in ${dir}: run \`node --import tsx stimuli-pipeline/bench/nmf.ts 50000x2048\` once first`);

function readNpy(file: string): Float32Array {
  const buf = readFileSync(file);
  const bytes = buf.subarray(10 + buf.readUInt16LE(8));
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

async function fastest(what: string, f: () => unknown | Promise<unknown>): Promise<void> {
  let best = Infinity;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    await f();
    best = Math.min(best, performance.now() - t0);
  }
  console.log(`| ${what} | ${best.toFixed(0)} |`);
}

async function gemm(inputs: [string, number[]][], output: [string, number[]], a: string, b: string, attrs: ReturnType<typeof attr.int>[]) {
  const graph = makeGraph({
    name: 'part',
    inputs: inputs.map(([name, dims]) => tensorInfo(name, DataType.FLOAT, dims)),
    outputs: [tensorInfo(output[0], DataType.FLOAT, output[1])],
    nodes: [node('Gemm', [a, b], [output[0]], attrs, { name: 'gemm' })],
  });
  return (await openSession(encodeModel(makeModel({ graph })), { device: 'cpu', threads })).session;
}

const A = readNpy(join(dir, 'A.npy'));
const U = readNpy(join(dir, 'W0.npy'));
const W = readNpy(join(dir, 'H0.npy'));
console.log(`${await machine()}; onnxruntime threads ${threads}; fastest of ${reps}; load average ${loadavg()[0].toFixed(1)}`);
console.log(`| part, ${n.toLocaleString('en')} × ${c}, k = ${k} | ms |`);
console.log('| --- | ---: |');
let At = new Float32Array(0);
await fastest('transposed copy of A (a fresh array, filled in 8 × 8 tiles)', () => {
  At = new Float32Array(n * c);
  for (let i0 = 0; i0 < n; i0 += 8)
    for (let j0 = 0; j0 < c; j0 += 8)
      for (let j = j0; j < Math.min(c, j0 + 8); j++) for (let i = i0, w = j * n + i0; i < Math.min(n, i0 + 8); i++) At[w++] = A[i * c + j];
});
await fastest('a fresh array of A\'s size, filled with a constant', () => new Float32Array(n * c).fill(1));
await fastest('sum of squares over A, `for … of`', () => {
  let s = 0;
  for (const v of A) s += v * v;
  return s;
});
await fastest('sum of squares over A, by index', () => {
  let s = 0;
  for (let i = 0; i < A.length; i++) s += A[i] * A[i];
  return s;
});
const a = new ort.Tensor('float32', A, [n, c]);
const at = new ort.Tensor('float32', At, [c, n]);
const u = new ort.Tensor('float32', U, [n, k]);
const w = new ort.Tensor('float32', W, [k, c]);
const aw = await gemm([['A', [n, c]], ['W', [k, c]]], ['Y', [n, k]], 'A', 'W', [attr.int('transB', 1)]);
const uta = await gemm([['A', [n, c]], ['U', [n, k]]], ['Y', [k, c]], 'U', 'A', [attr.int('transA', 1)]);
const atu = await gemm([['At', [c, n]], ['U', [n, k]]], ['Y', [c, k]], 'At', 'U', []);
const atuT = await gemm([['A', [n, c]], ['U', [n, k]]], ['Y', [c, k]], 'A', 'U', [attr.int('transA', 1)]);
await fastest('A·Wᵀ (onnxruntime Gemm, transB)', () => aw.run({ A: a, W: w }));
await fastest('UᵀA as Gemm(U, A, transA): A the second operand', () => uta.run({ A: a, U: u }));
await fastest('UᵀA as Aᵀ·U over the transposed copy', () => atu.run({ At: at, U: u }));
await fastest('UᵀA as Gemm(A, U, transA): Aᵀ·U, A the first operand, transposed by the Gemm', () => atuT.run({ A: a, U: u }));
// One HALS sweep over U's rows (TypeScript, one thread) from the gradient the products give.
const AWt = (await aw.run({ A: a, W: w })).Y.data as Float32Array;
const G = nmfGram(W, k, c);
const grad = new Float32Array(n * k);
for (let i = 0; i < n; i++)
  for (let j = 0; j < k; j++) {
    let s = -AWt[i * k + j];
    for (let l = 0; l < k; l++) s += U[i * k + l] * G[l * k + j];
    grad[i * k + j] = s;
  }
const G32 = Float32Array.from(G);
await fastest('one HALS sweep over U\'s rows (halsRows, one thread)', () => halsRows(Float32Array.from(U), AWt, G32, n, k, 1, 0.01, grad));
// The same on two threads (nmf-sweep.ts: half the rows in a worker), after the worker has booted.
const t0 = performance.now();
const rowSweep = new RowSweep(n, k, 1, 0.01);
while (!rowSweep.ready) await new Promise((r) => setTimeout(r, 1));
console.log(`| the sweep worker's boot (once per fit, concurrent with the fit) | ${(performance.now() - t0).toFixed(0)} |`);
await fastest('one HALS sweep over U\'s rows on two threads (RowSweep, the copies in and out included)', () => rowSweep.sweep(Float32Array.from(U), G32, grad));
await rowSweep.close();
// The rest of an iteration's JavaScript: the sweep over W (from UᵀA and UᵀU), the error's ⟨AWᵀ, U⟩.
const UtA = new Float32Array(k * c).fill(1);
const UtU = Float32Array.from(columnGram(U, n, k));
await fastest('one HALS sweep over W (halsW)', () => halsW(Float32Array.from(W), UtA, UtU, k, c, 1, new Float64Array(c)));
await fastest('⟨AWᵀ, U⟩ (the error, every iteration with targetError)', () => {
  let s = 0;
  for (let i = 0; i < AWt.length; i++) s += AWt[i] * U[i];
  return s;
});
