// Feature complexity: disentangler ladders order a teacher's features of known complexity, and the
// training matches PyTorch's on the same data, initialisation and batch order.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { Rng } from '@legible/studies/random';
import { disentanglerParams, initDisentangler, trainLadder } from '../src/train/disentangler.ts';
import { measureComplexity, orderOf, reliability } from '../src/complexity.ts';
import { ROOT, TORCH_PYTHON, torchMissing } from './torch-ref.ts';

const tent = (v: number) => 2 * Math.max(0, v) - 4 * Math.max(0, v - 0.5);

/**
 * A teacher with four features on an 8×8 grid of 16×16 images (2×2 patches): a linear function of
 * the pixels; tent(u), one layer of two ReLUs; tent(tent(u)), two stacked ReLU layers; Gaussian noise
 * (u: the patch mean, in [0, 1]).
 */
function teacher(n: number, seed: number) {
  const r = new Rng(seed);
  const x = Float32Array.from({ length: n * 256 }, () => r.float());
  const wLin = [0.9, -1.3, 0.4, 1.1];
  const f = new Float32Array(n * 4 * 64);
  for (let i = 0; i < n; i++) {
    for (let a = 0; a < 8; a++) {
      for (let b = 0; b < 8; b++) {
        const px = [x[i * 256 + 2 * a * 16 + 2 * b], x[i * 256 + 2 * a * 16 + 2 * b + 1], x[i * 256 + (2 * a + 1) * 16 + 2 * b], x[i * 256 + (2 * a + 1) * 16 + 2 * b + 1]];
        const u = (px[0] + px[1] + px[2] + px[3]) / 4;
        const o = i * 256 + a * 8 + b;
        f[o] = px.reduce((s, p, k) => s + wLin[k] * p, 0);
        f[o + 64] = tent(u);
        f[o + 128] = tent(tent(u));
        f[o + 192] = r.normal();
      }
    }
  }
  return { x, f };
}

describe('disentangler ladder', () => {
  it('orders a teacher by complexity: linear < one ReLU layer ≤ two stacked ReLU layers, noise unexplained', async (t) => {
    const n = 600;
    const { x, f } = teacher(n, 7);
    const ladder = await trainLadder(x, f, n, [1, 16, 16], [4, 8, 8], { depths: [0, 1, 2, 4], width: 16, epochs: 40, batchSize: 32, lr: 3e-3, seed: 3, threads: 1 });
    try {
      const features = [
        { id: 'linear', channel: 0 },
        { id: 'tent', channel: 1 },
        { id: 'tent∘tent', channel: 2 },
        { id: 'noise', channel: 3 },
        // A direction mixing the linear and the deep channel: its nonlinear part gives it an order above 0.
        { id: 'linear+deep', direction: [Math.SQRT1_2, 0, Math.SQRT1_2, 0] },
      ];
      const { layer, features: res } = await measureComplexity(ladder, x, f, features);
      const by = Object.fromEntries(res.map((r) => [r.id, r]));
      for (const r of res) t.diagnostic(`${r.id}: explained ${r.explained.map((e) => e.toFixed(3)).join(' ')} → order ${r.order}${r.reason ? ` (${r.reason})` : ''}`);
      t.diagnostic(`layer: held-out loss ${layer.heldOutLoss.map((e) => e.toFixed(3)).join(' ')}, ρ ${layer.rho.map((e) => e.toFixed(3)).join(' ')}`);
      assert.equal(by.linear.order, 0, 'a linear function of the pixels has order 0');
      assert.ok(by.linear.explained[0] > 0.99, `the linear net explains the linear feature: ${by.linear.explained[0]}`);
      assert.ok(by.tent.order !== null && by.tent.order >= 1, `tent needs a nonlinear layer: order ${by.tent.order}`);
      assert.ok(by['tent∘tent'].order !== null && by['tent∘tent'].order >= 2, `tent∘tent needs two stacked ReLU layers: order ${by['tent∘tent'].order}`);
      assert.ok(by.tent.order! <= by['tent∘tent'].order!, 'one ReLU layer is not more complex than two');
      assert.ok(by['tent∘tent'].explained[1] < by['tent∘tent'].explained[3] - 0.05, 'depth 1 explains clearly less of tent∘tent than depth 4');
      assert.equal(by.noise.order, null, 'noise has no order');
      assert.ok(by.noise.explained.every((e) => e < 0.05), `noise is not explained: ${by.noise.explained}`);
      assert.ok(by['linear+deep'].order! >= 1 && by['linear+deep'].explained[0] < 0.9, `a direction with a nonlinear part: ${by['linear+deep'].explained}`);
      // The layer's share is the channels' shares weighted by their variances (held-out images).
      const v = [0, 1, 2, 3].map((c) => {
        const vals = ladder.heldOut.flatMap((i) => Array.from(f.subarray(i * 256 + c * 64, i * 256 + c * 64 + 64)));
        const m = vals.reduce((a, b) => a + b, 0) / vals.length;
        return vals.reduce((a, b) => a + (b - m) ** 2, 0);
      });
      layer.explained.forEach((e, l) => {
        const weighted = res.slice(0, 4).reduce((s, r, c) => s + v[c] * r.explained[l], 0) / v.reduce((a, b) => a + b, 0);
        assert.ok(Math.abs(e - weighted) < 1e-6, `depth ${layer.depths[l]}: layer ${e}, channels ${weighted}`);
      });
      // ρ(0) is the linear net's whole output: its variance share sits between 0 and the explained share plus the error.
      assert.ok(layer.rho[0] > 0.1 && layer.rho[0] <= 1, `ρ(0) = ${layer.rho[0]}`);
      for (const r of ladder.rungs) assert.ok(r.heldOutLoss < r.history[0], `depth ${r.depth} learns: ${r.history[0]} → ${r.heldOutLoss}`);
      // Reliability: a second "network" whose layer holds two linear functions of each patch (the
      // linear feature and the patch mean u) encodes the order-0 component, not the higher orders'
      // nonlinear parts; one holding noise encodes none.
      const g = new Float32Array(n * 2 * 64);
      const noise = new Rng(99);
      const gNoise = Float32Array.from({ length: n * 2 * 64 }, () => noise.normal());
      for (let i = 0; i < n; i++) {
        for (let p = 0; p < 64; p++) {
          const [a, b] = [Math.floor(p / 8), p % 8];
          g[i * 128 + p] = f[i * 256 + p];
          g[i * 128 + 64 + p] = (x[i * 256 + 2 * a * 16 + 2 * b] + x[i * 256 + 2 * a * 16 + 2 * b + 1] + x[i * 256 + (2 * a + 1) * 16 + 2 * b] + x[i * 256 + (2 * a + 1) * 16 + 2 * b + 1]) / 4;
        }
      }
      const rel = await reliability(ladder, x, g, [2, 8, 8]);
      const relNoise = await reliability(ladder, x, gNoise, [2, 8, 8]);
      t.diagnostic(`reliability per order: linear features ${rel.map((v) => v.toFixed(3)).join(' ')}; noise ${relNoise.map((v) => v.toFixed(3)).join(' ')}`);
      assert.ok(rel[0] > 0.95, `the order-0 component is linear in the patch: ${rel[0]}`);
      for (const k of [1, 2]) assert.ok(rel[k] < rel[0] - 0.3, `order ${layer.depths[k]} holds nonlinear parts: ${rel[k]}`);
      for (const v of relNoise) assert.ok(v < 0.05, `noise encodes no component: ${relNoise}`);
    } finally {
      await ladder.release();
    }
  });

  it('is deterministic for a seed', async () => {
    const n = 40;
    const { x, f } = teacher(n, 1);
    const run = async () => {
      const l = await trainLadder(x, f, n, [1, 16, 16], [4, 8, 8], { depths: [1, 2], width: 4, epochs: 2, batchSize: 8, seed: 9, threads: 1 });
      await l.release();
      return l.rungs.map((r) => [r.heldOutLoss, ...r.history, ...Object.values(r.params).flatMap((v) => Array.from(v))]);
    };
    assert.deepEqual(await run(), await run());
  });

  it('threads: 2 and 3 (data-parallel parts on worker threads) give the one-thread losses to float32 round-off, and repeat bitwise', async (t) => {
    const n = 120;
    const { x, f } = teacher(n, 2);
    // Batch 15: two parts of 8 + 7 images, three of 5.
    const run = async (threads: number, batchSize = 15) => {
      const l = await trainLadder(x, f, n, [1, 16, 16], [4, 8, 8], { depths: [1, 2], width: 8, epochs: 3, batchSize, seed: 6, threads });
      await l.release();
      return l.rungs.map((r) => ({ losses: [...r.history, r.heldOutLoss, r.trainLoss], params: Object.values(r.params).flatMap((v) => Array.from(v)) }));
    };
    const one = await run(1);
    const two = await run(2);
    const three = await run(3);
    // Tolerance: 1e-5 relative. The parts' gradients are summed in another order than one session's
    // reduction over the whole batch (float32 round-off ~1e-7 relative per step), and the difference
    // grows over the 3 epochs' 18 Adam steps; a wrong weighting or part is off by far more.
    for (const [name, other] of [['2', two], ['3', three]] as const) {
      let worst = 0;
      for (const [k, rung] of one.entries()) {
        for (const [i, v] of rung.losses.entries()) {
          const d = Math.abs(other[k].losses[i] - v) / Math.abs(v);
          worst = Math.max(worst, d);
          assert.ok(d <= 1e-5, `threads ${name}, rung ${k}, loss ${i}: ${other[k].losses[i]} vs ${v} at 1 thread`);
        }
      }
      t.diagnostic(`threads ${name}: largest relative loss difference to 1 thread ${worst.toExponential(2)}`);
    }
    assert.notDeepEqual(two, one, 'the parts are really computed apart (bitwise equality with 1 thread would mean they were not)');
    assert.deepEqual(await run(2), two);
    // The default (threads absent or 0) is two parts from batches of 16 up, one below, each on one
    // intra-op thread, whatever this machine's core count: the results of threads 2 and 1.
    assert.deepEqual(await run(0, 16), await run(2, 16), 'the default partition must not depend on the machine');
    assert.deepEqual(await run(0), one);
  });

  it('an error during data-parallel training rejects and ends the worker threads (the process exits by itself)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'legible-ladder-error-'));
    try {
      const script = join(dir, 'fail.mts');
      writeFileSync(
        script,
        `import { trainLadder } from ${JSON.stringify(join(ROOT, 'stimuli-pipeline/src/train/disentangler.ts'))};
const n = 40;
const x = Float32Array.from({ length: n * 256 }, (_, i) => (i % 17) / 17);
const f = Float32Array.from({ length: n * 256 }, (_, i) => (i % 13) / 13);
try {
  await trainLadder(x, f, n, [1, 16, 16], [4, 8, 8], { depths: [1, 2], width: 4, epochs: 3, batchSize: 8, threads: 2,
    onEpoch: (depth, epoch) => { if (depth === 2 && epoch === 1) throw new Error('stop here'); } });
  console.log('resolved');
} catch (err) {
  console.log('rejected: ' + err.message);
}
`,
      );
      // Live workers would keep the process running: a timeout here is the hang this test guards against.
      const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.signal, null, `the process hung (killed by the test's timeout): ${r.stdout}${r.stderr}`);
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'rejected: stop here');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('orderOf: the smallest depth reaching the threshold of the deepest, none below minShare', () => {
    assert.deepEqual(orderOf([1, 2, 4], [0.5, 0.85, 0.9]), { order: 2 });
    assert.deepEqual(orderOf([1, 2, 4], [0.95, 0.96, 0.9]), { order: 1 });
    assert.equal(orderOf([1, 2, 4], [0.01, 0.02, 0.05]).order, null);
    assert.match(orderOf([1, 2, 4], [0.01, 0.02, 0.05]).reason!, /depth 4.*5\.0 %/);
  });

  it('refuses bad ladders and shapes with the key to fix', async () => {
    const { x, f } = teacher(20, 1);
    await assert.rejects(trainLadder(x, f, 20, [1, 16, 16], [4, 8, 8], { depths: [2, 1] }), /complexity\.depths.*ascending/);
    await assert.rejects(trainLadder(x, f, 20, [1, 16, 16], [4, 32, 32], { depths: [1] }), /larger than the image/);
    await assert.rejects(trainLadder(x, f, 5, [1, 16, 16], [4, 8, 8], { depths: [1] }), /not 5 maps|not 5 images/);
  });
});

describe('disentangler training vs PyTorch', { skip: torchMissing() ?? false }, () => {
  it('reaches the same losses from the same data, initialisation and batch order', async (t) => {
    const n = 200;
    const { x, f } = teacher(n, 5);
    const depths = [1, 4];
    const width = 8;
    const epochs = 25;
    const dir = mkdtempSync(join(tmpdir(), 'legible-disentangler-'));
    try {
      const inits = new Map<number, Record<string, Float32Array>>();
      const orders: Record<string, number[][]> = {};
      const ladder = await trainLadder(x, f, n, [1, 16, 16], [4, 8, 8], {
        depths,
        width,
        epochs,
        batchSize: 16,
        lr: 3e-3,
        seed: 4,
        threads: 1,
        init: (shape) => {
          const p = initDisentangler(shape, 100 + shape.depth);
          inits.set(shape.depth, p);
          return p;
        },
        onEpoch: (depth, _epoch, order) => (orders[depth] ??= []).push([...order]),
      });
      await ladder.release();
      // What PyTorch needs: images, standardised targets, initial parameters, batch orders, held-out set.
      const z = new Float32Array(f.length);
      for (let i = 0; i < n; i++) for (let c = 0; c < 4; c++) for (let p = 0; p < 64; p++) z[i * 256 + c * 64 + p] = (f[i * 256 + c * 64 + p] - ladder.mean[c]) / ladder.std[c];
      writeFileSync(join(dir, 'x.bin'), x);
      writeFileSync(join(dir, 'z.bin'), z);
      for (const d of depths) {
        const shape = { input: [1, 16, 16] as const, output: [4, 8, 8] as const, width, depth: d };
        writeFileSync(join(dir, `init${d}.bin`), Buffer.concat(disentanglerParams(shape).map((p) => Buffer.from(inits.get(d)![p.name].buffer))));
      }
      writeFileSync(join(dir, 'job.json'), JSON.stringify({ n, input: [1, 16, 16], output: [4, 8, 8], width, depths, lr: 3e-3, batch: 16, orders, heldOut: ladder.heldOut, train: ladder.train }));
      const r = spawnSync(TORCH_PYTHON, [join(ROOT, 'stimuli-pipeline/test/disentangler_reference.py'), dir], { encoding: 'utf8', timeout: 300_000 });
      assert.equal(r.status, 0, r.stderr);
      const ref = JSON.parse(readFileSync(join(dir, 'result.json'), 'utf8')) as Record<string, { history: number[]; heldOut: number; train: number }>;
      for (const rung of ladder.rungs) {
        const p = ref[rung.depth];
        t.diagnostic(`depth ${rung.depth}: legible held-out ${rung.heldOutLoss.toFixed(5)} train ${rung.trainLoss.toFixed(5)}; PyTorch ${p.heldOut.toFixed(5)} ${p.train.toFixed(5)}; first epoch ${rung.history[0].toFixed(5)} vs ${p.history[0].toFixed(5)}`);
        // The same first epoch to float32 round-off, the same end within 2 % (round-off differences grow over training).
        assert.ok(Math.abs(rung.history[0] - p.history[0]) <= 1e-4 * p.history[0], `depth ${rung.depth} epoch 1: ${rung.history[0]} vs ${p.history[0]}`);
        assert.ok(Math.abs(rung.heldOutLoss - p.heldOut) <= 0.02 * p.heldOut, `depth ${rung.depth} held-out: ${rung.heldOutLoss} vs ${p.heldOut}`);
        assert.ok(Math.abs(rung.trainLoss - p.train) <= 0.02 * p.train, `depth ${rung.depth} train: ${rung.trainLoss} vs ${p.train}`);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
