// Real server processes for the benchmarks and the fault tests: `legible serve` (the serve command
// itself, through tsx) and a bare Express endpoint to compare against, each in its own process,
// on 127.0.0.1 with a free port.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const commands = fileURLToPath(new URL('../src/commands.ts', import.meta.url));
const bare = fileURLToPath(new URL('./bare.ts', import.meta.url));

export interface Spawned {
  child: ChildProcess;
  url: string;
  output(): string;
  /** SIGKILL, and wait for the exit. */
  kill9(): Promise<void>;
  /** SIGTERM (graceful), and wait for the exit; returns the exit code. */
  stop(): Promise<number | null>;
}

function start(args: string[], env: Record<string, string>, pattern: RegExp, timeoutMs = 60_000): Promise<Spawned> {
  const child = spawn(process.execPath, args, { cwd: repo, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = once(child, 'exit');
  const spawned = (url: string): Spawned => ({
    child,
    url,
    output: () => out,
    kill9: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGKILL');
      await exited;
    },
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill('SIGTERM');
      const [code] = (await exited) as [number | null];
      return code;
    },
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server did not start in ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    let listening = false;
    // Keep the last 256 kB of output (request logs can be long).
    const keep = (c: Buffer) => {
      out += c.toString();
      if (out.length > 512 * 1024) out = out.slice(-256 * 1024);
    };
    child.stdout!.on('data', (c: Buffer) => {
      keep(c);
      if (listening) return;
      const m = pattern.exec(out);
      if (m) {
        listening = true;
        clearTimeout(timer);
        resolve(spawned(m[1].replace('//localhost:', '//127.0.0.1:')));
      }
    });
    child.stderr!.on('data', keep);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server exited (${code ?? signal}) before listening:\n${out}`));
    });
  });
}

export interface ServeOptions {
  db: string;
  studiesDir: string;
  study: string;
  port?: number;
  /** Extra `legible serve` options, e.g. ['--limit-session', '0']. */
  args?: string[];
  env?: Record<string, string>;
  /** Flags for node itself, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** The built client folder (default: a missing one, so / answers 503). */
  client?: string;
  /** Another server's commands.ts (to compare with an earlier version of this one). */
  commandsModule?: string;
}

/** `legible serve` as a child process; resolves once it prints its URL. */
export function spawnServe(opts: ServeOptions): Promise<Spawned> {
  const script = `import { serve } from ${JSON.stringify(opts.commandsModule ?? commands)}; process.exitCode = await serve.run(process.argv.slice(1));`;
  return start(
    [
      ...(opts.nodeArgs ?? []),
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      script,
      '--',
      '--port',
      String(opts.port ?? 0),
      '--db',
      opts.db,
      '--studies',
      opts.studiesDir,
      '--study',
      opts.study,
      '--client',
      opts.client ?? `${opts.studiesDir}/../no-client`,
      ...(opts.args ?? []),
    ],
    { LOG_LEVEL: 'warn', ...opts.env },
    /serving on (http:\/\/\S+)[^\n]*\n.*\?study=/,
  );
}

/** A bare Express server answering the same routes with no work: the baseline. */
export function spawnBare(): Promise<Spawned> {
  return start(['--import', 'tsx', bare], {}, /bare listening on (http:\/\/\S+)/);
}
