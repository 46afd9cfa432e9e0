// Backups on a timer and their restore (docs/deploy.md): `legible backup --dir DIR --keep N` makes
// a time-stamped copy while the server writes and keeps the newest N; `legible restore` refuses a
// database a server has open, keeps the current file beside it, and puts the copy in place — a
// server started on it has every answer acknowledged before the backup began, and its sessions go on.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import type { CreateSessionResponse } from '@legible/studies';
import { makeFixture } from './fixture.ts';
import { answer, bearer, call, createSession, runCommand, serveFixture } from './http.ts';

describe('backup on a timer, and restore', () => {
  test('backup --dir under writes, restore after the server stops: the restored database holds every answer acknowledged before the backup, and sessions go on', async () => {
    const fx = makeFixture({ trialsPerParticipant: 8, mainPerFeature: 2 });
    const dbFile = join(fx.root, 'live.db');
    const backups = join(fx.root, 'backups');
    mkdirSync(backups);
    let srv = await serveFixture(fx, { dbFile });
    try {
      // A participant who starts before the backup and finishes after the restore.
      const early = (await createSession(srv.url, 'fixture', { participant: 'early-bird' })).body as CreateSessionResponse;
      assert.equal((await call(srv.url, 'PUT', `/api/sessions/${early.session}/trials/0`, answer(0), bearer(early.token))).status, 200);

      const acked: { session: string; seq: number; at: number }[] = [];
      let stop = false;
      const writers = Array.from({ length: 8 }, async (_, i) => {
        for (let k = 0; !stop; k++) {
          const s = (await createSession(srv.url, 'fixture', { participant: `w-${i}-${k}` })).body as CreateSessionResponse;
          for (const t of s.trials) {
            if (stop) return;
            const r = await call(srv.url, 'PUT', `/api/sessions/${s.session}/trials/${t.seq}`, answer(0), bearer(s.token));
            if (r.status === 200) acked.push({ session: s.session, seq: t.seq, at: performance.now() });
          }
        }
      });
      while (acked.length < 30) await new Promise((r) => setTimeout(r, 20));
      const startedAt = performance.now();
      const b = await runCommand('backup', ['--db', dbFile, '--dir', backups, '--keep', '3']);
      const endedAt = performance.now();
      // Writes go on after the backup: these are not in it.
      while (acked.filter((a) => a.at > endedAt).length < 5) await new Promise((r) => setTimeout(r, 20));
      stop = true;
      await Promise.all(writers);
      assert.equal(b.code, 0, b.stderr);
      const files = readdirSync(backups);
      assert.equal(files.length, 1);
      assert.match(files[0], /^live-\d{8}T\d{6}(\d{3})?Z\.db$/);
      const backup = join(backups, files[0]);
      assert.ok(b.stdout.includes(backup), b.stdout);
      assert.ok(acked.some((a) => a.at > startedAt && a.at < endedAt) || acked.some((a) => a.at > endedAt), 'answers were written around the backup');

      // While the server has the database open, restore refuses and changes nothing.
      const busy = await runCommand('restore', ['--from', backup, '--db', dbFile]);
      assert.equal(busy.code, 1, busy.stdout);
      assert.match(busy.stderr, /is open in another process \(a running `legible serve`\?\): stop the server first/);
      const liveRows = srv.db.sqlite.prepare('SELECT count(*) AS n FROM trials').get() as { n: number };
      await srv.close();

      const r = await runCommand('restore', ['--from', backup, '--db', dbFile]);
      assert.equal(r.code, 0, r.stderr);
      const aside = readdirSync(fx.root).filter((f) => f.startsWith('live.db.before-restore-'));
      assert.equal(aside.filter((f) => !f.endsWith('-wal') && !f.endsWith('-shm')).length, 1, `the database it replaced is kept: ${aside.join(', ')}`);
      assert.match(r.stdout, new RegExp(`restored ${backup.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} to ${dbFile.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: \\d+ sessions, \\d+ trials`));

      // The restored file: every answer acknowledged before the backup began; none of those after it ended.
      const restored = new Database(dbFile, { readonly: true, fileMustExist: true });
      try {
        assert.equal(restored.pragma('integrity_check', { simple: true }), 'ok');
        const has = restored.prepare('SELECT 1 FROM trials WHERE session_id = ? AND seq = ?');
        const before = acked.filter((a) => a.at < startedAt);
        assert.ok(before.length >= 30);
        for (const a of before) assert.ok(has.get(a.session, a.seq), `acknowledged ${a.session}/${a.seq} before the backup is restored`);
        const after = acked.filter((a) => a.at > endedAt);
        for (const a of after) assert.ok(!has.get(a.session, a.seq), `${a.session}/${a.seq}, answered after the backup, is not in it`);
        const n = (restored.prepare('SELECT count(*) AS n FROM trials').get() as { n: number }).n;
        assert.ok(n < liveRows.n, `restored ${n} trials, the live database had ${liveRows.n}`);
        assert.match(r.stdout, new RegExp(`, ${n} trials`));
      } finally {
        restored.close();
      }
      // The file it replaced still has everything.
      const old = new Database(join(fx.root, aside.find((f) => !f.endsWith('-wal') && !f.endsWith('-shm'))!), { readonly: true, fileMustExist: true });
      assert.equal((old.prepare('SELECT count(*) AS n FROM trials').get() as { n: number }).n, liveRows.n);
      old.close();

      // A server on the restored database: the early participant's token still works (the
      // server secret is in the copy) and they finish.
      srv = await serveFixture(fx, { dbFile });
      assert.equal((await call(srv.url, 'GET', '/healthz')).status, 200);
      for (const t of early.trials.slice(1)) {
        assert.equal((await call(srv.url, 'PUT', `/api/sessions/${early.session}/trials/${t.seq}`, answer(0), bearer(early.token))).status, 200);
      }
      assert.equal((await call(srv.url, 'POST', `/api/sessions/${early.session}/finish`, undefined, bearer(early.token))).status, 200);
      assert.ok(srv.db.auditLog(10).some((e) => e.action === 'restore'), 'the restore is in the audit log');
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });

  test('backup --keep N removes only its own oldest copies; restore refuses a file that is not a legible database', async () => {
    const fx = makeFixture();
    const dbFile = join(fx.root, 'lab.db');
    const dir = join(fx.root, 'bk');
    mkdirSync(dir);
    writeFileSync(join(dir, 'notes.txt'), 'not a backup');
    writeFileSync(join(dir, 'other-20200101T000000Z.db'), 'another database’s backup');
    const srv = await serveFixture(fx, { dbFile });
    try {
      const made: string[] = [];
      for (let i = 0; i < 4; i++) {
        const r = await runCommand('backup', ['--db', dbFile, '--dir', dir, '--keep', '2']);
        assert.equal(r.code, 0, r.stderr);
        made.push(/written to (\S+):/.exec(r.stdout)![1]);
      }
      assert.equal(new Set(made).size, 4, 'each copy has its own name');
      const left = readdirSync(dir).sort();
      const mine = left.filter((f) => f.startsWith('lab-'));
      assert.deepEqual(mine.map((f) => join(dir, f)), made.slice(2).sort(), 'the newest two are kept');
      assert.ok(left.includes('notes.txt') && left.includes('other-20200101T000000Z.db'), 'files of others are left alone');

      const both = await runCommand('backup', ['--db', dbFile, '--dir', dir, '--out', join(fx.root, 'x.db')]);
      assert.equal(both.code, 2);
      assert.match(both.stderr, /--out FILE or --dir DIR/);
      const keepAlone = await runCommand('backup', ['--db', dbFile, '--out', join(fx.root, 'x.db'), '--keep', '2']);
      assert.equal(keepAlone.code, 2);
      assert.match(keepAlone.stderr, /--keep goes with --dir/);
    } finally {
      await srv.close();
    }
    try {
      const junk = join(fx.root, 'junk.db');
      writeFileSync(junk, 'this is not SQLite at all, just text'.repeat(200));
      const r = await runCommand('restore', ['--from', junk, '--db', dbFile]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /is not a legible database backup/);
      const empty = join(fx.root, 'empty.db');
      new Database(empty).exec('CREATE TABLE x (a)');
      const e = await runCommand('restore', ['--from', empty, '--db', dbFile]);
      assert.equal(e.code, 1);
      assert.match(e.stderr, /is not a legible database backup \(no sessions, trials or meta table\)/);
      assert.ok(existsSync(dbFile) && readdirSync(fx.root).every((f) => !f.includes('before-restore')), 'nothing was moved');
    } finally {
      fx.cleanup();
    }
  });
});
