/**
 * `portcullis ca init|show|rotate`: the interception CA in --ca-dir.
 */
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CA_FILES, createCa, readCa, writeCa } from '../tls/ca.js';
import { UsageError, type Io } from './io.js';

function caDir(argv: string[]): { dir: string; rest: string[] } {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'ca-dir': { type: 'string', default: process.env['PORTCULLIS_CA_DIR'] ?? './data/ca' } },
  });
  return { dir: values['ca-dir'], rest: positionals };
}

/** How clients are told to trust the CA. */
export function trustHint(certFile: string): string {
  return [
    `trust it in clients, e.g.:`,
    `  export NODE_EXTRA_CA_CERTS=${certFile}    # Node.js, undici`,
    `  export SSL_CERT_FILE=${certFile}          # OpenSSL-based tools (replaces the default bundle: concatenate it with the system one)`,
    `  export REQUESTS_CA_BUNDLE=${certFile}     # Python requests (likewise a full bundle)`,
    `  export CURL_CA_BUNDLE=${certFile}         # curl`,
    `  git config --global http.sslCAInfo ${certFile}   # or GIT_SSL_CAINFO`,
  ].join('\n');
}

/** `ca init`: create a CA unless one exists. */
export async function caInit(argv: string[], io: Io): Promise<number> {
  const { dir, rest } = caDir(argv);
  if (rest.length > 0) throw new UsageError('usage: portcullis ca init [--ca-dir DIR]');
  if ((await readCa(dir)) !== null) {
    io.err(`portcullis: a CA already exists in ${dir}; use "portcullis ca rotate" to replace it`);
    return 1;
  }
  await writeCa(dir, await createCa());
  const certFile = path.resolve(dir, CA_FILES.cert);
  io.out(`created the interception CA: ${certFile} (key ${path.resolve(dir, CA_FILES.key)}, mode 0600)`);
  io.out(trustHint(certFile));
  return 0;
}

/** `ca show`: print the CA certificate PEM. */
export async function caShow(argv: string[], io: Io): Promise<number> {
  const { dir } = caDir(argv);
  const ca = await readCa(dir);
  if (ca === null) {
    io.err(`portcullis: no CA in ${dir}; run "portcullis ca init"`);
    return 1;
  }
  io.out(ca.certPem.trim());
  return 0;
}

/**
 * `ca rotate`: replace the CA. A running proxy watches --ca-dir, swaps the CA in and drops every
 * cached leaf, without downtime; clients need the new certificate before their next tunnel.
 */
export async function caRotate(argv: string[], io: Io): Promise<number> {
  const { dir } = caDir(argv);
  const old = await readCa(dir);
  if (old !== null) await copyFile(path.join(dir, CA_FILES.cert), path.join(dir, 'ca-cert.previous.pem'));
  await writeCa(dir, await createCa());
  io.out(`rotated the interception CA in ${path.resolve(dir)}${old ? ' (previous certificate kept as ca-cert.previous.pem)' : ''}`);
  io.out(trustHint(path.resolve(dir, CA_FILES.cert)));
  return 0;
}
