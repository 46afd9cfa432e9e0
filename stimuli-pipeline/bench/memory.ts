// Peak memory of a whole `legible stimuli` build as the image folder grows: it must stay flat
// (images are streamed, activations go to disk shards, only the study's features are in memory).
// Runs the demo model (28 × 28, two layers, channels + NMF) over 10,000 and 100,000 real JPEGs, each
// build in its own process, and reads the peak resident set size from /usr/bin/time.
//
//   node --import tsx stimuli-pipeline/bench/memory.ts [sizes=10000,100000]
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { machine, ROOT, smallImageFolder } from './lib.ts';

const sizes = (process.argv[2] ?? '10000,100000').split(',').map(Number);
const largest = Math.max(...sizes);
console.error(`images: making ${largest} JPEGs (cached) …`);
const images = await smallImageFolder(largest);

const rows: string[] = [];
for (const n of sizes) {
  const dir = mkdtempSync(join(tmpdir(), 'legible-bench-memory-'));
  copyFileSync(join(ROOT, 'studies/demo/model.onnx'), join(dir, 'model.onnx'));
  writeFileSync(
    join(dir, 'study.yaml'),
    `id: memory
title: Memory
model:
  onnx: model.onnx
  input: { size: 28, channels: gray, mean: [0.286], std: [0.353] }
  layers: [{ name: block2, tensor: block2 }, { name: block3, tensor: block3 }]
dataset:
  images: ${images}
  limit: ${n}
bases: [{ kind: channels }, { kind: nmf, components: 8 }]
features: { select: random, count: 3 }
design: { trials_per_participant: 12 }
text: { consent: c, instructions: i }
`,
  );
  console.error(`building over ${n} images …`);
  const t0 = performance.now();
  const run = spawnSync('/usr/bin/time', ['-v', process.execPath, join(ROOT, 'bin/legible.mjs'), 'stimuli', join(dir, 'study.yaml'), '--batch', '256'], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const seconds = (performance.now() - t0) / 1000;
  if (run.status !== 0) throw new Error(run.stderr.slice(-3000));
  const kb = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(run.stderr)![1]);
  rows.push(`| ${n.toLocaleString('en')} | ${(kb / 1024).toFixed(0)} MiB | ${seconds.toFixed(0)} s | ${(n / seconds).toFixed(0)} |`);
  rmSync(dir, { recursive: true, force: true });
}
console.log(`machine: ${await machine()}`);
console.log('| images | peak RSS (whole build) | wall time | images/s |');
console.log('| --- | --- | --- | --- |');
for (const r of rows) console.log(r);
