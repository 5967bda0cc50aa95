/**
 * Session tokens: `pcs_<id>_<secret>`. The id (16 hex chars, 64 random bits) finds the session
 * in O(1); the secret (43 base64url chars, 256 random bits) proves possession and is stored
 * only as its sha256. Neither tokens nor secrets belong in logs or error messages.
 */
import { hash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Prefix that marks a Portcullis session token (and lets secret scanners recognize leaks). */
export const TOKEN_PREFIX = 'pcs_';

const SESSION_ID = /^[0-9a-f]{16}$/;
// Fixed lengths make the split unambiguous even though base64url secrets may contain "_".
const TOKEN = /^pcs_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const TOKEN_LENGTH = TOKEN_PREFIX.length + 16 + 1 + 43;

/** A new random session id (16 lowercase hex chars), for token and OIDC sessions alike. */
export function newSessionId(): string {
  return randomBytes(8).toString('hex');
}

/** Whether `id` has the session id format (cheap pre-check before a lookup). */
export function isSessionId(id: string): boolean {
  return SESSION_ID.test(id);
}

/** sha256 of a token's secret part, lowercase hex: what the store keeps instead of the token. */
export function hashSecret(secret: string): string {
  return hash('sha256', secret, 'hex');
}

/** A fresh session id and token; the token is shown once and only `secretHash` is stored. */
export function mintSessionToken(): { id: string; token: string; secretHash: string } {
  const id = newSessionId();
  const secret = randomBytes(32).toString('base64url');
  return { id, token: `${TOKEN_PREFIX}${id}_${secret}`, secretHash: hashSecret(secret) };
}

/** Splits a token into id and secret; null for anything not exactly in the token format. */
export function parseSessionToken(token: string): { id: string; secret: string } | null {
  if (typeof token !== 'string' || token.length !== TOKEN_LENGTH) return null;
  const m = TOKEN.exec(token);
  if (m === null) return null;
  const [, id, secret] = m;
  if (id === undefined || secret === undefined) return null;
  return { id, secret };
}

/**
 * Constant-time check of a secret against a stored hash (64 hex digits). The comparison runs
 * over two 32-byte digests whatever the secret, so its time says nothing about either side; a
 * stored value that is not a sha256 digest matches nothing.
 */
export function verifySecret(secret: string, expectedHash: string): boolean {
  const expected = Buffer.from(expectedHash, 'hex');
  const actual = hash('sha256', secret, 'buffer');
  if (expected.length !== actual.length || expectedHash.length !== 2 * actual.length) return false;
  return timingSafeEqual(actual, expected);
}
