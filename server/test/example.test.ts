// The annotated example a session gets (issue 11, item 7): never a trial of its own task list, nor
// any trial that shares an image with it; the manifest's dedicated example first, else a practice
// trial the task list leaves out; the same on every resume.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ManifestTrial } from '@legible/studies';
import { assignTasks, emptyLoad, exampleFor, makePlan } from '../src/assign.ts';
import { fixtureMaker } from './fixture.ts';

const fixture = fixtureMaker();
const images = (t: ManifestTrial) => [t.assets.min, t.assets.max, ...t.assets.queries];

test('without a dedicated example: a practice trial of the pool that no task shares an image with', () => {
  const f = fixture({ practiceTrials: 2 });
  const plan = makePlan(f.loaded.study.design, f.manifest);
  const trials = new Map(f.manifest.trials.map((t) => [t.id, t]));
  for (let seed = 0; seed < 20; seed++) {
    const { tasks } = assignTasks(plan, seed, emptyLoad());
    const example = exampleFor(plan, tasks, trials);
    assert.ok(example, `seed ${seed}: the fixture's pool has 3 practice trials for 2`);
    assert.equal(example.kind, 'practice');
    const used = new Set(tasks.flatMap((t) => images(trials.get(t.trial)!)));
    for (const a of images(example)) assert.ok(!used.has(a), `seed ${seed}: ${a} is in the task list`);
    assert.deepEqual(exampleFor(plan, tasks, trials), example, 'the same for the same task list');
  }
  // A pool with nothing to spare: no example rather than one the participant will see again.
  const all = fixture({ practiceTrials: 3 });
  const planAll = makePlan(all.loaded.study.design, all.manifest);
  const { tasks } = assignTasks(planAll, 1, emptyLoad());
  assert.equal(exampleFor(planAll, tasks, new Map(all.manifest.trials.map((t) => [t.id, t]))), null);
});

test('a dedicated example trial is preferred, unless one of its images is in the task list', () => {
  const f = fixture({ practiceTrials: 2 });
  const practice = f.manifest.trials.filter((t) => t.kind === 'practice');
  const dedicated: ManifestTrial = { ...practice[0], id: 'x/example/natural', kind: 'example', assets: { min: 'img/ex-min.png', max: 'img/ex-max.png', queries: ['img/ex-q0.png', 'img/ex-q1.png'] } };
  const manifest = { ...f.manifest, trials: [...f.manifest.trials, dedicated] };
  const plan = makePlan(f.loaded.study.design, manifest);
  const trials = new Map(manifest.trials.map((t) => [t.id, t]));
  const { tasks } = assignTasks(plan, 3, emptyLoad());
  assert.equal(tasks.some((t) => t.trial === dedicated.id), false, 'an example trial is never assigned');
  assert.equal(exampleFor(plan, tasks, trials)?.id, dedicated.id);
  // Its query is also a query of a task: the next candidate.
  const first = trials.get(tasks[0].trial)!;
  const clash: ManifestTrial = { ...dedicated, assets: { ...dedicated.assets, queries: [first.assets.queries[1], 'img/ex-q1.png'] } };
  const planClash = makePlan(f.loaded.study.design, { ...f.manifest, trials: [...f.manifest.trials, clash] });
  const got = exampleFor(planClash, tasks, new Map([...trials, [clash.id, clash]]));
  assert.notEqual(got?.id, clash.id);
  assert.equal(got?.kind, 'practice');
});
