import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadStudy, parseStudy, StudyFileError, type StudyProblem } from '../src/load.ts';
import { SCHEMA_FILE, studyJsonSchema } from '../src/json-schema.ts';

const here = fileURLToPath(new URL('.', import.meta.url));
const root = join(here, '..', '..');
const invalidDir = join(here, 'invalid');

/** Problems of a study file: schema problems, else the file checks of loadStudy. */
function problemsOf(file: string): StudyProblem[] {
  const parsed = parseStudy(readFileSync(file, 'utf8'));
  if (parsed.problems.length) return parsed.problems;
  try {
    loadStudy(file);
    return [];
  } catch (e) {
    if (e instanceof StudyFileError) return e.problems;
    throw e;
  }
}

describe('legible validate: broken study files', () => {
  const files = readdirSync(invalidDir).filter((f) => f.endsWith('.yaml'));

  it('has a corpus of at least 10 broken files', () => {
    assert.ok(files.length >= 10, `only ${files.length} files`);
  });

  for (const name of files) {
    it(`rejects ${name} at the right path and line`, () => {
      const file = join(invalidDir, name);
      const text = readFileSync(file, 'utf8');
      const expectedPath = /^# expect: ?(.*)$/m.exec(text)?.[1]?.trim();
      assert.notEqual(expectedPath, undefined, 'corpus file lacks an "# expect:" header');
      const markerLine = text.split('\n').findIndex((l) => l.includes('#!')) + 1;
      assert.ok(markerLine > 0, 'corpus file lacks a "#!" marker on the faulty line');

      const problems = problemsOf(file);
      assert.ok(problems.length > 0, 'file was accepted');
      const hit = problems.find((p) => p.path === expectedPath);
      assert.ok(hit, `no problem at "${expectedPath}"; got ${JSON.stringify(problems)}`);
      if (expectedPath === '') {
        // A YAML syntax error is reported where the parser notices it: at or just after the fault.
        assert.ok(hit.line >= markerLine && hit.line <= markerLine + 1, `line ${hit.line}, expected about ${markerLine}`);
      } else {
        assert.equal(hit.line, markerLine, `${hit.path}: line ${hit.line}, expected ${markerLine} (${hit.message})`);
      }
      assert.ok(hit.message.length > 10, 'message says nothing');
    });
  }

  it('explains what is allowed', () => {
    const msg = (name: string, path: string) => problemsOf(join(invalidDir, name)).find((p) => p.path === path)!.message;
    assert.match(msg('bad-basis-kind.yaml', 'bases[1].kind'), /channels.*nmf.*sae/);
    assert.match(msg('bad-difficulty.yaml', 'queries.difficulty'), /"extreme".*"p99".*"p95".*"p85".*got "p50"/);
    assert.match(msg('unknown-top-key.yaml', 'desing'), /unknown field "desing" — did you mean "design"\?/);
    assert.match(msg('typo-nested-key.yaml', 'design.trails_per_participant'), /did you mean "trials_per_participant"/);
    assert.match(msg('wrong-type.yaml', 'design.trials_per_participant'), /a number \(main trials per participant\), got "twelve"/);
    assert.match(msg('missing-layers.yaml', 'model.layers'), /missing required field "layers"/);
    assert.match(msg('list-unknown-layer.yaml', 'features.list[1]'), /no layer named "block9"/);
    assert.match(msg('model-missing.yaml', 'model.onnx'), /file not found/);
  });

  it('exits 1 from the command line and prints file:line:column with the path', () => {
    const file = join(invalidDir, 'wrong-type.yaml');
    const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'validate', file], { encoding: 'utf8', cwd: root });
    assert.equal(run.status, 1, run.stderr);
    assert.match(run.stderr, /wrong-type\.yaml:12:\d+ +design\.trials_per_participant: /);
  });
});

describe('legible validate: valid study files', () => {
  it('accepts the demo study and fills in defaults', () => {
    const { study } = loadStudy(join(root, 'studies/demo/study.yaml'), { checkFiles: false });
    assert.equal(study.id, 'demo');
    assert.equal(study.references.per_side, 9);
    assert.deepEqual(study.model.layers.map((l) => l.name), ['block2', 'block3']);
  });

  it('accepts a minimal study, with the field\'s defaults', () => {
    const parsed = parseStudy(readFileSync(join(here, 'valid/minimal.yaml'), 'utf8'));
    assert.deepEqual(parsed.problems, []);
    const s = parsed.study!;
    assert.equal(s.mode, 'pilot');
    assert.equal(s.queries.difficulty, 'extreme');
    assert.equal(s.design.responses_per_feature, 30);
    assert.deepEqual(s.dataset.split, { seed: 0, reference: 0.8, query: 0.2 });
    assert.equal(s.exclusions.repeat_participation, true);
  });

  it('exits 0 from the command line for a valid file', () => {
    const run = spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), 'validate', join(here, 'valid/minimal.yaml')], { encoding: 'utf8', cwd: root });
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /valid study "minimal"/);
  });
});

describe('JSON Schema for editors', () => {
  it('is committed and matches the zod schema (run `npm run schema -w studies`)', () => {
    assert.equal(readFileSync(SCHEMA_FILE, 'utf8'), studyJsonSchema());
  });

  it('rejects unknown keys (additionalProperties: false)', () => {
    const schema = JSON.parse(studyJsonSchema());
    assert.equal(schema.additionalProperties, false);
    assert.equal(schema.properties.design.additionalProperties, false);
  });
});
