// The server's commands: `legible serve`, `legible admin-token`, `legible backup`, `legible restore`, `legible withdraw`.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { defaultStudiesDir, intOption, LegibleError, parseCommandArgs, UsageError, type Command } from '@legible/studies';
import { DEFAULT_RATE_LIMITS } from './limits.ts';
// Each command's run() imports the modules it needs: loading this file (as every `legible` run
// does, to list the commands) loads neither Express nor SQLite.
const openDatabase = async (...args: Parameters<typeof import('./db.ts').openDatabase>) => (await import('./db.ts')).openDatabase(...args);

const dbOption = { db: { type: 'string' } } as const;
const dbFile = (value: string | undefined) => value ?? process.env.LEGIBLE_DB ?? './legible.db';
const DB_HELP = '  --db FILE       the database file (env LEGIBLE_DB; default ./legible.db)';

export const serve: Command = {
  name: 'serve',
  summary: 'Run the study server: participant pages, sessions, exactly-once trial records',
  usage: '[--port P] [--host H] [--db FILE] [--studies DIR] [--study ID ...] [--client DIR] [--trust-proxy V] [--public-url URL] [--log-ip] [--log-file FILE] [--watch MS] [--limit-ip N] [--limit-session N] [--simulated]',
  help: [
    'Options:',
    '  --port P        port to listen on (env PORT; default 3000; 0 picks a free one)',
    '  --host H        address to listen on (env HOST; default 127.0.0.1; 0.0.0.0 for every interface)',
    '  --db FILE       SQLite database file, created if missing (env LEGIBLE_DB; default ./legible.db)',
    '  --studies DIR   folder with one <id>/study.yaml per study (default: the repository\'s studies/)',
    '  --study ID      serve only this study (an id, folder or study file); repeat for several',
    '  --client DIR    the built participant client (default: client/dist)',
    '  --trust-proxy V behind a reverse proxy: Express\'s "trust proxy" (e.g. loopback, or 1 for one hop;',
    '                  env TRUST_PROXY), so that rate limits see the participants\' addresses',
    '  --public-url URL  the HTTPS address participants reach (env PUBLIC_URL; e.g. https://study.lab.org),',
    '                  used in the links printed at start-up, the one for Prolific included',
    '  --log-ip        write client addresses into the request log (default: no IPs in the logs)',
    '  --log-file FILE append every log line, one per request included, to FILE as JSON (env LOG_FILE)',
    '  --watch MS      look for new and changed study folders every MS milliseconds (default 2000; 0: never)',
    `  --limit-ip N    API requests per minute per client address (default ${DEFAULT_RATE_LIMITS.ipPerMinute}; 0: no limit)`,
    `  --limit-session N  requests per minute per session (default ${DEFAULT_RATE_LIMITS.sessionPerMinute}; 0: no limit)`,
    `  --limit-create N   session creations per minute per client address (default ${DEFAULT_RATE_LIMITS.createPerMinute}; 0: no limit)`,
    '  --simulated     serve simulated participants only (`legible pilot --url`): the database is marked',
    '                  as one of simulated participants (refused if it holds real sessions), and a',
    '                  database so marked is refused without this flag',
    '',
    'A study without build/manifest.json has its stimuli built first; one whose model is here is',
    're-checked (stale stimuli rebuilt) only when its files changed since the last check, which is',
    'kept in the database, so a restart on the same database skips unchanged studies. The server secret for',
    'pseudonyms and tokens is generated in the database, or taken from env LEGIBLE_SECRET.',
    'The admin dashboard is at /admin; create a token for it with `legible admin-token create`.',
    'Stop with Ctrl-C (SIGINT) or SIGTERM: requests in flight finish, then the database closes.',
    '',
    'Logs: env LOG_LEVEL (fatal, error, warn, info, debug, trace, silent; default info). Each request',
    'is logged at debug level, so the default shows start-up lines, warnings and errors. On a terminal',
    'the lines are human-readable, otherwise JSON, one object per line (LOG_FORMAT=json|pretty forces one).',
  ].join('\n'),
  async run(argv) {
    const { values } = parseCommandArgs(
      argv,
      {
        port: { type: 'string' },
        host: { type: 'string' },
        db: { type: 'string' },
        studies: { type: 'string' },
        study: { type: 'string', multiple: true },
        client: { type: 'string' },
        'trust-proxy': { type: 'string' },
        'public-url': { type: 'string' },
        'log-ip': { type: 'boolean' },
        'log-file': { type: 'string' },
        watch: { type: 'string' },
        'limit-ip': { type: 'string' },
        'limit-session': { type: 'string' },
        'limit-create': { type: 'string' },
        simulated: { type: 'boolean' },
      },
      { min: 0, max: 0 },
    );
    const port = intOption(values.port ?? process.env.PORT, 'port', 3000);
    if (port < 0 || port > 65535) throw new UsageError(`--port expects a port number from 0 to 65535, got ${port}`);
    const limit = (name: string, value: string | undefined, fallback: number) => {
      const n = intOption(value, name, fallback);
      if (n < 0) throw new UsageError(`--${name} expects a whole number ≥ 0 (0 turns the limit off), got ${n}`);
      return n;
    };
    const trust = values['trust-proxy'] ?? (process.env.TRUST_PROXY || undefined);
    const publicUrl = parsePublicUrl(values['public-url'] ?? (process.env.PUBLIC_URL || undefined));
    const { createServerLog } = await import('./logging.ts');
    const { startServer } = await import('./app.ts');
    const logging = createServerLog({ file: values['log-file'] });
    const { log } = logging;
    const running = await startServer({
      port,
      host: values.host ?? process.env.HOST ?? '127.0.0.1',
      db: dbFile(values.db),
      studiesDir: values.studies ?? defaultStudiesDir(),
      studies: values.study,
      clientDir: values.client,
      log,
      progress: (line) => console.log(line),
      trustProxy: trust === undefined ? false : /^\d+$/.test(trust) ? Number(trust) : trust === 'true' ? true : trust === 'false' ? false : trust,
      logIp: values['log-ip'] ?? false,
      watchMs: (() => {
        const ms = intOption(values.watch, 'watch', 2000);
        if (ms < 0) throw new UsageError(`--watch expects milliseconds ≥ 0 (0: do not look for new or changed studies), got ${ms}`);
        return ms;
      })(),
      limits: {
        ipPerMinute: limit('limit-ip', values['limit-ip'], DEFAULT_RATE_LIMITS.ipPerMinute),
        sessionPerMinute: limit('limit-session', values['limit-session'], DEFAULT_RATE_LIMITS.sessionPerMinute),
        createPerMinute: limit('limit-create', values['limit-create'], DEFAULT_RATE_LIMITS.createPerMinute),
      },
      simulated: values.simulated ?? false,
    });
    // Loopback and every-interface addresses are shown as localhost, the address a browser on this machine uses.
    const local = ['127.0.0.1', '0.0.0.0', '::'].includes(running.host) ? `http://localhost:${running.port}` : running.url;
    const shown = publicUrl ?? local;
    console.log(publicUrl ? `legible: serving on ${publicUrl} (listening on ${local}, database ${running.db.file})` : `legible: serving on ${local} (database ${running.db.file})`);
    if (trust !== undefined && trust !== 'false') console.log(`  trusting X-Forwarded-For from ${trust} (--trust-proxy): rate limits and --log-ip see the forwarded client address`);
    let prolific = false;
    for (const id of running.registry.ids()) {
      const { study } = running.registry.get(id)!;
      console.log(`  ${study.mode.padEnd(7)} ${shown}/?study=${encodeURIComponent(id)}   ${study.title}`);
      if (study.recruitment.platform !== 'prolific') continue;
      prolific = true;
      // Prolific replaces these placeholders with the participant's ids (Study URL, "URL parameters").
      console.log(`          Prolific study URL: ${shown}/?study=${encodeURIComponent(id)}&${PROLIFIC_PARAMS}`);
    }
    if (prolific && !publicUrl) console.log('  give participants the HTTPS address of the reverse proxy: set --public-url (env PUBLIC_URL) so that the links above show it (docs/deploy.md)');
    if (logging.file) console.log(`  every request is logged to ${logging.file}`);
    await running.closed;
    logging.flush();
    return 0;
  },
};

/** The query string Prolific fills in: its placeholders for the participant, study and submission ids. */
export const PROLIFIC_PARAMS = 'PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}&SESSION_ID={{%SESSION_ID%}}';

/** --public-url: an http(s) origin (the client calls /api and /stimuli at the root of its host). */
function parsePublicUrl(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`--public-url expects an http:// or https:// URL, e.g. https://study.lab.org, got "${value}"`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UsageError(`--public-url expects an http:// or https:// URL, e.g. https://study.lab.org, got "${value}"`);
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password) {
    throw new UsageError(`--public-url must be the address of the host alone (${url.origin}), got "${value}": legible is served at the root of its host name, so give it its own (sub)domain, e.g. https://study.lab.org`);
  }
  return url.origin;
}

export const adminToken: Command = {
  name: 'admin-token',
  summary: 'Create, list or revoke the bearer tokens of the admin dashboard and API',
  usage: 'create [--label L] [--db FILE] | list [--db FILE] | revoke <id> [--db FILE]',
  help: [
    'Subcommands:',
    '  create          make a new token and print it (alone, on the last line); only its hash is',
    '                  stored, so keep it now: it cannot be shown again',
    '  list            the tokens: id, label, created, last used, revoked',
    '  revoke <id>     revoke a token at once (the id from `list`)',
    'Options:',
    '  --label L       what the token is for, e.g. "alice laptop" (shown in the audit log)',
    DB_HELP,
    '',
    'There are no default credentials: the admin API answers 401 until a token exists.',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { ...dbOption, label: { type: 'string' } }, { min: 1, max: 2 });
    const [sub, arg] = positionals;
    if (!['create', 'list', 'revoke'].includes(sub)) throw new UsageError(`unknown subcommand "${sub}": expected create, list or revoke`);
    if (sub !== 'revoke' && arg !== undefined) throw new UsageError(`unexpected argument "${arg}"`);
    if (values.label !== undefined && sub !== 'create') throw new UsageError('--label goes with create');
    const file = dbFile(values.db);
    if (sub !== 'create' && !existsSync(file)) throw new LegibleError(`no database at ${file}: give the file that \`legible serve\` writes with --db (or LEGIBLE_DB)`);
    const db = await openDatabase(file, { withoutSecret: true });
    try {
      if (sub === 'create') {
        const label = values.label?.trim() || null;
        if (label && label.length > 100) throw new UsageError('--label: at most 100 characters');
        const { id, token } = db.write(() => {
          const t = db.createAdminToken(label);
          db.audit({ actor: 'cli', action: 'token.create', detail: { token_id: t.id, label } });
          return t;
        });
        console.log(`admin token ${id}${label ? ` (${label})` : ''} created in ${db.file}; it is shown only now. Open /admin and paste it, or send it as "Authorization: Bearer <token>".`);
        console.log(token);
        return 0;
      }
      if (sub === 'list') {
        const tokens = db.adminTokens();
        if (tokens.length === 0) {
          console.log(`no admin tokens in ${db.file}: create one with \`legible admin-token create\``);
          return 0;
        }
        console.log(['id', 'label', 'created', 'last used', 'revoked'].join('\t'));
        for (const t of tokens) console.log([t.id, t.label ?? '', t.created_at, t.last_used_at ?? '', t.revoked_at ?? ''].join('\t'));
        return 0;
      }
      if (arg === undefined || !/^[1-9]\d*$/.test(arg)) throw new UsageError('revoke expects a token id (a whole number; see `legible admin-token list`)');
      const id = Number(arg);
      const revoked = db.write(() => {
        const ok = db.revokeAdminToken(id);
        if (ok) db.audit({ actor: 'cli', action: 'token.revoke', detail: { token_id: id } });
        return ok;
      });
      if (!revoked) throw new LegibleError(`no live admin token with id ${id} in ${db.file} (see \`legible admin-token list\`)`);
      console.log(`admin token ${id} revoked`);
      return 0;
    } finally {
      db.close();
    }
  },
};

export const backup: Command = {
  name: 'backup',
  summary: 'Copy the database while the server runs (SQLite online backup), checked before it is kept',
  usage: '--db FILE (--out FILE [--force] | --dir DIR [--keep N])',
  help: [
    'Options:',
    DB_HELP,
    '  --out FILE      where the copy goes (a single self-contained SQLite file)',
    '  --force         replace --out if it exists',
    '  --dir DIR       instead of --out: write DIR/<database name>-<UTC time>.db (for a timer or cron)',
    '  --keep N        with --dir: then delete this database\'s copies in DIR beyond the newest N',
    '',
    'Uses SQLite\'s backup API, not a file copy: the copy is consistent even while `legible serve`',
    'is writing, holds every answer committed before it started, and is integrity-checked before',
    'it replaces --out. The backup is written to the audit log. `legible restore` puts one back.',
  ].join('\n'),
  async run(argv) {
    const { values } = parseCommandArgs(
      argv,
      { ...dbOption, out: { type: 'string' }, force: { type: 'boolean' }, dir: { type: 'string' }, keep: { type: 'string' } },
      { min: 0, max: 0 },
    );
    if ((values.out === undefined) === (values.dir === undefined)) throw new UsageError('give either --out FILE or --dir DIR');
    if (values.keep !== undefined && values.dir === undefined) throw new UsageError('--keep goes with --dir');
    if (values.force && values.dir !== undefined) throw new UsageError('--force goes with --out (--dir never replaces a file)');
    const keep = values.keep === undefined ? undefined : intOption(values.keep, 'keep', 0);
    if (keep !== undefined && keep < 1) throw new UsageError(`--keep expects a whole number ≥ 1, got ${keep}`);
    const source = dbFile(values.db);
    const { backupDatabase, backupToDir } = await import('./backup.ts');
    const result = values.dir !== undefined ? await backupToDir(source, values.dir, { keep }) : await backupDatabase(source, values.out!, { overwrite: values.force ?? false });
    const db = await openDatabase(source, { withoutSecret: true });
    try {
      db.audit({ actor: 'cli', action: 'backup', detail: { out: result.file, bytes: result.bytes, trials: result.rows.trials ?? 0 } });
    } finally {
      db.close();
    }
    const counts = ['sessions', 'trials', 'events'].map((t) => `${result.rows[t] ?? 0} ${t}`).join(', ');
    console.log(`backup of ${source} written to ${result.file}: ${(result.bytes / 1024).toFixed(0)} KiB, ${counts} (${result.ms} ms; integrity ok)`);
    const removed: string[] = 'removed' in result ? (result.removed as string[]) : [];
    if (removed.length) console.log(`removed ${removed.length} older backup${removed.length === 1 ? '' : 's'} (--keep ${keep}): ${removed.join(', ')}`);
    return 0;
  },
};

export const restore: Command = {
  name: 'restore',
  summary: 'Put a backup back in place of the database (with the server stopped); the replaced file is kept',
  usage: '--from BACKUP --db FILE',
  help: [
    'Options:',
    '  --from BACKUP   a file that `legible backup` wrote',
    DB_HELP,
    '',
    'Stop the server first (systemctl stop legible, or docker compose stop legible): restore',
    'refuses a database that another process has open. The backup is checked (a legible database,',
    'integrity) before anything changes; the database it replaces is moved, not deleted, to',
    'FILE.before-restore-<UTC time>. The restore is written to the audit log. Answers recorded after',
    'the backup was made are not in it (they are in the file moved aside).',
  ].join('\n'),
  async run(argv) {
    const { values } = parseCommandArgs(argv, { ...dbOption, from: { type: 'string' } }, { min: 0, max: 0 });
    if (!values.from) throw new UsageError('--from BACKUP is required');
    const file = dbFile(values.db);
    const { restoreDatabase } = await import('./backup.ts');
    const result = restoreDatabase(values.from, file);
    const db = await openDatabase(file, { withoutSecret: true });
    try {
      db.audit({ actor: 'cli', action: 'restore', detail: { from: values.from, trials: result.rows.trials ?? 0, aside: result.aside } });
    } finally {
      db.close();
    }
    const counts = ['sessions', 'trials', 'events'].map((t) => `${result.rows[t] ?? 0} ${t}`).join(', ');
    console.log(`restored ${resolve(values.from)} to ${resolve(file)}: ${counts}`);
    if (result.aside) console.log(`the database it replaced is kept as ${result.aside}`);
    return 0;
  },
};

export const withdraw: Command = {
  name: 'withdraw',
  summary: "Delete a participant's data from a study (identity, sessions, trials, events), logged in the audit log",
  usage: '<prolific-or-participant-id> --study ID [--db FILE]',
  help: [
    'The id is the PROLIFIC_PID (or generic participant id) the participant came with, or the',
    'pseudonym in the `participant` column of trials.csv. Everything stored about them in that',
    'study is deleted in one transaction; the audit log records the counts, not the id.',
    'Options:',
    '  --study ID      the study to withdraw them from',
    DB_HELP,
    '',
    'Backups made before keep the data: delete or re-make them too.',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { ...dbOption, study: { type: 'string' } }, { min: 1, max: 1 });
    if (!values.study) throw new UsageError('--study ID is required');
    const id = positionals[0].trim();
    if (!id) throw new UsageError('expected a participant id');
    const file = dbFile(values.db);
    if (!existsSync(file)) throw new LegibleError(`no database at ${file}: give the file that \`legible serve\` writes with --db (or LEGIBLE_DB)`);
    // The secret is used when it can be resolved (to find sessions by pseudonym); the identities table suffices otherwise.
    let db;
    try {
      db = await openDatabase(file);
    } catch {
      db = await openDatabase(file, { withoutSecret: true });
    }
    try {
      const counts = db.withdraw(values.study, id);
      if (counts.participants === 0) {
        console.log(`nothing stored for that participant in study "${values.study}" (${db.file}); the attempt is in the audit log`);
        return 1;
      }
      console.log(`withdrawn from "${values.study}": ${counts.sessions} session(s), ${counts.trials} trial(s), ${counts.events} event(s) deleted`);
      return 0;
    } finally {
      db.close();
    }
  },
};

export const pilot: Command = {
  name: 'pilot',
  summary: 'Run simulated participants through the real server, answering with the machine observer\'s predictions',
  usage: '<study-id | study.yaml> --participants N [--accuracy CONDITION=P,...] [--db FILE | --url URL] [--seed S]',
  help: [
    'Each simulated participant starts a session, gets its task list from the server\'s assignment,',
    'answers every trial (practice, catch, main) and finishes, over the HTTP API, in simulated time.',
    'A trial is answered correctly with the probability `legible predict` gave it (build/predict.json),',
    'or with --accuracy per condition. Then `legible export` and `legible analyze` run on the pilot',
    'database as on a real one; every row is marked simulated (column `simulated` = 1), as are the',
    'admin dashboard and the report. Simulated and real participants never share a database.',
    '',
    'Options:',
    '  --participants N   how many simulated participants',
    '  --accuracy SPEC    P(correct) per condition instead of the machine observer, e.g.',
    '                     nmf=0.85,channels=0.6 (keys: a basis, a layer, layer/basis, catch (default',
    '                     0.97) and * for the rest)',
    '  --db FILE          the pilot database for a server started here on 127.0.0.1 (default: pilot.db',
    '                     beside the study file); created and marked simulated; refused if it holds real',
    '                     sessions. Each run adds N participants: delete the file to start over',
    '  --url URL          a running server of simulated participants instead (`legible serve --simulated`);',
    '                     its clock is real, so time-based exclusions see the simulated participants\' speed',
    '  --seed S           seed of the simulated answers (default: the study seed)',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { participants: { type: 'string' }, accuracy: { type: 'string' }, db: { type: 'string' }, url: { type: 'string' }, seed: { type: 'string' } },
      { min: 1, max: 1 },
    );
    if (values.participants === undefined) throw new UsageError('--participants N is required');
    const participants = intOption(values.participants, 'participants', 0);
    if (participants < 1) throw new UsageError(`--participants expects a whole number ≥ 1, got ${participants}`);
    if (values.db && values.url) throw new UsageError('--db is for a server started here; with --url the server has its own database');
    const seed = values.seed === undefined ? undefined : intOption(values.seed, 'seed', 0);
    const { loadStudy } = await import('@legible/studies');
    const { runPilot } = await import('./pilot.ts');
    const loaded = loadStudy(positionals[0]);
    const result = await runPilot(loaded, { participants, accuracy: values.accuracy, db: values.db, url: values.url, seed });
    const answered = result.sessions.reduce((a, s) => a + s.answered, 0);
    const outcomes = new Map<string, number>();
    for (const s of result.sessions) outcomes.set(s.outcome, (outcomes.get(s.outcome) ?? 0) + 1);
    console.log(`legible pilot: ${result.participants} simulated participants of ${loaded.study.id} answered ${answered} trials through ${result.url} (${[...outcomes].map(([o, n]) => `${n} ${o}`).join(', ')}); answers from ${result.source}.`);
    if (result.db) {
      console.log(`Simulated data in ${result.db} (marked simulated; never serve real participants from it). Next:`);
      console.log(`  legible export ${loaded.study.id} --db ${result.db} --out pilot-export/`);
      console.log(`  legible analyze ${loaded.study.id} --db ${result.db} --out pilot-report/`);
    }
    return 0;
  },
};

export const commands: Command[] = [serve, adminToken, backup, restore, withdraw, pilot];
