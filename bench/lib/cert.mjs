// A throwaway ECDSA P-256 certificate for the benchmark's TLS origin (openssl, like the tests).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Writes cert.pem and key.pem into `dir` for `names` (IP literals become IP SANs). */
export function writeSelfSignedCert(dir, names) {
  const san = names.map((n) => (/^[0-9.]+$/.test(n) ? `IP:${n}` : `DNS:${n}`)).join(',');
  const certFile = path.join(dir, 'cert.pem');
  const keyFile = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${san}`,
  ], { stdio: 'ignore' });
  return { certFile, keyFile, cert: readFileSync(certFile, 'utf8') };
}
