/**
 * What must close, and how fast: revoking one session or all of an account's, lockdown and a
 * policy reload close open tunnels and keep-alive connections within a second (SPEC §3, §4);
 * rate and tunnel limits answer 429; a graceful drain lets in-flight work finish and refuses new
 * connections.
 */
import http from 'node:http';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basic, closedWithin, openConnect, proxyRequest, startTcpServer, waitFor, type TcpServer } from '../helpers/clients.js';
import { startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';

let echo: TcpServer;
let web: Origin;

beforeAll(async () => {
  echo = await startTcpServer();
  web = await startOrigin();
});

afterAll(async () => {
  await echo?.close();
  await web?.close();
});

const policy = (withRemovable = true): string => `
version: 1
destinations:
  echo:
    hosts: [echo.test]
    ports: [${echo.port}]
    allowPrivate: [127.0.0.1/32]
  echo-lockdown:
    hosts: [echo-ld.test]
    ports: [${echo.port}]
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  web:
    hosts: [web.test]
    ports: [${web.port}]
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
${withRemovable ? `  removable:
    hosts: [gone.test]
    ports: [${echo.port}]
    allowPrivate: [127.0.0.1/32]
` : ''}accounts:
  - match: "*"
    allow: [echo, echo-lockdown, web${withRemovable ? ', removable' : ''}]
`;

const dns = {
  'echo.test': { A: ['127.0.0.1'] },
  'echo-ld.test': { A: ['127.0.0.1'] },
  'web.test': { A: ['127.0.0.1'] },
  'gone.test': { A: ['127.0.0.1'] },
};

/** Writes a line through an open tunnel and waits for the echo. */
async function roundTrip(socket: net.Socket, text = 'ping'): Promise<void> {
  let got = '';
  const onData = (c: Buffer): void => {
    got += c.toString();
  };
  socket.on('data', onData);
  socket.resume();
  socket.write(text);
  try {
    await waitFor(() => got.includes(text), 2000, `echo of ${text}`);
  } finally {
    socket.off('data', onData);
  }
}

/** A tunnel to the echo server through the proxy, proven to carry bytes. */
async function echoTunnel(h: Harness, auth: string, host = 'echo.test'): Promise<net.Socket> {
  const t = await openConnect(h.proxyPort, `${host}:${echo.port}`, { auth });
  expect(t.status, t.body).toBe(200);
  await roundTrip(t.socket);
  return t.socket;
}

/** A keep-alive client connection that has completed one proxied request and stays open. */
async function keepAliveConnection(h: Harness, auth: string): Promise<net.Socket> {
  const s = net.connect(h.proxyPort, '127.0.0.1');
  s.on('error', () => undefined);
  let text = '';
  s.on('data', (c: Buffer) => (text += c.toString('latin1')));
  s.write(`GET http://web.test:${web.port}/keep-alive HTTP/1.1\r\nHost: web.test:${web.port}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
  await waitFor(() => text.includes('\r\n\r\n') && text.includes('}'), 2000, 'keep-alive response');
  expect(text).toMatch(/^HTTP\/1\.1 200/);
  expect(s.destroyed).toBe(false);
  return s;
}

describe('revocation, lockdown and reloads close what they must', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ policy: policy(), dns });
  });

  afterAll(async () => {
    await h?.close();
  });

  test('revoking a session closes its open tunnel in under a second; its token is then 407 session_revoked', async () => {
    const s = await h.createSession('rev-one');
    const other = await h.createSession('rev-one', 'other-app');
    const tunnel = await echoTunnel(h, basic('rev-one', s.token));
    const otherTunnel = await echoTunnel(h, basic('rev-one', other.token));

    const closed = closedWithin(tunnel, 3000);
    const r = await h.admin('DELETE', `/v1/accounts/rev-one/sessions/${s.id}`);
    expect(r.status).toBe(200);
    expect(await closed).toBeLessThan(1000);

    const again = await proxyRequest(h.proxyPort, `http://web.test:${web.port}/after-revoke`, { auth: basic('rev-one', s.token) });
    expect(again.status).toBe(407);
    expect(again.headers['x-portcullis-reason']).toBe('session_revoked');
    expect(again.headers['proxy-authenticate']).toBe('Basic realm="portcullis"');
    const connect = await openConnect(h.proxyPort, `echo.test:${echo.port}`, { auth: basic('rev-one', s.token) });
    expect(connect.status).toBe(407);
    expect(connect.headers['x-portcullis-reason']).toBe('session_revoked');

    // Only that session: the account's other session keeps its tunnel.
    await roundTrip(otherTunnel, 'still-open');
    otherTunnel.destroy();
    expect(h.logs.egress('close').filter((l) => l['sessionId'] === s.id)).toContainEqual(expect.objectContaining({ reason: 'session_revoked' }));
  });

  test("revoking a session closes its idle keep-alive plain-HTTP connection in under a second", async () => {
    const s = await h.createSession('rev-keepalive');
    const conn = await keepAliveConnection(h, basic('rev-keepalive', s.token));
    const closed = closedWithin(conn, 3000);
    expect((await h.admin('DELETE', `/v1/accounts/rev-keepalive/sessions/${s.id}`)).status).toBe(200);
    expect(await closed).toBeLessThan(1000);
  });

  test("revoke-all closes the tunnels of every session of the account, and no one else's", async () => {
    const a = await h.createSession('rev-all', 'chat');
    const b = await h.createSession('rev-all', 'codex-cli');
    const bystander = await h.createSession('rev-bystander');
    const ta = await echoTunnel(h, basic('rev-all', a.token));
    const tb = await echoTunnel(h, basic('rev-all', b.token));
    const tc = await echoTunnel(h, basic('rev-bystander', bystander.token));
    const closed = Promise.all([closedWithin(ta, 3000), closedWithin(tb, 3000)]);
    const r = await h.admin('DELETE', '/v1/accounts/rev-all/sessions');
    expect(r).toMatchObject({ status: 200, json: { revoked: 2 } });
    for (const ms of await closed) expect(ms).toBeLessThan(1000);
    await roundTrip(tc, 'bystander');
    tc.destroy();
  });

  test('lockdown closes the account’s tunnels and connections in under a second; new opaque CONNECTs are refused', async () => {
    const s = await h.createSession('ld-acct');
    const auth = basic('ld-acct', s.token);
    const tunnel = await echoTunnel(h, auth);
    const conn = await keepAliveConnection(h, auth);
    const closed = Promise.all([closedWithin(tunnel, 3000), closedWithin(conn, 3000)]);
    expect((await h.admin('PUT', '/v1/accounts/ld-acct/lockdown', { enabled: true })).status).toBe(200);
    for (const ms of await closed) expect(ms).toBeLessThan(1000);

    // A destination without `lockdown:` is unreachable; one with `lockdown: allow` is not an
    // opaque tunnel's (it needs inspection or allow-tunnel).
    const denied = await openConnect(h.proxyPort, `echo.test:${echo.port}`, { auth });
    expect(denied.status).toBe(403);
    expect(denied.headers['x-portcullis-reason']).toBe('lockdown_destination');
    const tunnelDenied = await openConnect(h.proxyPort, `echo-ld.test:${echo.port}`, { auth });
    expect(tunnelDenied.status).toBe(403);
    expect(tunnelDenied.headers['x-portcullis-reason']).toBe('lockdown_tunnel');
    // Plain read-only HTTP to a lockdown: allow destination still works.
    expect((await proxyRequest(h.proxyPort, `http://web.test:${web.port}/read-only`, { auth })).status).toBe(200);
  });

  test('a policy reload that removes a destination closes its open tunnel and leaves the others', async () => {
    const s = await h.createSession('reload-acct');
    const auth = basic('reload-acct', s.token);
    const doomed = await echoTunnel(h, auth, 'gone.test');
    const kept = await echoTunnel(h, auth, 'echo.test');
    const closed = closedWithin(doomed, 3000);
    try {
      await h.setPolicy(policy(false));
      expect(await closed).toBeLessThan(1000);
      await roundTrip(kept, 'kept');
      const line = h.logs.egress('close').find((l) => l['host'] === 'gone.test' && l['sessionId'] === s.id);
      expect(line).toMatchObject({ error: 'not_allowlisted' });
      expect((await openConnect(h.proxyPort, `gone.test:${echo.port}`, { auth })).headers['x-portcullis-reason']).toBe('not_allowlisted');
    } finally {
      kept.destroy();
      await h.setPolicy(policy(true));
    }
  });
});

describe('rate and concurrency limits', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ policy: `${policy()}limits:\n  requestsPerMinute: 3\n  maxConcurrentTunnels: 1\n`, dns });
  });

  afterAll(async () => {
    await h?.close();
  });

  test('the fourth request in a minute is 429 rate_limited with Retry-After', async () => {
    const auth = basic('rl-acct', (await h.createSession('rl-acct')).token);
    const statuses: number[] = [];
    let last: Awaited<ReturnType<typeof proxyRequest>> | undefined;
    for (let i = 0; i < 4; i++) {
      last = await proxyRequest(h.proxyPort, `http://web.test:${web.port}/rate-${i}`, { auth });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    expect(last!.headers['x-portcullis-reason']).toBe('rate_limited');
    expect(Number(last!.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(last!.body)).toMatchObject({ reason: 'rate_limited' });
  });

  test('a second tunnel while one is open is 429 tunnel_limit', async () => {
    const auth = basic('tl-acct', (await h.createSession('tl-acct')).token);
    const first = await echoTunnel(h, auth);
    const second = await openConnect(h.proxyPort, `echo.test:${echo.port}`, { auth });
    expect(second.status).toBe(429);
    expect(second.headers['x-portcullis-reason']).toBe('tunnel_limit');
    expect(second.headers['retry-after']).toBeDefined();
    first.destroy();
  });

  test('two tunnels opened at the same moment: exactly one gets through', async () => {
    const auth = basic('tl-race', (await h.createSession('tl-race')).token);
    const results = await Promise.all([0, 1].map(() => openConnect(h.proxyPort, `echo.test:${echo.port}`, { auth })));
    expect(results.map((r) => r.status).sort()).toEqual([200, 429]);
    for (const r of results) r.socket.destroy();
  });
});

describe('graceful drain', () => {
  let h: Harness;
  let slow: Origin;

  beforeAll(async () => {
    slow = await startOrigin((_req, res) => {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('slow but complete');
      }, 500);
    });
    h = await startHarness({
      policy: `
version: 1
destinations:
  slow:
    hosts: [slow.test]
    ports: [${slow.port}]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [slow]
`,
      dns: { 'slow.test': { A: ['127.0.0.1'] } },
    });
  });

  afterAll(async () => {
    await h?.close();
    await slow?.close();
  });

  test('an in-flight slow request completes while the app closes, and new connections are refused', async () => {
    const auth = basic('drain-acct', (await h.createSession('drain-acct')).token);
    const agent = new http.Agent({ keepAlive: true });
    const inFlight = proxyRequest(h.proxyPort, `http://slow.test:${slow.port}/slow`, { auth, agent });
    await waitFor(() => slow.seen.length === 1, 2000, 'the origin to receive the request');
    const started = performance.now();
    const closing = h.app.close();
    const refused = await new Promise<string>((resolve) => {
      const s = net.connect(h.proxyPort, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    expect(refused).toBe('ECONNREFUSED');
    const res = await inFlight;
    expect(res).toMatchObject({ status: 200, body: 'slow but complete' });
    await closing;
    agent.destroy();
    const tookMs = performance.now() - started;
    // The drain ends when the last connection is done, not at the 2 s drain timeout.
    expect(tookMs).toBeLessThan(1500);
    expect(h.logs.egress().find((l) => l['path'] === '/slow')).toMatchObject({ decision: 'allow', status: 200 });
  });
});

describe('the drain deadline', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ policy: policy(), dns, drainTimeoutMs: 400 });
  });

  afterAll(async () => {
    await h?.close();
  });

  test('a tunnel still open at the drain deadline is closed then, and its close line says draining', async () => {
    const s = await h.createSession('drain-tunnel');
    const tunnel = await echoTunnel(h, basic('drain-tunnel', s.token));
    const closed = closedWithin(tunnel, 3000);
    const closing = h.app.close();
    const ms = await closed;
    expect(ms).toBeGreaterThanOrEqual(300);
    expect(ms).toBeLessThan(1500);
    await closing;
    expect(h.logs.egress('close').find((l) => l['sessionId'] === s.id)).toMatchObject({ host: 'echo.test', error: 'draining' });
  });
});
