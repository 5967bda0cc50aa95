/**
 * Adversarial suite — host spelling, and URL and Host (issue 4). Every spelling of an allowed
 * name reaches the one origin under its canonical name (decision, DNS question, upstream Host and
 * log agree); every look-alike, suffix confusion and malformed name is refused before DNS. URL
 * parser differentials (userinfo, backslashes, fragments), absolute-form vs Host mismatches,
 * origin-form requests, other schemes, and percent-encoding and dot-segments against path rules.
 * Runs inside the test namespace: the origin is 11.0.0.1, every forbidden address is a trap.
 */
import { domainToASCII } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { Reason } from '../../src/reasons.js';
import { connect, egressLineFor, get, head, openTunnel, overTunnel, rawRequest, startWorld, type RawResult, type World } from '../helpers/adversary.js';
import { describeNetns } from '../helpers/netns.js';

const TRANSPORTS = ['http', 'connect'] as const;
type Transport = (typeof TRANSPORTS)[number];

/** [trick, spelling, canonical]: spellings of allowlisted names; all reach the origin as `canonical`. */
const ALLOWED_SPELLINGS: ReadonlyArray<readonly [string, string, string]> = [
  ['upper_case', 'ALLOWED.TEST', 'allowed.test'],
  ['mixed_case', 'aLLoWeD.TeSt', 'allowed.test'],
  ['trailing_dot', 'allowed.test.', 'allowed.test'],
  ['many_trailing_dots', 'allowed.test....', 'allowed.test'],
  ['upper_case_and_trailing_dots', 'ALLOWED.TEST..', 'allowed.test'],
  ['wildcard_one_label', 'a.wild.test', 'a.wild.test'],
  ['wildcard_two_labels', 'b.c.wild.test', 'b.c.wild.test'],
  ['wildcard_upper_case_trailing_dot', 'A.WILD.TEST.', 'a.wild.test'],
  ['underscore_in_exact_name', 'under_score.test', 'under_score.test'],
  ['underscore_in_wildcard_label', 'x_y.wild.test', 'x_y.wild.test'],
  ['leading_underscore_label', '_acme.wild.test', '_acme.wild.test'],
  ['underscore_upper_case', 'UNDER_SCORE.TEST.', 'under_score.test'],
];

/** [trick, spelling, reason]: names refused on the name alone, over both transports, never resolved. */
const REFUSED_NAMES: ReadonlyArray<readonly [string, string, Reason]> = [
  ['wildcard_does_not_match_apex', 'wild.test', 'not_allowlisted'],
  ['suffix_confusion_allowed_as_prefix', 'allowed.test.evil.test', 'not_allowlisted'],
  ['suffix_confusion_glued_label', 'evilallowed.test', 'not_allowlisted'],
  ['suffix_confusion_glued_tld', 'allowed.testevil', 'not_allowlisted'],
  ['hyphen_for_dot', 'allowed-test', 'not_allowlisted'],
  ['wildcard_suffix_confusion', 'a.wild.test.evil.test', 'not_allowlisted'],
  ['wildcard_glued_label', 'awild.test', 'not_allowlisted'],
  ['hyphen_for_underscore', 'under-score.test', 'not_allowlisted'],
  ['homoglyph_cyrillic_a_punycode', domainToASCII('аllowed.test'), 'not_allowlisted'],
  ['homoglyph_accented_e_punycode', domainToASCII('allowéd.test'), 'not_allowlisted'],
  ['homoglyph_punycode_upper_case', domainToASCII('аllowed.test').toUpperCase(), 'not_allowlisted'],
  ['deviation_character_sharp_s_stays_distinct', domainToASCII('allowed.teß'), 'not_allowlisted'],
  ['long_label_63_octets', `${'a'.repeat(63)}.evil.test`, 'not_allowlisted'],
  ['name_of_253_octets', `${Array.from({ length: 4 }, () => 'b'.repeat(61)).join('.')}.evil`, 'not_allowlisted'],
  ['deep_under_denied_wildcard', 'a.b.c.denied.test', 'denied_host'],
  ['denied_with_trailing_dots_and_case', 'X.DENIED.TEST...', 'denied_host'],
];

/** [trick, raw host bytes]: names that are not names at all: 400 over both transports, never resolved. */
const MALFORMED_NAMES: ReadonlyArray<readonly [string, string | Buffer]> = [
  ['empty_label_inside', 'allowed..test'],
  ['leading_dot', '.allowed.test'],
  ['only_dots', '...'],
  ['brackets_around_name', '[allowed.test]'],
  ['unterminated_bracket', '[allowed.test'],
  ['percent_encoded_dot', 'allowed%2etest'],
  ['percent_encoded_nul', 'allowed.test%00.evil.test'],
  ['percent_encoded_letter', '%61llowed.test'],
  ['invalid_punycode', 'xn--allowed-.test'],
  ['bare_punycode_prefix', 'xn--.test'],
  ['punycode_of_fullwidth_letters_uts46_would_map', 'xn--mi7cgc1aas0d.test'],
  ['punycode_hiding_a_soft_hyphen', 'xn--allowed-rka.test'],
  ['punycode_upper_case_with_dotted_capital_i', 'xn--ALLOWED-pfb.test'],
  ['label_of_64_octets_under_wildcard', `${'a'.repeat(64)}.wild.test`],
  ['name_over_253_octets_under_wildcard', `${Array.from({ length: 4 }, () => 'c'.repeat(62)).join('.')}.wild.test`],
  ['wildcard_star_label', '*.wild.test'],
  ['comma_separated_names', 'allowed.test,evil.test'],
  ['semicolon', 'allowed.test;evil.test'],
  ['leading_hyphen', '-allowed.test'],
  ['trailing_hyphen_label', 'allowed-.test'],
  ['numeric_last_label_makes_ipv4_attempt', 'allowed.test.1'],
  ['hex_last_label_makes_ipv4_attempt', 'allowed.0x1'],
  ['failed_octal_ipv4', 'allowed.test.09'],
  ['ipv4_with_five_parts', '1.2.3.4.5'],
  ['ipv4_octet_over_255', '256.0.0.1'],
  ['raw_utf8_fullwidth_letters', Buffer.from('ａｌｌｏｗｅｄ.test', 'utf8')],
  ['raw_utf8_cyrillic_homoglyph', Buffer.from('аllowed.test', 'utf8')],
  ['raw_latin1_byte', Buffer.from('allow\xe9d.test', 'latin1')],
  ['raw_control_character', Buffer.from('allowed.test\x01', 'latin1')],
  ['raw_delete_character', Buffer.from('allowed.test\x7f', 'latin1')],
];

/** [trick, request-target]: URL parser differentials, all refused with 400 before DNS. */
const DIFFERENTIAL_URLS: ReadonlyArray<readonly [string, string]> = [
  ['userinfo_allowed_then_evil', 'http://allowed.test@evil.test/'],
  ['userinfo_evil_then_allowed', 'http://evil.test@allowed.test/'],
  ['userinfo_with_port', 'http://allowed.test:80@evil.test/'],
  ['userinfo_with_password', 'http://user:pass@allowed.test/'],
  ['userinfo_empty', 'http://@allowed.test/'],
  ['userinfo_percent_encoded_at', 'http://allowed.test%40evil.test/'],
  ['backslash_before_at', 'http://evil.test\\@allowed.test/'],
  ['backslash_as_path_start', 'http://allowed.test\\evil.test/'],
  ['backslash_in_authority_after_port', 'http://allowed.test:80\\@evil.test/'],
  ['fragment_before_at', 'http://evil.test#@allowed.test/'],
  ['fragment_in_path', 'http://allowed.test/#frag'],
  ['fragment_glued_to_host', 'http://allowed.test#.evil.test/'],
  ['ampersand_and_fragment', 'http://allowed.test&@evil.test#@allowed.test/'],
  ['double_port', 'http://allowed.test:80:80/'],
  ['empty_port', 'http://allowed.test:/'],
  ['port_with_leading_zero', 'http://allowed.test:0080/'],
  ['port_with_sign', 'http://allowed.test:+80/'],
  ['port_out_of_range', 'http://allowed.test:65616/'],
  ['port_with_letters', 'http://allowed.test:80abc/'],
  ['single_slash_after_scheme', 'http:/allowed.test/'],
  ['triple_slash_after_scheme', 'http:///allowed.test/'],
  ['backslashes_after_scheme', 'http:\\\\allowed.test\\'],
  ['file_url', 'file:///etc/passwd'],
  ['file_url_with_host', 'file://allowed.test/etc/passwd'],
  ['jar_url', 'jar:http://allowed.test/!/'],
  ['javascript_url', 'javascript:alert(1)'],
  ['data_url', 'data:text/plain,hello'],
];

/** [trick, request-target, reason]: refused on policy grounds (403), never resolved. */
const POLICY_URLS: ReadonlyArray<readonly [string, string, Reason]> = [
  ['query_before_at', 'http://evil.test?@allowed.test/', 'not_allowlisted'],
  ['query_glued_to_host', 'http://evil.test?.allowed.test/', 'not_allowlisted'],
  ['scheme_ftp', 'ftp://allowed.test/', 'scheme_not_allowed'],
  ['scheme_gopher', 'gopher://allowed.test:70/_GET', 'scheme_not_allowed'],
  ['scheme_dict', 'dict://allowed.test:11211/stat', 'scheme_not_allowed'],
  ['scheme_ws', 'ws://allowed.test/', 'scheme_not_allowed'],
  ['scheme_wss', 'wss://allowed.test/', 'scheme_not_allowed'],
  ['scheme_ldap', 'ldap://allowed.test:389/', 'scheme_not_allowed'],
];

/** [trick, extra header lines, Host the origin must see]: absolute-form wins over whatever Host says. */
const HOST_MISMATCH: ReadonlyArray<readonly [string, string, readonly string[], string]> = [
  ['host_header_names_evil', 'http://allowed.test/h', ['Host: evil.test'], 'allowed.test'],
  ['host_header_names_metadata', 'http://allowed.test/h', ['Host: 169.254.169.254'], 'allowed.test'],
  ['host_header_names_private_with_port', 'http://allowed.test/h', ['Host: 10.0.0.1:8080'], 'allowed.test'],
  ['two_host_headers', 'http://allowed.test/h', ['Host: allowed.test', 'Host: evil.test'], 'allowed.test'],
  ['host_header_other_port', 'http://allowed.test/h', ['Host: allowed.test:8080'], 'allowed.test'],
  ['host_header_odd_spelling', 'http://allowed.test/h', ['Host: ALLOWED.TEST.'], 'allowed.test'],
  ['url_odd_spelling_default_port', 'http://ALLOWED.test.:80/h', ['Host: x'], 'allowed.test'],
  ['forwarded_headers_do_not_route', 'http://allowed.test/h', ['Host: evil.test', 'X-Forwarded-Host: 169.254.169.254', 'Forwarded: host=10.0.0.1;proto=http', 'X-Original-URL: http://10.0.0.1/'], 'allowed.test'],
  ['url_upper_case_scheme', 'HTTP://allowed.test/h', ['Host: x'], 'allowed.test'],
  ['url_mixed_case_scheme', 'hTtP://Allowed.Test/h', ['Host: x'], 'allowed.test'],
];

/** [trick, path, status, what the origin must receive (null: nothing)]: path rules on ruled.test (GET /allowed/**). */
const PATH_RULES: ReadonlyArray<readonly [string, string, number, string | null]> = [
  ['plain_allowed_path', '/allowed/x', 200, '/allowed/x'],
  ['dot_segment_staying_inside', '/allowed/a/../b', 200, '/allowed/b'],
  ['single_dot_segment', '/allowed/./x', 200, '/allowed/x'],
  ['percent_encoded_letter_decodes_into_rule', '/%61llowed/x', 200, '/%61llowed/x'],
  ['dot_segments_in_query_are_not_path', '/allowed/x?next=/../admin', 200, '/allowed/x?next=/../admin'],
  ['outside_the_rule', '/admin', 403, null],
  ['dot_dot_escape', '/allowed/../admin', 403, null],
  ['encoded_dot_dot_escape', '/allowed/%2e%2e/admin', 403, null],
  ['encoded_dot_dot_upper_case', '/allowed/%2E%2E/admin', 403, null],
  ['half_encoded_dot_dot', '/allowed/.%2e/admin', 403, null],
  ['dot_dot_behind_encoded_slash', '/allowed/..%2fadmin', 403, null],
  ['encoded_slashes_around_dot_dot', '/allowed%2f..%2fadmin', 403, null],
  ['dot_dot_behind_encoded_backslash', '/allowed/..%5cadmin', 403, null],
  ['backslash_as_separator', '/allowed/..\\admin', 403, null],
  ['tomcat_path_parameter_dot_dot', '/allowed/..;/admin', 403, null],
  ['tomcat_path_parameter_with_value', '/allowed/..;x=y/admin', 403, null],
  ['tomcat_encoded_dot_dot_parameter', '/allowed/%2e%2e;/admin', 403, null],
  ['tomcat_double_escape', '/allowed/x/..;/..;/admin', 403, null],
  ['nul_after_dot_dot', '/allowed/..%00/admin', 403, null],
  ['case_differs_from_rule', '/ALLOWED/x', 403, null],
  ['double_leading_slash', '//allowed/x', 403, null],
  ['path_parameter_on_rule_segment', '/allowed;x=y/z', 403, null],
  ['bad_percent_encoding', '/allowed/%zz', 403, null],
  ['encoded_dot_dot_and_slash', '/allowed/%2e%2e%2fadmin', 403, null],
];

describeNetns('adversarial: host spelling, URL and Host', () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld({ records: { 'canon.wild.test': { A: ['11.0.0.1'] } } });
  });

  afterAll(async () => {
    await w?.close();
  });

  afterEach(() => {
    expect(w.traps.hits()).toEqual([]);
    expect(w.internalErrors()).toEqual([]);
  });

  /** The raw request head for a host spelling (string or raw bytes) over a transport. */
  const attempt = (transport: Transport, host: string | Buffer): Promise<RawResult> => {
    const bytes = typeof host === 'string' ? Buffer.from(host, 'latin1') : host;
    const [before, after] =
      transport === 'http'
        ? [`GET http://`, `/p HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${w.auth}\r\n\r\n`]
        : [`CONNECT `, `:443 HTTP/1.1\r\nHost: x\r\nProxy-Authorization: ${w.auth}\r\n\r\n`];
    return rawRequest(w.h.proxyPort, Buffer.concat([Buffer.from(before, 'latin1'), bytes, Buffer.from(after, 'latin1')]));
  };

  describe('host spelling', () => {
    test.each(ALLOWED_SPELLINGS)('%s (%s) over plain HTTP reaches the origin as %s: one DNS name, one Host, one log host', async (_trick, spelling, canonical) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, get(`http://${spelling}/spelled`, w.auth));
      expect(r.status).toBe(200);
      const d = w.since();
      expect(d.webRequests.map((s) => [s.url, s.headers.host])).toEqual([['/spelled', canonical]]);
      expect(d.dnsQueries.every((q) => q.name === canonical)).toBe(true);
      expect(w.h.logs.egress().at(-1)).toMatchObject({ host: canonical, decision: 'allow' });
    });

    test.each(ALLOWED_SPELLINGS)('%s (%s) over CONNECT is judged and dialed as %s', async (_trick, spelling, canonical) => {
      w.mark();
      const t = await openTunnel(w.h.proxyPort, `${spelling}:80`, w.auth);
      expect(t.status).toBe(200);
      const out = await overTunnel(t, `GET /tunnelled HTTP/1.1\r\nHost: ${canonical}\r\nConnection: close\r\n\r\n`);
      expect(out.text).toMatch(/^HTTP\/1\.1 200/);
      expect(w.since().dnsQueries.every((q) => q.name === canonical)).toBe(true);
      expect(w.h.logs.egress().filter((l) => l['kind'] === 'connect').at(-1)).toMatchObject({ host: canonical, decision: 'allow', resolvedIp: '11.0.0.1' });
    });

    describe.each(TRANSPORTS)('refused names over %s', (transport) => {
      test.each(REFUSED_NAMES)('%s (%s): %s, never resolved', async (_trick, spelling, reason) => {
        w.mark();
        const r = await attempt(transport, spelling);
        expect([r.status, r.reason]).toEqual([403, reason]);
        expect(w.since().dnsQueries).toEqual([]);
        expect(w.since().webRequests).toEqual([]);
      });

      test.each(MALFORMED_NAMES)('%s: 400 bad_request, never resolved, nothing dialed', async (_trick, spelling) => {
        w.mark();
        const r = await attempt(transport, spelling);
        expect([r.status, r.reason]).toEqual([400, 'bad_request']);
        expect(w.since().dnsQueries).toEqual([]);
        expect(w.since().webRequests).toEqual([]);
        expect(w.since().tlsConnections).toBe(0);
      });
    });
  });

  describe('URL and Host', () => {
    test.each(DIFFERENTIAL_URLS)('%s (%s): 400 before anything is resolved', async (_trick, target) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head(`GET ${target} HTTP/1.1`, ['Host: allowed.test'], w.auth));
      expect([r.status, r.reason]).toEqual([400, 'bad_request']);
      expect(w.since().dnsQueries).toEqual([]);
      expect(w.since().webRequests).toEqual([]);
    });

    test.each(POLICY_URLS)('%s (%s): %s, never resolved', async (_trick, target, reason) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head(`GET ${target} HTTP/1.1`, ['Host: allowed.test'], w.auth));
      expect([r.status, r.reason]).toEqual([403, reason]);
      expect(w.since().dnsQueries).toEqual([]);
    });

    test.each(HOST_MISMATCH)('%s: %s with %j is sent upstream with Host %s, whatever the client wrote', async (_trick, url, headers, hostSeen) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head(`GET ${url} HTTP/1.1`, headers, w.auth));
      expect(r.status).toBe(200);
      const seen = w.since().webRequests;
      expect(seen).toHaveLength(1);
      expect(seen[0]!.headers.host).toBe(hostSeen);
      // One Host header upstream, never the client's.
      expect(seen[0]!.rawHeaders.filter((_h, i) => i % 2 === 0 && _h.toLowerCase() === 'host')).toHaveLength(1);
    });

    test('no_host_header_http_1_0: an HTTP/1.0 absolute-form request without Host gets the canonical Host upstream', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head('GET http://ALLOWED.test./h10 HTTP/1.0', [], w.auth));
      expect(r.status).toBe(200);
      expect(w.since().webRequests.map((s) => [s.url, s.headers.host])).toEqual([['/h10', 'allowed.test']]);
    });

    test('absolute_form_http_1_1_without_host: refused 400 bad_request, nothing resolved or dialed', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head('GET http://allowed.test/ HTTP/1.1', [], w.auth));
      // Node's requireHostHeader answers this one itself: no JSON body, no reason header, no log line.
      expect(r.status).toBe(400);
      expect(w.since().dnsQueries).toEqual([]);
      expect(w.since().webRequests).toEqual([]);
    });

    test.each([
      ['origin_form', 'GET / HTTP/1.1', ['Host: allowed.test']],
      ['origin_form_with_absolute_url_in_path', 'GET /http://allowed.test/ HTTP/1.1', ['Host: allowed.test']],
      ['asterisk_form', 'OPTIONS * HTTP/1.1', ['Host: allowed.test']],
      ['network_path_reference', 'GET //allowed.test/ HTTP/1.1', ['Host: allowed.test']],
      ['authority_form_on_get', 'GET allowed.test:80 HTTP/1.1', ['Host: allowed.test']],
      ['bare_host_and_path', 'GET allowed.test/ HTTP/1.1', ['Host: allowed.test']],
      ['origin_form_http_1_0_without_host', 'GET / HTTP/1.0', []],
    ] as const)('%s (%s): 400, nothing resolved or dialed (only the admin listener serves origin-form)', async (_trick, line, headers) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head(line, headers, w.auth));
      expect([r.status, r.reason]).toEqual([400, 'bad_request']);
      expect(w.since().dnsQueries).toEqual([]);
      expect(w.since().webRequests).toEqual([]);
    });

    test('absolute_https_url_is_verified: https:// in absolute form is fetched over TLS with the certificate checked against the canonical name', async () => {
      w.mark();
      const ok = await rawRequest(w.h.proxyPort, get('https://ALLOWED.test./secure', w.auth));
      expect(ok.status).toBe(200);
      expect(w.since().tlsHandshakes).toBe(1);
      // under_score.test is allowlisted and resolves to the same origin, but the certificate does not name it.
      const bad = await rawRequest(w.h.proxyPort, get('https://under_score.test/secure', w.auth));
      expect([bad.status, bad.reason]).toEqual([502, 'upstream_tls_error']);
    });

    test.each(PATH_RULES)('%s (%s): %i, origin receives %s', async (_trick, path, status, received) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head(`GET http://ruled.test${path} HTTP/1.1`, ['Host: ruled.test'], w.auth));
      expect(r.status).toBe(status);
      if (status === 403) expect(r.reason).toBe('path_not_allowed');
      expect(w.since().webRequests.map((s) => s.url)).toEqual(received === null ? [] : [received]);
      if (received === null) expect(w.since().dnsQueries).toEqual([]);
    });

    test('method_rule_holds_on_allowed_path: POST to an allowed path of a GET-only destination is method_not_allowed and never sent', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, get('http://ruled.test/allowed/x', w.auth, ['Content-Length: 4'], 'POST') + 'data');
      expect([r.status, r.reason]).toEqual([403, 'method_not_allowed']);
      expect(w.since().webRequests).toEqual([]);
    });

    test('log_never_carries_the_query: the log line has the canonical path and only the query length', async () => {
      const r = await rawRequest(w.h.proxyPort, get('http://evil.test/p?token=c2VjcmV0', w.auth));
      const line = egressLineFor(w.h.logs, r)!;
      expect(line).toMatchObject({ host: 'evil.test', path: '/p', queryLength: 14 });
      expect(JSON.stringify(line)).not.toContain('c2VjcmV0');
    });
  });

  test('connect_host_header_is_ignored: a CONNECT whose Host header names a forbidden address tunnels only to the authority', async () => {
    w.mark();
    const t = await openTunnel(w.h.proxyPort, 'allowed.test:80', w.auth, { extra: ['Host: 169.254.169.254:80', 'X-Forwarded-Host: 10.0.0.1'] });
    expect(t.status).toBe(200);
    const out = await overTunnel(t, 'GET /via-connect HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n');
    expect(out.text).toMatch(/^HTTP\/1\.1 200/);
    expect(w.since().webRequests.map((s) => s.url)).toEqual(['/via-connect']);
  });

  test('connect_authority_wins_over_raw_spelling: CONNECT with a junk Host still logs the canonical host only', async () => {
    const r = await rawRequest(w.h.proxyPort, connect('EVIL.test.:443', w.auth, ['Host: allowed.test:443']));
    expect([r.status, r.reason]).toEqual([403, 'not_allowlisted']);
    expect(egressLineFor(w.h.logs, r)).toMatchObject({ kind: 'connect', host: 'evil.test', port: 443 });
  });
});
