// The server bundle: `legible serve` (bin/serve.ts with the server, @legible/studies and their npm
// dependencies) compiled by esbuild into one plain-JavaScript file, server/dist/serve.mjs, so that a
// start or restart loads neither tsx nor a few hundred separate modules (server/BENCHMARKS.md,
// Start-up). `npm install` builds it (the root package's prepare step: `npm run build -w server`).
//
// bin/legible.mjs runs the bundle for `serve` only while it is up to date: server/dist/serve.json
// lists every source file that went into it with its size and modification time, and any file
// changed, added to an import or removed since sends `legible serve` back to the TypeScript
// sources through tsx (as every other command runs), so an edit is never served stale.
// LEGIBLE_FROM_SOURCE=1 does the same on purpose. Packages the server imports only on first use
// (@legible/analysis, @legible/stimuli-pipeline: see src/lazy.ts) and native modules stay outside.
//
//   node server/bundle.mjs [OUTDIR]      (default server/dist)
import { readFileSync, renameSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..');
export const defaultBundleDir = join(here, 'dist');
const STAMP_VERSION = 1;

/**
 * Builds `entry` (default bin/serve.ts) into OUTDIR/serve.mjs and writes OUTDIR/serve.json, the
 * stamps of its inputs. Returns the bundle's path and its number of input files.
 */
export async function buildServerBundle({ outdir = defaultBundleDir, entry = join(repoRoot, 'bin/serve.ts'), external = [] } = {}) {
  const esbuild = await import('esbuild');
  const outfile = join(outdir, 'serve.mjs');
  mkdirSync(outdir, { recursive: true });
  // import.meta.url in a source file means that file's own place (the client, admin and studies
  // folders are found relative to it), not the bundle's.
  const ownUrl = {
    name: 'own-import-meta-url',
    setup(build) {
      build.onLoad({ filter: /\.[cm]?ts$/ }, (args) => {
        if (args.path.includes(`${'/'}node_modules${'/'}`)) return undefined;
        const source = readFileSync(args.path, 'utf8');
        const fromBundle = relative(outdir, args.path).split('\\').join('/');
        const contents = source.replaceAll('import.meta.url', `new URL(${JSON.stringify(fromBundle)}, import.meta.url).href`);
        return { contents, loader: 'ts' };
      });
    },
  };
  const result = await esbuild.build({
    entryPoints: [entry],
    outfile: `${outfile}.tmp`,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // CommonJS dependencies (Express and its own) call require for Node's modules.
    banner: { js: "import { createRequire as __legibleRequire } from 'node:module'; const require = __legibleRequire(import.meta.url);" },
    define: { LEGIBLE_BUNDLE: 'true' },
    external: ['better-sqlite3', '@legible/analysis', '@legible/stimuli-pipeline', 'tsx', 'tsx/*', 'sharp', 'onnxruntime-node', ...external],
    plugins: [ownUrl],
    metafile: true,
    logLevel: 'warning',
    legalComments: 'none',
  });
  const inputs = {};
  for (const input of Object.keys(result.metafile.inputs)) {
    // esbuild names inputs relative to the working directory, or with a namespace prefix.
    const path = input.includes(':') && !isAbsolute(input) ? undefined : resolve(input);
    if (!path) continue;
    const st = statSync(path);
    inputs[relative(repoRoot, path)] = [st.size, st.mtimeMs];
  }
  writeFileSync(join(outdir, 'serve.json.tmp'), `${JSON.stringify({ version: STAMP_VERSION, node: process.versions.modules, inputs })}\n`);
  // The stamps go in last: a bundle is used only with the stamps of its own build.
  renameSync(`${outfile}.tmp`, outfile);
  renameSync(join(outdir, 'serve.json.tmp'), join(outdir, 'serve.json'));
  return { file: outfile, inputs: Object.keys(inputs).length };
}

/**
 * Why the bundle in `dir` cannot be used now (missing, built by another Node ABI, or a source file
 * changed since it was built), or undefined when it is up to date.
 */
export function bundleStale(dir = defaultBundleDir) {
  let stamps;
  try {
    stamps = JSON.parse(readFileSync(join(dir, 'serve.json'), 'utf8'));
    statSync(join(dir, 'serve.mjs'));
  } catch {
    return `no bundle in ${dir}`;
  }
  if (stamps.version !== STAMP_VERSION || stamps.node !== process.versions.modules) return 'built for another version';
  for (const [file, [size, mtimeMs]] of Object.entries(stamps.inputs)) {
    let st;
    try {
      st = statSync(join(repoRoot, file));
    } catch {
      return `${file} is gone`;
    }
    if (st.size !== size || st.mtimeMs !== mtimeMs) return `${file} changed`;
  }
  return undefined;
}

/** The bundle's URL when it is up to date (and LEGIBLE_FROM_SOURCE is not set), else undefined. */
export function freshBundle(dir = defaultBundleDir) {
  if (process.env.LEGIBLE_FROM_SOURCE && process.env.LEGIBLE_FROM_SOURCE !== '0') return undefined;
  return bundleStale(dir) === undefined ? pathToFileURL(join(dir, 'serve.mjs')).href : undefined;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const t0 = performance.now();
  const out = process.argv[2] ? resolve(process.argv[2]) : defaultBundleDir;
  const { file, inputs } = await buildServerBundle({ outdir: out });
  console.log(`server bundle: ${relative(process.cwd(), file) || file} from ${inputs} files (${Math.round(performance.now() - t0)} ms)`);
}
