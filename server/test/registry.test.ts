// The registry: which studies are served, manifests checked against the contract and the files
// in build/, missing manifests built through the pipeline hook, invalid studies skipped or refused.
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readFileSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseStudy } from '@legible/studies';
import { loadRegistry, studyEntry } from '../src/registry.ts';
import { makeFixture } from './fixture.ts';

test('serves every valid study found in the folder, skipping the others with the reason', async () => {
  const fx = makeFixture();
  try {
    mkdirSync(join(fx.studiesDir, 'broken'));
    writeFileSync(join(fx.studiesDir, 'broken', 'study.yaml'), 'id: broken\ntitle: x\n');
    mkdirSync(join(fx.studiesDir, 'not-a-study'));
    const lines: string[] = [];
    const { registry, skipped } = await loadRegistry({ studiesDir: fx.studiesDir, log: (l) => lines.push(l) });
    assert.deepEqual(registry.ids(), ['fixture']);
    assert.equal(skipped.length, 1);
    assert.match(skipped[0].reason, /missing required field/);
    assert.ok(lines.some((l) => l.includes('skipping study')));
    // Asked for by name, a broken study is an error, not a skip.
    await assert.rejects(loadRegistry({ studiesDir: fx.studiesDir, studies: ['broken'] }), /missing required field "model"/);
  } finally {
    fx.cleanup();
  }
});

test('a study without a manifest is built first through the pipeline hook', async () => {
  const fx = makeFixture();
  try {
    const manifestFile = join(fx.studyDir, 'build', 'manifest.json');
    const saved = readFileSync(manifestFile);
    unlinkSync(manifestFile);
    const built: string[] = [];
    const { registry } = await loadRegistry({
      studiesDir: fx.studiesDir,
      studies: ['fixture'],
      build: async (loaded, { log }) => {
        built.push(loaded.study.id);
        log('building…');
        writeFileSync(manifestFile, saved);
      },
    });
    assert.deepEqual(built, ['fixture']);
    assert.equal(registry.get('fixture')!.manifest.trials.length, fx.manifest.trials.length);
    // With a manifest, nothing is built.
    await loadRegistry({ studiesDir: fx.studiesDir, studies: ['fixture'], build: async () => assert.fail('built again') });
  } finally {
    fx.cleanup();
  }
});

test('manifest problems are reported with the field and the fix', async () => {
  const fx = makeFixture();
  const manifestFile = join(fx.studyDir, 'build', 'manifest.json');
  const good = readFileSync(manifestFile, 'utf8');
  const withManifest = (m: unknown) => {
    writeFileSync(manifestFile, typeof m === 'string' ? m : JSON.stringify(m));
    return () => studyEntry(fx.loaded);
  };
  try {
    const m = JSON.parse(good);
    assert.throws(withManifest('{not json'), /not valid JSON.*rebuild the stimuli/);
    assert.throws(withManifest({ ...m, format: 'legible-manifest/0' }), /format is "legible-manifest\/0", this server reads "legible-manifest\/1"/);
    assert.throws(withManifest({ ...m, trials: [{ ...m.trials[0], answer: 2 }, ...m.trials.slice(1)] }), /trials\[0\]\.answer/);
    assert.throws(withManifest({ ...m, study: 'other' }), /built for study "other", not "fixture"/);
    assert.throws(
      withManifest({ ...m, features: m.features.map((f: { layer: string }, i: number) => (i === 0 ? { ...f, layer: 'block9' } : f)) }),
      /feature "block1\/channels\/0" is on layer "block9", which the study file does not list.*rebuild/,
    );
    assert.throws(withManifest({ ...m, trials: m.trials.map((t: { feature: string }, i: number) => (i === 0 ? { ...t, feature: 'ghost/nmf/9' } : t)) }), /refers to feature "ghost\/nmf\/9"/);
    assert.throws(withManifest({ ...m, trials: m.trials.filter((t: { kind: string }) => t.kind !== 'practice') }), /practice trials per participant but the manifest has 0/);
    const escape = structuredClone(m);
    escape.trials[0].assets.min = '../study.yaml';
    assert.throws(withManifest(escape), /outside the build folder/);
    writeFileSync(manifestFile, good);
    unlinkSync(join(fx.studyDir, 'build', m.trials[0].assets.max));
    assert.throws(() => studyEntry(fx.loaded), /1 stimulus file named in the manifest missing/);
  } finally {
    fx.cleanup();
  }
});

test('the demo study file is accepted by the registry once it has a manifest', async () => {
  // The real demo study.yaml, with a fixture manifest made for the demo's layers.
  const demoYaml = readFileSync(new URL('../../studies/demo/study.yaml', import.meta.url), 'utf8');
  const demo = parseStudy(demoYaml).study;
  assert.ok(demo, 'the demo study file is valid');
  const fx = makeFixture({ id: 'demo', trialsPerParticipant: 4, layers: demo.model.layers.map((l) => l.name) });
  try {
    const dir = join(fx.root, 'demo-copy', 'demo');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'study.yaml'), demoYaml.replace(/trials_per_participant: \d+/, 'trials_per_participant: 4'));
    cpSync(join(fx.studyDir, 'build'), join(dir, 'build'), { recursive: true });
    const { registry } = await loadRegistry({ studiesDir: join(fx.root, 'demo-copy') });
    const entry = registry.get('demo')!;
    assert.equal(entry.study.title, 'Which picture fits the pattern? (legible demo)');
    assert.match(entry.html.consent, /<strong>demonstration<\/strong>/);
  } finally {
    rmSync(join(fx.root, 'demo-copy'), { recursive: true, force: true });
    fx.cleanup();
  }
});
