// The default request rates, apart from app.ts so that `legible serve --help` can show them without
// loading the server (bin/cli.ts loads every command's module for --help).
import type { RateLimits } from './app.ts';

export const DEFAULT_RATE_LIMITS: RateLimits = { ipPerMinute: 3000, createPerMinute: 300, sessionPerMinute: 600, adminFailuresPer15Min: 20 };
