// Start-up time of `legible serve` on the demo, the way `npm start` runs it (bin/legible.mjs):
//   node --import tsx server/bench/start.ts [--runs 5] [--study demo]
//
// The first start on a fresh database checks the study (the stimuli pipeline's staleness check:
// it reads and hashes the model and lists every image); the restarts that follow find the study
// unchanged since that check (fingerprints in the database) and skip it. Prints the time from
// spawning the process to the "serving on" line, for the first start and the median of the
// restarts, and the CPU time of each start (user + system, from /proc), which the other
// processes on a shared machine disturb less than the wall time. The demo's stimuli must be built
// (`legible stimuli demo`, or one `npm start`). `legible serve` runs the server bundle while it is up
// to date (server/bundle.mjs; `npm run build -w server` refreshes it), else the sources through tsx;
// the first line printed says which, and LEGIBLE_FROM_SOURCE=1 measures the sources on purpose.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repo = fileURLToPath(new URL('../..', import.meta.url));

/** CPU seconds of a process's children that have exited and been waited for (cutime + cstime), from /proc. */
const childrenCpu = (): number => {
  try {
    const f = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(f[13]) + Number(f[14])) / 100;
  } catch {
    return NaN;
  }
};

export async function startOnce(db: string, study: string): Promise<{ ms: number; cpuMs: number; output: string }> {
  const cpu0 = childrenCpu();
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(repo, 'bin/legible.mjs'), 'serve', '--port', '0', '--db', db, '--study', study], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, LOG_LEVEL: 'warn' },
  });
  let out = '';
  const exited = once(child, 'exit');
  const ms = await new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (/serving on /.test(out)) resolve(performance.now() - t0);
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`serve exited (${code}) before listening:\n${out}`)));
  });
  child.kill('SIGTERM');
  await exited;
  return { ms, cpuMs: (childrenCpu() - cpu0) * 1000, output: out };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' }, study: { type: 'string', default: 'demo' } } });
  const { bundleStale } = await import('../bundle.mjs');
  const stale = process.env.LEGIBLE_FROM_SOURCE && process.env.LEGIBLE_FROM_SOURCE !== '0' ? 'LEGIBLE_FROM_SOURCE is set' : bundleStale();
  console.log(stale === undefined ? 'runs the server bundle (server/dist, up to date)' : `runs the sources through tsx (server bundle not used: ${stale})`);
  const dir = mkdtempSync(join(tmpdir(), 'legible-start-'));
  try {
    const db = join(dir, 'start.db');
    const first = await startOnce(db, values.study!);
    console.log(`first start (study checked):      ${first.ms.toFixed(0)} ms to listening, ${first.cpuMs.toFixed(0)} ms CPU (includes stopping)`);
    const again: { ms: number; cpuMs: number }[] = [];
    for (let i = 0; i < Number(values.runs); i++) {
      const r = await startOnce(db, values.study!);
      if (!/not re-checked/.test(r.output)) throw new Error(`a restart re-checked the study:\n${r.output}`);
      again.push(r);
    }
    const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    console.log(
      `restarts (unchanged, not re-checked): median ${med(again.map((r) => r.ms)).toFixed(0)} ms to listening (${again.map((r) => r.ms.toFixed(0)).join(', ')}), median ${med(again.map((r) => r.cpuMs)).toFixed(0)} ms CPU`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
