// The report's figures, drawn as SVG: accuracy by layer per basis (the study's main figure),
// per-feature accuracy distributions, response time and confidence by condition, the exclusion
// summary and the power curve. Each returns a standalone SVG document.
import type { ExclusionSummary } from '../exclusions.ts';
import type { CellAccuracy, CellResponses, UnitAccuracy } from '../stats/descriptive.ts';
import type { PowerResult } from '../stats/models.ts';
import type { MachineComparison } from '../stats/machine.ts';
import type { ComplexityResult } from '../complexity.ts';
import { GRID, INK, jitter, legend, linear, PALETTE, Svg, ticks, yAxis } from './svg.ts';

export interface Figure {
  name: string;
  title: string;
  caption: string;
  svg: string;
}

const pct = (v: number) => `${Math.round(v * 100)}%`;
/** Narrow figures (one or two conditions) get this width, so that every figure is drawn at the same scale. */
const MIN_WIDTH = 560;

/** How the condition factors map onto a plot: colour (series), x position, facets. */
interface Layout {
  series: string | null;
  x: string | null;
  facet: string | null;
  seriesLevels: string[];
  xLevels: string[];
  facetLevels: string[];
}

function layout(factors: string[], levels: Map<string, string[]>): Layout {
  // Factors with one level only are constant: they go into the subtitle, not the layout.
  const [series = null, x = null, facet = null] = factors.filter((f) => levels.get(f)!.length > 1);
  return {
    series,
    x,
    facet,
    seriesLevels: series ? levels.get(series)! : [''],
    xLevels: x ? levels.get(x)! : [''],
    facetLevels: facet ? levels.get(facet)! : [''],
  };
}

const at = (factors: string[], cell: string[], f: string | null) => (f === null ? '' : cell[factors.indexOf(f)]);

/** Cells ordered for plotting: by facet, then x level, then series. */
function orderCells<T extends { levels: string[] }>(cells: T[], factors: string[], lay: Layout): T[] {
  const key = (c: T) => [lay.facetLevels.indexOf(at(factors, c.levels, lay.facet)), lay.xLevels.indexOf(at(factors, c.levels, lay.x)), lay.seriesLevels.indexOf(at(factors, c.levels, lay.series))];
  return cells.slice().sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    return ka[0] - kb[0] || ka[1] - kb[1] || ka[2] - kb[2];
  });
}

/** The cell's levels of the factors that vary (the labels under a cell's column). */
function varyingLevels(cell: string[], factors: string[], levels: Map<string, string[]>): string[] {
  return cell.filter((_, j) => levels.get(factors[j])!.length > 1);
}

/** Width of a cell's column: room for its longest label line (about 7 px per character at 11 px). */
function slotWidth(cells: { levels: string[] }[], factors: string[], levels: Map<string, string[]>): number {
  const longest = Math.max(3, ...cells.flatMap((c) => varyingLevels(c.levels, factors, levels).map((l) => l.length)));
  return Math.max(56, Math.min(140, Math.max(760 / Math.max(1, cells.length), longest * 7 + 12)));
}

/** "reference_kind: natural" for the factors with a single level. */
function constants(factors: string[], levels: Map<string, string[]>): string {
  return factors
    .filter((f) => levels.get(f)!.length === 1)
    .map((f) => `${f}: ${levels.get(f)![0]}`)
    .join(', ');
}

export function accuracyFigure(cells: CellAccuracy[], factors: string[], levels: Map<string, string[]>): Figure {
  const lay = layout(factors, levels);
  const panelW = Math.max(lay.facet ? 300 : 460, 110 * lay.xLevels.length + 100);
  const left = 78;
  const plotH = 320;
  const width = Math.max(560, left + panelW * lay.facetLevels.length + 20);
  const title = `Accuracy by ${lay.x ?? 'condition'}${lay.series ? ` and ${lay.series}` : ''}`;
  const fixed = constants(factors, levels);
  const svg = new Svg(width, 0, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  if (fixed) svg.text(width - 20, 22, fixed, { size: 11, anchor: 'end', fill: '#555' });
  const legendH = legend(svg, left, 46, [
    ...(lay.series ? lay.seriesLevels.map((l, i) => ({ label: `${lay.series} = ${l}`, color: PALETTE[i % PALETTE.length] })) : []),
    { label: 'one participant', color: '#999', hollow: true },
  ]);
  const top = 46 + legendH + (lay.facet ? 24 : 10);
  const height = top + plotH + (lay.x ? 96 : 66);
  svg.height = height;
  const values = cells.flatMap((c) => [...c.participantAccuracies, c.participantMean - c.participantHalfWidth]).filter(Number.isFinite);
  const y0 = Math.max(0, Math.min(0.4, Math.floor(Math.min(...values, 0.5) * 10 - 0.2) / 10));
  const y1 = 1;
  const y = linear(y0, y1, top + plotH, top);
  lay.facetLevels.forEach((facet, fi) => {
    const x0 = left + fi * panelW;
    const x1 = x0 + panelW - 30;
    if (fi === 0) yAxis(svg, y, ticks(y0, y1, 8), x0, x1, pct, 'Proportion correct', 18);
    else for (const v of ticks(y0, y1, 8)) svg.line(x0, y(v), x1, y(v), GRID);
    svg.line(x0, y(0.5), x1, y(0.5), '#888', 1, ' stroke-dasharray="5 4"');
    svg.text(x1, y(0.5) - 5, 'chance', { anchor: 'end', size: 10, fill: '#777' });
    if (lay.facet) svg.text((x0 + x1) / 2, top - 10, `${lay.facet} = ${facet}`, { anchor: 'middle', size: 12, weight: 'bold' });
    const xs = linear(-0.5, lay.xLevels.length - 0.5, x0, x1);
    // A design with one condition has no x axis to label.
    if (lay.x) lay.xLevels.forEach((xl, xi) => svg.text(xs(xi), top + plotH + 20, xl, { anchor: 'middle', size: 12 }));
    if (fi === 0 && lay.x) svg.text((left + x1) / 2, top + plotH + 42, lay.x, { anchor: 'middle', size: 12 });
    const dodge = Math.min(40, panelW / Math.max(1, lay.xLevels.length) / (lay.seriesLevels.length + 1));
    lay.seriesLevels.forEach((sl, si) => {
      const color = PALETTE[si % PALETTE.length];
      const off = (si - (lay.seriesLevels.length - 1) / 2) * dodge;
      const points: [number, number][] = [];
      lay.xLevels.forEach((xl, xi) => {
        const c = cells.find((cc) => at(factors, cc.levels, lay.facet) === facet && at(factors, cc.levels, lay.x) === xl && at(factors, cc.levels, lay.series) === sl);
        if (!c) return;
        const px = xs(xi) + off;
        // One hollow dot per participant, jittered sideways; the mean with its participant-level interval.
        c.participantAccuracies.forEach((a, k) => svg.circle(px + jitter(k * 7 + xi * 131 + si * 17) * dodge * 0.3, y(a), 2.6, 'none', ` stroke="${color}" stroke-opacity="0.55" stroke-width="1.2" class="participant"`));
        const lo = Math.max(0, c.participantMean - c.participantHalfWidth);
        const hi = Math.min(1, c.participantMean + c.participantHalfWidth);
        if (Number.isFinite(c.participantHalfWidth)) {
          svg.line(px, y(lo), px, y(hi), color, 2);
          svg.line(px - 6, y(lo), px + 6, y(lo), color, 2);
          svg.line(px - 6, y(hi), px + 6, y(hi), color, 2);
        }
        points.push([px, y(c.participantMean)]);
      });
      if (points.length > 1) svg.polyline(points, color, 2);
      for (const [px, py] of points) svg.circle(px, py, 5.5, color, ' stroke="#fff" stroke-width="1.5" class="mean"');
    });
  });
  svg.text(left, height - 26, 'Filled points: mean of the participants\' accuracies, with its 95% interval (± 1.96·SD/√N);', { size: 11, fill: '#555' });
  svg.text(left, height - 10, 'hollow dots: one participant each (jittered sideways). Dashed line: chance.', { size: 11, fill: '#555' });
  return {
    name: 'accuracy-by-layer',
    title,
    caption:
      'Proportion of correct main trials per condition: each hollow dot is one participant (jittered sideways), the filled point is the mean over participants with its participant-level 95% interval (mean ± 1.96·SD/√N). The dashed line is chance (50%). Bootstrap intervals (participants, features) are in the table below.',
    svg: svg.toString(),
  };
}

export function unitFigure(units: UnitAccuracy[], cells: CellAccuracy[], factors: string[], levels: Map<string, string[]>): Figure {
  const lay = layout(factors, levels);
  const ordered = orderCells(cells, factors, lay);
  const left = 70;
  const top = 64;
  const plotH = 280;
  const slot = slotWidth(ordered, factors, levels);
  const width = Math.max(MIN_WIDTH, left + slot * ordered.length + 30);
  const height = top + plotH + 74;
  const title = 'Accuracy of each feature';
  const svg = new Svg(width, height, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  if (lay.series) legend(svg, left, 40, lay.seriesLevels.map((l, i) => ({ label: `${lay.series} = ${l}`, color: PALETTE[i % PALETTE.length] })));
  const y = linear(0, 1, top + plotH, top);
  const right = left + slot * ordered.length + 10;
  yAxis(svg, y, ticks(0, 1, 5), left, right, pct, 'Proportion correct (per feature)', 18);
  svg.line(left, y(0.5), right, y(0.5), '#888', 1, ' stroke-dasharray="5 4"');
  ordered.forEach((c, k) => {
    const cx = left + slot * (k + 0.5);
    const color = PALETTE[Math.max(0, lay.seriesLevels.indexOf(at(factors, c.levels, lay.series))) % PALETTE.length];
    const vals = units.filter((u) => u.levels.join('\u0000') === c.levels.join('\u0000')).map((u) => u.accuracy);
    const sorted = vals.slice().sort((a, b) => a - b);
    const q = (p: number) => {
      const h = (sorted.length - 1) * p;
      const lo = Math.floor(h);
      return sorted[lo] + (h - lo) * ((sorted[Math.min(sorted.length - 1, lo + 1)] ?? sorted[lo]) - sorted[lo]);
    };
    if (sorted.length) {
      svg.rect(cx - slot * 0.3, y(q(0.75)), slot * 0.6, y(q(0.25)) - y(q(0.75)), color, ' fill-opacity="0.12" stroke="' + color + '" stroke-opacity="0.6"');
      svg.line(cx - slot * 0.3, y(q(0.5)), cx + slot * 0.3, y(q(0.5)), color, 2.5);
    }
    vals.forEach((v, i) => svg.circle(cx + jitter(i + k * 101) * slot * 0.22, y(v), 3, color, ' fill-opacity="0.75"'));
    const vl = varyingLevels(c.levels, factors, levels);
    vl.slice(0, 3).forEach((l, li) => svg.text(cx, top + plotH + 18 + li * 14, l, { anchor: 'middle', size: 11 }));
    svg.text(cx, top + plotH + 18 + Math.min(3, vl.length) * 14, `n=${vals.length}`, { anchor: 'middle', size: 10, fill: '#777' });
  });
  return {
    name: 'feature-accuracy',
    title,
    caption: 'Each dot is one feature\'s proportion correct in a condition (its main trials after exclusions); boxes span the quartiles, the thick line is the median.',
    svg: svg.toString(),
  };
}

export function rtFigure(resp: CellResponses[], factors: string[], levels: Map<string, string[]>): Figure {
  const lay = layout(factors, levels);
  const ordered = orderCells(resp, factors, lay);
  const left = 70;
  const top = 82;
  const plotH = 260;
  const slot = slotWidth(ordered, factors, levels);
  const width = left + slot * ordered.length + 30;
  const height = top + plotH + 74;
  const title = 'Response time by condition';
  const svg = new Svg(Math.max(width, 640), height + 18, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  legend(svg, left, 44, [
    { label: 'median; box: quartiles; line: 10th–90th percentile', color: INK },
    { label: 'median when correct', color: '#009E73' },
    { label: 'median when wrong', color: '#D55E00', hollow: true },
  ]);
  const hi = 1.08 * Math.max(...ordered.map((r) => r.rt.p90).filter(Number.isFinite), 1000);
  const y = linear(0, hi / 1000, top + plotH, top);
  yAxis(svg, y, ticks(0, hi / 1000, 5), left, width - 20, (v) => `${v}`, 'Response time (s)', 18);
  ordered.forEach((r, k) => {
    const cx = left + slot * (k + 0.5);
    const color = PALETTE[Math.max(0, lay.seriesLevels.indexOf(at(factors, r.levels, lay.series))) % PALETTE.length];
    const s = (v: number) => y(v / 1000);
    if (Number.isFinite(r.rt.median)) {
      svg.line(cx, s(r.rt.p10), cx, s(r.rt.p90), color, 1.2);
      svg.rect(cx - 9, s(r.rt.q3), 18, s(r.rt.q1) - s(r.rt.q3), color, ' fill-opacity="0.25" stroke="' + color + '"');
      svg.line(cx - 12, s(r.rt.median), cx + 12, s(r.rt.median), INK, 2.5);
    }
    if (Number.isFinite(r.rtCorrect)) svg.circle(cx + 20, s(r.rtCorrect), 4, '#009E73');
    if (Number.isFinite(r.rtWrong)) svg.circle(cx + 20, s(r.rtWrong), 4, '#fff', ' stroke="#D55E00" stroke-width="2"');
    varyingLevels(r.levels, factors, levels)
      .slice(0, 3)
      .forEach((l, li) => svg.text(cx, top + plotH + 18 + li * 14, l, { anchor: 'middle', size: 11 }));
  });
  return {
    name: 'rt-by-condition',
    title,
    caption: 'Response times of main trials per condition: median (black line), quartiles (box), 10th–90th percentiles (line); dots mark the median of correct (filled) and wrong (open) answers.',
    svg: svg.toString(),
  };
}

export function confidenceFigure(resp: CellResponses[], factors: string[], levels: Map<string, string[]>): Figure {
  const lay = layout(factors, levels);
  const ordered = orderCells(resp, factors, lay);
  const left = 70;
  const plotH = 240;
  const slot = slotWidth(ordered, factors, levels);
  const width = Math.max(MIN_WIDTH, left + slot * ordered.length + 30);
  const title = 'Confidence by condition';
  const svg = new Svg(width, 0, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  const shades = ['#c6dbef', '#6baed6', '#08519c'];
  const legendH = legend(svg, left, 40, [
    { label: '1 guessing', color: shades[0] },
    { label: '2 fairly sure', color: shades[1] },
    { label: '3 very sure', color: shades[2] },
  ]);
  // The "mean …" labels sit above the bars' tops (up to 100%): room for them below the legend.
  const top = 40 + legendH + 18;
  const height = top + plotH + 74;
  svg.height = height;
  const y = linear(0, 1, top + plotH, top);
  yAxis(svg, y, ticks(0, 1, 5), left, left + slot * ordered.length + 10, pct, 'Share of answers', 18);
  ordered.forEach((r, k) => {
    const cx = left + slot * (k + 0.5);
    let acc = 0;
    r.confidenceShare.forEach((share, i) => {
      if (!Number.isFinite(share)) return;
      svg.rect(cx - slot * 0.3, y(acc + share), slot * 0.6, y(acc) - y(acc + share), shades[i]);
      acc += share;
    });
    if (Number.isFinite(r.meanConfidence)) svg.text(cx, y(acc) - 5, `mean ${r.meanConfidence.toFixed(2)}`, { anchor: 'middle', size: 10, fill: '#444' });
    varyingLevels(r.levels, factors, levels)
      .slice(0, 3)
      .forEach((l, li) => svg.text(cx, top + plotH + 18 + li * 14, l, { anchor: 'middle', size: 11 }));
  });
  return {
    name: 'confidence-by-condition',
    title,
    caption: 'Share of main-trial answers given at each confidence level, per condition, with the mean confidence above each bar.',
    svg: svg.toString(),
  };
}

export function exclusionFigure(ex: ExclusionSummary): Figure {
  const rules = ex.rules.filter((r) => r.active);
  const left = 270;
  const top = 56;
  const row = 30;
  const width = 760;
  const height = top + row * Math.max(1, rules.length) + 50;
  const title = `Exclusions: ${ex.excluded} of ${ex.participants} sessions`;
  const svg = new Svg(width, height, title);
  svg.text(20, 22, title, { size: 16, weight: 'bold' });
  legend(svg, 20, 44, [
    { label: 'excluded by the rule', color: '#f4a582' },
    { label: '… and by no other rule', color: '#b2182b' },
  ]);
  const max = Math.max(1, ...rules.map((r) => r.excluded));
  const x = linear(0, max, left, width - 230);
  if (rules.length === 0) svg.text(20, top + 20, 'No exclusion rule was active (none configured, or nothing to evaluate).', { size: 12 });
  rules.forEach((r, i) => {
    const cy = top + i * row;
    svg.text(left - 10, cy + 15, r.label, { anchor: 'end', size: 12 });
    svg.rect(left, cy + 3, x(r.excluded) - left, 18, '#f4a582');
    svg.rect(left, cy + 3, x(r.only) - left, 18, '#b2182b');
    svg.text(x(r.excluded) + 8, cy + 16, `${r.excluded} of ${r.evaluated} checked (${r.only} by this rule alone)`, { size: 11, fill: '#444' });
  });
  return {
    name: 'exclusions',
    title,
    caption: 'Participants excluded by each active rule of the study file; the dark part were excluded by that rule alone. A participant can be excluded by several rules.',
    svg: svg.toString(),
  };
}

export function powerFigure(p: PowerResult, postHoc = false): Figure {
  const left = 70;
  const top = 50;
  const plotW = 520;
  const plotH = 260;
  const width = left + plotW + 40;
  const height = top + plotH + 60;
  const title = `${postHoc ? 'Post hoc power (observed effect)' : 'Power'} for ${p.coefficient} = ${p.effect.toFixed(2)} (logit), α = ${p.alpha}`;
  const svg = new Svg(width, height, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  const ns = p.rows.map((r) => r.n);
  const x = linear(0, Math.max(...ns) * 1.05, left, left + plotW);
  const y = linear(0, 1, top + plotH, top);
  yAxis(svg, y, ticks(0, 1, 5), left, left + plotW, pct, 'Power', 18);
  for (const t of ticks(0, Math.max(...ns) * 1.05, 6).filter(Number.isInteger)) svg.text(x(t), top + plotH + 18, t, { anchor: 'middle', size: 11 });
  svg.text(left + plotW / 2, top + plotH + 40, 'Participants', { anchor: 'middle', size: 12 });
  svg.line(left, y(p.target), left + plotW, y(p.target), '#888', 1, ' stroke-dasharray="5 4"');
  svg.text(left + plotW, y(p.target) - 5, `target ${pct(p.target)}`, { anchor: 'end', size: 10, fill: '#777' });
  const pts: [number, number][] = p.rows.filter((r) => Number.isFinite(r.power)).map((r) => [x(r.n), y(r.power)]);
  svg.polyline(pts, PALETTE[0], 2);
  for (const r of p.rows) {
    if (!Number.isFinite(r.power)) continue;
    svg.line(x(r.n), y(Math.max(0, r.power - 1.96 * r.se)), x(r.n), y(Math.min(1, r.power + 1.96 * r.se)), PALETTE[0], 1.5);
    svg.circle(x(r.n), y(r.power), 4.5, PALETTE[0], ' stroke="#fff" stroke-width="1.5"');
  }
  return {
    name: 'power',
    title,
    caption: `Share of ${p.sims} simulated studies per sample size in which the Wald test of ${p.coefficient} was significant, with ±1.96 Monte-Carlo standard errors.${
      postHoc ? ' Post hoc: simulated with this data\'s own estimate, so it restates the p-value; not a basis for planning.' : ''
    }`,
    svg: svg.toString(),
  };
}


/** Per feature: human accuracy against the machine observer's predicted P(correct), with Spearman's ρ. */
export function machineFigure(m: MachineComparison): Figure {
  const left = 70;
  const top = 56;
  const plot = 340;
  const width = Math.max(MIN_WIDTH, 700);
  const height = top + plot + 60;
  const title = 'Human accuracy against the machine observer';
  const svg = new Svg(width, height, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  const ci = Number.isFinite(m.ci[0]) ? `, 95% CI ${m.ci[0].toFixed(2)} to ${m.ci[1].toFixed(2)}` : '';
  svg.text(left, 42, `Spearman's ρ = ${Number.isFinite(m.rho) ? m.rho.toFixed(2) : '–'}${ci} (${m.features.length} features)${m.weakProxy ? ' · observer: weak proxy' : ''}`, { size: 12, fill: '#444' });
  // The x axis from a round tenth at or below chance and every CI.
  const lo = Math.max(0, Math.floor(Math.min(0.5, ...m.features.map((f) => f.lo)) * 10) / 10);
  const x = linear(lo, 1, left, left + plot);
  const y = linear(0, 1, top + plot, top);
  yAxis(svg, y, ticks(0, 1, 5), left, left + plot, pct, 'Human proportion correct (per feature)', 18);
  for (const v of ticks(lo, 1, 5)) {
    svg.line(x(v), top, x(v), top + plot, GRID);
    svg.text(x(v), top + plot + 16, pct(v), { anchor: 'middle', size: 11, fill: '#555' });
  }
  svg.text(left + plot / 2, top + plot + 40, 'Machine score: predicted P(correct)', { anchor: 'middle', size: 12 });
  svg.line(left, y(0.5), left + plot, y(0.5), '#888', 1, ' stroke-dasharray="5 4"');
  // The identity line: where the observer would be calibrated.
  svg.line(x(lo), y(lo), x(1), y(1), '#bbb', 1, ' stroke-dasharray="2 3"');
  for (const f of m.features) {
    svg.line(x(f.lo), y(f.human), x(f.hi), y(f.human), PALETTE[0], 1, ' stroke-opacity="0.5"');
    svg.circle(x(f.machine), y(f.human), 4, PALETTE[0], ' fill-opacity="0.8"');
  }
  return {
    name: 'machine-observer',
    title,
    caption: `Each dot is one feature: its proportion correct over the kept participants' main trials (all conditions it appears in) against the machine observer's predicted P(correct) (legible predict; observer ${m.observer}), with the prediction's 95% bootstrap CI as a horizontal bar. Dotted: the identity line. ρ's CI: ${m.boot} bootstrap resamples of the features.`,
    svg: svg.toString(),
  };
}

/** Per-feature accuracy against feature complexity (--complexity), coloured by basis, with Spearman's ρ. */
export function complexityFigure(c: ComplexityResult): Figure {
  const left = 70;
  const top = 64;
  const plotW = 460;
  const plotH = 260;
  const width = Math.max(MIN_WIDTH, left + plotW + 40);
  const height = top + plotH + 56;
  const title = `Feature accuracy against complexity (${c.measure})`;
  const svg = new Svg(width, height, title);
  svg.text(left, 22, title, { size: 16, weight: 'bold' });
  const bases = [...new Set(c.features.map((p) => p.basis))];
  legend(svg, left, 40, bases.map((b, i) => ({ label: b || 'features', color: PALETTE[i % PALETTE.length] })));
  const xs = c.features.map((p) => p.complexity);
  const lo = Math.min(...xs);
  const hi = Math.max(...xs);
  const pad = hi > lo ? (hi - lo) * 0.05 : 0.5;
  const x = linear(lo - pad, hi + pad, left, left + plotW);
  const y = linear(0, 1, top + plotH, top);
  yAxis(svg, y, ticks(0, 1, 5), left, left + plotW, pct, 'Proportion correct (per feature)', 18);
  svg.line(left, top + plotH, left + plotW, top + plotH, INK);
  const xt = c.measure === 'order' ? [...new Set(xs)].sort((a, b) => a - b) : ticks(lo, hi, 5);
  for (const v of xt) {
    svg.line(x(v), top + plotH, x(v), top + plotH + 4, INK);
    svg.text(x(v), top + plotH + 18, c.measure === 'order' ? String(v) : v.toFixed(2), { anchor: 'middle', size: 11 });
  }
  svg.text(left + plotW / 2, top + plotH + 40, c.measure === 'order' ? 'Complexity order (disentangler depth)' : 'Low-order share (shallowest / deepest explained)', { anchor: 'middle', size: 12 });
  c.features.forEach((p, i) => {
    const color = PALETTE[bases.indexOf(p.basis) % PALETTE.length];
    const jx = c.measure === 'order' ? jitter(i) * 6 : 0;
    svg.circle(x(p.complexity) + jx, y(p.accuracy), 3.5, color, ' fill-opacity="0.75"');
  });
  const s = c.spearman;
  svg.text(left + plotW, 40, `Spearman ρ = ${Number.isFinite(s.rho) ? s.rho.toFixed(2) : '–'} [${s.ci.map((v) => (Number.isFinite(v) ? v.toFixed(2) : '–')).join(', ')}], n = ${s.n}`, { anchor: 'end', size: 12 });
  return {
    name: 'complexity',
    title,
    caption: `Each dot is one feature: its proportion correct over all its main trials (after exclusions) against its complexity ${c.measure} from the stimuli manifest${c.measure === 'order' ? ' (dots jittered sideways)' : ''}. Spearman's rank correlation with a 95% percentile bootstrap interval over features.`,
    svg: svg.toString(),
  };
}
