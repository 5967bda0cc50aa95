/**
 * The closed set of reason codes (SPEC §2). Every denial, allow and error that Portcullis
 * reports carries one of these codes; status and message are looked up here and nowhere else.
 */

/** What kind of outcome a reason describes. */
export type ReasonKind = 'deny' | 'allow' | 'error';

/** One registry entry: the HTTP status a client sees and a one-line human message. */
export interface ReasonInfo {
  readonly kind: ReasonKind;
  readonly status: number;
  readonly message: string;
}

const deny = (status: number, message: string) => ({ kind: 'deny' as const, status, message });
const error = (status: number, message: string) => ({ kind: 'error' as const, status, message });

/** The registry itself. Keys are the public reason codes; keep them in sync with SPEC.md and README.md. */
export const REASONS = {
  bad_request: deny(400, 'malformed proxy request'),
  auth_missing: deny(407, 'proxy credentials required'),
  auth_invalid: deny(407, 'proxy credentials are not valid'),
  session_revoked: deny(407, 'this session was revoked'),
  session_expired: deny(407, 'this session has expired'),
  not_allowlisted: deny(403, 'destination is not on the allowlist for this account'),
  denied_host: deny(403, 'destination is on the global deny list'),
  port_not_allowed: deny(403, 'port is not allowed for this destination'),
  scheme_not_allowed: deny(403, 'scheme is not allowed'),
  method_not_allowed: deny(403, 'method is not allowed for this destination'),
  path_not_allowed: deny(403, 'path is not allowed for this destination'),
  ip_literal: deny(403, 'IP-literal destinations must be allowlisted by address'),
  ip_private: deny(403, 'destination address is in a private range'),
  ip_loopback: deny(403, 'destination address is loopback'),
  ip_link_local: deny(403, 'destination address is link-local (cloud metadata)'),
  ip_cgnat: deny(403, 'destination address is in the shared (CGNAT) range'),
  ip_multicast: deny(403, 'destination address is multicast or broadcast'),
  ip_unspecified: deny(403, 'destination address is unspecified'),
  ip_reserved: deny(403, 'destination address is reserved or not globally reachable'),
  ip_v6_embedded: deny(403, 'destination address embeds an IPv4 address (NAT64, 6to4, Teredo)'),
  self_loop: deny(403, 'destination is the proxy itself'),
  sni_mismatch: deny(403, 'TLS server name does not match the CONNECT host'),
  sni_missing: deny(403, 'TLS ClientHello carries no server name'),
  host_mismatch: deny(403, 'Host header does not match the destination'),
  inspection_required: deny(403, 'destination has method or path rules and can only be reached where they are enforced (plain HTTP or TLS interception)'),
  upgrade_not_allowed: deny(403, 'protocol upgrade is not allowed for this destination'),
  draining: deny(503, 'proxy is shutting down'),
  lockdown_destination: deny(403, 'account is in lockdown: destination is not reachable in lockdown'),
  lockdown_method: deny(403, 'account is in lockdown: write actions are disabled'),
  lockdown_connector: deny(403, 'account is in lockdown: live connectors are disabled'),
  lockdown_tunnel: deny(403, 'account is in lockdown: opaque HTTPS tunnels are disabled for this destination'),
  lockdown_upgrade: deny(403, 'account is in lockdown: protocol upgrades are disabled'),
  lockdown_body: deny(403, 'account is in lockdown: request bodies are disabled'),
  lockdown_url: deny(403, 'account is in lockdown: URL, query or headers exceed the lockdown limits'),
  lockdown_not_cached: deny(403, 'account is in lockdown: destination is served from cache only and this response is not cached'),
  developer_only: deny(403, 'destination is only reachable in developer mode'),
  body_too_large: deny(413, 'request body exceeds the limit'),
  url_too_long: deny(414, 'request URL exceeds the limit'),
  headers_too_large: deny(431, 'request headers exceed the limit'),
  rate_limited: deny(429, 'request rate limit exceeded for this account'),
  tunnel_limit: deny(429, 'concurrent tunnel limit reached for this account'),
  state_unavailable: deny(503, 'account state is unavailable (store unreachable, failing closed)'),
  allowlisted: { kind: 'allow' as const, status: 200, message: 'destination is allowlisted' },
  report_would_deny: { kind: 'allow' as const, status: 200, message: 'report mode: enforce would deny this request' },
  dns_error: error(502, 'destination name could not be resolved to an allowed address'),
  upstream_connect_error: error(502, 'could not connect to the destination'),
  upstream_timeout: error(504, 'destination did not answer in time'),
  upstream_tls_error: error(502, 'destination presented an invalid TLS certificate'),
} as const satisfies Record<string, ReasonInfo>;

/** A reason code: the stable, public name of an outcome. */
export type Reason = keyof typeof REASONS;

/** A reason that denies. */
export type DenyReason = {
  [K in Reason]: (typeof REASONS)[K]['kind'] extends 'deny' ? K : never;
}[Reason];

/** All reason codes, in registry order. */
export const REASON_CODES = Object.keys(REASONS) as Reason[];

/** True for a known reason code. */
export function isReason(code: string): code is Reason {
  return Object.hasOwn(REASONS, code);
}

/** Registry lookup. */
export function reasonInfo(code: Reason): ReasonInfo {
  return REASONS[code];
}
