// A study database of any size, written by the server's own storage code (openDatabase, its
// migrations and prepared inserts), for the export tests and benchmarks: sessions of a fixed
// number of trials with plausible values in every column.
import { createHash } from 'node:crypto';
import { rng } from '@legible/studies';
import { openDatabase, type SessionRow, type TrialRow } from '@legible/server';

export interface GeneratedDb {
  file: string;
  study: string;
  sessions: number;
  trials: number;
}

export function generateDb(file: string, opts: { trials: number; perSession?: number; study?: string; seed?: number }): GeneratedDb {
  const study = opts.study ?? 'bench';
  const per = opts.perSession ?? 200;
  const sessions = Math.ceil(opts.trials / per);
  const r = rng(opts.seed ?? 1);
  const db = openDatabase(file, { secret: 'generated-test-database-secret' });
  const t0 = Date.parse('2030-01-01T09:00:00Z');
  let written = 0;
  try {
    for (let s = 0; s < sessions; s += 500) {
      db.write(() => {
        for (let k = s; k < Math.min(sessions, s + 500); k++) {
          const id = `00000000-0000-4000-8000-${String(k).padStart(12, '0')}`;
          const participant = createHash('sha256').update(`p${k}`).digest('hex');
          const n = Math.min(per, opts.trials - written);
          const start = t0 + k * 60_000;
          const row: SessionRow = {
            id,
            study,
            participant,
            token_hash: 'x',
            mode: 'live',
            seed: k,
            condition: '{}',
            tasks: '[]',
            n_trials: n,
            status: 'finished',
            outcome: 'completed',
            code: 'DONE',
            created_at: new Date(start).toISOString(),
            lease_expires_at: new Date(start + 3_600_000).toISOString(),
            finished_at: new Date(start + (n + 12) * 3000).toISOString(),
            user_agent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/130',
            manifest_sha256: null,
          };
          db.insertSession(row);
          for (let seq = 0; seq < n; seq++) {
            const layer = `block${2 + (seq % 3)}`;
            const basis = seq % 2 ? 'nmf' : 'channels';
            const index = r.int(64);
            const kind = seq < 2 ? 'practice' : seq % 20 === 7 ? 'catch' : 'main';
            const answer = r.int(2);
            const choice = r.float() < 0.7 ? answer : 1 - answer;
            const rt = 800 + r.int(4000);
            const trial: TrialRow = {
              session_id: id,
              seq,
              study,
              participant,
              trial_id: `${layer}/${basis}/${index}/${kind}/natural`,
              feature: `${layer}/${basis}/${index}`,
              layer,
              basis,
              feature_index: index,
              kind,
              reference_kind: 'natural',
              query_images: JSON.stringify([`class${r.int(10)}/${String(r.int(5000)).padStart(4, '0')}.png`, `class${r.int(10)}/${String(r.int(5000)).padStart(4, '0')}.png`]),
              answer,
              choice,
              confidence: 1 + r.int(3),
              correct: choice === answer ? 1 : 0,
              rt_ms: rt,
              query_order: r.float() < 0.5 ? '[0,1]' : '[1,0]',
              input: 'key',
              onset_ms: 1000 + seq * 3000,
              response_ms: 1000 + seq * 3000 + rt,
              client_time: start + 10_000 + seq * 3000 + rt,
              server_time: new Date(start + 10_000 + seq * 3000 + rt + 40).toISOString(),
              window_w: 1280,
              window_h: 800,
              screen_w: 1920,
              screen_h: 1080,
              dpr: 2,
              plugin_version: '1.0.0',
              payload_hash: 'h',
              mode: 'live',
              practice_round: kind === 'practice' ? 0 : null,
            };
            db.insertTrial(trial);
          }
          written += n;
        }
      });
    }
  } finally {
    db.close();
  }
  return { file, study, sessions, trials: written };
}
