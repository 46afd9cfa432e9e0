// What kind of device the page runs on, from the user agent and the input hardware. Free of
// jsPsych and the DOM (the caller passes what it reads), so node tests can check it.

export interface DeviceInput {
  userAgent: string;
  /** navigator.userAgentData?.mobile (Chromium browsers), when present. */
  uaMobile?: boolean;
  /** navigator.platform: iPadOS reports "MacIntel" with a desktop user agent. */
  platform?: string;
  maxTouchPoints: number;
  /** matchMedia('(any-pointer: fine)').matches: a mouse or trackpad is attached. */
  anyFinePointer: boolean;
}

export interface Device {
  /** A phone or tablet (or any touch-only device). */
  mobile: boolean;
  /** Why `mobile` is true ('' when it is not). */
  reason: string;
  browser: string;
  os: string;
}

const PHONE_OR_TABLET = /Mobi|Android|iPhone|iPad|iPod|Tablet|Kindle|Silk|PlayBook|BB10|Opera Mini|IEMobile|webOS/i;

export function detectDevice(d: DeviceInput): Device {
  const ua = d.userAgent;
  let reason = '';
  if (d.uaMobile) reason = 'user-agent data: mobile';
  else if (PHONE_OR_TABLET.test(ua) && !/CrOS/.test(ua)) reason = `user agent: ${PHONE_OR_TABLET.exec(ua)![0]}`;
  else if (d.platform === 'MacIntel' && d.maxTouchPoints > 1) reason = 'iPad with a desktop user agent';
  else if (d.maxTouchPoints > 0 && !d.anyFinePointer) reason = 'touch screen without mouse or trackpad';
  return { mobile: reason !== '', reason, browser: browserOf(ua), os: osOf(ua) };
}

function browserOf(ua: string): string {
  const rules: [RegExp, string][] = [
    [/Edg(?:e|A|iOS)?\/([\d.]+)/, 'edge'],
    [/OPR\/([\d.]+)/, 'opera'],
    [/Firefox\/([\d.]+)/, 'firefox'],
    [/FxiOS\/([\d.]+)/, 'firefox'],
    [/(?:Headless)?Chrome\/([\d.]+)/, 'chrome'],
    [/CriOS\/([\d.]+)/, 'chrome'],
    [/Version\/([\d.]+).*Safari\//, 'safari'],
  ];
  for (const [re, name] of rules) {
    const m = re.exec(ua);
    if (m) return `${/Headless/.test(ua) && name === 'chrome' ? 'chrome-headless' : name} ${m[1].split('.')[0]}`;
  }
  return 'other';
}

function osOf(ua: string): string {
  if (/Windows/.test(ua)) return 'windows';
  if (/iPhone|iPad|iPod/.test(ua)) return 'ios';
  if (/Mac OS X/.test(ua)) return 'macos';
  if (/Android/.test(ua)) return 'android';
  if (/CrOS/.test(ua)) return 'chromeos';
  if (/Linux/.test(ua)) return 'linux';
  return 'other';
}
