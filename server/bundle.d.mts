// Types of bundle.mjs (plain JavaScript, so that bin/legible.mjs can load it without tsx).
export declare const repoRoot: string;
export declare const defaultBundleDir: string;
export declare function buildServerBundle(opts?: { outdir?: string; entry?: string; external?: string[] }): Promise<{ file: string; inputs: number }>;
export declare function bundleStale(dir?: string): string | undefined;
export declare function freshBundle(dir?: string): string | undefined;
