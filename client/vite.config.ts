// Builds the participant page into client/dist: index.html plus content-hashed assets under
// /assets/ (the server serves dist at / and /assets/*). No CDN, no inline script or style.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';
import { gzipBudget } from '../scripts/gzip-budget.ts';

const api = process.env.LEGIBLE_API ?? 'http://127.0.0.1:3000';

/** Bundle budget: gzipped JS + CSS of the page. The build fails beyond it. */
export const BUDGET_GZIP_BYTES = 60 * 1024;

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  // Nothing to copy verbatim: every file the page needs is imported and hashed.
  publicDir: false,
  plugins: [
    gzipBudget({
      name: 'legible-bundle-budget',
      label: 'bundle budget',
      limit: BUDGET_GZIP_BYTES,
      files: /\.(js|css)$/,
      fix: 'Trim the bundle or raise BUDGET_GZIP_BYTES in client/vite.config.ts with a reason.',
    }),
  ],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    target: 'es2022',
    // One entry chunk: no module-preload helper needed.
    modulePreload: { polyfill: false },
    // Never inline assets as data: URLs.
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  // `npm run dev -w client`: the page from vite, the API and stimuli from `legible serve`
  // (LEGIBLE_API, default http://127.0.0.1:3000).
  server: { host: '127.0.0.1', proxy: { '/api': api, '/stimuli': api } },
  preview: { host: '127.0.0.1', proxy: { '/api': api, '/stimuli': api } },
});
