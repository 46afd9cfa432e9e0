// Shared by the explorer's browser tests: a study's stimuli and explorer site built (the site's page
// by vite first), then served by a real server behind a fresh admin token.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';
import { loadStudy } from '@legible/studies';
import { ensureBuilt } from '@legible/stimuli-pipeline';
import { startServer } from '@legible/server';
import { buildExplorer, type TryData } from '../src/index.ts';

/** |a − b| relative to the larger of |b| and the feature's standard deviation over the references. */
export const relToFeature = (a: number, b: number, std: number) => Math.abs(a - b) / Math.max(Math.abs(b), std, 1e-6);

/** Builds the study (study.yaml at `file`) and its explorer; serves it from a database in `tmp`. */
export async function servedExplorer(file: string, tmp: string, tokenName: string) {
  const loaded = loadStudy(file);
  const manifest = await ensureBuilt(loaded, { quiet: true, log: () => {} });
  await build({ configFile: fileURLToPath(new URL('../vite.config.ts', import.meta.url)), logLevel: 'warn' });
  const { dir } = await buildExplorer(loaded, { quiet: true, log: () => {} });
  const spec = JSON.parse(readFileSync(join(dir, 'data/try.json'), 'utf8')) as TryData;
  const srv = await startServer({ port: 0, host: '127.0.0.1', db: join(tmp, 'legible.db'), studies: [file], clientDir: join(tmp, 'no-client'), signals: false });
  const token = srv.db.createAdminToken(tokenName).token;
  return { manifest, dir, spec, srv, token };
}
