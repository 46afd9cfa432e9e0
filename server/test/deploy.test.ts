// The deployment files docs/deploy.md names: Dockerfile, deploy/compose.yaml, deploy/Caddyfile and
// the systemd units. What can run here runs for real — the image's entry point and health check
// (outside a container), Caddy in front of a real server over HTTPS, the units' commands and
// `systemd-analyze verify`; the rest is checked statically. A tool that is missing is skipped with
// the reason (no Docker daemon here: the image itself is not built by these tests).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { parse as parseYaml } from 'yaml';
import { startServer } from '../src/app.ts';
import { makeFixture, tempDir } from './fixture.ts';
import { call } from './http.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const read = (rel: string) => readFileSync(join(repo, rel), 'utf8');
const has = (tool: string) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** Dockerfile instructions of the last stage: [keyword, argument text], continuation lines joined. */
function dockerfile(): { all: [string, string][]; final: [string, string][] } {
  const lines = read('Dockerfile')
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const all = lines.map((l) => {
    const m = /^(\w+)\s+(.*)$/.exec(l)!;
    return [m[1].toUpperCase(), m[2]] as [string, string];
  });
  const lastFrom = all.map(([k]) => k).lastIndexOf('FROM');
  return { all, final: all.slice(lastFrom) };
}
const execForm = (text: string): string[] => JSON.parse(text) as string[];

/** The ENV of the final stage, as an object. */
function imageEnv(final: [string, string][]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of final) if (k === 'ENV') for (const m of v.matchAll(/(\w+)=(\S+)/g)) env[m[1]] = m[2];
  return env;
}

async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as { port: number }).port;
  s.close();
  await once(s, 'close');
  return port;
}

function run(cmd: string[], env: Record<string, string>, cwd = repo): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0], cmd.slice(1), { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code, out }));
  });
}

/** Start a long-running command and wait for `legible serve`'s "serving on http://…:PORT" line. */
function startServing(cmd: string[], env: Record<string, string>): { child: ChildProcess; port: Promise<number>; output: () => string } {
  const child = spawn(cmd[0], cmd.slice(1), { cwd: repo, env: { ...process.env, PUBLIC_URL: '', TRUST_PROXY: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const port = new Promise<number>((resolve, reject) => {
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      const m = /serving on http:\/\/[^:\s]+:(\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`exited (${code}) before serving:\n${out}`)));
    setTimeout(() => reject(new Error(`not serving after 60 s:\n${out}`)), 60_000).unref();
  });
  port.catch(() => {});
  return { child, port, output: () => out };
}

describe('container image (Dockerfile)', () => {
  test('non-root, database and studies on volumes, `legible serve` as entry point, a health check; engines met; nothing local is sent to the build', () => {
    const { all, final } = dockerfile();
    const pkg = JSON.parse(read('package.json'));
    const user = final.filter(([k]) => k === 'USER').at(-1)?.[1];
    assert.ok(user && !['root', '0', '0:0'].includes(user), `the final stage runs as a non-root user (USER ${user})`);
    const volumes = final.filter(([k]) => k === 'VOLUME').flatMap(([, v]) => execForm(v));
    assert.deepEqual(volumes.sort(), ['/data', '/studies']);
    const env = imageEnv(final);
    assert.ok(env.LEGIBLE_DB.startsWith('/data/'), `the database is on the /data volume (LEGIBLE_DB=${env.LEGIBLE_DB})`);
    const entry = execForm(final.find(([k]) => k === 'ENTRYPOINT')![1]);
    const cmd = execForm(final.find(([k]) => k === 'CMD')![1]);
    assert.deepEqual([...entry, ...cmd], ['node', '/legible/bin/legible.mjs', 'serve', '--studies', '/studies']);
    const health = final.find(([k]) => k === 'HEALTHCHECK')![1];
    assert.match(health, /--start-period=\S+/);
    assert.match(health, /CMD \[.*\/healthz/);
    // The image's Node and npm meet package.json's engines (npm ≥ 11.19 for allowScripts).
    for (const [k, v] of all.filter(([k]) => k === 'FROM')) assert.match(v, /^node:20[.-]/, `${k} ${v}`);
    const npmPin = /npm install -g npm@(\d+)\.(\d+)\.\d+/.exec(all.map(([, v]) => v).join('\n'));
    assert.ok(npmPin, 'the build stage installs a pinned npm');
    const [, maj, min] = /(\d+)\.(\d+)/.exec(pkg.engines.npm)!;
    assert.ok(Number(npmPin[1]) > Number(maj) || (Number(npmPin[1]) === Number(maj) && Number(npmPin[2]) >= Number(min)), `npm ${npmPin[0]} meets engines.npm ${pkg.engines.npm}`);
    assert.match(all.map(([, v]) => v).join('\n'), /npm ci\b/, 'installs from the lock file');
    assert.equal(final.find(([k]) => k === 'COPY')![1], '--from=build /legible /legible');
    const ignore = read('.dockerignore');
    for (const p of ['**/node_modules', '**/*.db', 'studies/*/build', 'client/dist']) assert.ok(ignore.split('\n').includes(p), `.dockerignore leaves out ${p}`);
  });

  test("the image's command and health check, run outside a container: serving → 0, database gone → 1, nothing listening → 1", async () => {
    const { final } = dockerfile();
    const env = imageEnv(final);
    const entry = execForm(final.find(([k]) => k === 'ENTRYPOINT')![1]).map((a) => a.replace('/legible/', `${repo}/`));
    const cmd = execForm(final.find(([k]) => k === 'CMD')![1]);
    const health = execForm(/CMD (\[.*\])$/.exec(final.find(([k]) => k === 'HEALTHCHECK')![1])![1]);
    const fx = makeFixture({ noModel: true });
    const data = join(fx.root, 'data');
    mkdirSync(data);
    // The image's environment, but on 127.0.0.1 and a free port (tests listen on nothing else).
    const server = startServing([process.execPath, ...entry.slice(1), ...cmd.map((a) => (a === '/studies' ? fx.studiesDir : a))], {
      ...env,
      HOST: '127.0.0.1',
      PORT: '0',
      LEGIBLE_DB: env.LEGIBLE_DB.replace('/data', data),
    });
    try {
      const port = await server.port;
      assert.ok(existsSync(join(data, 'legible.db')), 'the database is written where LEGIBLE_DB points');
      const check = () => run([process.execPath, ...health.slice(1)], { PORT: String(port) });
      const up = await check();
      assert.equal(up.code, 0, up.out);
      server.child.kill('SIGTERM');
      const [code] = (await once(server.child, 'exit')) as [number | null];
      assert.equal(code, 0, `legible serve stops cleanly on SIGTERM (docker stop):\n${server.output()}`);
      assert.equal((await check()).code, 1, 'nothing listening: unhealthy');
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
    }
    // A server whose database no longer answers is unhealthy too (503).
    const srv = await startServer({ port: 0, db: join(fx.root, 'h.db'), studiesDir: fx.studiesDir, studies: [fx.studyFile], clientDir: join(fx.root, 'none'), signals: false, watchMs: 0, build: async () => { throw new Error('no builds'); } });
    try {
      srv.db.close();
      assert.equal((await run([process.execPath, ...health.slice(1)], { PORT: String(srv.port) })).code, 1);
    } finally {
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('docker compose with Caddy (deploy/compose.yaml, deploy/Caddyfile)', () => {
  test('only Caddy is published; legible trusts one proxy hop, serves the image volumes and gets its public URL; backups use the same database', () => {
    const compose = parseYaml(read('deploy/compose.yaml'));
    const { final } = dockerfile();
    const env = imageEnv(final);
    const legible = compose.services.legible;
    const caddy = compose.services.caddy;
    assert.equal(legible.ports, undefined, 'legible is not published: only through Caddy');
    assert.deepEqual(legible.expose, [env.PORT]);
    assert.equal(legible.environment.TRUST_PROXY, '1');
    assert.match(legible.environment.PUBLIC_URL, /^https:\/\/\$\{LEGIBLE_DOMAIN/);
    assert.equal(legible.environment.LEGIBLE_DB, env.LEGIBLE_DB);
    assert.equal(legible.build.dockerfile, 'Dockerfile');
    assert.ok(existsSync(join(repo, 'deploy', legible.build.context, legible.build.dockerfile)));
    const mounts = (legible.volumes as string[]).map((v) => v.split(':').at(-1));
    assert.deepEqual(mounts.sort(), ['/data', '/studies']);
    assert.ok(caddy.ports.includes('443:443') && caddy.ports.includes('80:80'), 'Caddy takes 80 (ACME, redirect) and 443');
    assert.equal(caddy.environment.LEGIBLE_UPSTREAM, `legible:${env.PORT}`);
    assert.ok((caddy.volumes as string[]).includes('./Caddyfile:/etc/caddy/Caddyfile:ro'));
    assert.equal(caddy.depends_on.legible.condition, 'service_healthy');
    const backup = compose.services.backup;
    assert.deepEqual(backup.build, legible.build, 'the backup service builds the same image (nothing to pull)');
    assert.equal(backup.image, legible.image);
    assert.ok((backup.volumes as string[]).includes('legible-data:/data'));
    assert.match(backup.entrypoint.join(' '), new RegExp(`backup --db ${env.LEGIBLE_DB} --dir /backups --keep \\d+`));
    const example = read('deploy/env.example');
    for (const v of ['LEGIBLE_DOMAIN', 'LEGIBLE_STUDIES', 'LEGIBLE_BACKUPS']) assert.match(example, new RegExp(`^${v}=`, 'm'));
  });

  test('docker compose config accepts the file', { skip: spawnSync('docker', ['compose', 'version']).status === 0 ? false : 'no `docker compose` here (the Docker CLI has no compose plugin)' }, () => {
    const dir = tempDir('legible-compose-');
    writeFileSync(join(dir, '.env'), 'LEGIBLE_DOMAIN=study.example.org\n');
    const r = spawnSync('docker', ['compose', '-f', join(repo, 'deploy/compose.yaml'), '--env-file', join(dir, '.env'), 'config', '--quiet'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });

  test('Caddy with deploy/Caddyfile in front of a real server, over HTTPS: participants reach it, and a forged X-Forwarded-For does not reach the rate limits or the log', { skip: has('caddy') ? false : 'caddy is not installed (apt-get install caddy)' }, async () => {
    const fx = makeFixture();
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(chunk.toString());
        done();
      },
    });
    const srv = await startServer({
      port: 0,
      db: join(fx.root, 'caddy.db'),
      studiesDir: fx.studiesDir,
      studies: [fx.studyFile],
      clientDir: join(fx.root, 'none'),
      signals: false,
      watchMs: 0,
      trustProxy: 1,
      logIp: true,
      limits: { createPerMinute: 1 },
      log: pino({ level: 'debug' }, sink),
      build: async () => {
        throw new Error('no builds');
      },
    });
    // The deployed Caddyfile's site block, under test-only global options: no admin endpoint, a
    // local CA (no ACME; not installed into the system's trust store), state in a temporary folder.
    const dir = tempDir('legible-caddy-');
    writeFileSync(join(dir, 'Caddyfile'), `{\n\tadmin off\n\tlocal_certs\n\tskip_install_trust\n}\n${read('deploy/Caddyfile')}`);
    const port = await freePort();
    const caddy = spawn('caddy', ['run', '--config', join(dir, 'Caddyfile'), '--adapter', 'caddyfile'], {
      cwd: dir,
      env: { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config'), LEGIBLE_DOMAIN: `https://127.0.0.1:${port}`, LEGIBLE_UPSTREAM: `127.0.0.1:${srv.port}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let caddyLog = '';
    caddy.stdout.on('data', (c: Buffer) => (caddyLog += c.toString()));
    caddy.stderr.on('data', (c: Buffer) => (caddyLog += c.toString()));
    const https = (method: string, path: string, body?: unknown, headers: Record<string, string> = {}) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const req = httpsRequest({ host: '127.0.0.1', port, path, method, rejectUnauthorized: false, headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
        });
        req.on('error', reject);
        req.end(body === undefined ? undefined : JSON.stringify(body));
      });
    try {
      let health: { status: number; text: string } | undefined;
      for (let i = 0; i < 100 && !health; i++) {
        health = await https('GET', '/healthz').catch(() => undefined);
        if (!health) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(health, `Caddy did not answer on https://127.0.0.1:${port}:\n${caddyLog}`);
      assert.equal(health.status, 200);
      assert.deepEqual(JSON.parse(health.text), { status: 'ok', studies: 1 });
      assert.equal((await https('GET', '/api/studies/fixture')).status, 200);
      // A participant forging X-Forwarded-For gets no second session creation through the limit
      // of one per minute: Caddy replaces the header with the address it saw.
      const first = await https('POST', '/api/sessions', { study: 'fixture', participant: 'one' }, { 'x-forwarded-for': '203.0.113.50' });
      assert.equal(first.status, 201, first.text);
      const forged = await https('POST', '/api/sessions', { study: 'fixture', participant: 'two' }, { 'x-forwarded-for': '198.51.100.77' });
      assert.equal(forged.status, 429, forged.text);
      const ips = new Set(lines.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request').map((e) => e.ip));
      assert.deepEqual([...ips], ['127.0.0.1'], 'the address Caddy saw, never a forged one');
    } finally {
      caddy.kill('SIGTERM');
      await once(caddy, 'exit');
      await srv.close();
      fx.cleanup();
    }
  });
});

describe('systemd units (deploy/systemd)', () => {
  const units = ['legible.service', 'legible-backup.service', 'legible-backup.timer'];
  /** A unit's Key=value lines (repeated keys in order). */
  const unit = (name: string): [string, string][] =>
    read(`deploy/systemd/${name}`)
      .split('\n')
      .filter((l) => /^\w+=/.test(l))
      .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as [string, string]);
  const envOf = (u: [string, string][]) => Object.fromEntries(u.filter(([k]) => k === 'Environment').flatMap(([, v]) => v.split(/\s+/).map((kv) => kv.split('=') as [string, string])));
  const execOf = (u: [string, string][]) => u.find(([k]) => k === 'ExecStart')![1].split(/\s+/);

  test('systemd-analyze verify finds nothing to say; the timer runs the backup service hourly and catches up after downtime', { skip: has('systemd-analyze') ? false : 'systemd-analyze is not installed (apt-get install systemd)' }, () => {
    const dir = tempDir('legible-units-');
    for (const u of units) writeFileSync(join(dir, u), read(`deploy/systemd/${u}`).replaceAll('/opt/legible', repo).replaceAll('/usr/bin/node', process.execPath));
    const r = spawnSync('systemd-analyze', ['verify', ...units.map((u) => join(dir, u))], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', `systemd-analyze verify:\n${r.stderr}`);
    const timer = unit('legible-backup.timer');
    const cal = spawnSync('systemd-analyze', ['calendar', timer.find(([k]) => k === 'OnCalendar')![1]], { encoding: 'utf8' });
    assert.equal(cal.status, 0, cal.stderr);
    assert.match(cal.stdout, /Normalized form: \*-\*-\* \*:00:00/);
    assert.ok(timer.some(([k, v]) => k === 'Persistent' && v === 'true'));
  });

  test("the units' commands, run as written (paths moved to a temporary folder): the server serves and stops on SIGTERM, the backup service writes a copy", async () => {
    const serveUnit = unit('legible.service');
    const backupUnit = unit('legible-backup.service');
    assert.equal(serveUnit.find(([k]) => k === 'User')![1], 'legible', 'runs as its own user');
    assert.equal(serveUnit.find(([k]) => k === 'KillSignal')![1], 'SIGTERM');
    assert.equal(serveUnit.find(([k]) => k === 'StateDirectory')![1], 'legible');
    const fx = makeFixture({ noModel: true });
    const state = join(fx.root, 'var-lib-legible');
    const backups = join(fx.root, 'var-backups-legible');
    mkdirSync(state);
    mkdirSync(backups);
    const move = (a: string) => a.replace('/opt/legible', repo).replace('/var/lib/legible/studies', fx.studiesDir).replace('/var/lib/legible', state).replace('/var/backups/legible', backups).replace('/usr/bin/node', process.execPath);
    const env = Object.fromEntries(Object.entries(envOf(serveUnit)).map(([k, v]) => [k, move(v)]));
    assert.equal(env.HOST, '127.0.0.1', 'listens on loopback only: Caddy on the same machine proxies to it');
    assert.equal(env.TRUST_PROXY, 'loopback');
    const server = startServing(execOf(serveUnit).map(move), { ...env, PORT: '0' });
    try {
      const port = await server.port;
      assert.equal((await call(`http://127.0.0.1:${port}`, 'GET', '/healthz')).status, 200);
      const benv = Object.fromEntries(Object.entries(envOf(backupUnit)).map(([k, v]) => [k, move(v)]));
      assert.equal(benv.LEGIBLE_DB, env.LEGIBLE_DB, 'the backup service copies the database the server writes');
      const b = await run(execOf(backupUnit).map(move), benv);
      assert.equal(b.code, 0, b.out);
      assert.equal(readdirSync(backups).filter((f) => f.endsWith('.db')).length, 1, b.out);
      server.child.kill('SIGTERM');
      const [code] = (await once(server.child, 'exit')) as [number | null];
      assert.equal(code, 0, server.output());
    } finally {
      if (server.child.exitCode === null) server.child.kill('SIGKILL');
      fx.cleanup();
    }
  });
});

describe('docs/deploy.md', () => {
  test('every file it names exists, and its backup-file names are the ones legible backup --dir writes', () => {
    const doc = read('docs/deploy.md');
    const named = new Set([...doc.matchAll(/`((?:deploy|server|docs|stimuli-pipeline)\/[\w./-]+\.(?:yaml|ts|md|service|timer|example)|Dockerfile|deploy\/Caddyfile|\.ci\/run)`/g)].map((m) => m[1]));
    assert.ok(named.size >= 8, [...named].join(', '));
    for (const f of named) assert.ok(existsSync(join(repo, f)), `docs/deploy.md names ${f}, which does not exist`);
    for (const m of doc.matchAll(/legible-(\d{8}T\d+Z)\.db/g)) assert.match(m[1], /^\d{8}T\d{9}Z$/, `backup name ${m[0]} as --dir writes it`);
    // The start-up lines it shows are the ones serve prints (server/test/proxy.test.ts checks those).
    assert.ok(doc.includes('Prolific study URL: https://study.lab.org/?study=my-study&PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}'));
    assert.match(doc, /legible: serving on https:\/\/study\.lab\.org \(listening on http:\/\/localhost:3000, database \/data\/legible\.db\)/);
  });
});
