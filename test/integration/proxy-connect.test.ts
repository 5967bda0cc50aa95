/**
 * CONNECT tunnels end to end: real TLS origins on 127.0.0.1 reached through the proxy by curl,
 * node:https and undici; the ClientHello peek (SNI mismatch, missing SNI, fragmented hellos, a
 * hello inside the CONNECT's own packet); bad authorities; close lines and the tunnel gauge; and
 * TLS on the proxy listener itself. Test names come from DNS (test server → 127.0.0.1).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  basic,
  connectWithFirstWrite,
  curl,
  dribbleFirstWrite,
  openConnect,
  requestOver,
  scrapeMetric,
  startTcpServer,
  waitFor,
  type TcpServer,
} from '../helpers/clients.js';
import { selfSignedCert, startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';

const ACCOUNT = 'acct';
// The origin's certificate also covers other.test: if the proxy ever let a mismatched hello
// through, the handshake would succeed and the test would see it.
const originCert = selfSignedCert(['tls.test', 'other.test']);
const proxyCert = selfSignedCert(['127.0.0.1']);
const files = mkdtempSync(path.join(tmpdir(), 'portcullis-connect-'));
const originCaFile = path.join(files, 'origin-ca.pem');
const proxyCertFile = path.join(files, 'proxy-cert.pem');
const proxyKeyFile = path.join(files, 'proxy-key.pem');
writeFileSync(originCaFile, originCert.cert);
writeFileSync(proxyCertFile, proxyCert.cert);
writeFileSync(proxyKeyFile, proxyCert.key);

let tlsOrigin: Origin;
let plainOrigin: Origin;
let banner: TcpServer;
/** Completed TLS handshakes on the TLS origin. */
let handshakes = 0;

const policy = (): string => `
version: 1
destinations:
  tls:
    hosts: [tls.test]
    ports: [${tlsOrigin.port}]
    allowPrivate: [127.0.0.1/32]
    lockdown: allow-tunnel
  plain:
    hosts: [plain.test]
    ports: [${plainOrigin.port}]
    allowPrivate: [127.0.0.1/32]
  banner:
    hosts: [banner.test]
    ports: [${banner.port}]
    allowPrivate: [127.0.0.1/32]
  ruled:
    hosts: [ruled.test]
    ports: [${plainOrigin.port}]
    methods: [GET]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "acct*"
    allow: [tls, plain, banner, ruled]
`;

const dnsRecords = {
  'tls.test': { A: ['127.0.0.1'] },
  'other.test': { A: ['127.0.0.1'] },
  'plain.test': { A: ['127.0.0.1'] },
  'banner.test': { A: ['127.0.0.1'] },
  'ruled.test': { A: ['127.0.0.1'] },
};

beforeAll(async () => {
  tlsOrigin = await startOrigin(undefined, originCert);
  tlsOrigin.server.on('secureConnection', () => handshakes++);
  plainOrigin = await startOrigin();
  // A server-first protocol (SSH, SMTP): the origin speaks before the client does.
  banner = await startTcpServer((s) => {
    s.write('BANNER\r\n');
    s.pipe(s);
  });
});

afterAll(async () => {
  await tlsOrigin?.close();
  await plainOrigin?.close();
  await banner?.close();
  rmSync(files, { recursive: true, force: true });
});

/** TLS over an open tunnel (or any transport); resolves once the handshake completes. */
function tlsOver(socket: net.Socket | import('node:stream').Duplex, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const options: tls.ConnectionOptions = { socket: socket as net.Socket, ca: originCert.cert, servername };
    // No SNI at all: verify the certificate against tls.test ourselves.
    if (servername === '') options.checkServerIdentity = (_host, cert) => tls.checkServerIdentity('tls.test', cert);
    const t = tls.connect(options, () => resolve(t));
    t.once('error', reject);
    t.once('close', () => reject(new Error('TLS socket closed before the handshake')));
  });
}

describe('CONNECT tunnels', () => {
  let h: Harness;
  let token: string;
  let auth: string;

  beforeAll(async () => {
    h = await startHarness({ policy: policy(), dns: dnsRecords });
    ({ token } = await h.createSession(ACCOUNT));
    auth = basic(ACCOUNT, token);
  });

  afterAll(async () => {
    await h?.close();
  });

  const tlsAuthority = (): string => `tls.test:${tlsOrigin.port}`;
  const connectLines = (host: string): Record<string, unknown>[] => h.logs.egress().filter((l) => l['kind'] === 'connect' && l['host'] === host);

  test('curl -p reaches a TLS origin through CONNECT and verifies its certificate', async () => {
    const r = await curl(['-p', '-x', h.proxyUrl(ACCOUNT, token), '--cacert', originCaFile, `https://tls.test:${tlsOrigin.port}/via-curl`]);
    expect(r.statuses[0]).toBe(200);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ method: 'GET', url: '/via-curl' });
    expect(connectLines('tls.test').at(-1)).toMatchObject({ decision: 'allow', reason: 'allowlisted', destination: 'tls', account: ACCOUNT, port: tlsOrigin.port, resolvedIp: '127.0.0.1', status: 200 });
  });

  test('node https.request runs over a hand-opened CONNECT tunnel', async () => {
    const tunnel = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    expect(tunnel.status).toBe(200);
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request({
        host: 'tls.test',
        port: tlsOrigin.port,
        path: '/via-node',
        createConnection: () => tls.connect({ socket: tunnel.socket, servername: 'tls.test', ca: originCert.cert }),
      });
      req.once('error', reject);
      req.once('response', (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString()));
        res.once('end', () => resolve(b));
      });
      req.end();
    });
    expect(JSON.parse(body)).toMatchObject({ url: '/via-node' });
    tunnel.socket.destroy();
  });

  test("undici's ProxyAgent reaches an https origin with requestTls.ca", async () => {
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${h.proxyPort}`, token: auth, requestTls: { ca: originCert.cert } });
    try {
      const res = await undiciFetch(`https://tls.test:${tlsOrigin.port}/via-undici`, { dispatcher: agent });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ url: '/via-undici' });
    } finally {
      await agent.close();
    }
  });

  test('a CONNECT that is not allowlisted is a 403 with JSON and a reason header, and the name is never resolved', async () => {
    const before = h.dns.queries.length;
    const r = await openConnect(h.proxyPort, 'exfil.example.test:443', { auth });
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe('not_allowlisted');
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'egress_denied', reason: 'not_allowlisted' });
    expect(h.dns.queries.slice(before)).toEqual([]);
    expect(connectLines('exfil.example.test').at(-1)).toMatchObject({ decision: 'deny', reason: 'not_allowlisted', status: 403 });
  });

  test('an SNI that differs from the CONNECT host closes the tunnel before the origin sees a handshake', async () => {
    const before = { handshakes, requests: tlsOrigin.seen.length };
    const tunnel = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    expect(tunnel.status).toBe(200);
    await expect(tlsOver(tunnel.socket, 'other.test')).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 100));
    expect(handshakes).toBe(before.handshakes);
    expect(tlsOrigin.seen.length).toBe(before.requests);
    await waitFor(() => h.logs.egress('close').some((l) => l['reason'] === 'sni_mismatch'), 2000, 'close line');
    const decision = connectLines('tls.test').at(-1)!;
    expect(decision).toMatchObject({ decision: 'deny', reason: 'sni_mismatch' });
    expect(h.logs.egress('close').find((l) => l['reqId'] === decision['reqId'])).toMatchObject({ reason: 'sni_mismatch' });
  });

  test('a ClientHello without SNI is allowed outside lockdown and logged as sni_missing', async () => {
    const tunnel = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    const t = await tlsOver(tunnel.socket, '');
    const r = await requestOver(t, 'tls.test', '/no-sni');
    expect(r.status).toBe(200);
    expect(connectLines('tls.test').at(-1)).toMatchObject({ decision: 'allow', reason: 'allowlisted', error: 'sni_missing' });
  });

  test('a ClientHello without SNI closes an allow-tunnel destination in lockdown', async () => {
    const locked = await h.createSession('acct-locked');
    expect((await h.admin('PUT', '/v1/accounts/acct-locked/lockdown', { enabled: true })).status).toBe(200);
    const before = handshakes;
    const tunnel = await openConnect(h.proxyPort, tlsAuthority(), { auth: basic('acct-locked', locked.token) });
    expect(tunnel.status).toBe(200);
    await expect(tlsOver(tunnel.socket, '')).rejects.toThrow();
    expect(handshakes).toBe(before);
    await waitFor(() => connectLines('tls.test').some((l) => l['account'] === 'acct-locked' && l['reason'] === 'sni_missing'), 2000, 'sni_missing line');
  });

  test('a ClientHello arriving one byte at a time is still judged: matching SNI passes, a mismatch is caught', async () => {
    const ok = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    const t = await tlsOver(dribbleFirstWrite(ok.socket), 'tls.test');
    expect((await requestOver(t, 'tls.test', '/dribbled')).status).toBe(200);
    const okLine = connectLines('tls.test').at(-1)!;
    expect(okLine).toMatchObject({ decision: 'allow', reason: 'allowlisted' });
    expect(okLine['error']).toBeUndefined();

    const before = handshakes;
    const bad = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    await expect(tlsOver(dribbleFirstWrite(bad.socket), 'other.test')).rejects.toThrow();
    expect(handshakes).toBe(before);
    expect(connectLines('tls.test').at(-1)).toMatchObject({ reason: 'sni_mismatch' });
  });

  test("a ClientHello sent in the CONNECT's own write (the head) is judged the same way", async () => {
    const transport = connectWithFirstWrite(h.proxyPort, tlsAuthority(), auth);
    const t = await tlsOver(transport, 'tls.test');
    expect(transport.connectStatus()).toBe(200);
    expect((await requestOver(t, 'tls.test', '/in-head')).status).toBe(200);
    const line = connectLines('tls.test').at(-1)!;
    expect(line).toMatchObject({ decision: 'allow', reason: 'allowlisted' });
    expect(line['error']).toBeUndefined();

    const before = handshakes;
    await expect(tlsOver(connectWithFirstWrite(h.proxyPort, tlsAuthority(), auth), 'other.test')).rejects.toThrow();
    expect(handshakes).toBe(before);
    expect(connectLines('tls.test').at(-1)).toMatchObject({ reason: 'sni_mismatch' });
  });

  test('non-TLS bytes pass through a tunnel outside lockdown and are logged as not TLS', async () => {
    const tunnel = await openConnect(h.proxyPort, `plain.test:${plainOrigin.port}`, { auth });
    expect(tunnel.status).toBe(200);
    const r = await requestOver(tunnel.socket, 'plain.test', '/through-tunnel');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ url: '/through-tunnel' });
    expect(connectLines('plain.test').at(-1)).toMatchObject({ decision: 'allow', error: 'sni_missing (not TLS)' });
  });

  test("a server-first protocol's greeting reaches the client through the tunnel", async () => {
    const tunnel = await openConnect(h.proxyPort, `banner.test:${banner.port}`, { auth });
    expect(tunnel.status).toBe(200);
    const s = tunnel.socket;
    let got = '';
    s.on('data', (c: Buffer) => (got += c.toString()));
    s.resume();
    // Like SSH: the client sends its own greeting without waiting for the server's.
    s.write('HELLO\r\n');
    await waitFor(() => got.includes('HELLO'), 2000, 'echo').catch(() => undefined);
    s.destroy();
    expect(got).toBe('BANNER\r\nHELLO\r\n');
  });

  test.each([
    ['port 0', 'tls.test:0'],
    ['port 65536', 'tls.test:65536'],
    ['a leading zero in the port', 'tls.test:0443'],
    ['no port', 'tls.test'],
    ['userinfo', 'user:pw@tls.test:443'],
    ['unbracketed IPv6', '::1:443'],
    ['unbracketed IPv6 (documentation)', '2001:db8::1:443'],
    ['an empty host', ':443'],
  ])('a CONNECT authority with %s is a 400 and nothing is resolved or dialed', async (_what, authority) => {
    const before = { dns: h.dns.queries.length, handshakes, tls: tlsOrigin.seen.length };
    const r = await openConnect(h.proxyPort, authority, { auth });
    expect(r.status).toBe(400);
    expect(r.headers['x-portcullis-reason'] ?? JSON.parse(r.body)['reason']).toBe('bad_request');
    expect(h.dns.queries.length).toBe(before.dns);
    expect(handshakes).toBe(before.handshakes);
  });

  test('an opaque CONNECT to a destination with method rules is inspection_required, before DNS', async () => {
    const before = h.dns.queries.length;
    const r = await openConnect(h.proxyPort, `ruled.test:${plainOrigin.port}`, { auth });
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe('inspection_required');
    expect(h.dns.queries.slice(before).map((q) => q.name)).not.toContain('ruled.test');
  });

  test('a closed tunnel logs a close line with bytes both ways and its duration', async () => {
    const tunnel = await openConnect(h.proxyPort, tlsAuthority(), { auth });
    const t = await tlsOver(tunnel.socket, 'tls.test');
    expect((await requestOver(t, 'tls.test', '/close-line')).status).toBe(200);
    const decision = connectLines('tls.test').at(-1)!;
    await waitFor(() => h.logs.egress('close').some((l) => l['reqId'] === decision['reqId']), 2000, 'close line');
    const close = h.logs.egress('close').find((l) => l['reqId'] === decision['reqId'])!;
    expect(close).toMatchObject({ phase: 'close', kind: 'connect', host: 'tls.test', decision: 'allow', account: ACCOUNT });
    expect(close['bytesOut']).toBeGreaterThan(200);
    expect(close['bytesIn']).toBeGreaterThan(200);
    expect(typeof close['durationMs']).toBe('number');
  });

  test('portcullis_active_tunnels goes up while a tunnel is open and back down as soon as the client leaves, even before its first byte', async () => {
    await waitFor(() => h.app.registry.tunnels.size === 0, 2000, 'earlier tunnels to close');
    const before = (await scrapeMetric(h.adminUrl, 'portcullis_active_tunnels')) ?? 0;
    const tunnel = await openConnect(h.proxyPort, `plain.test:${plainOrigin.port}`, { auth });
    expect(tunnel.status).toBe(200);
    expect(await scrapeMetric(h.adminUrl, 'portcullis_active_tunnels')).toBe(before + 1);
    tunnel.socket.destroy();
    await waitFor(async () => (await scrapeMetric(h.adminUrl, 'portcullis_active_tunnels')) === before, 2000, 'gauge to drop');
  });
});

describe('TLS on the proxy listener', () => {
  let h: Harness;
  let token: string;

  beforeAll(async () => {
    h = await startHarness({ policy: policy(), dns: dnsRecords, flags: ['--tls-cert', proxyCertFile, '--tls-key', proxyKeyFile] });
    ({ token } = await h.createSession(ACCOUNT));
  });

  afterAll(async () => {
    await h?.close();
  });

  test('curl --proxy https:// forwards a plain http:// request', async () => {
    const r = await curl(['--proxy', h.proxyUrl(ACCOUNT, token, 'https'), '--proxy-cacert', proxyCertFile, `http://plain.test:${plainOrigin.port}/over-tls-proxy`]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ url: '/over-tls-proxy' });
    expect(h.logs.egress().at(-1)).toMatchObject({ kind: 'http', decision: 'allow', host: 'plain.test', status: 200 });
  });

  test('curl --proxy https:// tunnels an https:// request (TLS inside TLS)', async () => {
    const r = await curl([
      '--proxy', h.proxyUrl(ACCOUNT, token, 'https'), '--proxy-cacert', proxyCertFile,
      '--cacert', originCaFile, `https://tls.test:${tlsOrigin.port}/tls-in-tls`,
    ]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ url: '/tls-in-tls' });
    expect(h.logs.egress().filter((l) => l['kind'] === 'connect').at(-1)).toMatchObject({ decision: 'allow', host: 'tls.test' });
  });

  test("undici's ProxyAgent with proxyTls.ca reaches http and https origins", async () => {
    const agent = new ProxyAgent({
      uri: `https://127.0.0.1:${h.proxyPort}`,
      token: basic(ACCOUNT, token),
      proxyTls: { ca: proxyCert.cert },
      requestTls: { ca: originCert.cert },
    });
    try {
      const a = await undiciFetch(`https://tls.test:${tlsOrigin.port}/undici-tls-proxy`, { dispatcher: agent });
      expect(a.status).toBe(200);
      expect(await a.json()).toMatchObject({ url: '/undici-tls-proxy' });
      const b = await undiciFetch(`http://plain.test:${plainOrigin.port}/undici-tls-proxy-http`, { dispatcher: agent });
      expect(b.status).toBe(200);
      expect(await b.json()).toMatchObject({ url: '/undici-tls-proxy-http' });
    } finally {
      await agent.close();
    }
  });

  test('a client that does not trust the proxy certificate fails the handshake, so its CONNECT is never sent', async () => {
    const r = await openConnect(h.proxyPort, `tls.test:${tlsOrigin.port}`, { auth: basic(ACCOUNT, token), proxyCa: originCert.cert }).catch((e: unknown) => e);
    expect(r).toBeInstanceOf(Error);
    expect(String((r as Error).message)).toMatch(/self.signed|certificate/i);
  });
});
