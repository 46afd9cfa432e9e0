// Builds the participant page into client/dist: index.html plus content-hashed assets under
// /assets/ (the server serves dist at / and /assets/*). No CDN, no inline script or style.
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { defineConfig, type Plugin } from 'vite';

const api = process.env.LEGIBLE_API ?? 'http://127.0.0.1:3000';

/** Bundle budget: gzipped JS + CSS of the page. The build fails beyond it. */
export const BUDGET_GZIP_BYTES = 60 * 1024;

function bundleBudget(limit: number): Plugin {
  return {
    name: 'legible-bundle-budget',
    apply: 'build',
    generateBundle(_options, bundle) {
      let total = 0;
      const parts: string[] = [];
      for (const file of Object.values(bundle)) {
        if (!/\.(js|css)$/.test(file.fileName)) continue;
        const source = file.type === 'chunk' ? file.code : file.source;
        const size = gzipSync(typeof source === 'string' ? Buffer.from(source) : source, { level: 9 }).length;
        total += size;
        parts.push(`${file.fileName} ${(size / 1024).toFixed(1)} kB`);
      }
      const summary = `bundle budget: ${(total / 1024).toFixed(1)} kB gzip of ${(limit / 1024).toFixed(0)} kB (${parts.join(', ')})`;
      if (total > limit) this.error(`${summary}: over budget. Trim the bundle or raise BUDGET_GZIP_BYTES in client/vite.config.ts with a reason.`);
      this.info(summary);
    },
  };
}

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  // Nothing to copy verbatim: every file the page needs is imported and hashed.
  publicDir: false,
  plugins: [bundleBudget(BUDGET_GZIP_BYTES)],
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
