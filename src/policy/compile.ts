/**
 * Compiles a validated policy into lookup tables, once per load, so that decide() costs the
 * same with ten rules or a hundred thousand: an exact-host hash, a suffix hash for "*." patterns
 * (looked up label by label), CIDR sets and pre-built matchers.
 */
import { CidrSet } from '../net/address.js';
import { compileAccountGlob, compilePathGlobs } from './glob.js';
import { parseHostPattern } from './host-pattern.js';
import type { LoadedPolicy } from './load.js';
import type { LockdownMode, Policy } from './schema.js';

/** Ports allowed when a destination sets no `ports:`. */
export const DEFAULT_PORTS: ReadonlySet<number> = new Set([80, 443]);

/** A destination ready for matching. */
export interface CompiledDestination {
  readonly name: string;
  readonly index: number;
  readonly ports: ReadonlySet<number>;
  readonly schemes: ReadonlySet<string>;
  readonly methods: ReadonlySet<string> | null;
  readonly paths: RegExp | null;
  readonly inspect: boolean;
  readonly lockdown: LockdownMode;
  readonly connector: boolean;
  readonly websocket: boolean;
  readonly developerOnly: boolean;
  /** Private ranges this destination alone may resolve into; null when none. */
  readonly allowPrivate: CidrSet | null;
}

/** An account rule ready for matching. */
export interface CompiledAccountRule {
  readonly index: number;
  readonly match: string;
  readonly test: (account: string) => boolean;
  readonly mode: 'enforce' | 'report';
  /** Allowed destination indexes, in the order the rule lists them. */
  readonly allow: readonly number[];
  readonly allowSet: ReadonlySet<number>;
}

/** Lockdown settings with sets built. */
export interface CompiledLockdown {
  readonly methods: ReadonlySet<string>;
  readonly maxUrlLength: number;
  readonly maxRequestBytes: number;
  readonly maxQueryEntropy: number;
  readonly headers: ReadonlySet<string>;
}

/** The compiled policy: immutable, shared by every request until the next reload swaps it. */
export interface CompiledPolicy {
  readonly policy: Policy;
  readonly file: string;
  readonly hash: string;
  readonly destinations: readonly CompiledDestination[];
  readonly exact: ReadonlyMap<string, readonly CompiledDestination[]>;
  readonly wildcard: ReadonlyMap<string, readonly CompiledDestination[]>;
  readonly denyExact: ReadonlySet<string>;
  readonly denyWildcard: ReadonlySet<string>;
  readonly accounts: readonly CompiledAccountRule[];
  readonly lockdown: CompiledLockdown;
  readonly allowPrivate: CidrSet;
  /** Memo of account name → matching rule index (-1: none). Bounded; only a cache. */
  readonly accountMemo: Map<string, number>;
  /** True when any destination sets inspect: true (the server then needs a CA). */
  readonly needsInterception: boolean;
}

function push<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else if (!list.includes(value)) list.push(value);
}

function hostKey(raw: string): { wildcard: boolean; value: string } {
  const parsed = parseHostPattern(raw);
  // The loader has already rejected bad patterns; this guards direct callers of compile().
  if ('error' in parsed) throw new Error(`invalid host pattern "${raw}": ${parsed.error}`);
  return { wildcard: parsed.kind === 'wildcard', value: parsed.value };
}

/** Compiles a loaded policy. Throws only on input the loader would have rejected. */
export function compilePolicy(loaded: Pick<LoadedPolicy, 'policy' | 'file' | 'hash'>): CompiledPolicy {
  const { policy } = loaded;
  const destinations: CompiledDestination[] = [];
  const byName = new Map<string, number>();
  const exact = new Map<string, CompiledDestination[]>();
  const wildcard = new Map<string, CompiledDestination[]>();

  for (const [name, d] of Object.entries(policy.destinations)) {
    const compiled: CompiledDestination = Object.freeze({
      name,
      index: destinations.length,
      ports: d.ports ? new Set(d.ports) : DEFAULT_PORTS,
      schemes: new Set(d.schemes),
      methods: d.methods ? new Set(d.methods) : null,
      paths: d.paths ? compilePathGlobs(d.paths) : null,
      inspect: d.inspect,
      lockdown: d.lockdown,
      connector: d.connector,
      websocket: d.websocket,
      developerOnly: d.developerOnly,
      allowPrivate: d.allowPrivate.length > 0 ? new CidrSet(d.allowPrivate) : null,
    });
    byName.set(name, compiled.index);
    destinations.push(compiled);
    for (const host of d.hosts) {
      const key = hostKey(host);
      push(key.wildcard ? wildcard : exact, key.value, compiled);
    }
  }

  const denyExact = new Set<string>();
  const denyWildcard = new Set<string>();
  for (const host of policy.deny.hosts) {
    const key = hostKey(host);
    (key.wildcard ? denyWildcard : denyExact).add(key.value);
  }

  const accounts = policy.accounts.map((rule, index): CompiledAccountRule => {
    const allow = rule.allow.map((name) => {
      const i = byName.get(name);
      if (i === undefined) throw new Error(`account rule ${index} allows unknown destination "${name}"`);
      return i;
    });
    return Object.freeze({
      index,
      match: rule.match,
      test: compileAccountGlob(rule.match),
      mode: rule.mode,
      allow,
      allowSet: new Set(allow),
    });
  });

  return Object.freeze({
    policy,
    file: loaded.file,
    hash: loaded.hash,
    destinations,
    exact,
    wildcard,
    denyExact,
    denyWildcard,
    accounts,
    lockdown: Object.freeze({
      methods: new Set(policy.lockdown.methods),
      maxUrlLength: policy.lockdown.maxUrlLength,
      maxRequestBytes: policy.lockdown.maxRequestBytes,
      maxQueryEntropy: policy.lockdown.maxQueryEntropy,
      headers: new Set(policy.lockdown.headers),
    }),
    allowPrivate: new CidrSet(policy.network.allowPrivate),
    accountMemo: new Map<string, number>(),
    needsInterception: destinations.some((d) => d.inspect),
  });
}
