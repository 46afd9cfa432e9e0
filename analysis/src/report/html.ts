// The report: one self-contained HTML file (inline SVG figures, inline CSS, stimulus images
// embedded as data: URIs — it makes no request of its own), plus every figure as SVG and PNG
// (sharp renders the SVG through librsvg) under figures/.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import sharp from 'sharp';
import type { LoadedStudy } from '@legible/studies';
import type { AnalysisResult } from '../analyze.ts';
import { formatCounts, RULES } from '../exclusions.ts';
import { accuracyFigure, complexityFigure, confidenceFigure, exclusionFigure, machineFigure, powerFigure, rtFigure, unitFigure, type Figure } from './figures.ts';
import { esc } from './svg.ts';

const pct = (v: number, d = 1) => (Number.isFinite(v) ? `${(v * 100).toFixed(d)}%` : '–');
const fx = (v: number, d = 3) => (Number.isFinite(v) ? v.toFixed(d) : '–');
const pval = (p: number) => (!Number.isFinite(p) ? '–' : p < 1e-4 ? p.toExponential(1) : p.toFixed(4));

function table(header: string[], rows: (string | number)[][], cls = ''): string {
  return `<table${cls ? ` class="${cls}"` : ''}><thead><tr>${header.map((h) => `<th>${esc(h)}</th>`).join('')}</tr></thead><tbody>${rows
    .map((r) => `<tr>${r.map((c) => `<td>${typeof c === 'number' ? esc(String(c)) : c}</td>`).join('')}</tr>`)
    .join('')}</tbody></table>`;
}

interface GalleryItem {
  feature: string;
  accuracy: number;
  trials: number;
  levels: string;
  min: string | null;
  max: string | null;
}

/** Best and worst features with their reference grids, read from the study's build folder. */
async function gallery(r: AnalysisResult, loaded: LoadedStudy | null, k = 5): Promise<{ best: GalleryItem[]; worst: GalleryItem[]; note: string; images: boolean; tieBest: string; tieWorst: string }> {
  // Pool each feature over the cells it appears in; features with few trials are left out.
  const byFeature = new Map<string, { k: number; n: number; levels: string }>();
  for (const u of r.units) {
    const f = byFeature.get(u.unit) ?? { k: 0, n: 0, levels: u.levels.join(' · ') };
    f.k += u.correct;
    f.n += u.trials;
    byFeature.set(u.unit, f);
  }
  const counts = [...byFeature.values()].map((f) => f.n).sort((a, b) => a - b);
  const minTrials = Math.max(1, Math.floor((counts[Math.floor(counts.length / 2)] ?? 1) / 2));
  const ranked = [...byFeature]
    .filter(([, f]) => f.n >= minTrials)
    .map(([feature, f]) => ({ feature, accuracy: f.k / f.n, trials: f.n, levels: f.levels }))
    .sort((a, b) => b.accuracy - a.accuracy || a.feature.localeCompare(b.feature));
  const manifestFile = loaded ? join(loaded.paths.build, 'manifest.json') : null;
  let assets = new Map<string, { min: string; max: string }>();
  let note = `Features with at least ${minTrials} main trials (half the median); images are embedded in this file as data: URIs.`;
  if (manifestFile && existsSync(manifestFile)) {
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as { trials: { feature: string; kind: string; reference_kind: string; assets: { min: string; max: string } }[] };
    for (const t of manifest.trials) {
      if (t.kind !== 'main') continue;
      const have = assets.get(t.feature);
      if (!have || t.reference_kind === 'natural') assets.set(t.feature, t.assets);
    }
  } else {
    assets = new Map();
    note = loaded
      ? `Features with at least ${minTrials} main trials (half the median). No stimuli manifest (build/manifest.json of study ${loaded.study.id}): build the stimuli (legible stimuli) to see the references here.`
      : `Features with at least ${minTrials} main trials (half the median). No study file, so no reference images.`;
  }
  const image = async (path: string | undefined): Promise<string | null> => {
    if (!path || !loaded) return null;
    const file = join(loaded.paths.build, path);
    if (!existsSync(file)) return null;
    const buf = await sharp(file).resize({ width: 240, height: 240, fit: 'inside', withoutEnlargement: true, kernel: 'nearest' }).webp({ quality: 85 }).toBuffer();
    return `data:image/webp;base64,${buf.toString('base64')}`;
  };
  const item = async (f: (typeof ranked)[number]): Promise<GalleryItem> => {
    const a = assets.get(f.feature);
    return { ...f, min: await image(a?.min), max: await image(a?.max) };
  };
  const n = Math.min(k, Math.floor(ranked.length / 2));
  const best = await Promise.all(ranked.slice(0, n).map(item));
  const worstRanked = ranked.slice().sort((a, b) => a.accuracy - b.accuracy || a.feature.localeCompare(b.feature));
  const worst = await Promise.all(worstRanked.slice(0, n).map(item));
  // Features tied with the last one shown: which of them are shown is by id, not by ease.
  const tie = (list: typeof ranked, shown: number, what: string) => {
    if (shown === 0) return '';
    const edge = list[shown - 1].accuracy;
    const tied = list.filter((f) => f.accuracy === edge).length;
    const shownTied = list.slice(0, shown).filter((f) => f.accuracy === edge).length;
    if (tied <= shownTied) return '';
    return `${tied} features tie at ${(edge * 100).toFixed(1)}% correct: none of them is ${what} than the others; ${shownTied} of them ${shownTied === 1 ? 'is' : 'are'} shown, in id order.`;
  };
  const images = [...best, ...worst].some((it) => it.min || it.max);
  return { best, worst, note, images, tieBest: tie(ranked, n, 'easier'), tieWorst: tie(worstRanked, n, 'harder') };
}

const CSS = `
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;color:#222;max-width:1100px;margin:2em auto;padding:0 1.2em;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:2px solid #0072B2;padding-bottom:.2em}h3{margin-top:1.4em}
.meta{color:#555;font-size:.92em}.summary{background:#f3f7fb;border-left:4px solid #0072B2;padding:.8em 1.2em;margin:1.2em 0}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1.2em 0}figcaption{color:#444;font-size:.9em;max-width:900px}figure svg{max-width:100%;height:auto}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em}.card img{width:48%;image-rendering:pixelated;border:1px solid #eee}
.card .refs{display:flex;justify-content:space-between}.card .cap{font-size:.85em;color:#444}
.simulated{background:#fff3cd;border:2px solid #c98a00;padding:.6em 1em;border-radius:6px}.note{color:#8a4b00}.small{font-size:.85em;color:#555}code{background:#f4f4f4;padding:0 .25em}
`;

export async function writeReport(out: string, r: AnalysisResult, loaded: LoadedStudy | null): Promise<string[]> {
  const figDir = join(out, 'figures');
  mkdirSync(figDir, { recursive: true });
  const levels = new Map(Object.entries(r.levels));
  const figures: Figure[] = [
    accuracyFigure(r.cells, r.factors, levels),
    unitFigure(r.units, r.cells, r.factors, levels),
    rtFigure(r.responses, r.factors, levels),
    confidenceFigure(r.responses, r.factors, levels),
    exclusionFigure(r.exclusions),
  ];
  if (r.power) figures.push(powerFigure(r.power, r.powerEffect?.kind === 'post-hoc'));
  if (r.machine) figures.push(machineFigure(r.machine));
  if (r.complexity) figures.push(complexityFigure(r.complexity));
  const files: string[] = [];
  for (const f of figures) {
    const svgFile = join(figDir, `${f.name}.svg`);
    const pngFile = join(figDir, `${f.name}.png`);
    writeFileSync(svgFile, f.svg);
    await sharp(Buffer.from(f.svg), { density: 144 }).png().toFile(pngFile);
    files.push(svgFile, pngFile);
  }
  const fig = (name: string) => {
    const f = figures.find((x) => x.name === name);
    return f ? `<figure>${f.svg.replace(/^<\?xml[^>]*>/, '')}<figcaption><b>${esc(f.title)}.</b> ${esc(f.caption)} <span class="small">(figures/${f.name}.svg, .png)</span></figcaption></figure>` : '';
  };
  const g = await gallery(r, loaded);
  const title = loaded?.study.title ?? r.study ?? 'legible analysis';
  const glmm = r.glmm;
  const basisTerm = glmm?.fit.xNames.find((n) => n.startsWith('basis') && !n.includes(':'));
  const headline: string[] = [];
  if (glmm && basisTerm) {
    const j = glmm.fit.xNames.indexOf(basisTerm);
    headline.push(
      `GLMM: <code>${esc(basisTerm)}</code> ${fx(glmm.fit.beta[j], 2)} log-odds (odds ratio ${fx(Math.exp(glmm.fit.beta[j]), 2)}), ${
        glmm.fit.separation.includes(basisTerm)
          ? `separation (estimate unbounded): likelihood-ratio p = ${pval(glmm.separationLrt.find((t) => t.dropped === basisTerm)?.p ?? NaN)}`
          : `z = ${fx(glmm.fit.z[j], 2)}, p = ${pval(glmm.fit.p[j])}`
      }${glmm.fit.xNames.some((n) => n.includes(':')) ? ' (at the reference level of the other factors)' : ''}.`,
    );
  }
  const lrtLines = glmm?.lrt.map((t) => `dropping <code>${esc(t.dropped)}</code>: χ²(${t.df}) = ${fx(t.chisq, 2)}, p = ${pval(t.p)}`) ?? [];

  const cellsTable = table(
    [...r.factors, 'trials', 'participants', 'features', 'accuracy', '95% CI (participants)', '95% CI (features)', 'mean ± SD (participants)', 'mean ± 1.96·SD/√N (participants)', 'mean over features'],
    r.cells.map((c) => [
      ...c.levels.map(esc),
      c.trials,
      c.participants,
      c.units,
      pct(c.accuracy),
      `${pct(c.ciParticipants[0])} – ${pct(c.ciParticipants[1])}`,
      `${pct(c.ciUnits[0])} – ${pct(c.ciUnits[1])}`,
      `${pct(c.participantMean)} ± ${pct(c.participantSd)}`,
      `${pct(c.participantMean)} ± ${pct(c.participantHalfWidth)}`,
      pct(c.unitMean),
    ]),
  );

  const glmmHtml = glmm
    ? `<p>Formula: <code>${esc(glmm.formula)}</code> — binomial, logit link, Laplace approximation (as lme4's <code>glmer</code> with nAGQ = 1); ${glmm.fit.n} trials; ${
        glmm.fit.converged ? `converged in ${glmm.fit.iterations} iterations (${glmm.fit.evaluations} deviance evaluations, ${glmm.fit.seconds.toFixed(1)} s)` : '<span class="note">did not converge</span>'
      }. Standard errors from the ${glmm.fit.vcovMethod === 'hessian' ? 'Hessian of the deviance, as lme4' : 'RX factor'}. <code>model.R</code> refits it with lme4 on <code>glmm-data.csv</code>, with <code>glmerControl(optimizer = "bobyqa", tolPwrss = 1e-13)</code>: lme4's default settings (and BOBYQA with <code>tolPwrss = 1e-10</code>) can stop short of the optimum on models with random slopes — a lower log-likelihood and estimates off by ~1e-3 — so lme4 needs these tighter settings to reproduce this fit; the script says so when it stops short.</p>
      ${modelWarningsHtml(glmm)}
      ${table(
        ['term', 'estimate (log-odds)', 'SE', 'z', 'p', 'odds ratio'],
        glmm.fit.xNames.map((n, j) =>
          glmm.fit.separation.includes(n)
            ? [`<code>${esc(n)}</code>`, `${fx(glmm.fit.beta[j], 4)} (unbounded)`, '—', '—', `separation: likelihood-ratio p = ${pval(glmm.separationLrt.find((t) => t.dropped === n)?.p ?? NaN)}`, '—']
            : [`<code>${esc(n)}</code>`, fx(glmm.fit.beta[j], 4), fx(glmm.fit.se[j], 4), fx(glmm.fit.z[j], 2), pval(glmm.fit.p[j]), fx(Math.exp(glmm.fit.beta[j]), 3)],
        ),
      )}
      ${table(
        ['grouping factor', 'random effect', 'levels', 'SD', 'variance', 'correlations'],
        glmm.fit.groups.flatMap((gr) =>
          gr.columns.map((c, a) => [
            a === 0 ? esc(gr.name) : '',
            `<code>${esc(c)}</code>`,
            a === 0 ? gr.levels : '',
            fx(gr.sds[a], 4),
            fx(gr.sds[a] ** 2, 4),
            gr.columns
              .slice(0, a)
              .map((c2, b) => (gr.cor[a][b] === null ? '' : `${esc(c2)}: ${fx(gr.cor[a][b] as number, 3)}`))
              .filter(Boolean)
              .join(', ') + (a === gr.columns.length - 1 && gr.singular ? ' <span class="note">singular</span>' : ''),
          ]),
        ),
      )}
      <p>log-likelihood ${fx(glmm.fit.logLik, 2)}, AIC ${fx(glmm.fit.AIC, 2)}, BIC ${fx(glmm.fit.BIC, 2)}, ${glmm.fit.df} parameters.${
        glmm.fit.warnings.length ? ` <span class="note">${glmm.fit.warnings.map(esc).join('; ')}</span>` : ''
      }${glmm.fit.dropped.length ? ` <span class="note">Dropped as linearly dependent: ${glmm.fit.dropped.map(esc).join(', ')}.</span>` : ''}</p>
      <h3>Likelihood-ratio tests</h3>
      ${
        glmm.lrt.length
          ? table(
              ['reduced model', 'logLik (reduced)', 'logLik (full)', 'AIC (reduced)', 'AIC (full)', 'χ²', 'df', 'p'],
              glmm.lrt.map((t) => [`<code>${esc(t.reduced)}</code>`, fx(t.logLikReduced, 2), fx(t.logLikFull, 2), fx(t.AICReduced, 1), fx(t.AICFull, 1), fx(t.chisq, 3), t.df, pval(t.p)]),
            )
          : '<p>No fixed term to test.</p>'
      }`
    : `<p class="note">${esc(r.glmmError ?? 'No model fitted.')}</p>`;

  const rt = r.rankTest;
  const testName = { 'wilcoxon-signed-rank': 'Wilcoxon signed-rank test', friedman: 'Friedman test', 'kruskal-wallis': 'Kruskal–Wallis test', none: 'No rank test' } as const;
  const rankHtml = !rt
    ? '<p>One condition only: nothing to compare.</p>'
    : rt.test === 'none'
      ? `<p><b>${testName.none} over all conditions</b>: ${esc(rt.reason)}.</p>`
      : `<p><b>${testName[rt.test]}</b> over per-feature accuracies by ${esc(rt.by)}: ${rt.statisticName} = ${fx(rt.statistic, 3)}${rt.df !== null ? `, df = ${rt.df}` : ''}, p = ${pval(rt.p)} (${
          rt.test === 'kruskal-wallis' ? `${rt.n} feature × condition accuracies` : `${rt.n} features`
        }). <i>Why this test:</i> ${esc(rt.reason)}. ${rt.method ? `${esc(rt.method[0].toUpperCase() + rt.method.slice(1))}.` : ''}</p>
       ${table(
         ['condition', 'features', 'median accuracy', ...(rt.test === 'wilcoxon-signed-rank' ? [] : ['mean rank'])],
         rt.groups.map((gr) => [esc(gr.label), gr.n, pct(gr.median), ...(rt.test === 'wilcoxon-signed-rank' ? [] : [fx(gr.meanRank, rt.test === 'friedman' ? 2 : 1)])]),
       )}
       ${
         rt.pairwise.length
           ? table(
               ['comparison', 't', 'df', 'p', 'p (Holm)'],
               rt.pairwise.map((pw) => [`${esc(pw.a)} vs ${esc(pw.b)}`, fx(pw.t, 3), pw.df, pval(pw.p), pval(pw.pHolm)]),
             )
           : ''
       }`;
  const permHtml = r.permutation.length
    ? `<p>Permutation tests of the difference in mean per-feature accuracy (${r.permutation[0].permutations} permutations; Holm-adjusted within each factor). <i>Paired</i> where the same features were tested at both levels: each feature's two accuracies swap labels (a sign-flip test on its difference), so feature-to-feature variation cancels; <i>unpaired</i> where the levels have different features: labels are shuffled between features within the levels of the other factors.</p>${table(
        ['factor', 'comparison', 'within', 'design', 'difference', 'features', 'p', 'p (Holm)'],
        r.permutation.map((p) => [
          esc(p.factor),
          `${esc(p.a)} − ${esc(p.b)}`,
          esc(p.within || 'all (stratified)'),
          `${p.design}${p.unmatched ? ` (${p.unmatched} unmatched left out)` : ''}`,
          pct(p.difference),
          p.design === 'paired' ? `${p.na} pairs` : `${p.na} / ${p.nb}`,
          pval(p.p),
          pval(p.pHolm),
        ]),
      )}`
    : '';

  const ex = r.exclusions;
  const activeRules = ex.rules.filter((x) => x.active);
  const overlapHtml =
    activeRules.length > 1
      ? `<h3>Overlap between rules</h3>${table(
          ['', ...activeRules.map((x) => x.id)],
          activeRules.map((a) => [esc(a.id), ...activeRules.map((b) => ex.overlap[a.id][b.id])]),
        )}${ex.combinations.length ? table(['excluded by exactly these rules', 'participants'], ex.combinations.map((c) => [esc(c.rules.join(' + ')), c.count])) : ''}`
      : '';
  const configLines = Object.entries(ex.config)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `<code>${esc(k)}: ${esc(JSON.stringify(v))}</code>`)
    .join(', ');
  const exHtml = `<p>${ex.participants} sessions, ${ex.excluded} excluded, ${ex.kept} kept. Rules: ${configLines || 'none'}.</p>${table(
    ['rule', 'checked', 'excluded', 'only by this rule'],
    ex.rules.map((x) => [esc(x.label), x.active ? x.evaluated : 'off', x.active ? x.excluded : '–', x.active ? x.only : '–']),
  )}${overlapHtml}`;

  const card = (it: GalleryItem) =>
    g.images
      ? `<div class="card"><div class="refs">${it.min ? `<img src="${it.min}" alt="least activating references of ${esc(it.feature)}">` : '<span class="small">(no image)</span>'}${
          it.max ? `<img src="${it.max}" alt="most activating references of ${esc(it.feature)}">` : ''
        }</div><div class="cap"><b>${esc(it.feature)}</b> — ${pct(it.accuracy)} correct of ${it.trials} trials (${esc(it.levels)}). Left: least activating references; right: most activating.</div></div>`
      : `<div class="card"><div class="cap"><b>${esc(it.feature)}</b> — ${pct(it.accuracy)} correct of ${it.trials} trials${it.levels ? ` (${esc(it.levels)})` : ''}.</div></div>`;
  const tieNote = (t: string) => (t ? `<p class="small">${esc(t)}</p>` : '');
  const galleryHtml = `<p class="small">${esc(g.note)}</p><h3>Easiest features</h3>${tieNote(g.tieBest)}<div class="gallery">${g.best.map(card).join('')}</div><h3>Hardest features</h3>${tieNote(g.tieWorst)}<div class="gallery">${g.worst.map(card).join('')}</div>`;

  const powerHtml = r.power
    ? `${fig('power')}${table(
        ['participants', 'power', 'Monte-Carlo SE', 'fits', 'failed fits'],
        r.power.rows.map((row) => [row.n, pct(row.power), pct(row.se), row.fits, row.failures]),
      )}<p${r.powerEffect?.kind === 'post-hoc' ? ' class="note"' : ''}>${esc(r.powerNote)} Method: ${esc(r.power.method)}.</p><p class="small">When power levels off as participants are added, the number of features, not of participants, limits the precision of this effect (a feature belongs to one basis and layer, so the feature-to-feature variance does not average out with more participants).</p>`
    : `<p>${esc(r.powerNote)}</p>`;

  const m = r.machine;
  const machineHtml = m
    ? `<h2>Machine observer</h2>${m.weakProxy ? '<p class="note">The machine scores come from the study\'s own model (a weak proxy for a perceptual similarity model): give <code>legible predict --observer</code> a DreamSim, CLIP or DINO export for a prediction worth comparing.</p>' : ''}${fig('machine-observer')}<p>Spearman's ρ between each feature's human accuracy and its machine score: <b>${fx(m.rho, 2)}</b>${
        Number.isFinite(m.ci[0]) ? ` (95% CI ${fx(m.ci[0], 2)} to ${fx(m.ci[1], 2)}, ${m.boot} bootstrap resamples of the ${m.features.length} features)` : ` (${m.features.length} features: too few for a CI)`
      }.${m.unscored.length ? ` ${m.unscored.length} features with human data have no machine score (run <code>legible predict</code> again after rebuilding the stimuli): ${m.unscored.map(esc).join(', ')}.` : ''}</p>${table(
        ['feature', 'trials', 'human accuracy', 'machine score', 'machine 95% CI'],
        m.features.map((f) => [esc(f.feature), f.trials, pct(f.human), fx(f.machine), `${fx(f.lo)} – ${fx(f.hi)}`]),
      )}`
    : '';

  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)} — legible report</title><style>${CSS}</style></head>
<body>
${r.simulated ? '<p class="simulated"><b>Simulated data.</b> Every participant in this report is a simulated participant of <code>legible pilot</code>, answering with the machine observer\'s predictions (or accuracies given on its command line). No person took part: use it to check the study\'s chain and to plan, not as a result.</p>' : ''}
<h1>${esc(title)}${r.simulated ? ' (simulated)' : ''}</h1>
<p class="meta">Study <code>${esc(r.study ?? '–')}</code> · data ${esc(basename(r.source))} · ${esc(r.mode === 'all' && r.sessionCounts.mode === 'all' ? 'all modes' : `${r.sessionCounts.mode} data`)} · generated ${esc(r.generatedAt)} by <code>legible analyze</code></p>
<div class="summary">
<p><b>${r.counts.keptParticipants}</b> participants analysed, <b>${r.counts.mainTrials}</b> main trials on <b>${r.counts.features}</b> features. Sessions (as the data dictionary defines the counts) — ${esc(formatCounts(r.sessionCounts))}.</p>
${headline.map((h) => `<p>${h}</p>`).join('')}
${lrtLines.length ? `<p>Likelihood-ratio tests: ${lrtLines.join('; ')}.</p>` : ''}
${r.notes.map((n) => `<p class="note">${esc(n)}</p>`).join('')}
</div>
<h2>Accuracy by condition</h2>
${fig('accuracy-by-layer')}
${cellsTable}
<p class="small">Bootstrap: ${r.boot} resamples of the condition's participants, and separately of its features, with replacement (percentile intervals). The participant-level columns give the mean of the participants' accuracies ± their standard deviation (SD, n − 1 denominator), and ± 1.96·SD/√N (the 95% interval of the mean), as this literature reports them.</p>
<h2>Mixed-effects model</h2>
${glmmHtml}
<h2>Features</h2>
${fig('feature-accuracy')}
<h3>Rank tests</h3>
${rankHtml}
<h3>Permutation tests</h3>
${permHtml}
${machineHtml}
${complexityHtml(r, fig)}
<h2>Response time and confidence</h2>
${fig('rt-by-condition')}
${fig('confidence-by-condition')}
<h2>Exclusions</h2>
${fig('exclusions')}
${exHtml}
<h2>Best and worst features</h2>
${galleryHtml}
<h2>Power</h2>
${powerHtml}
<h2>Files</h2>
<p class="small">accuracy.csv (this page's first table), features.csv (per-feature accuracies), exclusions.csv (every session's decision, one column per rule: ${RULES.map((x) => x.column).join(', ')}), glmm.csv, ranef.csv (the conditional modes of the random effects: each participant's and feature's estimated deviation in log-odds), model.R and glmm-data.csv, results.json (everything above), figures/ (each figure as SVG and PNG).</p>
</body></html>
`;
  const file = join(out, 'report.html');
  writeFileSync(file, html);
  files.push(file);
  return files;
}

/** The model's warnings and, for the default formula, how the maximal model was reduced and why. */
function modelWarningsHtml(glmm: NonNullable<AnalysisResult['glmm']>): string {
  const parts: string[] = [];
  const steps = glmm.reduction ?? [];
  if (steps.length > 1) {
    parts.push(
      `<p class="note">The maximal model the design justifies, <code>${esc(steps[0].formula)}</code>, is a singular fit. It was simplified step by step (correlations first, then the random slope with the smallest variance):</p><ol>${steps
        .slice(1)
        .map((s) => `<li><code>${esc(s.formula)}</code> — ${esc(s.reason)}${s.singular ? ' (still singular)' : ''}; log-likelihood ${fx(s.logLik, 2)}</li>`)
        .join('')}</ol><p>The model reported below is the last of these.</p>`,
    );
  } else if (steps.length === 1) parts.push(`<p>This is the maximal model the design justifies (random slopes for the factors that vary within participants or features); it is not singular.</p>`);
  if (glmm.warnings?.length) parts.push(`<p class="note">Model warnings:</p><ul>${glmm.warnings.map((w) => `<li class="note">${esc(w)}</li>`).join('')}</ul>`);
  return parts.join('\n');
}

/** Human accuracy against feature complexity (--complexity): the figure, ρ per basis, the GLMM terms. */
function complexityHtml(r: AnalysisResult, fig: (name: string) => string): string {
  const c = r.complexity;
  if (!c) return '';
  const row = (label: string, s: { rho: number; ci: [number, number]; n: number }) => [label, s.n, fx(s.rho, 3), `[${fx(s.ci[0], 3)}, ${fx(s.ci[1], 3)}]`];
  const terms = r.glmm ? r.glmm.fit.xNames.map((n, j) => [n, j] as const).filter(([n]) => n.includes('complexity')) : [];
  return `<h2>Feature complexity</h2>
${fig('complexity')}
${table(['features', 'n', "Spearman's ρ", '95% bootstrap CI'], [row('all', c.spearman), ...c.byBasis.map((b) => row(`basis = ${esc(b.basis)}`, b))])}
${terms.length ? `<p>GLMM (${esc(r.glmm!.formula)}): ${terms.map(([n, j]) => `${esc(n)} ${fx(r.glmm!.fit.beta[j])} (SE ${fx(r.glmm!.fit.se[j])}, p ${pval(r.glmm!.fit.p[j])})`).join('; ')}.</p>` : ''}
<p class="small">Complexity ${esc(c.measure)} per feature from ${esc(c.manifest)} (disentangler nets: <code>legible stimuli</code> with a <code>complexity:</code> section)${c.dropped.features ? `; ${c.dropped.features} features without one left out` : ''}; per-feature values in complexity.csv.</p>`;
}
