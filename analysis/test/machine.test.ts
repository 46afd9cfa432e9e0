// Human accuracy against `legible predict`'s machine score in `legible analyze`: Spearman's ρ (checked
// against SciPy where it is installed), its bootstrap CI, and the report's figure and table.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { averageRanks, spearman, spearmanBootstrap } from '../src/stats/machine.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-machine-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

const scipy = spawnSync('/usr/bin/python3', ['-c', 'import scipy.stats'], { encoding: 'utf8' }).status === 0;

test('average ranks and Spearman\'s ρ, with ties', () => {
  assert.deepEqual([...averageRanks([10, 20, 20, 5])], [2, 3.5, 3.5, 1]);
  assert.equal(spearman([1, 2, 3, 4], [10, 20, 30, 400]), 1);
  assert.equal(spearman([1, 2, 3, 4], [4, 3, 2, 1]), -1);
  assert.ok(Number.isNaN(spearman([1, 1, 1], [1, 2, 3])), 'undefined when one side is constant');
});

test('Spearman\'s ρ equals SciPy\'s on data with ties', { skip: scipy ? false : 'python3 with SciPy is not installed' }, () => {
  const r = new Rng(5);
  const x = Array.from({ length: 40 }, () => Math.round(r.float() * 8) / 8);
  const y = x.map((v) => Math.round((v + 0.4 * r.normal()) * 10) / 10);
  const py = spawnSync('/usr/bin/python3', ['-c', `import json,sys,scipy.stats as s; d=json.load(sys.stdin); print(repr(float(s.spearmanr(d[0], d[1]).correlation)))`], { input: JSON.stringify([x, y]), encoding: 'utf8' });
  assert.equal(py.status, 0, py.stderr);
  assert.ok(Math.abs(spearman(x, y) - Number(py.stdout)) < 1e-12, `${spearman(x, y)} vs SciPy ${py.stdout}`);
});

test('the bootstrap CI of ρ covers the truth and is narrower with more features', () => {
  const r = new Rng(9);
  const draw = (n: number) => {
    const x = Array.from({ length: n }, () => r.normal());
    return { x, y: x.map((v) => v + r.normal()) };
  };
  const small = draw(12);
  const large = draw(200);
  const a = spearmanBootstrap(small.x, small.y, 1000, new Rng(1));
  const b = spearmanBootstrap(large.x, large.y, 1000, new Rng(1));
  assert.ok(a.ci[0] <= a.rho && a.rho <= a.ci[1]);
  // Population ρ_s of a bivariate normal with r = 1/√2: (6/π)·asin(r/2) ≈ 0.690.
  const truth = (6 / Math.PI) * Math.asin(1 / Math.sqrt(2) / 2);
  assert.ok(b.ci[0] < truth && truth < b.ci[1], `[${b.ci}] covers ${truth}`);
  assert.ok(b.ci[1] - b.ci[0] < a.ci[1] - a.ci[0]);
});

test('legible analyze plots human accuracy against the machine score per feature, with ρ and its CI', async () => {
  // 16 features whose true accuracy rises with their machine score; 20 participants answer each.
  const r = new Rng(17);
  const features = Array.from({ length: 16 }, (_, i) => ({ id: `block${2 + (i % 2)}/${i % 4 < 2 ? 'channels' : 'nmf'}/${i}`, p: 0.55 + (0.4 * i) / 15 }));
  const rows = ['study,mode,participant,session,feature,layer,basis,kind,correct,rt_ms,confidence'];
  for (let p = 0; p < 20; p++) {
    for (const f of features) {
      const [layer, basis] = f.id.split('/');
      rows.push(`demo,live,P${p},S${p},${f.id},${layer},${basis},main,${r.float() < f.p ? 1 : 0},${1000 + r.int(900)},${1 + r.int(3)}`);
    }
  }
  mkdirSync(join(tmp, 'data'), { recursive: true });
  writeFileSync(join(tmp, 'data/trials.csv'), `${rows.join('\n')}\n`);
  // The study beside a build whose manifest carries machine scores (all but the last feature).
  const study = join(tmp, 'study.yaml');
  writeFileSync(study, readFileSync(join(root, 'studies/demo/study.yaml'), 'utf8'));
  mkdirSync(join(tmp, 'build'), { recursive: true });
  const score = (p: number) => ({ p, lo: p - 0.03, hi: Math.min(1, p + 0.03), n_pairs: 25, observer: 'dreamsim.onnx:embedding', weak_proxy: false });
  writeFileSync(
    join(tmp, 'build/manifest.json'),
    JSON.stringify({ features: features.map((f, i) => ({ id: f.id, ...(i < 15 && { machine_score: score(0.6 + 0.02 * i) }) })), trials: [] }),
  );
  const out = join(tmp, 'out');
  const result = await analyze({ input: join(tmp, 'data/trials.csv'), out, study, power: false, boot: 500, permutations: 200 });
  const m = result.machine!;
  assert.ok(m, 'a comparison where the manifest has machine scores');
  assert.equal(m.features.length, 15);
  assert.deepEqual(m.unscored, [features[15].id]);
  // ρ recomputed here from the rows written.
  const human = features.slice(0, 15).map((f) => {
    const own = rows.slice(1).filter((row) => row.split(',')[4] === f.id);
    return own.filter((row) => row.split(',')[8] === '1').length / own.length;
  });
  assert.deepEqual(m.features.map((f) => f.human).sort(), human.slice().sort());
  const expected = spearman(
    m.features.map((f) => f.machine),
    m.features.map((f) => f.human),
  );
  assert.ok(Math.abs(m.rho - expected) < 1e-12);
  assert.ok(m.rho > 0.5, `ρ = ${m.rho}`);
  assert.ok(m.ci[0] > 0 && m.ci[0] <= m.rho && m.rho <= m.ci[1] && m.ci[1] <= 1, `CI ${m.ci}`);
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /<h2>Machine observer<\/h2>/);
  assert.match(html, new RegExp(`Spearman's ρ between each feature's human accuracy and its machine score: <b>${m.rho.toFixed(2)}</b> \\(95% CI ${m.ci[0].toFixed(2)} to ${m.ci[1].toFixed(2)}`));
  assert.match(html, /have no machine score/);
  assert.ok(existsSync(join(out, 'figures/machine-observer.svg')));
  assert.ok(existsSync(join(out, 'figures/machine-observer.png')));
  const json = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { machine: { rho: number } };
  assert.equal(json.machine.rho, m.rho);
});

test('without machine scores the report has no machine section', async () => {
  const dir = join(tmp, 'plain');
  mkdirSync(dir, { recursive: true });
  const study = join(dir, 'study.yaml');
  writeFileSync(study, readFileSync(join(root, 'studies/demo/study.yaml'), 'utf8'));
  const out = join(dir, 'out');
  const result = await analyze({ input: join(tmp, 'data/trials.csv'), out, study, power: false, boot: 200, permutations: 100 });
  assert.equal(result.machine, null);
  assert.doesNotMatch(readFileSync(join(out, 'report.html'), 'utf8'), /Machine observer/);
});
