// Imports that cannot go silently wrong: a practice/catch column with values the mapping does not
// recognise fails (naming them) instead of analysing practice trials as main trials; values in the
// mapping are compared as the file's text (an unquoted False is the text "False"); level order,
// reference level and display labels per factor; imported data labelled "imported", and no
// absolute path of the input in the report; `legible export --mapping` writes the tidy tables.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { loadMapped, parseMapping } from '../src/mapping.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-mapping-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A file from another tool: phase main/practice/repeated, a demo flag written False/True, condition codes. */
interface Written {
  file: string;
  main: number;
  practice: number;
  repeated: number;
  demo: number;
  byCond: Map<string, [number, number]>;
}
function writeFile(): Written {
  const rng = new Rng(9);
  const rows = ['subj,unit,cond,phase,is_demo,acc,rt'];
  const w: Written = { file: join(tmp, 'other-tool.csv'), main: 0, practice: 0, repeated: 0, demo: 0, byCond: new Map() };
  for (let p = 0; p < 10; p++) {
    rows.push(`s${p},u0,c1,main,True,1,900`);
    w.demo++;
    for (let i = 0; i < 4; i++) {
      rows.push(`s${p},u${i},c1,practice,False,1,800`);
      w.practice++;
    }
    for (let f = 0; f < 12; f++) {
      const cond = f < 6 ? 'c1' : 'c2';
      const correct = rng.float() < (cond === 'c2' ? 0.8 : 0.6) ? 1 : 0;
      rows.push(`s${p},u${f},${cond},main,False,${correct},${1000 + rng.int(900)}`);
      w.main++;
      const k = w.byCond.get(cond) ?? [0, 0];
      k[0] += correct;
      k[1]++;
      w.byCond.set(cond, k);
    }
    rows.push(`s${p},u1,c1,repeated,False,1,700`);
    w.repeated++;
  }
  writeFileSync(w.file, `${rows.join('\n')}\n`);
  return w;
}
const w = writeFile();
const base = ['participant: subj', 'feature: unit', 'correct: acc', 'rt: rt'];

test('a practice column with values that are not true/false fails, naming them; { column, values } marks the practice trials', () => {
  const plain = parseMapping([...base, 'practice: phase'].join('\n'));
  assert.throws(
    () => loadMapped(w.file, plain),
    (e: Error) =>
      e.message.includes('the practice column "phase" has values that are neither true nor false') &&
      e.message.includes(`"main" (${w.main + w.demo} rows)`) &&
      e.message.includes(`"practice" (${w.practice} rows)`) &&
      e.message.includes(`"repeated" (${w.repeated} rows)`) &&
      e.message.includes('practice: { column: phase, values: [main] }'),
  );
  const named = loadMapped(w.file, parseMapping([...base, 'practice: { column: phase, values: [practice, repeated] }'].join('\n')));
  const kind = named.trials.column('kind')!;
  assert.equal(kind.filter((k) => k === 'practice').length, w.practice + w.repeated);
  assert.equal(kind.filter((k) => k === 'main').length, w.main + w.demo);
  assert.throws(() => loadMapped(w.file, parseMapping([...base, 'practice: { column: phase, values: [warmup] }'].join('\n'))), /practice\.values \["warmup"\] match no row of column "phase"/);
});

test('values in the mapping are compared as written in the file: an unquoted False matches the cells "False"', () => {
  const m = parseMapping([...base, 'rows:', '  is_demo: False', 'practice: { column: phase, values: [practice, repeated] }'].join('\n'));
  assert.deepEqual(m.rows, { is_demo: 'False' });
  const data = loadMapped(w.file, m);
  assert.equal(data.trials.n, w.main + w.practice + w.repeated, 'every non-demo row, none of the demo rows');
  // 1.0 and 007 stay the text they are.
  assert.deepEqual(parseMapping([...base, 'rows:', '  rt: [1.0, 007]'].join('\n')).rows, { rt: ['1.0', '007'] });
});

test('level order, reference level and display labels per factor; imported data is labelled so, without the input\'s path', async () => {
  const mapping = [
    ...base,
    'rows: { is_demo: False }',
    'practice: { column: phase, values: [practice, repeated] }',
    'conditions:',
    '  basis: { column: cond, levels: [c1, c2], reference: c2, labels: { c1: Channels, c2: NMF } }',
  ].join('\n');
  const mapFile = join(tmp, 'mapping.yaml');
  writeFileSync(mapFile, mapping);
  const out = join(tmp, 'out');
  const result = await analyze({ input: w.file, mapping: mapFile, out, boot: 100, permutations: 200, power: false });
  assert.deepEqual(result.levels.basis, ['NMF', 'Channels'], 'the reference level first, then the listed order');
  assert.ok(result.glmm, result.glmmError);
  assert.ok(result.glmm!.fit.xNames.includes('basisChannels'), `treatment contrast against NMF: ${result.glmm!.fit.xNames}`);
  const nmf = result.cells.find((c) => c.levels[0] === 'NMF')!;
  assert.equal(nmf.trials, w.byCond.get('c2')![1]);
  assert.ok(Math.abs(nmf.accuracy - w.byCond.get('c2')![0] / w.byCond.get('c2')![1]) < 1e-12);
  assert.equal(result.sessionCounts.mode, 'imported');
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.match(html, /imported data/);
  assert.doesNotMatch(html, /\blive data\b/);
  assert.ok(!html.includes(tmp), 'no absolute path of the input in the report');
  assert.ok(html.includes('other-tool.csv'));
  assert.doesNotMatch(html, /\(no image\)|least activating references/, 'no empty reference cards for imported data');

  const unlisted = parseMapping([...base, 'conditions:', '  basis: { column: cond, levels: [c1] }'].join('\n'));
  assert.throws(() => loadMapped(w.file, unlisted), /column "cond" \(condition basis\) has values not in its levels \["c1"\]: "c2"/);
  assert.throws(() => loadMapped(w.file, parseMapping([...base, 'conditions:', '  basis: { column: cond, reference: c9 }'].join('\n'))), /reference "c9" is not one of its levels/);
});
