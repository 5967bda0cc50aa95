/**
 * Adversarial suite — address space (issue 4). Every spelling of loopback, private, metadata,
 * CGNAT, reserved, unspecified, multicast and IPv4-in-IPv6 addresses, and public literals that
 * are not allowlisted, tried over plain HTTP and CONNECT inside the test namespace, where a live
 * trap listens on each forbidden address. Each case states what must hold: the reason code, the
 * canonical host on the log line, no DNS question (literals are never resolved) and no connection
 * to any trap. The proxy's own listeners are tried directly, by name and by allowlisted literal.
 */
import type { Server } from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { Reason } from '../../src/reasons.js';
import { connect, egressLine, egressLineFor, get, rawRequest, startWorld, worldPolicy, type RawResult, type World } from '../helpers/adversary.js';
import { describeNetns } from '../helpers/netns.js';

/** [trick, host as written in the URL, canonical host on the log line, reason]. */
type Row = readonly [trick: string, spelling: string, canonical: string, reason: Reason];

const LOOPBACK: readonly Row[] = [
  ['loopback_dotted_quad', '127.0.0.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_two_parts', '127.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_three_parts', '127.0.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_decimal_integer', '2130706433', '127.0.0.1', 'ip_loopback'],
  ['loopback_hex_integer', '0x7f000001', '127.0.0.1', 'ip_loopback'],
  ['loopback_hex_first_octet', '0x7f.0.0.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_hex_two_parts', '0x7f.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_octal_octets', '0177.0.0.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_octal_two_parts', '0177.1', '127.0.0.1', 'ip_loopback'],
  ['loopback_octal_integer', '017700000001', '127.0.0.1', 'ip_loopback'],
  ['loopback_mixed_radix_upper_case', '0X7F.0x0.00.01', '127.0.0.1', 'ip_loopback'],
  ['loopback_zero_padded_octets', '127.000.000.001', '127.0.0.1', 'ip_loopback'],
  ['loopback_trailing_dot', '127.0.0.1.', '127.0.0.1', 'ip_loopback'],
  ['loopback_trailing_dots', '127.0.0.1...', '127.0.0.1', 'ip_loopback'],
  ['loopback_elsewhere_in_127_8', '127.127.127.127', '127.127.127.127', 'ip_loopback'],
  ['loopback_v6', '[::1]', '::1', 'ip_loopback'],
  ['loopback_v6_long_form', '[0:0:0:0:0:0:0:1]', '::1', 'ip_loopback'],
  ['loopback_v6_zero_padded', '[0000:0000:0000:0000:0000:0000:0000:0001]', '::1', 'ip_loopback'],
  ['loopback_v4_mapped', '[::ffff:127.0.0.1]', '127.0.0.1', 'ip_loopback'],
  ['loopback_v4_mapped_hex', '[::ffff:7f00:1]', '127.0.0.1', 'ip_loopback'],
  ['loopback_v4_mapped_long_form', '[0:0:0:0:0:ffff:7f00:1]', '127.0.0.1', 'ip_loopback'],
  ['loopback_v4_mapped_upper_case', '[::FFFF:7F00:1]', '127.0.0.1', 'ip_loopback'],
  ['loopback_v4_compatible', '[::127.0.0.1]', '127.0.0.1', 'ip_loopback'],
];

const PRIVATE: readonly Row[] = [
  ['rfc1918_10', '10.0.0.1', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_two_parts', '10.1', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_octal_first_octet', '012.0.0.1', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_hex_integer', '0xa000001', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_decimal_integer', '167772161', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_v4_mapped', '[::ffff:10.0.0.1]', '10.0.0.1', 'ip_private'],
  ['rfc1918_10_v4_mapped_hex', '[::ffff:a00:1]', '10.0.0.1', 'ip_private'],
  ['rfc1918_172', '172.16.0.1', '172.16.0.1', 'ip_private'],
  ['rfc1918_172_hex_octets', '0xac.0x10.0.1', '172.16.0.1', 'ip_private'],
  ['rfc1918_172_decimal_integer', '2886729729', '172.16.0.1', 'ip_private'],
  ['rfc1918_192', '192.168.1.1', '192.168.1.1', 'ip_private'],
  ['rfc1918_192_decimal_integer', '3232235777', '192.168.1.1', 'ip_private'],
  ['rfc1918_192_octal_octets', '0300.0250.1.1', '192.168.1.1', 'ip_private'],
  ['rfc1918_192_v4_mapped_hex', '[::ffff:c0a8:101]', '192.168.1.1', 'ip_private'],
  ['ula_metadata_v6', '[fd00:ec2::254]', 'fd00:ec2::254', 'ip_private'],
  ['ula_fc00', '[fc00::1]', 'fc00::1', 'ip_private'],
];

const LINK_LOCAL: readonly Row[] = [
  ['metadata_dotted_quad', '169.254.169.254', '169.254.169.254', 'ip_link_local'],
  ['metadata_decimal_integer', '2852039166', '169.254.169.254', 'ip_link_local'],
  ['metadata_hex_integer', '0xa9fea9fe', '169.254.169.254', 'ip_link_local'],
  ['metadata_hex_octets', '0xa9.0xfe.0xa9.0xfe', '169.254.169.254', 'ip_link_local'],
  ['metadata_octal_octets', '0251.0376.0251.0376', '169.254.169.254', 'ip_link_local'],
  ['metadata_three_parts', '169.254.43518', '169.254.169.254', 'ip_link_local'],
  ['metadata_two_parts', '169.16689662', '169.254.169.254', 'ip_link_local'],
  ['metadata_trailing_dot', '169.254.169.254.', '169.254.169.254', 'ip_link_local'],
  ['metadata_v4_mapped', '[::ffff:169.254.169.254]', '169.254.169.254', 'ip_link_local'],
  ['metadata_v4_mapped_hex', '[::ffff:a9fe:a9fe]', '169.254.169.254', 'ip_link_local'],
  ['metadata_v4_mapped_long_form', '[0:0:0:0:0:ffff:a9fe:a9fe]', '169.254.169.254', 'ip_link_local'],
  ['metadata_v4_compatible', '[::a9fe:a9fe]', '169.254.169.254', 'ip_link_local'],
  ['link_local_v6', '[fe80::1]', 'fe80::1', 'ip_link_local'],
  ['link_local_v6_embedding_metadata', '[fe80::a9fe:a9fe]', 'fe80::a9fe:a9fe', 'ip_link_local'],
  ['link_local_v6_top_of_range', '[febf::1]', 'febf::1', 'ip_link_local'],
];

const CGNAT: readonly Row[] = [
  ['cgnat', '100.64.0.1', '100.64.0.1', 'ip_cgnat'],
  ['cgnat_top_of_range', '100.127.255.254', '100.127.255.254', 'ip_cgnat'],
  ['cgnat_alibaba_metadata', '100.100.100.200', '100.100.100.200', 'ip_cgnat'],
  ['cgnat_alibaba_metadata_decimal', '1684301000', '100.100.100.200', 'ip_cgnat'],
  ['cgnat_v4_mapped_hex', '[::ffff:6464:64c8]', '100.100.100.200', 'ip_cgnat'],
];

const RESERVED: readonly Row[] = [
  ['ietf_protocol_metadata_192_0_0', '192.0.0.192', '192.0.0.192', 'ip_reserved'],
  ['benchmarking_198_18', '198.18.0.1', '198.18.0.1', 'ip_reserved'],
  ['test_net_1', '192.0.2.1', '192.0.2.1', 'ip_reserved'],
  ['test_net_2', '198.51.100.1', '198.51.100.1', 'ip_reserved'],
  ['test_net_3', '203.0.113.10', '203.0.113.10', 'ip_reserved'],
  ['class_e_240', '240.0.0.1', '240.0.0.1', 'ip_reserved'],
  ['documentation_v6', '[2001:db8::1]', '2001:db8::1', 'ip_reserved'],
  ['site_local_v6', '[fec0::1]', 'fec0::1', 'ip_reserved'],
  ['discard_only_v6', '[100::1]', '100::1', 'ip_reserved'],
];

const UNSPECIFIED: readonly Row[] = [
  ['unspecified_dotted_quad', '0.0.0.0', '0.0.0.0', 'ip_unspecified'],
  ['unspecified_single_zero', '0', '0.0.0.0', 'ip_unspecified'],
  ['unspecified_hex_zero', '0x0', '0.0.0.0', 'ip_unspecified'],
  ['unspecified_two_parts', '0.0', '0.0.0.0', 'ip_unspecified'],
  ['unspecified_zero_padded', '000.000.000.000', '0.0.0.0', 'ip_unspecified'],
  ['this_network_0_8', '0.1.2.3', '0.1.2.3', 'ip_unspecified'],
  ['unspecified_v6', '[::]', '::', 'ip_unspecified'],
  ['unspecified_v4_mapped', '[::ffff:0.0.0.0]', '0.0.0.0', 'ip_unspecified'],
];

const MULTICAST: readonly Row[] = [
  ['multicast_all_hosts', '224.0.0.1', '224.0.0.1', 'ip_multicast'],
  ['multicast_ssdp', '239.255.255.250', '239.255.255.250', 'ip_multicast'],
  ['broadcast', '255.255.255.255', '255.255.255.255', 'ip_multicast'],
  ['broadcast_decimal_integer', '4294967295', '255.255.255.255', 'ip_multicast'],
  ['multicast_v6_all_nodes', '[ff02::1]', 'ff02::1', 'ip_multicast'],
  ['multicast_v6_site', '[ff05::2]', 'ff05::2', 'ip_multicast'],
  ['multicast_v4_mapped', '[::ffff:224.0.0.1]', '224.0.0.1', 'ip_multicast'],
];

const EMBEDDED: readonly Row[] = [
  ['nat64_metadata_hex', '[64:ff9b::a9fe:a9fe]', '64:ff9b::a9fe:a9fe', 'ip_v6_embedded'],
  ['nat64_metadata_dotted', '[64:ff9b::169.254.169.254]', '64:ff9b::a9fe:a9fe', 'ip_v6_embedded'],
  ['nat64_loopback', '[64:ff9b::7f00:1]', '64:ff9b::7f00:1', 'ip_v6_embedded'],
  ['nat64_local_use_prefix', '[64:ff9b:1::a00:1]', '64:ff9b:1::a00:1', 'ip_v6_embedded'],
  ['six_to_four_metadata', '[2002:a9fe:a9fe::1]', '2002:a9fe:a9fe::1', 'ip_v6_embedded'],
  ['six_to_four_loopback', '[2002:7f00:1::]', '2002:7f00:1::', 'ip_v6_embedded'],
  ['teredo_metadata', '[2001:0:a9fe:a9fe::1]', '2001:0:a9fe:a9fe::1', 'ip_v6_embedded'],
  ['teredo_prefix', '[2001::1]', '2001::1', 'ip_v6_embedded'],
];

const PUBLIC_NOT_ALLOWLISTED: readonly Row[] = [
  ['public_literal_stranger', '11.0.0.2', '11.0.0.2', 'ip_literal'],
  ['public_literal_stranger_hex_integer', '0xb000002', '11.0.0.2', 'ip_literal'],
  ['public_literal_stranger_v4_mapped', '[::ffff:11.0.0.2]', '11.0.0.2', 'ip_literal'],
  ['public_literal_dns_resolver', '8.8.8.8', '8.8.8.8', 'ip_literal'],
  ['public_literal_one_one', '1.1', '1.0.0.1', 'ip_literal'],
  ['public_literal_v6_stranger', '[2600:1::2]', '2600:1::2', 'ip_literal'],
  ['public_literal_v6_stranger_long_form', '[2600:1:0:0:0:0:0:2]', '2600:1::2', 'ip_literal'],
];

const GROUPS: ReadonlyArray<readonly [string, readonly Row[]]> = [
  ['loopback', LOOPBACK],
  ['private', PRIVATE],
  ['link-local and metadata', LINK_LOCAL],
  ['CGNAT', CGNAT],
  ['reserved', RESERVED],
  ['unspecified', UNSPECIFIED],
  ['multicast and broadcast', MULTICAST],
  ['IPv4 embedded in IPv6 (NAT64, 6to4, Teredo)', EMBEDDED],
  ['public literals not on the allowlist', PUBLIC_NOT_ALLOWLISTED],
];

/** Allowlisted literals written every which way: all reach the one origin, with the canonical Host. */
const ALLOWED_LITERALS: ReadonlyArray<readonly [trick: string, spelling: string, hostHeader: string, origin: 'web' | 'web6']> = [
  ['allowlisted_literal', '11.0.0.1', '11.0.0.1', 'web'],
  ['allowlisted_literal_hex_integer', '0xb000001', '11.0.0.1', 'web'],
  ['allowlisted_literal_decimal_integer', '184549377', '11.0.0.1', 'web'],
  ['allowlisted_literal_two_parts', '11.1', '11.0.0.1', 'web'],
  ['allowlisted_literal_octal_first_octet', '013.0.0.1', '11.0.0.1', 'web'],
  ['allowlisted_literal_v4_mapped', '[::ffff:11.0.0.1]', '11.0.0.1', 'web'],
  ['allowlisted_literal_v6', '[2600:1::1]', '[2600:1::1]', 'web6'],
  ['allowlisted_literal_v6_long_form', '[2600:1:0:0:0:0:0:1]', '[2600:1::1]', 'web6'],
  ['allowlisted_literal_v6_zero_padded_upper_case', '[2600:0001:0000::0001]', '[2600:1::1]', 'web6'],
];

const TRANSPORTS = ['http', 'connect'] as const;

describeNetns('adversarial: address space', () => {
  let w: World;
  let proxyConnections = 0;
  let adminConnections = 0;
  let adminPort = 0;

  beforeAll(async () => {
    w = await startWorld();
    w.h.app.proxy.server.on('connection', () => proxyConnections++);
    (w.h.app.admin.server as Server).on('connection', () => adminConnections++);
    adminPort = Number(new URL(w.h.adminUrl).port);
  });

  afterAll(async () => {
    await w?.close();
  });

  // The invariants of the whole file: no trap on any forbidden address ever saw a connection,
  // and no request ever made the proxy log an internal failure.
  afterEach(() => {
    expect(w.traps.hits()).toEqual([]);
    expect(w.internalErrors()).toEqual([]);
  });

  /** One attempt at `host` (URL spelling) over a transport, on the trap ports. */
  const attempt = (transport: (typeof TRANSPORTS)[number], host: string, port?: number): Promise<RawResult> => {
    const p = port === undefined ? '' : `:${port}`;
    return transport === 'http'
      ? rawRequest(w.h.proxyPort, get(`http://${host}${p}/latest/meta-data/iam/security-credentials/`, w.auth))
      : rawRequest(w.h.proxyPort, connect(`${host}:${port ?? 443}`, w.auth));
  };

  for (const [group, rows] of GROUPS) {
    describe(group, () => {
      describe.each(TRANSPORTS)('over %s', (transport) => {
        test.each(rows)('%s (%s): canonical %s, denied %s, never resolved, nothing dialed', async (_trick, spelling, canonical, reason) => {
          w.mark();
          const r = await attempt(transport, spelling);
          expect(r.status).toBe(403);
          expect(r.reason).toBe(reason);
          expect(egressLineFor(w.h.logs, r)).toMatchObject({ kind: transport, decision: 'deny', reason, host: canonical });
          const d = w.since();
          expect(d.dnsQueries).toEqual([]);
          expect(d.webRequests).toEqual([]);
          expect(d.web6Requests).toEqual([]);
          expect(d.tlsConnections).toBe(0);
        });
      });
    });
  }

  describe('allowlisted literals (positive controls)', () => {
    test.each(ALLOWED_LITERALS)('%s (%s) reaches only the allowlisted address, with Host %s', async (_trick, spelling, hostHeader, origin) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, get(`http://${spelling}/literal`, w.auth));
      expect(r.status).toBe(200);
      const d = w.since();
      const seen = origin === 'web' ? d.webRequests : d.web6Requests;
      expect(seen.map((s) => [s.url, s.headers.host])).toEqual([['/literal', hostHeader]]);
      expect(d.dnsQueries).toEqual([]);
    });

    test('allowlisted_literal_through_connect: CONNECT to an allowlisted literal tunnels to it and nowhere else', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, [connect('0xb000001:80', w.auth), 'GET /tunnelled HTTP/1.1\r\nHost: 11.0.0.1\r\n\r\n'], { responses: 2, gapMs: 50 });
      expect(r.responses.map((x) => x.status)).toEqual([200, 200]);
      expect(w.since().webRequests.map((s) => s.url)).toEqual(['/tunnelled']);
    });

    test('allowlisted_literal_on_a_port_not_allowed: the literal is allowlisted for 80 and 443 only', async () => {
      w.mark();
      const r = await attempt('http', '11.0.0.1', 8080);
      expect(r.reason).toBe('port_not_allowed');
      expect(w.since().webRequests).toEqual([]);
    });
  });

  describe("the proxy's own listeners", () => {
    const proxySaw = async (fn: () => Promise<RawResult>): Promise<{ r: RawResult; proxy: number; admin: number }> => {
      const p0 = proxyConnections;
      const a0 = adminConnections;
      const r = await fn();
      // Let a (wrong) dial back to ourselves land before counting.
      await new Promise((resolve) => setTimeout(resolve, 50));
      return { r, proxy: proxyConnections - p0, admin: adminConnections - a0 };
    };

    test.each([
      ['proxy_port_by_loopback_literal', () => `127.0.0.1:${w.h.proxyPort}`, 'ip_loopback'],
      ['admin_port_by_loopback_literal', () => `127.0.0.1:${adminPort}`, 'ip_loopback'],
      ['admin_port_by_mapped_v6_literal', () => `[::ffff:127.0.0.1]:${adminPort}`, 'ip_loopback'],
      ['admin_port_by_decimal_integer', () => `2130706433:${adminPort}`, 'ip_loopback'],
      ['proxy_port_by_unspecified_address', () => `0.0.0.0:${w.h.proxyPort}`, 'ip_unspecified'],
      ['proxy_port_by_allowlisted_name', () => `loop.test:${w.h.proxyPort}`, 'self_loop'],
      ['admin_port_by_allowlisted_name', () => `loop.test:${adminPort}`, 'self_loop'],
      ['admin_port_by_allowlisted_name_odd_spelling', () => `LOOP.test.:${adminPort}`, 'self_loop'],
    ] as const)('%s is denied %s over plain HTTP and CONNECT; neither listener receives a connection from the proxy', async (_trick, authority, reason) => {
      for (const transport of TRANSPORTS) {
        const { r, proxy, admin } = await proxySaw(() =>
          transport === 'http' ? rawRequest(w.h.proxyPort, get(`http://${authority()}/v1/accounts/agent-1`, w.auth)) : rawRequest(w.h.proxyPort, connect(authority(), w.auth)),
        );
        expect([transport, r.status, r.reason]).toEqual([transport, 403, reason]);
        // Our own connection is the only one the proxy listener accepted.
        expect(proxy).toBe(1);
        expect(admin).toBe(0);
      }
    });

    test('allowlisted_loopback_literal_at_own_port: even a literal the policy opens (127.0.0.1 with allowPrivate) is self_loop at the proxy ports', async () => {
      const extra = `  self-literal:\n    hosts: ["127.0.0.1"]\n    ports: [${w.h.proxyPort}, ${adminPort}]\n    allowPrivate: [127.0.0.1/32]\n`;
      await w.h.setPolicy(worldPolicy(w.h.proxyPort, adminPort, extra).replace('allow: [web,', 'allow: [self-literal, web,'));
      try {
        for (const port of [w.h.proxyPort, adminPort]) {
          const { r, proxy, admin } = await proxySaw(() => rawRequest(w.h.proxyPort, get(`http://127.0.0.1:${port}/metrics`, w.auth)));
          expect([r.status, r.reason]).toEqual([403, 'self_loop']);
          expect(proxy).toBe(1);
          expect(admin).toBe(0);
          expect(egressLine(w.h.logs, r.responses[0]!.headers['x-portcullis-request-id']!)).toMatchObject({ destination: 'self-literal', reason: 'self_loop' });
        }
      } finally {
        await w.h.setPolicy(worldPolicy(w.h.proxyPort, adminPort));
      }
    });
  });
});
