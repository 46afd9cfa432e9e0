import { readFileSync } from 'node:fs';
import { relative } from 'node:path';
import { parseCommandArgs, type Command } from './cli.ts';
import { formatProblems, loadStudy, parseStudy, resolveStudyFile, StudyFileError } from './load.ts';

export const validate: Command = {
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
          loadStudy(file);
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

export const commands: Command[] = [validate];
