// A progress bar with rate and ETA on stderr. On a terminal it redraws one line; elsewhere
// (CI, logs) it prints a line every 10% so logs stay short.

export interface Progress {
  tick(n?: number): void;
  done(note?: string): void;
}

export function progress(label: string, total: number, opts: { unit?: string; stream?: NodeJS.WriteStream; quiet?: boolean } = {}): Progress {
  const stream = opts.stream ?? process.stderr;
  const unit = opts.unit ?? 'items';
  const tty = Boolean(stream.isTTY);
  const start = performance.now();
  let count = 0;
  let lastDraw = 0;
  let lastDecile = -1;
  const line = () => {
    const seconds = (performance.now() - start) / 1000;
    const rate = count / Math.max(seconds, 1e-9);
    const frac = total > 0 ? Math.min(1, count / total) : 1;
    const eta = rate > 0 ? (total - count) / rate : Infinity;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    return `${label} ${bar} ${count}/${total} ${(frac * 100).toFixed(0)}% ${formatRate(rate)} ${unit}/s ETA ${formatSeconds(eta)}`;
  };
  const draw = (force = false) => {
    if (opts.quiet) return;
    const now = performance.now();
    if (tty) {
      if (force || now - lastDraw > 100) {
        stream.write(`\r${line()}\x1b[K`);
        lastDraw = now;
      }
    } else {
      const decile = total > 0 ? Math.floor((count / total) * 10) : 10;
      if (force || decile > lastDecile) {
        stream.write(`${line()}\n`);
        lastDecile = decile;
      }
    }
  };
  draw(true);
  return {
    tick(n = 1) {
      count += n;
      draw();
    },
    done(note) {
      if (opts.quiet) return;
      const seconds = (performance.now() - start) / 1000;
      const summary = `${label} ${count}/${total} ${unit} in ${formatSeconds(seconds)}${note ? ` — ${note}` : ''}`;
      stream.write(tty ? `\r${summary}\x1b[K\n` : `${summary}\n`);
    },
  };
}

function formatRate(r: number): string {
  return r >= 100 ? r.toFixed(0) : r >= 10 ? r.toFixed(1) : r.toFixed(2);
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}
