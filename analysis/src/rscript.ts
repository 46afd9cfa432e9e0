// model.R: the same GLMM refitted with lme4's glmer, for analysts who prefer R, on exactly the
// rows legible used (glmm-data.csv, written beside it), with the factor levels (and so the
// reference levels of the treatment contrasts) pinned to legible's. It prints lme4's fit next to
// legible's estimates and writes lme4-estimates.csv for comparison.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { columnOfTerm, randomLhsText, type Frame } from './stats/formula.ts';
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
  return [...new Set([f.response, ...f.variables.map((v) => v.name), ...f.random.flatMap((r) => [...r.columns, ...r.variables.map((v) => v.name)])])];
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
  // Random terms: correlated ones as written; `||` terms (and any grouping factor written in
  // several terms) one lme4 term per uncorrelated block, on numeric model-matrix columns, so that
  // lme4 fits the same covariance structure as legible (lme4's own `||` keeps a factor's columns
  // correlated).
  const re = randomTermsForR(model);
  const fixedText = formulaText({ ...f, random: [] }, f.terms) + re.terms.map((t) => ` + ${t}`).join('');
  const drops = droppableTerms(f).map((t) => {
    const label = t.map((x) => (f.variables.find((v) => v.name === x)?.forceFactor ? `factor(${x})` : x)).join(':');
    return `lrt[[${rString(label)}]] <- anova(update(m, . ~ . - ${label}), m)\nprint(lrt[[${rString(label)}]])`;
  });
  return `# model.R — written by ${opts.generatedBy}.
# Refits legible's binomial GLMM with lme4 (glmer: Laplace approximation, nAGQ = 1, the default;
# optimizer BOBYQA with tolPwrss = 1e-10, see below)
# on exactly the rows legible used (${opts.dataFile}: the analysed trials after exclusions), with
# the factor levels pinned to legible's so both use the same reference levels.
# Run it from anywhere:  Rscript model.R
suppressPackageStartupMessages(library(lme4))
args <- commandArgs(trailingOnly = FALSE)
here <- dirname(normalizePath(sub("^--file=", "", args[grep("^--file=", args)][1])))
if (is.na(here)) here <- getwd()
d <- read.csv(file.path(here, ${rString(opts.dataFile)}), stringsAsFactors = FALSE)
${[...factorLines, ...groupLines].join('\n')}
${re.lines.join('\n')}
# lme4's default settings — and even BOBYQA with tolPwrss = 1e-10 — can stop short of the
# optimum on models with random slopes: the inner PIRLS solve is then too loose for the outer
# optimiser, which settles at a point where the log-likelihood is lower than legible's (by ~1e-7
# relative, enough to move the estimates by 1e-3). BOBYQA with tolPwrss = 1e-13 reaches it.
# LEGIBLE_LME4_TOLPWRSS=1e-10 (or LEGIBLE_LME4_DEFAULTS=1 for glmer's own defaults) shows the difference.
ctrl <- if (nzchar(Sys.getenv("LEGIBLE_LME4_DEFAULTS"))) glmerControl() else
  glmerControl(optimizer = "bobyqa", tolPwrss = as.numeric(Sys.getenv("LEGIBLE_LME4_TOLPWRSS", "1e-13")))
m <- glmer(${fixedText}, data = d, family = binomial, control = ctrl)
print(summary(m))
cat(sprintf("singular fit (lme4's isSingular): %s\n", isSingular(m)))

# legible's estimates, for comparison
legible <- data.frame(
  term = ${rVector(fit.xNames)},
  estimate = c(${fit.beta.map(num).join(', ')}),
  se = c(${fit.se.map(num).join(', ')})
)
legible_sd <- c(${fit.groups.flatMap((g) => g.columns.map((c, a) => `${rString(`${g.name}|${c}`)} = ${num(g.sds[a])}`)).join(', ')})
legible_loglik <- ${num(fit.logLik)}

cmp <- data.frame(term = names(fixef(m)), lme4 = unname(fixef(m)), lme4_se = sqrt(diag(as.matrix(vcov(m)))))
cmp$legible <- legible$estimate[match(cmp$term, legible$term)]
cmp$legible_se <- legible$se[match(cmp$term, legible$term)]
cmp$rel_diff <- abs(cmp$lme4 - cmp$legible) / pmax(abs(cmp$lme4), 1e-12)
print(cmp, digits = 6)
vc <- as.data.frame(VarCorr(m))
# lme4 names a grouping factor's further terms g.1, g.2, … (and may write g:h as g.h): legible's names
legible_groups <- ${rVector(fit.groups.map((g) => g.name))}
grp_of <- function(x) {
  for (g in legible_groups) if (x %in% c(g, make.names(g))) return(g)
  for (g in legible_groups) for (n in unique(c(g, make.names(g)))) if (startsWith(x, paste0(n, ".")) && grepl("^[0-9]+$", substring(x, nchar(n) + 2))) return(g)
  x
}
vc$grp <- vapply(vc$grp, grp_of, "")
re_names <- ${re.names}
vc$var1 <- ifelse(vc$var1 %in% names(re_names), re_names[vc$var1], vc$var1)
vc$var2 <- ifelse(!is.na(vc$var2) & vc$var2 %in% names(re_names), re_names[vc$var2], vc$var2)
vc_cor <- vc[!is.na(vc$var2), ]
vc <- vc[is.na(vc$var2), ]
vc$key <- paste(vc$grp, vc$var1, sep = "|")
print(data.frame(term = vc$key, lme4_sd = vc$sdcor, legible_sd = unname(legible_sd[vc$key])), digits = 6)
if (nrow(vc_cor)) print(data.frame(group = vc_cor$grp, var1 = vc_cor$var1, var2 = vc_cor$var2, lme4_cor = vc_cor$sdcor), digits = 6)
cat(sprintf("log-likelihood: lme4 %.6f, legible %.6f\\n", as.numeric(logLik(m)), legible_loglik))
if (legible_loglik - as.numeric(logLik(m)) > 1e-7 * abs(legible_loglik))
  cat("lme4 stopped short of legible's optimum (lower log-likelihood): tighten glmerControl (e.g. tolPwrss = 1e-13)\\n")

# Likelihood-ratio tests of the terms legible tests (each highest-order term dropped)
lrt <- list()
${drops.join('\n') || '# (no fixed terms to drop)'}

write.csv(rbind(
  data.frame(kind = "fixef", name = cmp$term, value = cmp$lme4, se = cmp$lme4_se, p = NA),
  data.frame(kind = "sd", name = vc$key, value = vc$sdcor, se = NA, p = NA),
  if (nrow(vc_cor)) data.frame(kind = "cor", name = paste(vc_cor$grp, vc_cor$var1, vc_cor$var2, sep = "|"), value = vc_cor$sdcor, se = NA, p = NA),
  data.frame(kind = "singular", name = "isSingular", value = as.numeric(isSingular(m)), se = NA, p = NA),
  data.frame(kind = "logLik", name = "logLik", value = as.numeric(logLik(m)), se = NA, p = NA),
  if (length(lrt)) data.frame(kind = "lrt", name = names(lrt), value = sapply(lrt, function(a) a$Chisq[2]), se = NA, p = sapply(lrt, function(a) a[["Pr(>Chisq)"]][2]))
), file.path(here, "lme4-estimates.csv"), row.names = FALSE)
`;
}

/**
 * The random part in lme4's syntax: correlated terms as written; uncorrelated blocks (from `||`,
 * or a grouping factor in several terms) as `(1 | g)` and `(0 + re.x | g)` on numeric columns
 * re.x computed from R's model.matrix — with the lines that make those columns, and a map from
 * the R names back to legible's column names.
 */
export function randomTermsForR(model: FittedModel): { terms: string[]; lines: string[]; names: string } {
  const f = model.formula;
  const terms: string[] = [];
  const lines: string[] = [];
  const names: string[] = [];
  const byGroup = new Map<string, number>();
  for (const r of f.random) byGroup.set(r.label, (byGroup.get(r.label) ?? 0) + 1);
  for (const r of f.random) {
    if (r.correlated && byGroup.get(r.label) === 1) {
      terms.push(r.text);
      continue;
    }
    // One lme4 term per column (uncorrelated), or per correlated term of a merged grouping factor.
    const lhs = randomLhsText(r);
    const mmVar = `mm_${terms.length + 1}`;
    lines.push(`${mmVar} <- model.matrix(~ ${lhs}, d)`);
    const g = model.fit.groups.find((x) => x.name === r.label);
    const cols = g ? g.columns.filter((c) => columnOfTerm(r, c)) : [];
    const rCols = cols.map((c) => {
      if (c === '(Intercept)') return '1';
      const name = `re.${c.replace(/[^A-Za-z0-9]+/g, '.')}`;
      lines.push(`d[[${rString(name)}]] <- unname(${mmVar}[, ${rString(c)}])`);
      names.push(`${rString(name)} = ${rString(c)}`);
      return name;
    });
    if (r.correlated) terms.push(`(${rCols.includes('1') ? '' : '0 + '}${rCols.join(' + ')} | ${r.label})`);
    else for (const c of rCols) terms.push(c === '1' ? `(1 | ${r.label})` : `(0 + ${c} | ${r.label})`);
  }
  return { terms, lines, names: names.length ? `c(${names.join(', ')})` : 'character(0)' };
}

export function writeModelScript(dir: string, model: FittedModel, frame: Frame, generatedBy: string): string[] {
  const dataFile = 'glmm-data.csv';
  writeModelData(join(dir, dataFile), model, frame);
  writeFileSync(join(dir, 'model.R'), modelScript(model, { dataFile, generatedBy }));
  return [join(dir, dataFile), join(dir, 'model.R')];
}
