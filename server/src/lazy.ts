// Imports of workspace packages that are TypeScript source (@legible/analysis for exports and the
// dashboard, @legible/stimuli-pipeline for a study's check) are made on first use, not at start-up.
// Run from source (through tsx) that is a plain import. In the server bundle (server/bundle.mjs,
// which `legible serve` runs while it is up to date) nothing TypeScript is loaded at start-up, so
// tsx is registered first, once, on the first such import.
declare const LEGIBLE_BUNDLE: boolean | undefined;

let tsx: Promise<void> | undefined;

/** `load()` (a dynamic import of TypeScript source), with tsx registered first inside the bundle. */
export function importSource<T>(load: () => Promise<T>): Promise<T> {
  if (typeof LEGIBLE_BUNDLE !== 'undefined' && LEGIBLE_BUNDLE) {
    tsx ??= import('tsx/esm/api').then((api) => void api.register());
  }
  return tsx ? tsx.then(load) : load();
}
