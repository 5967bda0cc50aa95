import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, describe, expect, test } from 'vitest';
import { CA_FILES, createCa, LeafMinter, readCa, writeCa } from '../../src/tls/ca.js';

const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-ca-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('interception CA', () => {
  test('is an ECDSA P-256 CA whose key file is mode 0600', async () => {
    await writeCa(dir, await createCa('Test CA'));
    expect(statSync(path.join(dir, CA_FILES.key)).mode & 0o777).toBe(0o600);
    const ca = (await readCa(dir))!;
    const cert = new X509Certificate(ca.certPem);
    expect(cert.ca).toBe(true);
    expect(cert.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.subject).toContain('CN=Test CA');
  });

  test('readCa answers null for an empty directory', async () => {
    expect(await readCa(path.join(dir, 'nothing-here'))).toBeNull();
  });

  test('leaves verify against the CA, name the host, and a real TLS client accepts them', async () => {
    const ca = (await readCa(dir))!;
    const minter = await LeafMinter.fromPem(ca);
    const { certPem } = await minter.mintPem('api.github.com');
    const leaf = new X509Certificate(certPem);
    expect(leaf.verify(new X509Certificate(ca.certPem).publicKey)).toBe(true);
    expect(leaf.subjectAltName).toBe('DNS:api.github.com');
    expect(leaf.checkHost('api.github.com')).toBe('api.github.com');
    expect(leaf.checkHost('evil.example')).toBeUndefined();
    expect(Date.parse(leaf.validTo) - Date.now()).toBeLessThanOrEqual(24 * 3600_000 + 1000);

    const server = tls.createServer({ SNICallback: (name, cb) => minter.contextFor(name).then((c) => cb(null, c), cb) }, (s) => s.end('hi'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const text = await new Promise<string>((resolve, reject) => {
      const c = tls.connect({ port, host: '127.0.0.1', servername: 'api.github.com', ca: ca.certPem }, () => undefined);
      let out = '';
      c.on('data', (d) => (out += d));
      c.on('end', () => resolve(out));
      c.on('error', reject);
    });
    expect(text).toBe('hi');
    server.close();
  });

  test('IP-literal hosts get an IP SAN', async () => {
    const minter = await LeafMinter.fromPem((await readCa(dir))!);
    expect(new X509Certificate((await minter.mintPem('203.0.113.7')).certPem).subjectAltName).toBe('IP Address:203.0.113.7');
  });

  test('concurrent requests for one host share one mint; the cache is bounded', async () => {
    const minter = await LeafMinter.fromPem((await readCa(dir))!, { maxContexts: 3 });
    const [a, b] = await Promise.all([minter.contextFor('a.test'), minter.contextFor('a.test')]);
    expect(a).toBe(b);
    for (const h of ['b.test', 'c.test', 'd.test']) await minter.contextFor(h);
    expect(minter.size).toBe(3);
  });

  test('rotation drops cached leaves of the old CA', async () => {
    const minter = await LeafMinter.fromPem((await readCa(dir))!);
    const before = await minter.contextFor('x.test');
    const next = await createCa('Rotated CA');
    await minter.replaceCa(next);
    expect(minter.size).toBe(0);
    const after = await minter.contextFor('x.test');
    expect(after).not.toBe(before);
    const leaf = new X509Certificate((await minter.mintPem('x.test')).certPem);
    expect(leaf.verify(new X509Certificate(next.certPem).publicKey)).toBe(true);
  });
});
