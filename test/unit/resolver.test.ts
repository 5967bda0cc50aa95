/**
 * EgressResolver against a real DNS server on 127.0.0.1 (test/helpers/dns-server.ts).
 *
 * Addresses such as 8.8.8.8, 1.1.1.1 and 2606:4700:4700::1111 appear here as DNS ANSWER DATA
 * ONLY, because they are the simplest addresses that classify as public. Nothing in this file
 * dials any resolved address: the only packets sent go to the DNS server on loopback.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { CidrSet } from '../../src/net/address.js';
import { AddressDeniedError, DnsError, EgressResolver, formatDialAddress } from '../../src/net/resolver.js';
import type { DnsBackend, EgressResolverOptions, ResolveRequest, SelfEndpoint } from '../../src/net/resolver.js';
import { startDnsServer } from '../helpers/dns-server.js';
import type { DnsServer } from '../helpers/dns-server.js';

const NONE = new CidrSet([]);

let dns: DnsServer;
let now = 0;

// A fresh server per test: retries of a previous test's abandoned queries never show up here.
beforeEach(async () => {
  now = 0;
  dns = await startDnsServer({});
});

afterEach(async () => {
  await dns.close();
});

/** A resolver aimed at the test server, with a fake clock and no self endpoints by default. */
function resolver(overrides: Partial<EgressResolverOptions> = {}): EgressResolver {
  return new EgressResolver({
    servers: [dns.server],
    timeoutMs: 2000,
    globalAllowPrivate: () => NONE,
    selfEndpoints: () => [],
    localAddresses: () => ['127.0.0.1', '::1'],
    clock: () => now,
    ...overrides,
  });
}

/** A request for a name on port 443 without a destination allowPrivate. */
function name(host: string, extra: Partial<ResolveRequest> = {}): ResolveRequest {
  return { host, hostKind: 'name', port: 443, allowPrivate: null, ...extra };
}

/** The rejection of a promise (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(v)}`);
    },
    (err: unknown) => err,
  );
}

describe('classification of every answer', () => {
  test('public answers are kept, IPv4 first', async () => {
    dns.setRecords({ 'pub.test': { AAAA: ['2606:4700:4700::1111'], A: ['8.8.8.8', '1.1.1.1'] } });
    const r = await resolver().resolve(name('pub.test'));
    expect(r).toEqual({ addresses: ['8.8.8.8', '1.1.1.1', '2606:4700:4700::1111'], dropped: [] });
  });

  test.each([
    ['private_rfc1918', { A: ['10.0.0.1'] }, '10.0.0.1', 'ip_private'],
    ['private_192_168', { A: ['192.168.1.1'] }, '192.168.1.1', 'ip_private'],
    ['loopback', { A: ['127.0.0.1'] }, '127.0.0.1', 'ip_loopback'],
    ['metadata_link_local', { A: ['169.254.169.254'] }, '169.254.169.254', 'ip_link_local'],
    ['metadata_192_0_0', { A: ['192.0.0.192'] }, '192.0.0.192', 'ip_reserved'],
    ['cgnat', { A: ['100.64.0.1'] }, '100.64.0.1', 'ip_cgnat'],
    ['unspecified', { A: ['0.0.0.0'] }, '0.0.0.0', 'ip_unspecified'],
    ['multicast', { A: ['224.0.0.1'] }, '224.0.0.1', 'ip_multicast'],
    ['documentation', { A: ['203.0.113.10'] }, '203.0.113.10', 'ip_reserved'],
    ['v6_loopback', { AAAA: ['::1'] }, '::1', 'ip_loopback'],
    ['v6_ula_metadata', { AAAA: ['fd00:ec2::254'] }, 'fd00:ec2::254', 'ip_private'],
    ['v6_link_local', { AAAA: ['fe80::1'] }, 'fe80::1', 'ip_link_local'],
    ['v6_mapped_private', { AAAA: ['::ffff:10.0.0.1'] }, '10.0.0.1', 'ip_private'],
    ['v6_mapped_metadata', { AAAA: ['::ffff:169.254.169.254'] }, '169.254.169.254', 'ip_link_local'],
    ['v6_nat64', { AAAA: ['64:ff9b::a00:1'] }, '64:ff9b::a00:1', 'ip_v6_embedded'],
    ['v6_6to4', { AAAA: ['2002:a00:1::'] }, '2002:a00:1::', 'ip_v6_embedded'],
  ])('deny_%s', async (_name, records, ip, reason) => {
    dns.setRecords({ 'bad.test': records });
    const err = await rejection(resolver().resolve(name('bad.test')));
    expect(err).toBeInstanceOf(AddressDeniedError);
    expect(err).toMatchObject({ reason, ip, dropped: [{ ip, reason }] });
  });

  test('mixed answers keep only the public ones and report each drop', async () => {
    dns.setRecords({
      'mixed.test': { A: ['10.0.0.1', '8.8.8.8', '169.254.169.254'], AAAA: ['::1', '2606:4700:4700::1111'] },
    });
    const r = await resolver().resolve(name('mixed.test'));
    expect(r.addresses).toEqual(['8.8.8.8', '2606:4700:4700::1111']);
    expect(r.dropped).toEqual([
      { ip: '10.0.0.1', reason: 'ip_private' },
      { ip: '169.254.169.254', reason: 'ip_link_local' },
      { ip: '::1', reason: 'ip_loopback' },
    ]);
  });

  test('all forbidden is a denial with the first drop as reason, never a DNS error', async () => {
    dns.setRecords({ 'all.test': { A: ['169.254.169.254', '10.0.0.1'], AAAA: ['fd00::1'] } });
    const err = await rejection(resolver().resolve(name('all.test')));
    expect(err).toBeInstanceOf(AddressDeniedError);
    expect(err).not.toBeInstanceOf(DnsError);
    expect(err).toMatchObject({ reason: 'ip_link_local', ip: '169.254.169.254' });
    expect((err as AddressDeniedError).dropped).toHaveLength(3);
  });

  test('a mapped answer and the same IPv4 answer collapse into one dialable address', async () => {
    dns.setRecords({ 'dup.test': { A: ['8.8.8.8'], AAAA: ['::ffff:8.8.8.8'] } });
    expect(await resolver().resolve(name('dup.test'))).toEqual({ addresses: ['8.8.8.8'], dropped: [] });
  });
});

describe('DNS failures are errors, not denials', () => {
  test('NXDOMAIN', async () => {
    const err = await rejection(resolver().resolve(name('missing.test')));
    expect(err).toBeInstanceOf(DnsError);
    expect(err).toMatchObject({ code: 'dns_error', host: 'missing.test', detail: 'NXDOMAIN' });
  });

  test('a name without A or AAAA records', async () => {
    dns.setRecords({ 'empty.test': {} });
    expect(await rejection(resolver().resolve(name('empty.test')))).toMatchObject({
      code: 'dns_error',
      detail: 'no A or AAAA records',
    });
  });

  test('SERVFAIL', async () => {
    dns.setRecords({ 'broken.test': { rcode: 'SERVFAIL' } });
    expect(await rejection(resolver().resolve(name('broken.test')))).toMatchObject({ code: 'dns_error', detail: 'SERVFAIL' });
  });

  test('a server that never answers times out within the deadline', async () => {
    dns.setRecords({ 'silent.test': { drop: true } });
    const started = Date.now();
    const err = await rejection(resolver({ timeoutMs: 300 }).resolve(name('silent.test')));
    expect(err).toBeInstanceOf(DnsError);
    expect(err).toMatchObject({ detail: 'timeout after 300 ms' });
    expect(Date.now() - started).toBeLessThan(1500);
  });

  test('one family timing out still yields the other, which is used but not cached', async () => {
    dns.setRecords({ 'half.test': (q) => (q.type === 'AAAA' ? { drop: true } : { A: ['8.8.8.8'] }) });
    const res = resolver({ timeoutMs: 300 });
    expect((await res.resolve(name('half.test'))).addresses).toEqual(['8.8.8.8']);
    expect(res.cacheSize).toBe(0);
  });

  test('lookups go to the configured server only, never /etc/hosts', async () => {
    // getaddrinfo would answer "localhost" from /etc/hosts; c-ares asks the server, which says NXDOMAIN.
    expect(await rejection(resolver().resolve(name('localhost')))).toMatchObject({ code: 'dns_error', detail: 'NXDOMAIN' });
    expect(dns.queries).toEqual([
      { name: 'localhost', type: 'A' },
      { name: 'localhost', type: 'AAAA' },
    ]);
  });
});

describe('queries', () => {
  test('the name is made absolute before it reaches c-ares', async () => {
    const asked: string[] = [];
    const backend: DnsBackend = {
      resolve4: async (n) => (asked.push(`A ${n}`), [{ address: '8.8.8.8', ttl: 60 }]),
      resolve6: async (n) => (asked.push(`AAAA ${n}`), []),
    };
    await resolver({ createBackend: () => backend }).resolve(name('intranet'));
    expect(asked.sort()).toEqual(['A intranet.', 'AAAA intranet.']);
  });

  test('the server sees exactly the name, A and AAAA, and no search-domain variants', async () => {
    dns.setRecords({ intranet: { A: ['8.8.8.8'] }, 'svc.example.test': { A: ['1.1.1.1'] } });
    const res = resolver();
    await res.resolve(name('intranet'));
    await res.resolve(name('svc.example.test'));
    expect([...dns.queries].sort((a, b) => `${a.name}${a.type}`.localeCompare(`${b.name}${b.type}`))).toEqual([
      { name: 'intranet', type: 'A' },
      { name: 'intranet', type: 'AAAA' },
      { name: 'svc.example.test', type: 'A' },
      { name: 'svc.example.test', type: 'AAAA' },
    ]);
  });

  test('IP literals skip DNS but are classified the same way', async () => {
    const res = resolver();
    expect(await res.resolve({ host: '8.8.8.8', hostKind: 'ipv4', port: 443, allowPrivate: null })).toEqual({
      addresses: ['8.8.8.8'],
      dropped: [],
    });
    expect(await res.resolve({ host: '2606:4700:4700::1111', hostKind: 'ipv6', port: 443, allowPrivate: null })).toEqual({
      addresses: ['2606:4700:4700::1111'],
      dropped: [],
    });
    const err = await rejection(res.resolve({ host: '169.254.169.254', hostKind: 'ipv4', port: 80, allowPrivate: null }));
    expect(err).toMatchObject({ reason: 'ip_link_local', ip: '169.254.169.254' });
    expect(dns.queries).toEqual([]);
  });

  test('concurrent lookups of one name share a single query', async () => {
    dns.setRecords({ 'busy.test': { A: ['8.8.8.8', '10.9.0.1'] } });
    const res = resolver({ cacheMaxEntries: 0 });
    const mirror = new CidrSet(['10.9.0.0/16']);
    const results = await Promise.all([
      ...Array.from({ length: 5 }, () => res.resolve(name('busy.test'))),
      res.resolve(name('busy.test', { allowPrivate: mirror })),
    ]);
    expect(dns.queries).toHaveLength(2); // one A, one AAAA
    // Sharing the lookup does not share the verdict: each caller is judged with its own ranges.
    expect(results[0]?.addresses).toEqual(['8.8.8.8']);
    expect(results[5]?.addresses).toEqual(['8.8.8.8', '10.9.0.1']);
  });
});

describe('cache', () => {
  test('answers are reused for their TTL', async () => {
    dns.setRecords({ 'ttl.test': { A: ['8.8.8.8'], ttl: 30 } });
    const res = resolver();
    await res.resolve(name('ttl.test'));
    now = 29_999;
    await res.resolve(name('ttl.test'));
    expect(dns.queries).toHaveLength(2);
    now = 30_000;
    await res.resolve(name('ttl.test'));
    expect(dns.queries).toHaveLength(4);
  });

  test.each([
    ['zero_ttl_clamped_to_1s', 0, 999, 1000],
    ['day_ttl_clamped_to_300s', 86_400, 299_999, 300_000],
  ])('%s', async (_name, ttl, stillCached, expired) => {
    dns.setRecords({ 'clamp.test': { A: ['8.8.8.8'], ttl } });
    const res = resolver();
    await res.resolve(name('clamp.test'));
    now = stillCached;
    await res.resolve(name('clamp.test'));
    expect(dns.queries).toHaveLength(2);
    now = expired;
    await res.resolve(name('clamp.test'));
    expect(dns.queries).toHaveLength(4);
  });

  test('cached answers are re-classified on every use', async () => {
    dns.setRecords({ 'mirror.test': { A: ['10.20.0.5'], ttl: 300 } });
    let global = new CidrSet(['10.20.0.0/16']);
    const res = resolver({ globalAllowPrivate: () => global });
    expect((await res.resolve(name('mirror.test'))).addresses).toEqual(['10.20.0.5']);
    // A policy reload removes the range: the very next use is denied, without a new query.
    global = NONE;
    expect(await rejection(res.resolve(name('mirror.test')))).toMatchObject({ reason: 'ip_private' });
    expect(dns.queries).toHaveLength(2);
  });

  test('rebinding: a later answer is classified again before anything is dialed', async () => {
    dns.setRecords({ 'rebind.test': (_q, count) => ({ A: [count === 1 ? '8.8.8.8' : '127.0.0.1'], ttl: 1 }) });
    const res = resolver();
    expect((await res.resolve(name('rebind.test'))).addresses).toEqual(['8.8.8.8']);
    now = 1000;
    expect(await rejection(res.resolve(name('rebind.test')))).toMatchObject({ reason: 'ip_loopback', ip: '127.0.0.1' });
  });

  test('the cache is bounded and evicts the least recently used name', async () => {
    dns.setRecords({ 'a.test': { A: ['8.8.8.8'] }, 'b.test': { A: ['8.8.4.4'] }, 'c.test': { A: ['1.1.1.1'] } });
    const res = resolver({ cacheMaxEntries: 2 });
    await res.resolve(name('a.test'));
    await res.resolve(name('b.test'));
    await res.resolve(name('a.test')); // hit: a becomes most recent
    await res.resolve(name('c.test')); // evicts b
    expect(res.cacheSize).toBe(2);
    dns.queries.length = 0;
    await res.resolve(name('a.test'));
    expect(dns.queries).toEqual([]);
    await res.resolve(name('b.test'));
    expect(dns.queries.map((q) => q.name)).toEqual(['b.test', 'b.test']);
  });

  test('failures are not cached', async () => {
    const res = resolver();
    await rejection(res.resolve(name('later.test')));
    dns.setRecords({ 'later.test': { A: ['8.8.8.8'] } });
    expect((await res.resolve(name('later.test'))).addresses).toEqual(['8.8.8.8']);
  });
});

describe('allowPrivate', () => {
  const internal = { 'mirror.internal': { A: ['10.20.0.5', '10.21.0.5'] } };

  test("a destination's own ranges open exactly those ranges, for that request only", async () => {
    dns.setRecords(internal);
    const res = resolver();
    const r = await res.resolve(name('mirror.internal', { allowPrivate: new CidrSet(['10.20.0.0/16']) }));
    expect(r).toEqual({ addresses: ['10.20.0.5'], dropped: [{ ip: '10.21.0.5', reason: 'ip_private' }] });
    expect(await rejection(res.resolve(name('mirror.internal')))).toMatchObject({ reason: 'ip_private', ip: '10.20.0.5' });
  });

  test('global ranges apply to every destination', async () => {
    dns.setRecords(internal);
    const res = resolver({ globalAllowPrivate: () => new CidrSet(['10.0.0.0/8']) });
    expect((await res.resolve(name('mirror.internal'))).addresses).toEqual(['10.20.0.5', '10.21.0.5']);
  });

  test('an IPv6 range opens IPv6 answers', async () => {
    dns.setRecords({ 'v6.internal': { AAAA: ['fd00:ec2::254'] } });
    const res = resolver({ globalAllowPrivate: () => new CidrSet(['fd00:ec2::/64']) });
    expect((await res.resolve(name('v6.internal'))).addresses).toEqual(['fd00:ec2::254']);
  });
});

describe('self_loop', () => {
  const self = (...endpoints: SelfEndpoint[]) => (): readonly SelfEndpoint[] => endpoints;
  const loopbackOpen = () => new CidrSet(['127.0.0.0/8', '::1/128']);

  test('our own listener address and port', async () => {
    dns.setRecords({ 'me.test': { A: ['127.0.0.1'] } });
    const res = resolver({ selfEndpoints: self({ address: '127.0.0.1', port: 3128 }), globalAllowPrivate: loopbackOpen });
    expect(await rejection(res.resolve(name('me.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop', ip: '127.0.0.1' });
    // Same address, another port: not us (loopback was opened by the operator here).
    expect((await res.resolve(name('me.test', { port: 8080 }))).addresses).toEqual(['127.0.0.1']);
  });

  test('self_loop wins over the address class', async () => {
    dns.setRecords({ 'me.test': { A: ['127.0.0.1'] } });
    const res = resolver({ selfEndpoints: self({ address: '127.0.0.1', port: 3128 }) });
    expect(await rejection(res.resolve(name('me.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop' });
  });

  test('a 0.0.0.0 listener covers every local IPv4 address and all of 127/8', async () => {
    // 8.8.4.4 stands in for a public address of this host; it is answer data, never dialed.
    dns.setRecords({ 'pub-me.test': { A: ['8.8.4.4'] }, 'lo2.test': { A: ['127.0.0.2'] }, 'v6.test': { AAAA: ['2606:4700::6'] } });
    const res = resolver({
      selfEndpoints: self({ address: '0.0.0.0', port: 3128 }),
      localAddresses: () => ['127.0.0.1', '8.8.4.4', '2606:4700::6'],
      globalAllowPrivate: loopbackOpen,
    });
    expect(await rejection(res.resolve(name('pub-me.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop' });
    expect(await rejection(res.resolve(name('lo2.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop' });
    // An IPv4-only wildcard does not listen on IPv6 addresses.
    expect((await res.resolve(name('v6.test', { port: 3128 }))).addresses).toEqual(['2606:4700::6']);
    expect((await res.resolve(name('pub-me.test', { port: 443 }))).addresses).toEqual(['8.8.4.4']);
  });

  test('a :: listener is dual-stack', async () => {
    dns.setRecords({ 'v6.test': { AAAA: ['2606:4700::6'] }, 'v4.test': { A: ['8.8.4.4'] } });
    const res = resolver({
      selfEndpoints: self({ address: '::', port: 3128 }),
      localAddresses: () => ['8.8.4.4', '2606:4700::6'],
    });
    expect(await rejection(res.resolve(name('v6.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop' });
    expect(await rejection(res.resolve(name('v4.test', { port: 3128 })))).toMatchObject({ reason: 'self_loop' });
  });

  test('IP literals are checked too', async () => {
    const res = resolver({ selfEndpoints: self({ address: '8.8.4.4', port: 3128 }) });
    const err = await rejection(res.resolve({ host: '8.8.4.4', hostKind: 'ipv4', port: 3128, allowPrivate: null }));
    expect(err).toMatchObject({ reason: 'self_loop', ip: '8.8.4.4' });
  });

  test('a mixed answer drops only the self address', async () => {
    dns.setRecords({ 'half-me.test': { A: ['8.8.4.4', '1.1.1.1'] } });
    const res = resolver({ selfEndpoints: self({ address: '8.8.4.4', port: 3128 }) });
    expect(await res.resolve(name('half-me.test', { port: 3128 }))).toEqual({
      addresses: ['1.1.1.1'],
      dropped: [{ ip: '8.8.4.4', reason: 'self_loop' }],
    });
  });
});

test('formatDialAddress brackets IPv6', () => {
  expect(formatDialAddress('8.8.8.8', 443)).toBe('8.8.8.8:443');
  expect(formatDialAddress('2606:4700::1', 443)).toBe('[2606:4700::1]:443');
});

test('bad server entries are refused at construction', () => {
  expect(() => resolver({ servers: ['not a server'] })).toThrow();
});
