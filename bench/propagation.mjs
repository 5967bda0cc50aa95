// Benchmark: how fast a change made through one RedisStore replica reaches another (p50/p99 over
// 1,000 changes, one at a time), and request throughput through Portcullis with the redis store
// vs the file store on the same loopback workload. Numbers only: the request path reads the
// local cache in both cases, so the two throughputs should be about equal.
// Starts its own redis-server on a free 127.0.0.1 port (never a shared one) and kills it after.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ProxyAgent, request } from 'undici';
import { startApp } from '../dist/app.js';
import { loadConfig } from '../dist/config/load.js';
import { RedisStore } from '../dist/state/redis-store.js';

const CHANGES = 1_000;
const REQUESTS = 2_000;
const CONCURRENCY = 16;
const RUNS = 3;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startRedis() {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  await new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error('redis-server did not start')), 5_000);
    child.stdout.on('data', (c) => {
      out += c;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => reject(new Error(`redis-server exited with ${code}`)));
  });
  child.stdout.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => (child.exitCode !== null ? resolve() : (child.once('exit', resolve), child.kill('SIGKILL')))),
  };
}

/** p50/p99 of write-on-A → change-event-on-B, one change in flight at a time. */
async function propagation(url) {
  const prefix = `bench-${process.pid}:`;
  const a = new RedisStore({ url, prefix });
  const b = new RedisStore({ url, prefix });
  await a.open();
  await b.open();
  const latencies = [];
  try {
    let waiting = null;
    b.on('change', (c) => {
      if (waiting !== null && c.type === 'account' && c.state.account === waiting.account) waiting.resolve(performance.now());
    });
    for (let i = 0; i < CHANGES; i++) {
      const account = `acct-${i}`;
      const seen = new Promise((resolve) => (waiting = { account, resolve }));
      const t0 = performance.now();
      await a.setLockdown(account, true, 'bench');
      latencies.push((await seen) - t0);
    }
  } finally {
    await a.close();
    await b.close();
  }
  latencies.sort((x, y) => x - y);
  return { changes: CHANGES, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), maxMs: latencies[latencies.length - 1] };
}

async function startOrigin() {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => res.end('ok'));
  });
  server.keepAliveTimeout = 30_000;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: server.address().port, close: () => new Promise((r) => (server.closeAllConnections(), server.close(r))) };
}

/** Requests per second through a fresh Portcullis with the given store, keep-alive, CONCURRENCY in flight. */
async function throughput(storeUrl, originPort) {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-bench-'));
  const policy = path.join(dir, 'policy.yaml');
  writeFileSync(
    policy,
    ['version: 1', 'destinations:', '  origin:', '    hosts: ["127.0.0.1"]', `    ports: [${originPort}]`, '    allowPrivate: [127.0.0.1/32]', 'accounts:', '  - match: "*"', '    allow: [origin]', ''].join('\n'),
  );
  const config = loadConfig(
    [
      '--policy', policy,
      '--listen', '127.0.0.1:0',
      '--admin-listen', '127.0.0.1:0',
      '--store', storeUrl.replace('DIR', dir),
      '--admin-token-file', path.join(dir, 'admin-tokens.json'),
      '--ca-dir', path.join(dir, 'ca'),
      '--log-level', 'silent',
      '--drain-timeout-ms', '0',
    ],
    {},
  );
  const app = await startApp(config);
  try {
    const adminToken = readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
    const res = await fetch(`http://${app.adminAddress}/v1/accounts/bench/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify({ app: 'bench' }),
    });
    const { token } = await res.json();
    const proxyAuth = `Basic ${Buffer.from(`bench:${token}`).toString('base64')}`;
    const dispatcher = new ProxyAgent({ uri: `http://127.0.0.1:${app.proxyAddress.port}`, token: proxyAuth, connections: CONCURRENCY });
    const url = `http://127.0.0.1:${originPort}/item`;
    const run = async (n) => {
      let next = 0;
      let failed = 0;
      const worker = async () => {
        while (next < n) {
          next++;
          const r = await request(url, { dispatcher });
          await r.body.dump();
          if (r.statusCode !== 200) failed++;
        }
      };
      const t0 = performance.now();
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      return { seconds: (performance.now() - t0) / 1000, failed };
    };
    await run(200);
    const rates = [];
    let failed = 0;
    for (let i = 0; i < RUNS; i++) {
      const r = await run(REQUESTS);
      rates.push(REQUESTS / r.seconds);
      failed += r.failed;
    }
    await dispatcher.close();
    return { requestsPerSecond: median(rates), failed };
  } finally {
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs both measurements; `skipped` says why when redis-server is missing. */
export async function benchPropagation() {
  if (spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status !== 0) return { skipped: 'redis-server not found' };
  const redis = await startRedis();
  const origin = await startOrigin();
  try {
    const prop = await propagation(redis.url);
    // One discarded run warms the JIT; then alternate the stores so load drift hits both alike.
    await throughput('file:DIR/state.json', origin.port);
    const file = [];
    const red = [];
    for (let i = 0; i < 3; i++) {
      file.push(await throughput('file:DIR/state.json', origin.port));
      red.push(await throughput(`${redis.url}?prefix=bench-tp-${i}:`, origin.port));
    }
    const fileRps = median(file.map((r) => r.requestsPerSecond));
    const redisRps = median(red.map((r) => r.requestsPerSecond));
    return {
      propagation: prop,
      throughput: {
        requests: REQUESTS,
        concurrency: CONCURRENCY,
        fileRps,
        redisRps,
        ratio: redisRps / fileRps,
        failed: [...file, ...red].reduce((n, r) => n + r.failed, 0),
      },
    };
  } finally {
    await origin.close();
    await redis.close();
  }
}

/** Prints the figures of benchPropagation(). */
export function printPropagation(r) {
  if (r.skipped) {
    console.log(`propagation — skipped: ${r.skipped}`);
    return;
  }
  const p = r.propagation;
  console.log('propagation — RedisStore replica A → replica B, change event on B (%d changes, one in flight)', p.changes);
  console.log(`  p50 ${p.p50Ms.toFixed(2)} ms   p99 ${p.p99Ms.toFixed(2)} ms   max ${p.maxMs.toFixed(2)} ms`);
  const t = r.throughput;
  console.log('throughput — plain HTTP through Portcullis, keep-alive, %d requests × %d in flight (median)', t.requests, t.concurrency);
  console.log(`  file store  ${t.fileRps.toFixed(0).padStart(7)} req/s`);
  console.log(`  redis store ${t.redisRps.toFixed(0).padStart(7)} req/s   (redis/file ${t.ratio.toFixed(2)}×${t.failed ? `, ${t.failed} non-200` : ''})`);
}
