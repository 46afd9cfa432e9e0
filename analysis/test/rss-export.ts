// Child process for the export memory test: export one study and print the peak RSS.
import { exportStudy } from '../src/export.ts';

const [db, out] = process.argv.slice(2);
const t0 = performance.now();
const r = await exportStudy(out, { db, study: 'bench', exclusions: { repeat_participation: true, practice_pass_required: false, catch_accuracy_min: 0.5 } });
console.log(JSON.stringify({ rows: r.rows, participants: r.participants, seconds: (performance.now() - t0) / 1000, maxRssMB: process.resourceUsage().maxRSS / 1024 }));
