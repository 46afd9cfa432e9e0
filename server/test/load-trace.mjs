// Test helper: `node --import ./load-trace.mjs …` appends the URL of every ES module the process
// loads (through the module hooks, after tsx's when tsx is registered later) to the file named by
// LEGIBLE_LOAD_TRACE, one per line, as it is loaded.
import { register } from 'node:module';

register(new URL('./load-trace-hooks.mjs', import.meta.url), { data: { file: process.env.LEGIBLE_LOAD_TRACE } });
