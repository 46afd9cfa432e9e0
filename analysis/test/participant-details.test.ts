// participants.csv and quasi-identifiers: by default no full User-Agent, no screen size or
// devicePixelRatio, and times rounded to the hour; the full values only when the study file asks
// for them (data.participant_details: full), as the data dictionary says. The database is written
// by the server's own storage code.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parseStudy } from '@legible/studies';
import { openDatabase, type SessionRow, type TrialRow } from '@legible/server';
import { parseCsvRecords } from '../src/csv.ts';
import { dataDictionary, exportStudy } from '../src/export.ts';

const UA_WIN = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.91 Safari/537.36';
const UA_MAC = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15';

const tmp = mkdtempSync(join(tmpdir(), 'legible-details-'));
const dbFile = join(tmp, 'study.db');
after(() => rmSync(tmp, { recursive: true, force: true }));

before(async () => {
  const db = openDatabase(dbFile, { secret: 'participant-details-test-secret' });
  try {
    const people = [
      { id: 'a', ua: UA_WIN, start: '2030-03-04T09:17:23.456Z', screen: [2560, 1440], dpr: 1.25, check: null },
      { id: 'b', ua: UA_MAC, start: '2030-03-04T14:41:05.001Z', screen: [1512, 982], dpr: 2, check: { browser: 'safari 17', os: 'macos', passed: true } },
    ];
    for (const p of people) {
      const start = Date.parse(p.start);
      const session: SessionRow = {
        id: `00000000-0000-4000-8000-00000000000${p.id === 'a' ? 1 : 2}`,
        study: 'details',
        participant: p.id.repeat(64),
        token_hash: 'x',
        mode: 'live',
        seed: 1,
        condition: '{}',
        tasks: '[]',
        n_trials: 2,
        status: 'finished',
        outcome: 'completed',
        code: 'DONE',
        created_at: p.start,
        lease_expires_at: new Date(start + 3_600_000).toISOString(),
        finished_at: new Date(start + 754_321).toISOString(),
        user_agent: p.ua,
        manifest_sha256: null,
      };
      db.write(() => {
        db.insertSession(session);
        for (let seq = 0; seq < 2; seq++) {
          const trial: TrialRow = {
            session_id: session.id,
            seq,
            study: 'details',
            participant: session.participant,
            trial_id: `l/channels/${seq}/main/natural`,
            feature: `l/channels/${seq}`,
            layer: 'l',
            basis: 'channels',
            feature_index: seq,
            kind: 'main',
            reference_kind: 'natural',
            query_images: '["a.png","b.png"]',
            answer: 0,
            choice: 0,
            confidence: 3,
            correct: 1,
            rt_ms: 1500,
            query_order: '[0,1]',
            input: 'key',
            onset_ms: 100,
            response_ms: 1600,
            client_time: start + 60_000 * (seq + 1),
            server_time: new Date(start + 60_000 * (seq + 1) + 37).toISOString(),
            window_w: 1400,
            window_h: 800,
            screen_w: p.screen[0],
            screen_h: p.screen[1],
            dpr: p.dpr,
            plugin_version: '1.0.0',
            payload_hash: `h${seq}`,
            mode: 'live',
            practice_round: null,
          };
          db.insertTrial(trial);
        }
      });
      if (p.check) {
        await db.recordEvents([
          { session_id: session.id, study: 'details', seq: null, type: 'browser_check', at: start, detail: JSON.stringify(p.check), server_time: p.start, mode: 'live', hash: 'c' },
        ]);
      }
    }
  } finally {
    db.close();
  }
});

async function participants(details?: 'coarse' | 'full'): Promise<{ text: string; rows: Record<string, string>[] }> {
  const out = join(tmp, `out-${details ?? 'default'}`);
  await exportStudy(out, { db: dbFile, study: 'details', participantDetails: details });
  const text = readFileSync(join(out, 'participants.csv'), 'utf8');
  return { text, rows: parseCsvRecords(text) };
}

test('by default: browser family and major version, OS family, a screen class, times rounded to the hour; nothing more', async () => {
  for (const details of [undefined, 'coarse'] as const) {
    const { text, rows } = await participants(details);
    const [a, b] = rows;
    assert.deepEqual(
      [a.browser, a.os, a.screen_class, a.user_agent, a.screen_w, a.screen_h, a.dpr],
      ['chrome 130', 'windows', '2560 or more', '', '', '', ''],
    );
    assert.deepEqual([b.browser, b.os, b.screen_class], ['safari 17', 'macos', '1280-1919']);
    assert.deepEqual([a.started_at, a.finished_at, a.last_answer_at], ['2030-03-04T09:00:00.000Z', '2030-03-04T09:00:00.000Z', '2030-03-04T09:00:00.000Z']);
    assert.equal(b.started_at, '2030-03-04T14:00:00.000Z');
    assert.equal(a.total_time_s, '754.3', 'durations from the exact times');
    for (const leak of ['6723', 'Win64', 'AppleWebKit', '2560,', '1440', '1.25', '09:17', '14:41', ':23.456']) assert.ok(!text.includes(leak), `"${leak}" is not in participants.csv`);
  }
});

test('data.participant_details: full gives the exact values', async () => {
  const { rows } = await participants('full');
  const [a] = rows;
  assert.deepEqual([a.user_agent, a.screen_w, a.screen_h, a.dpr, a.started_at], [UA_WIN, '2560', '1440', '1.25', '2030-03-04T09:17:23.456Z']);
  assert.equal(a.browser, 'chrome 130');
  assert.equal(a.screen_class, '2560 or more');
});

test('the study file key (default coarse) and the data dictionary say so', () => {
  const base = [
    'id: details',
    'title: T',
    'model: { onnx: m.onnx, input: { size: 28, channels: gray, mean: [0.5], std: [0.5] }, layers: [{ name: l, tensor: l }] }',
    'dataset: { images: images }',
    'bases: [{ kind: channels }]',
    'features: { select: all }',
    'design: { trials_per_participant: 2 }',
    'text: { consent: c, instructions: i }',
  ];
  assert.equal(parseStudy(base.join('\n')).study?.data.participant_details, 'coarse');
  assert.equal(parseStudy([...base, 'data: { participant_details: full }'].join('\n')).study?.data.participant_details, 'full');
  const bad = parseStudy([...base, 'data: { participant_details: everything }'].join('\n'));
  assert.ok(bad.problems.some((p) => p.path === 'data.participant_details' && p.line === 9), JSON.stringify(bad.problems));
  const dict = dataDictionary();
  assert.match(dict, /`data\.participant_details: full`/);
  for (const col of ['user_agent', 'screen_w', 'screen_h', 'dpr']) {
    const line = dict.split('\n').find((l) => l.startsWith(`| \`${col}\` `) && l.includes('participant_details'));
    assert.ok(line, `${col} is described as full-only`);
  }
  assert.match(dict, /\| `screen_class` \|/);
  assert.match(dict, /\| `started_at` \|[^\n]*Rounded down to the hour/);
});
