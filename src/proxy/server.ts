/**
 * The proxy listener: plain HTTP (absolute-form), CONNECT tunnels and upgrades. Every request
 * flows one way: canonicalize → authenticate → account state → decide() → limits → resolve and
 * classify → forward / tunnel → one log line and metrics. Denials go through reject().
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { pipeline, Transform, type Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { Authenticator, type AuthResult } from '../identity/authenticate.js';
import type { SessionInsights } from '../identity/insights.js';
import type { LastSeen } from '../identity/last-seen.js';
import { CanonicalError, formatAuthority, parseAbsoluteUrl, parseAuthority, type CanonicalAuthority, type CanonicalTarget } from '../net/canonical.js';
import { AddressDeniedError, DnsError, type EgressResolver } from '../net/resolver.js';
import type { Metrics } from '../observability/metrics.js';
import { scrubSecrets } from '../observability/logger.js';
import type { CompiledPolicy } from '../policy/compile.js';
import { decide, type Decision, type DecisionInput, type RequestKind } from '../policy/decide.js';
import { tunnelScheme } from '../policy/explain.js';
import type { Reason } from '../reasons.js';
import type { SessionRecord, StateStore } from '../state/types.js';
import type { LeafMinter } from '../tls/ca.js';
import { EgressRecord } from './egress-record.js';
import { clientResponseHeaders, headerNames, requestHeadBytes, upstreamRequestHeaders } from './headers.js';
import type { RateLimiter } from './limits.js';
import type { ConnectionRegistry } from './registry.js';
import { rejectResponse, rejectSocket } from './reject.js';
import { INTERCEPTED, startInterception, type InterceptedConnection, type InterceptedSocket } from './intercept.js';
import { openTunnel } from './tunnel.js';
import { upstreamErrorReason, type Upstreams } from './upstreams.js';
import type { Dispatcher } from 'undici';

type DispatchController = Dispatcher.DispatchController;

/** Settings the proxy listener needs (a slice of the server config). */
export interface ProxySettings {
  readonly headerTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly tunnelMaxDurationMs: number | null;
  readonly storeMaxStalenessMs: number;
  readonly failMode: 'closed' | 'lockdown';
  /** Bytes of the request head before 431; read once at start. */
  readonly maxHeaderBytes: number;
  readonly tls: { readonly cert: Buffer | string; readonly key: Buffer | string } | null;
}

/** Everything the proxy uses, injected. */
export interface ProxyDeps {
  readonly policy: { readonly current: CompiledPolicy };
  readonly store: StateStore;
  readonly auth: Authenticator;
  readonly resolver: EgressResolver;
  readonly upstreams: Upstreams;
  readonly registry: ConnectionRegistry;
  readonly rateLimiter: RateLimiter;
  readonly lastSeen: LastSeen;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly insights: SessionInsights;
  readonly settings: ProxySettings;
  /** Leaf minter for `inspect: true` destinations; null when no CA is loaded. */
  readonly interceptor: { current: LeafMinter | null };
}

/** A request that passed steps 1–4. */
type Admitted = { readonly decision: Decision; readonly input: DecisionInput };

/** The effective switches for one account, or unavailable in fail-closed mode. */
export type AccountView = { readonly lockdown: boolean; readonly developerMode: boolean } | 'unavailable';

const ABSOLUTE_FORM = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;
// Request-targets must be printable ASCII: Node hands over latin1, so raw UTF-8 would turn into
// another name after IDNA. Clients percent-encode or punycode.
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;

/** The proxy listener. */
export class ProxyServer {
  readonly server: http.Server;
  readonly #deps: ProxyDeps;
  readonly #inner: http.Server;
  #draining = false;
  #closed = false;
  readonly #sockets = new Set<Socket>();

  constructor(deps: ProxyDeps) {
    this.#deps = deps;
    const s = deps.settings;
    const options: http.ServerOptions = {
      maxHeaderSize: s.maxHeaderBytes,
      requestTimeout: 0,
      headersTimeout: s.headerTimeoutMs,
      keepAliveTimeout: 5_000,
      noDelay: true,
      // Node checks headersTimeout only this often (30 s by default): a slowloris client
      // would outlive --header-timeout-ms by that much.
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(s.headerTimeoutMs / 2))),
      // Absent Host is answered by our own 400 (with a reason and a log line), not Node's bare one.
      requireHostHeader: false,
    };
    this.server = s.tls ? https.createServer({ ...options, cert: s.tls.cert, key: s.tls.key, ALPNProtocols: ['http/1.1'] }) : http.createServer(options);
    this.server.timeout = s.idleTimeoutMs;
    this.server.on('connection', (socket: Socket) => this.#onConnection(socket));
    if (s.tls) this.server.on('secureConnection', (socket: Socket) => this.#trackSecure(socket));
    this.server.on('request', (req, res) => void this.#onRequest(req, res, false));
    // Answer 100-continue ourselves after the decision: a denied upload never sends its body.
    this.server.on('checkContinue', (req, res) => void this.#onRequest(req, res, true));
    this.server.on('checkExpectation', (req, res) => {
      const record = this.#record('http', req);
      rejectResponse(res, record, 'bad_request', { detail: 'unsupported Expect header', close: true });
      record.finish(this.#deps.logger, this.#deps.metrics);
    });
    this.server.on('connect', (req, socket, head) => void this.#onConnect(req, socket as Socket, head));
    this.server.on('upgrade', (req, socket, head) => void this.#onUpgrade(req, socket as Socket, head));
    this.server.on('clientError', (err, socket) => this.#onClientError(err as NodeJS.ErrnoException, socket));
    // Decrypted connections of intercepted tunnels are served here; it never listens.
    this.#inner = http.createServer(options);
    this.#inner.timeout = s.idleTimeoutMs;
    const grant = (req: IncomingMessage): InterceptedConnection | undefined => (req.socket as InterceptedSocket)[INTERCEPTED];
    this.#inner.on('request', (req, res) => void this.#onRequest(req, res, false, false, grant(req)));
    this.#inner.on('checkContinue', (req, res) => void this.#onRequest(req, res, true, false, grant(req)));
    this.#inner.on('upgrade', (req, socket: Socket) => {
      const record = new EgressRecord('intercepted');
      record.method = req.method;
      rejectSocket(socket, record, 'upgrade_not_allowed', { detail: 'upgrades inside intercepted tunnels are not supported' });
      record.finish(this.#deps.logger, this.#deps.metrics);
    });
    this.#inner.on('clientError', (_err, socket: Duplex) => socket.destroy());
  }

  /** Starts listening; resolves with the bound address. */
  async listen(host: string, port: number): Promise<AddressInfo> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  get draining(): boolean {
    return this.#draining;
  }

  /**
   * Graceful shutdown: stop accepting, answer new requests on open connections with 503
   * draining, wait up to `timeoutMs` for in-flight work, then close the rest. Idempotent.
   */
  async close(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const deadline = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
    await Promise.race([closed, deadline]);
    this.#deps.registry.closeAll('draining');
    for (const socket of this.#sockets) socket.destroy();
    await closed;
    // Destroyed tunnels tear down on their sockets' 'close' events, which may come after the
    // server's: wait, so that their close lines are written before the caller flushes the log.
    await this.#deps.registry.whenNoTunnels();
  }

  #onConnection(socket: Socket): void {
    // With TLS, 'connection' sees the raw TCP socket; count it here either way.
    this.#sockets.add(socket);
    this.#deps.metrics.activeConnections.inc();
    socket.once('close', () => {
      this.#sockets.delete(socket);
      this.#deps.metrics.activeConnections.dec();
    });
  }

  #trackSecure(socket: Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
  }

  #record(kind: RequestKind, req: IncomingMessage): EgressRecord {
    const record = new EgressRecord(kind);
    record.method = req.method;
    return record;
  }

  #onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const record = new EgressRecord('http');
    const code = err.code ?? '';
    const reason: Reason = code === 'HPE_HEADER_OVERFLOW' ? 'headers_too_large' : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 'bad_request' : 'bad_request';
    record.error = code || 'parse_error';
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    rejectSocket(socket, record, reason, { detail: code === 'HPE_HEADER_OVERFLOW' ? undefined : 'malformed request' });
    record.finish(this.#deps.logger, this.#deps.metrics);
  }

  /** Authenticates and binds the connection to its first session (OIDC tokens answer later). */
  #authenticate(req: IncomingMessage, socket: Socket, record: EgressRecord): AuthResult | Promise<AuthResult> {
    const header = req.headers['proxy-authorization'];
    // Keep-alive clients repeat the same credentials on every request: once a token session
    // authenticated on this connection, the same header only needs the revocation and expiry
    // checks (OIDC tokens are always re-checked: they expire on their own).
    const known = this.#verified.get(socket);
    if (known !== undefined && header === known.header) {
      const session = this.#deps.store.getSession(known.sessionId);
      return this.#bind(session ? this.#deps.auth.check(session) : { ok: false, reason: 'session_revoked' }, req, socket, record);
    }
    const result = this.#deps.auth.authenticate(header);
    if (result instanceof Promise) return result.then((r) => this.#bind(r, req, socket, record));
    if (result.ok && result.session.authMethod === 'token' && header !== undefined) this.#verified.set(socket, { header, sessionId: result.session.id });
    return this.#bind(result, req, socket, record);
  }

  readonly #verified = new WeakMap<Socket, { header: string; sessionId: string }>();

  #bind(result: AuthResult, req: IncomingMessage, socket: Socket, record: EgressRecord): AuthResult {
    if (!result.ok) return result;
    const s = result.session;
    const bound = this.#deps.registry.bindingOf(socket);
    // One client connection belongs to one session: other credentials on it are refused.
    if (bound !== undefined && bound.sessionId !== s.id) return { ok: false, reason: 'auth_invalid' };
    this.#deps.registry.bind(socket, s.id, s.account);
    record.account = s.account;
    record.sessionId = s.id;
    const ua = typeof req.headers['user-agent'] === 'string' ? req.headers['user-agent'] : null;
    const ip = socket.remoteAddress ?? null;
    if (s.lastSeenAt === null) this.#firstSeen(s, ip, ua);
    this.#deps.lastSeen.touch(s.id, ip, ua);
    return result;
  }

  readonly #announced = new Set<string>();

  /** A session's first request: one log line with where it came from (and new_location). */
  #firstSeen(session: SessionRecord, ip: string | null, ua: string | null): void {
    if (this.#announced.has(session.id)) return;
    if (this.#announced.size > 100_000) this.#announced.clear();
    this.#announced.add(session.id);
    const others = this.#deps.store.listSessions(session.account).map((o) => this.#deps.lastSeen.overlay(o));
    const insight = this.#deps.insights.firstSeen(session, others, ip, ua);
    const fields = { account: session.account, sessionId: session.id, app: session.app, authMethod: session.authMethod, clientIp: ip, client: insight.device.client, location: insight.location.label, flags: insight.flags };
    if (insight.flags.includes('new_location')) this.#deps.logger.warn(fields, 'session seen from a new location');
    else this.#deps.logger.info(fields, 'session first seen');
  }

  #innerIdentity(inner: InterceptedConnection, record: EgressRecord): AuthResult {
    record.account = inner.account;
    record.sessionId = inner.sessionId;
    const session = this.#deps.store.getSession(inner.sessionId);
    if (session === undefined) return { ok: false, reason: 'session_revoked' };
    return this.#deps.auth.check(session);
  }

  /** Account switches from the cache; fail mode applies when the cache is stale. */
  accountView(account: string): AccountView {
    const { store, settings } = this.#deps;
    if (store.stalenessMs() > settings.storeMaxStalenessMs) {
      if (settings.failMode === 'closed') return 'unavailable';
      return { lockdown: true, developerMode: false };
    }
    const a = store.getAccount(account);
    const lockdown = a.lockdown || store.getGlobal().lockdown;
    return { lockdown, developerMode: a.developerMode && !lockdown };
  }

  /** Steps 1–4 shared by every path; returns the decision or null after rejecting. */
  #admit(
    req: IncomingMessage,
    socket: Socket,
    record: EgressRecord,
    reject: (reason: Reason, detail?: string) => void,
    build: (account: string, view: { lockdown: boolean; developerMode: boolean }) => DecisionInput,
    inner?: InterceptedConnection,
  ): Admitted | null | Promise<Admitted | null> {
    if (this.#draining) return (reject('draining'), null);
    // Inside an intercepted tunnel the identity is the CONNECT's session, re-checked per request.
    const auth = inner ? this.#innerIdentity(inner, record) : this.#authenticate(req, socket, record);
    if (auth instanceof Promise) return auth.then((a) => this.#decideFor(a, record, reject, build));
    return this.#decideFor(auth, record, reject, build);
  }

  #decideFor(
    auth: AuthResult,
    record: EgressRecord,
    reject: (reason: Reason, detail?: string) => void,
    build: (account: string, view: { lockdown: boolean; developerMode: boolean }) => DecisionInput,
  ): Admitted | null {
    if (!auth.ok) return (reject(auth.reason), null);
    const view = this.accountView(auth.session.account);
    if (view === 'unavailable') return (reject('state_unavailable'), null);
    record.lockdown = view.lockdown;
    const input = build(auth.session.account, view);
    const decision = decide(input, this.#deps.policy.current);
    record.applyDecision(decision);
    if (decision.verdict === 'deny') return (reject(decision.reason), null);
    return { decision, input };
  }

  /** Rate limit (after the decision: precedence puts it last). Returns false after rejecting. */
  #rateLimit(account: string, reject: (reason: Reason, detail?: string, retryAfterS?: number) => void): boolean {
    const perMinute = this.#deps.policy.current.policy.limits.requestsPerMinute;
    const wait = this.#deps.rateLimiter.take(account, perMinute);
    if (wait > 0) {
      reject('rate_limited', undefined, wait);
      return false;
    }
    return true;
  }

  /** Resolves and classifies; returns the checked addresses or null after rejecting. */
  async #resolve(target: CanonicalAuthority, decision: Decision, record: EgressRecord, reject: (reason: Reason, detail?: string) => void): Promise<string[] | null> {
    try {
      const r = await this.#deps.resolver.resolve({ host: target.host, hostKind: target.hostKind, port: target.port, allowPrivate: decision.matched?.allowPrivate ?? null });
      return r.addresses;
    } catch (err) {
      if (err instanceof AddressDeniedError) {
        record.resolvedIp = undefined;
        record.error = `resolved to ${err.ip}`;
        reject(err.reason);
      } else if (err instanceof DnsError) {
        record.error = err.detail;
        reject('dns_error');
      } else {
        record.error = scrubSecrets(err instanceof Error ? err.message : String(err));
        reject('dns_error');
      }
      return null;
    }
  }

  // ----------------------------------------------------------------------------------------
  // Plain HTTP

  async #onRequest(req: IncomingMessage, res: ServerResponse, expectContinue: boolean, h2cStripped = false, inner?: InterceptedConnection): Promise<void> {
    const { logger, metrics } = this.#deps;
    const record = this.#record(inner ? 'intercepted' : 'http', req);
    // An h2c-stripped request was answered on a detached socket: end it after the response.
    if (h2cStripped) res.once('finish', () => req.socket.end());
    res.once('close', () => {
      // 'close' before the response finished: the client left mid-request (the line is written
      // now, before the forwarding code's own error handling runs).
      if (!res.writableFinished) record.error ??= 'client closed the connection';
      record.finish(logger, metrics);
      // While draining, a keep-alive connection is closed as soon as its last request is done,
      // not at the drain deadline (server.close() closed only the connections idle back then).
      if (this.#draining) setImmediate(() => this.server.closeIdleConnections());
    });
    // A refused request whose body was never read closes its connection: reading (or draining)
    // an unwanted upload would cost as much as forwarding it.
    const reject = (reason: Reason, detail?: string, retryAfterS?: number): void =>
      rejectResponse(res, record, reason, { detail, retryAfterS, close: !h2cStripped && requestHasBody(req) && !req.readableEnded && req.readableLength === 0 && !req.readableFlowing });
    try {
      const target = inner ? this.#parseInnerTarget(req, inner, record, reject) : this.#parseTarget(req, record, reject);
      if (target === null) return;
      const socket = req.socket;
      const hasBody = h2cStripped ? false : requestHasBody(req);
      const admitting = this.#admit(req, socket, record, reject, requestInput(req, target, inner ? 'intercepted' : 'http', hasBody, null), inner);
      // Only OIDC credentials make admission asynchronous: token requests skip a microtask turn.
      const admitted = admitting instanceof Promise ? await admitting : admitting;
      if (admitted === null) return;
      const { decision } = admitted;
      const limits = this.#deps.policy.current.policy.limits;
      const declared = Number(req.headers['content-length'] ?? 0);
      if (declared > limits.maxRequestBodyBytes) return reject('body_too_large');
      if (!this.#rateLimit(record.account!, reject)) return;
      const addresses = await this.#resolve(target, decision, record, reject);
      if (addresses === null) return;
      if (expectContinue) res.writeContinue();
      await this.#forward(req, res, target, addresses, record, hasBody, limits.maxRequestBodyBytes);
    } catch (err) {
      logger.error({ reqId: record.reqId, err: scrubSecrets(err instanceof Error ? (err.stack ?? err.message) : String(err)) }, 'request handler failed');
      record.error = 'internal_error';
      if (!res.headersSent) reject('upstream_connect_error');
      else res.destroy();
    }
  }

  /** Absolute-form target → canonical target; null after rejecting. */
  #parseTarget(req: IncomingMessage, record: EgressRecord, reject: (reason: Reason, detail?: string) => void): CanonicalTarget | null {
    const url = req.url ?? '';
    if (!ABSOLUTE_FORM.test(url)) return (reject('bad_request', 'a proxy request needs an absolute URL (origin-form requests are not proxied)'), null);
    // RFC 9112 §3.2: an HTTP/1.1 request without Host is malformed, absolute-form or not.
    if (req.headers.host === undefined && req.httpVersionMinor >= 1) return (reject('bad_request', 'HTTP/1.1 requests need a Host header'), null);
    if (url.length > this.#deps.policy.current.policy.limits.maxUrlLength) return (reject('url_too_long'), null);
    if (!PRINTABLE_ASCII.test(url)) return (reject('bad_request', 'request-target must be printable ASCII'), null);
    let target: CanonicalTarget;
    try {
      target = parseAbsoluteUrl(url);
    } catch (err) {
      return (reject('bad_request', err instanceof CanonicalError ? err.detail : 'bad URL'), null);
    }
    record.host = target.host;
    record.port = target.port;
    record.path = target.path;
    record.queryLength = target.query?.length;
    return target;
  }

  /**
   * An inner request of an intercepted tunnel: origin-form only, its Host must name the
   * CONNECT's host and port, and it is canonicalized against that authority.
   */
  #parseInnerTarget(req: IncomingMessage, inner: InterceptedConnection, record: EgressRecord, reject: (reason: Reason, detail?: string) => void): CanonicalTarget | null {
    const url = req.url ?? '';
    record.host = inner.target.host;
    record.port = inner.target.port;
    if (!url.startsWith('/')) return (reject('bad_request', 'requests inside an intercepted tunnel must use origin-form targets'), null);
    if (url.length > this.#deps.policy.current.policy.limits.maxUrlLength) return (reject('url_too_long'), null);
    if (!PRINTABLE_ASCII.test(url)) return (reject('bad_request', 'request-target must be printable ASCII'), null);
    let host: CanonicalAuthority;
    try {
      host = parseAuthority(req.headers.host ?? '', 443);
    } catch {
      return (reject('host_mismatch', 'the Host header is missing or malformed'), null);
    }
    if (host.host !== inner.target.host || host.port !== inner.target.port) return (reject('host_mismatch'), null);
    let target: CanonicalTarget;
    try {
      target = parseAbsoluteUrl(`https://${formatAuthority(inner.target, 443)}${url}`);
    } catch (err) {
      return (reject('bad_request', err instanceof CanonicalError ? err.detail : 'bad URL'), null);
    }
    record.path = target.path;
    record.queryLength = target.query?.length;
    return target;
  }

  async #forward(
    req: IncomingMessage,
    res: ServerResponse,
    target: CanonicalTarget,
    addresses: readonly string[],
    record: EgressRecord,
    hasBody: boolean,
    maxBody: number,
  ): Promise<void> {
    const { upstreams } = this.#deps;
    const scheme = target.scheme === 'https' ? 'https' : 'http';
    const ip = addresses[0]!;
    record.resolvedIp = ip;
    const pool = upstreams.pool(scheme, target, ip);
    const hostHeader = formatAuthority(target, scheme === 'https' ? 443 : 80);
    const headers = upstreamRequestHeaders(req.rawHeaders, hostHeader);
    let bodyError: Reason | null = null;
    let body: Transform | null = null;
    if (hasBody) {
      // Count through a stream undici reads itself: a 'data' listener on req would start the
      // flow before undici is attached, and the first chunks would never reach upstream.
      body = new Transform({
        transform(chunk: Buffer, _enc, cb) {
          record.bytesOut += chunk.length;
          // Chunked bodies have no declared length: stop at the cap and never complete upstream.
          if (record.bytesOut > maxBody) {
            bodyError = 'body_too_large';
            // Recorded now: the client connection is torn down with the body, and the line
            // may be written before the 413 is attempted.
            record.setReason('body_too_large');
            record.status = 413;
            return cb(new Error('request body exceeds the limit'));
          }
          cb(null, chunk);
        },
      });
      // An error on either side (client abort, cap) destroys both, so upstream never completes.
      pipeline(req, body, () => undefined);
    }
    // While the origin is thinking, the client is legitimately silent: the client socket's idle
    // timer must not fire first, or a stalled origin ends as a dropped connection, not a 504.
    const socket = req.socket;
    const idleMs = socket.timeout;
    socket.setTimeout(0);
    // Dispatched with a handler that writes straight into the client response (backpressure via
    // the controller): no intermediate body stream, no AbortController per request.
    await new Promise<void>((done) => {
      let controller: DispatchController | null = null;
      let started = false;
      let finished = false;
      const finish = (): void => {
        if (finished) return;
        finished = true;
        done();
      };
      res.once('close', () => {
        if (!socket.destroyed) socket.setTimeout(idleMs ?? 0);
        if (!res.writableFinished) controller?.abort(new Error('client closed the connection'));
        finish();
      });
      res.on('drain', () => controller?.resume());
      pool.dispatch(
        { method: req.method as 'GET', path: target.path + (target.query !== null ? `?${target.query}` : ''), headers, body },
        {
          onRequestStart: (c) => {
            controller = c;
            if (res.destroyed) c.abort(new Error('client closed the connection'));
          },
          onResponseStart: (_c, statusCode, responseHeaders) => {
            // 1xx informational answers are the proxy's own business (100-continue is answered
            // by the proxy itself); only the final response goes to the client.
            if (statusCode < 200) return;
            started = true;
            record.status = statusCode;
            res.writeHead(statusCode, clientResponseHeaders(responseHeaders));
          },
          onResponseData: (c, chunk) => {
            record.bytesIn += chunk.length;
            // As in tunnels: pause only while bytes are really queued, not for every big chunk.
            if (!res.write(chunk) && res.writableLength > 0) c.pause();
          },
          onResponseEnd: () => {
            res.end();
            finish();
          },
          onResponseError: (_c, err) => {
            if (started) {
              record.error = scrubSecrets(err.message);
              res.destroy();
            } else if (bodyError) {
              rejectResponse(res, record, bodyError, { close: true });
            } else if (res.destroyed || req.destroyed) {
              record.error = 'client closed the connection';
            } else {
              record.error = scrubSecrets(err.message);
              rejectResponse(res, record, upstreamErrorReason(err));
            }
            finish();
          },
        },
      );
    });
  }

  // ----------------------------------------------------------------------------------------
  // CONNECT

  async #onConnect(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const { logger, metrics, settings } = this.#deps;
    const record = this.#record('connect', req);
    const reject = (reason: Reason, detail?: string, retryAfterS?: number): void => {
      rejectSocket(socket, record, reason, { detail, retryAfterS });
      record.finish(logger, metrics);
    };
    socket.on('error', () => socket.destroy());
    try {
      let target: CanonicalAuthority;
      try {
        target = parseAuthority(req.url ?? '');
      } catch (err) {
        return reject('bad_request', err instanceof CanonicalError ? err.detail : 'bad CONNECT authority');
      }
      record.host = target.host;
      record.port = target.port;
      const admitted = await this.#admit(req, socket, record, reject, (account, view) => ({
        account,
        kind: 'connect',
        scheme: tunnelScheme(target.port),
        host: target.host,
        hostKind: target.hostKind,
        port: target.port,
        method: 'CONNECT',
        lockdown: view.lockdown,
        developerMode: view.developerMode,
      }));
      if (admitted === null) return;
      const { decision, input } = admitted;
      const minter = decision.matched?.inspect ? this.#deps.interceptor.current : null;
      if (decision.matched?.inspect && minter === null) {
        // Rules on this destination can only be enforced by interception: never fall back to
        // an opaque tunnel when no CA is loaded.
        return reject('inspection_required', 'TLS interception is not enabled on this proxy');
      }
      const limits = this.#deps.policy.current.policy.limits;
      if (this.#deps.registry.tunnelCount(record.account!) >= limits.maxConcurrentTunnels) return reject('tunnel_limit', undefined);
      // The slot is held across the awaits below; openTunnel registers the tunnel itself.
      const release = this.#deps.registry.reserveTunnel(record.account!);
      try {
        if (!this.#rateLimit(record.account!, reject)) return;
        if (minter !== null) {
          // Intercepted: nothing is dialed for the tunnel; every inner request is decided,
          // resolved and connected on its own.
          return startInterception({
            client: socket,
            head,
            target,
            record,
            input,
            minter,
            inner: this.#inner,
            deps: this.#deps,
            idleTimeoutMs: settings.idleTimeoutMs,
            helloTimeoutMs: settings.headerTimeoutMs,
            maxDurationMs: settings.tunnelMaxDurationMs,
          });
        }
        const addresses = await this.#resolve(target, decision, record, reject);
        if (addresses === null) return;
        await openTunnel({
          client: socket,
          head,
          target,
          addresses,
          record,
          input,
          lockdown: input.lockdown,
          deps: this.#deps,
          idleTimeoutMs: settings.idleTimeoutMs,
          helloTimeoutMs: settings.headerTimeoutMs,
          maxDurationMs: settings.tunnelMaxDurationMs,
          onReject: reject,
        });
      } finally {
        release();
      }
    } catch (err) {
      logger.error({ reqId: record.reqId, err: scrubSecrets(err instanceof Error ? (err.stack ?? err.message) : String(err)) }, 'connect handler failed');
      if (!record.finished) reject('upstream_connect_error');
    }
  }

  // ----------------------------------------------------------------------------------------
  // Upgrade (WebSocket), and h2c which is stripped

  async #onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): Promise<void> {
    const { logger, metrics, settings } = this.#deps;
    const protocols = String(req.headers['upgrade'] ?? '')
      .split(',')
      .map((p) => p.trim().toLowerCase())
      .filter((p) => p !== '' && p !== 'h2c');
    if (protocols.length === 0) {
      // h2c is always stripped: answer as a plain request on this connection, then close it.
      if (requestHasBody(req)) {
        const record = this.#record('http', req);
        rejectSocket(socket, record, 'bad_request', { detail: 'h2c upgrade requests with a body are not supported; retry without Upgrade' });
        record.finish(logger, metrics);
        return;
      }
      const res = new http.ServerResponse(req);
      res.shouldKeepAlive = false;
      res.assignSocket(socket);
      res.once('finish', () => res.detachSocket(socket));
      return this.#onRequest(req, res, false, true);
    }
    const record = this.#record('http', req);
    const reject = (reason: Reason, detail?: string, retryAfterS?: number): void => {
      rejectSocket(socket, record, reason, { detail, retryAfterS });
      record.finish(logger, metrics);
    };
    socket.on('error', () => socket.destroy());
    // The body of an upgrade request would be relayed raw after the rebuilt head: refuse it.
    if (requestHasBody(req)) return reject('bad_request', 'upgrade requests cannot carry a body');
    const target = this.#parseTarget(req, record, reject);
    if (target === null) return;
    const admitted = await this.#admit(req, socket, record, reject, requestInput(req, target, 'http', false, protocols.join(',')));
    if (admitted === null) return;
    if (target.scheme !== 'http') return reject('scheme_not_allowed', 'upgrades are proxied for http:// only; wss goes through CONNECT');
    if (!this.#rateLimit(record.account!, reject)) return;
    const addresses = await this.#resolve(target, admitted.decision, record, reject);
    if (addresses === null) return;
    const hostHeader = formatAuthority(target, 80);
    const raw = upstreamRequestHeaders(req.rawHeaders, hostHeader, true);
    let headText = `${req.method} ${target.path}${target.query !== null ? `?${target.query}` : ''} HTTP/1.1\r\n`;
    for (let i = 0; i < raw.length; i += 2) headText += `${raw[i]}: ${raw[i + 1]}\r\n`;
    headText += '\r\n';
    await openTunnel({
      client: socket,
      head: Buffer.concat([Buffer.from(headText, 'latin1'), head]),
      target,
      addresses,
      record,
      input: admitted.input,
      lockdown: admitted.input.lockdown,
      deps: this.#deps,
      idleTimeoutMs: settings.idleTimeoutMs,
      helloTimeoutMs: settings.headerTimeoutMs,
      maxDurationMs: settings.tunnelMaxDurationMs,
      onReject: reject,
      upgrade: true,
    });
  }
}

/** The decision input of an HTTP request (plain, upgrade or intercepted), for an account and its switches. */
function requestInput(
  req: IncomingMessage,
  target: CanonicalTarget,
  kind: 'http' | 'intercepted',
  hasBody: boolean,
  upgrade: string | null,
): (account: string, view: { lockdown: boolean; developerMode: boolean }) => DecisionInput {
  return (account, view) => ({
    account,
    kind,
    scheme: target.scheme,
    host: target.host,
    hostKind: target.hostKind,
    port: target.port,
    method: req.method ?? 'GET',
    path: target.path,
    query: target.query,
    // Header names and head size matter only to lockdown's rules; skip the work otherwise.
    headerNames: view.lockdown ? headerNames(req.rawHeaders) : [],
    hasBody,
    upgrade,
    requestBytes: view.lockdown ? requestHeadBytes(req.method ?? '', req.url ?? '', req.rawHeaders) : 0,
    lockdown: view.lockdown,
    developerMode: view.developerMode,
  });
}

/** Whether a request carries a body (declared length above zero, or any transfer coding). */
export function requestHasBody(req: IncomingMessage): boolean {
  if (req.headers['transfer-encoding'] !== undefined) return true;
  const cl = req.headers['content-length'];
  return cl !== undefined && cl !== '0';
}

