// Who is taking part, from the page's query string. Free of jsPsych and the DOM, so that node
// tests can import it.
import type { CreateSessionRequest } from './api.ts';
import type { KeyValueStore } from './outbox.ts';

export interface Identity {
  study: string;
  request: CreateSessionRequest;
  /** A local key for this participant in this study (storage keys). */
  who: string;
  /** Simulation requested in the URL (honoured only for studies not in live mode). */
  simulate: 'data-only' | 'visual' | null;
}

const MAX_ID = 128;
/** A Prolific placeholder that was not filled in, e.g. {{%PROLIFIC_PID%}}. */
const PLACEHOLDER = /\{\{|%[A-Z_]+%/;

function param(params: URLSearchParams, name: string): string | null {
  const v = params.get(name)?.trim();
  return v && !PLACEHOLDER.test(v) ? v : null;
}

function randomId(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Where this browser keeps the resume secret of a participant's session (see rememberResume). */
export const resumeKey = (who: Pick<Identity, 'study' | 'who'>) => `legible:resume:${who.study}:${who.who}`;

/**
 * The resume secret stored for this participant, put into the request (true when there is one and
 * it differs from what the request carried: worth another try after a refusal).
 */
export function recallResume(who: Identity, storage: KeyValueStore): boolean {
  let secret: string | null = null;
  try {
    secret = storage.getItem(resumeKey(who));
  } catch {
    // Unreadable storage: no secret.
  }
  if (!secret || secret === who.request.resume) return false;
  who.request.resume = secret;
  return true;
}

/**
 * Keep the session's resume secret (CreateSessionResponse.resume_secret): the server resumes a
 * participant's session only for a request that carries it — or, on Prolific, the same SESSION_ID.
 * A reload, the tab closed and reopened, or another tab of this browser sends it.
 */
export function rememberResume(who: Identity, storage: KeyValueStore, secret: string): void {
  who.request.resume = secret;
  try {
    storage.setItem(resumeKey(who), secret);
  } catch {
    // Not stored: this page still has it; a reload will be refused unless the link carries Prolific's SESSION_ID.
  }
}

/**
 * The participant from the page's query string: PROLIFIC_PID (+ STUDY_ID, SESSION_ID), or
 * `participant`, or else a random id kept in storage so that a reload resumes; with the resume
 * secret this browser kept for that participant, or a new one it keeps from now on.
 */
export function identify(search: string, storage: KeyValueStore): Identity | { error: string } {
  const who = identifyFromLink(search, storage);
  if (!('error' in who) && !recallResume(who, storage)) {
    // None kept yet: choose one now and keep it before the first request, so that a retry whose
    // first response was lost (network, server restart) proves the same browser.
    rememberResume(who, storage, randomId());
  }
  return who;
}

function identifyFromLink(search: string, storage: KeyValueStore): Identity | { error: string } {
  const params = new URLSearchParams(search);
  const study = param(params, 'study');
  if (!study) return { error: 'The link to this study is missing its "study" part. Please use the exact link you were given.' };
  const sim = params.get('simulate');
  const simulate = sim === 'data-only' || sim === 'visual' ? sim : null;
  const pid = param(params, 'PROLIFIC_PID');
  const participant = param(params, 'participant');
  for (const [name, value] of [['study', study], ['PROLIFIC_PID', pid], ['participant', participant]] as const) {
    if (value && value.length > MAX_ID) return { error: `The link's "${name}" is too long. Please use the exact link you were given.` };
  }
  if (pid) {
    const request: CreateSessionRequest = { study, PROLIFIC_PID: pid };
    const studyId = param(params, 'STUDY_ID');
    const sessionId = param(params, 'SESSION_ID');
    if (studyId) request.STUDY_ID = studyId.slice(0, MAX_ID);
    if (sessionId) request.SESSION_ID = sessionId.slice(0, MAX_ID);
    return { study, request, who: `prolific:${pid}`, simulate };
  }
  if (participant) return { study, request: { study, participant }, who: `participant:${participant}`, simulate };
  const key = `legible:participant:${study}`;
  let id = storage.getItem(key);
  if (!id) {
    id = `anon-${randomId()}`;
    try {
      storage.setItem(key, id);
    } catch {
      // Without storage a reload starts a new session; nothing else to do.
    }
  }
  return { study, request: { study, participant: id }, who: `participant:${id}`, simulate };
}
