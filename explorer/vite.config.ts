// Builds the explorer's page into explorer/dist: index.html plus content-hashed assets, with
// relative URLs (base './'), so the page works from any folder of any file server. `legible
// explore` copies it into studies/<id>/build/explorer/ next to the data. onnxruntime-web is not
// bundled: the "try an image" panel imports it from ort/ when opened.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { gzipBudget } from '../scripts/gzip-budget.ts';

/** Shell budget: gzipped JS + CSS of the page before the model and runtime load. The build fails beyond it. */
export const SHELL_BUDGET_GZIP_BYTES = 150 * 1024;


export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: './',
  publicDir: false,
  plugins: [
    gzipBudget({
      name: 'legible-explorer-budget',
      label: 'explorer shell',
      limit: SHELL_BUDGET_GZIP_BYTES,
      files: /\.(js|css|html)$/,
      fix: 'Trim the page or raise SHELL_BUDGET_GZIP_BYTES in explorer/vite.config.ts with a reason.',
    }),
  ],
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
