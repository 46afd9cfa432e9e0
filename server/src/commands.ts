// `legible serve`: the study server, from the command line.
import { defaultStudiesDir, intOption, parseCommandArgs, UsageError, type Command } from '@legible/studies';
import { pino } from 'pino';
import { startServer } from './app.ts';

export const serve: Command = {
  name: 'serve',
  summary: 'Run the study server: participant pages, sessions, exactly-once trial records',
  usage: '[--port P] [--host H] [--db FILE] [--studies DIR] [--study ID ...] [--client DIR]',
  help: [
    'Options:',
    '  --port P        port to listen on (env PORT; default 3000; 0 picks a free one)',
    '  --host H        address to listen on (env HOST; default 127.0.0.1; 0.0.0.0 for every interface)',
    '  --db FILE       SQLite database file, created if missing (env LEGIBLE_DB; default ./legible.db)',
    '  --studies DIR   folder with one <id>/study.yaml per study (default: the repository\'s studies/)',
    '  --study ID      serve only this study (an id, folder or study file); repeat for several',
    '  --client DIR    the built participant client (default: client/dist)',
    '',
    'A study without build/manifest.json has its stimuli built first. The server secret for',
    'pseudonyms and tokens is generated in the database, or taken from env LEGIBLE_SECRET.',
    'Stop with Ctrl-C (SIGINT) or SIGTERM: requests in flight finish, then the database closes.',
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
      },
      { min: 0, max: 0 },
    );
    const port = intOption(values.port ?? process.env.PORT, 'port', 3000);
    if (port < 0 || port > 65535) throw new UsageError(`--port expects a port number from 0 to 65535, got ${port}`);
    const log = pino({ base: undefined, level: process.env.LOG_LEVEL ?? 'info' });
    const running = await startServer({
      port,
      host: values.host ?? process.env.HOST ?? '127.0.0.1',
      db: values.db ?? process.env.LEGIBLE_DB ?? './legible.db',
      studiesDir: values.studies ?? defaultStudiesDir(),
      studies: values.study,
      clientDir: values.client,
      log,
      progress: (line) => console.log(line),
    });
    // Loopback and every-interface addresses are shown as localhost, the address a browser on this machine uses.
    const shown = ['127.0.0.1', '0.0.0.0', '::'].includes(running.host) ? `http://localhost:${running.port}` : running.url;
    console.log(`legible: serving on ${shown} (database ${running.db.file})`);
    for (const id of running.registry.ids()) {
      const { study } = running.registry.get(id)!;
      console.log(`  ${study.mode.padEnd(7)} ${shown}/?study=${encodeURIComponent(id)}   ${study.title}`);
    }
    await running.closed;
    return 0;
  },
};

export const commands: Command[] = [serve];
