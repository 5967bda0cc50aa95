/**
 * Adversarial suite — fuzzing the pure parts (issue 4): the canonicalizer, the authority and
 * absolute-URL parsers, decide() and the ClientHello peek, with fast-check. Random strings and
 * strings mutated from real tricks (case, dots, radix, brackets, separators, Unicode) must never
 * crash them, canonicalization must be idempotent and produce only canonical text, and decide()
 * must never allow a host that an independent, obviously-correct oracle says is not allowlisted.
 * The raw request path is fuzzed end to end in test/netns/adversarial-fuzz.test.ts.
 * Runs are bounded (1500 per property); FUZZ_SEED replays a failure, FUZZ_RUNS digs deeper.
 */
import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { canonicalIp, classifyAddress, parseIp } from '../../src/net/address.js';
import { CanonicalError, canonicalizeHost, formatAuthority, parseAbsoluteUrl, parseAuthority, type CanonicalHost } from '../../src/net/canonical.js';
import { parseClientHello } from '../../src/net/client-hello.js';
import { decide } from '../../src/policy/decide.js';
import { normalizePathForMatch } from '../../src/policy/glob.js';
import { clientHello } from '../helpers/adversary.js';
import { compileYaml, connectInput, httpInput } from '../helpers/policy.js';

const SEED = process.env.FUZZ_SEED === undefined ? 20261204 : Number(process.env.FUZZ_SEED);
const RUNS = process.env.FUZZ_RUNS === undefined ? 1500 : Number(process.env.FUZZ_RUNS);
const params = { seed: SEED, numRuns: RUNS };

// ---------------------------------------------------------------------------------------------
// Generators

/** Hosts the policy below allows, written canonically, and names that must never be allowed. */
const ALLOWED_EXACT = ['allowed.test', 'under_score.test', 'api.allowed.test'];
const ALLOWED_SUFFIX = ['wild.test']; // "*.wild.test": strictly below, never the apex
const ALLOWED_LITERALS = ['11.0.0.1', '2600:1::1'];
const SEEDS = [
  ...ALLOWED_EXACT,
  'a.wild.test',
  'wild.test',
  'evil.test',
  'allowed.test.evil.test',
  'evilallowed.test',
  '127.0.0.1',
  '169.254.169.254',
  '10.0.0.1',
  '11.0.0.1',
  '11.0.0.2',
  '[::1]',
  '[::ffff:169.254.169.254]',
  '[2600:1::1]',
  '[64:ff9b::a9fe:a9fe]',
  'xn--llowed-2nf.test',
  'localhost',
];

/** Characters that have fooled host parsers somewhere. */
const TRICKY = ['.', '..', ':', '@', '\\', '/', '%', '%2e', '%00', '[', ']', '_', '-', ' ', '\t', '\u0000', '\u00ad', '\u200b', '\u3002', '\uff0e', 'ａ', 'а', 'ß', 'İ', 'K', '#', '?', '*', ',', ';', '0x', '0', '00', 'xn--'];

/** A number as inet_aton would accept it in one of its radixes. */
const radix = (n: number): fc.Arbitrary<string> => fc.constantFrom(String(n), `0x${n.toString(16)}`, `0X${n.toString(16).toUpperCase()}`, `0${n.toString(8)}`);

/** Every inet_aton spelling of a 32-bit number: 1 to 4 parts, each in any radix. */
const ipv4Spelling = fc.nat({ max: 0xffffffff }).chain((n) => {
  const b = [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
  return fc
    .constantFrom(1, 2, 3, 4)
    .chain((parts) => {
      const head = b.slice(0, parts - 1);
      const rest = b.slice(parts - 1).reduce((acc, x) => acc * 256 + x, 0);
      return fc.tuple(...head.map(radix), radix(rest)).map((p) => p.join('.'));
    })
    .map((spelling) => ({ spelling, n }));
});

/** A seed host with a handful of random edits: case flips, tricky insertions, deletions, trailing dots. */
const mutatedHost = fc
  .tuple(
    fc.constantFrom(...SEEDS),
    fc.array(fc.tuple(fc.nat({ max: 40 }), fc.constantFrom('upper', 'insert', 'delete', 'dot', 'dup'), fc.constantFrom(...TRICKY)), { maxLength: 4 }),
  )
  .map(([seed, edits]) => {
    let s = seed;
    for (const [pos, op, ch] of edits) {
      const i = s.length === 0 ? 0 : pos % (s.length + 1);
      if (op === 'upper') s = s.toUpperCase();
      else if (op === 'insert') s = s.slice(0, i) + ch + s.slice(i);
      else if (op === 'delete') s = s.slice(0, i) + s.slice(i + 1);
      else if (op === 'dot') s += '.';
      else s = s.slice(0, i) + s.slice(i, i + 1) + s.slice(i);
    }
    return s;
  });

const anyHost = fc.oneof(
  { weight: 4, arbitrary: mutatedHost },
  { weight: 2, arbitrary: ipv4Spelling.map((x) => x.spelling) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.stringMatching(/^\[[0-9a-fA-F:.%]{0,45}\]$/) },
);

/** Runs `fn`; any throw that is not a CanonicalError is a crash. */
function canonicalOrRefused<T>(fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    if (err instanceof CanonicalError) return null;
    throw err;
  }
}

/** Shape of canonical output, checked without the canonicalizer's own code. */
function looksCanonical(c: CanonicalHost): boolean {
  if (c.hostKind === 'ipv4') return /^(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}$/.test(c.host) && canonicalIp(c.host) === c.host;
  if (c.hostKind === 'ipv6') return c.host.includes(':') && canonicalIp(c.host) === c.host && c.host === c.host.toLowerCase();
  return c.host.length <= 253 && c.host.split('.').every((l) => /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/.test(l));
}

// ---------------------------------------------------------------------------------------------
// The oracle: which canonical hosts the policy below allows, by plain string logic.

const POLICY = compileYaml(`
version: 1
destinations:
  names:
    hosts: [${ALLOWED_EXACT.join(', ')}, "*.${ALLOWED_SUFFIX[0]}"]
  literals:
    hosts: ["11.0.0.1", "[2600:1::1]"]
accounts:
  - match: "*"
    allow: [names, literals]
deny:
  hosts: [api.allowed.test]
`);

function oracleAllows(host: string): boolean {
  if (host === 'api.allowed.test') return false; // denied beats allowed
  if (ALLOWED_EXACT.includes(host) || ALLOWED_LITERALS.includes(host)) return true;
  return ALLOWED_SUFFIX.some((s) => host.endsWith(`.${s}`) && host.length > s.length + 1);
}

// ---------------------------------------------------------------------------------------------

describe('adversarial: fuzzing the canonicalizer, parsers and decide()', () => {
  test('canonicalize_never_crashes_and_is_idempotent: any input is refused with CanonicalError or yields canonical text that canonicalizes to itself', () => {
    fc.assert(
      fc.property(anyHost, (raw) => {
        const c = canonicalOrRefused(() => canonicalizeHost(raw));
        if (c === null) return;
        expect(looksCanonical(c)).toBe(true);
        const again = canonicalizeHost(c.hostKind === 'ipv6' ? `[${c.host}]` : c.host);
        expect(again).toEqual(c);
      }),
      params,
    );
  });

  test('every_inet_aton_spelling_is_the_same_address: canonical text and address class follow the number, never the spelling', () => {
    fc.assert(
      fc.property(ipv4Spelling, fc.constantFrom('', '.', '..'), ({ spelling, n }, dots) => {
        const c = canonicalizeHost(spelling + dots);
        const dotted = `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
        expect(c).toEqual({ host: dotted, hostKind: 'ipv4' });
        // The same address wrapped as IPv4-mapped IPv6 is judged as the IPv4 address.
        const hex = `${((n >>> 16) & 0xffff).toString(16)}:${(n & 0xffff).toString(16)}`;
        expect(canonicalizeHost(`[::ffff:${hex}]`)).toEqual(c);
        expect(classifyAddress(`::ffff:${dotted}`)).toBe(classifyAddress(dotted));
      }),
      params,
    );
  });

  test('authority_round_trip: a parsed CONNECT authority, formatted again, parses to the same canonical authority', () => {
    const port = fc.oneof(fc.integer({ min: 1, max: 65535 }).map(String), fc.constantFrom('0', '65536', '0443', '+443', '', 'https', '4 43'));
    fc.assert(
      fc.property(anyHost, port, (host, p) => {
        const a = canonicalOrRefused(() => parseAuthority(`${host}:${p}`));
        if (a === null) return;
        expect(looksCanonical(a)).toBe(true);
        expect(a.port).toBeGreaterThanOrEqual(1);
        expect(a.port).toBeLessThanOrEqual(65535);
        expect(parseAuthority(formatAuthority(a))).toEqual(a);
      }),
      params,
    );
  });

  test('absolute_url_round_trip: a parsed URL rebuilt from its canonical parts parses to itself; the path never keeps a dot segment', () => {
    const path = fc.array(fc.constantFrom('a', '..', '.', '%2e%2e', '%2f', '\\', ';', '..;', '%00', 'b', '', '?x=/../', '@', ':'), { maxLength: 6 }).map((p) => `/${p.join('/')}`);
    const scheme = fc.constantFrom('http', 'https', 'HTTP', 'ftp', 'ws');
    fc.assert(
      fc.property(scheme, anyHost, path, (s, host, p) => {
        const t = canonicalOrRefused(() => parseAbsoluteUrl(`${s}://${host}${p}`));
        if (t === null) return;
        expect(looksCanonical(t)).toBe(true);
        expect(t.path.startsWith('/')).toBe(true);
        expect(t.path.split('/').some((seg) => seg === '.' || seg === '..')).toBe(false);
        const rebuilt = parseAbsoluteUrl(`${t.scheme}://${formatAuthority(t)}${t.path}${t.query === null ? '' : `?${t.query}`}`);
        expect(rebuilt).toEqual(t);
      }),
      params,
    );
  });

  test('decide_never_allows_outside_the_allowlist: over plain HTTP and CONNECT, allow implies the oracle allows', () => {
    fc.assert(
      fc.property(anyHost, fc.constantFrom(80, 443), fc.boolean(), (raw, port, tunnel) => {
        const c = canonicalOrRefused(() => canonicalizeHost(raw));
        if (c === null) return;
        const input = tunnel ? connectInput({ host: c.host, hostKind: c.hostKind, port }) : httpInput({ host: c.host, hostKind: c.hostKind, port });
        const d = decide(input, POLICY);
        if (d.verdict === 'allow') expect(oracleAllows(c.host)).toBe(true);
        // The converse holds too here: the policy has no port, scheme or method rules.
        if (oracleAllows(c.host)) expect(d.verdict).toBe('allow');
      }),
      params,
    );
  });

  test('decide_denies_every_non_public_literal: an IP literal the policy does not name is never allowed, whatever its spelling', () => {
    fc.assert(
      fc.property(ipv4Spelling, ({ spelling }) => {
        const c = canonicalizeHost(spelling);
        const d = decide(httpInput({ host: c.host, hostKind: c.hostKind }), POLICY);
        if (c.host === '11.0.0.1') {
          expect(d.verdict).toBe('allow');
          return;
        }
        expect(d.verdict).toBe('deny');
        expect(d.reason).toBe(classifyAddress(c.host) === 'public' ? 'ip_literal' : `ip_${classifyAddress(c.host)}`);
      }),
      params,
    );
  });

  test('path_normalization_never_crashes_and_never_leaves_a_dot_segment', () => {
    const segment = fc.oneof(fc.constantFrom('.', '..', '%2e', '%2E%2e', '..;', '.;x', '%2f', '%5c', '%00', '%zz', '%25', 'a', ''), fc.string({ maxLength: 6 }));
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 8 }), (segs) => {
        const out = normalizePathForMatch(`/${segs.join('/')}`);
        if (out === null) return;
        expect(out.startsWith('/')).toBe(true);
        expect(out.split('/').some((s) => s === '.' || s === '..' || /^\.\.?;/.test(s))).toBe(false);
      }),
      params,
    );
  });

  test('client_hello_peek_never_crashes: random and mutated hellos give a verdict, and any SNI is printable ASCII', () => {
    const mutated = fc
      .tuple(fc.constantFrom('allowed.test', 'evil.test', 'a'.repeat(200)), fc.integer({ min: 1, max: 64 }), fc.array(fc.tuple(fc.nat(), fc.nat({ max: 255 })), { maxLength: 6 }), fc.nat())
      .map(([sni, recordSize, flips, cut]) => {
        const b = Buffer.from(clientHello({ sni: [sni], recordSize }));
        for (const [pos, byte] of flips) b[pos % b.length] = byte;
        return b.subarray(0, (cut % (b.length + 1)) || b.length);
      });
    fc.assert(
      fc.property(fc.oneof(mutated, fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a))), (bytes) => {
        const r = parseClientHello(bytes);
        expect(['incomplete', 'not_tls', 'ok', 'invalid']).toContain(r.status);
        if (r.status === 'ok' && r.sni !== null) expect(r.sni).toMatch(/^[\x21-\x7e]{1,255}$/);
      }),
      params,
    );
  });

  test('strict_ip_parser_agrees_with_itself: parseIp accepts only what canonicalIp can print back', () => {
    fc.assert(
      fc.property(fc.oneof(fc.stringMatching(/^[0-9a-fA-F:.]{1,45}$/), fc.ipV4(), fc.ipV6()), (text) => {
        const p = parseIp(text);
        if (p === null) {
          expect(canonicalIp(text)).toBeNull();
          return;
        }
        const c = canonicalIp(text)!;
        expect(canonicalIp(c)).toBe(c);
      }),
      params,
    );
  });
});
