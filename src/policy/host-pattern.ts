/**
 * Host patterns of the policy file (SPEC §5): an exact name, an IP literal (`203.0.113.7`,
 * `[2001:db8::1]`), or one leading `*.` label wildcard.
 *
 * A wildcard never matches the apex: `*.example.com` matches `api.example.com` and
 * `a.b.example.com` but NOT `example.com` — list both patterns to allow both.
 *
 * Patterns must already be in the canonical form src/net/canonical.ts gives request hosts,
 * because matching is a plain hash lookup on that form: a pattern that canonicalizes to
 * something else could never match as written, so it is an error whose hint is the fix.
 */
import { CanonicalError, canonicalizeHost, type CanonicalHost } from '../net/canonical.js';

/** What a host pattern matches: one name, every name under a suffix, or one address. */
export type HostPatternKind = 'exact' | 'wildcard' | 'ipv4' | 'ipv6';

/** A parsed pattern. For `wildcard`, value is the suffix without "*."; IPv6 is unbracketed and compressed. */
export interface HostPattern {
  readonly kind: HostPatternKind;
  readonly value: string;
}

/** A pattern that cannot be used, with a hint saying what to write instead. */
type PatternError = { error: string };

const WILDCARD = '*.';
const TOO_BROAD = 'a wildcard needs at least two labels after "*."';
const MID_LABEL = 'wildcards are only allowed as the whole first label';
const MAX_QUOTE = 64;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const SPACE = /\s/u;
const SCHEME = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;
const CIDR = /^\[?[0-9a-fA-F.:]+\]?\/\d+$/;
const NON_ASCII = /[^\x00-\x7f]/;

/** Parses one policy host pattern; returns an error message (with a hint) instead of throwing. */
export function parseHostPattern(raw: string): HostPattern | { error: string } {
  const shape = shapeError(raw);
  if (shape !== null) return { error: shape };
  if (raw.includes('*')) return parseWildcard(raw);
  return parseLiteral(raw, '');
}

/** A pattern in the exact spelling a policy file should use (IPv6 bracketed, wildcards with "*."). */
export function formatHostPattern(p: HostPattern): string {
  if (p.kind === 'wildcard') return WILDCARD + p.value;
  return p.kind === 'ipv6' ? `[${p.value}]` : p.value;
}

/** JSON-quotes user text for a message, cut short so a huge entry cannot flood the output. */
function q(text: string): string {
  return JSON.stringify(text.length > MAX_QUOTE ? `${text.slice(0, MAX_QUOTE)}…` : text);
}

/** The host as a URL or Host header would carry it. */
function formatCanonical(c: CanonicalHost): string {
  return c.hostKind === 'ipv6' ? `[${c.host}]` : c.host;
}

/** Best-effort canonical spelling of host text for a hint; the text itself when it has none. */
function suggest(text: string): string {
  const prefix = text.startsWith(WILDCARD) ? WILDCARD : '';
  try {
    return prefix + formatCanonical(canonicalizeHost(text.slice(prefix.length)));
  } catch {
    return text;
  }
}

/** Errors in the overall shape: empty, whitespace, or a URL piece that has its own policy key. */
function shapeError(raw: string): string | null {
  if (raw === '') return 'empty host pattern';
  if (CONTROL.test(raw)) return `${q(raw)} contains a control character`;
  if (SPACE.test(raw)) return whitespaceError(raw);
  if (SCHEME.test(raw)) {
    const host = authorityHost(raw.replace(SCHEME, ''));
    return `${q(raw)} has a scheme; write the bare host ${q(suggest(host))}; schemes are set with schemes:`;
  }
  if (raw.includes('@')) {
    return `${q(raw)} has user info; write the bare host ${q(suggest(authorityHost(raw)))}`;
  }
  if (CIDR.test(raw)) return `${q(raw)} is a CIDR range; a host pattern names one host or one address`;
  if (raw.includes('/')) {
    return `${q(raw)} has a path; write ${q(suggest(authorityHost(raw)))}; paths are set with paths:`;
  }
  if (raw.includes('?') || raw.includes('#')) {
    return `${q(raw)} has a query or fragment; write ${q(suggest(authorityHost(raw)))}`;
  }
  return portError(raw);
}

/** Whitespace: stray spaces around one host, or several hosts written as one entry. */
function whitespaceError(raw: string): string {
  const trimmed = raw.trim();
  if (trimmed !== '' && !SPACE.test(trimmed)) {
    return `${q(raw)} has surrounding whitespace; write ${q(suggest(trimmed))}`;
  }
  return `${q(raw)} contains whitespace; list each host as its own entry`;
}

/** The host part of "user@host:port/path?query" (brackets kept for IPv6). */
function authorityHost(text: string): string {
  const authority = text.split(/[/?#]/, 1)[0] ?? '';
  const host = authority.slice(authority.lastIndexOf('@') + 1);
  if (host.startsWith('[')) return host.slice(0, host.indexOf(']') + 1) || host;
  const colon = host.indexOf(':');
  // Several colons without brackets is an IPv6 literal, not host:port.
  return colon >= 0 && host.indexOf(':', colon + 1) < 0 ? host.slice(0, colon) : host;
}

/** Ports belong in `ports:`; an unbracketed IPv6 literal needs brackets. */
function portError(raw: string): string | null {
  if (raw.startsWith('[')) {
    const close = raw.indexOf(']');
    if (close > 0 && raw.charAt(close + 1) === ':') {
      return `${q(raw)} has a port; write ${q(suggest(raw.slice(0, close + 1)))}; ports are set with ports:`;
    }
    return null;
  }
  const colon = raw.indexOf(':');
  if (colon < 0) return null;
  if (raw.indexOf(':', colon + 1) < 0) {
    return `${q(raw)} has a port; write ${q(suggest(raw.slice(0, colon)))}; ports are set with ports:`;
  }
  const bracketed = suggest(`[${raw}]`);
  return bracketed.startsWith('[')
    ? `${q(raw)}: IPv6 literals are written in brackets; write ${q(bracketed)}`
    : `${q(raw)} is not a valid host pattern`;
}

/** "*.suffix" with a canonical suffix of at least two labels; every other use of "*" is an error. */
function parseWildcard(raw: string): HostPattern | PatternError {
  if (raw === '*' || raw === WILDCARD) return { error: `${q(raw)} is too broad: ${TOO_BROAD}` };
  const dot = raw.indexOf('.');
  const first = dot < 0 ? raw : raw.slice(0, dot);
  const suffix = dot < 0 ? '' : raw.slice(dot + 1);
  if (first === '**' && suffix !== '' && !suffix.includes('*')) {
    // A glob habit: here "*." already covers names at any depth below the suffix.
    return { error: `${q(raw)}: ${MID_LABEL}; write ${q(WILDCARD + suffix)}, which already matches names at any depth` };
  }
  if (first !== '*' || suffix.includes('*')) return { error: `${q(raw)}: ${MID_LABEL}, as in "*.example.com"` };
  const parsed = parseLiteral(suffix, WILDCARD);
  if ('error' in parsed) return parsed;
  if (parsed.kind !== 'exact') return { error: `${q(raw)}: a wildcard cannot cover an IP address` };
  if (parsed.value.split('.').length < 2) return { error: `${q(raw)} is too broad: ${TOO_BROAD}` };
  return { kind: 'wildcard', value: parsed.value };
}

/** An exact name or IP literal that must equal its canonical form; `prefix` ("*." or "") is kept in messages. */
function parseLiteral(text: string, prefix: string): HostPattern | PatternError {
  let canonical: CanonicalHost;
  try {
    canonical = canonicalizeHost(text);
  } catch (err) {
    if (!(err instanceof CanonicalError)) throw err;
    return { error: `${q(prefix + text)}: ${err.detail}` };
  }
  const wanted = formatCanonical(canonical);
  if (wanted !== text) return { error: nonCanonicalError(prefix + text, prefix + wanted, canonical) };
  const kind: HostPatternKind = canonical.hostKind === 'name' ? 'exact' : canonical.hostKind;
  return { kind, value: canonical.host };
}

/** Says why a pattern is not canonical, most specific reason first, with the canonical spelling. */
function nonCanonicalError(raw: string, wanted: string, canonical: CanonicalHost): string {
  if (NON_ASCII.test(raw)) return `${q(raw)} is not ASCII; use ${q(wanted)}`;
  if (raw.endsWith('.')) return `${q(raw)} has a trailing dot; write ${q(wanted)}`;
  if (raw.toLowerCase() === wanted) return `${q(raw)} is not lower case; write ${q(wanted)}`;
  if (canonical.hostKind === 'ipv4') return `${q(raw)} is not a canonical IPv4 address; write ${q(wanted)}`;
  if (canonical.hostKind === 'ipv6') return `${q(raw)} is not a canonical IPv6 address; write ${q(wanted)}`;
  return `${q(raw)} is not in canonical form; write ${q(wanted)}`;
}
