// Small DOM pieces outside the trials: message pages, the completion page, the reconnecting
// banner. Text from the server that is not HTML goes in through textContent; URLs are checked.

/** http(s) URLs only (a redirect from the server must never become javascript:). */
export function safeHttpUrl(url: string | null | undefined): string | null {
  if (!url) return null;
  try {
    const u = new URL(url, location.href);
    return u.protocol === 'https:' || u.protocol === 'http:' ? u.href : null;
  } catch {
    return null;
  }
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export interface MessageOptions {
  title: string;
  lines?: string[];
  code?: string | null;
  codeLabel?: string;
  /** Shown as a link; followed automatically after `redirectDelayMs` when that is given. */
  redirect?: string | null;
  redirectLabel?: string;
  redirectDelayMs?: number | null;
  navigate?: (url: string) => void;
  /** Further buttons, after the redirect link. */
  buttons?: { label: string; name: string; onClick: () => void }[];
  /** data-page of the page (default "message"). */
  kind?: string;
}

/** A page with a heading, some lines, an optional code and an optional (timed) redirect. */
export function messagePage(opts: MessageOptions): HTMLElement {
  const page = el('div', 'page');
  page.dataset.page = opts.kind ?? 'message';
  const h = el('h1', undefined, opts.title);
  h.tabIndex = -1;
  page.append(h);
  for (const line of opts.lines ?? []) page.append(el('p', undefined, line));
  if (opts.code) {
    const p = el('p', undefined, `${opts.codeLabel ?? 'Your completion code'}: `);
    const code = el('span', 'code', opts.code);
    code.dataset.completionCode = opts.code;
    p.append(code);
    page.append(p);
  }
  const href = safeHttpUrl(opts.redirect);
  const actions = el('p', 'actions');
  if (href) {
    const a = el('a', 'jspsych-btn', opts.redirectLabel ?? 'Continue');
    a.href = href;
    a.dataset.redirect = href;
    actions.append(a);
  }
  for (const b of opts.buttons ?? []) {
    const button = el('button', 'jspsych-btn', b.label);
    button.type = 'button';
    button.dataset.choiceName = b.name;
    button.addEventListener('click', b.onClick);
    actions.append(button);
  }
  if (actions.childElementCount) page.append(actions);
  if (href) {
    if (opts.redirectDelayMs !== null && opts.redirectDelayMs !== undefined) {
      const seconds = Math.round(opts.redirectDelayMs / 1000);
      page.append(el('p', 'muted', `You will be taken there automatically in ${seconds} second${seconds === 1 ? '' : 's'}.`));
      const go = opts.navigate ?? ((url: string) => location.assign(url));
      setTimeout(() => go(href), opts.redirectDelayMs);
    }
  }
  return page;
}

/** Replaces `root`'s content with `page` and moves focus to its heading (screen readers). */
export function show(root: HTMLElement, page: HTMLElement): void {
  root.replaceChildren(page);
  page.querySelector<HTMLElement>('h1')?.focus({ preventScroll: true });
}

/** The unobtrusive banner shown while answers cannot be sent. */
export class Banner {
  private readonly node: HTMLElement;

  constructor(doc: Document = document) {
    this.node = doc.getElementById('banner') ?? doc.body.appendChild(el('div'));
    this.node.id = 'banner';
    this.node.className = 'banner';
    this.node.setAttribute('role', 'status');
    this.node.setAttribute('aria-live', 'polite');
    this.node.hidden = true;
  }

  set(text: string | null): void {
    if (text === null) {
      this.node.hidden = true;
      this.node.textContent = '';
    } else {
      this.node.textContent = text;
      this.node.hidden = false;
    }
  }
}
