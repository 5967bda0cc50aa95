/**
 * Resolve-then-dial, end to end, inside a private network namespace (scripts/run-tests.mjs runs
 * this file under `unshare -n`). The "internal" servers on 10.0.0.1, 169.254.169.254 and
 * fd00:ec2::254 and the "public" one on 203.0.113.10 all live on ifb interfaces of the namespace:
 * no packet leaves it. The DNS server is on 127.0.0.1 of the namespace.
 */
import net from 'node:net';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { CidrSet } from '../../src/net/address.js';
import { AddressDeniedError, EgressResolver } from '../../src/net/resolver.js';
import type { ResolveRequest, SelfEndpoint } from '../../src/net/resolver.js';
import { startDnsServer } from '../helpers/dns-server.js';
import type { DnsServer } from '../helpers/dns-server.js';
import { describeNetns, setupNetns } from '../helpers/netns.js';

/** A TCP server that answers "pong <its address>" and counts every connection it accepts. */
interface CountingServer {
  readonly server: net.Server;
  accepted: number;
  bytes: number;
}

/** Listens on `host:port` (port 0 picks one). */
async function listen(host: string, port: number): Promise<CountingServer> {
  const s: CountingServer = { server: net.createServer(), accepted: 0, bytes: 0 };
  s.server.on('connection', (socket) => {
    s.accepted++;
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      s.bytes += chunk.length;
      socket.end(`pong ${host}`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    s.server.once('error', reject);
    s.server.listen(port, host, resolve);
  });
  return s;
}

/** Port of a listening server. */
function portOf(s: CountingServer): number {
  return (s.server.address() as net.AddressInfo).port;
}

/** Connects to exactly `ip:port`, sends "ping" and returns the reply. */
async function ping(ip: string, port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: ip, port });
    let reply = '';
    socket.on('error', reject);
    socket.on('connect', () => socket.write('ping'));
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
    });
    socket.on('end', () => resolve(reply));
  });
}

describeNetns('resolver pinning inside a network namespace', () => {
  let dns: DnsServer;
  let publicServer: CountingServer;
  let privateServer: CountingServer;
  let metadataServer: CountingServer;
  let ulaServer: CountingServer;
  let port: number;
  const closeList: CountingServer[] = [];
  // 203.0.113.0/24 is a documentation range (class reserved): opening it globally is what makes
  // the namespace's stand-in "public" server dialable, and exercises the allowPrivate path.
  const allowDoc = new CidrSet(['203.0.113.0/24']);

  const resolver = (selfEndpoints: readonly SelfEndpoint[] = []): EgressResolver =>
    new EgressResolver({
      servers: [dns.server],
      timeoutMs: 2000,
      globalAllowPrivate: () => allowDoc,
      selfEndpoints: () => selfEndpoints,
    });
  const req = (host: string, p = port): ResolveRequest => ({ host, hostKind: 'name', port: p, allowPrivate: null });

  beforeAll(async () => {
    setupNetns([
      { cidr: '10.0.0.1/32' },
      { cidr: '203.0.113.10/32' },
      { cidr: '169.254.169.254/32' },
      { cidr: 'fd00:ec2::254/128' },
      { cidr: '100.64.0.1/32', iface: 'pcx1' },
      { cidr: '192.168.1.1/32', iface: 'pcx1' },
    ]);
    publicServer = await listen('203.0.113.10', 0);
    port = portOf(publicServer);
    // Every server on the same port, so only the address decides where a dial lands.
    privateServer = await listen('10.0.0.1', port);
    metadataServer = await listen('169.254.169.254', port);
    ulaServer = await listen('fd00:ec2::254', port);
    closeList.push(publicServer, privateServer, metadataServer, ulaServer);
    dns = await startDnsServer({
      'svc.test': { A: ['10.0.0.1', '203.0.113.10'] },
      'meta.test': { A: ['169.254.169.254'], AAAA: ['fd00:ec2::254'] },
      'self.test': { A: ['203.0.113.10'] },
    });
  });

  afterAll(async () => {
    await dns?.close();
    await Promise.all(closeList.map((s) => new Promise((resolve) => s.server.close(resolve))));
  });

  test('only the allowed address is returned; the dial reaches it and the private server gets nothing', async () => {
    const r = await resolver().resolve(req('svc.test'));
    expect(r).toEqual({ addresses: ['203.0.113.10'], dropped: [{ ip: '10.0.0.1', reason: 'ip_private' }] });

    expect(await ping(r.addresses[0] as string, port)).toBe('pong 203.0.113.10');
    expect(publicServer.accepted).toBe(1);
    expect(privateServer.accepted).toBe(0);
    expect(privateServer.bytes).toBe(0);

    // Control: the private server is really there and would have answered a dial.
    expect(await ping('10.0.0.1', port)).toBe('pong 10.0.0.1');
    expect(privateServer.accepted).toBe(1);
  });

  test('a name pointing only at metadata addresses is denied and nothing is dialed', async () => {
    const err = await resolver()
      .resolve(req('meta.test'))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AddressDeniedError);
    expect(err).toMatchObject({
      reason: 'ip_link_local',
      ip: '169.254.169.254',
      dropped: [
        { ip: '169.254.169.254', reason: 'ip_link_local' },
        { ip: 'fd00:ec2::254', reason: 'ip_private' },
      ],
    });
    expect(metadataServer.accepted).toBe(0);
    expect(ulaServer.accepted).toBe(0);
  });

  test("a wildcard listener's interface addresses are self_loop, read from the real interfaces", async () => {
    const proxy = await listen('0.0.0.0', 0);
    closeList.push(proxy);
    const res = resolver([{ address: '0.0.0.0', port: portOf(proxy) }]);
    const err = await res.resolve(req('self.test', portOf(proxy))).catch((e: unknown) => e);
    expect(err).toMatchObject({ reason: 'self_loop', ip: '203.0.113.10' });
    // Another port on the same address is not the proxy.
    expect((await res.resolve(req('self.test'))).addresses).toEqual(['203.0.113.10']);
    expect(proxy.accepted).toBe(0);
  });

  test('setupNetns refuses without PORTCULLIS_NETNS=1', () => {
    const saved = process.env.PORTCULLIS_NETNS;
    delete process.env.PORTCULLIS_NETNS;
    try {
      expect(() => setupNetns([{ cidr: '10.9.9.9/32' }])).toThrow(/setupNetns refused: PORTCULLIS_NETNS/);
    } finally {
      process.env.PORTCULLIS_NETNS = saved;
    }
  });
});
