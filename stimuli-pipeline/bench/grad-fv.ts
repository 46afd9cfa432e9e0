// Benchmark: seconds per feature visualization (MACO, 256 steps) at 224 px, CPU, legible against a
// PyTorch MACO loop (bench/maco_torch.py: the same objective, parameterisation, augmentations and
// Adam settings on the same torchvision weights), in one run, at the batch sizes a study uses
// (references.visualization.batch, default 8) and others. Features are batched; the figure per
// feature is the time of a step of the batch × 256 ÷ batch size. Each side runs --warmup steps, then
// --steps timed steps (scaled to 256); the sides alternate --rounds times and the fastest round of
// each is kept (the one least disturbed by other work on a shared machine). PyTorch runs in every
// configuration of --torch (threads:channels_last, e.g. 2:0 = 2 threads, contiguous) and its best
// is the baseline; legible runs at each of --threads (onnxruntime intra-op threads; a study uses one
// per core). Process CPU seconds per step are reported beside wall-clock seconds.
//
//   node --import tsx stimuli-pipeline/bench/grad-fv.ts [--archs resnet50] [--batches 1,2,8]
//        [--warmup 2] [--steps 8] [--rounds 2] [--torch 1:0,1:1,2:0,2:1] [--threads 2,1]
//        [--device cpu] [--tensor logits]
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import type { Device } from '../src/runtime.ts';
import { visualizeFeatures } from '../src/fv/visualize.ts';
import { cachedRun, ROOT, TORCH_PYTHON, torchMissing } from '../test/torch-ref.ts';

const { values } = parseArgs({
  options: {
    archs: { type: 'string', default: 'resnet50' },
    batches: { type: 'string', default: '1,2,8' },
    warmup: { type: 'string', default: '2' },
    steps: { type: 'string', default: '8' },
    rounds: { type: 'string', default: '2' },
    torch: { type: 'string', default: '1:0,1:1,2:0,2:1' },
    threads: { type: 'string', default: availableParallelism() > 1 ? `${availableParallelism()},1` : '1' },
    device: { type: 'string', default: 'cpu' },
    tensor: { type: 'string', default: 'logits' },
  },
});
const missing = torchMissing();
if (missing) throw new Error(missing);
const int = (name: string, v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} ${v}: expected a positive integer`);
  return n;
};
const batches = values.batches!.split(',').map((b) => int('batches', b));
const warmup = int('warmup', values.warmup!);
const steps = int('steps', values.steps!);
const rounds = int('rounds', values.rounds!);
const legibleThreads = values.threads!.split(',').map((t) => int('threads', t));
const torchConfigs = values.torch!.split(',').map((c) => {
  const m = /^(\d+):([01])$/.exec(c);
  if (!m) throw new Error(`--torch ${c}: expected threads:channels_last, e.g. 2:0 or 1:1`);
  return { threads: Number(m[1]), channelsLast: m[2] === '1' };
});
const input = { size: 224, channels: 'rgb' as const, range: 1 as const, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
// Debian's PyTorch allocates through glibc malloc: without these, every step pays fresh page faults.
const torchEnv = { ...process.env, PYTHONWARNINGS: 'ignore', MALLOC_MMAP_THRESHOLD_: '4294967296', MALLOC_TRIM_THRESHOLD_: '4294967296' };

interface Timing {
  wall: number;
  cpu: number;
  objective: [number, number];
  setup?: number;
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function legible(bytes: Uint8Array, batch: number, threads: number): Promise<Timing> {
  const objectives = Array.from({ length: batch }, (_, i) => ({ tensor: values.tensor!, channel: i }));
  const marks: { t: number; cpu: number }[] = [];
  const started = performance.now();
  let setup = 0;
  const r = await visualizeFeatures(bytes, input, objectives, {
    steps: warmup + steps,
    batch,
    threads,
    seed: 1,
    device: values.device as Device,
    onStep: (step) => {
      const cpu = process.cpuUsage();
      marks.push({ t: performance.now(), cpu: (cpu.user + cpu.system) / 1e6 });
      if (step === 0) setup = (performance.now() - started) / 1000;
    },
  });
  const a = marks[warmup - 1];
  const b = marks.at(-1)!;
  const obj = (s: number) => -mean(r.losses.map((l) => l[s]));
  // Set-up: graph building and session creation, before the first step (whose own time is included, one step).
  return { wall: (b.t - a.t) / 1000 / steps, cpu: (b.cpu - a.cpu) / steps, objective: [obj(warmup), obj(warmup + steps - 1)], setup };
}

function pytorch(arch: string, batch: number, cfg: { threads: number; channelsLast: boolean }): Timing {
  const script = join(ROOT, 'stimuli-pipeline/bench/maco_torch.py');
  const args = [script, arch, '224', String(batch), String(cfg.threads), cfg.channelsLast ? '1' : '0', String(warmup), String(steps), values.tensor!];
  const r = spawnSync(TORCH_PYTHON, args, { encoding: 'utf8', env: { ...torchEnv, OMP_NUM_THREADS: String(cfg.threads) }, cwd: join(ROOT, 'stimuli-pipeline/bench') });
  if (r.status !== 0) throw new Error(`maco_torch.py failed:\n${r.stderr.slice(-3000)}`);
  const j = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
  const objs = (o: number[]) => -mean(o);
  return { wall: mean(j.seconds), cpu: mean(j.cpu), objective: [objs(j.objective_first), objs(j.objective_last)] };
}

const load = () => loadavg().map((l) => l.toFixed(1)).join(' ');
console.log(`feature visualization (MACO), 224 px, ${values.tensor} channels, ${warmup} warm-up + ${steps} timed steps (scaled to 256), legible ${values.threads} thread(s) on ${values.device} (onnxruntime ${ort.env.versions.common}); PyTorch configs ${values.torch}; load average at start ${load()}`);
const rows: string[] = [];
const perFeature = (s: number, batch: number) => (s * 256) / batch;
for (const arch of values.archs!.split(',')) {
  const dir = cachedRun('bench/grad_bench.py', [arch, 224], ['export']);
  const bytes = readFileSync(join(dir, 'model.onnx'));
  for (const batch of batches) {
    const ours = legibleThreads.map(() => [] as Timing[]);
    const theirs = torchConfigs.map(() => [] as Timing[]);
    for (let round = 0; round < rounds; round++) {
      for (const [i, threads] of legibleThreads.entries()) {
        const o = await legible(bytes, batch, threads);
        ours[i].push(o);
        console.log(`${arch} batch ${batch} round ${round + 1}: legible ${threads} thread(s) ${o.wall.toFixed(3)} s/step (cpu ${o.cpu.toFixed(2)} s), objective ${o.objective[0].toFixed(2)} → ${o.objective[1].toFixed(2)}, set-up ${o.setup!.toFixed(1)} s; load ${load()}`);
      }
      torchConfigs.forEach((cfg, i) => {
        const t = pytorch(arch, batch, cfg);
        theirs[i].push(t);
        console.log(`  PyTorch ${cfg.threads} thread(s)${cfg.channelsLast ? ', channels-last' : ''}: ${t.wall.toFixed(3)} s/step (cpu ${t.cpu.toFixed(2)} s), objective ${t.objective[0].toFixed(2)} → ${t.objective[1].toFixed(2)}; load ${load()}`);
      });
    }
    const best = (ts: Timing[]) => ts.reduce((a, b) => (b.wall < a.wall ? b : a));
    const perCfg = theirs.map(best);
    const k = perCfg.reduce((a, t, i) => (t.wall < perCfg[a].wall ? i : a), 0);
    const p = perCfg[k];
    const cfg = torchConfigs[k];
    const cfgName = `${cfg.threads} thr${cfg.channelsLast ? ', ch-last' : ''}`;
    const others = perCfg.map((t, i) => `${torchConfigs[i].threads}${torchConfigs[i].channelsLast ? 'L' : ''}: ${perFeature(t.wall, batch).toFixed(0)}`).join(', ');
    for (const [i, threads] of legibleThreads.entries()) {
      const o = best(ours[i]);
      rows.push(
        `| ${arch} | ${batch} | ${threads} | ${o.wall.toFixed(2)} | **${perFeature(o.wall, batch).toFixed(1)}** | ${cfgName} | ${p.wall.toFixed(2)} | **${perFeature(p.wall, batch).toFixed(1)}** | **${(o.wall / p.wall).toFixed(2)}** | ${o.cpu.toFixed(2)} / ${p.cpu.toFixed(2)} | ${others} | ${o.setup!.toFixed(1)} |`,
      );
    }
  }
}
console.log(`\nload average at end ${load()}`);
console.log(
  '\n| model | batch | legible threads | legible s/step | legible s per feature | PyTorch best config | PyTorch s/step | PyTorch s per feature | ratio legible/PyTorch | CPU s/step legible / PyTorch | PyTorch s per feature by config (threads, L = channels-last) | legible set-up s |\n|---|---|---|---|---|---|---|---|---|---|---|---|',
);
for (const r of rows) console.log(r);
