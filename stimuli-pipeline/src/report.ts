// build/report.html: what the pipeline made, for the experimenter to look at before paying anyone —
// per layer and basis, each feature's references and queries as participants will see them.
// Plain HTML beside img/, no scripts; open it from the build folder.
import type { Manifest, ManifestFeature, ManifestTrial, Study } from '@legible/studies';
import type { VisualReferences } from './visual-references.ts';

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export interface ReportRun {
  seconds: number;
  device: string;
  /** Seconds spent fitting each dictionary, by "layer/basis". */
  fitSeconds?: Map<string, number>;
  contributionSeconds?: number;
  /** Why decision contribution was not measured. */
  contributionSkipped?: string | null;
  /** Feature visualizations made for this build (attribution maps, objectives reached). */
  visual?: VisualReferences | null;
  /** Seconds spent training the disentanglers (complexity). */
  complexitySeconds?: number;
}

export function buildReport(manifest: Manifest, study: Study, run: ReportRun): string {
  const trialsOf = new Map<string, ManifestTrial[]>();
  for (const t of manifest.trials) trialsOf.set(t.feature, [...(trialsOf.get(t.feature) ?? []), t]);
  const practiceIds = new Set(manifest.trials.filter((t) => t.kind === 'practice' || t.kind === 'example').map((t) => t.feature));
  const studyFeatures = manifest.features.filter((f) => !practiceIds.has(f.id));
  const sections = manifest.bases.map((b) => {
    const features = studyFeatures.filter((f) => f.layer === b.layer && f.basis === b.basis);
    const info = Object.entries(b.info)
      .map(([k, v]) => `${esc(k.replace(/_/g, ' '))}: <b>${esc(v)}</b>`)
      .join(' · ');
    const fit = run.fitSeconds?.get(`${b.layer}/${b.basis}`);
    const rejected = (manifest.rejected ?? []).filter((r) => r.layer === b.layer && r.basis === b.basis);
    return `<section><h2>${esc(b.layer)} · ${esc(b.basis)}</h2><p class="info">${b.features} features in the layer; ${features.length} in the study${info ? ` · ${info}` : ''}${fit === undefined ? '' : ` · fitted in <b>${fit.toFixed(1)} s</b>`}</p>${features.map((f) => card(f, trialsOf.get(f.id) ?? [], run.visual, manifest.complexity?.depths)).join('') || '<p>No features of this layer and basis are in the study.</p>'}${rejectedTable(rejected)}</section>`;
  });
  const practice = manifest.features.filter((f) => practiceIds.has(f.id));
  const skipped = manifest.dataset.skipped;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(study.title)} — stimuli report</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1b1b1b;padding:0 16px}
h1{margin:0 0 4px}h2{margin:32px 0 4px;border-bottom:2px solid #ddd;padding-bottom:4px}
.info{color:#555;margin:0 0 12px}table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
.card{display:grid;grid-template-columns:auto auto auto;gap:10px 18px;align-items:start;border:1px solid #e2e2e2;border-radius:8px;padding:12px;margin:12px 0}
.card h3{grid-column:1/-1;margin:0;font-size:15px}.card h3 small{color:#666;font-weight:normal}
figure{margin:0}figcaption{font-size:12px;color:#555;margin-bottom:3px}
.grid img{display:block;width:${gridWidth(study)}px;image-rendering:${study.stimuli.resample === 'nearest' ? 'pixelated' : 'auto'}}
.queries{display:flex;flex-direction:column;gap:6px}.q{display:flex;gap:6px;align-items:center;font-size:12px}
.q img{width:72px;image-rendering:${study.stimuli.resample === 'nearest' ? 'pixelated' : 'auto'};border:3px solid transparent}.q img.answer{border-color:#1f6f3f}
.maps{grid-column:1/-1}.maps img{width:56px;margin:0 2px 0 0;image-rendering:pixelated;border:1px solid #ddd}
.curve{vertical-align:middle}.curve text{font-size:10px;fill:#555}
.warn{background:#fff6e0;border:1px solid #e8c66a;padding:8px 12px;border-radius:6px}
</style></head><body>
<h1>${esc(study.title)}</h1>
<p class="info">Study <b>${esc(manifest.study)}</b> · seed ${manifest.seed} · model ${esc(manifest.model.file)} (sha256 ${esc(manifest.model.sha256.slice(0, 12))}…) · built in ${run.seconds.toFixed(1)} s${run.device === 'none' ? '' : ` on ${esc(run.device)}`}</p>
<table><tr><th>images used</th><td>${manifest.dataset.count}</td><th>reference split</th><td>${manifest.dataset.reference}</td><th>query split</th><td>${manifest.dataset.query}</td><th>skipped files</th><td>${skipped.length}</td></tr>
<tr><th>features</th><td>${studyFeatures.length}</td><th>main trials</th><td>${count(manifest, 'main')}</td><th>catch trials</th><td>${count(manifest, 'catch')}</td><th>practice trials</th><td>${count(manifest, 'practice')}</td></tr></table>
<p class="info">Each card shows a feature's minimally and maximally activating references (the reference split) and the two queries of its main trial (the held-out split, difficulty <b>${esc(study.queries.difficulty)}</b>); the query framed in green matches the maximal side. Catch trials ask about a reference itself.</p>
${contributionTable(manifest, studyFeatures, run)}
${complexitySection(manifest, studyFeatures, run)}
${baselineTable(manifest, studyFeatures, study, run.visual)}
${skipped.length ? `<div class="warn"><b>${skipped.length} files were skipped.</b><ul>${skipped.slice(0, 50).map((s) => `<li>${esc(s.path)}: ${esc(s.reason)}</li>`).join('')}${skipped.length > 50 ? `<li>… and ${skipped.length - 50} more (manifest.json lists them all)</li>` : ''}</ul></div>` : ''}
<p class="info">A feature is used only where it separates what its trials show: its ${study.references.per_side} maximal references all lie above its ${study.references.per_side} minimal ones, and its two queries apart, by more than 0 and by at least <b>${study.features.min_separation}</b> × its range over the reference split (<code>features.min_separation</code>). Images with equal activations are ordered by a seeded random draw, never by file name. ${(manifest.rejected ?? []).filter((r) => r.for === 'study').length} features were rejected; each layer's section lists them with the numbers.</p>
${sections.join('\n')}
${practice.length ? `<section><h2>Practice</h2><p class="info">Features outside the study, with the most extreme queries; participants get feedback on these (the <code>example</code> trial is the instructions' annotated example).</p>${practice.map((f) => card(f, trialsOf.get(f.id) ?? [])).join('')}</section>` : ''}
</body></html>
`;
}

/** The features of one layer and basis left out, why, and the numbers; constant ones in one line. */
function rejectedTable(rejected: NonNullable<Manifest['rejected']>): string {
  if (!rejected.length) return '';
  const constant = rejected.filter((r) => r.reason === 'constant');
  const others = rejected.filter((r) => r.reason !== 'constant');
  const rows = others.map((r) => `<tr><td>${esc(r.id)}</td><td>${esc(r.for)}</td><td>${esc(r.reason)}</td><td>${esc(r.numbers.zero_fraction ?? '')}</td><td>${esc(r.message)}</td></tr>`);
  if (constant.length) {
    const list = constant.map((r) => r.index).join(', ');
    rows.push(`<tr><td>${constant.length} features</td><td>study</td><td>constant</td><td></td><td>constant over the reference images: ${esc(list)}</td></tr>`);
  }
  return `<h3>Rejected: ${rejected.length} features</h3><table class="rejected"><tr><th>feature</th><th>drawn for</th><th>reason</th><th>zero fraction</th><th>why</th></tr>${rows.join('')}</table>`;
}

/** Decision contribution per layer × basis: mean ± SD over the study's features. */
/**
 * Feature visualizations against the other method (MACO against the plain pixel-space baseline):
 * per layer × basis, the objective each reached on the same features, steps and objective.
 */
function baselineTable(manifest: Manifest, features: ManifestFeature[], study: Study, visual?: VisualReferences | null): string {
  if (!visual) return '';
  const main = study.references.visualization?.method ?? 'maco';
  const other = visual.baseline.method;
  const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / Math.max(1, v.length);
  const rows = manifest.bases.map((b) => {
    const pairs = features
      .filter((f) => f.layer === b.layer && f.basis === b.basis)
      .flatMap((f) => {
        const reached = visual.objectives.get(f.id);
        const base = visual.baseline.features.get(f.id);
        return reached && base ? [{ main: mean(reached.max), other: base.objective }] : [];
      });
    if (!pairs.length) return '';
    const higher = pairs.filter((p) => p.main >= p.other).length;
    return `<tr><td>${esc(b.layer)}</td><td>${esc(b.basis)}</td><td>${pairs.length}</td><td>${mean(pairs.map((p) => p.main)).toPrecision(4)}</td><td>${mean(pairs.map((p) => p.other)).toPrecision(4)}</td><td>${higher} of ${pairs.length}</td></tr>`;
  });
  return `<h2>Feature visualizations: ${esc(main)} against the ${esc(other)} ${other === 'pixel' ? 'baseline' : 'method'}</h2>
<p class="info">The objective each method reached (the feature's spatially averaged activation or its projection on the dictionary direction, on the final image without augmentation), same features, objective and ${study.references.visualization?.steps ?? 256} steps; ${esc(main)}: mean over the feature's max-side images; ${esc(other)}: one image per feature, shown on each card. ${esc(other)} took ${visual.baseline.seconds.toFixed(1)} s. Unconstrained pixel-space optimisation usually reaches higher objectives with high-frequency patterns; MACO keeps a natural image spectrum and gives up some of the objective for it: compare the images as well as the numbers.</p>
<table><tr><th>layer</th><th>basis</th><th>features</th><th>${esc(main)} objective</th><th>${esc(other)} objective</th><th>${esc(main)} ≥ ${esc(other)}</th></tr>${rows.join('')}</table>`;
}

function contributionTable(manifest: Manifest, features: ManifestFeature[], run: ReportRun): string {
  const c = manifest.contribution;
  if (!c) return `<h2>Decision contribution</h2><p class="info">Not measured${run.contributionSkipped ? `: ${esc(run.contributionSkipped)}` : ''}.</p>`;
  const meanSd = (v: number[]) => {
    if (!v.length) return '–';
    const m = v.reduce((a, b) => a + b, 0) / v.length;
    const sd = v.length > 1 ? Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / (v.length - 1)) : 0;
    return `${m.toFixed(3)} ± ${sd.toFixed(3)}`;
  };
  const rows = manifest.bases.map((b) => {
    const fs = features.filter((f) => f.layer === b.layer && f.basis === b.basis && f.contribution);
    const logit = fs.map((f) => f.contribution!.logit_drop);
    const acc = fs.map((f) => 100 * f.contribution!.accuracy_drop);
    return `<tr><td>${esc(b.layer)}</td><td>${esc(b.basis)}</td><td>${fs.length}</td><td>${meanSd(logit)}</td><td>${meanSd(acc)}</td></tr>`;
  });
  return `<h2>Decision contribution</h2>
<p class="info">Each study feature removed from its layer (a channel zeroed; an NMF concept's or SAE latent's dictionary component subtracted at every position), over <b>${c.images}</b> held-out images; labels: <b>${c.labels === 'given' ? 'the class sub-folders' : "the unmodified model's predictions"}</b>${c.note ? ` (${esc(c.note)})` : ''}; baseline accuracy ${(100 * c.baseline_accuracy).toFixed(1)} %${run.contributionSeconds === undefined ? '' : `; measured in ${run.contributionSeconds.toFixed(1)} s`}. Mean ± SD over the layer's study features.</p>
<table><tr><th>layer</th><th>basis</th><th>features</th><th>logit drop of the correct class</th><th>accuracy drop (percentage points)</th></tr>${rows.join('')}</table>`;
}

/** A reference grid's width as participants first see it (cells at cell_px, whatever size the images are stored at), at most 260 px. */
function gridWidth(study: Study): number {
  const cols = Math.min(study.references.columns, study.references.per_side);
  return Math.min(260, cols * study.stimuli.cell_px + (cols - 1) * study.stimuli.gap_px);
}

function count(m: Manifest, kind: ManifestTrial['kind']): number {
  return m.trials.filter((t) => t.kind === kind).length;
}

/**
 * A small line chart (inline SVG): one or more series over the same x labels, values in [lo, hi]
 * (clipped), each series a polyline with dots.
 */
export function curveSvg(labels: readonly (string | number)[], series: { values: readonly number[]; colour: string; name: string }[], opts: { width?: number; height?: number; lo?: number; hi?: number } = {}): string {
  const w = opts.width ?? 260;
  const h = opts.height ?? 120;
  const lo = opts.lo ?? 0;
  const hi = opts.hi ?? 1;
  const [l, r, t, b] = [30, 8, 8, 18];
  const px = (i: number) => l + (labels.length > 1 ? (i * (w - l - r)) / (labels.length - 1) : (w - l - r) / 2);
  const py = (v: number) => t + (h - t - b) * (1 - (Math.min(hi, Math.max(lo, v)) - lo) / (hi - lo));
  const axis = `<line x1="${l}" y1="${py(lo)}" x2="${w - r}" y2="${py(lo)}" stroke="#bbb"/><line x1="${l}" y1="${t}" x2="${l}" y2="${py(lo)}" stroke="#bbb"/>` +
    `<text x="2" y="${py(hi) + 4}">${hi}</text><text x="2" y="${py(lo)}">${lo}</text>` +
    labels.map((x, i) => `<text x="${px(i) - 3}" y="${h - 4}">${esc(x)}</text>`).join('');
  const lines = series
    .map((sr) => {
      const pts = sr.values.map((v, i) => `${px(i).toFixed(1)},${py(v).toFixed(1)}`);
      return `<polyline fill="none" stroke="${sr.colour}" stroke-width="1.5" points="${pts.join(' ')}"><title>${esc(sr.name)}</title></polyline>${pts.map((p) => `<circle cx="${p.split(',')[0]}" cy="${p.split(',')[1]}" r="2" fill="${sr.colour}"/>`).join('')}`;
    })
    .join('');
  return `<svg class="curve" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img">${axis}${lines}</svg>`;
}

/** Feature complexity: per layer, ρ per order and the share explained per depth; the features' orders. */
function complexitySection(manifest: Manifest, features: ManifestFeature[], run: ReportRun): string {
  const c = manifest.complexity;
  if (!c) return '';
  const layers = c.layers.map((l) => {
    const fs = features.filter((f) => f.layer === l.layer && f.complexity);
    const orders = c.depths.map((d) => fs.filter((f) => f.complexity!.order === d).length);
    const none = fs.filter((f) => f.complexity!.order === null).length;
    const gap = l.held_out_loss.map((v, k) => `${c.depths[k]}: ${v.toFixed(3)} (train ${l.train_loss[k].toFixed(3)})`).join(' · ');
    return `<h3>${esc(l.layer)}</h3><p>${curveSvg(c.depths, [
      { values: l.rho, colour: '#b3412e', name: 'ρ per order' },
      { values: l.explained, colour: '#2a5d9f', name: 'share explained per depth' },
      ...(l.reliability ? [{ values: l.reliability, colour: '#3f8f4f', name: 'reliability per order' }] : []),
    ])} <span class="info"><span style="color:#b3412e">ρ(l) = Var[c(l)]/Var[f]</span>: ${l.rho.map((v) => v.toFixed(3)).join(', ')} · <span style="color:#2a5d9f">explained</span>: ${l.explained.map((v) => v.toFixed(3)).join(', ')}${l.reliability ? ` · <span style="color:#3f8f4f">reliability</span> (share of each order's component the second model's layer linearly predicts): ${l.reliability.map((v) => v.toFixed(3)).join(', ')}` : ''}</span></p>
${l.held_out_loss[l.held_out_loss.length - 1] >= 0.9 ? `<p class="warn">The deepest disentangler's held-out loss is ${l.held_out_loss[l.held_out_loss.length - 1].toFixed(3)}: it barely beats predicting each channel's mean, so the orders below say little. Raise complexity.epochs or complexity.images.</p>` : ''}
<p class="info">Held-out loss per depth (standardised MSE; train in brackets — a large gap is overfitting, a high value under-fitting): ${gap}. ${l.images.train} training, ${l.images.held_out} held-out images.</p>
<table><tr><th>complexity order</th>${c.depths.map((d) => `<th>${d}</th>`).join('')}<th>none</th></tr><tr><td>study features</td>${orders.map((n) => `<td>${n}</td>`).join('')}<td>${none}</td></tr></table>`;
  });
  return `<h2>Feature complexity</h2>
<p class="info">Disentangler nets (residual convolutional nets; depth = nonlinear layers ${c.depths.join(', ')}; width ${c.width}; ${c.epochs} epochs of Adam on the layer's maps) reproduce each layer from the image. Φ(l) holds every component of order ≤ l; c(l) = Φ(l) − Φ(previous depth) is the component of order l, ρ(l) its share of the layer's variance, on held-out images. A feature's complexity order is the smallest depth explaining ${Math.round(100 * c.threshold)} % of what the deepest net explains${run.complexitySeconds === undefined ? '' : `; trained in ${run.complexitySeconds.toFixed(1)} s`}.</p>
${layers.join('\n')}`;
}

function complexityLine(f: ManifestFeature, depths?: readonly number[]): string {
  const c = f.complexity;
  if (!c || !depths) return '';
  return `<p class="maps info">complexity order <b>${c.order ?? 'none'}</b>${c.reason ? ` (${esc(c.reason)})` : ''} · share explained per depth ${depths.map((d, k) => `${d}: ${c.explained[k].toFixed(2)}`).join(', ')} ${curveSvg(depths, [{ values: c.explained, colour: '#2a5d9f', name: 'share explained per depth' }], { width: 160, height: 70 })}</p>`;
}

function card(f: ManifestFeature, trials: ManifestTrial[], visual?: VisualReferences | null, depths?: readonly number[]): string {
  const mains = trials.filter((t) => t.kind !== 'catch');
  if (!mains.length) return '';
  const q = (t: ManifestTrial, i: 0 | 1) =>
    `<div class="q"><img src="${esc(t.assets.queries[i])}" alt="query ${i}" class="${i === t.answer ? 'answer' : ''}">${i === t.answer ? 'matches max' : ''}</div>`;
  const rows = mains.map((main) => {
    const katch = trials.find((t) => t.kind === 'catch' && t.reference_kind === main.reference_kind);
    const what = main.reference_kind === 'visualization' ? 'visualizations' : 'references';
    return `<figure class="grid"><figcaption>minimally activating ${what}</figcaption><img src="${esc(main.assets.min)}" alt="min ${what}"></figure>
<figure class="grid"><figcaption>maximally activating ${what}</figcaption><img src="${esc(main.assets.max)}" alt="max ${what}"></figure>
<figure class="queries"><figcaption>${esc(main.kind)} queries</figcaption>${q(main, 0)}${q(main, 1)}${katch ? `<figcaption>catch queries</figcaption>${q(katch, 0)}${q(katch, 1)}` : ''}</figure>`;
  });
  const vis = visual?.features.get(f.id);
  const reached = visual?.objectives.get(f.id);
  const maps = vis
    ? `<figure class="maps"><figcaption>MACO attribution maps of the max-side visualizations (where the objective's gradient was largest over the optimisation)${reached ? `; objective reached: max side ${reached.max.map((o) => o.toPrecision(3)).join(', ')}; min side ${reached.min.map((o) => o.toPrecision(3)).join(', ')}` : ''}</figcaption>${vis.attributions.map((a, i) => `<img src="${esc(vis.max[i])}" alt="visualization"><img src="${esc(a)}" alt="attribution map">`).join('')}</figure>`
    : '';
  const base = visual?.baseline.features.get(f.id);
  const baseline = base
    ? `<figure class="maps"><figcaption>${esc(visual!.baseline.method)} ${visual!.baseline.method === 'pixel' ? 'baseline' : 'method'}, same objective: reached ${base.objective.toPrecision(3)}</figcaption><img src="${esc(base.image)}" alt="${esc(visual!.baseline.method)} visualization"></figure>`
    : '';
  const acts = f.activations
    ? `; weakest max reference ${f.activations.max[f.activations.max.length - 1]}, strongest min reference ${f.activations.min[f.activations.min.length - 1]}, queries ${f.activations.queries.max[0]} / ${f.activations.queries.min[0]}`
    : '';
  return `<div class="card"><h3>${esc(f.id)} <small>activation over references: mean ${f.stats.mean}, sd ${f.stats.std}, range ${f.stats.min} – ${f.stats.max}${f.stats.zero_fraction === undefined ? '' : `, exactly 0 on ${(100 * f.stats.zero_fraction).toFixed(1)} %`}${acts}${f.contribution ? ` · removing it: logit drop ${f.contribution.logit_drop}, accuracy drop ${(100 * f.contribution.accuracy_drop).toFixed(1)} pp` : ''}</small></h3>
${rows.join('\n')}${complexityLine(f, depths)}${maps}${baseline}</div>`;
}
