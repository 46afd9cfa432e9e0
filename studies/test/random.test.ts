import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rng, seedFrom } from '../src/random.ts';

test('the seeded generator is deterministic and roughly uniform', () => {
  const a = rng(9);
  const b = rng(9);
  const xs = Array.from({ length: 20_000 }, () => a.next());
  assert.deepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => b.next()));
  assert.notDeepEqual(xs.slice(0, 5), Array.from({ length: 5 }, () => rng(10).next()));
  const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
  assert.ok(Math.abs(mean - 0.5) < 0.01, `mean ${mean}`);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
  const normals = Array.from({ length: 20_000 }, () => a.normal());
  const m = normals.reduce((s, x) => s + x, 0) / normals.length;
  const v = normals.reduce((s, x) => s + (x - m) ** 2, 0) / normals.length;
  assert.ok(Math.abs(m) < 0.03 && Math.abs(v - 1) < 0.05, `normal mean ${m}, variance ${v}`);
});

test('sample draws distinct items; shuffled is a permutation and leaves its input alone', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  const s = rng(1).sample(items, 20);
  assert.equal(new Set(s).size, 20);
  assert.throws(() => rng(1).sample(items, 51), /cannot sample 51 of 50/);
  const sh = rng(2).shuffled(items);
  assert.deepEqual([...sh].sort((x, y) => x - y), items);
  assert.notDeepEqual(sh, items);
  assert.deepEqual(items.slice(0, 3), [0, 1, 2]);
});

test('seedFrom separates its parts and spreads nearby inputs', () => {
  assert.notEqual(seedFrom('ab', 'c'), seedFrom('a', 'bc'));
  assert.equal(seedFrom('split', 1, 'x.png'), seedFrom('split', 1, 'x.png'));
  const seeds = new Set(Array.from({ length: 1000 }, (_, i) => seedFrom('img', i)));
  assert.equal(seeds.size, 1000);
});
