/**
 * Two real `portcullis serve` processes sharing one private redis-server and one test DNS
 * server: sessions, revocations (open tunnels included) and lockdown made on one replica take
 * effect on the other within a second, and with Redis gone both fail closed, then recover.
 * Runs the built CLI (dist/), as an operator would; `npm test` builds first.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basic, closedWithin, openConnect, proxyRequest, waitFor } from '../helpers/clients.js';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.js';
import { startOrigin, type Origin } from '../helpers/harness.js';
import { HAVE_REDIS, startRedisServer, type RedisServer } from '../helpers/redis-server.js';

const root = path.resolve(import.meta.dirname, '../..');
const cli = path.join(root, 'dist', 'cli.js');
if (!HAVE_REDIS && process.env.CI === 'true') throw new Error('redis-server is required in CI');

/** One running `portcullis serve`. */
interface Replica {
  readonly name: string;
  readonly child: ChildProcess;
  readonly proxyPort: number;
  readonly adminUrl: string;
  readonly stderr: () => string;
}

let dir: string;
let redis: RedisServer;
let dns: DnsServer;
let origin: Origin;
let a: Replica;
let b: Replica;
let adminToken: string;

function startReplica(name: string): Promise<Replica> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PORTCULLIS_')) env[k] = v;
  const child = spawn(
    process.execPath,
    [
      cli, 'serve',
      '--store', redis.url,
      '--store-max-staleness-ms', '500',
      '--listen', '127.0.0.1:0',
      '--admin-listen', '127.0.0.1:0',
      '--policy', path.join(dir, 'policy.yaml'),
      '--admin-token-file', path.join(dir, 'admin-tokens.json'),
      '--ca-dir', path.join(dir, `ca-${name}`),
      '--resolver', `127.0.0.1:${dns.port}`,
      '--drain-timeout-ms', '200',
      '--log-level', 'info',
    ],
    { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  child.stdout?.resume();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`replica ${name} did not start: ${err}`)), 15_000);
    child.stderr?.on('data', (c: Buffer) => {
      err += c.toString('utf8');
      const m = /proxy listening on http:\/\/127\.0\.0\.1:(\d+), admin API on (127\.0\.0\.1:\d+)/.exec(err);
      if (m !== null) {
        clearTimeout(timer);
        resolve({ name, child, proxyPort: Number(m[1]), adminUrl: `http://${m[2]}`, stderr: () => err });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`replica ${name} exited with ${code}: ${err}`));
    });
  });
}

async function stopReplica(r: Replica | undefined): Promise<void> {
  if (r === undefined || r.child.exitCode !== null || r.child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => r.child.once('exit', () => resolve()));
  r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), 3_000);
  await exited;
  clearTimeout(timer);
}

async function admin(r: Replica, method: string, p: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(r.adminUrl + p, {
    method,
    headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
}

async function createSession(r: Replica, account: string): Promise<{ token: string; id: string }> {
  const res = await admin(r, 'POST', `/v1/accounts/${account}/sessions`, { app: 'replica-test' });
  expect(res.status).toBe(201);
  return { token: res.json.token as string, id: (res.json.session as { id: string }).id };
}

const originUrl = (): string => `http://origin.test:${origin.port}/hello`;
const get = (r: Replica, account: string, token: string) => proxyRequest(r.proxyPort, originUrl(), { auth: basic(account, token) });
const readyz = async (r: Replica): Promise<number> => (await fetch(`${r.adminUrl}/readyz`)).status;

/** A tunnel through `r` with one keep-alive request answered over it, left open. */
async function openTunnel(r: Replica, account: string, token: string): Promise<net.Socket> {
  const tunnel = await openConnect(r.proxyPort, `origin.test:${origin.port}`, { auth: basic(account, token) });
  expect(tunnel.status).toBe(200);
  const socket = tunnel.socket;
  const answered = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString('latin1'))));
  socket.resume();
  socket.write(`GET /in-tunnel HTTP/1.1\r\nHost: origin.test:${origin.port}\r\n\r\n`);
  expect(await answered).toMatch(/^HTTP\/1\.1 200/);
  return socket;
}

describe.skipIf(!HAVE_REDIS)('two replicas over one redis', () => {
  beforeAll(async () => {
    if (!existsSync(cli)) throw new Error(`${cli} is missing: run npx tsc -p . (npm test builds first)`);
    dir = mkdtempSync(path.join(tmpdir(), 'portcullis-replicas-'));
    redis = await startRedisServer();
    dns = await startDnsServer({ 'origin.test': { A: ['127.0.0.1'] } });
    origin = await startOrigin();
    writeFileSync(
      path.join(dir, 'policy.yaml'),
      [
        'version: 1',
        'destinations:',
        '  origin:',
        '    hosts: [origin.test]',
        `    ports: [${origin.port}]`,
        '    allowPrivate: [127.0.0.1/32]',
        'accounts:',
        '  - match: "*"',
        '    allow: [origin]',
        '',
      ].join('\n'),
    );
    // The first replica creates the shared admin token file; the second reads it.
    a = await startReplica('a');
    adminToken = readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
    b = await startReplica('b');
  }, 40_000);

  afterAll(async () => {
    await Promise.all([stopReplica(a), stopReplica(b)]);
    await origin?.close();
    await dns?.close();
    await redis?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('a_session_created_on_a_works_on_b', async () => {
    const s = await createSession(a, 'alice');
    let status = 0;
    await waitFor(async () => (status = (await get(b, 'alice', s.token)).status) === 200, 1_000, 'the session on B');
    expect(status).toBe(200);
    expect((await get(a, 'alice', s.token)).status).toBe(200);
  });

  test('revoke_on_b_refuses_on_a_and_closes_its_tunnel_within_a_second', async () => {
    const s = await createSession(a, 'carol');
    await waitFor(async () => (await get(b, 'carol', s.token)).status === 200, 1_000, 'the session on B');
    const tunnel = await openTunnel(a, 'carol', s.token);
    const closed = closedWithin(tunnel, 1_000);
    const t0 = performance.now();
    expect((await admin(b, 'DELETE', `/v1/accounts/carol/sessions/${s.id}`)).status).toBe(200);
    await closed;
    const closeMs = performance.now() - t0;
    expect(closeMs).toBeLessThan(1_000);
    const refused = await get(a, 'carol', s.token);
    expect(refused.status).toBe(407);
    expect(refused.headers['x-portcullis-reason']).toBe('session_revoked');
  });

  test('lockdown_set_on_a_applies_on_b', async () => {
    const s = await createSession(b, 'dave');
    await waitFor(async () => (await get(a, 'dave', s.token)).status === 200, 1_000, 'the session on A');
    const tunnel = await openTunnel(b, 'dave', s.token);
    const closed = closedWithin(tunnel, 1_000);
    expect((await admin(a, 'PUT', '/v1/accounts/dave/lockdown', { enabled: true })).status).toBe(200);
    // Turning lockdown on closes the account's tunnels on every replica.
    await closed;
    const denied = await get(b, 'dave', s.token);
    expect(denied.status).toBe(403);
    expect(denied.headers['x-portcullis-reason']).toBe('lockdown_destination');
    expect((await admin(b, 'GET', '/v1/accounts/dave')).json).toMatchObject({ lockdown: true });
  });

  test('without_redis_both_fail_closed_then_recover', async () => {
    const s = await createSession(a, 'erin');
    await waitFor(async () => (await get(b, 'erin', s.token)).status === 200, 1_000, 'the session on B');
    await redis.kill();
    for (const r of [a, b]) {
      await waitFor(async () => (await readyz(r)) === 503, 3_000, `replica ${r.name} not ready`);
      const refused = await get(r, 'erin', s.token);
      expect(refused.status).toBe(503);
      expect(refused.headers['x-portcullis-reason']).toBe('state_unavailable');
    }
    // A lockdown asked for while Redis is down is refused rather than half-applied.
    expect((await admin(a, 'PUT', '/v1/accounts/erin/lockdown', { enabled: true })).status).toBe(503);

    await redis.restart();
    for (const r of [a, b]) {
      await waitFor(async () => (await readyz(r)) === 200, 5_000, `replica ${r.name} ready again`);
      // Redis came back empty: the replicas wrote back what they knew, the session included.
      expect((await get(r, 'erin', s.token)).status).toBe(200);
    }
    // And dave's lockdown, set before the outage, survived it.
    expect((await admin(b, 'GET', '/v1/accounts/dave')).json).toMatchObject({ lockdown: true });
    expect((await admin(b, 'PUT', '/v1/accounts/erin/lockdown', { enabled: true })).status).toBe(200);
    await waitFor(async () => (await get(a, 'erin', s.token)).status === 403, 1_000, 'lockdown on A after recovery');
  });
});
