// Benchmark: `legible export` of 1,000,000 trials — wall time and peak memory, next to exports
// of 1,000 and 200,000 trials (memory must not grow with the trials). The database is written by the server's own storage code
// (analysis/test/gen-db.ts); each export runs in a fresh process (analysis/test/rss-export.ts) so
// its peak RSS is its own.
//   node --import tsx analysis/bench/export.ts [--trials 1000000] [--dir DIR (keeps the databases)]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { generateDb } from '../test/gen-db.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const { values } = parseArgs({ options: { trials: { type: 'string', default: '1000000' }, dir: { type: 'string' } } });
const big = Number(values.trials);
const dir = values.dir ?? mkdtempSync(join(tmpdir(), 'legible-bench-export-'));
mkdirSync(dir, { recursive: true });

function db(n: number): string {
  const file = join(dir, `trials-${n}.db`);
  if (existsSync(file)) return file;
  const t0 = performance.now();
  generateDb(file, { trials: n });
  console.log(`generated ${n} trials in ${((performance.now() - t0) / 1000).toFixed(1)} s (${(statSync(file).size / 2 ** 20).toFixed(0)} MiB database)`);
  return file;
}

function run(n: number, flags: string[] = []) {
  const out = join(dir, `out-${n}`);
  rmSync(out, { recursive: true, force: true });
  const file = db(n);
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [...flags, '--import', 'tsx', join(root, 'analysis/test/rss-export.ts'), file, out], { encoding: 'utf8', cwd: root });
  if (r.status !== 0) throw new Error(r.stderr);
  const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as { rows: number; participants: number; seconds: number; maxRssMB: number };
  const size = statSync(join(out, 'trials.csv')).size / 2 ** 20;
  return { ...res, processSeconds: (performance.now() - t0) / 1000, csvMiB: size };
}

console.log(`machine: ${cpus().length} × ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`);
const rows: string[] = ['| trials | sessions | export (s) | process incl. start (s) | trials/s | peak RSS (MB) | trials.csv (MiB) | node flags |', '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |'];
for (const [n, flags] of [
  [1000, []],
  [200_000, []],
  [big, []],
  [1000, ['--max-old-space-size=64']],
  [big, ['--max-old-space-size=64']],
] as [number, string[]][]) {
  const r = run(n, flags);
  rows.push(`| ${n.toLocaleString('en')} | ${r.participants} | ${r.seconds.toFixed(2)} | ${r.processSeconds.toFixed(2)} | ${Math.round(r.rows / r.seconds).toLocaleString('en')} | ${r.maxRssMB.toFixed(0)} | ${r.csvMiB.toFixed(0)} | ${flags.join(' ') || '(defaults)'} |`);
  console.log(rows[rows.length - 1]);
}
console.log(`\n${rows.join('\n')}`);
if (!values.dir) rmSync(dir, { recursive: true, force: true });
