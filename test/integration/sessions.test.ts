import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basic, closedWithin, curl, openConnect, scrapeMetric } from '../helpers/clients.js';
import { startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';
import { buildMmdb, cityRecord } from '../helpers/mmdb-writer.js';

/**
 * Active sessions end to end: listing with metadata, revoke one / all (with except), OIDC
 * sign-in, revocation, expiry, wrong audience, unknown key and the sign-out watermark.
 */

interface Issuer {
  url: string;
  sign(claims: Record<string, unknown>, o?: { aud?: string; iat?: number; exp?: number; kid?: string }): Promise<string>;
  close(): Promise<void>;
}

async function startIssuer(): Promise<Issuer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
  const rogue = await generateKeyPair('ES256');
  const server = http.createServer((req, res) => {
    if (req.url !== '/jwks') return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: [jwk] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    sign: (claims, o = {}) => {
      const now = Math.floor(Date.now() / 1000);
      const key: CryptoKey = o.kid === 'rogue' ? rogue.privateKey : privateKey;
      return new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: o.kid === 'rogue' ? 'k1' : (o.kid ?? 'k1') })
        .setIssuer(url)
        .setAudience(o.aud ?? 'portcullis')
        .setIssuedAt(o.iat ?? now)
        .setExpirationTime(o.exp ?? now + 600)
        .sign(key);
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe('active sessions', () => {
  let h: Harness;
  let origin: Origin;
  let issuer: Issuer;
  let dir: string;
  const url = () => `http://origin.test:${origin.port}/hello`;

  beforeAll(async () => {
    origin = await startOrigin();
    issuer = await startIssuer();
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-sessions-'));
    writeFileSync(path.join(dir, 'city.mmdb'), buildMmdb([{ network: '81.2.69.0/24', data: cityRecord('GB', 'London') }]));
    h = await startHarness({
      policy: `
version: 1
destinations:
  origin:
    hosts: [origin.test]
    ports: [${origin.port}]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [origin]
`,
      dns: { 'origin.test': { A: ['127.0.0.1'] } },
      flags: ['--geoip', path.join(dir, 'city.mmdb'), '--oidc-issuer', issuer.url, '--oidc-audience', 'portcullis', '--oidc-jwks-url', `${issuer.url}/jwks`, '--oidc-algorithms', 'ES256'],
    });
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await issuer?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const through = (account: string, password: string, ua = 'codex-cli/0.9') => curl(['-A', ua, '-x', `http://${encodeURIComponent(account)}:${password}@127.0.0.1:${h.proxyPort}`, url()]);
  const list = async (account: string, query = '') => ((await h.admin('GET', `/v1/accounts/${encodeURIComponent(account)}/sessions${query}`)).json as { sessions: Record<string, unknown>[] }).sessions;

  test('sessions are listed newest first with app, method, client, device and location', async () => {
    const a = await h.createSession('dev-1', 'chat');
    await new Promise((r) => setTimeout(r, 5));
    const b = await h.createSession('dev-1', 'codex-cli');
    expect((await through('dev-1', a.token, 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 400)); // last-seen is written in batches (200 ms in tests)
    const sessions = await list('dev-1');
    expect(sessions.map((s) => s['id'])).toEqual([b.id, a.id]);
    const seen = sessions[1]!;
    expect(seen).toMatchObject({ app: 'chat', authMethod: 'token', status: 'active', clientIp: '127.0.0.1' });
    expect(seen['lastSeenAt']).toEqual(expect.any(String));
    expect(seen['device']).toMatchObject({ client: 'Chrome 120.0.0.0', os: 'Mac OS 10.15.7' });
    expect(seen['location']).toMatchObject({ label: 'private network' });
    expect(sessions[0]!['location']).toMatchObject({ label: 'unknown' });
    expect(await list('dev-1', '?app=codex-cli')).toHaveLength(1);
    expect(h.logs.lines().some((l) => l['msg'] === 'session first seen' && l['sessionId'] === a.id)).toBe(true);
  });

  test('revoke one: the token is 407 session_revoked at once, and stays listed as revoked', async () => {
    const s = await h.createSession('dev-2');
    expect((await through('dev-2', s.token)).status).toBe(200);
    expect((await h.admin('DELETE', `/v1/accounts/dev-2/sessions/${s.id}`)).status).toBe(200);
    const r = await through('dev-2', s.token);
    expect(r.status).toBe(407);
    expect(r.headers['x-portcullis-reason']).toBe('session_revoked');
    expect((await list('dev-2'))[0]).toMatchObject({ id: s.id, status: 'revoked', revokedBy: 'admin' });
    expect(await scrapeMetric(h.adminUrl, 'portcullis_session_revocations_total', '{scope="one"}')).toBeGreaterThanOrEqual(1);
  });

  test('sign out everywhere except the current session closes the others’ tunnels', async () => {
    const keep = await h.createSession('dev-3', 'keep');
    const gone = await h.createSession('dev-3', 'gone');
    const tunnel = await openConnect(h.proxyPort, `origin.test:${origin.port}`, { auth: basic('dev-3', gone.token) });
    expect(tunnel.status).toBe(200);
    const closed = closedWithin(tunnel.socket, 3000);
    const r = await h.admin('DELETE', `/v1/accounts/dev-3/sessions?except=${keep.id}`);
    expect(r.status).toBe(200);
    expect(await closed).toBeLessThan(1000);
    expect((await through('dev-3', gone.token)).headers['x-portcullis-reason']).toBe('session_revoked');
    expect((await through('dev-3', keep.token)).status).toBe(200);
  });

  test('an expired session is refused and its open tunnel closed, like a revoked one', async () => {
    const r = await h.admin('POST', '/v1/accounts/dev-4/sessions', { app: 'short', ttl: '2s' });
    expect(r.status).toBe(201);
    const { token } = r.json as { token: string };
    const tunnel = await openConnect(h.proxyPort, `origin.test:${origin.port}`, { auth: basic('dev-4', token) });
    expect(tunnel.status).toBe(200);
    // Expiry has no event: the proxy checks open sessions once a second.
    expect(await closedWithin(tunnel.socket, 5000)).toBeLessThan(4000);
    expect((await through('dev-4', token)).headers['x-portcullis-reason']).toBe('session_expired');
    expect((await list('dev-4', '?all=true'))[0]).toMatchObject({ status: 'expired' });
  });

  describe('SSO (OIDC) sessions', () => {
    test('a JWT signs in: the session is recorded, listed and revocable like any other', async () => {
      const jwt = await issuer.sign({ sub: 'alice', sid: 'sso-1', azp: 'chat-web' });
      const r = await through('oidc:alice', jwt);
      expect(r.status).toBe(200);
      const sessions = await list('oidc:alice');
      expect(sessions).toHaveLength(1);
      expect(sessions[0]).toMatchObject({ account: 'oidc:alice', app: 'chat-web', authMethod: 'oidc', status: 'active', createdBy: 'oidc' });
      expect(h.logs.lines().some((l) => l['msg'] === 'session signed in' && l['account'] === 'oidc:alice')).toBe(true);
      // Revoked: the same, still-valid JWT is refused.
      expect((await h.admin('DELETE', `/v1/accounts/${encodeURIComponent('oidc:alice')}/sessions/${sessions[0]!['id']}`)).status).toBe(200);
      expect((await through('oidc:alice', jwt)).headers['x-portcullis-reason']).toBe('session_revoked');
      // Another sign-in (new sid) is a new session.
      expect((await through('oidc:alice', await issuer.sign({ sub: 'alice', sid: 'sso-2' }))).status).toBe(200);
    });

    test('the Basic username must be the token’s account', async () => {
      const jwt = await issuer.sign({ sub: 'bob', sid: 'b-1' });
      expect((await through('oidc:alice', jwt)).headers['x-portcullis-reason']).toBe('auth_invalid');
      // A token account can never be claimed through OIDC: the prefix is always there.
      expect((await through('bob', jwt)).headers['x-portcullis-reason']).toBe('auth_invalid');
    });

    test.each([
      ['expired', () => issuer.sign({ sub: 'carol', sid: 'c-1' }, { iat: Math.floor(Date.now() / 1000) - 7200, exp: Math.floor(Date.now() / 1000) - 3600 }), 'session_expired'],
      ['wrong audience', () => issuer.sign({ sub: 'carol', sid: 'c-2' }, { aud: 'another-service' }), 'auth_invalid'],
      ['unknown key (right kid, wrong key)', () => issuer.sign({ sub: 'carol', sid: 'c-3' }, { kid: 'rogue' }), 'auth_invalid'],
      ['unknown kid', () => issuer.sign({ sub: 'carol', sid: 'c-4' }, { kid: 'nope' }), 'auth_invalid'],
    ])('%s is refused', async (_name, make, reason) => {
      const r = await through('oidc:carol', await make());
      expect(r.status).toBe(407);
      expect(r.headers['x-portcullis-reason']).toBe(reason);
    });

    test('sign out everywhere refuses every JWT issued before it, even never-seen ones', async () => {
      const before = Math.floor(Date.now() / 1000) - 5;
      const unseen = await issuer.sign({ sub: 'dave', sid: 'never-seen' }, { iat: before });
      expect((await h.admin('DELETE', `/v1/accounts/${encodeURIComponent('oidc:dave')}/sessions`)).status).toBe(200);
      expect((await through('oidc:dave', unseen)).headers['x-portcullis-reason']).toBe('session_revoked');
      // A sign-in after the watermark works.
      const after = await issuer.sign({ sub: 'dave', sid: 'fresh' }, { iat: Math.floor(Date.now() / 1000) + 2 });
      expect((await through('oidc:dave', after)).status).toBe(200);
    });

    test('revoking an OIDC session closes its open tunnel within 1 s', async () => {
      const jwt = await issuer.sign({ sub: 'erin', sid: 'e-1' });
      const tunnel = await openConnect(h.proxyPort, `origin.test:${origin.port}`, { auth: basic('oidc:erin', jwt) });
      expect(tunnel.status).toBe(200);
      const id = (await list('oidc:erin'))[0]!['id'] as string;
      const closed = closedWithin(tunnel.socket, 3000);
      expect((await h.admin('DELETE', `/v1/accounts/${encodeURIComponent('oidc:erin')}/sessions/${id}`)).status).toBe(200);
      expect(await closed).toBeLessThan(1000);
    });
  });

  test('sessions_active counts live sessions', async () => {
    await new Promise((r) => setTimeout(r, 50));
    const active = await scrapeMetric(h.adminUrl, 'portcullis_sessions_active');
    expect(active).toBeGreaterThan(0);
  });
});
