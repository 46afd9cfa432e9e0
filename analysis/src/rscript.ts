// model.R: the same GLMM refitted with lme4's glmer, for analysts who prefer R, on exactly the
// rows legible used (glmm-data.csv, written beside it), with the factor levels (and so the
// reference levels of the treatment contrasts) pinned to legible's. It prints lme4's fit next to
// legible's estimates and writes lme4-estimates.csv for comparison.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Frame } from './stats/formula.ts';
import { droppableTerms, formulaText, type FittedModel } from './stats/models.ts';

const rString = (s: string) => JSON.stringify(s);
const rVector = (xs: string[]) => `c(${xs.map(rString).join(', ')})`;
/** A CSV cell for R's read.csv: quoted when needed, never prefixed. */
const rCell = (v: string | number) => {
  const s = String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
};
const num = (x: number) => (Number.isFinite(x) ? x.toPrecision(12) : 'NA');

/** Columns the model reads: response, fixed-effect variables, grouping columns. */
export function modelColumns(model: FittedModel): string[] {
  const f = model.formula;
  return [...new Set([f.response, ...f.variables.map((v) => v.name), ...f.random.flatMap((r) => r.columns)])];
}

export function writeModelData(file: string, model: FittedModel, frame: Frame): void {
  const cols = modelColumns(model);
  const values = cols.map((c) => frame.column(c)!);
  const lines = [cols.join(',')];
  for (let i = 0; i < frame.n; i++) lines.push(values.map((v) => rCell(v[i])).join(','));
  writeFileSync(file, `${lines.join('\n')}\n`);
}

export function modelScript(model: FittedModel, opts: { dataFile: string; generatedBy: string }): string {
  const f = model.formula;
  const fit = model.fit;
  const factorLines = [...model.matrix.factors].map(([name, levels]) => `d[[${rString(name)}]] <- factor(d[[${rString(name)}]], levels = ${rVector(levels)})`);
  const groupCols = [...new Set(f.random.flatMap((r) => r.columns))].filter((c) => !model.matrix.factors.has(c));
  const groupLines = groupCols.map((c) => `d[[${rString(c)}]] <- factor(d[[${rString(c)}]])`);
  const fixedText = formulaText(f, f.terms);
  const drops = droppableTerms(f).map((t) => {
    const label = t.map((x) => (f.variables.find((v) => v.name === x)?.forceFactor ? `factor(${x})` : x)).join(':');
    return `lrt[[${rString(label)}]] <- anova(update(m, . ~ . - ${label}), m)\nprint(lrt[[${rString(label)}]])`;
  });
  return `# model.R — written by ${opts.generatedBy}.
# Refits legible's binomial GLMM with lme4 (glmer: Laplace approximation, nAGQ = 1, the default)
# on exactly the rows legible used (${opts.dataFile}: the analysed trials after exclusions), with
# the factor levels pinned to legible's so both use the same reference levels.
# Run it from anywhere:  Rscript model.R
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)][1])))
if (is.na(here)) here <- getwd()
d <- read.csv(file.path(here, ${rString(opts.dataFile)}), stringsAsFactors = FALSE)
${[...factorLines, ...groupLines].join('\n')}

m <- glmer(${fixedText}, data = d, family = binomial)
print(summary(m))

# legible's estimates, for comparison
legible <- data.frame(
  term = ${rVector(fit.xNames)},
  estimate = c(${fit.beta.map(num).join(', ')}),
  se = c(${fit.se.map(num).join(', ')})
)
legible_sd <- c(${fit.groups.map((g) => `${rString(g.name)} = ${num(g.sd)}`).join(', ')})
legible_loglik <- ${num(fit.logLik)}

cmp <- data.frame(term = names(fixef(m)), lme4 = unname(fixef(m)), lme4_se = sqrt(diag(as.matrix(vcov(m)))))
cmp$legible <- legible$estimate[match(cmp$term, legible$term)]
cmp$legible_se <- legible$se[match(cmp$term, legible$term)]
cmp$rel_diff <- abs(cmp$lme4 - cmp$legible) / pmax(abs(cmp$lme4), 1e-12)
print(cmp, digits = 6)
vc <- as.data.frame(VarCorr(m))
vc <- vc[is.na(vc$var2), ]
print(data.frame(group = vc$grp, lme4_sd = vc$sdcor, legible_sd = unname(legible_sd[vc$grp])), digits = 6)
cat(sprintf("log-likelihood: lme4 %.6f, legible %.6f\\n", as.numeric(logLik(m)), legible_loglik))

# Likelihood-ratio tests of the terms legible tests (each highest-order term dropped)
lrt <- list()
${drops.join('\n') || '# (no fixed terms to drop)'}

write.csv(rbind(
  data.frame(kind = "fixef", name = cmp$term, value = cmp$lme4, se = cmp$lme4_se, p = NA),
  data.frame(kind = "sd", name = vc$grp, value = vc$sdcor, se = NA, p = NA),
  data.frame(kind = "logLik", name = "logLik", value = as.numeric(logLik(m)), se = NA, p = NA),
  if (length(lrt)) data.frame(kind = "lrt", name = names(lrt), value = sapply(lrt, function(a) a$Chisq[2]), se = NA, p = sapply(lrt, function(a) a[["Pr(>Chisq)"]][2]))
), file.path(here, "lme4-estimates.csv"), row.names = FALSE)
`;
}

export function writeModelScript(dir: string, model: FittedModel, frame: Frame, generatedBy: string): string[] {
  const dataFile = 'glmm-data.csv';
  writeModelData(join(dir, dataFile), model, frame);
  writeFileSync(join(dir, 'model.R'), modelScript(model, { dataFile, generatedBy }));
  return [join(dir, dataFile), join(dir, 'model.R')];
}
