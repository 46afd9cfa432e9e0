// Benchmark: the GLMM on 100,000 trials (500 participants × 200 features, every participant
// answering every feature once), legible and lme4's glmer side by side in one run on the same
// CSV, with the agreement of their estimates.
//   node --import tsx analysis/bench/glmm.ts [--participants 500] [--features 200] [--seed 1] [--repeat 1] [--blas-threads N]
// --blas-threads sets OPENBLAS_NUM_THREADS for R (default: R's own default, all cores).
// lme4's time is that of the glmer() call alone (system.time inside R, after reading the CSV);
// legible's is fitModel (formula, model matrix, fit, standard errors) after reading the same CSV.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { fitModel } from '../src/stats/models.ts';
import { simulateStudy, toCsv } from '../src/stats/simulate.ts';
import { readTable } from '../src/table.ts';

const { values } = parseArgs({
  options: {
    participants: { type: 'string', default: '500' },
    features: { type: 'string', default: '200' },
    seed: { type: 'string', default: '1' },
    repeat: { type: 'string', default: '1' },
    'blas-threads': { type: 'string' },
  },
});
const P = Number(values.participants);
const F = Number(values.features);
const dir = mkdtempSync(join(tmpdir(), 'legible-bench-glmm-'));
const csv = join(dir, 'trials.csv');
const formula = 'correct ~ basis * layer + (1|participant) + (1|feature)';
const truth = { '(Intercept)': 0.3, basisnmf: 0.5, layerblock3: -0.4, 'basisnmf:layerblock3': 0.3 };
const rows = simulateStudy({
  participants: P,
  factors: { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] },
  featuresPerCell: F / 4,
  intercept: truth['(Intercept)'],
  effects: { 'basis=nmf': truth.basisnmf, 'layer=block3': truth.layerblock3, 'basis=nmf:layer=block3': truth['basisnmf:layerblock3'] },
  sdParticipant: 0.5,
  sdFeature: 0.8,
  trialsPerParticipant: F,
  seed: Number(values.seed),
});
writeFileSync(csv, toCsv(rows.map(({ participant, feature, basis, layer, correct }) => ({ participant, feature, basis, layer, correct }))));
console.log(`machine: ${cpus().length} × ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${rows.length} trials`);

const R_CODE = `
suppressPackageStartupMessages(library(lme4))
d <- read.csv(${JSON.stringify(csv)}, stringsAsFactors = FALSE)
d$basis <- factor(d$basis, levels = c("channels", "nmf")); d$layer <- factor(d$layer, levels = c("block2", "block3"))
d$participant <- factor(d$participant); d$feature <- factor(d$feature)
t <- system.time(m <- glmer(${formula}, data = d, family = binomial))
cat("seconds", t[["elapsed"]], t[["user.self"]], t[["sys.self"]], "\\n")
cat("beta", format(fixef(m), digits = 17), "\\n")
cat("se", format(sqrt(diag(as.matrix(vcov(m)))), digits = 17), "\\n")
cat("sd", format(as.data.frame(VarCorr(m))$sdcor, digits = 17), "\\n")
cat("loglik", format(as.numeric(logLik(m)), digits = 17), "\\n")
cat("feval", m@optinfo$feval, "\\n")
`;

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
for (let rep = 0; rep < Number(values.repeat); rep++) {
  const t0 = performance.now();
  const table = readTable(csv);
  const readSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const { fit } = fitModel(formula, table);
  const ours = (performance.now() - t1) / 1000;

  const t2 = performance.now();
  const env = values['blas-threads'] ? { ...process.env, OPENBLAS_NUM_THREADS: values['blas-threads'], OMP_NUM_THREADS: values['blas-threads'] } : process.env;
  const r = spawnSync('Rscript', ['-e', R_CODE], { encoding: 'utf8', maxBuffer: 1 << 24, env });
  const rWall = (performance.now() - t2) / 1000;
  if (r.status !== 0) throw new Error(r.stderr);
  const got = new Map(r.stdout.trim().split('\n').map((l) => [l.trim().split(/\s+/)[0], l.trim().split(/\s+/).slice(1).map(Number)]));
  const [lmeElapsed, lmeUser, lmeSys] = got.get('seconds')!;
  const lme = { beta: got.get('beta')!, se: got.get('se')!, sd: got.get('sd')!, logLik: got.get('loglik')![0], feval: got.get('feval')![0] };

  console.log(`\nrun ${rep + 1}: legible ${ours.toFixed(2)} s (+ ${readSeconds.toFixed(2)} s reading the CSV; ${fit.iterations} iterations, ${fit.evaluations} deviance evaluations incl. the Hessian)`);
  console.log(`        lme4 glmer (BLAS threads: ${values['blas-threads'] ?? 'default'}) ${lmeElapsed.toFixed(2)} s elapsed (user ${lmeUser.toFixed(2)}, sys ${lmeSys.toFixed(2)}; ${lme.feval} function evaluations), Rscript process ${rWall.toFixed(1)} s`);
  console.log(`        ratio legible / lme4 = ${(ours / lmeElapsed).toFixed(3)}`);
  console.log('| term | true | legible | SE | lme4 | SE | rel. diff estimate | rel. diff SE |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  fit.xNames.forEach((name, j) =>
    console.log(
      `| ${name} | ${truth[name as keyof typeof truth]} | ${fit.beta[j].toFixed(5)} | ${fit.se[j].toFixed(5)} | ${lme.beta[j].toFixed(5)} | ${lme.se[j].toFixed(5)} | ${rel(fit.beta[j], lme.beta[j]).toExponential(1)} | ${rel(fit.se[j], lme.se[j]).toExponential(1)} |`,
    ),
  );
  fit.groups.forEach((g, k) => console.log(`| sd(${g.name}) | ${k === 0 ? 0.5 : 0.8} | ${g.sd.toFixed(5)} | | ${lme.sd[k].toFixed(5)} | | ${rel(g.sd, lme.sd[k]).toExponential(1)} | |`));
  console.log(`| logLik | | ${fit.logLik.toFixed(4)} | | ${lme.logLik.toFixed(4)} | | ${rel(fit.logLik, lme.logLik).toExponential(1)} | |`);
}
rmSync(dir, { recursive: true, force: true });
