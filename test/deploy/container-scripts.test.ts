/**
 * docker/healthcheck.mjs (the image's HEALTHCHECK and the sidecar's exec probes) and
 * docker/metrics-bridge.mjs (the sidecar's read-only TCP window on the admin socket), run
 * against a real Portcullis whose admin API listens on a unix socket, as in the sidecar pod.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo, Server } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { startApp, type App } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { LogSink } from '../helpers/harness.js';
import { ROOT } from './deploy-files.js';
// @ts-expect-error -- plain ESM scripts without type declarations
import { probe, targetOptions } from '../../docker/healthcheck.mjs';
// @ts-expect-error -- plain ESM scripts without type declarations
import { BRIDGED_PATHS, createBridge, parseListen } from '../../docker/metrics-bridge.mjs';

const run = promisify(execFile);
const HEALTHCHECK = path.join(ROOT, 'docker/healthcheck.mjs');

/** Runs healthcheck.mjs as the container would; resolves with its exit code. */
async function healthcheck(args: string[], env: Record<string, string> = {}): Promise<number> {
  try {
    await run(process.execPath, [HEALTHCHECK, ...args], { env: { PATH: process.env['PATH'] ?? '', ...env }, timeout: 10_000 });
    return 0;
  } catch (err) {
    return (err as { code?: number }).code ?? -1;
  }
}

describe('with the admin API on a unix socket', () => {
  let dir: string;
  let app: App;
  let socket: string;
  let bridge: Server;
  let bridgeUrl: string;
  let adminToken: string;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-sock-'));
    socket = path.join(dir, 'admin.sock');
    const policy = path.join(dir, 'policy.yaml');
    writeFileSync(policy, 'version: 1\ndestinations:\n  npm:\n    hosts: [registry.npmjs.org]\naccounts:\n  - match: "*"\n    allow: [npm]\n');
    const config = loadConfig(
      ['--policy', policy, '--listen', '127.0.0.1:0', '--admin-listen', `unix:${socket}`, '--store', `file:${path.join(dir, 'state.json')}`, '--ca-dir', path.join(dir, 'ca')],
      {},
    );
    app = await startApp(config, { logger: createLogger({ level: 'silent', destination: new LogSink() }), dnsServers: ['127.0.0.1:9'] });
    adminToken = readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
    bridge = createBridge(socket) as Server;
    await new Promise<void>((resolve) => bridge.listen(0, '127.0.0.1', resolve));
    bridgeUrl = `http://127.0.0.1:${(bridge.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => bridge?.close(resolve));
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('healthcheck: exit 0 for /healthz and /readyz over the socket, from an argument or PORTCULLIS_ADMIN_LISTEN', async () => {
    expect(await healthcheck([`unix:${socket}`, '/healthz'])).toBe(0);
    expect(await healthcheck([`unix:${socket}`, '/readyz'])).toBe(0);
    expect(await healthcheck([], { PORTCULLIS_ADMIN_LISTEN: `unix:${socket}` })).toBe(0);
    expect(await probe(`unix:${socket}`, '/healthz')).toBe(200);
  });

  test('healthcheck: exit 1 when nothing listens or the answer is not 200', async () => {
    expect(await healthcheck([`unix:${path.join(dir, 'missing.sock')}`])).toBe(1);
    expect(await healthcheck([`unix:${socket}`, '/v1/policy'])).toBe(1); // 401 without a token
  });

  test('bridge: GET /metrics, /healthz and /readyz come from the socket', async () => {
    const metrics = await fetch(`${bridgeUrl}/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await metrics.text()).toMatch(/^# TYPE portcullis_requests_total counter$/m);
    expect((await fetch(`${bridgeUrl}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${bridgeUrl}/readyz`)).json()).toMatchObject({ status: 'ready' });
    expect([...BRIDGED_PATHS].sort()).toEqual(['/healthz', '/metrics', '/readyz']);
  });

  test('bridge: nothing else reaches the admin API, even with a valid admin token', async () => {
    const auth = { authorization: `Bearer ${adminToken}` };
    for (const [method, p] of [['GET', '/v1/policy'], ['POST', '/v1/policy/reload'], ['PUT', '/v1/lockdown'], ['POST', '/metrics'], ['GET', '/metrics/../v1/policy']] as const) {
      const res = await fetch(`${bridgeUrl}${p}`, { method, headers: auth });
      expect(res.status, `${method} ${p}`).toBe(404);
    }
    // Control: the same token works on the socket itself.
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ socketPath: socket, path: '/v1/policy', headers: auth }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });

  test('bridge: 502 when the socket is gone', async () => {
    const orphan = createBridge(path.join(dir, 'missing.sock')) as Server;
    await new Promise<void>((resolve) => orphan.listen(0, '127.0.0.1', resolve));
    try {
      const res = await fetch(`http://127.0.0.1:${(orphan.address() as AddressInfo).port}/metrics`);
      expect(res.status).toBe(502);
    } finally {
      await new Promise((resolve) => orphan.close(resolve));
    }
  });
});

test.each([
  ['0.0.0.0:9090', { host: '127.0.0.1', port: 9090 }],
  [':9090', { host: '127.0.0.1', port: 9090 }],
  ['[::]:9090', { host: '::1', port: 9090 }],
  ['http://192.0.2.10:9090', { host: '192.0.2.10', port: 9090 }],
  ['unix:/run/portcullis/admin.sock', { socketPath: '/run/portcullis/admin.sock' }],
])('healthcheck target %s', (target, expected) => {
  expect(targetOptions(target)).toEqual(expected);
});

test('bridge --listen parsing', () => {
  expect(parseListen('0.0.0.0:9090')).toEqual({ host: '0.0.0.0', port: 9090 });
  expect(parseListen(':9090')).toEqual({ host: '::', port: 9090 });
  expect(() => parseListen('9090')).toThrow(/HOST:PORT/);
});
