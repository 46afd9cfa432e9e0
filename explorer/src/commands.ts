// `legible explore`: the command. Loads its heavy parts (the pipeline, sharp, onnxruntime) only when run.
import { parseCommandArgs, type Command } from '@legible/studies';

export const explore: Command = {
  name: 'explore',
  summary: 'Write a study\'s feature explorer (a static site, admin only: it shows the answer keys) into build/explorer/',
  usage: '<study-id | study.yaml> [--data legible.db | trials.csv] [--mode live|pilot|all] [--no-try]',
  help: [
    'Writes studies/<id>/build/explorer/: an overview of every study feature (layers × bases; max and',
    'min exemplars, feature visualizations, decision contribution, machine score, human accuracy) and a',
    'page per feature (activation histogram over the reference split with exemplars at quantiles, the',
    'trials that use it and the answers to them), plus a panel that runs the model on a photo in the',
    'browser (onnxruntime-web: wasm, WebGPU where the browser has it). Builds the stimuli first when they',
    'are missing or stale. Open it from `legible serve` at /admin/explorer/<id>/ (admin token), or serve',
    'the build folder with any file server and open /explorer/ — it shows exemplars: keep it private.',
    '',
    'Options:',
    '  --data FILE   human answers: the database `legible serve` writes, or a trials.csv/.jsonl from',
    '                `legible export` (accuracy with a participant-level bootstrap interval, confidence, RT):',
    '                main trials of the sessions the study\'s exclusion rules keep, as `legible analyze`;',
    '                simulated participants (`legible pilot`) are labelled so, never mixed with real ones',
    '  --mode MODE   sessions of this mode only: live, pilot or all (default: live when there is any)',
    '  --no-try      leave out the "try an image" panel (no model or onnxruntime-web files in the site)',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(argv, { data: { type: 'string' }, mode: { type: 'string' }, 'no-try': { type: 'boolean' } }, { min: 1, max: 1 });
    const { loadStudy } = await import('@legible/studies');
    const { buildExplorer } = await import('./build.ts');
    await buildExplorer(loadStudy(positionals[0]), { data: values.data, mode: values.mode, noTry: values['no-try'] });
    return 0;
  },
};

export const commands: Command[] = [explore];
