/**
 * The admin HTTP API (SPEC §6) on its own listener, TCP or a unix socket: node:http and the
 * route table in routes.ts. This file owns everything around a handler: route matching (404,
 * 405 with Allow), bearer authentication (401) and authorization by role and account glob (403),
 * JSON bodies (415, 413, 400), mapping errors to responses in one place, and one audit line per
 * change. Tokens and Authorization headers are never logged.
 */
import { chmod, lstat, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import type { PolicyReloader } from '../policy/reloader.js';
import { StoreUnavailableError } from '../state/types.js';
import type { StateStore } from '../state/types.js';
import { checkParam, PolicyInfo, ROUTES, type Reply, type ResolvedDeps, type Route } from './routes.js';
import type { SessionInsights } from '../identity/insights.js';
import { ApiError } from './schemas.js';
import { roleAllows, type AdminPrincipal, type AdminTokens } from './tokens.js';

/** The largest request body accepted, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** What the admin API needs; everything is injected so tests use real parts without globals. */
export interface AdminDeps {
  readonly store: StateStore;
  readonly policy: PolicyReloader;
  readonly tokens: AdminTokens;
  readonly logger: Logger;
  readonly metrics: {
    render(): Promise<string>;
    readonly contentType: string;
    /** Sessions revoked through the API (one, or all of an account), counted per session. */
    onSessionRevoked?(scope: 'one' | 'all', n: number): void;
    /** Reloads asked for through the API only (file-watch reloads are not seen here). */
    onPolicyReload?(result: string): void;
  };
  /** The /readyz body: ready flag and one line per check. */
  ready(): { ready: boolean; checks: Record<string, string> };
  /** Default lifetime of new sessions in milliseconds, and the most a caller may ask for; null = none. */
  readonly sessionTtlMs: number | null;
  /** When true, GET /metrics needs a token (any role). */
  readonly metricsAuth: boolean;
  /** How long ended sessions stay listed, in milliseconds; absent = as long as the store keeps them. */
  readonly sessionAuditWindowMs?: number;
  /** Prefix of OIDC account names (default "oidc:"): such accounts allow ":" "@" "|" and get no token sessions. */
  readonly oidcAccountPrefix?: string;
  /** Device, location and flags for session listings (absent: records only). */
  readonly insights?: SessionInsights;
  readonly clock?: () => Date;
}

/** A listening (or not yet listening) admin API. */
export interface AdminServer {
  readonly server: Server;
  /** Listens on TCP or a unix socket; resolves with "host:port" or the socket path. */
  listen(addr: { host: string; port: number } | { path: string }): Promise<string>;
  /** Stops listening and closes open connections. Idempotent. */
  close(): Promise<void>;
}

const JSON_HEADERS = {
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
} as const;

interface CompiledRoute {
  readonly route: Route;
  readonly segments: readonly string[];
}

const COMPILED: readonly CompiledRoute[] = ROUTES.map((route) => ({ route, segments: route.path.split('/').slice(1) }));

/** The route for a path and method, or what to answer when there is none. */
function matchRoute(
  segments: readonly string[],
  method: string,
): { route: Route; params: Record<string, string> } | { allow: string[] } | null {
  const allow: string[] = [];
  for (const c of COMPILED) {
    const params = matchSegments(c.segments, segments);
    if (params === null) continue;
    if (c.route.method === method) return { route: c.route, params };
    allow.push(c.route.method);
  }
  return allow.length > 0 ? { allow } : null;
}

function matchSegments(pattern: readonly string[], segments: readonly string[]): Record<string, string> | null {
  if (pattern.length !== segments.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!;
    const s = segments[i]!;
    if (p.startsWith(':')) params[p.slice(1)] = s;
    else if (p !== s) return null;
  }
  return params;
}

/** Path segments (percent-decoded) and query of a request target. */
function parseTarget(raw: string | undefined): { segments: string[]; query: URLSearchParams } {
  // Only origin-form: "//host/…" or absolute-form would otherwise be read as someone else's URL.
  if (raw === undefined || !raw.startsWith('/') || raw.startsWith('//')) throw new ApiError('not_found');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  try {
    return { segments: path.split('/').slice(1).map(decodeURIComponent), query: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
  } catch {
    throw new ApiError('bad_request', 'the path is not valid percent-encoding');
  }
}

function bearerOf(req: IncomingMessage): string | null {
  const header = req.headers.authorization;
  if (header === undefined) return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m?.[1] ?? null;
}

function isJson(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const [type, ...params] = contentType.split(';').map((p) => p.trim().toLowerCase());
  if (type !== 'application/json') return false;
  return params.every((p) => !p.startsWith('charset=') || p === 'charset=utf-8' || p === 'charset="utf-8"');
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * The raw body, at most MAX_BODY_BYTES. Reads with listeners rather than `for await`, whose early
 * exit would destroy the socket before the 413 could be sent.
 */
function readLimited(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolveBody, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) {
        chunks.push(chunk);
        return;
      }
      cleanup();
      req.pause();
      reject(new ApiError('payload_too_large'));
    };
    const onEnd = (): void => {
      cleanup();
      resolveBody(Buffer.concat(chunks));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

/** The request body, parsed; `{}` when there is none, so a missing body names its first missing field. */
async function readJsonBody(req: IncomingMessage): Promise<unknown> {
  if (!hasBody(req)) return {};
  if (!isJson(req.headers['content-type'])) throw new ApiError('unsupported_media_type');
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_BODY_BYTES) throw new ApiError('payload_too_large');
  const bytes = await readLimited(req);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ApiError('bad_request', 'the body is not valid UTF-8');
  }
  if (text.trim() === '') return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ApiError('bad_request', 'the body is not valid JSON');
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { ...JSON_HEADERS, 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function errorBody(err: ApiError): Record<string, unknown> {
  return { error: err.code, message: err.message, ...(err.field === undefined ? {} : { field: err.field }), ...err.extra };
}

/** Known failures keep their code; anything else is a 500 whose details stay in the log. */
function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof StoreUnavailableError) return new ApiError('state_unavailable');
  return new ApiError('internal');
}

/** One request, start to finish; the route (if any) and principal are kept for the audit line. */
class Exchange {
  route: Route | null = null;
  params: Record<string, string> = {};
  principal: AdminPrincipal | null = null;
  bodyAccount: string | null = null;
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly deps: ResolvedDeps;

  constructor(req: IncomingMessage, res: ServerResponse, deps: ResolvedDeps) {
    this.req = req;
    this.res = res;
    this.deps = deps;
  }

  async run(): Promise<void> {
    let reply: Reply;
    try {
      reply = await this.#dispatch();
    } catch (err) {
      this.#fail(err);
      return;
    }
    if ('text' in reply) {
      this.res.writeHead(reply.status, { 'content-type': reply.contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(reply.text) });
      this.res.end(reply.text);
      return;
    }
    sendJson(this.res, reply.status, reply.body);
    if (this.route?.mutates) this.#audit('info', reply.status, { result: 'ok', ...reply.audit });
  }

  async #dispatch(): Promise<Reply> {
    const { segments, query } = parseTarget(this.req.url);
    const match = matchRoute(segments, this.req.method ?? '');
    if (match === null) throw new ApiError('not_found');
    if ('allow' in match) {
      throw new ApiError('method_not_allowed', `${this.req.method ?? ''} is not allowed here; use ${match.allow.join(', ')}`, {
        extra: { allow: match.allow },
      });
    }
    const { route } = match;
    this.route = route;
    this.principal = this.#authenticate(route);
    for (const [name, value] of Object.entries(match.params)) {
      this.params[name] = checkParam(name, value, this.deps.oidcAccountPrefix);
    }
    const account = this.params['account'];
    if (account !== undefined && this.principal !== null && !this.principal.canAccess(account)) {
      throw new ApiError('forbidden', 'this admin token may not touch this account', { field: 'account' });
    }
    for (const key of query.keys()) {
      if (!route.query?.includes(key)) throw new ApiError('bad_request', `unknown query parameter "${key}"`, { field: key });
    }
    const body = route.body ? await readJsonBody(this.req) : {};
    // Explain names its account in the body; the audit line of a refusal should show it.
    if (typeof body === 'object' && body !== null && 'account' in body && typeof body.account === 'string') {
      this.bodyAccount = body.account.slice(0, 200);
    }
    return route.handle({ deps: this.deps, principal: this.principal, params: this.params, query, body, now: this.deps.clock() });
  }

  /** The caller, or a 401/403; null on routes that need no token. */
  #authenticate(route: Route): AdminPrincipal | null {
    if (route.auth === 'none' || (route.auth === 'metrics' && !this.deps.metricsAuth)) return null;
    const bearer = bearerOf(this.req);
    const principal = bearer === null ? null : this.deps.tokens.verify(bearer);
    if (principal === null) throw new ApiError('unauthorized');
    this.principal = principal;
    const need = route.auth === 'metrics' ? 'read' : route.auth;
    if (!roleAllows(principal.role, need)) throw new ApiError('forbidden', `this needs an admin token with role ${need} or above`);
    if (route.global && !principal.allAccounts) throw new ApiError('forbidden', 'this acts on every account: it needs a token whose accounts are "*"');
    return principal;
  }

  #fail(err: unknown): void {
    const api = toApiError(err);
    const headers: Record<string, string> = {};
    if (api.code === 'unauthorized') headers['www-authenticate'] = 'Bearer realm="portcullis-admin"';
    if (api.code === 'method_not_allowed') headers['allow'] = (api.extra['allow'] as string[]).join(', ');
    // The unread rest of an oversized body is not worth reading: answer and hang up.
    if (api.code === 'payload_too_large') headers['connection'] = 'close';
    const body = errorBody(api);
    if (api.code === 'method_not_allowed') delete body['allow'];
    if (!this.res.headersSent) sendJson(this.res, api.status, body, headers);
    else this.res.destroy();

    if (api.code === 'internal') {
      this.deps.logger.error({ err, action: this.route?.action ?? null, method: this.req.method, path: this.route?.path ?? null }, 'admin request failed');
    }
    const security = api.code === 'unauthorized' || api.code === 'forbidden';
    if (this.route !== null && (this.route.mutates || security || api.status >= 500)) {
      this.#audit(security || api.status >= 500 ? 'warn' : 'info', api.status, { result: api.code, ...(api.field ? { field: api.field } : {}) });
    }
  }

  /** The one audit line of a request: who, what, on which account, with what result. */
  #audit(level: 'info' | 'warn', status: number, fields: Record<string, unknown>): void {
    this.deps.logger[level](
      {
        actor: this.principal?.name ?? null,
        action: this.route?.action ?? null,
        account: this.params['account'] ?? this.bodyAccount ?? null,
        sessionId: this.params['id'] ?? null,
        status,
        remote: this.req.socket.remoteAddress ?? null,
        ...fields,
      },
      'admin',
    );
  }
}

/** Listens; resolves once listening, rejects on a listen error (EADDRINUSE and kin). */
function listenOn(server: Server, options: { host: string; port: number } | { path: string }): Promise<void> {
  return new Promise((resolveListen, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(options, () => {
      server.off('error', onError);
      resolveListen();
    });
  });
}

/** Whether something accepts connections on a unix socket path. */
function socketInUse(path: string): Promise<boolean> {
  return new Promise((resolveProbe) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolveProbe(true);
    });
    probe.once('error', () => resolveProbe(false));
  });
}

/** Removes a socket file left by a process that died; refuses to touch a live socket or a non-socket. */
async function removeStaleSocket(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = (await lstat(path)).isSocket();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!isSocket) throw new Error(`admin socket path ${path} exists and is not a socket; refusing to replace it`);
  if (await socketInUse(path)) throw new Error(`admin socket ${path} is in use by another process`);
  await unlink(path);
}

function formatHostPort(a: AddressInfo): string {
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

/** Builds the admin API server; call listen() to start it. */
export function createAdminServer(deps: AdminDeps): AdminServer {
  const clock = deps.clock ?? (() => new Date());
  const policyInfo = new PolicyInfo(deps.policy, clock);
  const resolved: ResolvedDeps = {
    ...deps,
    clock,
    oidcAccountPrefix: deps.oidcAccountPrefix ?? 'oidc:',
    sessionAuditWindowMs: deps.sessionAuditWindowMs ?? null,
    policyInfo,
  };
  const server = createServer((req, res) => {
    new Exchange(req, res, resolved).run().catch((err: unknown) => {
      // Only a bug gets here (errors are answered inside run()); never let it crash the proxy.
      deps.logger.error({ err }, 'admin request failed');
      res.destroy();
    });
  });
  // Admin calls are small; a slow or idle client must not hold the listener open forever.
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  let socketPath: string | null = null;
  let closing: Promise<void> | null = null;

  const close = async (): Promise<void> => {
    policyInfo.close();
    if (server.listening) {
      await new Promise<void>((resolveClose) => {
        server.close(() => resolveClose());
        server.closeAllConnections();
      });
    }
    // Node removes its own socket file on close; this covers a server that never finished listening.
    if (socketPath !== null) await unlink(socketPath).catch(() => undefined);
  };

  return {
    server,
    async listen(addr) {
      if ('path' in addr) {
        await removeStaleSocket(addr.path);
        await listenOn(server, { path: addr.path });
        socketPath = addr.path;
        // Tokens still guard every call; 0600 keeps other local users from even trying.
        await chmod(addr.path, 0o600);
        return addr.path;
      }
      await listenOn(server, { host: addr.host, port: addr.port });
      return formatHostPort(server.address() as AddressInfo);
    },
    close() {
      closing ??= close();
      return closing;
    },
  };
}
