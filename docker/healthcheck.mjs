#!/usr/bin/env node
/**
 * Health probe for containers: GET a path on the Portcullis admin listener, exit 0 on 200.
 * Slim images have no curl, so node itself is the client (Dockerfile HEALTHCHECK, Kubernetes
 * exec probes against an admin unix socket).
 *
 *   node healthcheck.mjs [TARGET] [PATH]
 *
 * TARGET  http://HOST:PORT or unix:/path/to/admin.sock. Default: PORTCULLIS_ADMIN_LISTEN as the
 *         server reads it (HOST:PORT, [IPV6]:PORT, :PORT or unix:PATH; a wildcard host is probed
 *         on loopback), else 127.0.0.1:9090, the server's default.
 * PATH    /healthz (liveness, the default) or /readyz (readiness: policy loaded, store fresh,
 *         not draining).
 *
 * Exit codes: 0 the answer was 200; 1 anything else, including no answer within 2 seconds.
 */
import { request } from 'node:http';
import { pathToFileURL } from 'node:url';

const TIMEOUT_MS = 2000;

/** Connection options for a target string; throws on a malformed one. */
export function targetOptions(target) {
  if (target.startsWith('unix:')) {
    const socketPath = target.slice('unix:'.length);
    if (socketPath === '') throw new Error('unix: needs a socket path');
    return { socketPath };
  }
  const hostPort = target.startsWith('http://') ? new URL(target).host : target;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(hostPort);
  if (m === null) throw new Error(`expected http://HOST:PORT, HOST:PORT, :PORT or unix:PATH, got ${JSON.stringify(target)}`);
  const host = m[1] ?? m[2] ?? '';
  // A server on every interface answers on loopback; probing the wildcard itself is not portable.
  const probeHost = host === '' || host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return { host: probeHost, port: Number(m[3]) };
}

/** GET `path` on `target`; resolves with the status code, or rejects. */
export function probe(target, path = '/healthz', timeoutMs = TIMEOUT_MS) {
  return new Promise((resolve, reject) => {
    const req = request({ ...targetOptions(target), path, method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const target = process.argv[2] ?? process.env.PORTCULLIS_ADMIN_LISTEN ?? '127.0.0.1:9090';
  const path = process.argv[3] ?? '/healthz';
  probe(target, path).then(
    (status) => {
      if (status !== 200) process.stderr.write(`healthcheck: GET ${path} on ${target}: ${status}\n`);
      process.exitCode = status === 200 ? 0 : 1;
    },
    (err) => {
      process.stderr.write(`healthcheck: GET ${path} on ${target}: ${err.message}\n`);
      process.exitCode = 1;
    },
  );
}
