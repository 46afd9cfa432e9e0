// A vite build plugin shared by the participant page (client/) and the explorer (explorer/): the
// gzipped size of the emitted files that match `files`, summed; the build fails beyond `limit`,
// with a message naming the constant to raise.
import { gzipSync } from 'node:zlib';
import type { Plugin } from 'vite';

export function gzipBudget(opts: { name: string; label: string; limit: number; files: RegExp; fix: string }): Plugin {
  return {
    name: opts.name,
    apply: 'build',
    generateBundle(_options, bundle) {
      let total = 0;
      const parts: string[] = [];
      for (const file of Object.values(bundle)) {
        if (!opts.files.test(file.fileName)) continue;
        const source = file.type === 'chunk' ? file.code : file.source;
        const size = gzipSync(typeof source === 'string' ? Buffer.from(source) : source, { level: 9 }).length;
        total += size;
        parts.push(`${file.fileName} ${(size / 1024).toFixed(1)} kB`);
      }
      const summary = `${opts.label}: ${(total / 1024).toFixed(1)} kB gzip of ${(opts.limit / 1024).toFixed(0)} kB (${parts.join(', ')})`;
      if (total > opts.limit) this.error(`${summary}: over budget. ${opts.fix}`);
      this.info(summary);
    },
  };
}
