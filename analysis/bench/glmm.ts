// Benchmark: the GLMM on 100,000 trials (500 participants × 200 features, every participant
// answering every feature once), legible and lme4's glmer side by side in one run on the same
// CSV, with the agreement of their estimates.
//   node --import tsx analysis/bench/glmm.ts [--model slopes|intercepts] [--participants 500] [--features 200] [--seed 1] [--repeat 1] [--blas-threads N]
// --model slopes (default): correct ~ basis + (1 + basis | participant) + (1 | feature), a
//   correlated random slope for the 2-level within-subject factor basis (true slope SD 0.5,
//   correlation 0.3 with the intercept); lme4 is set up as a careful user would: nAGQ = 1
//   (Laplace), optimizer = "bobyqa", tolPwrss = 1e-10, and timed twice in the same R process:
//   calc.derivs = FALSE (its fastest: no Hessian, RX standard errors) and calc.derivs = TRUE (the
//   Hessian standard errors legible also computes). The ratio is taken against the faster.
// --model intercepts: correct ~ basis * layer + (1|participant) + (1|feature) with lme4's defaults.
// --blas-threads sets OPENBLAS_NUM_THREADS for R (default: R's own default, all cores).
// lme4's time is that of the glmer() call alone (system.time inside R, after reading the CSV);
// legible's is fitModel (formula, model matrix, fit, standard errors) after reading the same CSV.
// Both sides' CPU time (user + sys) is printed too: on a shared machine it is less sensitive to
// the other jobs than the elapsed time.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
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
    model: { type: 'string', default: 'slopes' },
  },
});
const slopes = values.model === 'slopes';
const P = Number(values.participants);
const F = Number(values.features);
const dir = mkdtempSync(join(tmpdir(), 'legible-bench-glmm-'));
const csv = join(dir, 'trials.csv');
const formula = slopes ? 'correct ~ basis + (1 + basis | participant) + (1 | feature)' : 'correct ~ basis * layer + (1|participant) + (1|feature)';
const truth: Record<string, number> = slopes ? { '(Intercept)': 0.3, basisnmf: 0.5 } : { '(Intercept)': 0.3, basisnmf: 0.5, layerblock3: -0.4, 'basisnmf:layerblock3': 0.3 };
const trueSd: Record<string, number> = slopes
  ? { 'participant|(Intercept)': 0.5, 'participant|basisnmf': 0.5, 'participant|cor': 0.3, 'feature|(Intercept)': 0.8 }
  : { 'participant|(Intercept)': 0.5, 'feature|(Intercept)': 0.8 };
const rows = simulateStudy({
  participants: P,
  factors: { basis: ['channels', 'nmf'], layer: ['block2', 'block3'] },
  featuresPerCell: F / 4,
  intercept: truth['(Intercept)'],
  effects: slopes ? { 'basis=nmf': truth.basisnmf } : { 'basis=nmf': truth.basisnmf, 'layer=block3': truth.layerblock3, 'basis=nmf:layer=block3': truth['basisnmf:layerblock3'] },
  participantSlopes: slopes ? [{ effect: 'basis=nmf', sd: 0.5, cor: 0.3 }] : undefined,
  sdParticipant: 0.5,
  sdFeature: 0.8,
  trialsPerParticipant: F,
  seed: Number(values.seed),
});
writeFileSync(csv, toCsv(rows.map(({ participant, feature, basis, layer, correct }) => ({ participant, feature, basis, layer, correct }))));
console.log(`machine: ${cpus().length} × ${cpus()[0].model}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}; ${rows.length} trials; load average at the start ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);

const fitCalls = slopes
  ? [
      ['lme4 glmer, bobyqa, tolPwrss 1e-10, calc.derivs = FALSE', 'glmerControl(optimizer = "bobyqa", tolPwrss = 1e-10, calc.derivs = FALSE)'],
      ['lme4 glmer, bobyqa, tolPwrss 1e-10, calc.derivs = TRUE', 'glmerControl(optimizer = "bobyqa", tolPwrss = 1e-10, calc.derivs = TRUE)'],
    ]
  : [['lme4 glmer (defaults)', 'glmerControl()']];
const R_CODE = `
suppressPackageStartupMessages(library(lme4))
d <- read.csv(${JSON.stringify(csv)}, stringsAsFactors = FALSE)
d$basis <- factor(d$basis, levels = c("channels", "nmf")); d$layer <- factor(d$layer, levels = c("block2", "block3"))
d$participant <- factor(d$participant); d$feature <- factor(d$feature)
${fitCalls
  .map(
    ([, ctrl], k) => `t <- system.time(m <- glmer(${formula}, data = d, family = binomial, nAGQ = 1, control = ${ctrl}))
vc <- as.data.frame(VarCorr(m))
cat("seconds${k}", t[["elapsed"]], t[["user.self"]], t[["sys.self"]], "\\n")
cat("beta${k}", format(fixef(m), digits = 17), "\\n")
cat("se${k}", format(sqrt(diag(as.matrix(vcov(m)))), digits = 17), "\\n")
cat("sd${k}", format(vc$sdcor, digits = 17), "\\n")
cat("sdname${k}", paste(vc$grp, ifelse(is.na(vc$var2), vc$var1, "cor"), sep = "|"), "\\n")
cat("loglik${k}", format(as.numeric(logLik(m)), digits = 17), "\\n")
cat("feval${k}", m@optinfo$feval, "\\n")
cat("conv${k}", length(m@optinfo$conv$lme4$messages), "\\n")`,
  )
  .join('\n')}
`;

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);
for (let rep = 0; rep < Number(values.repeat); rep++) {
  const t0 = performance.now();
  const table = readTable(csv);
  const readSeconds = (performance.now() - t0) / 1000;
  const t1 = performance.now();
  const c1 = process.cpuUsage();
  const { fit } = fitModel(formula, table);
  const ours = (performance.now() - t1) / 1000;
  const cpu = process.cpuUsage(c1);

  const t2 = performance.now();
  const env = values['blas-threads'] ? { ...process.env, OPENBLAS_NUM_THREADS: values['blas-threads'], OMP_NUM_THREADS: values['blas-threads'] } : process.env;
  const r = spawnSync('Rscript', ['-e', R_CODE], { encoding: 'utf8', maxBuffer: 1 << 24, env });
  const rWall = (performance.now() - t2) / 1000;
  if (r.status !== 0) throw new Error(r.stderr);
  const got = new Map(r.stdout.trim().split('\n').map((l) => [l.trim().split(/\s+/)[0], l.trim().split(/\s+/).slice(1)]));
  const numbers = (key: string) => got.get(key)!.map(Number);
  const lmes = fitCalls.map(([label], k) => {
    const [elapsed, user, sys] = numbers(`seconds${k}`);
    return { label, elapsed, user, sys, beta: numbers(`beta${k}`), se: numbers(`se${k}`), sd: numbers(`sd${k}`), sdName: got.get(`sdname${k}`)!, logLik: numbers(`loglik${k}`)[0], feval: numbers(`feval${k}`)[0], warnings: numbers(`conv${k}`)[0] };
  });
  const fastest = lmes.reduce((a, b) => (b.elapsed < a.elapsed ? b : a));
  const withDerivs = lmes[lmes.length - 1];

  console.log(`\nrun ${rep + 1}: ${formula}`);
  console.log(`  legible ${ours.toFixed(2)} s elapsed (user ${(cpu.user / 1e6).toFixed(2)}, sys ${(cpu.system / 1e6).toFixed(2)}; + ${readSeconds.toFixed(2)} s reading the CSV; ${fit.iterations} iterations, ${fit.evaluations} deviance evaluations incl. the Hessian)`);
  for (const l of lmes) console.log(`  ${l.label} (BLAS threads: ${values['blas-threads'] ?? 'default'}): ${l.elapsed.toFixed(2)} s elapsed (user ${l.user.toFixed(2)}, sys ${l.sys.toFixed(2)}; ${l.feval} function evaluations; ${l.warnings} convergence messages)`);
  console.log(`  Rscript process ${rWall.toFixed(1)} s; load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.log(`  ratio legible / lme4 = ${(ours / fastest.elapsed).toFixed(3)} (against the faster lme4 call: ${fastest.label})`);
  console.log(`  ratio of CPU time (user + sys) legible / lme4 = ${((cpu.user + cpu.system) / 1e6 / (lmes[0].user + lmes[0].sys)).toFixed(3)} (against ${lmes[0].label}; less sensitive to other jobs on the machine)`);
  console.log(`\nAgreement with ${withDerivs.label}:`);
  console.log('| term | true | legible | SE | lme4 | SE | rel. diff estimate | rel. diff SE |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  fit.xNames.forEach((name, j) =>
    console.log(
      `| ${name} | ${truth[name]} | ${fit.beta[j].toFixed(5)} | ${fit.se[j].toFixed(5)} | ${withDerivs.beta[j].toFixed(5)} | ${withDerivs.se[j].toFixed(5)} | ${rel(fit.beta[j], withDerivs.beta[j]).toExponential(1)} | ${rel(fit.se[j], withDerivs.se[j]).toExponential(1)} |`,
    ),
  );
  for (const g of fit.groups) {
    const show = (key: string, label: string, value: number) => {
      const k = withDerivs.sdName.indexOf(key);
      const ref = withDerivs.sd[k];
      console.log(`| ${label} | ${trueSd[key] ?? ''} | ${value.toFixed(5)} | | ${ref.toFixed(5)} | | ${Math.abs(value - ref).toExponential(1)} (abs.) | |`);
    };
    g.columns.forEach((c, a) => show(`${g.name}|${c}`, `sd(${c} | ${g.name})`, g.sds[a]));
    if (g.columns.length === 2) show(`${g.name}|cor`, `cor(${g.columns.join(', ')} | ${g.name})`, g.cor[1][0] as number);
  }
  console.log(`| logLik | | ${fit.logLik.toFixed(4)} | | ${withDerivs.logLik.toFixed(4)} | | ${rel(fit.logLik, withDerivs.logLik).toExponential(1)} | |`);
  if (lmes.length > 1) console.log(`(${fastest.label}: logLik ${fastest.logLik.toFixed(4)}, max rel. diff of β from legible's ${Math.max(...fit.beta.map((b, j) => rel(b, fastest.beta[j]))).toExponential(1)})`);
}
rmSync(dir, { recursive: true, force: true });
