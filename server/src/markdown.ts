// Study texts (consent, instructions, debrief) are Markdown written by the study's author. They are
// rendered with marked; raw HTML in them is shown as text, and links and images keep only safe
// URLs (http, https, mailto, or relative), so a study file cannot put script into the page.
import { Marked, type Tokens } from 'marked';

const entities: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };
export const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => entities[c]);

function safeUrl(href: string, image = false): string | null {
  const url = href.trim();
  // Control characters and whitespace inside a scheme are how "java\tscript:" slips through.
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url.replace(/[\u0000-\u0020\u007f]/g, ''));
  if (!scheme) return url; // relative
  if (image && /^data:image\/(png|jpeg|gif|webp);/i.test(url)) return url;
  return ['http', 'https', 'mailto'].includes(scheme[1].toLowerCase()) ? url : null;
}

const marked = new Marked({
  gfm: true,
  async: false,
  renderer: {
    html(token: Tokens.HTML | Tokens.Tag): string {
      const text = escapeHtml(token.text);
      return token.block ? `<p>${text.trim()}</p>\n` : text;
    },
    link(this: { parser: { parseInline(tokens: Tokens.Generic[]): string } }, token: Tokens.Link): string {
      const text = this.parser.parseInline(token.tokens);
      const href = safeUrl(token.href);
      if (href === null) return text;
      const title = token.title ? ` title="${escapeHtml(token.title)}"` : '';
      return `<a href="${escapeHtml(href)}"${title} rel="noopener noreferrer" target="_blank">${text}</a>`;
    },
    image(token: Tokens.Image): string {
      const href = safeUrl(token.href, true);
      if (href === null) return escapeHtml(token.text);
      const title = token.title ? ` title="${escapeHtml(token.title)}"` : '';
      return `<img src="${escapeHtml(href)}" alt="${escapeHtml(token.text)}"${title}>`;
    },
  },
});

export function renderMarkdown(markdown: string): string {
  return marked.parse(markdown, { async: false }) as string;
}
