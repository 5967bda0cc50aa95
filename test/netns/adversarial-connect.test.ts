/**
 * Adversarial suite — CONNECT and TLS (issue 4). Malformed authorities and ports, IPv6
 * literals, SNI mismatch and absence (with synthetic hellos and with real TLS handshakes whose
 * ClientHello is rewritten on the wire), record-layer tricks that a real server accepts, non-TLS
 * bytes in a tunnel, client-chosen next hops, floods and slow clients. Runs inside the test
 * namespace: the TLS origin is 11.0.0.1:443 (its certificate also covers evil.test, so a leak
 * would complete a handshake), a byte recorder sits on 11.0.0.1:8080, every forbidden address is
 * a trap.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { Reason } from '../../src/reasons.js';
import {
  basicAuth,
  clientHello,
  connect,
  openTunnel,
  overTunnel,
  rawRequest,
  sleep,
  startTrap,
  startWorld,
  tlsThroughTunnel,
  type Trap,
  type Tunnel,
  type World,
} from '../helpers/adversary.js';
import { describeNetns } from '../helpers/netns.js';

const HELLO_TIMEOUT_MS = 800;

/** [trick, authority]: CONNECT authorities that are not one: 400, nothing resolved or dialed. */
const MALFORMED_AUTHORITIES: ReadonlyArray<readonly [string, string]> = [
  ['port_zero', 'allowed.test:0'],
  ['port_65536', 'allowed.test:65536'],
  ['port_huge', 'allowed.test:99999999999999999999'],
  ['port_leading_zero', 'allowed.test:0443'],
  ['port_plus_sign', 'allowed.test:+443'],
  ['port_minus_sign', 'allowed.test:-1'],
  ['port_hex', 'allowed.test:0x1bb'],
  ['port_service_name', 'allowed.test:https'],
  ['port_missing', 'allowed.test'],
  ['port_empty', 'allowed.test:'],
  ['two_ports', 'allowed.test:443:443'],
  ['host_missing', ':443'],
  ['path_after_port', 'allowed.test:443/'],
  ['absolute_url', 'http://allowed.test:443'],
  ['query_after_port', 'allowed.test:443?x=1'],
  ['fragment_after_port', 'allowed.test:443#x'],
  ['userinfo', 'user@allowed.test:443'],
  ['userinfo_allowed_then_evil', 'allowed.test:443@evil.test:443'],
  ['backslash_before_port', 'allowed.test\\:443'],
  ['name_in_brackets', '[allowed.test]:443'],
  ['unterminated_v6', '[::1:443'],
  ['unbracketed_v6', '::1:443'],
  ['unbracketed_v6_documentation', '2001:db8::1:443'],
  ['empty_brackets', '[]:443'],
  ['v6_zone_id_encoded', '[fe80::1%25eth0]:443'],
  ['v6_zone_id_raw', '[fe80::1%eth0]:443'],
  ['v6_junk_after_bracket', '[::1]x:443'],
  ['percent_encoded_colon', 'allowed.test%3a443'],
  ['asterisk_host', '*:443'],
  ['slash_only', '/'],
];

/** [trick, authority, reason]: CONNECT denials decided before DNS. */
const DENIED_AUTHORITIES: ReadonlyArray<readonly [string, string, Reason]> = [
  ['port_ssh', 'allowed.test:22', 'port_not_allowed'],
  ['port_alternate_https', 'allowed.test:8443', 'port_not_allowed'],
  ['port_max', 'allowed.test:65535', 'port_not_allowed'],
  ['v6_loopback', '[::1]:443', 'ip_loopback'],
  ['v6_mapped_loopback', '[::ffff:127.0.0.1]:443', 'ip_loopback'],
  ['v6_mapped_metadata_hex', '[::ffff:a9fe:a9fe]:80', 'ip_link_local'],
  ['v6_ula_metadata', '[fd00:ec2::254]:443', 'ip_private'],
  ['v6_public_not_allowlisted', '[2600:1::2]:443', 'ip_literal'],
  ['v6_nat64_metadata', '[64:ff9b::a9fe:a9fe]:443', 'ip_v6_embedded'],
  ['decimal_metadata', '2852039166:80', 'ip_link_local'],
];

/** [trick, SNI bytes sent, CONNECT host]: hellos whose name is not the CONNECT host. */
const SNI_MISMATCH: ReadonlyArray<readonly [string, string]> = [
  ['other_name', 'evil.test'],
  ['allowed_name_as_prefix', 'allowed.test.evil.test'],
  ['another_allowlisted_name', 'a.wild.test'],
  ['ip_literal_of_the_same_origin', '11.0.0.1'],
  ['punycode_homoglyph', 'xn--llowed-2nf.test'],
  ['suffix_only', 'test'],
];

/** SNI spellings that ARE the CONNECT host once canonicalized. */
const SNI_SAME_NAME: readonly string[] = ['allowed.test', 'ALLOWED.TEST', 'allowed.test.', 'Allowed.Test..'];

describeNetns('adversarial: CONNECT and TLS', () => {
  let w: World;
  let recorder: Trap;
  let lockedAuth: string;

  beforeAll(async () => {
    w = await startWorld({ flags: ['--header-timeout-ms', String(HELLO_TIMEOUT_MS)] });
    // Any byte that reaches 11.0.0.1:8080 through a tunnel is counted here.
    recorder = await startTrap('11.0.0.1', 8080);
    const locked = await w.h.createSession('locked-1');
    expect((await w.h.admin('PUT', '/v1/accounts/locked-1/lockdown', { enabled: true })).status).toBe(200);
    lockedAuth = basicAuth('locked-1', locked.token);
  });

  afterAll(async () => {
    await recorder?.close();
    await w?.close();
  });

  afterEach(() => {
    expect(w.traps.hits()).toEqual([]);
    expect(w.internalErrors()).toEqual([]);
  });

  /** Waits for the next decision line of a CONNECT to `host` (tunnels log once their first bytes are judged). */
  const nextConnectLine = async (host: string, after: number): Promise<Record<string, unknown>> => {
    for (let i = 0; i < 200; i++) {
      const lines = w.h.logs.egress().filter((l) => l['kind'] === 'connect' && l['host'] === host);
      if (lines.length > after) return lines[after]!;
      await sleep(10);
    }
    throw new Error(`no decision line for CONNECT ${host}`);
  };
  const connectLines = (host: string): number => w.h.logs.egress().filter((l) => l['kind'] === 'connect' && l['host'] === host).length;

  /** Opens a tunnel to the byte recorder and sends `first`; returns the decision line and the bytes that got through. */
  const judge = async (first: Buffer, auth = w.auth, authority = 'allowed.test:8080'): Promise<{ line: Record<string, unknown>; delivered: number; closed: boolean }> => {
    const host = authority.slice(0, authority.lastIndexOf(':'));
    const before = connectLines(host);
    const bytes0 = recorder.bytes;
    const t = await openTunnel(w.h.proxyPort, authority, auth);
    expect(t.status).toBe(200);
    const out = await overTunnel(t, first, 400);
    const line = await nextConnectLine(host, before);
    return { line, delivered: recorder.bytes - bytes0, closed: out.closed };
  };

  describe('authorities and ports', () => {
    test.each(MALFORMED_AUTHORITIES)('%s (CONNECT %s): 400 bad_request, nothing resolved or dialed', async (_trick, authority) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, connect(authority, w.auth));
      expect([r.status, r.reason]).toEqual([400, 'bad_request']);
      expect(w.since().dnsQueries).toEqual([]);
      expect(w.since().tlsConnections).toBe(0);
    });

    test.each(DENIED_AUTHORITIES)('%s (CONNECT %s): %s, nothing resolved or dialed', async (_trick, authority, reason) => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, connect(authority, w.auth));
      expect([r.status, r.reason]).toEqual([403, reason]);
      expect(w.since().dnsQueries).toEqual([]);
    });

    test.each([
      ['v6_allowlisted_literal', '[2600:1::1]:80'],
      ['v6_allowlisted_literal_long_form', '[2600:1:0:0:0:0:0:1]:80'],
    ])('%s (CONNECT %s) tunnels to the allowlisted IPv6 origin and nowhere else', async (_trick, authority) => {
      w.mark();
      const t = await openTunnel(w.h.proxyPort, authority, w.auth);
      expect(t.status).toBe(200);
      expect((await overTunnel(t, 'GET /v6 HTTP/1.1\r\nHost: [2600:1::1]\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 200/);
      expect(w.since().web6Requests.map((s) => s.url)).toEqual(['/v6']);
    });

    test('lowercase_connect_method: "connect" is not CONNECT; 400 and nothing dialed', async () => {
      w.mark();
      const r = await rawRequest(w.h.proxyPort, connect('allowed.test:443', w.auth).replace('CONNECT', 'connect'));
      expect(r.status).toBe(400);
      expect(w.since().tlsConnections).toBe(0);
    });
  });

  describe('SNI must be the CONNECT host', () => {
    test.each(SNI_MISMATCH)('sni_%s (SNI %s for CONNECT allowed.test): closed as sni_mismatch, not one byte reaches the origin', async (_trick, sni) => {
      const { line, delivered, closed } = await judge(clientHello({ sni: [sni] }));
      expect(line).toMatchObject({ decision: 'deny', reason: 'sni_mismatch' });
      expect(delivered).toBe(0);
      expect(closed).toBe(true);
    });

    test.each(SNI_SAME_NAME)('sni_spelling %s for CONNECT allowed.test is the same name: relayed', async (sni) => {
      const hello = clientHello({ sni: [sni] });
      const { line, delivered } = await judge(hello);
      expect(line).toMatchObject({ decision: 'allow', reason: 'allowlisted' });
      expect(line['error']).toBeUndefined();
      expect(delivered).toBe(hello.length);
    });

    test.each([
      ['fragmented_into_8_byte_records', { recordSize: 8 }],
      ['fragmented_into_1_byte_records', { recordSize: 1 }],
    ] as const)('sni_mismatch_%s: still judged, still sni_mismatch', async (_trick, o) => {
      const { line, delivered } = await judge(clientHello({ sni: ['evil.test'], ...o }));
      expect(line['reason']).toBe('sni_mismatch');
      expect(delivered).toBe(0);
    });

    test('sni_mismatch_in_the_connect_write: a hello sent in the same packet as the CONNECT head is judged the same way', async () => {
      const before = connectLines('allowed.test');
      const bytes0 = recorder.bytes;
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:8080', w.auth, { first: clientHello({ sni: ['evil.test'] }) });
      expect(t.status).toBe(200);
      await overTunnel(t, Buffer.alloc(0), 300);
      expect((await nextConnectLine('allowed.test', before))['reason']).toBe('sni_mismatch');
      expect(recorder.bytes - bytes0).toBe(0);
    });

    test('sni_ssl3_record_version: a hello in a record marked 0x0300 (which OpenSSL accepts) is still read and judged', async () => {
      const hello = clientHello({ sni: ['evil.test'] });
      hello.writeUInt16BE(0x0300, 1);
      const { line, delivered } = await judge(hello);
      expect(line['reason']).toBe('sni_mismatch');
      expect(delivered).toBe(0);
    });

    test('sni_behind_empty_records: empty handshake records before the hello (which OpenSSL skips) do not hide it', async () => {
      const hello = Buffer.concat([Buffer.from([22, 3, 1, 0, 0]), Buffer.from([22, 3, 1, 0, 0]), clientHello({ sni: ['evil.test'] })]);
      const { line, delivered } = await judge(hello);
      expect(line['reason']).toBe('sni_mismatch');
      expect(delivered).toBe(0);
    });

    test('sni_missing_outside_lockdown: a hello without SNI is relayed and logged as sni_missing', async () => {
      const hello = clientHello();
      const { line, delivered } = await judge(hello);
      expect(line).toMatchObject({ decision: 'allow', error: 'sni_missing' });
      expect(delivered).toBe(hello.length);
    });

    test('sni_missing_in_lockdown: an allow-tunnel destination in lockdown closes a hello without SNI; the origin gets nothing', async () => {
      const { line, delivered } = await judge(clientHello(), lockedAuth, 'tunnel.test:8080');
      expect(line).toMatchObject({ decision: 'deny', reason: 'sni_missing', account: 'locked-1' });
      expect(delivered).toBe(0);
    });

    test('sni_mismatch_in_lockdown: lockdown judges SNI exactly as outside', async () => {
      const { line, delivered } = await judge(clientHello({ sni: ['evil.test'] }), lockedAuth, 'tunnel.test:8080');
      expect(line['reason']).toBe('sni_mismatch');
      expect(delivered).toBe(0);
    });

    // Found by this suite, now fixed (src/proxy/tunnel.ts): a ClientHello the peek cannot parse (here: two host
    // names in one server_name list, which the proxy refuses to choose between) is relayed as if
    // it had no SNI outside lockdown. A hello no client sends should close the tunnel in every
    // mode; see the report of issue 4.
    test('sni_unparsable_hello_outside_lockdown: a malformed hello that names a second host is closed, not relayed', async () => {
      const { line, delivered } = await judge(clientHello({ sni: ['allowed.test', 'evil.test'] }));
      expect(line['decision']).toBe('deny');
      expect(delivered).toBe(0);
    });
  });

  describe('real TLS through the tunnel', () => {
    const tunnelTo = (authority = 'allowed.test:443', auth = w.auth): Promise<Tunnel> => openTunnel(w.h.proxyPort, authority, auth);

    test('tls_matching_sni: a real handshake with SNI allowed.test completes (positive control)', async () => {
      w.mark();
      const t = await tunnelTo();
      expect(t.status).toBe(200);
      expect(await tlsThroughTunnel(t, 'allowed.test', w.cert.cert)).toBe(true);
      for (let i = 0; i < 50 && w.since().tlsHandshakes === 0; i++) await sleep(10);
      expect(w.since().tlsHandshakes).toBe(1);
    });

    test.each([
      ['plain_mismatch', (h: Buffer) => h],
      ['record_version_0x0300', (h: Buffer) => Buffer.concat([h.subarray(0, 1), Buffer.from([3, 0]), h.subarray(3)])],
      ['record_version_0x03ff', (h: Buffer) => Buffer.concat([h.subarray(0, 1), Buffer.from([3, 0xff]), h.subarray(3)])],
      ['empty_record_first', (h: Buffer) => Buffer.concat([Buffer.from([22, 3, 1, 0, 0]), h])],
      [
        'split_records_second_marked_0x0300',
        (h: Buffer) => {
          const body = h.subarray(5);
          const rec = (x: Buffer, minor: number): Buffer => Buffer.concat([Buffer.from([22, 3, minor, x.length >> 8, x.length & 0xff]), x]);
          return Buffer.concat([rec(body.subarray(0, 40), 1), rec(body.subarray(40), 0)]);
        },
      ],
    ] as const)('tls_sni_evil_%s: a real client asking for evil.test never completes a handshake with the origin', async (_trick, rewrite) => {
      w.mark();
      const t = await tunnelTo();
      expect(t.status).toBe(200);
      expect(await tlsThroughTunnel(t, 'evil.test', w.cert.cert, rewrite)).toBe(false);
      expect(w.since().tlsHandshakes).toBe(0);
      expect(w.h.logs.egress().filter((l) => l['kind'] === 'connect').at(-1)).toMatchObject({ reason: 'sni_mismatch' });
    });

    test('tls_no_sni_in_lockdown: a real handshake without SNI to an allow-tunnel destination in lockdown is closed before the origin', async () => {
      w.mark();
      const t = await tunnelTo('tunnel.test:443', lockedAuth);
      expect(t.status).toBe(200);
      expect(await tlsThroughTunnel(t, '', w.cert.cert)).toBe(false);
      expect(w.since().tlsHandshakes).toBe(0);
    });
  });

  describe('non-TLS bytes and next hops', () => {
    test('plain_http_in_tunnel_outside_lockdown: relayed (an opaque tunnel carries what it carries) and logged as not TLS', async () => {
      w.mark();
      const before = connectLines('allowed.test');
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:80', w.auth);
      expect((await overTunnel(t, 'GET /plain HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 200/);
      expect(await nextConnectLine('allowed.test', before)).toMatchObject({ decision: 'allow', error: 'sni_missing (not TLS)' });
      expect(w.since().webRequests.map((s) => s.url)).toEqual(['/plain']);
    });

    test('plain_http_in_tunnel_in_lockdown: closed as sni_missing; the origin receives no request', async () => {
      w.mark();
      const before = connectLines('tunnel.test');
      const t = await openTunnel(w.h.proxyPort, 'tunnel.test:80', lockedAuth);
      expect(t.status).toBe(200);
      const out = await overTunnel(t, 'GET /exfil?d=secret HTTP/1.1\r\nHost: tunnel.test\r\n\r\n');
      expect(out.closed).toBe(true);
      expect(await nextConnectLine('tunnel.test', before)).toMatchObject({ reason: 'sni_missing' });
      expect(w.since().webRequests).toEqual([]);
    });

    test('garbage_then_tls_in_lockdown: junk bytes before a valid hello are not TLS; closed in lockdown', async () => {
      const { line, delivered } = await judge(Buffer.concat([Buffer.from('\x00\x01junk'), clientHello({ sni: ['tunnel.test'] })]), lockedAuth, 'tunnel.test:8080');
      expect(line['reason']).toBe('sni_missing');
      expect(delivered).toBe(0);
    });

    test.each([
      ['connect_inside_the_tunnel', 'CONNECT 10.0.0.1:80 HTTP/1.1\r\nHost: 10.0.0.1:80\r\n\r\n'],
      ['absolute_form_to_metadata_inside_the_tunnel', 'GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n'],
      ['absolute_form_to_private_inside_the_tunnel', 'GET http://10.0.0.1/ HTTP/1.1\r\nHost: 10.0.0.1\r\nConnection: close\r\n\r\n'],
    ])('client_chosen_next_hop_%s: the bytes go to the allowed origin only, never to the address they name', async (_trick, inner) => {
      w.mark();
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:80', w.auth);
      expect(t.status).toBe(200);
      await overTunnel(t, inner, 500);
      // The origin (11.0.0.1) may answer or not; the traps on 10.0.0.1 and 169.254.169.254 stay silent.
      expect(w.traps.hits()).toEqual([]);
    });

    test.each([
      ['x_forwarded_for', 'X-Forwarded-For: 10.0.0.1'],
      ['forwarded_host', 'Forwarded: for=1.2.3.4;host=169.254.169.254'],
      ['via_header', 'Via: 1.1 10.0.0.1'],
      ['portcullis_header_from_client', 'X-Portcullis-Resolve: 10.0.0.1'],
    ])('next_hop_header_%s on CONNECT: ignored; the tunnel reaches only the resolved, checked address', async (_trick, extra) => {
      w.mark();
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:80', w.auth, { extra: [extra] });
      expect((await overTunnel(t, 'GET /hop HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 200/);
      expect(w.since().webRequests.map((s) => s.url)).toEqual(['/hop']);
    });
  });

  describe('floods and slow clients', () => {
    test('silent_client_after_200: a tunnel whose client never speaks is closed after the hello timeout; the origin gets no byte', async () => {
      const bytes0 = recorder.bytes;
      const before = connectLines('allowed.test');
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:8080', w.auth);
      expect(t.status).toBe(200);
      const started = performance.now();
      const out = await overTunnel(t, Buffer.alloc(0), HELLO_TIMEOUT_MS + 2000);
      expect(out.closed).toBe(true);
      expect(performance.now() - started).toBeLessThan(HELLO_TIMEOUT_MS + 1500);
      expect(await nextConnectLine('allowed.test', before)).toMatchObject({ error: 'client sent no TLS ClientHello in time' });
      expect(recorder.bytes - bytes0).toBe(0);
    });

    test('dribbled_hello_past_the_timeout: a hello dribbled slower than the hello timeout is closed unjudged, never relayed', async () => {
      const bytes0 = recorder.bytes;
      const hello = clientHello({ sni: ['allowed.test'] });
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:8080', w.auth);
      t.socket.resume();
      let closed = false;
      t.socket.on('close', () => (closed = true));
      for (let i = 0; i < 12 && !closed; i++) {
        t.socket.write(hello.subarray(i, i + 1));
        await sleep(100);
      }
      await sleep(HELLO_TIMEOUT_MS);
      expect(closed).toBe(true);
      expect(recorder.bytes - bytes0).toBe(0);
      t.socket.destroy();
    });

    test('flood_of_denied_connects: 200 concurrent CONNECTs to a denied name are all 403, nothing resolved, the proxy keeps serving', async () => {
      w.mark();
      const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => rawRequest(w.h.proxyPort, connect(`flood${i}.evil.test:443`, w.auth), { timeoutMs: 5000 })));
      expect(rs.filter((r) => r.status === 403 && r.reason === 'not_allowlisted')).toHaveLength(200);
      expect(w.since().dnsQueries).toEqual([]);
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:443', w.auth);
      expect(t.status).toBe(200);
      t.socket.destroy();
    });

    test('half_open_client: a client that ends its side before any byte is closed at once, not held until the hello timeout', async () => {
      const t = await openTunnel(w.h.proxyPort, 'allowed.test:8080', w.auth);
      const started = performance.now();
      t.socket.end();
      t.socket.resume();
      await new Promise((resolve) => t.socket.once('close', resolve));
      expect(performance.now() - started).toBeLessThan(HELLO_TIMEOUT_MS / 2);
    });
  });
});
