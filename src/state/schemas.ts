/**
 * The stored shape of accounts, sessions and the global switch, checked by every backend before
 * a record reaches a cache that decides on it (a corrupt file or a foreign Redis key).
 */
import { z } from 'zod';

/** An ISO-8601 time. */
export const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'expected an ISO-8601 time');
/** Optional text. */
export const text = z.string().nullable();

/** A stored SessionRecord. */
export const SessionSchema = z.object({
  id: z.string().min(1),
  account: z.string().min(1),
  app: z.string(),
  label: text,
  authMethod: z.enum(['token', 'oidc']),
  tokenHash: text,
  createdAt: isoTime,
  createdBy: text,
  expiresAt: isoTime.nullable(),
  lastSeenAt: isoTime.nullable(),
  clientIp: text,
  userAgent: text,
  revokedAt: isoTime.nullable(),
  revokedBy: text,
});

/** A stored AccountState; the sign-out fields arrived later, so older records may lack them. */
export const AccountSchema = z.object({
  account: z.string().min(1),
  lockdown: z.boolean(),
  developerMode: z.boolean(),
  lockdownChangedAt: isoTime.nullable(),
  lockdownChangedBy: text,
  developerModeChangedAt: isoTime.nullable(),
  developerModeChangedBy: text,
  signedOutAt: isoTime.nullable().default(null),
  signedOutExcept: text.default(null),
});

/** The stored GlobalState. */
export const GlobalSchema = z.object({ lockdown: z.boolean(), changedAt: isoTime.nullable(), changedBy: text });
