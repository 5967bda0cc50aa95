/**
 * Upstream connection pools (undici), one per canonical origin AND checked address, so that a
 * connection is only ever reused for the address it was dialed to. The pool dials through a
 * pinned `lookup` that returns exactly the checked address: no second DNS lookup decides where
 * bytes go, and TLS still verifies the certificate against the canonical host name.
 */
import type { LookupFunction } from 'node:net';
import { isIP } from 'node:net';
import type { ConnectionOptions } from 'node:tls';
import { Pool } from 'undici';
import { formatAuthority } from '../net/canonical.js';
import type { CanonicalAuthority } from '../net/canonical.js';

/** Pool settings. */
export interface UpstreamOptions {
  /** Connections per origin+address (default 64). */
  readonly connectionsPerOrigin?: number;
  /** Idle keep-alive time of an upstream connection, ms (default 30 s). */
  readonly keepAliveMs?: number;
  /** Time to connect (and handshake), ms (default 10 s). */
  readonly connectTimeoutMs?: number;
  /** Time to the response head and between body chunks, ms. */
  readonly idleTimeoutMs: number;
  /** At most this many pools; the least recently used idle one is closed beyond it (default 1024). */
  readonly maxPools?: number;
  /** Extra TLS options for https upstreams (CA list for tests; verification is never disabled). */
  readonly tls?: Pick<ConnectionOptions, 'ca'>;
}

/** A lookup that always answers with one fixed, already-checked address. */
export function pinnedLookup(ip: string): LookupFunction {
  const family = isIP(ip);
  return ((_host: string, options: { all?: boolean }, callback: (...args: unknown[]) => void) => {
    if (options?.all) callback(null, [{ address: ip, family }]);
    else callback(null, ip, family);
  }) as unknown as LookupFunction;
}

/** The pools, keyed by scheme, canonical authority and dialed address. */
export class Upstreams {
  readonly #pools = new Map<string, Pool>();
  readonly #options: UpstreamOptions;
  /** The key last moved to the end of #pools (the most recently used). */
  #newest: string | undefined;

  constructor(options: UpstreamOptions) {
    this.#options = options;
  }

  /** The pool for this origin and checked address (created on first use). */
  pool(scheme: 'http' | 'https', target: CanonicalAuthority, ip: string): Pool {
    const origin = `${scheme}://${formatAuthority(target)}`;
    const key = `${origin}@${ip}`;
    let pool = this.#pools.get(key);
    if (pool !== undefined) {
      // Re-insert to keep Map order as recency order for eviction (already last: nothing to do;
      // a sidecar mostly talks to one origin at a time).
      if (key !== this.#newest) {
        this.#pools.delete(key);
        this.#pools.set(key, pool);
        this.#newest = key;
      }
      return pool;
    }
    const o = this.#options;
    pool = new Pool(origin, {
      connections: o.connectionsPerOrigin ?? 64,
      pipelining: 1,
      keepAliveTimeout: o.keepAliveMs ?? 30_000,
      keepAliveMaxTimeout: o.keepAliveMs ?? 30_000,
      headersTimeout: o.idleTimeoutMs,
      bodyTimeout: o.idleTimeoutMs,
      connect: {
        lookup: pinnedLookup(ip),
        timeout: o.connectTimeoutMs ?? 10_000,
        noDelay: true,
        keepAlive: true,
        ...(scheme === 'https' ? { ...o.tls, servername: target.hostKind === 'name' ? target.host : undefined, ALPNProtocols: ['http/1.1'] } : {}),
      },
    });
    this.#pools.set(key, pool);
    this.#newest = key;
    this.#evict();
    return pool;
  }

  #evict(): void {
    const max = this.#options.maxPools ?? 1024;
    if (this.#pools.size <= max) return;
    for (const [key, pool] of this.#pools) {
      if (this.#pools.size <= max) break;
      this.#pools.delete(key);
      void pool.close().catch(() => pool.destroy());
    }
  }

  /** Closes every pool; in-flight requests finish first. */
  async close(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.allSettled(pools.map((p) => p.close()));
  }

  /** Destroys every pool at once. */
  async destroy(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.allSettled(pools.map((p) => p.destroy()));
  }
}

/** Maps an undici/socket error to a reason code. */
export function upstreamErrorReason(err: unknown): 'upstream_timeout' | 'upstream_tls_error' | 'upstream_connect_error' {
  const code = (err as { code?: string } | null)?.code ?? '';
  const message = err instanceof Error ? err.message : '';
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'ETIMEDOUT') {
    return 'upstream_timeout';
  }
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL)/.test(code) || /certificate|SSL routines|TLS/i.test(message)) {
    return 'upstream_tls_error';
  }
  return 'upstream_connect_error';
}
