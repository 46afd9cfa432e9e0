// Usage mistakes on the command line end with a one-line message, the command's usage and exit
// status 2, never a stack trace: node's argument parser throws several kinds of error (an unknown
// option, an option value that starts with a dash, a stray positional), and each is a usage error.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const legible = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/legible.mjs'), ...args], { cwd: root, encoding: 'utf8', timeout: 120_000 });

describe('usage errors', () => {
  for (const [what, args, said] of [
    ['an unknown option', ['backup', '--bogus'], /--bogus/],
    ['an option value that starts with a dash', ['backup', '--out', '-x'], /--out/],
    ['an option value that starts with a dash (predict --alpha -1)', ['predict', 'demo', '--alpha', '-1'], /--alpha/],
  ] as const) {
    it(`${what}: a message, the usage, exit status 2`, () => {
      const r = legible(...args);
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^legible ${args[0]}: `));
      assert.match(r.stderr, said);
      assert.match(r.stderr, new RegExp(`Usage: legible ${args[0]} `));
      assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
    });
  }
});
