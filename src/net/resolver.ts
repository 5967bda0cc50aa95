/**
 * DNS after the decision, with pinning (SPEC §1 "Order of checks", step 5).
 *
 * Only names the policy already allowed reach this module: a denied name is never resolved,
 * because the query itself would carry data out. Every A and AAAA answer is classified, the
 * forbidden ones are dropped, and the caller dials exactly one of the returned addresses — never
 * the name again — so no second lookup can hand the dial a different address than the one checked.
 *
 * Lookups go through c-ares (`dns.promises.Resolver`), never `dns.lookup`/getaddrinfo: that path
 * reads /etc/hosts, applies search domains and nsswitch, and cannot be pointed at `--resolver`.
 */
import { promises as dnsPromises } from 'node:dns';
import { networkInterfaces } from 'node:os';
import { addressReason, canonicalIp, classifyAddress } from './address.js';
import type { AddressReason, CidrSet } from './address.js';
import type { HostKind } from './canonical.js';

/** One of the proxy's own listeners; address 0.0.0.0 or :: means every local interface. */
export interface SelfEndpoint {
  readonly address: string;
  readonly port: number;
}

/** A raw DNS answer: the address as the server sent it and its TTL in seconds. */
export interface RawAnswer {
  readonly address: string;
  readonly ttl: number;
}

/** The part of `dns.promises.Resolver` the egress resolver uses; injectable for tests. */
export interface DnsBackend {
  resolve4(name: string, options: { ttl: true }): Promise<RawAnswer[]>;
  resolve6(name: string, options: { ttl: true }): Promise<RawAnswer[]>;
}

/** Settings a backend factory receives. */
export interface DnsBackendOptions {
  /** "HOST:PORT" entries; undefined means the system resolv.conf servers. */
  readonly servers: readonly string[] | undefined;
  /** Per-try timeout handed to c-ares, ms. */
  readonly attemptTimeoutMs: number;
  /** Attempts per server. */
  readonly tries: number;
}

/** Constructor options of EgressResolver. */
export interface EgressResolverOptions {
  /** "HOST:PORT" DNS servers (`--resolver`); absent means the system resolv.conf servers. */
  servers?: readonly string[];
  /** Overall deadline of one lookup (A and AAAA together), ms; default 5000. */
  timeoutMs?: number;
  /** Attempts per server before c-ares gives up; default 2. */
  tries?: number;
  /** `network.allowPrivate` of the current policy; read on every use so reloads apply at once. */
  globalAllowPrivate: () => CidrSet;
  /** The proxy's own listeners, for `self_loop`. */
  selfEndpoints: () => readonly SelfEndpoint[];
  /** Names kept in the answer cache; default 1000, 0 disables caching. */
  cacheMaxEntries?: number;
  /** Milliseconds clock for cache expiry; default Date.now. */
  clock?: () => number;
  /** Builds the DNS backend; default a c-ares `dns.promises.Resolver`. */
  createBackend?: (options: DnsBackendOptions) => DnsBackend;
  /** Addresses of every local interface (for wildcard listeners); default from os.networkInterfaces(). */
  localAddresses?: () => readonly string[];
}

/** What to resolve: the canonical host from the decision and the matched destination's own allowPrivate. */
export interface ResolveRequest {
  readonly host: string;
  readonly hostKind: HostKind;
  readonly port: number;
  /** The matched destination's `allowPrivate`; null when it has none. */
  readonly allowPrivate: CidrSet | null;
}

/** Why an address may not be dialed. */
export type AddressDenyReason = AddressReason | 'self_loop';

/** An address that was resolved but is not dialable, with the reason code. */
export interface DroppedAddress {
  readonly ip: string;
  readonly reason: AddressDenyReason;
}

/** Result of a successful resolve: checked, dialable addresses (IPv4 first) and what was dropped. */
export interface ResolveResult {
  readonly addresses: string[];
  readonly dropped: DroppedAddress[];
}

/** Every resolved address was forbidden: a policy DENIAL, reported with the first drop's reason. */
export class AddressDeniedError extends Error {
  readonly reason: AddressDenyReason;
  readonly ip: string;
  readonly dropped: readonly DroppedAddress[];

  constructor(host: string, dropped: readonly DroppedAddress[]) {
    const first = dropped[0] as DroppedAddress;
    super(`every address of ${host} is forbidden (${first.ip}: ${first.reason})`);
    this.name = 'AddressDeniedError';
    this.reason = first.reason;
    this.ip = first.ip;
    this.dropped = dropped;
  }
}

/** The name could not be resolved (NXDOMAIN, no records, SERVFAIL, timeout): an ERROR, not a denial. */
export class DnsError extends Error {
  readonly code = 'dns_error' as const;
  readonly host: string;
  readonly detail: string;

  constructor(host: string, detail: string) {
    super(`cannot resolve ${host}: ${detail}`);
    this.name = 'DnsError';
    this.host = host;
    this.detail = detail;
  }
}

/** "ip:port" with IPv6 bracketed, for logs and for dialers that take one authority string. */
export function formatDialAddress(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

// TTLs outside this window are clamped: 0 would defeat de-duplication under load, and a huge TTL
// would pin a name long after its owner moved it.
const MIN_TTL_S = 1;
const MAX_TTL_S = 300;
const DEFAULT_TIMEOUT_MS = 5000;
const DEFAULT_TRIES = 2;
const DEFAULT_CACHE_ENTRIES = 1000;

/** Raw answers of both families for one name. */
interface RawAnswers {
  readonly v4: readonly RawAnswer[];
  readonly v6: readonly RawAnswer[];
  /** The addresses of both, IPv4 first (made once per lookup, not per use). */
  readonly addresses: readonly string[];
  /** False when one family failed transiently: such a partial answer is used but not cached. */
  readonly complete: boolean;
}

interface CacheEntry {
  readonly answers: RawAnswers;
  readonly expiresAt: number;
}

/** Outcome of one family's query, failures folded into a code. */
type FamilyOutcome = { ok: true; answers: RawAnswer[] } | { ok: false; code: string };

// c-ares codes that mean "the name definitely has no such records", as opposed to a failure.
const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND']);

const DNS_DETAILS: Readonly<Record<string, string>> = {
  ENOTFOUND: 'NXDOMAIN',
  ENODATA: 'no A or AAAA records',
  ESERVFAIL: 'SERVFAIL',
  EREFUSED: 'query refused',
  ETIMEOUT: 'timeout',
  ECONNREFUSED: 'DNS server refused the connection',
  EBADRESP: 'malformed DNS response',
};

/** The default backend: a c-ares resolver with our servers, timeout and tries. */
function createAresBackend(options: DnsBackendOptions): DnsBackend {
  const resolver = new dnsPromises.Resolver({ timeout: options.attemptTimeoutMs, tries: options.tries });
  if (options.servers !== undefined) resolver.setServers([...options.servers]);
  return resolver;
}

/** Every address of every local interface. */
function systemLocalAddresses(): string[] {
  return Object.values(networkInterfaces()).flatMap((list) => (list ?? []).map((i) => i.address));
}

/** The error code of a rejected c-ares promise. */
function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'EUNKNOWN';
}

/** A promise that rejects with ETIMEOUT after `ms`, and its cancel function. */
function deadline(ms: number): { promise: Promise<never>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined;
  const promise = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(Object.assign(new Error('deadline'), { code: 'ETIMEOUT' })), ms);
    timer.unref();
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

/** Folds one family's settled query into an outcome. */
function outcome(settled: PromiseSettledResult<RawAnswer[]>): FamilyOutcome {
  return settled.status === 'fulfilled' ? { ok: true, answers: settled.value } : { ok: false, code: errorCode(settled.reason) };
}

/** Shortest TTL of the answers, clamped, in ms. */
function cacheLifetimeMs(answers: RawAnswers): number {
  let ttl = MAX_TTL_S;
  for (const a of [...answers.v4, ...answers.v6]) ttl = Math.min(ttl, a.ttl);
  return Math.max(MIN_TTL_S, Math.min(MAX_TTL_S, ttl)) * 1000;
}

/** Resolves allowed names to checked, dialable addresses. */
export class EgressResolver {
  readonly #backend: DnsBackend;
  readonly #timeoutMs: number;
  readonly #globalAllowPrivate: () => CidrSet;
  readonly #selfEndpoints: () => readonly SelfEndpoint[];
  readonly #localAddresses: () => readonly string[];
  readonly #clock: () => number;
  readonly #cacheMax: number;
  // Insertion order doubles as LRU order: a hit is re-inserted at the end.
  readonly #cache = new Map<string, CacheEntry>();
  readonly #inflight = new Map<string, Promise<RawAnswers>>();

  /** Builds the resolver; throws if a server entry is not a valid "HOST:PORT". */
  constructor(options: EgressResolverOptions) {
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const tries = options.tries ?? DEFAULT_TRIES;
    // c-ares roughly doubles the wait on each retry; size the first try so all tries fit the
    // deadline. The deadline itself is still enforced here, whatever c-ares does.
    const attemptTimeoutMs = Math.max(50, Math.floor(this.#timeoutMs / (2 ** tries - 1)));
    const create = options.createBackend ?? createAresBackend;
    this.#backend = create({ servers: options.servers, attemptTimeoutMs, tries });
    this.#globalAllowPrivate = options.globalAllowPrivate;
    this.#selfEndpoints = options.selfEndpoints;
    this.#localAddresses = options.localAddresses ?? systemLocalAddresses;
    this.#clock = options.clock ?? Date.now;
    this.#cacheMax = options.cacheMaxEntries ?? DEFAULT_CACHE_ENTRIES;
  }

  /**
   * Checked addresses of an allowed destination. Throws AddressDeniedError (a denial) when every
   * address is forbidden, DnsError (an error) when the name has no address at all.
   */
  async resolve(req: ResolveRequest): Promise<ResolveResult> {
    // IP literals skip DNS but not the checks: the same classes and self-loop rules apply.
    const raw = req.hostKind === 'name' ? await this.#answers(req.host) : [req.host];
    const result = this.#check(raw, req);
    if (result.dropped.length === 0 && result.addresses.length === 0) {
      throw new DnsError(req.host, 'malformed DNS response');
    }
    if (result.addresses.length === 0) throw new AddressDeniedError(req.host, result.dropped);
    return result;
  }

  /** Number of names currently cached (for tests and metrics). */
  get cacheSize(): number {
    return this.#cache.size;
  }

  /** Forgets every cached answer. */
  clearCache(): void {
    this.#cache.clear();
  }

  /**
   * Raw addresses of a name, IPv4 first. The cache holds raw answers, never verdicts, so caching
   * does not weaken rebinding protection: every use re-classifies against the current policy, and
   * the dial goes to exactly the address returned — a rebinding server only gets to change the
   * answer of a *later* lookup, which is classified again before anything is dialed.
   */
  async #answers(host: string): Promise<readonly string[]> {
    return (this.#cached(host) ?? (await this.#lookupOnce(host))).addresses;
  }

  /** A live cache entry (refreshed to most-recently-used), or undefined. */
  #cached(host: string): RawAnswers | undefined {
    const entry = this.#cache.get(host);
    if (entry === undefined) return undefined;
    this.#cache.delete(host);
    if (entry.expiresAt <= this.#clock()) return undefined;
    this.#cache.set(host, entry);
    return entry.answers;
  }

  /** Shares one in-flight lookup among concurrent callers for the same name. */
  #lookupOnce(host: string): Promise<RawAnswers> {
    const pending = this.#inflight.get(host);
    if (pending !== undefined) return pending;
    const lookup = this.#lookup(host).finally(() => this.#inflight.delete(host));
    this.#inflight.set(host, lookup);
    return lookup;
  }

  /** Queries A and AAAA in parallel under one deadline; caches complete answers. */
  async #lookup(host: string): Promise<RawAnswers> {
    // The trailing dot makes the name absolute: no search domain is ever appended to it.
    const fqdn = `${host}.`;
    const limit = deadline(this.#timeoutMs);
    const [a, aaaa] = await Promise.allSettled([
      Promise.race([this.#backend.resolve4(fqdn, { ttl: true }), limit.promise]),
      Promise.race([this.#backend.resolve6(fqdn, { ttl: true }), limit.promise]),
    ]).finally(limit.cancel);
    const answers = this.#combine(host, outcome(a), outcome(aaaa));
    if (answers.complete) this.#store(host, answers);
    return answers;
  }

  /** Merges the two families; throws DnsError when neither produced an address. */
  #combine(host: string, v4: FamilyOutcome, v6: FamilyOutcome): RawAnswers {
    const four = v4.ok ? v4.answers : [];
    const six = v6.ok ? v6.answers : [];
    if (four.length + six.length === 0) throw new DnsError(host, this.#detail(v4, v6));
    const definite = (o: FamilyOutcome): boolean => o.ok || EMPTY_CODES.has(o.code);
    return { v4: four, v6: six, addresses: [...four, ...six].map((a) => a.address), complete: definite(v4) && definite(v6) };
  }

  /** Human detail of a failed lookup: the more telling of the two families' failures. */
  #detail(v4: FamilyOutcome, v6: FamilyOutcome): string {
    const codes = [v4, v6].flatMap((o) => (o.ok ? [] : [o.code]));
    // A real failure (timeout, SERVFAIL) explains more than "no records of this type".
    const code = codes.find((c) => c !== 'ENODATA') ?? codes[0] ?? 'ENODATA';
    if (code === 'ETIMEOUT') return `timeout after ${this.#timeoutMs} ms`;
    return DNS_DETAILS[code] ?? code;
  }

  /** Caches answers under the shortest clamped TTL, evicting the least recently used name. */
  #store(host: string, answers: RawAnswers): void {
    if (this.#cacheMax <= 0) return;
    this.#cache.delete(host);
    this.#cache.set(host, { answers, expiresAt: this.#clock() + cacheLifetimeMs(answers) });
    while (this.#cache.size > this.#cacheMax) {
      const oldest = this.#cache.keys().next().value as string;
      this.#cache.delete(oldest);
    }
  }

  /** Classifies every address; keeps the dialable ones (IPv4 first, no duplicates). */
  #check(raw: readonly string[], req: ResolveRequest): ResolveResult {
    const seen = new Set<string>();
    const v4: string[] = [];
    const v6: string[] = [];
    const dropped: DroppedAddress[] = [];
    const isSelf = this.#selfMatcher(req.port);
    const global = this.#globalAllowPrivate();
    for (const text of raw) {
      // Canonical text unwraps ::ffff:a.b.c.d, so a mapped answer is judged and dialed as IPv4.
      const ip = canonicalIp(text);
      if (ip === null || seen.has(ip)) continue;
      seen.add(ip);
      const reason = isSelf(ip) ? 'self_loop' : classReason(ip, req.allowPrivate, global);
      if (reason !== null) dropped.push({ ip, reason });
      else (ip.includes(':') ? v6 : v4).push(ip);
    }
    return { addresses: [...v4, ...v6], dropped };
  }

  /** A predicate for "this address, at req.port, reaches one of our own listeners". */
  #selfMatcher(port: number): (ip: string) => boolean {
    const endpoints = this.#selfEndpoints().filter((e) => e.port === port);
    if (endpoints.length === 0) return () => false;
    const exact = new Set<string>();
    let anyV4 = false;
    let anyV6 = false;
    for (const e of endpoints) {
      const ip = canonicalIp(e.address);
      if (ip === '0.0.0.0') anyV4 = true;
      else if (ip === '::') anyV6 = true;
      else if (ip !== null) exact.add(ip);
    }
    // A wildcard listener answers on every local address; "::" is dual-stack and takes IPv4 too.
    if (anyV4 || anyV6) this.#addLocal(exact, anyV6);
    return (ip) => {
      if (exact.has(ip)) return true;
      const cls = classifyAddress(ip);
      // Dialing 0.0.0.0 or :: connects to this host itself.
      if (cls === 'unspecified') return true;
      // All of 127/8 and ::1 reach a wildcard listener, not only the addresses lo carries.
      if (cls === 'loopback') return ip.includes(':') ? anyV6 : anyV4 || anyV6;
      return false;
    };
  }

  /** Adds local interface addresses (IPv6 ones only for a "::" listener). */
  #addLocal(into: Set<string>, withV6: boolean): void {
    for (const text of this.#localAddresses()) {
      const ip = canonicalIp(text);
      if (ip !== null && (withV6 || !ip.includes(':'))) into.add(ip);
    }
  }
}


/** Reason an address's class forbids it, or null when public or opened by an allowPrivate range. */
function classReason(ip: string, own: CidrSet | null, global: CidrSet): AddressReason | null {
  const reason = addressReason(classifyAddress(ip));
  if (reason === null) return null;
  return own?.has(ip) === true || global.has(ip) ? null : reason;
}
