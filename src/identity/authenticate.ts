/**
 * Proxy-Authorization → session. `Basic base64(account:token)`; the username must equal the
 * token's account. Reads only the in-memory store cache: no I/O on the request path.
 */
import { ConflictError, type SessionRecord, type StateStore } from '../state/types.js';
import { looksLikeJwt, type OidcIdentity, type OidcVerifier } from './oidc.js';
import { parseSessionToken, verifySecret } from './tokens.js';

/** Account names: 1–64 characters of A-Za-z0-9._- (OIDC accounts carry their own prefix). */
export const ACCOUNT_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/** The outcome of authenticating one request. */
export type AuthResult =
  | { readonly ok: true; readonly session: SessionRecord }
  | { readonly ok: false; readonly reason: 'auth_missing' | 'auth_invalid' | 'session_revoked' | 'session_expired' | 'state_unavailable' };

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

/** Options of the Authenticator. */
export interface AuthenticatorOptions {
  /** OIDC verification; absent: only session tokens authenticate. */
  readonly oidc?: OidcVerifier | null;
  readonly now?: () => number;
  /** Called once when an OIDC session is first recorded (a sign-in). */
  readonly onSignIn?: (session: SessionRecord) => void;
}

const JWT_CACHE_MAX = 10_000;

/**
 * Verifies credentials. Session tokens are checked against the store's cache synchronously
 * (no I/O); OIDC tokens need a signature check (and on first use a session record), so that
 * path answers with a promise. Verified JWTs are cached until they expire.
 */
export class Authenticator {
  readonly #store: StateStore;
  readonly #now: () => number;
  readonly #oidc: OidcVerifier | null;
  readonly #onSignIn: (session: SessionRecord) => void;
  readonly #jwtCache = new Map<string, OidcIdentity>();

  constructor(store: StateStore, options: AuthenticatorOptions = {}) {
    this.#store = store;
    this.#now = options.now ?? Date.now;
    this.#oidc = options.oidc ?? null;
    this.#onSignIn = options.onSignIn ?? (() => undefined);
  }

  /** Authenticates a Proxy-Authorization header value (undefined when absent). */
  authenticate(header: string | undefined): AuthResult | Promise<AuthResult> {
    if (header === undefined || header === '') return MISSING;
    const basic = parseBasic(header);
    if (basic === null) return INVALID;
    if (this.#oidc !== null && looksLikeJwt(basic.password)) return this.#authenticateJwt(basic.user, basic.password, this.#oidc);
    const parsed = parseSessionToken(basic.password);
    if (parsed === null) return INVALID;
    const session = this.#store.getSession(parsed.id);
    // Verify the secret before saying anything about the session's state, so a guessed id
    // learns nothing (revoked vs unknown).
    if (session === undefined || session.tokenHash === null || !verifySecret(parsed.secret, session.tokenHash)) return INVALID;
    if (session.account !== basic.user) return INVALID;
    return this.check(session);
  }

  async #authenticateJwt(user: string, jwt: string, oidc: OidcVerifier): Promise<AuthResult> {
    let identity = this.#jwtCache.get(jwt);
    if (identity !== undefined && identity.expiresAt * 1000 <= this.#now()) {
      this.#jwtCache.delete(jwt);
      identity = undefined;
    }
    if (identity === undefined) {
      const verified = await oidc.verify(jwt);
      if ('reason' in verified) return { ok: false, reason: verified.reason };
      identity = verified;
      if (this.#jwtCache.size >= JWT_CACHE_MAX) this.#jwtCache.clear();
      this.#jwtCache.set(jwt, identity);
    }
    if (identity.account !== user) return INVALID;
    // "Sign out everywhere" refuses every token issued before it, seen here before or not.
    const account = this.#store.getAccount(identity.account);
    if (account.signedOutAt !== null && identity.issuedAt * 1000 < Date.parse(account.signedOutAt) && account.signedOutExcept !== identity.sessionId) {
      return { ok: false, reason: 'session_revoked' };
    }
    let session = this.#store.getSession(identity.sessionId);
    if (session === undefined) {
      const created: SessionRecord = {
        id: identity.sessionId,
        account: identity.account,
        app: identity.app,
        label: null,
        authMethod: 'oidc',
        tokenHash: null,
        createdAt: new Date(this.#now()).toISOString(),
        createdBy: 'oidc',
        expiresAt: null,
        lastSeenAt: null,
        clientIp: null,
        userAgent: null,
        revokedAt: null,
        revokedBy: null,
      };
      try {
        await this.#store.createSession(created);
        session = created;
        this.#onSignIn(created);
      } catch (err) {
        // Another request (or replica) recorded it first; anything else fails closed.
        session = this.#store.getSession(identity.sessionId);
        if (!(err instanceof ConflictError) || session === undefined) return { ok: false, reason: 'state_unavailable' };
      }
    }
    if (session.account !== identity.account || session.authMethod !== 'oidc') return INVALID;
    return this.check(session);
  }

  /** Revocation and expiry checks for an already-identified session (token or OIDC). */
  check(session: SessionRecord): AuthResult {
    if (session.revokedAt !== null) return { ok: false, reason: 'session_revoked' };
    if (session.expiresAt !== null && Date.parse(session.expiresAt) <= this.#now()) return { ok: false, reason: 'session_expired' };
    return { ok: true, session };
  }
}
