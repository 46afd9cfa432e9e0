import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseCommandArgs, type Command } from './cli.ts';
import { formatProblems, loadStudy, parseStudy, resolveStudyFile, StudyFileError, type LoadedStudy, type StudyProblem } from './load.ts';

/**
 * A check beyond the study file itself, run on a study that parsed and whose files exist (e.g. the
 * model's tensors, which stimuli-pipeline reads). `text` is the study file's text, for locating
 * problems (problemAt).
 */
export type StudyCheck = (loaded: LoadedStudy, text: string) => Promise<StudyProblem[]>;

/** `legible validate`, running `checks` after the file's own. */
export function validateCommand(checks: readonly StudyCheck[] = []): Command {
  return {
    name: 'validate',
    summary: 'Check study files: every problem with its place in the file and what is allowed',
    usage: '<study.yaml | folder | id> [...]',
    async run(argv) {
      const { positionals } = parseCommandArgs(argv, {}, { min: 1, max: Infinity });
      let failed = 0;
      for (const ref of positionals) {
        const file = resolveStudyFile(ref);
        const shown = relative(process.cwd(), file) || file;
        const parsed = parseStudy(readFileSync(file, 'utf8'));
        let problems = parsed.problems;
        if (parsed.study) {
          try {
            const loaded = loadStudy(file);
            const text = readFileSync(file, 'utf8');
            for (const check of checks) problems = [...problems, ...(await check(loaded, text))];
            problems.sort((a, b) => a.line - b.line || a.column - b.column);
          } catch (e) {
            if (!(e instanceof StudyFileError)) throw e;
            problems = e.problems;
          }
        }
        if (problems.length) {
          failed++;
          console.error(`✗ ${shown}: ${problems.length} problem${problems.length === 1 ? '' : 's'}\n${formatProblems(shown, problems)}`);
        } else {
          console.log(`✓ ${shown}: valid study "${parsed.study!.id}"`);
        }
      }
      return failed ? 1 : 0;
    },
  };
}

/** Checks the study file and that its files exist (stimuli-pipeline's validate also checks the model). */
export const validate: Command = validateCommand();

export const commands: Command[] = [validate];
