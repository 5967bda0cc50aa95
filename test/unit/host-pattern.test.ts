import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { formatHostPattern, parseHostPattern, type HostPattern } from '../../src/policy/host-pattern.js';

describe('parseHostPattern accepts canonical patterns', () => {
  test.each<{ raw: string; expected: HostPattern }>([
    { raw: 'github.com', expected: { kind: 'exact', value: 'github.com' } },
    { raw: 'registry.npmjs.org', expected: { kind: 'exact', value: 'registry.npmjs.org' } },
    { raw: 'localhost', expected: { kind: 'exact', value: 'localhost' } },
    { raw: '_dmarc.example.com', expected: { kind: 'exact', value: '_dmarc.example.com' } },
    { raw: 'my_host.internal', expected: { kind: 'exact', value: 'my_host.internal' } },
    { raw: 'xn--bcher-kva.example', expected: { kind: 'exact', value: 'xn--bcher-kva.example' } },
    { raw: '*.githubusercontent.com', expected: { kind: 'wildcard', value: 'githubusercontent.com' } },
    { raw: '*.example.com', expected: { kind: 'wildcard', value: 'example.com' } },
    { raw: '*.a.b.example.com', expected: { kind: 'wildcard', value: 'a.b.example.com' } },
    { raw: '203.0.113.7', expected: { kind: 'ipv4', value: '203.0.113.7' } },
    { raw: '[2001:db8::1]', expected: { kind: 'ipv6', value: '2001:db8::1' } },
    { raw: '[::1]', expected: { kind: 'ipv6', value: '::1' } },
  ])('$raw', ({ raw, expected }) => {
    expect(parseHostPattern(raw)).toEqual(expected);
    // What the loader accepts, it can also print back unchanged.
    expect(formatHostPattern(expected)).toBe(raw);
  });
});

describe('parseHostPattern rejects with a hint', () => {
  test.each<{ name: string; raw: string; error: string }>([
    { name: 'empty', raw: '', error: 'empty host pattern' },
    { name: 'bare star', raw: '*', error: '"*" is too broad: a wildcard needs at least two labels after "*."' },
    { name: 'star dot', raw: '*.', error: 'is too broad' },
    { name: 'wildcard over a TLD', raw: '*.com', error: '"*.com" is too broad: a wildcard needs at least two labels after "*."' },
    { name: 'two wildcards', raw: '*.*.example.com', error: 'wildcards are only allowed as the whole first label' },
    { name: 'wildcard inside a label', raw: 'a*.example.com', error: 'wildcards are only allowed as the whole first label' },
    { name: 'wildcard in the middle', raw: 'foo.*.com', error: 'wildcards are only allowed as the whole first label' },
    { name: 'double star', raw: '**.x.com', error: 'wildcards are only allowed as the whole first label; write "*.x.com"' },
    { name: 'trailing star', raw: 'example.*', error: 'wildcards are only allowed as the whole first label' },
    { name: 'wildcard over an IP', raw: '*.10.0.0.1', error: 'a wildcard cannot cover an IP address' },
    { name: 'scheme', raw: 'https://x.com', error: 'write the bare host "x.com"; schemes are set with schemes:' },
    { name: 'scheme with port, path, upper case', raw: 'https://X.com:8443/a', error: 'write the bare host "x.com"' },
    { name: 'path', raw: 'x.com/a', error: '"x.com/a" has a path; write "x.com"; paths are set with paths:' },
    { name: 'query', raw: 'x.com?a=1', error: 'has a query or fragment; write "x.com"' },
    { name: 'port', raw: 'x.com:8080', error: '"x.com:8080" has a port; write "x.com"; ports are set with ports:' },
    { name: 'IPv6 with port', raw: '[2001:db8::1]:443', error: 'has a port; write "[2001:db8::1]"' },
    { name: 'user info', raw: 'user@x.com', error: 'has user info; write the bare host "x.com"' },
    { name: 'CIDR', raw: '10.0.0.0/8', error: 'is a CIDR range' },
    { name: 'upper case', raw: 'GitHub.com', error: '"GitHub.com" is not lower case; write "github.com"' },
    { name: 'upper case under a wildcard', raw: '*.GitHub.com', error: 'write "*.github.com"' },
    { name: 'Unicode', raw: 'bücher.example', error: '"bücher.example" is not ASCII; use "xn--bcher-kva.example"' },
    { name: 'Unicode under a wildcard', raw: '*.bücher.example', error: 'use "*.xn--bcher-kva.example"' },
    { name: 'full-width letters', raw: 'ＡＢＣ.com', error: 'use "abc.com"' },
    { name: 'trailing dot', raw: 'x.com.', error: '"x.com." has a trailing dot; write "x.com"' },
    { name: 'surrounding whitespace', raw: ' x.com ', error: 'has surrounding whitespace; write "x.com"' },
    { name: 'two hosts in one entry', raw: 'a.com b.com', error: 'contains whitespace; list each host as its own entry' },
    { name: 'control character', raw: 'x.com\u0000', error: 'contains a control character' },
    { name: 'short IPv4', raw: '127.1', error: '"127.1" is not a canonical IPv4 address; write "127.0.0.1"' },
    { name: 'hex IPv4', raw: '0x7f.0.0.1', error: 'write "127.0.0.1"' },
    { name: 'integer IPv4', raw: '2130706433', error: 'write "127.0.0.1"' },
    { name: 'out-of-range IPv4', raw: '999.1.1.1', error: 'IPv4' },
    { name: 'IPv4-mapped IPv6', raw: '[::ffff:1.2.3.4]', error: 'write "1.2.3.4"' },
    { name: 'uncompressed IPv6', raw: '[2001:db8:0:0:0:0:0:1]', error: 'is not a canonical IPv6 address; write "[2001:db8::1]"' },
    { name: 'upper-case IPv6', raw: '[2001:DB8::1]', error: 'write "[2001:db8::1]"' },
    { name: 'unbracketed IPv6', raw: '2001:db8::1', error: 'IPv6 literals are written in brackets; write "[2001:db8::1]"' },
    { name: 'IPv6 zone', raw: '[fe80::1%eth0]', error: 'zone IDs are not allowed' },
    { name: 'empty label', raw: 'x..com', error: 'empty label' },
    { name: 'bad character', raw: 'a!b.com', error: 'invalid character' },
    { name: 'bad punycode', raw: 'xn--zz.com', error: '"xn--zz.com"' },
  ])('$name: $raw', ({ raw, error }) => {
    const parsed = parseHostPattern(raw);
    expect(parsed).toHaveProperty('error');
    expect((parsed as { error: string }).error).toContain(error);
  });

  test('a huge entry is quoted only in part', () => {
    const raw = `${'a'.repeat(5000)}.com/path`;
    const parsed = parseHostPattern(raw) as { error: string };
    expect(parsed.error.length).toBeLessThan(300);
  });
});

describe('properties', () => {
  // Lower-case LDH labels: what canonical names look like.
  const label = fc.stringMatching(/^[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?$/).filter((l) => !l.startsWith('xn--') && !/^[0-9]+$/.test(l));
  const name = fc.array(label, { minLength: 2, maxLength: 5 }).map((ls) => ls.join('.'));

  test('every canonical name is an exact pattern of itself, and "*." + it a wildcard over it', () => {
    fc.assert(
      fc.property(name, (n) => {
        expect(parseHostPattern(n)).toEqual({ kind: 'exact', value: n });
        expect(parseHostPattern(`*.${n}`)).toEqual({ kind: 'wildcard', value: n });
      }),
    );
  });

  test('never throws, whatever the input', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 80 }), (raw) => {
        const parsed = parseHostPattern(raw);
        if ('error' in parsed) expect(parsed.error.length).toBeGreaterThan(0);
        else expect(formatHostPattern(parsed)).toBe(raw);
      }),
    );
  });
});
