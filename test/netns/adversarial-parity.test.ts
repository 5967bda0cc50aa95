/**
 * Adversarial suite — parity (issue 4). Every denial must hold the same way, with the same
 * status and reason code, over every transport that can see it: plain HTTP (absolute-form), an
 * opaque CONNECT tunnel, and a request inside an intercepted tunnel (`inspect: true`).
 *
 * PARITY_TABLE is the one place to extend: each row names a reason and says how to provoke it
 * on each transport. Host-level reasons are decided at CONNECT time for opaque and intercepted
 * tunnels alike (row.connect); request-level reasons (method, path, body, lockdown request
 * rules, upgrades) need a request to judge, so they pair plain HTTP with an intercepted request
 * (row.intercepted). A new transport (HTTP/2, a SOCKS front end) adds a column here.
 * Runs inside the test namespace; every forbidden address is a trap.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import type { Reason } from '../../src/reasons.js';
import { basicAuth, clientHello, connect, get, interceptedRequest, openTunnel, overTunnel, rawRequest, sleep, startWorld, type RawResult, type World } from '../helpers/adversary.js';
import { describeNetns } from '../helpers/netns.js';

/** Who asks: the normal agent, one in lockdown, one without valid credentials. */
type Who = 'agent' | 'locked' | 'anonymous' | 'wrong_token' | 'revoked';

/** One denial and how to provoke it on each transport that can see it. */
interface ParityRow {
  readonly trick: string;
  readonly reason: Reason;
  readonly status: number;
  readonly who?: Who;
  /** Plain HTTP: request line target (absolute-form) and extra header lines. */
  readonly http?: { readonly method?: string; readonly url: string; readonly headers?: readonly string[] };
  /** Opaque CONNECT authority (decided before any byte of the tunnel). */
  readonly connect?: string;
  /** Inside an intercepted tunnel to inspected.test:443: method, origin-form target, extra headers. */
  readonly intercepted?: { readonly method?: string; readonly path: string; readonly headers?: readonly string[] };
  /** True when the name is decided before DNS: nothing may be asked. */
  readonly noDns?: boolean;
}

const HIGH_ENTROPY = 'q=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6';

export const PARITY_TABLE: readonly ParityRow[] = [
  // Host-level: plain HTTP and CONNECT (opaque or to be intercepted: both decide at CONNECT time).
  { trick: 'not_allowlisted_name', reason: 'not_allowlisted', status: 403, http: { url: 'http://evil.test/' }, connect: 'evil.test:443', noDns: true },
  { trick: 'suffix_confusion', reason: 'not_allowlisted', status: 403, http: { url: 'http://allowed.test.evil.test/' }, connect: 'allowed.test.evil.test:443', noDns: true },
  { trick: 'wildcard_apex', reason: 'not_allowlisted', status: 403, http: { url: 'http://wild.test/' }, connect: 'wild.test:443', noDns: true },
  { trick: 'denied_host', reason: 'denied_host', status: 403, http: { url: 'http://x.denied.test/' }, connect: 'x.denied.test:443', noDns: true },
  { trick: 'loopback_short_form', reason: 'ip_loopback', status: 403, http: { url: 'http://127.1/' }, connect: '127.1:443', noDns: true },
  { trick: 'private_octal', reason: 'ip_private', status: 403, http: { url: 'http://012.0.0.1/' }, connect: '012.0.0.1:443', noDns: true },
  { trick: 'metadata_hex', reason: 'ip_link_local', status: 403, http: { url: 'http://0xa9fea9fe/' }, connect: '0xa9fea9fe:443', noDns: true },
  { trick: 'metadata_mapped_v6', reason: 'ip_link_local', status: 403, http: { url: 'http://[::ffff:a9fe:a9fe]/' }, connect: '[::ffff:a9fe:a9fe]:443', noDns: true },
  { trick: 'cgnat', reason: 'ip_cgnat', status: 403, http: { url: 'http://100.64.0.1/' }, connect: '100.64.0.1:443', noDns: true },
  { trick: 'ietf_metadata', reason: 'ip_reserved', status: 403, http: { url: 'http://192.0.0.192/' }, connect: '192.0.0.192:443', noDns: true },
  { trick: 'unspecified_zero', reason: 'ip_unspecified', status: 403, http: { url: 'http://0/' }, connect: '0:443', noDns: true },
  { trick: 'multicast', reason: 'ip_multicast', status: 403, http: { url: 'http://224.0.0.1/' }, connect: '224.0.0.1:443', noDns: true },
  { trick: 'nat64_metadata', reason: 'ip_v6_embedded', status: 403, http: { url: 'http://[64:ff9b::a9fe:a9fe]/' }, connect: '[64:ff9b::a9fe:a9fe]:443', noDns: true },
  { trick: 'public_literal', reason: 'ip_literal', status: 403, http: { url: 'http://11.0.0.2/' }, connect: '11.0.0.2:443', noDns: true },
  { trick: 'port_not_allowed', reason: 'port_not_allowed', status: 403, http: { url: 'http://allowed.test:22/' }, connect: 'allowed.test:22', noDns: true },
  { trick: 'scheme_not_allowed', reason: 'scheme_not_allowed', status: 403, http: { url: 'http://secure.test/' }, connect: 'secure.test:80', noDns: true },
  { trick: 'developer_only', reason: 'developer_only', status: 403, http: { url: 'http://dev.test/' }, connect: 'dev.test:443', noDns: true },
  { trick: 'lockdown_destination', reason: 'lockdown_destination', status: 403, who: 'locked', http: { url: 'http://allowed.test/' }, connect: 'allowed.test:443', noDns: true },
  { trick: 'resolves_to_metadata', reason: 'ip_link_local', status: 403, http: { url: 'http://meta.dns.test/' }, connect: 'meta.dns.test:443' },
  { trick: 'resolves_to_private_v6', reason: 'ip_private', status: 403, http: { url: 'http://ula.dns.test/' }, connect: 'ula.dns.test:443' },
  { trick: 'self_loop', reason: 'self_loop', status: 403, http: { url: 'http://loop.test:PROXY/' }, connect: 'loop.test:PROXY' },
  { trick: 'unresolvable', reason: 'dns_error', status: 502, http: { url: 'http://nx.test/' }, connect: 'nx.test:443' },
  { trick: 'malformed_name', reason: 'bad_request', status: 400, http: { url: 'http://allowed..test/' }, connect: 'allowed..test:443', noDns: true },
  { trick: 'no_credentials', reason: 'auth_missing', status: 407, who: 'anonymous', http: { url: 'http://allowed.test/' }, connect: 'allowed.test:443', noDns: true },
  { trick: 'wrong_token', reason: 'auth_invalid', status: 407, who: 'wrong_token', http: { url: 'http://allowed.test/' }, connect: 'allowed.test:443', noDns: true },
  { trick: 'revoked_session', reason: 'session_revoked', status: 407, who: 'revoked', http: { url: 'http://allowed.test/' }, connect: 'allowed.test:443', noDns: true },
  // Request-level: plain HTTP and a request inside an intercepted tunnel.
  { trick: 'method_not_allowed', reason: 'method_not_allowed', status: 403, http: { method: 'DELETE', url: 'http://inspected.test/allowed/x' }, intercepted: { method: 'DELETE', path: '/allowed/x' } },
  { trick: 'path_not_allowed', reason: 'path_not_allowed', status: 403, http: { url: 'http://inspected.test/admin' }, intercepted: { path: '/admin' } },
  { trick: 'path_dot_dot_encoded', reason: 'path_not_allowed', status: 403, http: { url: 'http://inspected.test/allowed/%2e%2e/admin' }, intercepted: { path: '/allowed/%2e%2e/admin' } },
  { trick: 'path_dot_dot_behind_encoded_slash', reason: 'path_not_allowed', status: 403, http: { url: 'http://inspected.test/allowed/..%2fadmin' }, intercepted: { path: '/allowed/..%2fadmin' } },
  { trick: 'path_tomcat_parameter', reason: 'path_not_allowed', status: 403, http: { url: 'http://inspected.test/allowed/..;/admin' }, intercepted: { path: '/allowed/..;/admin' } },
  { trick: 'lockdown_method', reason: 'lockdown_method', status: 403, who: 'locked', http: { method: 'POST', url: 'http://inspected.test/allowed/x', headers: ['Content-Length: 0'] }, intercepted: { method: 'POST', path: '/allowed/x', headers: ['Content-Length: 0'] } },
  { trick: 'lockdown_method_override_header', reason: 'lockdown_method', status: 403, who: 'locked', http: { url: 'http://inspected.test/allowed/x', headers: ['X-HTTP-Method-Override: DELETE'] }, intercepted: { path: '/allowed/x', headers: ['X-HTTP-Method-Override: DELETE'] } },
  { trick: 'lockdown_body', reason: 'lockdown_body', status: 403, who: 'locked', http: { url: 'http://inspected.test/allowed/x', headers: ['Content-Length: 5'] }, intercepted: { path: '/allowed/x', headers: ['Content-Length: 5'] } },
  { trick: 'lockdown_url_entropy', reason: 'lockdown_url', status: 403, who: 'locked', http: { url: `http://inspected.test/allowed/x?${HIGH_ENTROPY}` }, intercepted: { path: `/allowed/x?${HIGH_ENTROPY}` } },
  { trick: 'body_too_large', reason: 'body_too_large', status: 413, http: { url: 'http://inspected.test/allowed/x', headers: ['Content-Length: 20000000'] }, intercepted: { path: '/allowed/x', headers: ['Content-Length: 20000000'] } },
  { trick: 'websocket_upgrade', reason: 'upgrade_not_allowed', status: 403, http: { url: 'http://inspected.test/allowed/ws', headers: ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'] }, intercepted: { path: '/allowed/ws', headers: ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'] } },
];

/** The transports of a row, in table order. */
function transportsOf(row: ParityRow): ('http' | 'connect' | 'intercepted')[] {
  return [...(row.http ? (['http'] as const) : []), ...(row.connect ? (['connect'] as const) : []), ...(row.intercepted ? (['intercepted'] as const) : [])];
}

describeNetns('adversarial: parity across transports', () => {
  let w: World;
  const auths = new Map<Who, string | undefined>();

  beforeAll(async () => {
    w = await startWorld({ records: { 'meta.dns.test': { A: ['169.254.169.254'] }, 'ula.dns.test': { AAAA: ['fd00:ec2::254'] } } });
    auths.set('agent', w.auth);
    auths.set('anonymous', undefined);
    auths.set('wrong_token', basicAuth(w.account, `pcs_0000000000000000_${'A'.repeat(43)}`));
    const locked = await w.h.createSession('locked-1');
    expect((await w.h.admin('PUT', '/v1/accounts/locked-1/lockdown', { enabled: true })).status).toBe(200);
    auths.set('locked', basicAuth('locked-1', locked.token));
    const revoked = await w.h.createSession('revoked-1');
    expect((await w.h.admin('DELETE', `/v1/accounts/revoked-1/sessions/${revoked.id}`)).status).toBeLessThan(300);
    auths.set('revoked', basicAuth('revoked-1', revoked.token));
  });

  afterAll(async () => {
    await w?.close();
  });

  afterEach(() => {
    expect(w.traps.hits()).toEqual([]);
    expect(w.internalErrors()).toEqual([]);
  });

  const fill = (s: string): string => s.replace('PROXY', String(w.h.proxyPort));

  const run = (row: ParityRow, transport: 'http' | 'connect' | 'intercepted'): Promise<RawResult> => {
    const auth = auths.get(row.who ?? 'agent');
    if (transport === 'http') {
      const h = row.http!;
      return rawRequest(w.h.proxyPort, get(fill(h.url), auth, h.headers ?? [], h.method ?? 'GET'));
    }
    if (transport === 'connect') return rawRequest(w.h.proxyPort, connect(fill(row.connect!), auth));
    const i = row.intercepted!;
    const request = `${i.method ?? 'GET'} ${i.path} HTTP/1.1\r\nHost: inspected.test\r\n${(i.headers ?? []).map((l) => `${l}\r\n`).join('')}\r\n`;
    return interceptedRequest(w.h.proxyPort, 'inspected.test:443', auth!, w.proxyCa, request);
  };

  describe.each(PARITY_TABLE.map((row) => [row.trick, row] as const))('%s', (_trick, row) => {
    test.each(transportsOf(row))(`over %s: ${row.status} ${row.reason}, the same code everywhere, nothing reaches an origin`, async (transport) => {
      w.mark();
      const r = await run(row, transport);
      expect([r.status, r.reason]).toEqual([row.status, row.reason]);
      const id = r.responses[0]?.headers['x-portcullis-request-id'];
      if (id !== undefined) {
        const line = w.h.logs.egress().find((l) => l['reqId'] === id);
        expect(line).toMatchObject({ kind: transport, reason: row.reason });
      }
      const d = w.since();
      expect(d.webRequests).toEqual([]);
      expect(d.web6Requests).toEqual([]);
      expect(d.tlsHandshakes).toBe(0);
      if (row.noDns) expect(d.dnsQueries).toEqual([]);
    });
  });

  test('positive_controls: the same request shapes are allowed where the policy allows them, over every transport', async () => {
    w.mark();
    expect((await rawRequest(w.h.proxyPort, get('http://inspected.test/allowed/x', w.auth))).status).toBe(200);
    const inner = await interceptedRequest(w.h.proxyPort, 'inspected.test:443', w.auth, w.proxyCa, 'GET /allowed/x HTTP/1.1\r\nHost: inspected.test\r\n\r\n');
    expect(inner.status).toBe(200);
    const t = await openTunnel(w.h.proxyPort, 'allowed.test:80', w.auth);
    expect((await overTunnel(t, 'GET /opaque HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n')).text).toMatch(/^HTTP\/1\.1 200/);
    expect(w.since().webRequests.map((s) => s.url)).toEqual(['/allowed/x', '/opaque']);
    expect(w.since().tlsHandshakes).toBe(1);
  });

  test('sni_mismatch_parity: a hello for another name is sni_mismatch on an opaque tunnel and on an intercepted one', async () => {
    for (const authority of ['allowed.test:443', 'inspected.test:443']) {
      const host = authority.split(':')[0]!;
      const before = w.h.logs.egress().filter((l) => l['kind'] === 'connect' && l['host'] === host).length;
      const t = await openTunnel(w.h.proxyPort, authority, w.auth);
      expect(t.status).toBe(200);
      const out = await overTunnel(t, clientHello({ sni: ['evil.test'] }), 500);
      expect(out.closed).toBe(true);
      let line: Record<string, unknown> | undefined;
      for (let i = 0; i < 100 && line === undefined; i++) {
        line = w.h.logs.egress().filter((l) => l['kind'] === 'connect' && l['host'] === host)[before];
        if (line === undefined) await sleep(10);
      }
      expect([authority, line?.['reason']]).toEqual([authority, 'sni_mismatch']);
    }
  });

  test('host_mismatch_inside_interception: an inner request naming another Host is refused (plain HTTP rebuilds Host instead)', async () => {
    w.mark();
    const r = await interceptedRequest(w.h.proxyPort, 'inspected.test:443', w.auth, w.proxyCa, 'GET /allowed/x HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n');
    expect([r.status, r.reason]).toEqual([403, 'host_mismatch']);
    const plain = await rawRequest(w.h.proxyPort, get('http://inspected.test/allowed/x', w.auth, ['Host: 169.254.169.254']));
    expect(plain.status).toBe(200);
    expect(w.since().webRequests.map((s) => s.headers.host)).toEqual(['inspected.test']);
  });
});
