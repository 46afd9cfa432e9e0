// Assignment as a pure function: determinism, balance over many simulated participants, lease
// release, between-subject conditions, and answer keys that agree with the manifest.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assignTasks, conditionKey, emptyLoad, latinSquareRow, makePlan, tallyLoad, unitKey, type Plan, type SessionSnapshot, type Task } from '../src/assign.ts';
import { fixtureMaker } from './fixture.ts';

const fixture = fixtureMaker();

const T0 = Date.parse('2030-01-01T00:00:00Z');
const iso = (ms: number) => new Date(ms).toISOString();

/** Simulated participants: each is assigned with the load of those before, then answers everything (or abandons). */
function simulate(plan: Plan, n: number, opts: { abandon?: (i: number) => boolean; limitMin?: number; stepMs?: number; seed0?: number } = {}) {
  const sessions: SessionSnapshot[] = [];
  const limit = (opts.limitMin ?? 30) * 60_000;
  for (let i = 0; i < n; i++) {
    const now = T0 + i * (opts.stepMs ?? 1000);
    const a = assignTasks(plan, (opts.seed0 ?? 1000) + i, tallyLoad(sessions, iso(now)));
    const abandoned = opts.abandon?.(i) ?? false;
    sessions.push({
      status: abandoned ? 'active' : 'finished',
      lease_expires_at: iso(now + limit),
      condition: a.conditionKey,
      tasks: a.tasks,
      answered: abandoned ? [] : a.tasks.map((t) => t.seq),
    });
  }
  return sessions;
}

const mainUnits = (tasks: Task[]) => tasks.filter((t) => t.kind === 'main').map((t) => unitKey(t.feature, t.reference_kind));

describe('assignTasks', () => {
  const f = fixture();
  const plan = makePlan(f.loaded.study.design, f.manifest);

  test('same seed and load → the same task list; another seed → another', () => {
    const a = assignTasks(plan, 42, emptyLoad());
    const b = assignTasks(plan, 42, emptyLoad());
    assert.deepEqual(a, b);
    const others = [1, 2, 3, 4, 5].map((s) => JSON.stringify(assignTasks(plan, s, emptyLoad()).tasks));
    assert.ok(others.some((o) => o !== JSON.stringify(a.tasks)), 'different seeds give different lists');
  });

  test('what is worked out once per plan (its units) is not changed by the assignments made from it', () => {
    // Several trials per unit, which each assignment shuffles.
    const g = fixture({ mainPerFeature: 3, trialsPerParticipant: 12, catchTrials: 2 });
    const p = makePlan(g.loaded.study.design, g.manifest);
    const first = assignTasks(p, 42, emptyLoad());
    for (let s = 0; s < 20; s++) assignTasks(p, s, emptyLoad());
    assert.deepEqual(assignTasks(p, 42, emptyLoad()), first);
  });

  test('practice first, then main and catch trials in the numbers the design asks', () => {
    const { design } = f.loaded.study;
    for (let seed = 0; seed < 20; seed++) {
      const { tasks } = assignTasks(plan, seed, emptyLoad());
      assert.equal(tasks.length, design.practice_trials + design.trials_per_participant + design.catch_trials);
      assert.deepEqual(tasks.map((t) => t.seq), tasks.map((_, i) => i));
      assert.ok(tasks.slice(0, design.practice_trials).every((t) => t.kind === 'practice'));
      const rest = tasks.slice(design.practice_trials);
      assert.equal(rest.filter((t) => t.kind === 'main').length, design.trials_per_participant);
      assert.equal(rest.filter((t) => t.kind === 'catch').length, design.catch_trials);
      assert.equal(new Set(tasks.map((t) => t.trial)).size, tasks.length, 'no trial twice');
    }
  });

  test('catch trials are not always in the same positions', () => {
    const positions = new Set<string>();
    for (let seed = 0; seed < 20; seed++) {
      positions.add(assignTasks(plan, seed, emptyLoad()).tasks.filter((t) => t.kind === 'catch').map((t) => t.seq).join(','));
    }
    assert.ok(positions.size > 3, `catch positions vary with the seed (${[...positions].join(' | ')})`);
  });

  test('query order is randomised and the answer key follows it', () => {
    const trials = new Map(f.manifest.trials.map((t) => [t.id, t]));
    let flipped = 0;
    let total = 0;
    for (let seed = 0; seed < 30; seed++) {
      for (const task of assignTasks(plan, seed, emptyLoad()).tasks) {
        const m = trials.get(task.trial)!;
        total++;
        if (task.order[0] === 1) flipped++;
        assert.deepEqual(task.query_images, [m.query_images[task.order[0]], m.query_images[task.order[1]]]);
        // The query at the answer position is the manifest's max-matching query.
        assert.equal(task.order[task.answer], m.answer);
        assert.equal(task.query_images[task.answer], m.query_images[m.answer]);
      }
    }
    assert.ok(flipped > total * 0.3 && flipped < total * 0.7, `about half flipped (${flipped}/${total})`);
  });

  test('a participant never sees a feature twice when the pool allows it', () => {
    for (let seed = 0; seed < 30; seed++) {
      const main = assignTasks(plan, seed, emptyLoad()).tasks.filter((t) => t.kind === 'main');
      assert.equal(new Set(main.map((t) => t.feature)).size, main.length);
    }
    // 8 features, 2 main trials each, 12 main trials per participant: repeats are unavoidable, but
    // every feature comes once before any comes twice.
    const g = fixture({ mainPerFeature: 2, trialsPerParticipant: 12, catchTrials: 2 });
    const planG = makePlan(g.loaded.study.design, g.manifest);
    for (let seed = 0; seed < 10; seed++) {
      const main = assignTasks(planG, seed, emptyLoad()).tasks.filter((t) => t.kind === 'main');
      const counts = [...new Set(main.map((t) => t.feature))].map((feat) => main.filter((t) => t.feature === feat).length);
      assert.equal(counts.length, 8, 'all 8 features');
      assert.ok(counts.every((c) => c === 1 || c === 2));
      assert.equal(new Set(main.map((t) => t.trial)).size, main.length, 'no manifest trial twice');
    }
  });

  test('within-subject cells (layer × basis) are covered evenly per participant', () => {
    for (let seed = 0; seed < 30; seed++) {
      const main = assignTasks(plan, seed, emptyLoad()).tasks.filter((t) => t.kind === 'main');
      const cells = new Set(main.map((t) => `${t.layer}|${t.basis}`));
      assert.equal(cells.size, 4, `4 main trials cover the 4 cells (seed ${seed})`);
    }
  });

  test('balance holds over 40 simulated participants', () => {
    const sessions = simulate(plan, 40);
    const load = tallyLoad(sessions, iso(T0 + 3600_000 * 24));
    const counts = [...new Set(f.manifest.trials.filter((t) => t.kind === 'main').map((t) => unitKey(t.feature, t.reference_kind)))].map((k) => load.units.get(k) ?? 0);
    assert.equal(counts.length, 8);
    assert.equal(counts.reduce((a, b) => a + b, 0), 40 * 4);
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, `every unit within one response of the others: ${counts.join(',')}`);
  });

  test('balance holds when many participants are active at once (leases count)', () => {
    // 40 participants start before anyone finishes: only the leases balance them.
    const sessions: SessionSnapshot[] = [];
    for (let i = 0; i < 40; i++) {
      const now = iso(T0 + i);
      const a = assignTasks(plan, 500 + i, tallyLoad(sessions, now));
      sessions.push({ status: 'active', lease_expires_at: iso(T0 + 1800_000), condition: a.conditionKey, tasks: a.tasks, answered: [] });
    }
    const load = tallyLoad(sessions, iso(T0 + 100));
    const counts = [...load.units.values()];
    assert.equal(counts.length, 8);
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 1, counts.join(','));
  });

  test('abandoned leases are released after the time limit', () => {
    // Participant A takes 4 of the 8 units and abandons. Before the time limit, B gets the other
    // 4; after it, A's units count as free again and C (with B still active) gets A's units.
    const limit = 30 * 60_000;
    const a = assignTasks(plan, 1, emptyLoad());
    const sa: SessionSnapshot = { status: 'active', lease_expires_at: iso(T0 + limit), condition: a.conditionKey, tasks: a.tasks, answered: [] };
    const tB = T0 + 60_000;
    const b = assignTasks(plan, 2, tallyLoad([sa], iso(tB)));
    assert.equal(new Set([...mainUnits(a.tasks), ...mainUnits(b.tasks)]).size, 8, 'B avoids the units A holds');
    const sb: SessionSnapshot = { status: 'active', lease_expires_at: iso(tB + limit), condition: b.conditionKey, tasks: b.tasks, answered: [] };

    const tC = T0 + limit + 1; // A's lease has expired, B's has not
    const loadC = tallyLoad([sa, sb], iso(tC));
    for (const u of mainUnits(a.tasks)) assert.equal(loadC.units.get(u) ?? 0, 0, `A's unit ${u} is released`);
    for (const u of mainUnits(b.tasks)) assert.equal(loadC.units.get(u), 1, `B's unit ${u} is still leased`);
    const c = assignTasks(plan, 3, loadC);
    assert.deepEqual(new Set(mainUnits(c.tasks)), new Set(mainUnits(a.tasks)));

    // Answers A gave before abandoning stay counted after the lease is gone.
    const firstMain = a.tasks.find((t) => t.kind === 'main')!;
    const partial = tallyLoad([{ ...sa, answered: [firstMain.seq] }], iso(tC));
    assert.equal(partial.units.get(unitKey(firstMain.feature, firstMain.reference_kind)), 1);
    assert.equal([...partial.units.values()].reduce((x, y) => x + y, 0), 1);
  });

  test('balance recovers when a third of the participants abandon', () => {
    const sessions = simulate(plan, 60, { abandon: (i) => i % 3 === 1, stepMs: 5 * 60_000 });
    const end = iso(T0 + 60 * 5 * 60_000 + 3600_000);
    const load = tallyLoad(sessions, end);
    const counts = [...load.units.values()];
    assert.equal(counts.reduce((a, b) => a + b, 0), 40 * 4, 'only the 40 finished participants count');
    assert.ok(Math.max(...counts) - Math.min(...counts) <= 2, counts.join(','));
  });
});

describe('between-subject factors', () => {
  const f = fixture({ design: ['between: [basis]'], within: ['layer'] });
  const { design } = f.loaded.study;
  const plan = makePlan(design, f.manifest);

  test('conditions are the levels present in the manifest', () => {
    assert.deepEqual(plan.conditions.map((c) => c.key), [conditionKey({ basis: 'channels' }), conditionKey({ basis: 'nmf' })]);
  });

  test('each participant gets one level, only its trials, and the levels stay balanced', () => {
    const sessions = simulate(plan, 40);
    const perCondition = new Map<string, number>();
    for (const s of sessions) {
      perCondition.set(s.condition, (perCondition.get(s.condition) ?? 0) + 1);
      const level = (JSON.parse(s.condition) as { basis: string }).basis;
      for (const t of s.tasks.filter((t) => t.kind === 'main')) assert.ok(t.feature.includes(`/${level}/`), `${t.feature} belongs to ${level}`);
    }
    assert.deepEqual([...perCondition.values()], [20, 20]);
  });

  test('makePlan refuses a design the manifest cannot fill, naming the fix', () => {
    assert.throws(() => makePlan({ ...design, trials_per_participant: 5 }, f.manifest), /asks for 5 main trials.*has 4.*trials_per_participant/);
    assert.throws(() => makePlan({ ...design, practice_trials: 9 }, f.manifest), /practice_trials/);
  });
});

describe('Latin-square order (design.order: latin_square)', () => {
  test('latinSquareRow: rows are permutations; every cell in every position and after every other cell equally often', () => {
    for (let n = 2; n <= 7; n++) {
      const rows = Array.from({ length: n % 2 === 0 ? n : 2 * n }, (_, p) => latinSquareRow(n, p));
      const per = n % 2 === 0 ? 1 : 2;
      for (const row of rows) assert.deepEqual([...row].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `n=${n}: ${row}`);
      for (let pos = 0; pos < n; pos++) {
        for (let c = 0; c < n; c++) assert.equal(rows.filter((row) => row[pos] === c).length, per, `n=${n}: cell ${c} at position ${pos}`);
      }
      const pairs = new Map<string, number>();
      for (const row of rows) for (let i = 1; i < n; i++) pairs.set(`${row[i - 1]}>${row[i]}`, (pairs.get(`${row[i - 1]}>${row[i]}`) ?? 0) + 1);
      assert.equal(pairs.size, n * (n - 1), `n=${n}: every ordered pair occurs`);
      assert.ok([...pairs.values()].every((k) => k === per), `n=${n}: each ordered pair ${per}×`);
      assert.deepEqual(latinSquareRow(n, rows.length), rows[0], 'wraps around');
    }
  });

  test('main trials in one block per layer × basis cell, block orders a Latin square over consecutive participants', () => {
    const f = fixture({ trialsPerParticipant: 8, catchTrials: 2, design: ['order: latin_square'] });
    const plan = makePlan(f.loaded.study.design, f.manifest);
    const sessions = simulate(plan, 8);
    const orders = sessions.map((s) => {
      const main = (s.tasks as Task[]).filter((t) => t.kind === 'main');
      assert.equal(main.length, 8);
      assert.equal(s.tasks.filter((t) => t.kind === 'catch').length, 2);
      const blocks = main.map((t) => `${t.layer}|${t.basis}`).filter((c, i, all) => i === 0 || c !== all[i - 1]);
      assert.equal(blocks.length, 4, `four contiguous blocks: ${main.map((t) => `${t.layer}|${t.basis}`).join(' ')}`);
      assert.equal(new Set(blocks).size, 4);
      return blocks;
    });
    // Participants 0–3 and 4–7 each see every cell once in every block position.
    for (const group of [orders.slice(0, 4), orders.slice(4, 8)]) {
      for (let pos = 0; pos < 4; pos++) assert.equal(new Set(group.map((o) => o[pos])).size, 4, `position ${pos}: ${group.map((o) => o[pos]).join(', ')}`);
    }
    // The default order shuffles: main trials of a cell are not kept together.
    const shuffled = simulate(makePlan(fixture({ trialsPerParticipant: 8, catchTrials: 2 }).loaded.study.design, f.manifest), 8);
    assert.ok(
      shuffled.some((s) => (s.tasks as Task[]).filter((t) => t.kind === 'main').map((t) => `${t.layer}|${t.basis}`).filter((c, i, all) => i === 0 || c !== all[i - 1]).length > 4),
      'random order interleaves the cells',
    );
  });
});
