import { parseCommandArgs, type Command } from '@legible/studies';

export const exportCommand: Command = {
  name: 'export',
  summary: 'Write the tidy trial CSV (one row per trial) and its data dictionary',
  usage: '<study-id> --out <trials.csv | folder> [--db FILE] [--no-practice]',
  help: 'The database is the one `legible serve` writes (default ./legible.db, or LEGIBLE_DB).',
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      { out: { type: 'string' }, db: { type: 'string' }, 'no-practice': { type: 'boolean' } },
      { min: 1, max: 1 },
    );
    if (!values.out) {
      const { UsageError } = await import('@legible/studies');
      throw new UsageError('--out is required: a .csv file or a folder');
    }
    const { exportStudy } = await import('./export.ts');
    const db = values.db ?? process.env.LEGIBLE_DB ?? 'legible.db';
    const { rows, files } = await exportStudy(values.out, { db, study: positionals[0], practice: !values['no-practice'] });
    console.log(`${rows} trials → ${files.join(', ')}`);
    return 0;
  },
};

export const commands: Command[] = [exportCommand];
