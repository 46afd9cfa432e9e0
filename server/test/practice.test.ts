// Practice rounds until a criterion (design.practice_criterion / practice_rounds): the pure rule,
// the task list, and the whole flow over HTTP in pilot and preview mode.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { CreateSessionResponse, TrialAck, type FinishResponse } from '@legible/studies';
import { assignTasks, emptyLoad, makePlan, type Task } from '../src/assign.ts';
import { practiceState, roundSummaryFor, type PracticeAnswer } from '../src/practice.ts';
import { fixtureMaker } from './fixture.ts';
import { answer, bearer, call, createSession, serveFixture, type TestServer } from './http.ts';

const fixture = fixtureMaker();

/** A task list with R rounds of P practice trials, then two main trials. */
function tasksOf(R: number, P: number): Task[] {
  const tasks: Task[] = [];
  const base = { trial: 't', feature: 'f', layer: 'l', basis: 'channels', feature_index: 0, reference_kind: 'natural' as const, order: [0, 1] as [0, 1], query_images: ['a', 'b'] as [string, string], answer: 0 as const };
  for (let r = 0; r < R; r++) for (let i = 0; i < P; i++) tasks.push({ ...base, seq: tasks.length, kind: 'practice', round: r });
  for (let i = 0; i < 2; i++) tasks.push({ ...base, seq: tasks.length, kind: 'main' });
  return tasks;
}
const answers = (pairs: [number, boolean][]): PracticeAnswer[] => pairs.map(([seq, correct], order) => ({ seq, correct, order }));

describe('practiceState (the rule)', () => {
  const tasks = tasksOf(3, 2);

  test('undecided until a round is complete; every later round still required', () => {
    const s = practiceState(tasks, 0.5, answers([[0, false]]));
    assert.equal(s.over, false);
    assert.equal(s.passed, null);
    assert.equal(s.skipped.size, 0);
    assert.deepEqual(s.rounds, []);
  });

  test('a passing first round ends practice: rounds 1 and 2 are skipped', () => {
    const s = practiceState(tasks, 0.5, answers([[0, false], [1, true]]));
    assert.equal(s.over, true);
    assert.equal(s.passed, true);
    assert.equal(s.roundsUsed, 1);
    assert.deepEqual([...s.skipped].sort(), [2, 3, 4, 5]);
    assert.deepEqual(roundSummaryFor(s, 1), { round: 0, correct: 1, total: 2, passed: true, practice_over: true });
    assert.equal(roundSummaryFor(s, 0), undefined);
  });

  test('failing, then passing the second round; the third is skipped', () => {
    const s = practiceState(tasks, 1, answers([[0, false], [1, true], [2, true], [3, true]]));
    assert.deepEqual(
      s.rounds.map(({ completedBy: _c, ...r }) => r),
      [
        { round: 0, correct: 1, total: 2, passed: false, practice_over: false },
        { round: 1, correct: 2, total: 2, passed: true, practice_over: true },
      ],
    );
    assert.equal(s.roundsUsed, 2);
    assert.deepEqual([...s.skipped].sort(), [4, 5]);
  });

  test('never passing: practice is over after the last round, passed = false', () => {
    const s = practiceState(tasks, 1, answers([[0, false], [1, false], [2, true], [3, false], [4, false], [5, true]]));
    assert.equal(s.over, true);
    assert.equal(s.passed, false);
    assert.equal(s.roundsUsed, 3);
    assert.equal(s.skipped.size, 0);
    assert.deepEqual(roundSummaryFor(s, 5), { round: 2, correct: 1, total: 2, passed: false, practice_over: true });
  });

  test('the summary goes with the answer that completed the round, whatever its seq', () => {
    // seq 1 recorded before seq 0: seq 0 completes round 0.
    const s = practiceState(tasks, 0.5, answers([[1, true], [0, true]]));
    assert.ok(roundSummaryFor(s, 0));
    assert.equal(roundSummaryFor(s, 1), undefined);
  });

  test('without a criterion every round passes and passed is null', () => {
    const s = practiceState(tasksOf(1, 2), null, answers([[0, false], [1, false]]));
    assert.equal(s.over, true);
    assert.equal(s.passed, null);
    assert.equal(s.roundsUsed, 1);
  });
});

describe('task lists with practice rounds', () => {
  test('R rounds of the same practice trials in the same order, new query orders, main trials after', () => {
    const f = fixture({ design: ['practice_criterion: 0.8', 'practice_rounds: 3'], practiceTrials: 3 });
    const plan = makePlan(f.loaded.study.design, f.manifest);
    let reordered = 0;
    for (let seed = 0; seed < 20; seed++) {
      const { tasks } = assignTasks(plan, seed, emptyLoad());
      assert.equal(tasks.length, 3 * 3 + 4 + 2);
      const practice = tasks.slice(0, 9);
      assert.ok(practice.every((t) => t.kind === 'practice'));
      assert.deepEqual(practice.map((t) => t.round), [0, 0, 0, 1, 1, 1, 2, 2, 2]);
      for (let r = 1; r < 3; r++) {
        assert.deepEqual(practice.slice(3 * r, 3 * r + 3).map((t) => t.trial), practice.slice(0, 3).map((t) => t.trial), 'same trials, same order');
        if (practice.slice(3 * r, 3 * r + 3).some((t, i) => t.order[0] !== practice[i].order[0])) reordered++;
      }
      for (const t of practice) assert.equal(t.query_images[t.answer].startsWith('dataset/max-'), true, 'the key follows the query order');
      assert.ok(tasks.slice(9).every((t) => t.kind !== 'practice' && t.round === undefined));
    }
    assert.ok(reordered > 20, `query orders are redrawn per round (${reordered} of 40 rounds differ)`);
  });

  test('without a criterion: one round, as before', () => {
    const f = fixture({ design: ['practice_rounds: 3'] });
    const { tasks } = assignTasks(makePlan(f.loaded.study.design, f.manifest), 1, emptyLoad());
    assert.deepEqual(tasks.filter((t) => t.kind === 'practice').map((t) => t.round), [0, 0]);
  });
});

describe('practice rounds over HTTP', () => {
  const serverTasks = (srv: TestServer, session: string): Task[] => JSON.parse(srv.db.sessionById(session)!.tasks) as Task[];
  const put = (srv: TestServer, s: CreateSessionResponse, seq: number, q: 0 | 1) =>
    call<TrialAck>(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${seq}`, answer(q), bearer(s.token));
  const right = (t: Task) => t.answer;
  const wrong = (t: Task) => (1 - t.answer) as 0 | 1;

  test('pilot: fail round 0, pass round 1; round 2 is skipped, refused, and not required', async () => {
    const f = fixture({
      design: ['practice_criterion: 1', 'practice_rounds: 3'],
      exclusions: ['  practice_pass_required: true'],
      recruitment: ['  platform: generic', '  completed:', '    code: DONE-1', '  unsynced:', '    code: UNSYNCED-1'],
    });
    const srv = await serveFixture(f);
    try {
      const created = await createSession(srv.url, 'fixture', { participant: 'p-pilot' });
      assert.equal(created.status, 201);
      const s = CreateSessionResponse.parse(created.body);
      assert.equal(s.unsynced_code, 'UNSYNCED-1');
      assert.deepEqual(s.trials.map((t) => t.practice_round), [0, 0, 1, 1, 2, 2, null, null, null, null, null, null]);
      assert.deepEqual(s.trials.map((t) => t.practice), [true, true, true, true, true, true, false, false, false, false, false, false]);
      assert.equal(s.config.practice_criterion, 1);
      const tasks = serverTasks(srv, s.session);
      const pick = (seq: number, correct: boolean) => put(srv, s, seq, correct ? right(tasks[seq]) : wrong(tasks[seq]));

      // Round 0: one right, one wrong → not passed (criterion 1).
      const a0 = await pick(0, true);
      assert.deepEqual(a0.body.feedback, { correct: true });
      const a1 = await pick(1, false);
      assert.deepEqual(a1.body.feedback, { correct: false, round: { round: 0, correct: 1, total: 2, passed: false, practice_over: false } });
      // Still undecided after round 0: rounds 1 and 2 are required.
      let early = await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.deepEqual(early.body.missing, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
      // Round 1: both right → passed, practice over.
      await pick(2, true);
      const a3 = await pick(3, true);
      TrialAck.parse(a3.body);
      assert.deepEqual(a3.body.feedback, { correct: true, round: { round: 1, correct: 2, total: 2, passed: true, practice_over: true } });
      // A replay gets the same ack, round summary included.
      assert.deepEqual((await pick(3, true)).body, a3.body);

      // Round 2 is no longer needed: refused with 409, not counted as missing, skipped by resume_at.
      const late = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/4`, answer(0), bearer(s.token));
      assert.equal(late.status, 409);
      assert.match(late.body.error, /practice trial 4 is not needed: practice ended after round 1; go on with trial 6/);
      assert.equal(late.body.detail.practice_over, true);
      const resumed = await createSession(srv.url, 'fixture', { participant: 'p-pilot', resume: s.resume_secret });
      assert.equal(resumed.status, 200);
      assert.equal(resumed.body.resume_at, 6);
      early = await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.equal(early.status, 409);
      assert.deepEqual(early.body.missing, [6, 7, 8, 9, 10, 11]);
      for (let seq = 6; seq < 12; seq++) assert.equal((await put(srv, s, seq, right(tasks[seq]))).status, 200);
      const fin = await call<FinishResponse>(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token));
      assert.equal(fin.status, 200, fin.text);
      assert.deepEqual(fin.body, { outcome: 'completed', code: 'DONE-1', redirect: null });
      const row = srv.db.sqlite.prepare('SELECT practice_passed, practice_rounds FROM sessions WHERE id = ?').get(s.session);
      assert.deepEqual({ ...(row as object) }, { practice_passed: 1, practice_rounds: 2 });
      const rounds = srv.db.sqlite.prepare('SELECT seq, practice_round FROM trials WHERE session_id = ? ORDER BY seq').all(s.session) as { seq: number; practice_round: number | null }[];
      assert.deepEqual(rounds.map((r) => r.practice_round), [0, 0, 1, 1, null, null, null, null, null, null]);
      // After finishing, a resume is "already completed"; replays of round-1 answers still get their ack.
      assert.deepEqual((await pick(3, true)).body, a3.body);
    } finally {
      await srv.close();
    }
  });

  test('preview: the same rule in memory (fail, fail, fail → all three rounds, practice over), nothing stored', async () => {
    const f = fixture({ mode: 'preview', design: ['practice_criterion: 0.5', 'practice_rounds: 3'] });
    const srv = await serveFixture(f);
    try {
      const s = CreateSessionResponse.parse((await createSession(srv.url, 'fixture', { participant: 'prev' })).body);
      // The answer key from the manifest (the test knows it; the participant does not).
      const key = (seq: number): 0 | 1 => {
        const t = s.trials[seq];
        const trial = f.manifest.trials.find((m) => t.query_urls[0].endsWith(m.assets.queries[0]) || t.query_urls[0].endsWith(m.assets.queries[1]))!;
        return t.query_urls[0].endsWith(trial.assets.queries[trial.answer]) ? 0 : 1;
      };
      const acks: TrialAck[] = [];
      for (let seq = 0; seq < 6; seq++) acks.push((await put(srv, s, seq, (1 - key(seq)) as 0 | 1)).body);
      assert.deepEqual(
        acks.map((a) => a.feedback?.round ?? null),
        [
          null,
          { round: 0, correct: 0, total: 2, passed: false, practice_over: false },
          null,
          { round: 1, correct: 0, total: 2, passed: false, practice_over: false },
          null,
          { round: 2, correct: 0, total: 2, passed: false, practice_over: true },
        ],
      );
      assert.equal((await createSession(srv.url, 'fixture', { participant: 'prev', resume: s.resume_secret })).body.resume_at, 6);
      // A second preview participant passes round 0: round 1 is refused.
      const t = CreateSessionResponse.parse((await createSession(srv.url, 'fixture', { participant: 'prev2' })).body);
      const keyT = (seq: number): 0 | 1 => {
        const tt = t.trials[seq];
        const trial = f.manifest.trials.find((m) => tt.query_urls[0].endsWith(m.assets.queries[0]) || tt.query_urls[0].endsWith(m.assets.queries[1]))!;
        return tt.query_urls[0].endsWith(trial.assets.queries[trial.answer]) ? 0 : 1;
      };
      await put(srv, t, 0, keyT(0));
      const r0 = await put(srv, t, 1, keyT(1));
      assert.deepEqual(r0.body.feedback!.round, { round: 0, correct: 2, total: 2, passed: true, practice_over: true });
      assert.equal((await put(srv, t, 2, 0)).status, 409);
      assert.equal((await createSession(srv.url, 'fixture', { participant: 'prev2', resume: t.resume_secret })).body.resume_at, 6);
      for (const table of ['sessions', 'trials', 'identities', 'events']) {
        assert.equal((srv.db.sqlite.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n, 0, `preview stores nothing in ${table}`);
      }
    } finally {
      await srv.close();
    }
  });

  test('never passing in pilot: practice_passed = 0 after 3 rounds; the dashboard counts the exclusion', async () => {
    const f = fixture({ design: ['practice_criterion: 1', 'practice_rounds: 3'], exclusions: ['  practice_pass_required: true'] });
    const srv = await serveFixture(f);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'slow-learner' })).body;
      const tasks = serverTasks(srv, s.session);
      const acks: TrialAck[] = [];
      for (const t of tasks) acks.push((await put(srv, s, t.seq, t.kind === 'practice' ? wrong(t) : right(t))).body);
      assert.deepEqual(acks[5].feedback, { correct: false, round: { round: 2, correct: 0, total: 2, passed: false, practice_over: true } });
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${s.session}/finish`, undefined, bearer(s.token))).status, 200);
      const row = srv.db.sqlite.prepare('SELECT practice_passed, practice_rounds FROM sessions WHERE id = ?').get(s.session);
      assert.deepEqual({ ...(row as object) }, { practice_passed: 0, practice_rounds: 3 });
      const { token } = srv.db.createAdminToken('test');
      const progress = await call(srv.url, 'GET', '/api/admin/studies/fixture', undefined, bearer(token));
      assert.equal(progress.body.exclusions.by_rule.practice, 1);
      const people = await call(srv.url, 'GET', '/api/admin/studies/fixture/participants', undefined, bearer(token));
      assert.deepEqual(people.body.participants[0].practice, { passed: false, rounds: 3 });
      assert.deepEqual(people.body.participants[0].excluded_by, ['practice']);
    } finally {
      await srv.close();
    }
  });

  test('without a criterion: feedback as before (no round summary), practice_round 0', async () => {
    const f = fixture();
    const srv = await serveFixture(f);
    try {
      const s = (await createSession(srv.url, 'fixture', { participant: 'plain' })).body;
      assert.deepEqual(s.trials.map((t) => t.practice_round), [0, 0, null, null, null, null, null, null]);
      assert.equal(s.unsynced_code, 'FIX-UNSYNCED', 'the unsynced code, never the completed one');
      const tasks = serverTasks(srv, s.session);
      const a1 = await put(srv, s, 1, right(tasks[1]));
      assert.deepEqual(a1.body.feedback, { correct: true });
    } finally {
      await srv.close();
    }
  });
});
