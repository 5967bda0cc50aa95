/**
 * The deployment's own interception CA and the leaf certificates minted from it.
 *
 * The CA is ECDSA P-256, its key file mode 0600. Leaves are minted per canonical host with one
 * reused leaf key pair (minting costs one signature, a few ms), short validity, SAN = the host,
 * and are cached as TLS contexts in a bounded LRU with in-flight de-duplication.
 */
import 'reflect-metadata';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { webcrypto } from 'node:crypto';
import { hostname } from 'node:os';
import path from 'node:path';
import tls, { type SecureContext } from 'node:tls';
import * as x509 from '@peculiar/x509';
import { isIP } from 'node:net';

// Node's WebCrypto under the names the DOM typings (which this project does not load) would give.
type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as never);

const EC = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGN = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** File names inside --ca-dir. */
export const CA_FILES = { cert: 'ca-cert.pem', key: 'ca-key.pem' } as const;

/** How long minted leaves are valid (and cached): short, so a rotated CA's leaves die quickly. */
const LEAF_VALIDITY_MS = 24 * 3600_000;
const LEAF_BACKDATE_MS = 3600_000;

async function exportKeyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function importKeyPem(pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decode(pem)[0]!;
  return webcrypto.subtle.importKey('pkcs8', der, EC, true, ['sign']);
}

function randomSerial(): string {
  const bytes = webcrypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f; // positive
  return Buffer.from(bytes).toString('hex');
}

/** Creates a new CA certificate and key (PEM). */
export async function createCa(commonName = `Portcullis interception CA (${hostname()})`): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerial(),
    name: `CN=${commonName.replace(/[,=+<>#;"\\]/g, ' ')}, O=Portcullis`,
    notBefore: new Date(now - LEAF_BACKDATE_MS),
    notAfter: new Date(now + 5 * 365 * 24 * 3600_000),
    keys: keys as never,
    signingAlgorithm: SIGN,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey as never),
    ],
  });
  return { certPem: cert.toString('pem'), keyPem: await exportKeyPem(keys.privateKey) };
}

/** Writes a CA into a directory: key 0600, written to a temp file and renamed. */
export async function writeCa(dir: string, ca: { certPem: string; keyPem: string }): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyTmp = path.join(dir, `.${CA_FILES.key}.tmp`);
  const certTmp = path.join(dir, `.${CA_FILES.cert}.tmp`);
  await writeFile(keyTmp, ca.keyPem, { mode: 0o600 });
  await chmod(keyTmp, 0o600);
  await writeFile(certTmp, ca.certPem, { mode: 0o644 });
  // Certificate first, key last: a reader that sees the new key also sees its certificate.
  await rename(certTmp, path.join(dir, CA_FILES.cert));
  await rename(keyTmp, path.join(dir, CA_FILES.key));
}

/** Reads the CA of a directory; null when there is none. */
export async function readCa(dir: string): Promise<{ certPem: string; keyPem: string } | null> {
  try {
    const [certPem, keyPem] = await Promise.all([readFile(path.join(dir, CA_FILES.cert), 'utf8'), readFile(path.join(dir, CA_FILES.key), 'utf8')]);
    return { certPem, keyPem };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

/** Mints and caches leaf TLS contexts for intercepted hosts. */
export class LeafMinter {
  readonly #cache = new Map<string, Promise<SecureContext>>();
  readonly #max: number;
  #ca: { cert: x509.X509Certificate; certPem: string; key: CryptoKey };
  #leafKeys: Promise<{ pair: CryptoKeyPair; pem: string }>;
  readonly #clock: () => number;

  private constructor(ca: { cert: x509.X509Certificate; certPem: string; key: CryptoKey }, max: number, clock: () => number) {
    this.#ca = ca;
    this.#max = max;
    this.#clock = clock;
    this.#leafKeys = LeafMinter.#newLeafKeys();
  }

  static async #newLeafKeys(): Promise<{ pair: CryptoKeyPair; pem: string }> {
    const pair = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify']);
    return { pair, pem: await exportKeyPem(pair.privateKey) };
  }

  /** A minter for a CA given as PEM. */
  static async fromPem(ca: { certPem: string; keyPem: string }, options: { maxContexts?: number; clock?: () => number } = {}): Promise<LeafMinter> {
    return new LeafMinter(await LeafMinter.#parse(ca), options.maxContexts ?? 1000, options.clock ?? Date.now);
  }

  static async #parse(ca: { certPem: string; keyPem: string }): Promise<{ cert: x509.X509Certificate; certPem: string; key: CryptoKey }> {
    return { cert: new x509.X509Certificate(ca.certPem), certPem: ca.certPem, key: await importKeyPem(ca.keyPem) };
  }

  /** The CA certificate clients must trust. */
  get caCertPem(): string {
    return this.#ca.certPem;
  }

  /** Swaps in a new CA (rotation) and drops every cached leaf of the old one. */
  async replaceCa(ca: { certPem: string; keyPem: string }): Promise<void> {
    this.#ca = await LeafMinter.#parse(ca);
    this.#cache.clear();
  }

  /** Number of cached contexts. */
  get size(): number {
    return this.#cache.size;
  }

  /** The TLS context for a canonical host; concurrent calls for one host share one mint. */
  contextFor(host: string): Promise<SecureContext> {
    const hit = this.#cache.get(host);
    if (hit !== undefined) {
      this.#cache.delete(host);
      this.#cache.set(host, hit);
      return hit;
    }
    const minted = this.#mint(host);
    this.#cache.set(host, minted);
    minted.catch(() => this.#cache.delete(host));
    // Evict least recently used; expire before the leaf does by re-minting after most of its life.
    while (this.#cache.size > this.#max) this.#cache.delete(this.#cache.keys().next().value as string);
    const timer = setTimeout(() => {
      if (this.#cache.get(host) === minted) this.#cache.delete(host);
    }, LEAF_VALIDITY_MS / 2);
    timer.unref();
    return minted;
  }

  /** Mints a leaf certificate PEM for a host (exported for benchmarks). */
  async mintPem(host: string): Promise<{ certPem: string; keyPem: string }> {
    const leaf = await this.#leafKeys;
    const now = this.#clock();
    const ca = this.#ca;
    const san = isIP(host) ? { type: 'ip' as const, value: host } : { type: 'dns' as const, value: host };
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerial(),
      subject: `CN=${isIP(host) ? 'portcullis-intercept' : host.slice(0, 64)}`,
      issuer: ca.cert.subject,
      notBefore: new Date(now - LEAF_BACKDATE_MS),
      notAfter: new Date(now + LEAF_VALIDITY_MS),
      publicKey: leaf.pair.publicKey as never,
      signingKey: ca.key as never,
      signingAlgorithm: SIGN,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([san]),
        await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
      ],
    });
    return { certPem: cert.toString('pem'), keyPem: leaf.pem };
  }

  async #mint(host: string): Promise<SecureContext> {
    const { certPem, keyPem } = await this.mintPem(host);
    return tls.createSecureContext({ cert: `${certPem.trim()}\n${this.#ca.certPem.trim()}\n`, key: keyPem, minVersion: 'TLSv1.2' });
  }
}
