/**
 * The admin API's wire contract: error codes with their status, request body schemas (strict:
 * an unknown key is an error, not ignored), and the checks on names that arrive in the path
 * or query. Every bad input becomes an ApiError naming the offending field.
 */
import { z } from 'zod';
import { ACCOUNT_NAME } from '../identity/authenticate.js';
import { isSessionId } from '../identity/tokens.js';

/** Every error the admin API answers with: code → status and default message. */
export const ADMIN_ERRORS = {
  bad_request: { status: 400, message: 'the request is not valid' },
  unauthorized: { status: 401, message: 'a valid admin token is required (Authorization: Bearer pca_...)' },
  forbidden: { status: 403, message: 'this admin token may not do that' },
  not_found: { status: 404, message: 'no such resource' },
  method_not_allowed: { status: 405, message: 'method not allowed on this resource' },
  conflict: { status: 409, message: 'the change conflicts with the current state' },
  payload_too_large: { status: 413, message: 'request body exceeds 64 KiB' },
  unsupported_media_type: { status: 415, message: 'request body must be application/json' },
  policy_invalid: { status: 422, message: 'the policy file is invalid; the current policy stays in force' },
  internal: { status: 500, message: 'internal error' },
  state_unavailable: { status: 503, message: 'the state store is unavailable; nothing was changed' },
} as const satisfies Record<string, { status: number; message: string }>;

/** An admin API error code. */
export type AdminErrorCode = keyof typeof ADMIN_ERRORS;

/** A request the API refuses; turned into `{error, message, field?, ...extra}` in one place. */
export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly code: AdminErrorCode;
  readonly status: number;
  /** The body field, path parameter or query parameter at fault. */
  readonly field: string | undefined;
  /** More body members (e.g. the policy issues of a failed reload). */
  readonly extra: Readonly<Record<string, unknown>>;

  constructor(code: AdminErrorCode, message?: string, options: { field?: string; extra?: Record<string, unknown> } = {}) {
    super(message ?? ADMIN_ERRORS[code].message);
    this.code = code;
    this.status = ADMIN_ERRORS[code].status;
    this.field = options.field;
    this.extra = options.extra ?? {};
  }
}

/** Longest OIDC account name (prefix plus claim value). */
export const MAX_OIDC_ACCOUNT = 200;
// An OIDC claim value (an email, "google-oauth2|123", a URL-ish sub) may carry ":" "@" "|".
const OIDC_CLAIM = /^[A-Za-z0-9._\-:@|]+$/;

/** Whether `account` is a valid account name: a token account, or `prefix` + an OIDC claim. */
export function isAccountName(account: string, oidcPrefix: string): boolean {
  if (ACCOUNT_NAME.test(account)) return true;
  return (
    oidcPrefix !== '' &&
    account.startsWith(oidcPrefix) &&
    account.length > oidcPrefix.length &&
    account.length <= MAX_OIDC_ACCOUNT &&
    OIDC_CLAIM.test(account.slice(oidcPrefix.length))
  );
}

/** The account, or a 400 naming `field`. */
export function checkAccount(account: string, oidcPrefix: string, field = 'account'): string {
  if (isAccountName(account, oidcPrefix)) return account;
  throw new ApiError(
    'bad_request',
    `account names are 1-64 characters of A-Za-z0-9._-, or "${oidcPrefix}" followed by an OIDC claim (up to ${MAX_OIDC_ACCOUNT} characters in all)`,
    { field },
  );
}

/** The session id, or a 400 naming `field`. */
export function checkSessionId(id: string, field = 'id'): string {
  if (isSessionId(id)) return id;
  throw new ApiError('bad_request', 'session ids are 16 lowercase hex characters', { field });
}

/** App names are shown in tables and logs: plain words. */
export const APP_NAME = /^[A-Za-z0-9._-]{1,64}$/;
const APP_MESSAGE = 'app is 1-64 characters of A-Za-z0-9._- (e.g. chat, codex-cli)';

/** The app filter of a listing, or a 400. */
export function checkApp(app: string): string {
  if (APP_NAME.test(app)) return app;
  throw new ApiError('bad_request', APP_MESSAGE, { field: 'app' });
}

/** A boolean query parameter: "true" or "false". */
export function checkBooleanParam(value: string, field: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new ApiError('bad_request', `${field} is "true" or "false"`, { field });
}

// Control characters would corrupt the CLI's table and log lines.
const PRINTABLE = /^[^\p{Cc}]*$/u;

/** `PUT …/lockdown`, `PUT …/developer-mode`, `PUT /v1/lockdown`. */
export const EnabledBody = z.strictObject({ enabled: z.boolean() });

/** `POST /v1/accounts/{a}/sessions`. `ttl` is a duration such as "12h" (checked by the route). */
export const CreateSessionBody = z.strictObject({
  app: z.string().regex(APP_NAME, APP_MESSAGE),
  label: z.string().max(200, 'label is at most 200 characters').regex(PRINTABLE, 'label may not contain control characters').optional(),
  ttl: z.string().max(32).optional(),
});

/** `POST /v1/policy/reload`: no members; an empty body is accepted as well. */
export const ReloadBody = z.strictObject({});

/** `POST /v1/explain`. Omitted lockdown/developerMode default to the account's current state. */
export const ExplainBody = z.strictObject({
  account: z.string(),
  method: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,31}$/, 'method is an HTTP method such as GET, or CONNECT')
    .transform((m) => m.toUpperCase()),
  url: z.string().min(1).max(8192),
  lockdown: z.boolean().optional(),
  developerMode: z.boolean().optional(),
  headers: z
    .record(z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$/, 'header names are HTTP tokens'), z.string().max(8192))
    .refine((h) => Object.keys(h).length <= 100, 'at most 100 headers')
    .optional(),
  body: z.boolean().optional(),
});

/** The field a zod issue is about: its path, or the first unknown key. */
function issueField(issue: z.core.$ZodIssue): string | undefined {
  if (issue.code === 'unrecognized_keys') {
    const prefix = issue.path.map(String).join('.');
    const key = issue.keys[0] ?? '';
    return prefix === '' ? key : `${prefix}.${key}`;
  }
  const path = issue.path.map(String).join('.');
  return path === '' ? undefined : path;
}

function issueMessage(issue: z.core.$ZodIssue): string {
  if (issue.code === 'unrecognized_keys') return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => `"${k}"`).join(', ')}`;
  return issue.message;
}

/** Validates a parsed body against a schema; the first problem becomes a 400 naming its field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError('bad_request', 'the body must be a JSON object');
  }
  const result = schema.safeParse(body);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (issue === undefined) throw new ApiError('bad_request');
  const field = issueField(issue);
  throw new ApiError('bad_request', field === undefined ? issueMessage(issue) : `${field}: ${issueMessage(issue)}`, field === undefined ? {} : { field });
}
