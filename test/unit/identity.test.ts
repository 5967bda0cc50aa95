import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { exportJWK, generateKeyPair, SignJWT, createLocalJWKSet } from 'jose';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseUserAgent } from '../../src/identity/device.js';
import { GeoIp } from '../../src/identity/geo.js';
import { looksLikeJwt, OidcVerifier, oidcSessionId } from '../../src/identity/oidc.js';
import { parseBasic } from '../../src/identity/authenticate.js';
import { buildMmdb, cityRecord } from '../helpers/mmdb-writer.js';

describe('user agents', () => {
  test.each([
    ['Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36', { client: 'Chrome 120.0.0.0', os: 'Mac OS 10.15.7' }],
    ['Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1', { client: 'Mobile Safari 17.1', device: 'mobile Apple iPhone' }],
    ['Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0', { client: 'Firefox 121.0', os: 'Linux', device: 'desktop' }],
    ['curl/8.5.0', { client: 'curl 8.5.0', os: null, device: null }],
    ['git/2.39.5', { client: 'git 2.39.5' }],
    ['python-requests/2.31.0', { client: 'python-requests 2.31.0' }],
    ['codex-cli/0.1 (agent)', { client: null, os: null, device: null }],
  ])('%s', (ua, expected) => {
    expect(parseUserAgent(ua)).toMatchObject(expected);
  });

  test('absent user agent', () => {
    expect(parseUserAgent(null)).toEqual({ client: null, os: null, device: null });
  });
});

describe('approximate location from a MaxMind-format database', () => {
  let dir: string;
  let geo: GeoIp;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-geo-'));
    const file = path.join(dir, 'city.mmdb');
    writeFileSync(
      file,
      buildMmdb([
        { network: '81.2.69.0/24', data: cityRecord('GB', 'London') },
        { network: '89.160.20.112/28', data: cityRecord('SE', 'Linköping') },
        { network: '2001:480::/32', data: cityRecord('US', 'San Diego') },
      ]),
    );
    geo = await GeoIp.open(file);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test.each([
    ['81.2.69.160', 'London, GB'],
    ['89.160.20.120', 'Linköping, SE'],
    ['::ffff:81.2.69.1', 'London, GB'],
    ['2001:480::1', 'San Diego, US'],
    ['8.8.8.8', 'unknown'],
    ['10.1.2.3', 'private network'],
    ['127.0.0.1', 'private network'],
    ['fd00::1', 'private network'],
  ])('%s → %s', (ip, label) => {
    expect(geo.locate(ip).label).toBe(label);
  });

  test('without a database everything public is unknown', async () => {
    const none = await GeoIp.open(null);
    expect(none.locate('81.2.69.160')).toMatchObject({ label: 'unknown', country: null });
    expect(none.locate('192.168.1.1').label).toBe('private network');
  });
});

describe('OIDC tokens', () => {
  const config = {
    issuer: 'https://idp.test',
    audience: 'portcullis',
    jwksUrl: 'https://idp.test/jwks',
    accountClaim: 'sub',
    sessionClaims: ['sid', 'jti'],
    accountPrefix: 'oidc:',
    algorithms: ['ES256'] as const,
  };
  let sign: (claims: Record<string, unknown>, opts?: { exp?: string | number; iat?: number; kid?: string }) => Promise<string>;
  let verifier: OidcVerifier;

  beforeAll(async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' };
    verifier = new OidcVerifier(config as never, { keys: createLocalJWKSet({ keys: [jwk] }) });
    sign = (claims, opts = {}) => {
      const jwt = new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'k1' }).setIssuer('https://idp.test').setAudience('portcullis');
      jwt.setIssuedAt(opts.iat ?? Math.floor(Date.now() / 1000));
      jwt.setExpirationTime(opts.exp ?? '10m');
      return jwt.sign(privateKey);
    };
  });

  test('a valid token names the prefixed account and a session from sid', async () => {
    const id = await verifier.verify(await sign({ sub: 'alice', sid: 's-1', azp: 'chat' }));
    expect(id).toMatchObject({ account: 'oidc:alice', sessionId: oidcSessionId('https://idp.test', 's-1'), app: 'chat' });
  });

  test('jti is the fallback session claim', async () => {
    const id = await verifier.verify(await sign({ sub: 'alice', jti: 'j-9' }));
    expect(id).toMatchObject({ sessionId: oidcSessionId('https://idp.test', 'j-9') });
  });

  test.each([
    ['expired', async () => sign({ sub: 'a', sid: 's' }, { exp: Math.floor(Date.now() / 1000) - 3600, iat: Math.floor(Date.now() / 1000) - 7200 }), 'session_expired'],
    ['no session claim', async () => sign({ sub: 'a' }), 'auth_invalid'],
    ['unknown key', async () => sign({ sub: 'a', sid: 's' }, { kid: 'other' }), 'auth_invalid'],
    ['account claim with a colon', async () => sign({ sub: 'a:b', sid: 's' }), 'auth_invalid'],
    ['tampered payload', async () => (await sign({ sub: 'a', sid: 's' })).replace(/\.([^.]+)\./, (_m, p: string) => `.${p.slice(0, -2)}AA.`), 'auth_invalid'],
  ])('%s is refused', async (_name, make, reason) => {
    expect(await verifier.verify(await make())).toMatchObject({ reason });
  });

  test('wrong audience is refused', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k2', alg: 'ES256' };
    const v = new OidcVerifier(config as never, { keys: createLocalJWKSet({ keys: [jwk] }) });
    const token = await new SignJWT({ sub: 'a', sid: 's' }).setProtectedHeader({ alg: 'ES256', kid: 'k2' }).setIssuer('https://idp.test').setAudience('not-portcullis').setIssuedAt().setExpirationTime('5m').sign(privateKey);
    expect(await v.verify(token)).toMatchObject({ reason: 'auth_invalid' });
  });

  test('looksLikeJwt tells JWTs from session tokens', async () => {
    expect(looksLikeJwt(await sign({ sub: 'a', sid: 's' }))).toBe(true);
    expect(looksLikeJwt('pcs_0123456789abcdef_' + 'A'.repeat(43))).toBe(false);
  });
});

describe('Basic credentials', () => {
  const b = (s: string) => `Basic ${Buffer.from(s).toString('base64')}`;
  test.each([
    [b('agent:pcs_x'), { user: 'agent', password: 'pcs_x' }],
    [b('oidc:alice:eyJ.a.b'), { user: 'oidc:alice', password: 'eyJ.a.b' }],
    ['basic ' + Buffer.from('a:b').toString('base64'), { user: 'a', password: 'b' }],
    ['Bearer abc', null],
    ['Basic !!!', null],
    [b('nocolon'), null],
  ])('%s', (header, expected) => {
    expect(parseBasic(header)).toEqual(expected);
  });
});
