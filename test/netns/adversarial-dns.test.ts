/**
 * Adversarial suite — DNS (issue 4). Allowlisted names whose answers point at every forbidden
 * class, mixed public/private answers (only the public address is dialed), rebinding between
 * the check and the dial (there is no second lookup), denied names that must never be asked
 * about, and unresolvable names (an error, `dns_error`, never a denial). Runs inside the test
 * namespace: every forbidden address carries a trap, and the DNS server logs every question.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { Reason } from '../../src/reasons.js';
import type { DnsAnswer, DnsQuery, DnsRecords } from '../helpers/dns-server.js';
import { basicAuth, connect, egressLineFor, get, head, openTunnel, overTunnel, rawRequest, sleep, startWorld, type RawResult, type World } from '../helpers/adversary.js';
import { describeNetns } from '../helpers/netns.js';

const TRANSPORTS = ['http', 'connect'] as const;
type Transport = (typeof TRANSPORTS)[number];

/** [trick, answer, reason]: an allowlisted name (under *.dns.test) answering only forbidden addresses. */
const FORBIDDEN_ANSWERS: ReadonlyArray<readonly [string, DnsAnswer, Reason]> = [
  ['loopback', { A: ['127.0.0.1'] }, 'ip_loopback'],
  ['loopback_elsewhere_in_127_8', { A: ['127.5.5.5'] }, 'ip_loopback'],
  ['rfc1918_10', { A: ['10.0.0.1'] }, 'ip_private'],
  ['rfc1918_172', { A: ['172.16.0.1'] }, 'ip_private'],
  ['rfc1918_192', { A: ['192.168.1.1'] }, 'ip_private'],
  ['metadata', { A: ['169.254.169.254'] }, 'ip_link_local'],
  ['cgnat', { A: ['100.64.0.1'] }, 'ip_cgnat'],
  ['alibaba_metadata', { A: ['100.100.100.200'] }, 'ip_cgnat'],
  ['ietf_protocol_metadata', { A: ['192.0.0.192'] }, 'ip_reserved'],
  ['benchmarking', { A: ['198.18.0.1'] }, 'ip_reserved'],
  ['test_net_3', { A: ['203.0.113.10'] }, 'ip_reserved'],
  ['class_e', { A: ['240.0.0.1'] }, 'ip_reserved'],
  ['unspecified', { A: ['0.0.0.0'] }, 'ip_unspecified'],
  ['broadcast', { A: ['255.255.255.255'] }, 'ip_multicast'],
  ['multicast_mdns', { A: ['224.0.0.251'] }, 'ip_multicast'],
  ['v6_loopback', { AAAA: ['::1'] }, 'ip_loopback'],
  ['v6_unspecified', { AAAA: ['::'] }, 'ip_unspecified'],
  ['v6_ula_metadata', { AAAA: ['fd00:ec2::254'] }, 'ip_private'],
  ['v6_link_local', { AAAA: ['fe80::1'] }, 'ip_link_local'],
  ['v6_mapped_metadata', { AAAA: ['::ffff:169.254.169.254'] }, 'ip_link_local'],
  ['v6_mapped_private', { AAAA: ['::ffff:a00:1'] }, 'ip_private'],
  ['v6_compatible_loopback', { AAAA: ['::7f00:1'] }, 'ip_loopback'],
  ['v6_nat64_metadata', { AAAA: ['64:ff9b::a9fe:a9fe'] }, 'ip_v6_embedded'],
  ['v6_6to4_metadata', { AAAA: ['2002:a9fe:a9fe::1'] }, 'ip_v6_embedded'],
  ['v6_teredo', { AAAA: ['2001:0:a9fe:a9fe::1'] }, 'ip_v6_embedded'],
  ['v6_documentation', { AAAA: ['2001:db8::1'] }, 'ip_reserved'],
  ['v6_multicast', { AAAA: ['ff02::1'] }, 'ip_multicast'],
  ['private_in_both_families', { A: ['10.0.0.1'], AAAA: ['fd00:ec2::254'] }, 'ip_private'],
  ['every_forbidden_class_at_once', { A: ['169.254.169.254', '10.0.0.1', '127.0.0.1', '100.64.0.1'], AAAA: ['::1', 'fd00:ec2::254'] }, 'ip_link_local'],
];

/** [trick, answer, origin that must get the request]: one public answer among forbidden ones. */
const MIXED_ANSWERS: ReadonlyArray<readonly [string, DnsAnswer, 'web' | 'web6']> = [
  ['private_first_then_public', { A: ['10.0.0.1', '11.0.0.1'] }, 'web'],
  ['public_first_then_private', { A: ['11.0.0.1', '10.0.0.1'] }, 'web'],
  ['metadata_and_ula_around_public', { A: ['169.254.169.254', '11.0.0.1'], AAAA: ['fd00:ec2::254'] }, 'web'],
  ['one_public_among_every_class', { A: ['127.0.0.1', '10.0.0.1', '172.16.0.1', '192.168.1.1', '100.64.0.1', '11.0.0.1', '169.254.169.254', '0.0.0.0'] }, 'web'],
  ['public_only_in_aaaa', { A: ['10.0.0.1', '169.254.169.254'], AAAA: ['2600:1::1'] }, 'web6'],
  ['mapped_private_beside_public_v6', { AAAA: ['::ffff:10.0.0.1', '2600:1::1'] }, 'web6'],
  ['nat64_metadata_beside_public', { A: ['11.0.0.1'], AAAA: ['64:ff9b::a9fe:a9fe'] }, 'web'],
  ['loopback_v6_beside_public_v4', { A: ['11.0.0.1'], AAAA: ['::1'] }, 'web'],
  ['duplicate_public_answers', { A: ['11.0.0.1', '11.0.0.1'] }, 'web'],
];

/** [trick, how to ask, reason]: denials decided on the name alone; the name must never be queried. */
const NEVER_ASKED: ReadonlyArray<readonly [string, Transport, string, Reason]> = [
  ['not_allowlisted', 'http', 'http://evil.test/', 'not_allowlisted'],
  ['not_allowlisted_exfil_label', 'http', 'http://c2VjcmV0LXRva2Vu.exfil.evil.test/', 'not_allowlisted'],
  ['suffix_confusion_allowed_as_prefix', 'http', 'http://allowed.test.evil.test/', 'not_allowlisted'],
  ['suffix_confusion_no_dot', 'http', 'http://evilallowed.test/', 'not_allowlisted'],
  ['suffix_confusion_glued_tld', 'http', 'http://allowed.testevil/', 'not_allowlisted'],
  ['wildcard_apex', 'http', 'http://wild.test/', 'not_allowlisted'],
  ['localhost_name', 'http', 'http://localhost/', 'not_allowlisted'],
  ['gcp_metadata_name', 'http', 'http://metadata.google.internal/computeMetadata/v1/', 'not_allowlisted'],
  ['aws_metadata_name', 'http', 'http://instance-data/latest/meta-data/', 'not_allowlisted'],
  ['denied_host', 'http', 'http://denied.test/', 'denied_host'],
  ['denied_wildcard', 'http', 'http://x.denied.test/', 'denied_host'],
  ['denied_host_odd_spelling', 'http', 'http://DENIED.test../', 'denied_host'],
  ['denied_host_pastebin', 'http', 'http://pastebin.test/raw/abc', 'denied_host'],
  ['port_not_allowed', 'http', 'http://allowed.test:22/', 'port_not_allowed'],
  ['scheme_not_allowed_http_to_https_only', 'http', 'http://secure.test/', 'scheme_not_allowed'],
  ['scheme_not_allowed_ftp', 'http', 'ftp://allowed.test/', 'scheme_not_allowed'],
  ['developer_only', 'http', 'http://dev.test/', 'developer_only'],
  ['method_not_allowed', 'http', 'POST http://ruled.test/allowed/x', 'method_not_allowed'],
  ['path_not_allowed', 'http', 'http://ruled.test/admin', 'path_not_allowed'],
  ['connect_not_allowlisted', 'connect', 'evil.test:443', 'not_allowlisted'],
  ['connect_denied_host', 'connect', 'x.denied.test:443', 'denied_host'],
  ['connect_port_not_allowed', 'connect', 'allowed.test:8443', 'port_not_allowed'],
  ['connect_developer_only', 'connect', 'dev.test:443', 'developer_only'],
  ['connect_inspection_required', 'connect', 'ruled.test:443', 'inspection_required'],
  ['connect_scheme_not_allowed_port_80_to_https_only', 'connect', 'secure.test:80', 'scheme_not_allowed'],
];

/** [trick, name, detail]: allowlisted names without an address: 502 dns_error, never a denial. */
const UNRESOLVABLE: ReadonlyArray<readonly [string, string]> = [
  ['nxdomain', 'nx.test'],
  ['servfail', 'servfail.test'],
  ['refused', 'refused.test'],
  ['noerror_without_records', 'nodata.test'],
];

/** A rebinding answer: `first` for the first query of each type, then `later`. */
function rebinding(first: DnsAnswer, later: DnsAnswer): DnsRecords[string] {
  return (_q, count) => ({ ...(count === 1 ? first : later), ttl: 1 });
}

const sortQueries = (qs: readonly DnsQuery[]): string[] => qs.map((q) => `${q.name} ${q.type}`).sort();

function records(): DnsRecords {
  const r: Record<string, DnsRecords[string]> = {};
  for (const [trick, answer] of FORBIDDEN_ANSWERS) for (const t of TRANSPORTS) r[`${t}-${trick}.dns.test`.replace(/_/g, '-')] = answer;
  for (const [trick, answer] of MIXED_ANSWERS) for (const t of TRANSPORTS) r[`${t}-${trick}.mix.test`.replace(/_/g, '-')] = answer;
  r['dead-public.mix.test'] = { A: ['11.0.0.1', '10.0.0.1'] };
  r['once.rebind.test'] = rebinding({ A: ['11.0.0.1'] }, { A: ['10.0.0.1'] });
  r['tunnel.rebind.test'] = rebinding({ A: ['11.0.0.1'] }, { A: ['169.254.169.254'] });
  r['v6.rebind.test'] = rebinding({ AAAA: ['2600:1::1'] }, { AAAA: ['::1'] });
  r['crowd.rebind.test'] = (_q, count) => ({ A: [count % 2 === 1 ? '11.0.0.1' : '10.0.0.1'], ttl: 0 });
  r['xn--bcher-kva.wild.test'] = { rcode: 'NXDOMAIN' };
  r['canon.wild.test'] = { A: ['11.0.0.1'] };
  return r;
}

describeNetns('adversarial: DNS', () => {
  let w: World;

  beforeAll(async () => {
    w = await startWorld({ records: records() });
  });

  afterAll(async () => {
    await w?.close();
  });

  afterEach(() => {
    expect(w.traps.hits()).toEqual([]);
    expect(w.internalErrors()).toEqual([]);
  });

  const ask = (transport: Transport, name: string, port = transport === 'http' ? 80 : 443): Promise<RawResult> =>
    transport === 'http' ? rawRequest(w.h.proxyPort, get(`http://${name}:${port}/`, w.auth)) : rawRequest(w.h.proxyPort, connect(`${name}:${port}`, w.auth));

  describe('allowlisted names answering only forbidden addresses', () => {
    describe.each(TRANSPORTS)('over %s', (transport) => {
      test.each(FORBIDDEN_ANSWERS)('%s: denied after resolution (%j → %s), asked once, nothing dialed', async (trick, _answer, reason) => {
        const name = `${transport}-${trick}.dns.test`.replace(/_/g, '-');
        w.mark();
        const r = await ask(transport, name);
        expect([r.status, r.reason]).toEqual([403, reason]);
        expect(egressLineFor(w.h.logs, r)).toMatchObject({ decision: 'deny', reason, host: name, destination: 'private-answers' });
        const d = w.since();
        expect(sortQueries(d.dnsQueries)).toEqual([`${name} A`, `${name} AAAA`]);
        expect(d.webRequests).toEqual([]);
        expect(d.tlsConnections).toBe(0);
      });
    });
  });

  describe('mixed answers: only the allowed address is dialed', () => {
    test.each(MIXED_ANSWERS)('%s over plain HTTP: the request reaches %s, nothing else is dialed', async (trick, _answer, origin) => {
      const name = `http-${trick}.mix.test`.replace(/_/g, '-');
      w.mark();
      const r = await ask('http', name);
      expect(r.status).toBe(200);
      const d = w.since();
      expect((origin === 'web' ? d.webRequests : d.web6Requests).map((s) => s.headers.host)).toEqual([name]);
      expect((origin === 'web' ? d.web6Requests : d.webRequests)).toEqual([]);
      const line = w.h.logs.egress().filter((l) => l['host'] === name).at(-1);
      expect(line).toMatchObject({ decision: 'allow', resolvedIp: origin === 'web' ? '11.0.0.1' : '2600:1::1' });
    });

    test.each(MIXED_ANSWERS)('%s over CONNECT: the tunnel reaches %s, nothing else is dialed', async (trick, _answer, origin) => {
      const name = `connect-${trick}.mix.test`.replace(/_/g, '-');
      w.mark();
      const t = await openTunnel(w.h.proxyPort, `${name}:80`, w.auth);
      expect(t.status).toBe(200);
      const out = await overTunnel(t, `GET /in-tunnel HTTP/1.1\r\nHost: ${name}\r\nConnection: close\r\n\r\n`);
      expect(out.text).toMatch(/^HTTP\/1\.1 200/);
      const d = w.since();
      expect((origin === 'web' ? d.webRequests : d.web6Requests).map((s) => s.url)).toEqual(['/in-tunnel']);
    });

    test.each(TRANSPORTS)('dead_public_beside_private over %s: when the public address refuses, the private one is never tried (502, not a fallback)', async (transport) => {
      const r = await ask(transport, 'dead-public.mix.test', 8080);
      expect([r.status, r.reason]).toEqual([502, 'upstream_connect_error']);
    });
  });

  describe('rebinding between the check and the dial', () => {
    test('rebind_after_first_answer: the first answer is dialed without a second lookup; the rebound answer is judged, and denied, on the next lookup', async () => {
      w.mark();
      const first = await ask('http', 'once.rebind.test');
      expect(first.status).toBe(200);
      // Exactly one question per family: the dial used the checked address, not a new lookup.
      expect(sortQueries(w.since().dnsQueries)).toEqual(['once.rebind.test A', 'once.rebind.test AAAA']);
      expect(w.since().webRequests).toHaveLength(1);
      // Within the TTL the same checked answer is reused.
      expect((await ask('http', 'once.rebind.test')).status).toBe(200);
      expect(w.since().dnsQueries).toHaveLength(2);
      await sleep(1100);
      const later = await ask('http', 'once.rebind.test');
      expect([later.status, later.reason]).toEqual([403, 'ip_private']);
      expect(w.since().webRequests).toHaveLength(2);
    });

    test('rebind_tunnel: a CONNECT to a rebinding name dials the checked address; after the rebind to metadata it is denied', async () => {
      w.mark();
      const t = await openTunnel(w.h.proxyPort, 'tunnel.rebind.test:80', w.auth);
      expect(t.status).toBe(200);
      expect((await overTunnel(t, 'GET /rebind HTTP/1.1\r\nHost: tunnel.rebind.test\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 200/);
      expect(w.since().webRequests.map((s) => s.url)).toEqual(['/rebind']);
      await sleep(1100);
      const later = await ask('connect', 'tunnel.rebind.test', 80);
      expect([later.status, later.reason]).toEqual([403, 'ip_link_local']);
    });

    test('rebind_v6_to_loopback: an AAAA-only name rebinding from public to ::1 is denied once rebound', async () => {
      w.mark();
      expect((await ask('http', 'v6.rebind.test')).status).toBe(200);
      expect(w.since().web6Requests).toHaveLength(1);
      await sleep(1100);
      const later = await ask('http', 'v6.rebind.test');
      expect([later.status, later.reason]).toEqual([403, 'ip_loopback']);
    });

    test('rebind_every_other_query_under_concurrency: concurrent requests share one checked lookup; none reaches the private answer', async () => {
      w.mark();
      const rs = await Promise.all(Array.from({ length: 8 }, (_, i) => rawRequest(w.h.proxyPort, get(`http://crowd.rebind.test/${i}`, w.auth))));
      // One lookup (in flight, then cached for the clamped minimum TTL of 1 s) serves them all.
      expect(rs.map((r) => r.status)).toEqual(rs.map(() => 200));
      expect(w.since().webRequests).toHaveLength(rs.length);
      expect(w.since().dnsQueries.filter((q) => q.type === 'A')).toHaveLength(1);
    });
  });

  describe('denied names are never resolved', () => {
    test.each(NEVER_ASKED)('%s (%s %s): %s, and the DNS server hears nothing', async (_trick, transport, target, reason) => {
      w.mark();
      let r: RawResult;
      if (transport === 'connect') r = await rawRequest(w.h.proxyPort, connect(target, w.auth));
      else if (target.startsWith('POST ')) r = await rawRequest(w.h.proxyPort, get(target.slice(5), w.auth, ['Content-Length: 0'], 'POST'));
      else r = await rawRequest(w.h.proxyPort, get(target, w.auth));
      expect(r.status).toBe(403);
      expect(r.reason).toBe(reason);
      expect(w.since().dnsQueries).toEqual([]);
      expect(w.since().webRequests).toEqual([]);
    });

    test.each([
      ['no_credentials', undefined, 'auth_missing'],
      ['wrong_token', basicAuth('agent-1', `pcs_0000000000000000_${'A'.repeat(43)}`), 'auth_invalid'],
      ['token_of_another_account', null, 'auth_invalid'],
    ] as const)('unauthenticated_%s: 407 %s before any name is resolved, allowed or not', async (_trick, auth, reason) => {
      const credentials = auth === null ? basicAuth('someone-else', w.token) : auth;
      w.mark();
      for (const target of ['http://allowed.test/', 'http://evil.test/']) {
        const r = await rawRequest(w.h.proxyPort, get(target, credentials));
        expect([r.status, r.reason]).toEqual([407, reason]);
      }
      const c = await rawRequest(w.h.proxyPort, connect('allowed.test:443', credentials));
      expect([c.status, c.reason]).toEqual([407, reason]);
      expect(w.since().dnsQueries).toEqual([]);
    });
  });

  describe('unresolvable allowlisted names are errors, not denials', () => {
    describe.each(TRANSPORTS)('over %s', (transport) => {
      test.each(UNRESOLVABLE)('%s (%s): 502 dns_error, logged as an error', async (_trick, name) => {
        w.mark();
        const r = await ask(transport, name);
        expect([r.status, r.reason]).toEqual([502, 'dns_error']);
        expect(JSON.parse(r.responses[0]!.body)).toMatchObject({ error: 'upstream_error', reason: 'dns_error' });
        expect(egressLineFor(w.h.logs, r)).toMatchObject({ decision: 'error', reason: 'dns_error', host: name });
        // Asked (it is allowed), but a failed lookup is not cached into a denial or a dial.
        expect(w.since().dnsQueries.map((q) => q.name)).toContain(name);
      });
    });
  });

  describe('the question itself', () => {
    test('canonical_name_is_asked: "CANON.Wild.Test.." is asked as canon.wild.test, absolute, with no search domain appended', async () => {
      w.mark();
      expect((await rawRequest(w.h.proxyPort, get('http://CANON.Wild.Test../q', w.auth))).status).toBe(200);
      expect(sortQueries(w.since().dnsQueries)).toEqual(['canon.wild.test A', 'canon.wild.test AAAA']);
    });

    test('punycode_is_asked_in_lower_case: "XN--BCHER-KVA.wild.test" is asked as xn--bcher-kva.wild.test only', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, get('http://XN--BCHER-KVA.wild.test/', w.auth));
      expect([r.status, r.reason]).toEqual([502, 'dns_error']);
      expect([...new Set(w.since().dnsQueries.map((q) => q.name))]).toEqual(['xn--bcher-kva.wild.test']);
    });

    test('origin_form_never_asks: a request without an absolute URL names a host only in Host; it is refused and nothing is asked', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, head('GET / HTTP/1.1', ['Host: allowed.test'], w.auth));
      expect([r.status, r.reason]).toEqual([400, 'bad_request']);
      expect(w.since().dnsQueries).toEqual([]);
    });
  });
});
