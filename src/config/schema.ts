/**
 * Server settings of `portcullis serve` (SPEC §6): the flag table, every default, and the zod
 * schema that turns raw values (strings from flags and env, YAML scalars from the config file)
 * into one validated, defaulted, deep-frozen ServerConfig. Sources and precedence live in load.ts.
 *
 * Units are in the names (`…Ms` is milliseconds) and unset is never zero: a setting that can be
 * absent is `null` in ServerConfig, and each help line says what absence means.
 */
import { z } from 'zod';
import { canonicalIp } from '../net/address.js';
import { CanonicalError, canonicalizeHost } from '../net/canonical.js';

// ---------------------------------------------------------------------------------------------
// Output shape

/** A TCP listen or dial address; host is canonical (lower case, IPv6 unbracketed). */
export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** A unix domain socket path (admin listener only). */
export interface UnixSocket {
  readonly path: string;
}

/** What to do when account state is older than `maxStalenessMs`; never fail open (SPEC §7). */
export type FailMode = 'closed' | 'lockdown';

/** pino level names accepted by --log-level. */
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/** Asymmetric JWS algorithms accepted for OIDC tokens. */
export type OidcAlgorithm = (typeof OIDC_ALGORITHMS)[number];

/** The state store: which backend, how stale its cache may get, and what happens beyond that. */
export type StoreConfig = {
  /** The URL as given; a redis URL may carry a password, so never log it (the logger redacts `store.url`). */
  readonly url: string;
  /** Milliseconds the local cache may lag the store before `failMode` applies; 0 = no grace at all. */
  readonly maxStalenessMs: number;
  readonly failMode: FailMode;
} & ({ readonly kind: 'file'; readonly path: string } | { readonly kind: 'redis' });

/** OIDC token verification; present only when issuer, audience and JWKS URL are all set. */
export interface OidcConfig {
  readonly issuer: string;
  readonly audience: string;
  readonly jwksUrl: string;
  /** Claim whose value (after `accountPrefix`) names the account. */
  readonly accountClaim: string;
  /** Claims tried in order for the session id; the first present wins (default sid, then jti). */
  readonly sessionClaims: readonly string[];
  readonly accountPrefix: string;
  readonly algorithms: readonly OidcAlgorithm[];
}

/**
 * The validated server configuration. Keys mirror the flags one to one (`--admin-listen` →
 * `adminListen`), except three groups whose members only make sense together: `tls` (cert and
 * key, both or neither), `store` (URL, staleness and fail mode, as SPEC §7 names them) and
 * `oidc` (all or nothing). Durations are milliseconds; `null` means "not set" as documented.
 */
export interface ServerConfig {
  /** Policy YAML file. */
  readonly policy: string;
  /** Proxy listener; port 0 asks the OS for a free port (tests). `:PORT` is host `::` (all interfaces). */
  readonly listen: HostPort;
  /** TLS on the client→proxy hop; null = plain TCP. */
  readonly tls: { readonly cert: string; readonly key: string } | null;
  /** Admin listener: TCP or a unix socket. */
  readonly adminListen: HostPort | UnixSocket;
  /** Admin token file; defaults to admin-tokens.json next to the file store (./data without one). */
  readonly adminTokenFile: string;
  /** When true, GET /metrics needs a read token. */
  readonly metricsAuth: boolean;
  readonly store: StoreConfig;
  /** DNS server for destination lookups; null = the system resolvers (/etc/resolv.conf). */
  readonly resolver: HostPort | null;
  /** Interception CA directory (created on first start when a policy needs interception). */
  readonly caDir: string;
  /** MaxMind-format database for session locations; null = locations are "unknown". */
  readonly geoip: string | null;
  /** Session lifetime from creation; null = sessions live until revoked. */
  readonly sessionTtlMs: number | null;
  /** How long revoked or expired sessions stay listed; 0 = they vanish at once. */
  readonly sessionAuditWindowMs: number;
  /** null = OIDC disabled (only token sessions authenticate). */
  readonly oidc: OidcConfig | null;
  /** Time a client has to send complete request headers. */
  readonly headerTimeoutMs: number;
  /** A connection or tunnel with no bytes either way for this long is closed. */
  readonly idleTimeoutMs: number;
  /** Hard cap on a tunnel's lifetime; null = unlimited. */
  readonly tunnelMaxDurationMs: number | null;
  /** Grace for in-flight requests on shutdown before the rest is closed; 0 = close at once. */
  readonly drainTimeoutMs: number;
  readonly logLevel: LogLevel;
}

// ---------------------------------------------------------------------------------------------
// Defaults and flags

/** Every default, in one place, spelled as a flag value would be (the schema parses them too). */
export const DEFAULTS = {
  policy: 'policies/default.yaml',
  listen: '127.0.0.1:3128',
  adminListen: '127.0.0.1:9090',
  metricsAuth: false,
  store: 'file:./data/state.json',
  storeMaxStalenessMs: 5000,
  failMode: 'closed',
  caDir: './data/ca',
  sessionAuditWindow: '7d',
  oidcAccountClaim: 'sub',
  oidcSessionClaim: 'sid,jti',
  oidcAccountPrefix: 'oidc:',
  oidcAlgorithms: 'RS256,ES256',
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  drainTimeoutMs: 30_000,
  logLevel: 'info',
} as const;

/** The data directory when the store is not a file (admin tokens live there). */
export const DEFAULT_DATA_DIR = './data';

/** One `portcullis serve` flag; `key` is its config-file key and ServerConfigSchema input key. */
export interface FlagSpec {
  /** kebab-case name without dashes. */
  readonly name: string;
  /** camelCase key. */
  readonly key: SettingKey;
  /** Value placeholder for help; null for a boolean flag. */
  readonly arg: string | null;
  readonly help: string;
  /** Help text for the default when it is not a plain DEFAULTS value. */
  readonly shownDefault?: string;
}

const FLAG_SPECS = [
  { name: 'policy', key: 'policy', arg: 'FILE', help: 'policy YAML file' },
  { name: 'listen', key: 'listen', arg: 'ADDR', help: 'proxy listener: HOST:PORT, [IPV6]:PORT or :PORT (all interfaces); port 0 = any free port' },
  { name: 'tls-cert', key: 'tlsCert', arg: 'FILE', help: 'PEM certificate for TLS on the proxy listener (needs --tls-key)', shownDefault: 'none: plain TCP' },
  { name: 'tls-key', key: 'tlsKey', arg: 'FILE', help: 'PEM private key for TLS on the proxy listener (needs --tls-cert)', shownDefault: 'none: plain TCP' },
  { name: 'admin-listen', key: 'adminListen', arg: 'ADDR|unix:PATH', help: 'admin API listener' },
  { name: 'admin-token-file', key: 'adminTokenFile', arg: 'FILE', help: 'admin tokens (JSON)', shownDefault: '<data dir>/admin-tokens.json, data dir = directory of a file: store, else ./data' },
  { name: 'metrics-auth', key: 'metricsAuth', arg: null, help: 'require a read token for GET /metrics (--no-metrics-auth to turn off)' },
  { name: 'store', key: 'store', arg: 'URL', help: 'state store: file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT]' },
  { name: 'store-max-staleness-ms', key: 'storeMaxStalenessMs', arg: 'MS', help: 'milliseconds the state cache may lag the store before --fail-mode applies; 0 = no grace' },
  { name: 'fail-mode', key: 'failMode', arg: 'closed|lockdown', help: 'when the store is stale: deny everything, or treat every account as locked down' },
  { name: 'resolver', key: 'resolver', arg: 'IP:PORT', help: 'DNS server for destination lookups (port defaults to 53)', shownDefault: 'system resolvers' },
  { name: 'ca-dir', key: 'caDir', arg: 'DIR', help: 'interception CA directory, created on first start when a policy needs interception' },
  { name: 'geoip', key: 'geoip', arg: 'FILE', help: 'MaxMind-format database for approximate session locations', shownDefault: 'none: locations are "unknown"' },
  { name: 'session-ttl', key: 'sessionTtl', arg: 'DURATION', help: 'session lifetime from sign-in, e.g. 90s, 30m, 12h, 7d', shownDefault: 'none: sessions live until revoked' },
  { name: 'session-audit-window', key: 'sessionAuditWindow', arg: 'DURATION', help: 'how long revoked or expired sessions stay listed; 0s = not at all' },
  { name: 'oidc-issuer', key: 'oidcIssuer', arg: 'ISSUER', help: 'expected "iss" of OIDC tokens; any --oidc-* flag needs issuer, audience and JWKS URL', shownDefault: 'none: OIDC off' },
  { name: 'oidc-audience', key: 'oidcAudience', arg: 'AUDIENCE', help: 'expected "aud" of OIDC tokens', shownDefault: 'none: OIDC off' },
  { name: 'oidc-jwks-url', key: 'oidcJwksUrl', arg: 'URL', help: 'issuer JWKS, https:// (http:// only for loopback)', shownDefault: 'none: OIDC off' },
  { name: 'oidc-account-claim', key: 'oidcAccountClaim', arg: 'CLAIM', help: 'claim that names the account' },
  { name: 'oidc-session-claim', key: 'oidcSessionClaim', arg: 'CLAIM[,CLAIM]', help: 'claims tried in order for the session id' },
  { name: 'oidc-account-prefix', key: 'oidcAccountPrefix', arg: 'PREFIX', help: 'prefix of OIDC account names, so tokens cannot claim token-session accounts' },
  { name: 'oidc-algorithms', key: 'oidcAlgorithms', arg: 'ALG[,ALG]', help: 'accepted JWS algorithms: RS*, PS*, ES* or EdDSA (never HS* or none)' },
  { name: 'header-timeout-ms', key: 'headerTimeoutMs', arg: 'MS', help: 'milliseconds a client has to send complete request headers (1 or more)' },
  { name: 'idle-timeout-ms', key: 'idleTimeoutMs', arg: 'MS', help: 'milliseconds without traffic before a connection or tunnel is closed (1 or more)' },
  { name: 'tunnel-max-duration-ms', key: 'tunnelMaxDurationMs', arg: 'MS', help: 'hard cap on a tunnel lifetime in milliseconds (1 or more)', shownDefault: 'none: unlimited' },
  { name: 'drain-timeout-ms', key: 'drainTimeoutMs', arg: 'MS', help: 'milliseconds in-flight requests get on shutdown; 0 = close at once' },
  { name: 'log-level', key: 'logLevel', arg: 'LEVEL', help: 'fatal, error, warn, info, debug, trace or silent' },
] as const satisfies readonly FlagSpec[];

/** The settings flags in help order (all but --config, which names the file holding the others). */
export const FLAGS: readonly FlagSpec[] = FLAG_SPECS;

/** Every `portcullis serve` flag name, kebab-case without dashes, `config` first. */
export const FLAG_NAMES: readonly string[] = ['config', ...FLAG_SPECS.map((f) => f.name)];

/** `PORTCULLIS_<FLAG>` in upper snake case: admin-listen → PORTCULLIS_ADMIN_LISTEN. */
export function envVarName(flag: string): string {
  return `PORTCULLIS_${flag.toUpperCase().replaceAll('-', '_')}`;
}

/** Help text: one line per flag with its value, meaning and default (`--config` first). */
export function describeFlags(): string {
  const rows: Array<[string, string]> = [['--config FILE', 'YAML file of settings, camelCase keys (adminListen: ...); flags > env > file > defaults']];
  for (const f of FLAG_SPECS) {
    const fallback: unknown = (DEFAULTS as Record<string, unknown>)[f.key];
    const shown = 'shownDefault' in f ? f.shownDefault : String(fallback);
    rows.push([f.arg === null ? `--${f.name}` : `--${f.name} ${f.arg}`, `${f.help} [default: ${shown}]`]);
  }
  const width = Math.max(...rows.map(([left]) => left.length)) + 2;
  return rows.map(([left, right]) => `  ${left.padEnd(width)}${right}`).join('\n');
}

// ---------------------------------------------------------------------------------------------
// Value parsers: each returns the parsed value, or Invalid naming what was expected.

/** A rejected value; `expected` completes "expected …, got <value>". */
class Invalid {
  constructor(readonly expected: string) {}
}

type Parser<T> = (raw: unknown) => T | Invalid;

const MAX_SHOWN = 64;

/** The offending value for a message: JSON-quoted and cut short, URL passwords masked. */
function showValue(raw: unknown): string {
  if (typeof raw === 'string') {
    const masked = raw.replace(/(\/\/[^/@\s:]*):[^/@\s]*@/g, '$1:***@');
    return JSON.stringify(masked.length > MAX_SHOWN ? `${masked.slice(0, MAX_SHOWN)}…` : masked);
  }
  if (Array.isArray(raw)) return 'a list';
  if (raw !== null && typeof raw === 'object') return 'a mapping';
  return String(raw);
}

/** Wraps a parser as a zod transform whose single issue reads "expected X, got Y". */
function check<T>(expected: string, parse: Parser<T>) {
  return (raw: unknown, ctx: z.RefinementCtx<unknown>): T => {
    const out = parse(raw);
    if (out instanceof Invalid) {
      ctx.issues.push({ code: 'custom', message: `expected ${out.expected || expected}, got ${showValue(raw)}`, input: raw });
      return z.NEVER;
    }
    return out;
  };
}

/** A setting with a default: the default goes through the same parser as user input. */
function withDefault<T>(expected: string, parse: Parser<T>, fallback: string | number | boolean) {
  return z.unknown().transform(check(expected, parse)).prefault(fallback);
}

/** A setting that may be absent: null when unset (zod's default() skips the parser for undefined). */
function optional<T>(expected: string, parse: Parser<T>) {
  const run = check(expected, parse);
  return z
    .unknown()
    .transform((raw, ctx): T | null => run(raw, ctx))
    .default(null);
}

const DIGITS = /^(0|[1-9][0-9]*)$/;

/** A non-negative integer from a decimal string or a YAML number; no signs, exponents or hex. */
function toInteger(raw: unknown): number | null {
  if (typeof raw === 'number') return Number.isSafeInteger(raw) && raw >= 0 ? raw : null;
  if (typeof raw !== 'string' || !DIGITS.test(raw)) return null;
  const n = Number(raw);
  return Number.isSafeInteger(n) ? n : null;
}

// setTimeout turns any delay above 2^31-1 ms (~24.8 days) into 1 ms, so larger timer
// settings would fire at once instead of "practically never".
const MAX_TIMER_MS = 2_147_483_647;

/** Milliseconds for a timer, from `min` to the largest delay setTimeout honours. */
function timerMs(min: 0 | 1): Parser<number> {
  const expected = `an integer from ${min} to ${MAX_TIMER_MS} (milliseconds)`;
  return (raw) => {
    const n = toInteger(raw);
    return n === null || n < min || n > MAX_TIMER_MS ? new Invalid(expected) : n;
  };
}

const DURATION_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(?:[0-9]+(?:ms|s|m|h|d))+$/;
const DURATION_PART = /([0-9]+)(ms|s|m|h|d)/g;

/** "90s", "30m", "12h", "7d", "500ms", or combined "1h30m" → milliseconds; null if not a duration. A bare number has no unit and is refused. */
export function parseDuration(text: string): number | null {
  if (!DURATION.test(text)) return null;
  let total = 0;
  for (const [, amount, unit] of text.matchAll(DURATION_PART)) {
    total += Number(amount) * (DURATION_UNITS[unit as string] as number);
  }
  return Number.isSafeInteger(total) ? total : null;
}

/** A duration of at least `min` milliseconds. */
function duration(min: number): Parser<number> {
  return (raw) => {
    const ms = typeof raw === 'string' ? parseDuration(raw) : null;
    return ms === null || ms < min ? new Invalid('') : ms;
  };
}

const DURATION_EXPECTED = 'a duration such as 90s, 30m, 12h or 7d';

/** One of a closed set of words. */
function oneOf<const T extends string>(values: readonly T[]): Parser<T> {
  return (raw) => (typeof raw === 'string' && (values as readonly string[]).includes(raw) ? (raw as T) : new Invalid(''));
}

/** true/false from a string or a YAML boolean. */
const bool: Parser<boolean> = (raw) => {
  if (typeof raw === 'boolean') return raw;
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  return new Invalid('');
};

/** A non-empty string without control characters (paths, issuers, audiences). */
const text: Parser<string> = (raw) =>
  typeof raw === 'string' && raw.length > 0 && !/[\u0000-\u001f\u007f]/.test(raw) ? raw : new Invalid('');

/** A non-empty word without whitespace or commas (claim names, prefixes). */
const word: Parser<string> = (raw) => (typeof raw === 'string' && /^[^\s,]+$/.test(raw) ? raw : new Invalid(''));

/** A comma-separated string or a YAML list of words, at least one, no duplicates. */
function list<T extends string>(item: Parser<T>): Parser<readonly T[]> {
  return (raw) => {
    const parts = typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : Array.isArray(raw) ? raw : null;
    if (parts === null || parts.length === 0) return new Invalid('');
    const out: T[] = [];
    for (const part of parts) {
      const v = item(part);
      if (v instanceof Invalid || out.includes(v)) return new Invalid('');
      out.push(v);
    }
    return out;
  };
}

const PORT_TEXT = /^(0|[1-9][0-9]{0,4})$/;

/** "HOST:PORT", "[V6]:PORT" or ":PORT" (→ host "::"); port 0..65535, or 1..65535 when `dialable`. */
function hostPort(textValue: string, dialable: boolean): HostPort | null {
  let hostText: string;
  let portText: string;
  if (textValue.startsWith('[')) {
    const close = textValue.indexOf(']');
    if (close < 0 || textValue[close + 1] !== ':') return null;
    hostText = textValue.slice(1, close);
    portText = textValue.slice(close + 2);
    if (!hostText.includes(':')) return null;
  } else {
    const colon = textValue.lastIndexOf(':');
    if (colon < 0) return null;
    hostText = textValue.slice(0, colon);
    portText = textValue.slice(colon + 1);
    // An unbracketed IPv6 is ambiguous ("::1:80"): which colon starts the port?
    if (hostText.includes(':')) return null;
  }
  if (!PORT_TEXT.test(portText)) return null;
  const port = Number(portText);
  if (port > 65535 || (dialable && port === 0)) return null;
  // ":PORT" binds every interface; "::" is dual-stack on Linux, so IPv4 clients are served too.
  if (hostText === '') return dialable ? null : { host: '::', port };
  try {
    return { host: canonicalizeHost(hostText).host, port };
  } catch (err) {
    if (err instanceof CanonicalError) return null;
    throw err;
  }
}

/** A listen address. */
const listenAddress: Parser<HostPort> = (raw) => (typeof raw === 'string' && hostPort(raw, false)) || new Invalid('');

/** A listen address or unix:PATH. */
const adminAddress: Parser<HostPort | UnixSocket> = (raw) => {
  if (typeof raw !== 'string') return new Invalid('');
  if (raw.startsWith('unix:')) {
    const path = text(raw.slice('unix:'.length));
    return path instanceof Invalid ? path : { path };
  }
  return hostPort(raw, false) ?? new Invalid('');
};

/** A DNS server: an IP literal (a name would need the very lookup it configures), port 53 by default. */
const resolverAddress: Parser<HostPort> = (raw) => {
  if (typeof raw !== 'string') return new Invalid('');
  const bare = raw.startsWith('[') && raw.endsWith(']') ? raw.slice(1, -1) : raw;
  const withPort = canonicalIp(bare) !== null ? (bare.includes(':') ? `[${bare}]:53` : `${bare}:53`) : raw;
  const hp = hostPort(withPort, true);
  return hp !== null && canonicalIp(hp.host) !== null ? hp : new Invalid('');
};

/** Parsed --store: the URL, its backend, and for file: the path (relative to the working directory). */
type StoreTarget = { readonly url: string } & ({ readonly kind: 'file'; readonly path: string } | { readonly kind: 'redis' });

/** file:PATH, file:///ABS/PATH, redis://… or rediss://… (host required). */
const storeUrl: Parser<StoreTarget> = (raw) => {
  if (typeof raw !== 'string') return new Invalid('');
  if (raw.startsWith('file://')) {
    // file:///abs/path only; "file://host/..." names a remote host we cannot write to.
    if (!raw.startsWith('file:///')) return new Invalid('');
    const path = text(decodeURIComponent(raw.slice('file://'.length)));
    return path instanceof Invalid ? path : { url: raw, kind: 'file', path };
  }
  if (raw.startsWith('file:')) {
    // Not WHATWG parsing: it would make "file:./data/state.json" absolute (/data/state.json).
    const path = text(raw.slice('file:'.length));
    return path instanceof Invalid ? path : { url: raw, kind: 'file', path };
  }
  if (!URL.canParse(raw)) return new Invalid('');
  const url = new URL(raw);
  if ((url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') return new Invalid('');
  return { url: raw, kind: 'redis' };
};

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/** https:// URL; plain http:// only on loopback (tests, a local JWKS proxy): keys fetched in clear text could be swapped. */
const jwksUrl: Parser<string> = (raw) => {
  if (typeof raw !== 'string' || !URL.canParse(raw)) return new Invalid('');
  const url = new URL(raw);
  if (url.protocol === 'https:' || (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname))) return raw;
  return new Invalid('');
};

// Asymmetric only: with HS* the public JWKS key would be the HMAC secret (algorithm confusion),
// and "none" is no signature at all.
const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const satisfies readonly LogLevel[];

// ---------------------------------------------------------------------------------------------
// Schema

const HOST_PORT = 'HOST:PORT';
const OIDC_KEYS = ['oidcIssuer', 'oidcAudience', 'oidcJwksUrl', 'oidcAccountClaim', 'oidcSessionClaim', 'oidcAccountPrefix', 'oidcAlgorithms'] as const;
const OIDC_REQUIRED = ['oidcIssuer', 'oidcAudience', 'oidcJwksUrl'] as const;

// OIDC settings with defaults are plain optionals here and defaulted in assemble(): "any OIDC
// setting given" must mean given by the user, which a prefilled default would hide.
const SETTINGS = {
  policy: withDefault('a file path', text, DEFAULTS.policy),
  listen: withDefault(HOST_PORT, listenAddress, DEFAULTS.listen),
  tlsCert: optional('a file path', text),
  tlsKey: optional('a file path', text),
  adminListen: withDefault(`${HOST_PORT} or unix:PATH`, adminAddress, DEFAULTS.adminListen),
  adminTokenFile: optional('a file path', text),
  metricsAuth: withDefault('true|false', bool, DEFAULTS.metricsAuth),
  store: withDefault('file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT]', storeUrl, DEFAULTS.store),
  storeMaxStalenessMs: withDefault('', timerMs(0), DEFAULTS.storeMaxStalenessMs),
  failMode: withDefault('closed|lockdown', oneOf<FailMode>(['closed', 'lockdown']), DEFAULTS.failMode),
  resolver: optional('IP:PORT of a DNS server', resolverAddress),
  caDir: withDefault('a directory path', text, DEFAULTS.caDir),
  geoip: optional('a file path', text),
  sessionTtl: optional(`${DURATION_EXPECTED} (more than 0)`, duration(1)),
  sessionAuditWindow: withDefault(DURATION_EXPECTED, duration(0), DEFAULTS.sessionAuditWindow),
  oidcIssuer: optional('an issuer identifier', text),
  oidcAudience: optional('an audience', text),
  oidcJwksUrl: optional('an https:// URL (http:// only for localhost)', jwksUrl),
  oidcAccountClaim: optional('a claim name', word),
  oidcSessionClaim: optional('claim names separated by commas', list(word)),
  oidcAccountPrefix: optional('a non-empty prefix without spaces', word),
  oidcAlgorithms: optional(`a comma-separated list of ${OIDC_ALGORITHMS.join('|')}`, list(oneOf(OIDC_ALGORITHMS))),
  headerTimeoutMs: withDefault('', timerMs(1), DEFAULTS.headerTimeoutMs),
  idleTimeoutMs: withDefault('', timerMs(1), DEFAULTS.idleTimeoutMs),
  tunnelMaxDurationMs: optional('', timerMs(1)),
  drainTimeoutMs: withDefault('', timerMs(0), DEFAULTS.drainTimeoutMs),
  logLevel: withDefault(LOG_LEVELS.join('|'), oneOf(LOG_LEVELS), DEFAULTS.logLevel),
};

/** A settings key: camelCase flag name, also the config-file key. */
export type SettingKey = keyof typeof SETTINGS;

/** Every settings key, in schema order. */
export const SETTING_KEYS = Object.keys(SETTINGS) as SettingKey[];

type Settings = z.output<z.ZodObject<typeof SETTINGS>>;

/** Issue params of a cross-setting rule: the keys that must also be set (load.ts spells them per source). */
export interface RequiresParams {
  readonly requires: readonly SettingKey[];
}

/** "needs a and b as well", with each key spelled by `spell`. */
export function requiresMessage(keys: readonly string[]): string {
  const names = keys.length > 1 ? `${keys.slice(0, -1).join(', ')} and ${keys.at(-1)}` : (keys[0] ?? '');
  return `needs ${names} as well`;
}

/** Rules between settings, reported on the first setting the user gave. */
function crossChecks(s: Settings, ctx: z.RefinementCtx<Settings>): void {
  if ((s.tlsCert === null) !== (s.tlsKey === null)) {
    const [given, missing] = s.tlsCert !== null ? (['tlsCert', 'tlsKey'] as const) : (['tlsKey', 'tlsCert'] as const);
    const params: RequiresParams = { requires: [missing] };
    ctx.issues.push({ code: 'custom', path: [given], message: requiresMessage([missing]), params, input: s[given] });
  }
  const given = OIDC_KEYS.find((k) => s[k] !== null);
  const missing = OIDC_REQUIRED.filter((k) => s[k] === null);
  if (given !== undefined && missing.length > 0) {
    const params: RequiresParams = { requires: missing };
    ctx.issues.push({ code: 'custom', path: [given], message: requiresMessage(missing), params, input: s[given] });
  }
}

/** Recursively freezes plain objects and arrays. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

/** Parsed settings → the grouped, frozen ServerConfig. */
function assemble(s: Settings): ServerConfig {
  const dataDir = s.store.kind === 'file' ? dirnameOf(s.store.path) : DEFAULT_DATA_DIR;
  const oidc: OidcConfig | null =
    s.oidcIssuer === null || s.oidcAudience === null || s.oidcJwksUrl === null
      ? null
      : {
          issuer: s.oidcIssuer,
          audience: s.oidcAudience,
          jwksUrl: s.oidcJwksUrl,
          accountClaim: s.oidcAccountClaim ?? DEFAULTS.oidcAccountClaim,
          sessionClaims: s.oidcSessionClaim ?? DEFAULTS.oidcSessionClaim.split(','),
          accountPrefix: s.oidcAccountPrefix ?? DEFAULTS.oidcAccountPrefix,
          algorithms: s.oidcAlgorithms ?? (DEFAULTS.oidcAlgorithms.split(',') as OidcAlgorithm[]),
        };
  return deepFreeze({
    policy: s.policy,
    listen: s.listen,
    tls: s.tlsCert !== null && s.tlsKey !== null ? { cert: s.tlsCert, key: s.tlsKey } : null,
    adminListen: s.adminListen,
    adminTokenFile: s.adminTokenFile ?? joinPath(dataDir, 'admin-tokens.json'),
    metricsAuth: s.metricsAuth,
    store: { ...s.store, maxStalenessMs: s.storeMaxStalenessMs, failMode: s.failMode },
    resolver: s.resolver,
    caDir: s.caDir,
    geoip: s.geoip,
    sessionTtlMs: s.sessionTtl,
    sessionAuditWindowMs: s.sessionAuditWindow,
    oidc,
    headerTimeoutMs: s.headerTimeoutMs,
    idleTimeoutMs: s.idleTimeoutMs,
    tunnelMaxDurationMs: s.tunnelMaxDurationMs,
    drainTimeoutMs: s.drainTimeoutMs,
    logLevel: s.logLevel,
  });
}

/** Directory part of a slash path ("." for a bare name); no node:path so the schema stays platform-neutral. */
function dirnameOf(path: string): string {
  const slash = path.lastIndexOf('/');
  if (slash < 0) return '.';
  return slash === 0 ? '/' : path.slice(0, slash);
}

/** Joins a directory and a file name with one slash. */
function joinPath(dir: string, name: string): string {
  return dir.endsWith('/') ? `${dir}${name}` : `${dir}/${name}`;
}

/**
 * Raw settings (camelCase keys; strings, numbers, booleans or lists) → ServerConfig. Strict:
 * unknown keys are errors. Each issue's path is the setting key; cross-setting issues carry
 * RequiresParams. Use loadConfig() for flags, env and file; this is the shared core.
 */
export const ServerConfigSchema = z.strictObject(SETTINGS).superRefine(crossChecks).transform(assemble);
