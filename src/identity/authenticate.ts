/**
 * Proxy-Authorization → session. `Basic base64(account:token)`; the username must equal the
 * token's account. Reads only the in-memory store cache: no I/O on the request path.
 */
import type { SessionRecord, StateStore } from '../state/types.js';
import { parseSessionToken, verifySecret } from './tokens.js';

/** Account names: 1–64 characters of A-Za-z0-9._- (OIDC accounts carry their own prefix). */
export const ACCOUNT_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** The outcome of authenticating one request. */
export type AuthResult =
  | { readonly ok: true; readonly session: SessionRecord }
  | { readonly ok: false; readonly reason: 'auth_missing' | 'auth_invalid' | 'session_revoked' | 'session_expired' };

const MISSING: AuthResult = { ok: false, reason: 'auth_missing' };
const INVALID: AuthResult = { ok: false, reason: 'auth_invalid' };

/** Splits a Basic credential; null when it is not well-formed Basic. */
export function parseBasic(header: string): { user: string; password: string } | null {
  const space = header.indexOf(' ');
  if (space < 0 || header.slice(0, space).toLowerCase() !== 'basic') return null;
  const encoded = header.slice(space + 1).trim();
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(encoded)) return null;
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  // Split at the LAST colon: tokens and JWTs contain none, while OIDC account names do (oidc:alice).
  const colon = decoded.lastIndexOf(':');
  if (colon < 0) return null;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** Verifies credentials against the session cache. */
export class Authenticator {
  readonly #store: StateStore;
  readonly #now: () => number;

  constructor(store: StateStore, now: () => number = Date.now) {
    this.#store = store;
    this.#now = now;
  }

  /** Authenticates a Proxy-Authorization header value (undefined when absent). */
  authenticate(header: string | undefined): AuthResult {
    if (header === undefined || header === '') return MISSING;
    const basic = parseBasic(header);
    if (basic === null) return INVALID;
    const parsed = parseSessionToken(basic.password);
    if (parsed === null) return INVALID;
    const session = this.#store.getSession(parsed.id);
    // Verify the secret before saying anything about the session's state, so a guessed id
    // learns nothing (revoked vs unknown).
    if (session === undefined || session.tokenHash === null || !verifySecret(parsed.secret, session.tokenHash)) return INVALID;
    if (session.account !== basic.user) return INVALID;
    return this.check(session);
  }

  /** Revocation and expiry checks for an already-identified session (token or OIDC). */
  check(session: SessionRecord): AuthResult {
    if (session.revokedAt !== null) return { ok: false, reason: 'session_revoked' };
    if (session.expiresAt !== null && Date.parse(session.expiresAt) <= this.#now()) return { ok: false, reason: 'session_expired' };
    return { ok: true, session };
  }
}
