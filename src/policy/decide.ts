/**
 * decide(): the policy decision on a canonical request. Pure and synchronous: no I/O, no
 * logging, no metrics, no await. It sees only names and literals; resolved addresses are
 * classified later by the resolver, and stateful limits (rate, tunnels) by the server.
 */
import { addressReason, classifyAddress } from '../net/address.js';
import type { HostKind } from '../net/canonical.js';
import type { DenyReason, Reason } from '../reasons.js';
import type { CompiledAccountRule, CompiledDestination, CompiledPolicy } from './compile.js';
import { normalizePathForMatch } from './glob.js';

/** How the request reached the proxy. */
export type RequestKind = 'http' | 'connect' | 'intercepted';

/** Everything decide() looks at. Hosts are canonical (src/net/canonical.ts). */
export interface DecisionInput {
  readonly account: string;
  readonly kind: RequestKind;
  /** Lower-case scheme; for CONNECT the server passes "http" for port 80 and "https" otherwise. */
  readonly scheme: string;
  readonly host: string;
  readonly hostKind: HostKind;
  readonly port: number;
  /** Upper-case method; "CONNECT" for tunnels. */
  readonly method: string;
  /** Path as sent upstream (WHATWG-normalized); absent for tunnels. */
  readonly path?: string;
  /** Raw query without "?", or null/absent. */
  readonly query?: string | null;
  /** Lower-case request header names (for lockdown's header list and override headers). */
  readonly headerNames?: readonly string[];
  readonly hasBody?: boolean;
  /** Lower-case Upgrade protocol, if the request asks for one (h2c is stripped before this). */
  readonly upgrade?: string | null;
  /** Bytes of request line plus headers. */
  readonly requestBytes?: number;
  readonly lockdown: boolean;
  readonly developerMode: boolean;
}

/** The outcome: verdict, reason code and the destination rule that decided it. */
export interface Decision {
  readonly verdict: 'allow' | 'deny' | 'report';
  readonly reason: Reason;
  /** The destination that allowed the request, or the one whose rule denied it; null if none matched. */
  readonly destination: string | null;
  /** Index of the account rule that applied, or null when no rule matched the account. */
  readonly accountRule: number | null;
  /** For report verdicts: the reason enforce mode would have denied with. */
  readonly wouldDeny?: DenyReason;
  /** The compiled destination behind `destination` (interception routing, per-destination allowPrivate). */
  readonly matched?: CompiledDestination;
}

/** Headers that ask an origin to treat the request as another method. */
export const METHOD_OVERRIDE_HEADERS: ReadonlySet<string> = new Set([
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
]);

/** Reasons that report mode may relax: allowlist grounds only (SPEC §4). */
const REPORTABLE: ReadonlySet<Reason> = new Set(['not_allowlisted', 'port_not_allowed', 'method_not_allowed', 'path_not_allowed']);

/** Precedence of per-destination reasons (SPEC §1 step 4); a higher index got further. */
const PRECEDENCE: readonly DenyReason[] = [
  'scheme_not_allowed',
  'port_not_allowed',
  'developer_only',
  'lockdown_destination',
  'lockdown_connector',
  'lockdown_tunnel',
  'lockdown_upgrade',
  'lockdown_method',
  'lockdown_body',
  'lockdown_url',
  'lockdown_not_cached',
  'inspection_required',
  'method_not_allowed',
  'path_not_allowed',
  'upgrade_not_allowed',
];
const RANK = new Map<Reason, number>(PRECEDENCE.map((r, i) => [r, i]));

const ACCOUNT_MEMO_LIMIT = 10_000;

/** The first account rule whose glob matches, memoized per compiled policy. */
export function matchAccount(account: string, policy: CompiledPolicy): CompiledAccountRule | null {
  let index = policy.accountMemo.get(account);
  if (index === undefined) {
    index = policy.accounts.findIndex((rule) => rule.test(account));
    if (policy.accountMemo.size >= ACCOUNT_MEMO_LIMIT) policy.accountMemo.clear();
    policy.accountMemo.set(account, index);
  }
  return index < 0 ? null : policy.accounts[index]!;
}

/** True when the host is on the global deny list (exact, or under a "*." pattern). */
export function isDeniedHost(host: string, policy: CompiledPolicy): boolean {
  if (policy.denyExact.has(host)) return true;
  if (policy.denyWildcard.size === 0) return false;
  for (let i = host.indexOf('.'); i !== -1; i = host.indexOf('.', i + 1)) {
    if (policy.denyWildcard.has(host.slice(i + 1))) return true;
  }
  return false;
}

/** Destinations whose host patterns match, exact first, then wildcards from the longest suffix. */
export function matchingDestinations(host: string, policy: CompiledPolicy): readonly CompiledDestination[] {
  const exact = policy.exact.get(host);
  if (policy.wildcard.size === 0) return exact ?? [];
  let out: CompiledDestination[] | undefined;
  for (let i = host.indexOf('.'); i !== -1; i = host.indexOf('.', i + 1)) {
    const found = policy.wildcard.get(host.slice(i + 1));
    if (found === undefined) continue;
    out ??= exact ? [...exact] : [];
    for (const d of found) if (!out.includes(d)) out.push(d);
  }
  return out ?? exact ?? [];
}

/** Shannon entropy in bits per character. */
export function shannonEntropy(s: string): number {
  if (s.length < 2) return 0;
  const counts = new Map<string, number>();
  for (const ch of s) counts.set(ch, (counts.get(ch) ?? 0) + 1);
  let bits = 0;
  const n = [...s].length;
  for (const c of counts.values()) {
    const p = c / n;
    bits -= p * Math.log2(p);
  }
  return bits;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return s;
  }
}

/** The largest entropy of any query value, plus whether a "_method" override key is present. */
function inspectQuery(query: string): { maxEntropy: number; override: boolean } {
  let maxEntropy = 0;
  let override = false;
  for (const pair of query.split('&')) {
    const eq = pair.indexOf('=');
    const key = safeDecode(eq === -1 ? pair : pair.slice(0, eq)).toLowerCase();
    if (key === '_method') override = true;
    const value = eq === -1 ? key : safeDecode(pair.slice(eq + 1));
    const e = shannonEntropy(value);
    if (e > maxEntropy) maxEntropy = e;
  }
  return { maxEntropy, override };
}

function lockdownReason(input: DecisionInput, d: CompiledDestination, policy: CompiledPolicy): DenyReason | null {
  if (d.lockdown === 'deny') return 'lockdown_destination';
  if (d.connector) return 'lockdown_connector';
  if (input.kind === 'connect') {
    // An opaque tunnel hides method, path and body; only interception or an explicit
    // operator opt-in lets one through in lockdown.
    if (d.inspect || d.lockdown === 'allow-tunnel') return null;
    return 'lockdown_tunnel';
  }
  if (input.upgrade) return 'lockdown_upgrade';
  const rules = policy.lockdown;
  const headers = input.headerNames ?? [];
  const query = input.query ? inspectQuery(input.query) : null;
  if (!rules.methods.has(input.method) || query?.override || headers.some((h) => METHOD_OVERRIDE_HEADERS.has(h))) {
    return 'lockdown_method';
  }
  if (input.hasBody) return 'lockdown_body';
  const urlLength = (input.path ?? '/').length + (input.query != null ? input.query.length + 1 : 0);
  if (urlLength > rules.maxUrlLength) return 'lockdown_url';
  if (query && query.maxEntropy > rules.maxQueryEntropy) return 'lockdown_url';
  if ((input.requestBytes ?? 0) > rules.maxRequestBytes) return 'lockdown_url';
  for (const h of headers) if (!rules.headers.has(h)) return 'lockdown_url';
  // No response cache exists yet, so a cache-only destination is always a miss (the safe answer).
  if (d.lockdown === 'cache-only') return 'lockdown_not_cached';
  return null;
}

/** Why this one destination would refuse the request, or null if it allows it. */
function destinationReason(input: DecisionInput, d: CompiledDestination, policy: CompiledPolicy): DenyReason | null {
  if (!d.schemes.has(input.scheme)) return 'scheme_not_allowed';
  if (!d.ports.has(input.port)) return 'port_not_allowed';
  if (d.developerOnly && !input.developerMode) return 'developer_only';
  if (input.lockdown) {
    const reason = lockdownReason(input, d, policy);
    if (reason) return reason;
  }
  if (input.kind === 'connect') {
    return (d.methods || d.paths) && !d.inspect ? 'inspection_required' : null;
  }
  if (d.methods && !d.methods.has(input.method)) return 'method_not_allowed';
  if (d.paths) {
    const path = normalizePathForMatch(input.path ?? '/');
    if (path === null || !d.paths.test(path)) return 'path_not_allowed';
  }
  if (input.upgrade && !d.websocket) return 'upgrade_not_allowed';
  return null;
}

function deny(reason: DenyReason, destination: CompiledDestination | null, rule: CompiledAccountRule | null): Decision {
  const decision: Decision = { verdict: 'deny', reason, destination: destination?.name ?? null, accountRule: rule?.index ?? null };
  return destination ? { ...decision, matched: destination } : decision;
}

/** Report mode turns an allowlist-grounds denial into an allow that is logged apart. */
function maybeReport(decision: Decision, rule: CompiledAccountRule | null, input: DecisionInput): Decision {
  if (rule?.mode !== 'report' || decision.verdict !== 'deny' || !REPORTABLE.has(decision.reason)) return decision;
  // Report mode never relaxes lockdown: not_allowlisted and port_not_allowed come before the
  // lockdown checks ever ran, so in lockdown they stay denials, as lockdown_destination.
  if (input.lockdown && (decision.reason === 'not_allowlisted' || decision.reason === 'port_not_allowed')) {
    return { ...decision, reason: 'lockdown_destination' };
  }
  return { ...decision, verdict: 'report', reason: 'report_would_deny', wouldDeny: decision.reason as DenyReason };
}

/** Decides one request or tunnel against the compiled policy (SPEC §1 step 4 order). */
export function decide(input: DecisionInput, policy: CompiledPolicy): Decision {
  if (isDeniedHost(input.host, policy)) return deny('denied_host', null, null);
  const rule = matchAccount(input.account, policy);
  const candidates = matchingDestinations(input.host, policy);
  // The few destinations naming this host that the account may use, in the account's own order
  // so that "first in the allow list wins" where several match (allow lists run to hundreds).
  const allowed = rule ? candidates.filter((d) => rule.allowSet.has(d.index)) : [];
  if (allowed.length > 1) allowed.sort((a, b) => rule!.allow.indexOf(a.index) - rule!.allow.indexOf(b.index));

  if (input.hostKind !== 'name') {
    const cls = classifyAddress(input.host);
    if (cls !== 'public' && !policy.allowPrivate.has(input.host) && !allowed.some((d) => d.allowPrivate?.has(input.host))) {
      return deny(addressReason(cls)!, null, rule);
    }
    // An IP literal is reachable only where the literal itself is allowlisted.
    if (allowed.length === 0) return deny('ip_literal', null, rule);
  }
  if (input.scheme !== 'http' && input.scheme !== 'https') return deny('scheme_not_allowed', null, rule);
  if (allowed.length === 0) return maybeReport(deny('not_allowlisted', null, rule), rule, input);

  let best: { reason: DenyReason; d: CompiledDestination } | null = null;
  for (const d of allowed) {
    const reason = destinationReason(input, d, policy);
    if (reason === null) {
      return { verdict: 'allow', reason: 'allowlisted', destination: d.name, accountRule: rule!.index, matched: d };
    }
    if (best === null || RANK.get(reason)! > RANK.get(best.reason)!) best = { reason, d };
  }
  return maybeReport(deny(best!.reason, best!.d, rule), rule, input);
}
