// `legible layers` on real torchvision exports (random weights, dynamic batch): wall time and peak
// memory of the whole command, each run in its own process (/usr/bin/time -v), against the targets
// of issue 10 (VGG-16: ≤ 5 s and ≤ 500 MB). Also the CLI's own start-up (`legible --help`), and the
// listing alone in this process (skeleton read + shape inference + layouts), to show where time goes.
// Exits 1 when VGG-16 misses a target: its CPU time (user + sys, what the command costs; wall time
// on a shared machine mostly measures the other jobs) or its peak memory.
//
//   node --import tsx stimuli-pipeline/bench/layers.ts [models=vgg16,vit_b_16] [runs=3]
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { analyzeModel } from '../src/layout.ts';
import { torchvisionExport } from '../test/torch-export.ts';
import { machine, ROOT } from './lib.ts';

const models = (process.argv[2] ?? 'vgg16,vit_b_16').split(',');
const runs = Number(process.argv[3] ?? 3);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

function timed(args: string[]): { seconds: number; cpu: number; mib: number } {
  const r = spawnSync('/usr/bin/time', ['-v', process.execPath, join(ROOT, 'bin/legible.mjs'), ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`legible ${args.join(' ')} failed:\n${r.stderr.slice(-2000)}`);
  const [, m, s] = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:\d+:)?(\d+):([\d.]+)/.exec(r.stderr)!;
  const cpu = Number(/User time \(seconds\): ([\d.]+)/.exec(r.stderr)![1]) + Number(/System time \(seconds\): ([\d.]+)/.exec(r.stderr)![1]);
  return { seconds: 60 * Number(m) + Number(s), cpu, mib: Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)![1]) / 1024 };
}

const rows: string[] = [];
let failed = false;
const startup = Array.from({ length: runs }, () => timed(['--help']));
rows.push(`| (\`legible --help\`: CLI start-up) | – | ${median(startup.map((r) => r.seconds)).toFixed(2)} s | ${median(startup.map((r) => r.cpu)).toFixed(2)} s | ${median(startup.map((r) => r.mib)).toFixed(0)} MiB | – | – |`);
for (const name of models) {
  console.error(`${name}: exporting (cached) …`);
  const { file } = torchvisionExport(name);
  const cli = Array.from({ length: runs }, () => timed(['layers', file, '--json']));
  const inner: number[] = [];
  let count = 0;
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const { tensors, measured } = await analyzeModel(file, { measure: true });
    inner.push((performance.now() - t0) / 1000);
    count = tensors.filter((t) => t.feature).length;
    if (measured.size) console.error(`${name}: ${measured.size} tensors needed onnxruntime`);
  }
  const s = median(cli.map((r) => r.seconds));
  const mib = Math.max(...cli.map((r) => r.mib));
  rows.push(`| ${name} (${(statSync(file).size / 2 ** 20).toFixed(0)} MiB file) | ${count} | ${s.toFixed(2)} s | ${median(cli.map((r) => r.cpu)).toFixed(2)} s | ${mib.toFixed(0)} MiB | ${median(inner).toFixed(2)} s | ${cli.map((r) => r.seconds.toFixed(1)).join(', ')} |`);
  const cpu = median(cli.map((r) => r.cpu));
  if (name === 'vgg16' && (cpu > 5 || mib > 500)) {
    failed = true;
    console.error(`vgg16: ${cpu.toFixed(2)} s of CPU (${s.toFixed(2)} s wall), ${mib.toFixed(0)} MiB — the target is ≤ 5 s and ≤ 500 MB`);
  }
}
console.log(`machine: ${await machine()}; load average ${(await import('node:os')).loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log('| model | feature tensors | `legible layers` wall (median) | CPU time (user + sys, median) | peak RSS (max) | listing alone, in process | each run (wall) |');
console.log('| --- | ---: | ---: | ---: | ---: | ---: | --- |');
for (const r of rows) console.log(r);
process.exit(failed ? 1 : 0);
