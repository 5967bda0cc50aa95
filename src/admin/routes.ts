/**
 * The admin API's routes (SPEC §6 table): what each needs (role, body, query) and what it does.
 * Handlers see validated input and a principal, and return a reply with the facts worth
 * auditing; authentication, body reading, error mapping and the log line live in server.ts.
 */
import { parseDuration } from '../config/schema.js';
import { mintSessionToken } from '../identity/tokens.js';
import { CanonicalError } from '../net/canonical.js';
import { explain, explanationJson } from '../policy/explain.js';
import { formatIssue, loadPolicyFile } from '../policy/load.js';
import type { PolicyReloader, ReloadResult } from '../policy/reloader.js';
import { isLiveSession } from '../state/memory-cache.js';
import { ConflictError } from '../state/types.js';
import type { AccountState, SessionRecord, StateStore } from '../state/types.js';
import {
  ApiError,
  checkAccount,
  checkApp,
  checkBooleanParam,
  checkSessionId,
  CreateSessionBody,
  EnabledBody,
  ExplainBody,
  parseBody,
  ReloadBody,
} from './schemas.js';
import type { AdminDeps } from './server.js';
import type { AdminPrincipal, AdminRole } from './tokens.js';
import type { SessionInsight } from '../identity/insights.js';

/** Who may call a route: nobody needs a token, /metrics (token when metricsAuth), or a role. */
export type RouteAuth = 'none' | 'metrics' | AdminRole;

/** Facts a handler adds to the route's audit line (never a token). */
export type AuditFields = Readonly<Record<string, unknown>> & { readonly result?: string };

/** A handler's answer: JSON body, or raw text (metrics). */
export type Reply =
  | { readonly status: number; readonly body: unknown; readonly audit?: AuditFields }
  | { readonly status: number; readonly text: string; readonly contentType: string };

/** What a handler gets: validated path parameters, the raw query and the parsed body. */
export interface RouteContext {
  readonly deps: ResolvedDeps;
  /** Null only on routes whose auth is "none" (or "metrics" without metricsAuth). */
  readonly principal: AdminPrincipal | null;
  readonly params: Readonly<Record<string, string>>;
  readonly query: URLSearchParams;
  /** The parsed JSON body; `{}` when the request had none. */
  readonly body: unknown;
  readonly now: Date;
}

/** One route of the table. */
export interface Route {
  readonly method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  /** Path with `:account` / `:id` parameters. */
  readonly path: string;
  readonly auth: RouteAuth;
  /** Name of the action in audit lines. */
  readonly action: string;
  /** Changes state: every call is logged, whatever its outcome. */
  readonly mutates: boolean;
  /** Acts on every account at once: tokens limited to some accounts may not call it. */
  readonly global?: boolean;
  /** Reads a JSON body. */
  readonly body?: boolean;
  /** Allowed query parameters; any other is a 400 (a typo in `except` must not revoke everything). */
  readonly query?: readonly string[];
  handle(ctx: RouteContext): Reply | Promise<Reply>;
}

/** AdminDeps with defaults applied, plus the policy facts the server tracks. */
export interface ResolvedDeps extends Omit<AdminDeps, 'clock' | 'oidcAccountPrefix' | 'sessionAuditWindowMs'> {
  readonly clock: () => Date;
  readonly oidcAccountPrefix: string;
  readonly sessionAuditWindowMs: number | null;
  readonly policyInfo: PolicyInfo;
}

/** Tracks what GET /v1/policy reports beyond the compiled policy: load time and warnings. */
export class PolicyInfo {
  #loadedAt: Date;
  readonly #warnings = new Map<string, readonly string[]>();
  readonly #reloader: PolicyReloader;
  readonly #clock: () => Date;
  readonly #onReload = (r: ReloadResult): void => {
    if (r.result === 'success') this.#remember(r.hash, r.warnings.map(formatIssue));
  };
  readonly #onChange = (): void => {
    this.#loadedAt = this.#clock();
  };

  /** Starts tracking `reloader`; the policy in force counts as loaded now. */
  constructor(reloader: PolicyReloader, clock: () => Date) {
    this.#reloader = reloader;
    this.#clock = clock;
    this.#loadedAt = clock();
    reloader.on('reload', this.#onReload);
    reloader.on('change', this.#onChange);
  }

  /** When the policy in force was swapped in (or tracking began). */
  get loadedAt(): Date {
    return this.#loadedAt;
  }

  /**
   * Warnings of the policy in force, formatted `file:line:col: …`. The compiled policy does not
   * keep them, so for the policy loaded before tracking began the file is read once and used
   * only if its hash still matches; null when that cannot be known.
   */
  async warnings(): Promise<readonly string[] | null> {
    const { hash, file } = this.#reloader.current;
    const known = this.#warnings.get(hash);
    if (known !== undefined) return known;
    try {
      const loaded = await loadPolicyFile(file);
      if (loaded.hash !== hash) return null;
      return this.#remember(hash, loaded.warnings.map(formatIssue));
    } catch {
      return null;
    }
  }

  #remember(hash: string, warnings: readonly string[]): readonly string[] {
    // Keeps the map from growing across many reloads; only the current hash matters.
    if (this.#warnings.size > 8) this.#warnings.clear();
    this.#warnings.set(hash, warnings);
    return warnings;
  }

  /** Stops listening to the reloader. Idempotent. */
  close(): void {
    this.#reloader.off('reload', this.#onReload);
    this.#reloader.off('change', this.#onChange);
  }
}

/** Whether a session is usable now, or how it ended. */
export type SessionStatus = 'active' | 'revoked' | 'expired';

/** A session's status at `now`. */
export function sessionStatus(s: SessionRecord, now: Date): SessionStatus {
  if (s.revokedAt !== null) return 'revoked';
  return isLiveSession(s, now) ? 'active' : 'expired';
}

/** A session as the API shows it: everything but the token hash, plus its status. */
export function sessionView(s: SessionRecord, now: Date, insight?: SessionInsight): Record<string, unknown> {
  // Listed field by field so that a new secret-bearing record field is never shown by accident.
  return {
    id: s.id,
    account: s.account,
    app: s.app,
    label: s.label,
    authMethod: s.authMethod,
    status: sessionStatus(s, now),
    createdAt: s.createdAt,
    createdBy: s.createdBy,
    expiresAt: s.expiresAt,
    lastSeenAt: s.lastSeenAt,
    clientIp: s.clientIp,
    userAgent: s.userAgent,
    revokedAt: s.revokedAt,
    revokedBy: s.revokedBy,
    ...(insight ? { device: insight.device, location: insight.location, flags: insight.flags } : {}),
  };
}

function accountView(store: StateStore, account: string, now: Date): Record<string, unknown> {
  const a: AccountState = store.getAccount(account);
  const global = store.getGlobal();
  return {
    account,
    lockdown: a.lockdown,
    developerMode: a.developerMode,
    lockdownChangedAt: a.lockdownChangedAt,
    lockdownChangedBy: a.lockdownChangedBy,
    developerModeChangedAt: a.developerModeChangedAt,
    developerModeChangedBy: a.developerModeChangedBy,
    global: { lockdown: global.lockdown, changedAt: global.changedAt, changedBy: global.changedBy },
    // The global switch wins over the account's own flags, developer mode included.
    effectiveLockdown: a.lockdown || global.lockdown,
    activeSessions: store.listSessions(account).filter((s) => isLiveSession(s, now)).length,
    signedOutAt: a.signedOutAt,
  };
}

function actor(ctx: RouteContext): string {
  // Routes that change state always require a token, so this never falls back in practice.
  return ctx.principal?.name ?? 'unknown';
}

function param(ctx: RouteContext, name: string): string {
  const value = ctx.params[name];
  if (value === undefined) throw new Error(`route has no :${name} parameter`);
  return value;
}

/** A conflict from the store, with the message the API promises; other errors pass through. */
function conflictAs(message: string): (err: unknown) => never {
  return (err) => {
    if (err instanceof ConflictError) throw new ApiError('conflict', message);
    throw err;
  };
}

async function setAccountFlag(ctx: RouteContext, flag: 'lockdown' | 'developerMode'): Promise<Reply> {
  const { enabled } = parseBody(EnabledBody, ctx.body);
  const account = param(ctx, 'account');
  const { store } = ctx.deps;
  const before = store.getAccount(account)[flag];
  if (flag === 'lockdown') {
    await store.setLockdown(account, enabled, actor(ctx)).catch(conflictAs('developer mode is on for this account: turn it off first'));
  } else {
    await store.setDeveloperMode(account, enabled, actor(ctx)).catch(conflictAs('lockdown is on for this account: turn it off first'));
  }
  const changed = before !== enabled;
  return { status: 200, body: { ...accountView(store, account, ctx.now), changed }, audit: { enabled, result: changed ? 'changed' : 'unchanged' } };
}

function sessionTtl(ctx: RouteContext, ttl: string | undefined): number | null {
  const limit = ctx.deps.sessionTtlMs;
  if (ttl === undefined) return limit;
  const ms = parseDuration(ttl);
  if (ms === null || ms < 1000) throw new ApiError('bad_request', 'ttl is a duration of at least 1s, such as 90s, 30m, 12h or 7d', { field: 'ttl' });
  // The server's TTL is the operator's ceiling: an API caller may shorten a session, not extend it.
  if (limit !== null && ms > limit) throw new ApiError('bad_request', `ttl may not exceed the server's session TTL (${limit / 1000}s)`, { field: 'ttl' });
  return ms;
}

async function createSession(ctx: RouteContext): Promise<Reply> {
  const body = parseBody(CreateSessionBody, ctx.body);
  const account = param(ctx, 'account');
  const prefix = ctx.deps.oidcAccountPrefix;
  // OIDC accounts are the identity provider's: a token session would let a token claim one.
  if (prefix !== '' && account.startsWith(prefix)) {
    throw new ApiError('bad_request', `"${prefix}" accounts get their sessions by signing in with the identity provider`, { field: 'account' });
  }
  const ttlMs = sessionTtl(ctx, body.ttl);
  const { id, token, secretHash } = mintSessionToken();
  const record: SessionRecord = {
    id,
    account,
    app: body.app,
    label: body.label ?? null,
    authMethod: 'token',
    tokenHash: secretHash,
    createdAt: ctx.now.toISOString(),
    createdBy: actor(ctx),
    expiresAt: ttlMs === null ? null : new Date(ctx.now.getTime() + ttlMs).toISOString(),
    lastSeenAt: null,
    clientIp: null,
    userAgent: null,
    revokedAt: null,
    revokedBy: null,
  };
  await ctx.deps.store.createSession(record);
  return { status: 201, body: { session: sessionView(record, ctx.now), token }, audit: { sessionId: id, app: body.app, result: 'created' } };
}

function listSessions(ctx: RouteContext): Reply {
  const account = param(ctx, 'account');
  const appParam = ctx.query.get('app');
  const app = appParam === null ? null : checkApp(appParam);
  const allParam = ctx.query.get('all');
  const all = allParam === null ? false : checkBooleanParam(allParam, 'all');
  const window = ctx.deps.sessionAuditWindowMs;
  const cutoff = window === null ? -Infinity : ctx.now.getTime() - window;
  const every = ctx.deps.store.listSessions(account);
  // Flags compare each session with the account's earlier ones, so annotate before filtering.
  const insights = ctx.deps.insights?.annotate(every);
  const sessions = every
    .filter((s) => app === null || s.app === app)
    .filter((s) => all || isLiveSession(s, ctx.now) || endedAt(s) >= cutoff)
    .map((s) => sessionView(s, ctx.now, insights?.get(s.id)));
  return { status: 200, body: { account, sessions } };
}

function endedAt(s: SessionRecord): number {
  return Date.parse(s.revokedAt ?? s.expiresAt ?? s.createdAt);
}

async function revokeSession(ctx: RouteContext): Promise<Reply> {
  const account = param(ctx, 'account');
  const id = param(ctx, 'id');
  const { store, metrics } = ctx.deps;
  const wasRevoked = store.getSession(id)?.revokedAt != null;
  const session = await store.revokeSession(account, id, actor(ctx));
  if (session === null) throw new ApiError('not_found', `no session ${id} for this account`, { field: 'id' });
  const changed = !wasRevoked;
  if (changed) metrics.onSessionRevoked?.('one', 1);
  return { status: 200, body: { session: sessionView(session, ctx.now), changed }, audit: { result: changed ? 'revoked' : 'unchanged' } };
}

async function revokeAllSessions(ctx: RouteContext): Promise<Reply> {
  const account = param(ctx, 'account');
  const { store, metrics } = ctx.deps;
  const exceptParam = ctx.query.get('except');
  const except = exceptParam === null ? undefined : checkSessionId(exceptParam, 'except');
  // A mistyped id would silently revoke the caller's own session along with the rest.
  if (except !== undefined && store.getSession(except)?.account !== account) {
    throw new ApiError('bad_request', `no session ${except} for this account`, { field: 'except' });
  }
  const revoked = await store.revokeAllSessions(account, actor(ctx), except);
  if (revoked.length > 0) metrics.onSessionRevoked?.('all', revoked.length);
  const ids = revoked.map((s) => s.id);
  return {
    status: 200,
    body: { account, revoked: ids.length, ids, except: except ?? null },
    audit: { result: 'revoked', count: ids.length, sessionIds: ids, except: except ?? null },
  };
}

async function setGlobalLockdown(ctx: RouteContext): Promise<Reply> {
  const { enabled } = parseBody(EnabledBody, ctx.body);
  const { store } = ctx.deps;
  const before = store.getGlobal().lockdown;
  const g = await store.setGlobalLockdown(enabled, actor(ctx));
  const changed = before !== enabled;
  return {
    status: 200,
    body: { lockdown: g.lockdown, changedAt: g.changedAt, changedBy: g.changedBy, changed },
    audit: { enabled, result: changed ? 'changed' : 'unchanged' },
  };
}

async function getPolicy(ctx: RouteContext): Promise<Reply> {
  const p = ctx.deps.policy.current;
  return {
    status: 200,
    body: {
      hash: p.hash,
      file: p.file,
      loadedAt: ctx.deps.policyInfo.loadedAt.toISOString(),
      counts: {
        destinations: p.destinations.length,
        accountRules: p.accounts.length,
        denyHosts: p.denyExact.size + p.denyWildcard.size,
        tests: p.policy.tests.length,
      },
      warnings: await ctx.deps.policyInfo.warnings(),
    },
  };
}

async function reloadPolicy(ctx: RouteContext): Promise<Reply> {
  parseBody(ReloadBody, ctx.body);
  const previousHash = ctx.deps.policy.current.hash;
  const r = await ctx.deps.policy.reload();
  ctx.deps.metrics.onPolicyReload?.(r.result);
  if (r.result === 'failure') {
    const issues = r.issues.map(formatIssue);
    throw new ApiError('policy_invalid', undefined, {
      extra: { result: 'failure', issues: issues.length > 0 ? issues : [r.error], hash: ctx.deps.policy.current.hash },
    });
  }
  const warnings = r.result === 'success' ? r.warnings.map(formatIssue) : ((await ctx.deps.policyInfo.warnings()) ?? []);
  return { status: 200, body: { result: r.result, hash: r.hash, previousHash, warnings }, audit: { result: r.result, hash: r.hash } };
}

function explainRequest(ctx: RouteContext): Reply {
  const b = parseBody(ExplainBody, ctx.body);
  const account = checkAccount(b.account, ctx.deps.oidcAccountPrefix);
  if (ctx.principal !== null && !ctx.principal.canAccess(account)) throw new ApiError('forbidden', 'this admin token may not see this account', { field: 'account' });
  const { store } = ctx.deps;
  const state = store.getAccount(account);
  // Unless asked otherwise, explain the account as it stands, the global switch included.
  const lockdown = b.lockdown ?? (state.lockdown || store.getGlobal().lockdown);
  const developerMode = b.developerMode ?? state.developerMode;
  const policy = ctx.deps.policy.current;
  const used = { account, lockdown, developerMode, policyHash: policy.hash };
  try {
    const result = explain({ account, method: b.method, url: b.url, lockdown, developerMode, headers: b.headers ?? {}, body: b.body ?? false }, policy);
    return { status: 200, body: { ...explanationJson(result, policy.hash), ...used } };
  } catch (err) {
    // The proxy would refuse such a request as bad_request; say so rather than fail the call.
    if (!(err instanceof CanonicalError)) throw err;
    return { status: 200, body: { decision: 'deny', reason: 'bad_request', status: 400, error: err.detail, ...used } };
  }
}

/** The route table, in SPEC §6 order. */
export const ROUTES: readonly Route[] = [
  {
    method: 'GET',
    path: '/healthz',
    auth: 'none',
    action: 'healthz',
    mutates: false,
    handle: () => ({ status: 200, body: { status: 'ok' } }),
  },
  {
    method: 'GET',
    path: '/readyz',
    auth: 'none',
    action: 'readyz',
    mutates: false,
    handle: (ctx) => {
      const r = ctx.deps.ready();
      return { status: r.ready ? 200 : 503, body: { status: r.ready ? 'ready' : 'not_ready', checks: r.checks } };
    },
  },
  {
    method: 'GET',
    path: '/metrics',
    auth: 'metrics',
    action: 'metrics',
    mutates: false,
    handle: async (ctx) => ({ status: 200, text: await ctx.deps.metrics.render(), contentType: ctx.deps.metrics.contentType }),
  },
  {
    method: 'GET',
    path: '/v1/accounts/:account',
    auth: 'read',
    action: 'account.get',
    mutates: false,
    handle: (ctx) => ({ status: 200, body: accountView(ctx.deps.store, param(ctx, 'account'), ctx.now) }),
  },
  // Operators may pull the incident switch (speed matters more than rank), but only with a
  // token that covers every account, since the switch does.
  { method: 'PUT', path: '/v1/lockdown', auth: 'operator', action: 'lockdown.global', mutates: true, global: true, body: true, handle: setGlobalLockdown },
  {
    method: 'PUT',
    path: '/v1/accounts/:account/lockdown',
    auth: 'operator',
    action: 'lockdown.set',
    mutates: true,
    body: true,
    handle: (ctx) => setAccountFlag(ctx, 'lockdown'),
  },
  {
    method: 'PUT',
    path: '/v1/accounts/:account/developer-mode',
    auth: 'operator',
    action: 'developer-mode.set',
    mutates: true,
    body: true,
    handle: (ctx) => setAccountFlag(ctx, 'developerMode'),
  },
  { method: 'POST', path: '/v1/accounts/:account/sessions', auth: 'operator', action: 'session.create', mutates: true, body: true, handle: createSession },
  { method: 'GET', path: '/v1/accounts/:account/sessions', auth: 'read', action: 'session.list', mutates: false, query: ['app', 'all'], handle: listSessions },
  { method: 'DELETE', path: '/v1/accounts/:account/sessions/:id', auth: 'operator', action: 'session.revoke', mutates: true, handle: revokeSession },
  {
    method: 'DELETE',
    path: '/v1/accounts/:account/sessions',
    auth: 'operator',
    action: 'session.revoke-all',
    mutates: true,
    query: ['except'],
    handle: revokeAllSessions,
  },
  { method: 'GET', path: '/v1/policy', auth: 'read', action: 'policy.get', mutates: false, handle: getPolicy },
  { method: 'POST', path: '/v1/policy/reload', auth: 'admin', action: 'policy.reload', mutates: true, global: true, body: true, handle: reloadPolicy },
  // Read-only: explains, sends nothing; the body's account is checked against the token's glob.
  { method: 'POST', path: '/v1/explain', auth: 'read', action: 'explain', mutates: false, body: true, handle: explainRequest },
];

/** Validates a path parameter by name: `account` and `id` are the only ones. */
export function checkParam(name: string, value: string, oidcPrefix: string): string {
  if (name === 'account') return checkAccount(value, oidcPrefix);
  if (name === 'id') return checkSessionId(value);
  throw new Error(`unknown route parameter :${name}`);
}
