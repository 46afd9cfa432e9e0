// The explorer page: the overview (layers × bases, a card per study feature) and a page per feature
// (#feature=<id>), drawn from data/explorer.json and data/features/*.json. The "try an image" panel
// (try.ts, onnxruntime-web and the model) loads only when it is opened.
import type { ExplorerData, FeatureCard, FeaturePage, ImageRef } from '../build.ts';
import type { HumanSummary } from '../human.ts';

const view = document.getElementById('view')!;
let data: ExplorerData;
const pages = new Map<string, Promise<FeaturePage>>();

type Child = Node | string | null | undefined | false;
export function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Record<string, string> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) e.append(c);
  return e;
}

const fmt = (x: number | null | undefined, digits = 3) => (x === null || x === undefined ? '—' : Number(x.toPrecision(digits)).toString());
const pct = (x: number) => `${(100 * x).toFixed(1)} %`;

async function json<T>(path: string): Promise<T> {
  const r = await fetch(path, { cache: 'no-cache' });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return (await r.json()) as T;
}

function strip(label: string, refs: ImageRef[], withValues = false): HTMLElement {
  return el(
    'div',
    { class: `strip${withValues ? ' big' : ''}` },
    el('span', { class: 'label', text: label }),
    ...refs.map((r) => el('figure', { title: `${r.id}: ${r.value}` }, el('img', { src: r.img, alt: r.id, loading: 'lazy' }), withValues ? el('span', { class: 'value', text: fmt(r.value) }) : null)),
  );
}

/** Every human-accuracy figure of simulated participants (`legible pilot`) says so. */
const simulatedLabel = () => (data.human?.simulated ? 'simulated (pilot) ' : '');

function humanText(h: HumanSummary | null): string {
  if (!h) return data.human ? 'no answers' : 'no human data';
  const ci = h.ci ? ` [${pct(h.ci[0])}, ${pct(h.ci[1])}]` : '';
  return `${simulatedLabel()}${pct(h.accuracy)}${ci} · ${h.trials} trials, ${h.participants} participant${h.participants === 1 ? '' : 's'}`;
}

function machineText(ms: Record<string, unknown> | null): Child[] {
  if (!ms || typeof ms.p !== 'number') return ['not predicted yet'];
  const lo = typeof ms.lo === 'number' ? ms.lo : null;
  const hi = typeof ms.hi === 'number' ? ms.hi : null;
  return [
    `${pct(ms.p)}${lo !== null && hi !== null ? ` [${pct(lo)}, ${pct(hi)}]` : ''}${typeof ms.n_pairs === 'number' ? ` · ${ms.n_pairs} pairs` : ''}${ms.observer ? ` · ${String(ms.observer)}` : ''} `,
    ms.weak_proxy ? el('span', { class: 'tag', text: 'weak proxy' }) : null,
  ];
}

function facts(f: FeatureCard): HTMLElement {
  const c = f.contribution;
  return el(
    'dl',
    { class: 'facts' },
    el('dt', { text: 'contribution' }),
    el('dd', { 'data-field': 'contribution' }, c ? `logit drop ${fmt(c.logit_drop)} · accuracy drop ${fmt(c.accuracy_drop)} · changed ${fmt(c.changed)}` : 'not measured'),
    el('dt', { text: 'machine score' }),
    el('dd', { 'data-field': 'machine' }, ...machineText(f.machine_score)),
    el('dt', { text: 'human accuracy' }),
    el('dd', { 'data-field': 'human' }, humanText(f.human)),
    el('dt', { text: 'activation' }),
    el('dd', {}, `mean ${fmt(f.stats.mean)} · sd ${fmt(f.stats.std)} · range [${fmt(f.stats.min)}, ${fmt(f.stats.max)}] · zero ${pct(f.stats.zero_fraction ?? 0)}`),
  );
}

function card(f: FeatureCard): HTMLElement {
  const vis = f.visualizations;
  return el(
    'article',
    { class: 'card', 'data-feature': f.id },
    el('h3', {}, el('a', { href: `#feature=${encodeURIComponent(f.id)}`, text: f.id })),
    strip('max', f.exemplars.max),
    strip('min', f.exemplars.min),
    vis ? strip('vis', [...vis.max.map((img) => ({ id: 'visualization (max)', img, value: NaN }))]) : null,
    facts(f),
  );
}

function overview(): void {
  const byId = new Map(data.features.map((f) => [f.id, f]));
  const layers = [...new Set(data.cells.map((c) => c.layer))];
  const bases = [...new Set(data.cells.map((c) => c.basis))];
  const table = el(
    'table',
    { class: 'grid', id: 'cells' },
    el('tr', {}, el('th', { text: 'layer \\ basis' }), ...bases.map((b) => el('th', { text: b }))),
    ...layers.map((l) =>
      el(
        'tr',
        {},
        el('th', { text: l }),
        ...bases.map((b) => {
          const cell = data.cells.find((c) => c.layer === l && c.basis === b);
          if (!cell) return el('td', { text: '—' });
          const hs = cell.features.map((id) => byId.get(id)!.human).filter((h): h is HumanSummary => h !== null);
          const acc = hs.length ? ` · ${simulatedLabel()}human ${pct(hs.reduce((a, h) => a + h.accuracy, 0) / hs.length)}` : '';
          return el('td', {}, el('a', { href: `#cell-${l}-${b}` }, `${cell.features.length} feature${cell.features.length === 1 ? '' : 's'}${acc}`));
        }),
      ),
    ),
  );
  view.replaceChildren(
    el('h2', { text: 'Layers × bases' }),
    table,
    data.human ? el('p', { class: 'muted', text: `${data.human.simulated ? 'Simulated (pilot) answers' : 'Human answers'}: ${data.human.trials} trials from ${data.human.participants} participants (${data.human.source}); ${data.human.note}.` }) : el('p', { class: 'muted', text: 'No human data: run `legible explore` with --data to add accuracy per feature.' }),
    ...data.cells.flatMap((c) => [
      el('h2', { id: `cell-${c.layer}-${c.basis}`, text: `${c.layer} · ${c.basis}` }),
      el('div', { class: 'cards' }, ...c.features.map((id) => card(byId.get(id)!))),
    ]),
  );
}

function histogram(page: FeaturePage): SVGSVGElement {
  const ns = 'http://www.w3.org/2000/svg';
  const W = 560;
  const H = 160;
  const pad = 24;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'hist');
  svg.setAttribute('viewBox', `0 0 ${W} ${H + pad}`);
  svg.setAttribute('width', String(W));
  const { counts, lo, hi } = page.histogram;
  const max = Math.max(1, ...counts);
  const bw = (W - 2 * pad) / counts.length;
  const add = (tag: string, attrs: Record<string, string | number>, text?: string) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text) e.textContent = text;
    svg.append(e);
    return e;
  };
  counts.forEach((n, i) => {
    // Square-root heights: the long tail of a sparse feature stays visible next to its mass at zero.
    const h = (Math.sqrt(n) / Math.sqrt(max)) * (H - 10);
    add('rect', { class: 'bar', x: pad + i * bw, y: H - h, width: Math.max(1, bw - 1), height: h, 'data-count': n }).appendChild(document.createElementNS(ns, 'title')).textContent = `${n} images`;
  });
  for (const q of page.quantiles) {
    const v = q.images[Math.min(1, q.images.length - 1)].value;
    const x = pad + (hi > lo ? ((v - lo) / (hi - lo)) * (W - 2 * pad) : 0);
    add('line', { class: 'q', x1: x, x2: x, y1: 0, y2: H });
  }
  add('text', { x: pad, y: H + 14 }, fmt(lo));
  add('text', { x: W - pad, y: H + 14, 'text-anchor': 'end' }, fmt(hi));
  add('text', { x: W / 2, y: H + 14, 'text-anchor': 'middle' }, `${page.histogram.references} reference images (height: √count)`);
  return svg;
}

async function featurePage(id: string): Promise<void> {
  const f = data.features.find((x) => x.id === id);
  if (!f) {
    view.replaceChildren(el('p', { text: `No feature ${id} in this explorer.` }));
    return;
  }
  if (!pages.has(id)) pages.set(id, json<FeaturePage>(f.page));
  const page = await pages.get(id)!;
  const vis = f.visualizations;
  view.replaceChildren(
    el('h2', { id: 'feature-title', text: f.id }),
    facts(f),
    el('h3', { text: 'Activation over the reference split' }),
    histogram(page),
    el('h3', { text: 'Exemplars at quantiles' }),
    el('div', { id: 'quantiles' }, ...page.quantiles.map((q) => strip(q.q === 0 ? 'min' : q.q === 1 ? 'max' : `${(q.q * 100).toFixed(0)} %`, q.images, true))),
    vis
      ? el(
          'div',
          {},
          el('h3', { text: 'Feature visualization' }),
          strip('max', vis.max.map((img) => ({ id: 'visualization', img, value: NaN }))),
          strip('min', vis.min.map((img) => ({ id: 'visualization', img, value: NaN }))),
          vis.attributions.length ? strip('attrib.', vis.attributions.map((img) => ({ id: 'attribution map', img, value: NaN }))) : null,
        )
      : el('p', { class: 'muted', text: 'No feature visualization in this build (references.kinds has no "visualization").' }),
    el('h3', { text: `Trials (${page.trials.length})` }),
    el('p', { class: 'muted', text: page.human ? `Answers to this feature: ${humanText(page.human)}${page.human.mean_confidence !== null ? ` · mean confidence ${fmt(page.human.mean_confidence)}` : ''}${page.human.median_rt_ms !== null ? ` · median RT ${Math.round(page.human.median_rt_ms)} ms` : ''}` : humanText(null) }),
    ...page.trials.map((t) =>
      el(
        'div',
        { class: 'trial', 'data-trial': t.id },
        el('img', { src: t.assets.min, alt: 'min references', loading: 'lazy' }),
        el('div', {}, ...t.assets.queries.map((q, i) => el('figure', {}, el('img', { class: 'query', src: q, alt: `query ${i}`, loading: 'lazy' }), el('span', { class: 'value', text: i === t.answer ? 'answer' : '' })))),
        el('img', { src: t.assets.max, alt: 'max references', loading: 'lazy' }),
        el('dl', { class: 'facts' }, el('dt', { text: 'trial' }), el('dd', { text: `${t.id} (${t.kind})` }), el('dt', { text: 'answers' }), el('dd', { text: t.human ? `${humanText(t.human)}${t.human.mean_confidence !== null ? ` · confidence ${fmt(t.human.mean_confidence)}` : ''}${t.human.median_rt_ms !== null ? ` · RT ${Math.round(t.human.median_rt_ms)} ms` : ''}` : 'none' })),
      ),
    ),
  );
}

async function route(): Promise<void> {
  const m = /^#feature=(.+)$/.exec(location.hash);
  if (m) await featurePage(decodeURIComponent(m[1]));
  else overview();
  document.body.dataset.ready = location.hash || '#';
}

async function openTry(): Promise<void> {
  const panel = document.getElementById('try')!;
  panel.hidden = false;
  if (panel.dataset.loaded) return;
  panel.dataset.loaded = '1';
  const { mountTry } = await import('./try.ts');
  await mountTry(panel, data);
}

async function start(): Promise<void> {
  try {
    data = await json<ExplorerData>('data/explorer.json');
  } catch (err) {
    view.replaceChildren(el('p', { text: `Cannot read data/explorer.json (${(err as Error).message}): open the explorer through a web server, e.g. \`legible serve\`'s /admin/explorer/<study>/.` }));
    return;
  }
  document.getElementById('title')!.textContent = `${data.study.title} — explorer`;
  document.getElementById('subtitle')!.textContent = `${data.study.id} · model ${data.model.file} (${data.model.sha256.slice(0, 12)}) · ${data.features.length} study features`;
  const tryButton = document.getElementById('try-open') as HTMLButtonElement;
  if (!data.try) tryButton.hidden = true;
  tryButton.addEventListener('click', () => void openTry());
  window.addEventListener('hashchange', () => void route());
  await route();
}

void start();
