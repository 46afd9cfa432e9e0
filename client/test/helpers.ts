// Shared test helpers: build a page with vite, serve a folder with a strict CSP, launch Chromium.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { build } from 'vite';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { startServer, type RunningServer } from '@legible/server';
import { makeFixture, type Fixture, type FixtureOptions } from '../../server/test/fixture.ts';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** The CSP the server is expected to send: no inline scripts or styles, no eval. */
export const STRICT_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update'],
  });
}

/** The real participant client (client/vite.config.ts), built into `outDir`. */
export async function buildClient(outDir: string): Promise<void> {
  await build({ configFile: fileURLToPath(new URL('../vite.config.ts', import.meta.url)), logLevel: 'warn', build: { outDir, emptyOutDir: true } });
}

/** Builds the page whose index.html is in `root` into `outDir` (content-hashed, like the app). */
export async function buildPage(root: string, outDir: string): Promise<void> {
  await build({
    root,
    configFile: false,
    logLevel: 'warn',
    base: '/',
    build: { outDir, emptyOutDir: true, modulePreload: { polyfill: false }, reportCompressedSize: false, minify: false },
  });
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.webp': 'image/webp',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
};

export type Route = (req: IncomingMessage, res: ServerResponse, url: URL) => boolean | Promise<boolean>;

/** A tiny static server on 127.0.0.1 (ephemeral port) with the strict CSP on every response. */
export async function serve(dir: string, routes: Route[] = []): Promise<{ url: string; close: () => Promise<void> }> {
  const base = resolve(dir);
  const server: Server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://127.0.0.1');
      res.setHeader('Content-Security-Policy', STRICT_CSP);
      for (const route of routes) if (await route(req, res, url)) return;
      const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname).slice(1);
      const path = normalize(join(base, rel));
      if (!path.startsWith(base)) {
        res.writeHead(403).end();
        return;
      }
      const body = await readFile(path).catch(() => null);
      if (!body) {
        res.writeHead(404).end('not found');
        return;
      }
      res.writeHead(200, { 'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream', 'Cache-Control': 'no-cache' });
      res.end(body);
    } catch (err) {
      res.writeHead(500).end(String(err));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** The keys in the page's outbox (IndexedDB "legible"/"outbox"); call only after the page opened it. */
export async function idbOutboxKeys(page: Page): Promise<string[]> {
  return page.evaluate(
    () =>
      new Promise<string[]>((resolve, reject) => {
        const req = indexedDB.open('legible', 1);
        req.onsuccess = () => {
          const db = req.result;
          const keys = db.transaction('outbox', 'readonly').objectStore('outbox').getAllKeys();
          keys.onsuccess = () => {
            resolve(keys.result.map(String));
            db.close();
          };
          keys.onerror = () => reject(keys.error);
        };
        req.onerror = () => reject(req.error);
      }),
  );
}

/** A page init script (addInitScript({content})) that takes IndexedDB away, as some private modes do. */
export const WITHOUT_INDEXEDDB = "Object.defineProperty(window, 'indexedDB', { configurable: true, get: () => undefined });";

/** What the browser tests run against: the built client, a fixture study, the real server, Chromium. */
export interface Rig {
  fx: Fixture;
  srv: RunningServer;
  browser: Browser;
  close(): Promise<void>;
}

/** Builds the client, writes the fixture study (it brings its own manifest) and serves both. */
export async function startRig(fixture: FixtureOptions): Promise<Rig> {
  const distDir = mkdtempSync(join(tmpdir(), 'legible-client-dist-'));
  await buildClient(distDir);
  const fx = makeFixture(fixture);
  const srv = await startServer({
    port: 0,
    db: join(fx.root, 'legible.db'),
    studiesDir: fx.studiesDir,
    studies: [fx.studyFile],
    clientDir: distDir,
    signals: false,
    build: async () => {
      throw new Error('the fixture brings its own manifest');
    },
  });
  const browser = await launchChromium();
  return {
    fx,
    srv,
    browser,
    async close() {
      await browser.close();
      await srv.close();
      fx.cleanup();
      rmSync(distDir, { recursive: true, force: true });
    },
  };
}
