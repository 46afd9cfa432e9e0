import { defaultStudiesDir, intOption, parseCommandArgs, UsageError, type Command } from '@legible/studies';

export const exportCommand: Command = {
  name: 'export',
  summary: 'Write the tidy trial table, the participant table (with exclusion flags) and their data dictionary',
  usage: '<study> --out <folder | trials.csv | trials.jsonl> [--db FILE] [--format csv|jsonl] [--no-practice] [--include-incomplete] [--studies DIR]\n       <another tool\'s file> --mapping FILE --out <folder> [--study FILE]',
  help: [
    'The database is the one `legible serve` writes (default ./legible.db, or LEGIBLE_DB).',
    'With --mapping, another tool\'s trial file is read through the mapping and written in the same format (CSV):',
    'trials.csv, participants.csv, data-dictionary.md and datapackage.json (exclusion rules: the mapping\'s, else --study\'s).',
    'A folder gets trials.csv, participants.csv and data-dictionary.md; a .csv or .jsonl file name gets the trials,',
    'with participants.* and data-dictionary.md beside it. Exclusion flags come from the study file\'s `exclusions`.',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      {
        out: { type: 'string' },
        db: { type: 'string' },
        format: { type: 'string' },
        'no-practice': { type: 'boolean' },
        'include-incomplete': { type: 'boolean' },
        studies: { type: 'string' },
        mapping: { type: 'string' },
        study: { type: 'string' },
      },
      { min: 1, max: 1 },
    );
    if (!values.out) throw new UsageError('--out is required: a folder, or a .csv / .jsonl file');
    const { formatCounts } = await import('./exclusions.ts');
    if (values.mapping) {
      if (values.format && values.format !== 'csv') throw new UsageError('--mapping exports CSV only');
      const { existsSync } = await import('node:fs');
      if (!existsSync(positionals[0])) throw new UsageError(`no file ${positionals[0]} to read through the mapping`);
      const { loadMapping } = await import('./mapping.ts');
      const { exportMapped } = await import('./export-mapped.ts');
      const { loadStudy } = await import('@legible/studies');
      const loaded = values.study ? loadStudy(values.study, { studiesDir: values.studies ?? defaultStudiesDir(), checkFiles: false }) : null;
      const res = exportMapped(values.out, positionals[0], loadMapping(values.mapping), { exclusions: loaded?.study.exclusions, study: loaded?.study.id });
      console.log(`${res.rows} trials, ${res.participants} sessions → ${res.files.join(', ')}`);
      for (const c of res.counts) console.log(formatCounts(c));
      return 0;
    }
    const format = values.format;
    if (format !== undefined && format !== 'csv' && format !== 'jsonl') throw new UsageError(`--format is csv or jsonl, got "${format}"`);
    const { loadStudy } = await import('@legible/studies');
    const { exportStudy } = await import('./export.ts');
    // The study file gives the exclusion rules; a bare id with no study file still exports.
    let study = positionals[0];
    let exclusions = null;
    let participantDetails: 'coarse' | 'full' = 'coarse';
    try {
      const loaded = loadStudy(study, { studiesDir: values.studies ?? defaultStudiesDir(), checkFiles: false });
      study = loaded.study.id;
      exclusions = loaded.study.exclusions;
      participantDetails = loaded.study.data.participant_details;
    } catch (e) {
      if (/[/\\]|\.ya?ml$/.test(study)) throw e;
      console.error(`legible export: no study file for "${study}" (${(e as Error).message.split('\n')[0]}); participants.csv gets no exclusion flags.`);
    }
    const db = values.db ?? process.env.LEGIBLE_DB ?? 'legible.db';
    const res = await exportStudy(values.out, { db, study, practice: !values['no-practice'], format, exclusions, includeIncomplete: values['include-incomplete'], participantDetails });
    console.log(`${res.rows} trials, ${res.participants} sessions → ${res.files.join(', ')}`);
    for (const c of res.counts) console.log(formatCounts(c));
    return 0;
  },
};

const list = (v: string | undefined, name: string): number[] | undefined => {
  if (v === undefined) return undefined;
  const xs = v.split(',').map((s) => Number(s.trim()));
  if (xs.some((x) => !Number.isInteger(x) || x < 2)) throw new UsageError(`--${name} expects whole numbers ≥ 2 separated by commas, got "${v}"`);
  return xs;
};

export const analyzeCommand: Command = {
  name: 'analyze',
  summary: 'Exclusions, accuracy with bootstrap CIs, the GLMM (checked against lme4), non-parametric tests, power, and an HTML report',
  usage:
    '<study | trials.csv | trials.jsonl> --out DIR [--db FILE] [--mapping FILE] [--study FILE] [--formula "…"] [--compare "…"] [--by col,col] [--mode live|pilot|all] [--boot N] [--permutations N] [--power-coef NAME] [--power-effect X] [--power-n 20,40,80] [--power-sims N] [--power-post-hoc] [--no-power] [--include-incomplete] [--no-report] [--seed N] [--complexity order|share] [--manifest FILE]',
  help: [
    'A study id (or study file) reads its data from the database (--db, default ./legible.db or LEGIBLE_DB) and exports it to DIR/data first.',
    'A legible trials.csv/.jsonl is read with participants.* beside it; another tool\'s file needs --mapping (a YAML file naming its columns).',
    '',
    '  --formula   GLMM in R notation (default: correct ~ basis * layer [* reference_kind] + (1|participant) + (1|feature))',
    '  --compare   a nested formula to test against it by likelihood ratio (repeatable); every highest-order term is tested anyway',
    '  --by        condition columns for the accuracy table and figures (default: basis, layer, reference_kind as present)',
    '  --mode      which data (default: live when there is live data, else all)',
    '  --boot      bootstrap resamples (default 2000); --permutations (default 10000)',
    '  --power-*   power simulation: coefficient (default the basis term), effect in log-odds (default the study file\'s analysis.power.effect;',
    '              without one, no power is computed), participant counts, simulations per count (default 100)',
    '  --power-post-hoc  simulate with the data\'s own estimate when no effect is stated (labelled post hoc: not a planning figure)',
    '  --complexity  add each feature\'s complexity (order, or low-order share) from the stimuli manifest as the covariate "complexity":',
    '              default formula correct ~ basis * layer * complexity + (…); the report plots per-feature accuracy against it',
    '              (Spearman\'s ρ with a bootstrap CI). Needs a study built with a complexity: section; --manifest FILE to name another manifest',
    '',
    'Writes report.html, figures/*.svg|png, accuracy.csv, features.csv, exclusions.csv, glmm.csv, model.R + glmm-data.csv, results.json.',
  ].join('\n'),
  async run(argv) {
    const { values, positionals } = parseCommandArgs(
      argv,
      {
        out: { type: 'string' },
        db: { type: 'string' },
        mapping: { type: 'string' },
        study: { type: 'string' },
        studies: { type: 'string' },
        formula: { type: 'string' },
        compare: { type: 'string', multiple: true },
        by: { type: 'string' },
        mode: { type: 'string' },
        boot: { type: 'string' },
        permutations: { type: 'string' },
        seed: { type: 'string' },
        'power-coef': { type: 'string' },
        'power-effect': { type: 'string' },
        'power-n': { type: 'string' },
        'power-sims': { type: 'string' },
        'power-post-hoc': { type: 'boolean' },
        'no-power': { type: 'boolean' },
        'include-incomplete': { type: 'boolean' },
        'no-report': { type: 'boolean' },
        complexity: { type: 'string' },
        manifest: { type: 'string' },
      },
      { min: 1, max: 1 },
    );
    if (!values.out) throw new UsageError('--out DIR is required');
    const mode = values.mode;
    if (mode !== undefined && !['live', 'pilot', 'all'].includes(mode)) throw new UsageError(`--mode is live, pilot or all, got "${mode}"`);
    const effect = values['power-effect'] === undefined ? undefined : Number(values['power-effect']);
    if (effect !== undefined && !Number.isFinite(effect)) throw new UsageError(`--power-effect expects a number (log-odds), got "${values['power-effect']}"`);
    const powerGiven = values['power-coef'] !== undefined || effect !== undefined || values['power-n'] !== undefined || values['power-sims'] !== undefined || values['power-post-hoc'] === true;
    const complexity = values.complexity;
    if (complexity !== undefined && complexity !== 'order' && complexity !== 'share') throw new UsageError(`--complexity is order or share, got "${complexity}"`);
    const { analyze } = await import('./analyze.ts');
    const { formatCounts } = await import('./exclusions.ts');
    const result = await analyze({
      input: positionals[0],
      out: values.out,
      db: values.db,
      studiesDir: values.studies ?? defaultStudiesDir(),
      mapping: values.mapping,
      study: values.study,
      formula: values.formula,
      compare: values.compare,
      by: values.by?.split(',').map((s) => s.trim()).filter(Boolean),
      mode: mode as 'live' | 'pilot' | 'all' | undefined,
      boot: intOption(values.boot, 'boot', 2000),
      permutations: intOption(values.permutations, 'permutations', 10_000),
      seed: intOption(values.seed, 'seed', 1),
      power: values['no-power']
        ? false
        : powerGiven
          ? { coefficient: values['power-coef'], effect, ns: list(values['power-n'], 'power-n'), sims: values['power-sims'] ? intOption(values['power-sims'], 'power-sims', 100) : undefined, postHoc: values['power-post-hoc'] }
          : undefined,
      includeIncomplete: values['include-incomplete'],
      complexity,
      manifest: values.manifest,
      report: !values['no-report'],
      log: (line) => console.error(`legible analyze: ${line}`),
    });
    if (result.glmmError) console.error(`legible analyze: ${result.glmmError}`);
    // Every model warning (singular fit and its reduction, separation, convergence) on stderr.
    for (const w of result.glmm?.warnings ?? []) console.error(`legible analyze: warning: ${w}`);
    const g = result.glmm?.fit;
    console.log(
      [
        result.simulated ? 'SIMULATED DATA (legible pilot): no person took part.' : '',
        formatCounts(result.sessionCounts),
        `${result.counts.keptParticipants} participants, ${result.counts.mainTrials} main trials, ${result.counts.features} features`,
        ...result.cells.map((c) => `  ${(c.levels.join(' · ') || 'all').padEnd(28)} ${(c.accuracy * 100).toFixed(1)}% [${(c.ciParticipants[0] * 100).toFixed(1)}, ${(c.ciParticipants[1] * 100).toFixed(1)}]`),
        result.machine ? `machine observer (${result.machine.observer}): Spearman's rho with per-feature accuracy ${result.machine.rho.toFixed(2)} [${result.machine.ci.map((x) => x.toFixed(2)).join(', ')}], ${result.machine.features.length} features` : '',
        g ? `GLMM ${result.glmm!.formula}: logLik ${g.logLik.toFixed(2)}, ${g.xNames.map((n, j) => `${n} ${g.beta[j].toFixed(3)} (${g.separation.includes(n) ? `separation: LRT p ${result.glmm!.separationLrt.find((t) => t.dropped === n)?.p.toPrecision(2)}` : `p ${g.p[j].toPrecision(2)}`})`).join(', ')}` : '',
        `→ ${result.files.find((f) => f.endsWith('report.html')) ?? values.out}`,
      ]
        .filter(Boolean)
        .join('\n'),
    );
    return 0;
  },
};

export const commands: Command[] = [exportCommand, analyzeCommand];

