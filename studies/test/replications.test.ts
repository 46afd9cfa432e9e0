// The replication studies (studies/<replication>/<id>/study.yaml, each replication folder with its
// README): every study file is valid against the schema, and each README names its studies, the
// downloads, the exact commands (on folders that exist) and the expected full-size build time.
// Building them (on random-weight stand-ins) is stimuli-pipeline/test/replications.test.ts.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseStudy } from '../src/load.ts';

const studies = fileURLToPath(new URL('..', import.meta.url));
const root = join(studies, '..');
const replications = readdirSync(studies, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(studies, d.name, 'README.md')))
  .map((d) => d.name);

describe('replication studies', () => {
  it('are the three of issue 14', () => {
    assert.deepEqual(replications.sort(), ['imi-protocol', 'natural-vs-visualization', 'neurons-vs-dictionary']);
  });

  for (const name of replications) {
    const dir = join(studies, name);
    const ids = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory() && existsSync(join(dir, d.name, 'study.yaml')))
      .map((d) => d.name);

    it(`${name}: every study file is valid, its id is its folder's name, and it reads the models/ and data/ the README names`, () => {
      assert.ok(ids.length > 0, 'no study folders');
      for (const id of ids) {
        const parsed = parseStudy(readFileSync(join(dir, id, 'study.yaml'), 'utf8'));
        assert.deepEqual(parsed.problems, [], `${name}/${id}`);
        const study = parsed.study!;
        assert.equal(study.id, id);
        assert.match(study.model.onnx, /^\.\.\/\.\.\/\.\.\/models\/[a-z0-9_]+\/model\.onnx$/);
        assert.equal(study.model.input, undefined, 'model.input should come from model.json (legible model init)');
        assert.equal(study.dataset.images, '../../../data/imagenet/val');
        assert.equal(study.references.per_side, 9);
        assert.equal(study.design.trials_per_participant, 40);
        assert.equal(study.design.catch_trials, 5);
        assert.equal(study.design.responses_per_feature, 30);
        if (study.recruitment.platform === 'prolific') assert.ok(study.recruitment.unsynced, 'a Prolific study needs an unsynced code');
      }
    });

    it(`${name}: the README says what it replicates, what to download, the commands and the build time`, () => {
      const readme = readFileSync(join(dir, 'README.md'), 'utf8');
      for (const heading of ['## What to download', '## Commands', '## Expected full-size build time', '## Tested']) assert.ok(readme.includes(heading), `no "${heading}"`);
      assert.match(readme, /\*\*Replicates\*\*/);
      for (const id of ids) {
        assert.ok(readme.includes(`npx legible stimuli studies/${name}/${id}`), `no build command for ${id}`);
        const model = parseStudy(readFileSync(join(dir, id, 'study.yaml'), 'utf8')).study!.model.onnx.replace('../../../', '');
        assert.ok(readme.includes(`npx legible model init ${model} --preset torchvision`), `no model init for ${model}`);
      }
      for (const m of readme.matchAll(/npx legible \S+ (studies\/[^\s]+)/g)) assert.ok(existsSync(join(root, m[1])), `${m[1]} does not exist`);
    });
  }
});
