import net from 'node:net';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { selfSignedCert, startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';

/**
 * Lockdown and developer mode end to end: every lockdown reason over plain HTTP and CONNECT,
 * the 409 conflicts, report mode, developer-only destinations and the one-second teardown.
 */

const cert = selfSignedCert(['tunnel.test', 'connector.test']);

function basic(account: string, token: string): string {
  return `Basic ${Buffer.from(`${account}:${token}`).toString('base64')}`;
}

/** One raw request on a fresh connection; resolves with status, reason header and the socket's text. */
function send(port: number, head: string, body = ''): Promise<{ status: number; reason: string | undefined; text: string }> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    s.on('data', (d) => {
      text += d.toString('latin1');
      // The first response head is all these tests need.
      if (text.includes('\r\n\r\n')) {
        s.destroy();
        finish();
      }
    });
    s.on('error', reject);
    s.on('close', finish);
    s.write(head + body);
    function finish(): void {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
      const reason = /x-portcullis-reason: ([a-z_0-9]+)/i.exec(text)?.[1];
      resolve({ status, reason, text });
    }
  });
}

describe('lockdown mode and developer mode', () => {
  let h: Harness;
  let origin: Origin;
  let tlsOrigin: Origin;
  let token: string;
  let canaryToken: string;
  const account = 'analyst-1';

  const get = (host: string, path = '/', extra = '', method = 'GET', body = '', who = account, tok = () => token) =>
    send(
      h.proxyPort,
      `${method} http://${host}:${origin.port}${path} HTTP/1.1\r\nHost: ${host}\r\nProxy-Authorization: ${basic(who, tok())}\r\n${extra}${body ? `Content-Length: ${body.length}\r\n` : ''}\r\n`,
      body,
    );
  const connect = (host: string, port = tlsOrigin.port, who = account, tok = () => token) =>
    send(h.proxyPort, `CONNECT ${host}:${port} HTTP/1.1\r\nHost: ${host}:${port}\r\nProxy-Authorization: ${basic(who, tok())}\r\n\r\n`);

  beforeAll(async () => {
    origin = await startOrigin();
    tlsOrigin = await startOrigin(undefined, cert);
    const port = origin.port;
    const tport = tlsOrigin.port;
    h = await startHarness({
      policy: `
version: 1
destinations:
  docs:
    hosts: [docs.test]
    ports: [${port}]
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  crm:
    hosts: [crm.test]
    ports: [${port}, ${tport}]
    allowPrivate: [127.0.0.1/32]
  connector:
    hosts: [connector.test]
    ports: [${port}, ${tport}]
    connector: true
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  ws:
    hosts: [ws.test]
    ports: [${port}]
    websocket: true
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  news:
    hosts: [news.test]
    ports: [${port}]
    lockdown: cache-only
    allowPrivate: [127.0.0.1/32]
  tunnel-ok:
    hosts: [tunnel.test]
    ports: [${tport}]
    lockdown: allow-tunnel
    allowPrivate: [127.0.0.1/32]
  tunnel-no:
    hosts: [opaque.test]
    ports: [${tport}]
    lockdown: allow
    allowPrivate: [127.0.0.1/32]
  mcp:
    hosts: [mcp.test]
    ports: [${port}]
    developerOnly: true
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "canary-*"
    mode: report
    allow: [docs]
  - match: "*"
    allow: [docs, crm, connector, ws, news, tunnel-ok, tunnel-no, mcp]
network:
  # Report mode never relaxes address classes: an unlisted name on loopback needs this.
  allowPrivate: [127.0.0.1/32]
`,
      dns: Object.fromEntries(['docs.test', 'crm.test', 'connector.test', 'ws.test', 'news.test', 'tunnel.test', 'opaque.test', 'mcp.test', 'unlisted.test'].map((n) => [n, { A: ['127.0.0.1'] }])),
    });
    token = (await h.createSession(account)).token;
    canaryToken = (await h.createSession('canary-1')).token;
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await tlsOrigin?.close();
  });

  const setLockdown = (enabled: boolean, who = account) => h.admin('PUT', `/v1/accounts/${who}/lockdown`, { enabled });
  const setDeveloperMode = (enabled: boolean, who = account) => h.admin('PUT', `/v1/accounts/${who}/developer-mode`, { enabled });

  test('outside lockdown the same requests are allowed', async () => {
    expect((await get('crm.test', '/contacts', '', 'POST', 'x=1')).status).toBe(200);
    expect((await get('connector.test')).status).toBe(200);
    expect((await connect('opaque.test')).status).toBe(200);
  });

  describe('in lockdown', () => {
    beforeAll(async () => {
      expect((await setLockdown(true)).status).toBe(200);
    });
    afterAll(async () => {
      expect((await setLockdown(false)).status).toBe(200);
    });

    test.each([
      ['lockdown_destination over plain HTTP', () => get('crm.test', '/contacts'), 'lockdown_destination'],
      ['lockdown_destination over CONNECT', () => connect('crm.test'), 'lockdown_destination'],
      ['lockdown_connector over plain HTTP', () => get('connector.test', '/files'), 'lockdown_connector'],
      ['lockdown_connector over CONNECT', () => connect('connector.test'), 'lockdown_connector'],
      ['lockdown_tunnel: an opaque tunnel the operator did not accept', () => connect('opaque.test'), 'lockdown_tunnel'],
      ['lockdown_upgrade: a WebSocket upgrade', () => get('ws.test', '/socket', 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n'), 'lockdown_upgrade'],
      ['lockdown_method: a POST', () => get('docs.test', '/search', '', 'POST', 'q=1'), 'lockdown_method'],
      ['lockdown_method: a method-override header on a GET', () => get('docs.test', '/', 'X-HTTP-Method-Override: DELETE\r\n'), 'lockdown_method'],
      ['lockdown_body: a GET with a body', () => get('docs.test', '/', '', 'GET', 'payload'), 'lockdown_body'],
      ['lockdown_url: a long URL', () => get('docs.test', '/' + 'a'.repeat(2100)), 'lockdown_url'],
      ['lockdown_url: a high-entropy query value', () => get('docs.test', '/search?q=c2stbGl2ZS0xMjM0NTY3ODlhYmNkZWZnaGlqa2xtbm9w'), 'lockdown_url'],
      ['lockdown_url: an unlisted header', () => get('docs.test', '/', 'X-Exfil: aGVsbG8=\r\n'), 'lockdown_url'],
      ['lockdown_url: an Authorization header', () => get('docs.test', '/', 'Authorization: Bearer abc\r\n'), 'lockdown_url'],
      ['lockdown_not_cached: cache-only without a cache', () => get('news.test', '/today'), 'lockdown_not_cached'],
    ])('%s', async (_name, request, reason) => {
      const before = origin.seen.length + tlsOrigin.seen.length;
      const r = await request();
      expect(r.status).toBe(403);
      expect(r.reason).toBe(reason);
      // The body tells the agent and its operator why, in one line.
      expect(r.text).toContain('account is in lockdown');
      expect(origin.seen.length + tlsOrigin.seen.length).toBe(before);
    });

    test('a read-only GET to a lockdown: allow destination still works', async () => {
      const r = await get('docs.test', '/3/library/json.html?q=json+decoder');
      expect(r.status).toBe(200);
    });

    test('an allow-tunnel destination is reachable, and needs an SNI', async () => {
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.connect(h.proxyPort, '127.0.0.1', () => {
          s.write(`CONNECT tunnel.test:${tlsOrigin.port} HTTP/1.1\r\nHost: tunnel.test\r\nProxy-Authorization: ${basic(account, token)}\r\n\r\n`);
        });
        s.once('data', (d) => {
          expect(d.toString()).toMatch(/^HTTP\/1\.1 200/);
          const t = tls.connect({ socket: s, servername: 'tunnel.test', ca: cert.cert }, () => {
            t.end();
            resolve(true);
          });
          t.on('error', () => resolve(false));
        });
        s.on('error', () => resolve(false));
      });
      expect(ok).toBe(true);
      // Without SNI (IP-style ClientHello) the tunnel is closed in lockdown.
      const closed = await new Promise<boolean>((resolve) => {
        const s = net.connect(h.proxyPort, '127.0.0.1', () => {
          s.write(`CONNECT tunnel.test:${tlsOrigin.port} HTTP/1.1\r\nHost: tunnel.test\r\nProxy-Authorization: ${basic(account, token)}\r\n\r\n`);
        });
        s.once('data', () => {
          const t = tls.connect({ socket: s, ca: cert.cert, rejectUnauthorized: true, checkServerIdentity: () => undefined });
          t.on('secureConnect', () => resolve(false));
          t.on('error', () => resolve(true));
          t.on('close', () => resolve(true));
        });
      });
      expect(closed).toBe(true);
      const line = h.logs.egress().filter((l) => l['host'] === 'tunnel.test').at(-1)!;
      expect(line).toMatchObject({ decision: 'deny', reason: 'sni_missing', lockdown: true });
    });

    test('turning on developer mode while in lockdown is 409 and changes nothing', async () => {
      const r = await setDeveloperMode(true);
      expect(r.status).toBe(409);
      expect(JSON.stringify(r.json)).toMatch(/turn it off first/);
      const state = await h.admin('GET', `/v1/accounts/${account}`);
      expect(state.json).toMatchObject({ lockdown: true, developerMode: false });
    });

    test('enabling lockdown again is idempotent', async () => {
      const before = (await h.admin('GET', `/v1/accounts/${account}`)).json as { lockdownChangedAt: string };
      expect((await setLockdown(true)).status).toBe(200);
      const after = (await h.admin('GET', `/v1/accounts/${account}`)).json as { lockdownChangedAt: string };
      expect(after.lockdownChangedAt).toBe(before.lockdownChangedAt);
    });

    test('report mode never relaxes lockdown', async () => {
      await setLockdown(true, 'canary-1');
      const r = await get('unlisted.test', '/', '', 'GET', '', 'canary-1', () => canaryToken);
      expect(r.status).toBe(403);
      expect(r.reason).toBe('lockdown_destination');
      await setLockdown(false, 'canary-1');
    });
  });

  test('developer-only destinations open in developer mode, and lockdown then conflicts', async () => {
    expect((await get('mcp.test', '/tools')).reason).toBe('developer_only');
    expect((await setDeveloperMode(true)).status).toBe(200);
    expect((await get('mcp.test', '/tools')).status).toBe(200);
    const conflict = await setLockdown(true);
    expect(conflict.status).toBe(409);
    expect(JSON.stringify(conflict.json)).toMatch(/developer mode/);
    expect(((await h.admin('GET', `/v1/accounts/${account}`)).json as { lockdown: boolean }).lockdown).toBe(false);
    expect((await setDeveloperMode(false)).status).toBe(200);
    expect((await get('mcp.test', '/tools')).reason).toBe('developer_only');
  });

  test('report mode allows allowlist misses, logs report_would_deny with the enforce reason', async () => {
    const r = await get('unlisted.test', '/probe', '', 'GET', '', 'canary-1', () => canaryToken);
    expect(r.status).toBe(200);
    const line = h.logs.egress().filter((l) => l['host'] === 'unlisted.test').at(-1)!;
    expect(line).toMatchObject({ decision: 'report', reason: 'report_would_deny', wouldDeny: 'not_allowlisted' });
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_requests_total\{kind="http",decision="report",reason="report_would_deny"\} [1-9]/);
  });

  test('turning lockdown on closes the account’s open tunnel and keep-alive connection within 1 s', async () => {
    // An open tunnel (allowed outside lockdown) and a keep-alive plain-HTTP connection.
    const tunnel = net.connect(h.proxyPort, '127.0.0.1');
    await new Promise<void>((resolve) => tunnel.once('connect', resolve));
    tunnel.write(`CONNECT opaque.test:${tlsOrigin.port} HTTP/1.1\r\nHost: opaque.test\r\nProxy-Authorization: ${basic(account, token)}\r\n\r\n`);
    await new Promise<void>((resolve) => tunnel.once('data', () => resolve()));
    const keepAlive = net.connect(h.proxyPort, '127.0.0.1');
    await new Promise<void>((resolve) => keepAlive.once('connect', resolve));
    keepAlive.write(`GET http://docs.test:${origin.port}/ HTTP/1.1\r\nHost: docs.test\r\nProxy-Authorization: ${basic(account, token)}\r\n\r\n`);
    await new Promise<void>((resolve) => keepAlive.once('data', () => resolve()));
    const closedIn = (s: net.Socket) => new Promise<number>((resolve) => s.once('close', () => resolve(performance.now())));
    const tunnelClosed = closedIn(tunnel);
    const keepAliveClosed = closedIn(keepAlive);
    const t0 = performance.now();
    expect((await setLockdown(true)).status).toBe(200);
    const [a, b] = await Promise.all([tunnelClosed, keepAliveClosed]);
    expect(a - t0).toBeLessThan(1000);
    expect(b - t0).toBeLessThan(1000);
    // Judged anew: the same tunnel is now refused.
    expect((await connect('opaque.test')).reason).toBe('lockdown_tunnel');
    const lines = h.logs.lines().filter((l) => l['msg'] === 'account state changed' && l['account'] === account && l['lockdown'] === true);
    expect(lines.at(-1)).toMatchObject({ by: 'admin' });
    const metrics = await (await fetch(`${h.adminUrl}/metrics`)).text();
    expect(metrics).toMatch(/portcullis_accounts_in_lockdown 1/);
    await setLockdown(false);
  });

  test('the global switch locks every account and closes their tunnels', async () => {
    const other = await h.createSession('someone-else');
    const tunnel = net.connect(h.proxyPort, '127.0.0.1');
    tunnel.write(`CONNECT opaque.test:${tlsOrigin.port} HTTP/1.1\r\nHost: opaque.test\r\nProxy-Authorization: ${basic('someone-else', other.token)}\r\n\r\n`);
    await new Promise<void>((resolve) => tunnel.once('data', () => resolve()));
    const closed = new Promise<number>((resolve) => tunnel.once('close', () => resolve(performance.now())));
    const t0 = performance.now();
    expect((await h.admin('PUT', '/v1/lockdown', { enabled: true })).status).toBe(200);
    expect((await closed) - t0).toBeLessThan(1000);
    expect((await get('crm.test', '/', '', 'GET', '', 'someone-else', () => other.token)).reason).toBe('lockdown_destination');
    expect((await h.admin('PUT', '/v1/lockdown', { enabled: false })).status).toBe(200);
    expect((await get('crm.test', '/', '', 'GET', '', 'someone-else', () => other.token)).status).toBe(200);
  });
});
