/**
 * The canonical destination (SPEC §1). A host is canonicalized once, here, and that value is
 * used for the decision, the DNS lookup, the dial, the forwarded Host and the log. Everything
 * the WHATWG URL parser or a resolver would quietly "fix" is either normalized the same way
 * here or rejected, so the name we judge is the name we dial.
 */
import { domainToASCII, domainToUnicode } from 'node:url';
import { boundedMemo } from '../bounded-memo.js';
import { formatIp, parseIp } from './address.js';

/** What a canonical host is: a DNS name, a dotted-quad IPv4 or a compressed IPv6. */
export type HostKind = 'name' | 'ipv4' | 'ipv6';

/** A canonical host: lower-case ASCII name, dotted quad, or unbracketed RFC 5952 IPv6. */
export interface CanonicalHost {
  readonly host: string;
  readonly hostKind: HostKind;
}

/** A canonical host with its port. */
export interface CanonicalAuthority extends CanonicalHost {
  readonly port: number;
}

/** A canonical absolute-form request target. */
export interface CanonicalTarget extends CanonicalAuthority {
  /** Lower case, without ':' (http, https, or whatever else the client sent; policy judges it). */
  readonly scheme: string;
  /** WHATWG-normalized pathname as it will be sent upstream; always starts with "/". */
  readonly path: string;
  /** Query without "?", null when the target had no "?". */
  readonly query: string | null;
}

/** Anything that cannot be canonicalized; `detail` is short, human, and never echoes input (it may hold credentials). */
export class CanonicalError extends Error {
  readonly code = 'bad_request' as const;
  readonly detail: string;

  constructor(detail: string) {
    super(detail);
    this.name = 'CanonicalError';
    this.detail = detail;
  }
}

// ---------------------------------------------------------------------------------------------
// Hosts

const MAX_RAW_HOST = 1024;
const MAX_NAME = 253;
const MAX_LABEL = 63;

// Checked on the raw text, before IDNA: domainToASCII percent-decodes ("ex%61mple") and drops
// tab/CR/LF, so these must be refused before it can hide them. C1 controls and Unicode spaces
// too. '*', '@', '/', '\', '?', '#', ':' and brackets never belong in a name.
const RAW_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const RAW_SPACE = /\s/u;
const RAW_NAME_FORBIDDEN = /[%*@/\\?#:[\]]/;

// Final shape of every label after IDNA: LDH plus underscore (_dmarc, my_host), no edge hyphen.
const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

// WHATWG "ends in a number": a last label of digits or 0x-hex makes the whole host an IPv4
// attempt, and a failed attempt is an error, never a name.
const NUMERIC_LABEL = /^(?:[0-9]+|0x[0-9a-f]*)$/;

/** Rejects control characters and whitespace anywhere in a host. */
function checkRawHost(raw: string): void {
  if (raw.length === 0) throw new CanonicalError('empty host');
  if (raw.length > MAX_RAW_HOST) throw new CanonicalError('host too long');
  if (RAW_CONTROL.test(raw)) throw new CanonicalError('control character in host');
  if (RAW_SPACE.test(raw)) throw new CanonicalError('whitespace in host');
}

/** Canonical host of an IPv6 literal (brackets already removed); mapped/compatible IPv4 unwrapped. */
function canonicalIpv6(text: string): CanonicalHost {
  if (text.includes('%')) throw new CanonicalError('IPv6 zone IDs are not allowed');
  const parsed = text.includes(':') ? parseIp(text) : null;
  if (parsed === null || parsed.version !== 6) throw new CanonicalError('invalid IPv6 literal');
  const host = formatIp(parsed);
  return { host, hostKind: host.includes(':') ? 'ipv6' : 'ipv4' };
}

const ATON_DIGITS: Readonly<Record<number, RegExp>> = { 8: /^[0-7]+$/, 10: /^[0-9]+$/, 16: /^[0-9a-f]+$/i };

/** One inet_aton part: 0x hex (possibly just "0x"), 0-prefixed octal, or decimal; -1 if invalid. */
function parseAtonPart(part: string): number {
  if (part.length === 0) return -1;
  let digits = part;
  let radix = 10;
  if (/^0x/i.test(part)) {
    digits = part.slice(2);
    radix = 16;
    if (digits === '') return 0; // WHATWG: "0x" alone is zero
  } else if (part.length > 1 && part.startsWith('0')) {
    digits = part.slice(1);
    radix = 8;
  }
  if (!ATON_DIGITS[radix]?.test(digits)) return -1;
  return parseInt(digits, radix);
}

/**
 * Every inet_aton / WHATWG IPv4 spelling as a dotted quad: 1–4 parts, each decimal, octal or
 * hex; the last part fills the remaining bytes ("127.1", "2130706433", "0x7f.0.0.1").
 */
function parseLegacyIpv4(labels: readonly string[]): string {
  if (labels.length > 4) throw new CanonicalError('invalid IPv4 address (too many parts)');
  const values = labels.map(parseAtonPart);
  if (values.some((v) => v < 0)) throw new CanonicalError('invalid IPv4 address');
  const last = values.pop() as number;
  if (values.some((v) => v > 255)) throw new CanonicalError('invalid IPv4 address (part over 255)');
  if (last >= 256 ** (4 - values.length)) throw new CanonicalError('invalid IPv4 address (out of range)');
  let n = last;
  values.forEach((v, i) => {
    n += v * 256 ** (3 - i);
  });
  return `${Math.floor(n / 0x1000000)}.${Math.floor(n / 0x10000) % 256}.${Math.floor(n / 0x100) % 256}.${n % 256}`;
}

/** Checks a punycode label decodes and re-encodes to itself (domainToASCII lets "xn--abc-" through). */
function checkPunycode(label: string): void {
  const unicode = domainToUnicode(label);
  if (unicode === '' || unicode === label || !/[^\x00-\x7f]/.test(unicode) || domainToASCII(unicode) !== label) {
    throw new CanonicalError('invalid punycode label');
  }
}

/** Validates the labels of an ASCII name. */
function checkLabels(labels: readonly string[]): void {
  for (const label of labels) {
    if (label.length === 0) throw new CanonicalError('empty label in host name');
    if (label.length > MAX_LABEL) throw new CanonicalError('host name label over 63 octets');
    if (label.startsWith('xn--')) checkPunycode(label);
    if (!LABEL.test(label)) throw new CanonicalError('invalid character in host name');
  }
}

/** Canonical host of a name or legacy IPv4 spelling (no brackets, no colon). */
function canonicalName(raw: string): CanonicalHost {
  if (RAW_NAME_FORBIDDEN.test(raw)) throw new CanonicalError('invalid character in host name');
  // UTS-46 (nontransitional) mapping and punycode, as WHATWG URL does it: full-width and
  // enclosed letters fold, ß stays ß (xn--zca), upper case folds to lower case.
  const ascii = domainToASCII(raw);
  if (ascii === '') throw new CanonicalError('invalid host name (IDNA or IPv4 parse failed)');
  // Trailing dots name the same host to every resolver; strip them all so one spelling remains.
  const name = ascii.replace(/\.+$/, '');
  if (name === '') throw new CanonicalError('host name is only dots');
  const labels = name.split('.');
  if (NUMERIC_LABEL.test(labels[labels.length - 1] as string)) {
    return { host: parseLegacyIpv4(labels), hostKind: 'ipv4' };
  }
  checkLabels(labels);
  if (name.length > MAX_NAME) throw new CanonicalError('host name over 253 octets');
  return { host: name, hostKind: 'name' };
}

/** Canonicalizes a bare host, a [bracketed] IPv6 literal or an unbracketed IPv6; throws CanonicalError. */
export const canonicalizeHost: (raw: string) => CanonicalHost = boundedMemo(canonicalizeUncached, 10_000, 1024);

function canonicalizeUncached(raw: string): CanonicalHost {
  checkRawHost(raw);
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']') || raw.length < 3) throw new CanonicalError('unterminated IPv6 literal');
    return canonicalIpv6(raw.slice(1, -1));
  }
  // A colon can only be an IPv6 literal here: ports are split off by the callers.
  if (raw.includes(':')) return canonicalIpv6(raw);
  return canonicalName(raw);
}

// ---------------------------------------------------------------------------------------------
// Ports and authorities

const PORT = /^[1-9][0-9]{0,4}$/;

/** Parses a port: ASCII decimal digits only, no sign, no leading zero, 1..65535; throws CanonicalError. */
export function parsePort(raw: string): number {
  if (!PORT.test(raw)) throw new CanonicalError('invalid port (decimal 1-65535 expected)');
  const port = Number(raw);
  if (port > 65535) throw new CanonicalError('port out of range (1-65535)');
  return port;
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = {
  http: 80,
  https: 443,
  ws: 80,
  wss: 443,
  // A WHATWG special scheme: knowing its port lets the policy deny it as scheme_not_allowed
  // (403, logged as such) instead of a bare 400.
  ftp: 21,
};

/** Default port of a scheme (http 80, https 443, ws 80, wss 443, ftp 21); undefined for others. */
export function defaultPortFor(scheme: string): number | undefined {
  return Object.hasOwn(DEFAULT_PORTS, scheme) ? DEFAULT_PORTS[scheme] : undefined;
}

// Characters that would make an authority mean something else to some parser downstream.
const AUTHORITY_FORBIDDEN = /[/\\?#]/;

/** Splits "host:port" / "[v6]:port" / "host" into the host text and the port text (null if absent). */
function splitAuthority(raw: string): { hostText: string; portText: string | null } {
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close < 0) throw new CanonicalError('unterminated IPv6 literal');
    const rest = raw.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) throw new CanonicalError('junk after IPv6 literal');
    return { hostText: raw.slice(0, close + 1), portText: rest === '' ? null : rest.slice(1) };
  }
  const colon = raw.indexOf(':');
  if (colon < 0) return { hostText: raw, portText: null };
  if (raw.indexOf(':', colon + 1) >= 0) throw new CanonicalError('IPv6 literal must be in brackets');
  return { hostText: raw.slice(0, colon), portText: raw.slice(colon + 1) };
}

/** Canonical host and port from authority text that has already passed the character checks. */
function authorityFrom(raw: string, defaultPort: number | undefined, missingPort: string): CanonicalAuthority {
  const { hostText, portText } = splitAuthority(raw);
  if (hostText === '') throw new CanonicalError('empty host');
  const host = canonicalizeHost(hostText);
  if (portText === null) {
    if (defaultPort === undefined) throw new CanonicalError(missingPort);
    return { ...host, port: defaultPort };
  }
  return { ...host, port: parsePort(portText) };
}

/** Parses a CONNECT authority or Host header ("host:port", "[v6]:port"; port optional only with defaultPort). */
export function parseAuthority(raw: string, defaultPort?: number): CanonicalAuthority {
  checkRawHost(raw);
  if (raw.includes('@')) throw new CanonicalError('userinfo is not allowed in an authority');
  if (AUTHORITY_FORBIDDEN.test(raw)) throw new CanonicalError('authority must not contain a path, query or fragment');
  return authorityFrom(raw, defaultPort, 'port required');
}

/** "host:port" with IPv6 bracketed; just the host when the port equals defaultPort. */
export function formatAuthority(a: CanonicalAuthority, defaultPort?: number): string {
  const host = a.hostKind === 'ipv6' ? `[${a.host}]` : a.host;
  return a.port === defaultPort ? host : `${host}:${a.port}`;
}

// ---------------------------------------------------------------------------------------------
// Absolute-form request targets

const SCHEME_PREFIX = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;
const TARGET_CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const TARGET_SPACE = /\s/u;

/** Splits "scheme://authority rest" at the first '/', '?' or '#' after the authority. */
function splitTarget(raw: string): { scheme: string; authority: string; rest: string } {
  const m = SCHEME_PREFIX.exec(raw);
  if (m === null) throw new CanonicalError('absolute URL with scheme:// expected');
  const start = m[0].length;
  let end = start;
  while (end < raw.length && !'/?#'.includes(raw.charAt(end))) end++;
  return { scheme: (m[1] as string).toLowerCase(), authority: raw.slice(start, end), rest: raw.slice(end) };
}

/** Checks the authority part of a URL; refuses everything that lets two parsers disagree on the host. */
function checkUrlAuthority(authority: string): void {
  if (authority === '') throw new CanonicalError('empty host');
  // "http://allowed.com@evil.com/" and "http://a.com\@b.com/": no userinfo, no backslash, ever.
  if (authority.includes('@')) throw new CanonicalError('userinfo is not allowed in the URL');
  if (authority.includes('\\')) throw new CanonicalError('backslash in URL authority');
}

/** Path and query as WHATWG URL normalizes them, parsed against the already-canonical authority. */
function pathAndQuery(scheme: string, authority: string, rest: string): { path: string; query: string | null } {
  let url: URL;
  try {
    url = new URL(`${scheme}://${authority}${rest}`);
  } catch {
    throw new CanonicalError('invalid URL path');
  }
  const path = url.pathname.startsWith('/') ? url.pathname : `/${url.pathname}`;
  return { path, query: rest.includes('?') ? url.search.slice(1) : null };
}

/** Parses an absolute-form request target ("http://Example.COM.:8080/a/../b?x=1"); throws CanonicalError. */
export const parseAbsoluteUrl: (raw: string) => CanonicalTarget = boundedMemo(parseAbsoluteUncached, 4096, 1024);

function parseAbsoluteUncached(raw: string): CanonicalTarget {
  if (TARGET_CONTROL.test(raw)) throw new CanonicalError('control character in URL');
  if (TARGET_SPACE.test(raw)) throw new CanonicalError('whitespace in URL');
  if (raw.includes('#')) throw new CanonicalError('fragment is not allowed in a request target');
  const { scheme, authority, rest } = splitTarget(raw);
  checkUrlAuthority(authority);
  const target = authorityFrom(authority, defaultPortFor(scheme), 'port required for this scheme');
  // Only the canonical authority is handed to WHATWG URL: its own host parsing never decides.
  const { path, query } = pathAndQuery(scheme, formatAuthority(target), rest);
  return { scheme, host: target.host, hostKind: target.hostKind, port: target.port, path, query };
}
