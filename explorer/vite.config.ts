// Builds the explorer's page into explorer/dist: index.html plus content-hashed assets, with
// relative URLs (base './'), so the page works from any folder of any file server. `legible
// explore` copies it into studies/<id>/build/explorer/ next to the data. onnxruntime-web is not
// bundled: the "try an image" panel imports it from ort/ when opened.
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

/** Shell budget: gzipped JS + CSS of the page before the model and runtime load. The build fails beyond it. */
export const SHELL_BUDGET_GZIP_BYTES = 150 * 1024;

function shellBudget(limit: number): Plugin {
  return {
    name: 'legible-explorer-budget',
    apply: 'build',
    generateBundle(_options, bundle) {
      let total = 0;
      const parts: string[] = [];
      for (const file of Object.values(bundle)) {
        if (!/\.(js|css|html)$/.test(file.fileName)) continue;
        const source = file.type === 'chunk' ? file.code : file.source;
        const size = gzipSync(typeof source === 'string' ? Buffer.from(source) : source, { level: 9 }).length;
        total += size;
        parts.push(`${file.fileName} ${(size / 1024).toFixed(1)} kB`);
      }
      const summary = `explorer shell: ${(total / 1024).toFixed(1)} kB gzip of ${(limit / 1024).toFixed(0)} kB (${parts.join(', ')})`;
      if (total > limit) this.error(`${summary}: over budget. Trim the page or raise SHELL_BUDGET_GZIP_BYTES in explorer/vite.config.ts with a reason.`);
      this.info(summary);
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  publicDir: false,
  plugins: [shellBudget(SHELL_BUDGET_GZIP_BYTES)],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
  },
});
