/**
 * Wires one Portcullis process together from a validated config: policy, store, identity,
 * resolver, proxy and admin listeners, logs and metrics. Everything can be closed from a test.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { AdminTokens, ensureAdminTokens } from './admin/tokens.js';
import { createAdminServer, type AdminServer } from './admin/server.js';
import type { ServerConfig } from './config/schema.js';
import { Authenticator } from './identity/authenticate.js';
import { GeoIp } from './identity/geo.js';
import { SessionInsights } from './identity/insights.js';
import { LastSeen } from './identity/last-seen.js';
import { OidcVerifier } from './identity/oidc.js';
import { EgressResolver } from './net/resolver.js';
import { createLogger, flushLogger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { decide } from './policy/decide.js';
import { formatIssue } from './policy/load.js';
import type { CompiledPolicy } from './policy/compile.js';
import { PolicyReloader, type ReloadResult } from './policy/reloader.js';
import { CA_FILES, createCa, LeafMinter, readCa, writeCa } from './tls/ca.js';
import { RateLimiter } from './proxy/limits.js';
import { ConnectionRegistry } from './proxy/registry.js';
import { ProxyServer } from './proxy/server.js';
import { Upstreams } from './proxy/upstreams.js';
import { openStore } from './state/open-store.js';
import type { RedisStore } from './state/redis-store.js';
import type { StateStore, StoreChange } from './state/types.js';

/** Injectable parts (tests pass their own logger stream, DNS servers, TLS trust). */
export interface AppOverrides {
  readonly logger?: Logger;
  readonly metrics?: Metrics;
  /** DNS servers ("HOST:PORT"); overrides config.resolver. */
  readonly dnsServers?: readonly string[];
  /** Extra CA certificates trusted for upstream TLS (tests); verification is never disabled. */
  readonly upstreamCa?: string | Buffer | readonly (string | Buffer)[];
  /** Interval of last-seen batch writes, ms (default 5000). */
  readonly lastSeenFlushMs?: number;
}

/** A running Portcullis. */
export interface App {
  readonly config: ServerConfig;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly store: StateStore;
  readonly policy: PolicyReloader;
  readonly proxy: ProxyServer;
  readonly admin: AdminServer;
  readonly registry: ConnectionRegistry;
  /** Bound proxy address ("host:port"). */
  readonly proxyAddress: AddressInfo;
  /** Bound admin address ("host:port" or socket path). */
  readonly adminAddress: string;
  /** Where a first-start admin token was written, if one was created. */
  readonly createdAdminTokenFile: string | null;
  /** The interception CA certificate, when one was created at this start. */
  readonly createdCaFile: string | null;
  /** Graceful shutdown; idempotent. */
  close(): Promise<void>;
}

/** Builds and starts every component; throws (after closing what started) on a fatal error. */
export async function startApp(config: ServerConfig, overrides: AppOverrides = {}): Promise<App> {
  const logger = overrides.logger ?? createLogger({ level: config.logLevel });
  const metrics = overrides.metrics ?? new Metrics({ collectDefault: true });
  const policy = await PolicyReloader.open(config.policy);
  metrics.setPolicyHash(policy.current.hash);
  const store = await openStore(config.store.url);
  const closers: (() => Promise<void> | void)[] = [() => store.close(), () => policy.close()];
  try {
    return await assemble(config, overrides, logger, metrics, policy, store, closers);
  } catch (err) {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    throw err;
  }
}

async function assemble(
  config: ServerConfig,
  overrides: AppOverrides,
  logger: Logger,
  metrics: Metrics,
  policy: PolicyReloader,
  store: StateStore,
  closers: (() => Promise<void> | void)[],
): Promise<App> {
  const registry = new ConnectionRegistry();
  const lastSeen = new LastSeen(store, overrides.lastSeenFlushMs ?? 5_000, (err) => logger.warn({ err }, 'last-seen write failed'));
  closers.push(() => lastSeen.close());
  let proxyEndpoint: { address: string; port: number } | null = null;
  let adminEndpoint: { address: string; port: number } | null = null;
  const resolver = new EgressResolver({
    servers: overrides.dnsServers ?? (config.resolver ? [formatHostPort(config.resolver)] : undefined),
    globalAllowPrivate: () => policy.current.allowPrivate,
    selfEndpoints: () => [proxyEndpoint, adminEndpoint].filter((e): e is { address: string; port: number } => e !== null),
  });
  const upstreams = new Upstreams({
    idleTimeoutMs: config.idleTimeoutMs,
    ...(overrides.upstreamCa ? { tls: { ca: overrides.upstreamCa as string[] } } : {}),
  });
  closers.push(() => upstreams.destroy());
  const tls = config.tls ? { cert: await readFile(config.tls.cert), key: await readFile(config.tls.key) } : null;
  const ca = await openInterceptionCa(config.caDir, policy, logger);
  closers.push(() => ca.close());
  const insights = new SessionInsights(await GeoIp.open(config.geoip));
  const auth = new Authenticator(store, {
    oidc: config.oidc ? new OidcVerifier(config.oidc) : null,
    onSignIn: (s) => logger.info({ account: s.account, sessionId: s.id, app: s.app, authMethod: s.authMethod }, 'session signed in'),
  });
  const proxy = new ProxyServer({
    policy,
    store,
    auth,
    insights,
    resolver,
    upstreams,
    registry,
    rateLimiter: new RateLimiter(),
    lastSeen,
    logger,
    metrics,
    interceptor: ca.interceptor,
    settings: {
      headerTimeoutMs: config.headerTimeoutMs,
      idleTimeoutMs: config.idleTimeoutMs,
      tunnelMaxDurationMs: config.tunnelMaxDurationMs,
      storeMaxStalenessMs: config.store.maxStalenessMs,
      failMode: config.store.failMode,
      maxHeaderBytes: policy.current.policy.limits.maxHeaderBytes,
      tls,
    },
  });

  const refreshGauges = wireStore(store, registry, metrics, logger);
  // Expiry happens without a change event, and the audit window ends without one: sweep both.
  const sweep = setInterval(() => {
    refreshGauges();
    const cutoff = new Date(Date.now() - config.sessionAuditWindowMs);
    store.pruneSessions(cutoff).catch((err: unknown) => logger.warn({ err }, 'session prune failed'));
  }, 30_000);
  sweep.unref();
  // The store is "up" while it is in sync and its cache fresh enough to decide on (SPEC §7).
  const shared = config.store.kind === 'redis' ? (store as RedisStore) : null;
  const storeUp = (): void => {
    metrics.setStoreUp((shared === null || shared.isUp()) && store.stalenessMs() <= config.store.maxStalenessMs);
    closeExpired();
  };
  // Expiry has no change event: once a second, sessions with open connections that have
  // expired are closed like revoked ones.
  const closeExpired = (): void => {
    const now = Date.now();
    for (const id of [...registry.openSessionIds()]) {
      const s = store.getSession(id);
      if (s?.expiresAt != null && Date.parse(s.expiresAt) <= now && s.revokedAt === null) {
        const n = registry.closeSession(id, 'session_expired');
        metrics.sessionRevocations.inc({ scope: 'expired' });
        logger.info({ sessionId: id, account: s.account, closed: n }, 'session expired');
      }
    }
  };
  storeUp();
  if (shared !== null) {
    shared.on('status', (status: 'up' | 'down') => {
      storeUp();
      if (status === 'up') logger.info({ store: status }, 'state store in sync');
      else logger.warn({ store: status }, 'state store unreachable');
    });
    shared.on('warning', (message: string) => logger.warn({ warning: message }, 'state store'));
  }
  const storeTimer = setInterval(storeUp, 1_000);
  storeTimer.unref();
  closers.push(() => clearInterval(sweep), () => clearInterval(storeTimer));
  wirePolicy(policy, proxy, registry, metrics, logger);

  const tokenSetup = await ensureAdminTokens(config.adminTokenFile);
  const tokens = await AdminTokens.load(config.adminTokenFile);
  const admin = createAdminServer({
    store,
    policy,
    tokens,
    logger,
    metrics: {
      render: () => metrics.registry.metrics(),
      contentType: metrics.registry.contentType,
      onSessionRevoked: (scope, n) => metrics.sessionRevocations.inc({ scope }, n),
    },
    ready: () => {
      const fresh = store.stalenessMs() <= config.store.maxStalenessMs;
      return {
        ready: fresh && !proxy.draining,
        checks: { policy: policy.current.hash.slice(0, 12), store: fresh ? 'fresh' : 'stale', proxy: proxy.draining ? 'draining' : 'accepting' },
      };
    },
    sessionTtlMs: config.sessionTtlMs,
    sessionAuditWindowMs: config.sessionAuditWindowMs,
    insights,
    oidcAccountPrefix: config.oidc?.accountPrefix ?? 'oidc:',
    metricsAuth: config.metricsAuth,
  });
  closers.push(() => admin.close());

  const proxyAddress = await proxy.listen(config.listen.host, config.listen.port);
  closers.push(() => proxy.close(0));
  proxyEndpoint = { address: proxyAddress.address, port: proxyAddress.port };
  const adminAddress = await admin.listen('path' in config.adminListen ? { path: config.adminListen.path } : config.adminListen);
  const adminAddr = admin.server.address();
  if (adminAddr !== null && typeof adminAddr === 'object') adminEndpoint = { address: adminAddr.address, port: adminAddr.port };
  policy.watch();
  logger.info({ proxy: `${proxyAddress.address}:${proxyAddress.port}`, admin: adminAddress, policy: policy.file, policyHash: policy.current.hash.slice(0, 12) }, 'portcullis started');

  let closing: Promise<void> | null = null;
  return {
    config,
    logger,
    metrics,
    store,
    policy,
    proxy,
    admin,
    registry,
    proxyAddress,
    adminAddress,
    createdAdminTokenFile: tokenSetup.created ? (tokenSetup.tokenFile ?? null) : null,
    get createdCaFile() {
      return ca.createdFile;
    },
    close: () =>
      (closing ??= (async () => {
        logger.info({ drainTimeoutMs: config.drainTimeoutMs }, 'draining');
        clearInterval(sweep);
        clearInterval(storeTimer);
        await proxy.close(config.drainTimeoutMs);
        await admin.close();
        policy.close();
        await lastSeen.close();
        ca.close();
        await upstreams.close();
        await store.close();
        logger.info('stopped');
        await flushLogger(logger);
      })()),
  };
}

/**
 * The interception CA: loaded from --ca-dir when present, created on first start (or on the
 * reload that first needs it) when the policy has `inspect: true` destinations. The directory
 * is watched so `portcullis ca rotate` takes effect without downtime, dropping cached leaves.
 */
async function openInterceptionCa(
  dir: string,
  policy: PolicyReloader,
  logger: Logger,
): Promise<{ interceptor: { current: LeafMinter | null }; createdFile: string | null; close(): void }> {
  const interceptor: { current: LeafMinter | null } = { current: null };
  const state = { createdFile: null as string | null, watcher: null as FSWatcher | null, timer: null as NodeJS.Timeout | null };
  const certFile = path.resolve(dir, CA_FILES.cert);
  const watchDir = (): void => {
    if (state.watcher) return;
    state.watcher = watch(dir, { persistent: false }, () => {
      if (state.timer) clearTimeout(state.timer);
      state.timer = setTimeout(() => void rotate(), 150);
      state.timer.unref();
    });
    state.watcher.on('error', () => undefined);
  };
  const rotate = async (): Promise<void> => {
    const ca = await readCa(dir).catch(() => null);
    if (ca === null || interceptor.current === null || ca.certPem === interceptor.current.caCertPem) return;
    await interceptor.current.replaceCa(ca);
    logger.warn({ caCert: certFile }, 'interception CA rotated; cached leaves dropped');
  };
  const ensure = async (needed: boolean): Promise<void> => {
    if (interceptor.current !== null) return;
    let ca = await readCa(dir);
    if (ca === null) {
      if (!needed) return;
      ca = await createCa();
      await writeCa(dir, ca);
      state.createdFile = certFile;
      logger.warn({ caCert: certFile }, 'created the interception CA; clients must trust it (portcullis ca show)');
    }
    interceptor.current = await LeafMinter.fromPem(ca);
    watchDir();
  };
  await ensure(policy.current.needsInterception);
  const onChange = (compiled: CompiledPolicy): void => {
    if (compiled.needsInterception) ensure(true).catch((err: unknown) => logger.error({ err }, 'cannot create the interception CA'));
  };
  policy.on('change', onChange);
  return {
    interceptor,
    get createdFile() {
      return state.createdFile;
    },
    close: () => {
      policy.off('change', onChange);
      state.watcher?.close();
      if (state.timer) clearTimeout(state.timer);
    },
  };
}

function formatHostPort(hp: { host: string; port: number }): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** Store changes close what they must, at once, and keep the gauges current. */
function wireStore(store: StateStore, registry: ConnectionRegistry, metrics: Metrics, logger: Logger): () => void {
  const refreshGauges = (): void => {
    const now = new Date();
    let lockdown = 0;
    for (const a of store.listAccounts()) if (a.lockdown) lockdown++;
    metrics.accountsInLockdown.set(lockdown);
    metrics.sessionsActive.set(store.countLiveSessions(now));
  };
  refreshGauges();
  // A re-sync can announce thousands of changes at once: refresh the gauges once per tick.
  let pending = false;
  const refreshSoon = (): void => {
    if (pending) return;
    pending = true;
    setImmediate(() => {
      pending = false;
      refreshGauges();
    });
  };
  store.on('change', (change: StoreChange) => {
    metrics.statePropagation.observe(Math.max(0, (Date.now() - Date.parse(change.at)) / 1000));
    if (change.type === 'session' && change.session.revokedAt !== null) {
      const n = registry.closeSession(change.session.id, 'session_revoked');
      logger.info({ sessionId: change.session.id, account: change.session.account, closed: n, by: change.session.revokedBy }, 'session revoked');
    } else if (change.type === 'account' && change.state.lockdown) {
      // Nothing opened before lockdown keeps running: clients reconnect and are judged anew.
      const n = registry.closeAccount(change.state.account, 'lockdown');
      logger.info({ account: change.state.account, lockdown: true, by: change.state.lockdownChangedBy, closed: n }, 'account state changed');
    } else if (change.type === 'account') {
      logger.info({ account: change.state.account, lockdown: change.state.lockdown, developerMode: change.state.developerMode }, 'account state changed');
    } else if (change.type === 'global' && change.state.lockdown) {
      const n = registry.closeAll('lockdown');
      logger.warn({ globalLockdown: true, by: change.state.changedBy, closed: n }, 'global lockdown on');
    } else if (change.type === 'global') {
      logger.warn({ globalLockdown: false, by: change.state.changedBy }, 'global lockdown off');
    }
    refreshSoon();
  });
  return refreshGauges;
}

/** Policy reloads are logged and counted; open tunnels the new policy denies are closed. */
function wirePolicy(policy: PolicyReloader, proxy: ProxyServer, registry: ConnectionRegistry, metrics: Metrics, logger: Logger): void {
  policy.on('reload', (r: ReloadResult) => {
    metrics.policyReloads.inc({ result: r.result });
    if (r.result === 'failure') {
      logger.error({ policy: policy.file, issues: r.issues.map(formatIssue) }, 'policy reload failed; the last good policy stays in force');
    } else if (r.result === 'success') {
      for (const w of r.warnings) logger.warn({ warning: formatIssue(w) }, 'policy warning');
    }
  });
  policy.on('change', () => {
    const compiled = policy.current;
    metrics.setPolicyHash(compiled.hash);
    let closed = 0;
    for (const t of [...registry.tunnels]) {
      const view = proxy.accountView(t.account);
      const still = view === 'unavailable' ? null : decide({ ...t.input, lockdown: view.lockdown, developerMode: view.developerMode }, compiled);
      if (still === null || still.verdict === 'deny') {
        t.close(still?.reason ?? 'state_unavailable');
        closed++;
      }
    }
    logger.info({ policy: policy.file, hash: compiled.hash.slice(0, 12), closedTunnels: closed }, 'policy reloaded');
  });
}
