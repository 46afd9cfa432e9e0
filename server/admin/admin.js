// The admin dashboard (served as a static file; the page's CSP allows no inline script). It asks
// for an admin token, keeps it in sessionStorage (this tab only), and reads the admin API with it.
// Everything from the server is put into the page as text (textContent), never as HTML.
const KEY = 'legible-admin-token';
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

const token = () => sessionStorage.getItem(KEY);

async function api(path, opts = {}) {
  const res = await fetch(path, { headers: { authorization: `Bearer ${token()}` }, cache: 'no-store' });
  if (res.status === 401) {
    sessionStorage.removeItem(KEY);
    showLogin('That token was not accepted (wrong, revoked, or expired with the database). Paste another.');
    throw new Error('unauthorized');
  }
  if (!res.ok) {
    let message = `HTTP ${res.status}`;
    try {
      message = (await res.json()).error ?? message;
    } catch {
      /* not JSON */
    }
    throw new Error(message);
  }
  return opts.raw ? res : res.json();
}

function showLogin(message = '') {
  $('login').hidden = false;
  $('session-controls').hidden = true;
  $('studies').replaceChildren();
  $('audit-section').hidden = true;
  $('login-error').textContent = message;
  $('status').textContent = '';
  $('token').focus();
}

const fmt = (x, digits = 0) => (x === null || x === undefined ? '–' : Number(x).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const figure = (label, value, cls = '') => el('div', { class: `figure ${cls}` }, el('div', { class: 'value', text: value }), el('div', { class: 'label', text: label }));

function bar(responses, leased, target) {
  const track = el('span', { class: 'bar-track', title: `${responses} recorded, ${leased} in progress, target ${target}` });
  const done = el('span', { class: 'bar' });
  done.style.width = `${Math.min(100, (100 * responses) / Math.max(1, target))}%`;
  const pending = el('span', { class: 'bar leased' });
  pending.style.width = `${Math.max(0, Math.min(100 - (100 * responses) / Math.max(1, target), (100 * leased) / Math.max(1, target)))}%`;
  track.append(done, pending);
  return track;
}

async function download(path, filename) {
  const res = await api(path, { raw: true });
  const blob = await res.blob();
  const url = URL.createObjectURL(blob);
  const a = el('a', { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function studyCard(s) {
  const card = el('section', { class: 'study' });
  card.append(el('h2', {}, s.title ?? s.id, el('span', { class: `mode ${s.study_mode ?? ''}`, text: s.served ? s.study_mode : 'not served' })));
  card.append(el('p', {}, 'id: ', el('code', { text: s.id }), s.served ? ` · counting ${s.mode} data` : '', ' · sessions by mode: ', Object.entries(s.by_mode).map(([m, n]) => `${m} ${n}`).join(', ') || 'none'));
  const actions = el('div', { class: 'actions' });
  const csv = el('button', { type: 'button', text: 'Download trials.csv' });
  csv.addEventListener('click', () => download(`/api/admin/studies/${encodeURIComponent(s.id)}/trials.csv`, `${s.id}-trials.csv`).catch((e) => ($('status').textContent = e.message)));
  const dict = el('button', { type: 'button', text: 'Data dictionary' });
  dict.addEventListener('click', () => download(`/api/admin/studies/${encodeURIComponent(s.id)}/data-dictionary.md`, 'data-dictionary.md').catch((e) => ($('status').textContent = e.message)));
  const people = el('button', { type: 'button', text: 'Participants' });
  const peopleBox = el('div');
  people.addEventListener('click', () => showParticipants(s.id, peopleBox).catch((e) => ($('status').textContent = e.message)));
  actions.append(csv, dict, people);
  if (!s.served) {
    card.append(actions, peopleBox);
    return card;
  }

  const pay = s.hourly_pay === null ? '–' : `${fmt(s.hourly_pay, 2)} ${s.reward.currency}/h`;
  const low = s.hourly_pay !== null && s.pay_guidance && s.hourly_pay < s.pay_guidance.minimum;
  card.append(
    el(
      'div',
      { class: 'figures' },
      figure('sessions started', fmt(s.sessions.total)),
      figure('in progress (leased)', fmt(s.sessions.leased)),
      figure('finished', fmt(s.sessions.finished)),
      figure('completed', fmt(s.sessions.completed)),
      figure('failed checks', fmt(s.sessions.failed_checks)),
      figure('excluded (study rules)', fmt(s.exclusions.excluded)),
      figure('median completion', s.median_completion_minutes === null ? '–' : `${fmt(s.median_completion_minutes, 1)} min`),
      figure(s.reward ? `implied pay (reward ${fmt(s.reward.amount, 2)} ${s.reward.currency})` : 'implied pay (no reward in the study file)', pay, low ? 'warn' : ''),
    ),
  );
  if (low) card.append(el('p', { class: 'warn', text: `Below Prolific's minimum of ${s.pay_guidance.minimum} ${s.reward.currency}/h (recommended ${s.pay_guidance.recommended}): raise the reward.` }));
  const rules = Object.entries(s.exclusions.by_rule);
  if (rules.length) card.append(el('p', { text: `Exclusions by rule: ${rules.map(([r, n]) => `${r} ${n}`).join(', ')}` }));
  for (const n of s.exclusions.not_evaluated) card.append(el('p', { class: 'warn', text: `Not evaluated here: ${n}` }));

  const conditions = el('table');
  conditions.append(el('thead', {}, el('tr', {}, ...['condition', 'responses', 'target', 'units complete', 'active', 'finished', ''].map((h) => el('th', { text: h })))));
  const body = el('tbody');
  for (const c of s.conditions) {
    body.append(
      el(
        'tr',
        {},
        el('td', { text: c.condition || '(all participants)' }),
        el('td', { class: 'num', text: fmt(c.responses) }),
        el('td', { class: 'num', text: fmt(c.target) }),
        el('td', { class: 'num', text: `${c.complete_units} / ${c.units.length}` }),
        el('td', { class: 'num', text: fmt(c.sessions.active) }),
        el('td', { class: 'num', text: fmt(c.sessions.finished) }),
        el('td', {}, bar(c.responses, c.units.reduce((n, u) => n + u.leased, 0), c.target)),
      ),
    );
  }
  conditions.append(body);
  card.append(el('h3', { text: `Progress per condition (target ${s.responses_per_feature} responses per feature × condition)` }), conditions);

  const details = el('details');
  details.append(el('summary', { text: 'Per feature' }));
  const units = el('table');
  units.append(el('thead', {}, el('tr', {}, ...['condition', 'feature', 'layer', 'basis', 'references', 'responses', 'in progress', 'target', ''].map((h) => el('th', { text: h })))));
  const ub = el('tbody');
  for (const c of s.conditions) {
    for (const u of c.units) {
      ub.append(
        el(
          'tr',
          {},
          el('td', { text: c.condition || '–' }),
          el('td', { text: u.feature }),
          el('td', { text: u.layer }),
          el('td', { text: u.basis }),
          el('td', { text: u.reference_kind }),
          el('td', { class: 'num', text: fmt(u.responses) }),
          el('td', { class: 'num', text: fmt(u.leased) }),
          el('td', { class: 'num', text: fmt(u.target) }),
          el('td', {}, bar(u.responses, u.leased, u.target)),
        ),
      );
    }
  }
  units.append(ub);
  details.append(units);
  card.append(details, actions, peopleBox);
  return card;
}

async function showParticipants(id, box) {
  const { participants } = await api(`/api/admin/studies/${encodeURIComponent(id)}/participants`);
  const table = el('table');
  const heads = ['participant', 'mode', 'status', 'outcome', 'condition', 'started', 'minutes', 'answered', 'catch', 'buttons', 'practice', 'events', 'ended unsynced', 'excluded by'];
  table.append(el('thead', {}, el('tr', {}, ...heads.map((h) => el('th', { text: h })))));
  const body = el('tbody');
  for (const p of participants) {
    body.append(
      el(
        'tr',
        {},
        el('td', {}, el('code', { text: p.participant })),
        el('td', { text: p.mode }),
        el('td', { text: p.status + (p.leased ? ' (leased)' : '') }),
        el('td', { text: p.outcome ?? '' }),
        el('td', { text: p.condition }),
        el('td', { text: p.created_at.replace('T', ' ').slice(0, 19) }),
        el('td', { class: 'num', text: p.duration_s === null ? '' : fmt(p.duration_s / 60, 1) }),
        el('td', { class: 'num', text: `${p.answered} / ${p.required}` }),
        el('td', { class: 'num', text: p.catch.n ? `${p.catch.correct} / ${p.catch.n}` : '' }),
        el('td', { class: 'num', text: fmt(p.distinct_buttons) }),
        el('td', { text: p.practice.rounds === null ? '' : `${p.practice.passed === null ? 'done' : p.practice.passed ? 'passed' : 'not passed'} (${p.practice.rounds} round${p.practice.rounds === 1 ? '' : 's'})` }),
        el('td', { class: 'num', text: fmt(p.events) }),
        el('td', { text: p.unsynced_end ? `yes: ${p.answered} of ${p.required} stored, review` : '' }),
        el('td', { text: p.excluded_by.join(', ') }),
      ),
    );
  }
  table.append(body);
  box.replaceChildren(el('h3', { text: `Participants (${participants.length})` }), table);
}

async function showAudit() {
  const { entries } = await api('/api/admin/audit?limit=50');
  const body = $('audit').querySelector('tbody');
  body.replaceChildren(
    ...entries.map((e) =>
      el(
        'tr',
        {},
        el('td', { class: 'num', text: String(e.id) }),
        el('td', { text: e.at.replace('T', ' ').slice(0, 19) }),
        el('td', { text: e.actor }),
        el('td', { text: e.action }),
        el('td', { text: e.study ?? '' }),
        el('td', { text: e.detail ? JSON.stringify(e.detail) : '' }),
      ),
    ),
  );
  $('audit-section').hidden = false;
}

async function load() {
  $('login').hidden = true;
  $('session-controls').hidden = false;
  $('status').textContent = 'Loading…';
  try {
    const { studies, simulated } = await api('/api/admin/studies');
    $('simulated').hidden = !simulated;
    $('studies').replaceChildren(...studies.map(studyCard));
    if (studies.length === 0) $('studies').append(el('p', { text: 'No studies served or stored yet.' }));
    await showAudit();
    $('status').textContent = `Updated ${new Date().toLocaleTimeString()}.`;
  } catch (e) {
    if (e.message !== 'unauthorized') $('status').textContent = `Could not load: ${e.message}`;
  }
}

$('login').addEventListener('submit', (event) => {
  event.preventDefault();
  const value = $('token').value.trim();
  if (!value) return;
  sessionStorage.setItem(KEY, value);
  $('token').value = '';
  void load();
});
$('refresh').addEventListener('click', () => void load());
$('forget').addEventListener('click', () => {
  sessionStorage.removeItem(KEY);
  showLogin();
});

if (token()) void load();
else showLogin();
