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
import { TRIAL_COLUMNS } from '../src/columns.ts';
import { parseCsvRecords } from '../src/csv.ts';
import { PARTICIPANT_COLUMNS } from '../src/participants.ts';
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
    const subj = p === 0 ? 'NA' : `s${p}`; // a participant called "NA": text, not a missing value
    rows.push(`${subj},u0,c1,main,True,1,900`);
    w.demo++;
    for (let i = 0; i < 4; i++) {
      rows.push(`${subj},u${i},c1,practice,False,1,800`);
      w.practice++;
    }
    for (let f = 0; f < 12; f++) {
      const cond = f < 6 ? 'c1' : 'c2';
      const correct = rng.float() < (cond === 'c2' ? 0.8 : 0.6) ? 1 : 0;
      rows.push(`${subj},u${f},${cond},main,False,${correct},${f === 11 ? '' : 1000 + rng.int(900)}`);
      w.main++;
      const k = w.byCond.get(cond) ?? [0, 0];
      k[0] += correct;
      k[1]++;
      w.byCond.set(cond, k);
    }
    rows.push(`${subj},u1,c1,repeated,False,1,700`);
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

test('legible export --mapping writes the same tidy tables as from a database, typed by datapackage.json; R and pandas read them back as meant', async () => {
  const mapFile = join(tmp, 'mapping-export.yaml');
  writeFileSync(
    mapFile,
    [...base, 'rows: { is_demo: False }', 'practice: { column: phase, values: [practice, repeated] }', 'conditions: { basis: cond }', 'exclusions: { catch_accuracy_min: 0.5 }'].join('\n'),
  );
  const dir = join(tmp, 'exported');
  const r = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'export', w.file, '--mapping', mapFile, '--out', dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /imported: 10 sessions — 0 did not finish, 0 excluded by the study's rules, 0 excluded, 10 analysed/);
  const trials = readFileSync(join(dir, 'trials.csv'), 'utf8');
  assert.equal(trials.split('\n')[0], TRIAL_COLUMNS.map((c) => c.name).join(','), 'the header of a database export');
  assert.equal(readFileSync(join(dir, 'participants.csv'), 'utf8').split('\n')[0], PARTICIPANT_COLUMNS.map((c) => c.name).join(','));
  assert.ok(!TRIAL_COLUMNS.some((c) => c.name === 'condition'), 'no packed factor=level;… column');
  assert.ok(['condition_basis', 'condition_layer', 'condition_reference_kind'].every((n) => TRIAL_COLUMNS.some((c) => c.name === n)));
  const rows = parseCsvRecords(trials);
  assert.equal(rows.length, w.main + w.practice + w.repeated);
  assert.equal(rows.filter((x) => x.is_practice === '1').length, w.practice + w.repeated);
  assert.equal(rows.filter((x) => x.participant === 'NA').length, rows.length / 10);
  const dict = readFileSync(join(dir, 'data-dictionary.md'), 'utf8');
  assert.match(dict, /legible export --mapping/);

  // Analysing the exported tables gives what analysing the source through the mapping gives.
  const viaMapping = await analyze({ input: w.file, mapping: mapFile, out: join(tmp, 'a1'), boot: 50, permutations: 50, power: false, report: false });
  const viaExport = await analyze({ input: join(dir, 'trials.csv'), out: join(tmp, 'a2'), boot: 50, permutations: 50, power: false, report: false });
  assert.deepEqual(viaExport.cells.map((c) => [c.levels, c.trials, c.accuracy]), viaMapping.cells.map((c) => [c.levels, c.trials, c.accuracy]));
  assert.deepEqual(viaExport.sessionCounts, viaMapping.sessionCounts);
  assert.equal(viaExport.glmm!.fit.logLik, viaMapping.glmm!.fit.logLik);

  // Typed reading from datapackage.json: integers with missing values stay integers, "" is
  // missing, the participant called "NA" stays text, booleans are booleans.
  const pkg = JSON.parse(readFileSync(join(dir, 'datapackage.json'), 'utf8'));
  assert.equal(pkg.resources[0].schema.fields.length, TRIAL_COLUMNS.length);
  assert.deepEqual(pkg.resources[0].schema.missingValues, ['']);
  const expectMissingRt = rows.filter((x) => x.rt_ms === '').length;
  assert.equal(expectMissingRt, 10, 'one main trial per participant has no response time');
  const correctN = rows.filter((x) => x.correct === '1').length;
  const expected = `${rows.length} ${rows.length / 10} 0 ${rows.length} ${expectMissingRt} ${correctN}`;
  const haveR = spawnSync('Rscript', ['-e', 'library(jsonlite); library(readr)'], { encoding: 'utf8' }).status === 0;
  if (haveR) {
    const code = `
      suppressMessages({ library(jsonlite); library(readr) })
      setwd(${JSON.stringify(dir)}); pkg <- fromJSON("datapackage.json", simplifyVector = FALSE); res <- pkg$resources[[1]]
      types <- sapply(res$schema$fields, function(f) f$type); names(types) <- sapply(res$schema$fields, function(f) f$name)
      base <- read.csv(res$path, colClasses = unname(c(string = "character", integer = "integer", number = "numeric", boolean = "integer", datetime = "character")[types]), na.strings = res$schema$missingValues[[1]], check.names = FALSE)
      for (n in names(types)[types == "boolean"]) base[[n]] <- as.logical(base[[n]])
      spec <- do.call(cols, lapply(types, function(t) switch(t, string = col_character(), integer = col_integer(), number = col_double(), boolean = col_logical(), datetime = col_character())))
      rd <- read_csv(res$path, col_types = spec, na = "", progress = FALSE)
      for (d in list(base, as.data.frame(rd))) cat(class(d$confidence), class(d$correct), class(d$rt_ms), nrow(d), sum(d$participant == "NA", na.rm = TRUE), sum(!is.na(d$confidence)), sum(is.na(d$confidence)), sum(is.na(d$rt_ms)), sum(d$correct), "\\n")
    `;
    const out = spawnSync('Rscript', ['-e', code], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    const [readCsv, readr] = out.stdout.trim().split('\n');
    assert.equal(readCsv.trim(), `integer logical numeric ${expected}`, 'read.csv');
    assert.equal(readr.trim(), `integer logical numeric ${expected}`, 'readr');
  }
  const havePandas = spawnSync('/usr/bin/python3', ['-c', 'import pandas'], { encoding: 'utf8' }).status === 0;
  if (havePandas) {
    const py = `
import json, os, pandas as pd
os.chdir(${JSON.stringify(dir)})
res = json.load(open("datapackage.json"))["resources"][0]
kinds = {"string": "string", "integer": "Int64", "number": "float64", "boolean": "boolean", "datetime": "string"}
d = pd.read_csv(res["path"], dtype={f["name"]: kinds[f["type"]] for f in res["schema"]["fields"]}, keep_default_na=False, na_values=res["schema"]["missingValues"])
print(d["confidence"].dtype, d["correct"].dtype, d["rt_ms"].dtype, len(d), int((d["participant"] == "NA").sum()), int(d["confidence"].notna().sum()), int(d["confidence"].isna().sum()), int(d["rt_ms"].isna().sum()), int(d["correct"].sum()))
`;
    const out = spawnSync('/usr/bin/python3', ['-c', py], { encoding: 'utf8' });
    assert.equal(out.status, 0, out.stderr);
    assert.equal(out.stdout.trim(), `Int64 boolean float64 ${expected}`, 'pandas');
  }
});
