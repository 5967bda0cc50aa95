import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { fetch as undiciFetch, ProxyAgent } from 'undici';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basic, closedWithin, curl, openConnect } from '../helpers/clients.js';
import { createBareRepo, git, gitEnv, startGitServer, type GitServer } from '../helpers/git-http.js';
import { caRotate } from '../../src/commands/ca.js';
import { selfSignedCert, startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';

/**
 * TLS interception of `inspect: true` destinations with real clients trusting the proxy's CA:
 * every inner request is decided on its own, upstream certificates are verified.
 */

const originCert = selfSignedCert(['api.test', 'git.test', 'big.test']);
const wrongCert = selfSignedCert(['somebody-else.test']);
const MB = 1024 * 1024;

describe('TLS interception', () => {
  let h: Harness;
  let origin: Origin;
  let badOrigin: Origin;
  let gitServer: GitServer;
  let token: string;
  let sessionId: string;
  let caPem: string;
  let caFile: string;
  let work: string;
  const account = 'ci-build';

  beforeAll(async () => {
    origin = await startOrigin((req, res, seen) => {
      if (req.url === '/big') {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(100 * MB) });
        const chunk = Buffer.alloc(MB, 7);
        let sent = 0;
        const pump = (): void => {
          while (sent < 100) {
            sent++;
            if (!res.write(chunk)) return void res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      res.writeHead(200, { 'content-type': 'application/json', 'x-portcullis-reason': 'forged' });
      res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, bodyLength: seen.body.length }));
    }, originCert);
    badOrigin = await startOrigin(undefined, wrongCert);
    gitServer = await startGitServer(originCert);
    work = mkdtempSync(path.join(tmpdir(), 'portcullis-intercept-'));
    await createBareRepo(gitServer.root, 'hello', gitEnv(work));
    h = await startHarness({
      policy: `
version: 1
destinations:
  api-read:
    hosts: [api.test, big.test]
    ports: [${origin.port}]
    methods: [GET, HEAD]
    paths: ["/repos/**", "/big"]
    inspect: true
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  git-read:
    hosts: [git.test]
    ports: [${gitServer.port}]
    methods: [GET]
    inspect: true
    allowPrivate: [127.0.0.1/32]
  git-fetch:
    hosts: [git.test]
    ports: [${gitServer.port}]
    methods: [POST]
    paths: ["/*/git-upload-pack"]
    inspect: true
    allowPrivate: [127.0.0.1/32]
  impostor:
    hosts: [bad.test]
    ports: [${badOrigin.port}]
    inspect: true
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [api-read, git-read, git-fetch, impostor]
`,
      dns: { 'api.test': { A: ['127.0.0.1'] }, 'big.test': { A: ['127.0.0.1'] }, 'git.test': { A: ['127.0.0.1'] }, 'bad.test': { A: ['127.0.0.1'] } },
      overrides: { upstreamCa: originCert.cert },
    });
    ({ token, id: sessionId } = await h.createSession(account));
    caFile = path.join(h.dir, 'ca', 'ca-cert.pem');
    caPem = readFileSync(caFile, 'utf8');
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await badOrigin?.close();
    await gitServer?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  test('serve created the CA on first start because the policy intercepts', () => {
    expect(h.app.createdCaFile).toBe(caFile);
    expect(caPem).toContain('BEGIN CERTIFICATE');
  });

  test('curl trusting the CA: allowed GET reaches the origin, a POST is denied inside the tunnel', async () => {
    const ok = await curl(['--cacert', caFile, '-x', h.proxyUrl(account, token), `https://api.test:${origin.port}/repos/a/b`]);
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ method: 'GET', url: '/repos/a/b', host: `api.test:${origin.port}` });
    // An origin cannot forge Portcullis headers through interception either.
    expect(ok.headers['x-portcullis-reason']).toBeUndefined();
    const before = origin.seen.length;
    const post = await curl(['--cacert', caFile, '-x', h.proxyUrl(account, token), '-d', 'x=1', `https://api.test:${origin.port}/repos/a/b`]);
    expect(post.status).toBe(403);
    expect(post.headers['x-portcullis-reason']).toBe('method_not_allowed');
    expect(origin.seen.length).toBe(before);
    const line = h.logs.egress().filter((l) => l['kind'] === 'intercepted').at(-1)!;
    expect(line).toMatchObject({ kind: 'intercepted', method: 'POST', host: 'api.test', decision: 'deny', reason: 'method_not_allowed', sessionId });
  });

  test("undici's ProxyAgent: allowed and denied requests on one kept-alive tunnel", async () => {
    const connectsBefore = h.logs.egress().filter((l) => l['kind'] === 'connect').length;
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${h.proxyPort}`, token: basic(account, token), requestTls: { ca: caPem } });
    try {
      const a = await undiciFetch(`https://api.test:${origin.port}/repos/x`, { dispatcher: agent });
      expect(a.status).toBe(200);
      await a.text();
      const b = await undiciFetch(`https://api.test:${origin.port}/admin`, { dispatcher: agent });
      expect(b.status).toBe(403);
      expect(b.headers.get('x-portcullis-reason')).toBe('path_not_allowed');
      await b.text();
      const c = await undiciFetch(`https://api.test:${origin.port}/repos/y`, { dispatcher: agent });
      expect(c.status).toBe(200);
      await c.text();
      // The tunnels this test opened are all still open after the denial (other tests' tunnels
      // may log their close lines late, so only these are checked).
      const mine = new Set(h.logs.egress().filter((l) => l['kind'] === 'connect').slice(connectsBefore).map((l) => l['reqId']));
      expect(mine.size).toBeGreaterThan(0);
      expect(h.logs.egress('close').filter((l) => mine.has(l['reqId']))).toEqual([]);
    } finally {
      await agent.close();
    }
    // undici may open a second connection while the first is being returned to its pool, but
    // three requests never need three tunnels, and a denial never closes one.
    expect(h.logs.egress().filter((l) => l['kind'] === 'connect').length - connectsBefore).toBeLessThanOrEqual(2);
  });

  test('an inner Host that differs from the CONNECT host is host_mismatch; absolute-form is refused', async () => {
    const c = await openConnect(h.proxyPort, `api.test:${origin.port}`, { auth: basic(account, token) });
    expect(c.status).toBe(200);
    const t = tls.connect({ socket: c.socket, servername: 'api.test', ca: caPem });
    await new Promise<void>((resolve, reject) => t.once('secureConnect', resolve).once('error', reject));
    const ask = (text: string) =>
      new Promise<string>((resolve) => {
        let out = '';
        const onData = (d: Buffer): void => {
          out += d.toString('latin1');
          if (/\r\n\r\n[\s\S]*\}/.test(out)) {
            t.off('data', onData);
            resolve(out);
          }
        };
        t.on('data', onData);
        t.write(text);
      });
    const mismatch = await ask(`GET /repos/a HTTP/1.1\r\nHost: evil.test\r\n\r\n`);
    expect(mismatch).toMatch(/^HTTP\/1\.1 403/);
    expect(mismatch).toContain('x-portcullis-reason: host_mismatch');
    // The tunnel survives a denied request.
    const ok = await ask(`GET /repos/a HTTP/1.1\r\nHost: api.test:${origin.port}\r\n\r\n`);
    expect(ok).toMatch(/^HTTP\/1\.1 200/);
    const absolute = await ask(`GET https://api.test:${origin.port}/repos/a HTTP/1.1\r\nHost: api.test:${origin.port}\r\n\r\n`);
    expect(absolute).toMatch(/^HTTP\/1\.1 400/);
    t.destroy();
  });

  test('an SNI that is not the CONNECT host fails the intercepted handshake (sni_mismatch)', async () => {
    const before = origin.seen.length;
    const c = await openConnect(h.proxyPort, `api.test:${origin.port}`, { auth: basic(account, token) });
    const t = tls.connect({ socket: c.socket, servername: 'evil.test', ca: caPem, checkServerIdentity: () => undefined });
    const outcome = await new Promise<string>((resolve) => {
      t.once('secureConnect', () => resolve('connected'));
      t.once('error', () => resolve('refused'));
      t.once('close', () => resolve('refused'));
    });
    expect(outcome).toBe('refused');
    await new Promise((r) => setTimeout(r, 50));
    const line = h.logs.egress().filter((l) => l['kind'] === 'connect').at(-1)!;
    expect(line).toMatchObject({ reason: 'sni_mismatch', decision: 'deny' });
    expect(origin.seen.length).toBe(before);
  });

  test('an upstream with a bad certificate is 502 upstream_tls_error and nothing is delivered', async () => {
    const r = await curl(['--cacert', caFile, '-x', h.proxyUrl(account, token), `https://bad.test:${badOrigin.port}/`]);
    expect(r.status).toBe(502);
    expect(r.headers['x-portcullis-reason']).toBe('upstream_tls_error');
    expect(badOrigin.seen.length).toBe(0);
  });

  test('a client that does not trust the CA fails the handshake (no silent downgrade)', async () => {
    const before = origin.seen.length;
    // curl exits non-zero (60: peer certificate cannot be authenticated).
    await expect(curl(['-x', h.proxyUrl(account, token), `https://api.test:${origin.port}/repos/a`])).rejects.toThrow(/Command failed/);
    expect(origin.seen.length).toBe(before);
  });

  test('git clone over HTTPS through interception: fetch allowed, push path denied', async () => {
    const env = { ...gitEnv(work), GIT_SSL_CAINFO: caFile };
    const dest = path.join(work, 'clone');
    const r = await git(['-c', `http.proxy=${h.proxyUrl(account, token)}`, 'clone', `https://git.test:${gitServer.port}/hello.git`, dest], env);
    expect(r.stderr).not.toMatch(/fatal/);
    expect(r.code).toBe(0);
    expect(readFileSync(path.join(dest, '.git', 'HEAD'), 'utf8')).toContain('main');
    writeFileSync(path.join(dest, 'f.txt'), 'data');
    await git(['-C', dest, 'add', 'f.txt'], env);
    await git(['-C', dest, 'commit', '-qm', 'exfil'], env);
    const push = await git(['-c', `http.proxy=${h.proxyUrl(account, token)}`, '-C', dest, 'push', 'origin', 'main'], env);
    expect(push.code).not.toBe(0);
    expect(gitServer.seen.some((s) => s.url.includes('git-receive-pack') && s.method === 'POST')).toBe(false);
  });

  test('lockdown inside an intercepted tunnel: GET works, POST is lockdown_method', async () => {
    expect((await h.admin('PUT', `/v1/accounts/${account}/lockdown`, { enabled: true })).status).toBe(200);
    try {
      const get = await curl(['--cacert', caFile, '-x', h.proxyUrl(account, token), `https://api.test:${origin.port}/repos/a`]);
      expect(get.status).toBe(200);
      const post = await curl(['--cacert', caFile, '-x', h.proxyUrl(account, token), '-d', 'x', `https://api.test:${origin.port}/repos/a`]);
      expect(post.headers['x-portcullis-reason']).toBe('lockdown_method');
    } finally {
      await h.admin('PUT', `/v1/accounts/${account}/lockdown`, { enabled: false });
    }
  });

  test('revoking the session closes an intercepted tunnel within 1 s', async () => {
    const other = await h.createSession(account, 'victim');
    const c = await openConnect(h.proxyPort, `api.test:${origin.port}`, { auth: basic(account, other.token) });
    const t = tls.connect({ socket: c.socket, servername: 'api.test', ca: caPem });
    await new Promise<void>((resolve, reject) => t.once('secureConnect', resolve).once('error', reject));
    const closed = closedWithin(c.socket, 3000);
    const t0 = performance.now();
    expect((await h.admin('DELETE', `/v1/accounts/${account}/sessions/${other.id}`)).status).toBe(200);
    await closed;
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  test('a 100 MB download streams through interception without memory growth', async () => {
    const agent = new ProxyAgent({ uri: `http://127.0.0.1:${h.proxyPort}`, token: basic(account, token), requestTls: { ca: caPem } });
    try {
      // Warm-up so the heap's first growth is not counted.
      const warm = await undiciFetch(`https://api.test:${origin.port}/repos/warm`, { dispatcher: agent });
      await warm.text();
      global.gc?.();
      const before = process.memoryUsage().rss;
      let peak = before;
      const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
      const res = await undiciFetch(`https://big.test:${origin.port}/big`, { dispatcher: agent });
      expect(res.status).toBe(200);
      let received = 0;
      for await (const chunk of res.body!) received += (chunk as Uint8Array).length;
      clearInterval(sampler);
      expect(received).toBe(100 * MB);
      expect(peak - before).toBeLessThan(80 * MB);
    } finally {
      await agent.close();
    }
  }, 60_000);

  test('portcullis ca rotate takes effect without a restart; old leaves are gone', async () => {
    const io = { out: () => undefined, err: () => undefined };
    expect(await caRotate(['--ca-dir', path.join(h.dir, 'ca')], io)).toBe(0);
    const newCa = readFileSync(caFile, 'utf8');
    expect(newCa).not.toBe(caPem);
    const handshake = async (ca: string): Promise<boolean> => {
      const c = await openConnect(h.proxyPort, `api.test:${origin.port}`, { auth: basic(account, token) });
      const t = tls.connect({ socket: c.socket, servername: 'api.test', ca });
      return new Promise((resolve) => {
        t.once('secureConnect', () => (t.destroy(), resolve(true)));
        t.once('error', () => resolve(false));
      });
    };
    const deadline = Date.now() + 3000;
    while (!(await handshake(newCa)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await handshake(newCa)).toBe(true);
    expect(await handshake(caPem)).toBe(false);
    caPem = newCa;
  });

  test('node https through the proxy with the CA in the agent options', async () => {
    const c = await openConnect(h.proxyPort, `api.test:${origin.port}`, { auth: basic(account, token) });
    const body = await new Promise<string>((resolve, reject) => {
      const req = https.request({ host: 'api.test', port: origin.port, path: '/repos/node', createConnection: () => tls.connect({ socket: c.socket, servername: 'api.test', ca: caPem }) }, (res) => {
        let out = '';
        res.on('data', (d) => (out += d));
        res.on('end', () => resolve(out));
      });
      req.on('error', reject);
      req.end();
    });
    expect(JSON.parse(body)).toMatchObject({ url: '/repos/node' });
  });
});
