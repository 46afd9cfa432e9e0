// Trial data from another tool: a jsPsych 7/8 CSV export (one row per jsPsych trial, plugin rows
// mixed in — a browser check, instructions with their viewing time, a survey with a JSON
// response — booleans as true/false, empty cells for nulls) read through a mapping file, with
// the IMI paradigm's exclusion rules in the mapping. Each rule is triggered by one participant
// on purpose, and the accuracies are recomputed here from the rows written.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { rng } from '@legible/studies';
import { analyze } from '../src/analyze.ts';
import { loadMapped, parseMapping } from '../src/mapping.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'legible-import-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Quirk = 'none' | 'short-instructions' | 'too-fast' | 'bad-catch' | 'failed-check' | 'few-buttons' | 'repeat';
const people: { subject: string; session: string; quirk: Quirk }[] = [
  ...Array.from({ length: 8 }, (_, i) => ({ subject: `W${100 + i}`, session: `S${i}`, quirk: 'none' as Quirk })),
  { subject: 'W200', session: 'S20', quirk: 'short-instructions' },
  { subject: 'W201', session: 'S21', quirk: 'too-fast' },
  { subject: 'W202', session: 'S22', quirk: 'bad-catch' },
  { subject: 'W203', session: 'S23', quirk: 'failed-check' },
  { subject: 'W204', session: 'S24', quirk: 'few-buttons' },
  { subject: 'W100', session: 'S30', quirk: 'repeat' }, // W100 again, later
];
const HEADER = ['rt', 'stimulus', 'response', 'trial_type', 'trial_index', 'time_elapsed', 'internal_node_id', 'subject', 'session_id', 'success', 'view_history', 'layer', 'channel', 'basis', 'catch_trial', 'is_demo', 'correct', 'confidence', 'button_pressed'];
const q = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** What was written, per session, to work out the expected exclusions and accuracies independently. */
interface Truth {
  quirk: Quirk;
  buttons: Set<number>;
  catchK: number;
  catchN: number;
  instruction: number;
  total: number;
  main: Map<string, [number, number]>;
}
const truth = new Map<string, Truth>();

function expectedRules(t: Truth, session: string): string[] {
  const out: string[] = [];
  if (t.catchK / t.catchN < 0.8) out.push('catch_accuracy');
  if (t.total < 135 || t.total > 2500) out.push('total_time');
  if (t.instruction < 15) out.push('instruction_time');
  if (t.buttons.size < 5) out.push('distinct_responses');
  if (session === 'S30') out.push('repeat_participation');
  if (t.quirk === 'failed-check') out.push('browser_check');
  return out;
}

function jsPsychCsv(): string {
  const r = rng(5);
  const rows: string[] = [HEADER.join(',')];
  for (const p of people) {
    let t = 0;
    let index = 0;
    const tr0: Truth = { quirk: p.quirk, buttons: new Set(), catchK: 0, catchN: 0, instruction: 0, total: 0, main: new Map() };
    truth.set(p.session, tr0);
    const row = (fields: Record<string, string | number | boolean>) => {
      rows.push(HEADER.map((h) => q(fields[h] === undefined ? '' : String(fields[h]))).join(','));
      index++;
    };
    const base = () => ({ subject: p.subject, session_id: p.session, trial_index: index, internal_node_id: `0.0-${index}.0`, time_elapsed: Math.round(t) });
    t += 900;
    row({ ...base(), rt: '', trial_type: 'browser-check', success: p.quirk !== 'failed-check' });
    const instr = p.quirk === 'short-instructions' ? 5200 : 30_000 + r.int(30_000);
    t += instr;
    tr0.instruction = instr / 1000;
    row({ ...base(), rt: instr, trial_type: 'instructions', view_history: '[{"page_index":0,"viewing_time":1200},{"page_index":1,"viewing_time":900}]' });
    const trialMs = p.quirk === 'too-fast' ? 1500 : 6000 + r.int(6000);
    const trials: { kind: 'demo' | 'main' | 'catch'; basis: string; layer: string; channel: number }[] = [];
    for (let i = 0; i < 3; i++) trials.push({ kind: 'demo', basis: 'channels', layer: 'mixed4b', channel: 900 + i });
    for (let i = 0; i < 24; i++) trials.push({ kind: 'main', basis: i % 2 ? 'nmf' : 'channels', layer: i % 4 < 2 ? 'mixed3a' : 'mixed5b', channel: (i * 7) % 40 });
    trials.splice(10, 0, { kind: 'catch', basis: 'channels', layer: 'mixed3a', channel: 500 });
    trials.splice(20, 0, { kind: 'catch', basis: 'nmf', layer: 'mixed5b', channel: 501 });
    for (const tr of trials) {
      const rt = trialMs * (0.7 + 0.6 * r.float());
      t += rt + 300;
      const pCorrect = tr.kind === 'catch' ? (p.quirk === 'bad-catch' && tr.channel === 500 ? 0 : 1) : tr.basis === 'nmf' ? 0.82 : 0.62;
      const correct = r.float() < pCorrect;
      const confidence = correct ? 2 + r.int(2) : 1 + r.int(3);
      const upper = r.float() < 0.5;
      let button = upper ? 3 - confidence : 2 + confidence; // 0–5, as the IMI plugin records it
      if (p.quirk === 'few-buttons') button = [0, 1, 5][r.int(3)];
      row({
        ...base(),
        rt: rt.toFixed(1),
        stimulus: `stimuli/${tr.layer}_${tr.channel}.png`,
        response: button,
        trial_type: 'imi-2afc',
        layer: tr.layer,
        channel: tr.channel,
        basis: tr.basis,
        catch_trial: tr.kind === 'catch',
        is_demo: tr.kind === 'demo',
        correct,
        confidence,
        button_pressed: button,
      });
      if (tr.kind !== 'demo') tr0.buttons.add(button);
      if (tr.kind === 'catch') {
        tr0.catchN++;
        tr0.catchK += correct ? 1 : 0;
      }
      if (tr.kind === 'main') {
        const c = tr0.main.get(tr.basis) ?? [0, 0];
        c[0] += correct ? 1 : 0;
        c[1]++;
        tr0.main.set(tr.basis, c);
      }
    }
    t += 20_000;
    row({ ...base(), rt: 18_000, trial_type: 'survey-text', response: '{"Q0":"It was fine, thanks","Q1":"no"}' });
    tr0.total = t / 1000; // the survey row's time_elapsed, the largest
  }
  return `${rows.join('\r\n')}\r\n`;
}

const MAPPING = `# A jsPsych export of an IMI-style experiment
rows: { trial_type: imi-2afc }
participant: subject
session: session_id
feature: [layer, channel]
correct: correct
rt: rt
confidence: confidence
response: button_pressed
catch: catch_trial
practice: is_demo
conditions:
  basis: basis
  layer: layer
time_elapsed: time_elapsed
instructions: { rows: { trial_type: instructions }, rt: rt }
passed_checks: success
exclusions:
  catch_accuracy_min: 0.8
  total_time_s: { min: 135, max: 2500 }
  instruction_time_s_min: 15
  min_distinct_responses: 5
  repeat_participation: true
`;

test('a jsPsych CSV through a mapping: every IMI exclusion rule, accuracies, the model and the report', async () => {
  const csv = join(tmp, 'jspsych-data.csv');
  writeFileSync(csv, jsPsychCsv());
  const mapFile = join(tmp, 'mapping.yaml');
  writeFileSync(mapFile, MAPPING);
  const data = loadMapped(csv, parseMapping(MAPPING));
  assert.equal(data.trials.n, people.length * 29, 'only the imi-2afc rows are trials');
  assert.ok(data.trials.column('feature')!.includes('mixed3a/7'), 'feature = layer/channel');
  const facts = new Map(data.participants.map((f) => [f.session, f]));
  assert.ok(Math.abs(facts.get('S20')!.instruction_time_s! - 5.2) < 1e-9, 'instruction time from the instructions row');
  assert.equal(facts.get('S23')!.browser_check_failed, true, 'the browser-check row flags the session');
  assert.equal(facts.get('S0')!.browser_check_failed, false);
  assert.equal(facts.get('S30')!.prior_participation, 'session S0', 'W100\'s second session is a repeat');
  assert.equal(facts.get('S22')!.catch_correct, 1);

  const out = join(tmp, 'out');
  const result = await analyze({ input: csv, mapping: mapFile, out, boot: 300, permutations: 1000, power: false });
  const by = new Map(result.exclusions.rules.map((r) => [r.id, r.excluded]));
  const expected = [...truth].map(([session, t]) => ({ session, t, rules: expectedRules(t, session) }));
  for (const rule of ['instruction_time', 'total_time', 'catch_accuracy', 'browser_check', 'distinct_responses', 'repeat_participation']) {
    assert.equal(by.get(rule as never), expected.filter((e) => e.rules.includes(rule)).length, `rule ${rule}`);
  }
  // Each quirk triggers its rule.
  const quirkRule: Record<string, string> = {
    'short-instructions': 'instruction_time',
    'too-fast': 'total_time',
    'bad-catch': 'catch_accuracy',
    'failed-check': 'browser_check',
    'few-buttons': 'distinct_responses',
    repeat: 'repeat_participation',
  };
  for (const e of expected) if (e.t.quirk !== 'none') assert.ok(e.rules.includes(quirkRule[e.t.quirk]), `${e.t.quirk} triggers ${quirkRule[e.t.quirk]}`);
  assert.equal(result.exclusions.rules.find((r) => r.id === 'incomplete')!.active, false, 'completion is unknown for imported data');
  const keptSessions = expected.filter((e) => e.rules.length === 0);
  assert.equal(result.exclusions.excluded, expected.length - keptSessions.length);
  assert.equal(result.counts.keptParticipants, keptSessions.length);
  for (const basis of ['channels', 'nmf']) {
    const [k, n] = keptSessions.reduce(([a, b], e) => [a + e.t.main.get(basis)![0], b + e.t.main.get(basis)![1]], [0, 0]);
    const cells = result.cells.filter((c) => c.levels[0] === basis);
    const got = cells.reduce((a, c) => a + c.accuracy * c.trials, 0);
    assert.ok(Math.abs(got - k) < 1e-9, `${basis}: ${got} correct of ${n}, expected ${k}`);
    assert.equal(cells.reduce((a, c) => a + c.trials, 0), n);
  }
  assert.deepEqual(result.factors, ['basis', 'layer']);
  assert.deepEqual(result.levels.layer, ['mixed3a', 'mixed5b']);
  assert.ok(result.glmm, result.glmmError);
  assert.ok(existsSync(join(out, 'report.html')));
  assert.ok(readFileSync(join(out, 'report.html'), 'utf8').includes('No study file, so no reference images.'));
});

test('the command line reads the same file through --mapping', () => {
  const out = join(tmp, 'cli');
  const r = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'analyze', join(tmp, 'jspsych-data.csv'), '--mapping', join(tmp, 'mapping.yaml'), '--out', out, '--no-power', '--boot', '200', '--permutations', '500'], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const excluded = [...truth].filter(([session, t]) => expectedRules(t, session).length > 0).length;
  assert.match(r.stdout, new RegExp(`^imported: ${people.length} sessions — 0 did not finish, ${excluded} excluded by the study's rules, ${excluded} excluded, ${people.length - excluded} analysed\n${people.length - excluded} participants,`));
});

test('mapping mistakes are reported with the field and the fix', () => {
  assert.throws(() => parseMapping('participant: subject\ncorrect: correct\n', 'm.yaml'), /m\.yaml: 1 problem\n {2}feature: /);
  assert.throws(() => parseMapping('participant: subject\nfeature: f\ncorrect: c\ncolour: red\n', 'm.yaml'), /Unrecognized key: "colour"/);
  const csv = join(tmp, 'small.csv');
  writeFileSync(csv, 'who,unit,ok\na,u1,true\na,u2,maybe\n');
  assert.throws(() => loadMapped(csv, parseMapping('participant: who\nfeature: unit\ncorrect: ok\nrt: time\n')), /names column "time" that the file does not have/);
  assert.throws(() => loadMapped(csv, parseMapping('participant: who\nfeature: unit\ncorrect: ok\n')), /row 2 of the trial rows has "maybe" in the correct column "ok"; expected 1\/0 or true\/false/);
  assert.throws(() => loadMapped(csv, parseMapping('participant: who\nfeature: unit\ncorrect: ok\nrows: { kind: main }\n')), /the mapping names column "kind" that the file does not have/);
});
