// Full screen: entered from a button (browsers allow it only in response to a click or key), and
// once entered, kept — if the participant leaves it (Esc, switching windows), a slim bar at the top
// offers to return with one click, without interrupting the trial. Exits and entries are logged as
// events by watchWindow (events.ts).

export const fullscreenSupported = (): boolean => typeof document !== 'undefined' && document.fullscreenEnabled === true && !!document.documentElement.requestFullscreen;

/** Requests full screen; never throws (unsupported, refused, or not allowed without a click). */
export function enterFullscreen(): void {
  if (!fullscreenSupported() || document.fullscreenElement) return;
  try {
    document.documentElement.requestFullscreen({ navigationUI: 'hide' }).catch(() => {});
  } catch {
    // Old browsers throw instead of rejecting.
  }
}

export class FullscreenKeeper {
  private active = false;
  private readonly bar: HTMLElement;

  constructor(private readonly doc: Document = document) {
    this.bar = doc.createElement('div');
    this.bar.className = 'fs-bar';
    this.bar.setAttribute('role', 'region');
    this.bar.setAttribute('aria-label', 'Full screen');
    this.bar.hidden = true;
    const text = doc.createElement('span');
    text.textContent = 'Full screen is off.';
    const button = doc.createElement('button');
    button.type = 'button';
    button.className = 'fs-bar-btn';
    button.dataset.choiceName = 'refullscreen';
    button.textContent = 'Return to full screen';
    button.addEventListener('click', () => enterFullscreen());
    this.bar.append(text, button);
    doc.body.append(this.bar);
    doc.addEventListener('fullscreenchange', () => this.update());
  }

  /** From now on, leaving full screen shows the bar (only where full screen works at all). */
  keep(): void {
    this.active = fullscreenSupported();
    this.update();
  }

  /** The study is over: no more bar. */
  release(): void {
    this.active = false;
    this.update();
  }

  private update(): void {
    this.bar.hidden = !(this.active && !this.doc.fullscreenElement);
  }
}
