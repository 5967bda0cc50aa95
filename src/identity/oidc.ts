/**
 * SSO sessions: an OIDC ID or access token (JWT) given as the Basic password is verified against
 * the issuer's JWKS (signature, issuer, audience, algorithms, expiry, not-before), and its `sid`
 * (or `jti`) becomes a session that is listed and revocable like any token session.
 */
import { createHash } from 'node:crypto';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { OidcConfig } from '../config/schema.js';

/** A verified token: the account it names and the session it belongs to. */
export interface OidcIdentity {
  readonly account: string;
  /** Session id derived from issuer and session claim (16 hex, like token sessions). */
  readonly sessionId: string;
  /** Issued-at, seconds since the epoch (for the sign-out watermark). */
  readonly issuedAt: number;
  /** Expiry, seconds since the epoch. */
  readonly expiresAt: number;
  /** The client application, from `azp` or `client_id` when present. */
  readonly app: string;
}

/** Why a token was refused. */
export type OidcFailure = { readonly reason: 'auth_invalid' | 'session_expired'; readonly detail: string };

/** Claim values usable in an account name: no separators that could confuse Basic or globs. */
const CLAIM_VALUE = /^[A-Za-z0-9._@|-]{1,190}$/;

/** A JWT in compact form (three base64url parts). */
const COMPACT_JWT = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

/** True when a Basic password looks like a JWT rather than a session token. */
export function looksLikeJwt(password: string): boolean {
  return password.length < 16_384 && COMPACT_JWT.test(password);
}

/** The deterministic session id of an OIDC session: O(1) lookup, no per-token state. */
export function oidcSessionId(issuer: string, sessionClaim: string): string {
  return createHash('sha256').update(issuer).update('\0').update(sessionClaim).digest('hex').slice(0, 16);
}

/** Verifies OIDC tokens; the JWKS is fetched once and cached by jose (refetched on unknown kid). */
export class OidcVerifier {
  readonly #config: OidcConfig;
  readonly #keys: JWTVerifyGetKey;
  readonly #clockToleranceS: number;

  constructor(config: OidcConfig, options: { keys?: JWTVerifyGetKey; clockToleranceS?: number } = {}) {
    this.#config = config;
    this.#keys = options.keys ?? createRemoteJWKSet(new URL(config.jwksUrl), { cooldownDuration: 30_000, cacheMaxAge: 600_000, timeoutDuration: 5_000 });
    this.#clockToleranceS = options.clockToleranceS ?? 30;
  }

  /** Verifies a token; never throws. */
  async verify(token: string): Promise<OidcIdentity | OidcFailure> {
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#keys, {
        issuer: this.#config.issuer,
        audience: this.#config.audience,
        algorithms: [...this.#config.algorithms],
        clockTolerance: this.#clockToleranceS,
        requiredClaims: ['exp', 'iat'],
      }));
    } catch (err) {
      if (err instanceof errors.JWTExpired) return { reason: 'session_expired', detail: 'token expired' };
      const code = (err as { code?: string }).code ?? 'ERR_JWT_INVALID';
      return { reason: 'auth_invalid', detail: code };
    }
    const claim = payload[this.#config.accountClaim];
    if (typeof claim !== 'string' || !CLAIM_VALUE.test(claim)) return { reason: 'auth_invalid', detail: `claim ${this.#config.accountClaim} missing or unusable` };
    let session: string | undefined;
    for (const name of this.#config.sessionClaims) {
      const v = payload[name];
      if (typeof v === 'string' && v !== '') {
        session = v;
        break;
      }
    }
    if (session === undefined) return { reason: 'auth_invalid', detail: `no session claim (${this.#config.sessionClaims.join(', ')})` };
    const app = typeof payload['azp'] === 'string' ? payload['azp'] : typeof payload['client_id'] === 'string' ? payload['client_id'] : 'oidc';
    return {
      account: this.#config.accountPrefix + claim,
      sessionId: oidcSessionId(this.#config.issuer, session),
      issuedAt: payload.iat ?? 0,
      expiresAt: payload.exp ?? 0,
      app: app.slice(0, 64),
    };
  }
}
