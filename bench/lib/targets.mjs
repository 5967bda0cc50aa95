// The proxies under test, each started as its own process on a free loopback port with a
// temporary config, and stopped by the bench: squid, tinyproxy, node-floor (the thinnest Node
// proxy, bench/peers/node-floor.mjs) and Portcullis. "direct" is the no-proxy baseline. Every
// target has the same shape:
//   { name, pid, port, host, auth, stop() }
// `host` is how requests through it name the origin; `auth` the Proxy-Authorization value.
import { execFileSync } from 'node:child_process';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, startProcess, waitForPort } from './procs.mjs';
import { benchPolicy } from './policy.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PEERS = path.join(HERE, '..', 'peers');
export const REPO = path.join(HERE, '..', '..');

/** The first of `names` found on PATH (or as an absolute path), else null. */
export function findBinary(...names) {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin', '/sbin']);
  for (const n of names) {
    if (n.startsWith('/') && existsSync(n)) return n;
    for (const d of dirs) if (d && existsSync(path.join(d, n))) return path.join(d, n);
  }
  return null;
}

function fill(template, fields) {
  return readFileSync(path.join(PEERS, template), 'utf8').replace(/\{\{(\w+)\}\}/g, (_m, k) => String(fields[k]));
}

/** No proxy: clients talk to the origin at 127.0.0.1 directly. */
export function directTarget() {
  return { name: 'direct', pid: null, port: null, host: '127.0.0.1', auth: null, stop: async () => undefined };
}

/** squid -N (one process, no daemon, no kids) with bench/peers/squid.conf; { skipped } with the reason when it cannot run. */
export async function startSquid(dir, originHost, instance = 'squid') {
  const bin = findBinary('squid');
  if (bin === null) return { skipped: 'squid not installed (apt-get install squid)' };
  const d = path.join(dir, instance);
  mkdirSync(d, { recursive: true });
  // Squid drops root for the "proxy" user: its directory must be reachable and writable by it.
  chmodSync(dir, 0o711);
  chmodSync(d, 0o777);
  const port = await freePort();
  writeFileSync(path.join(d, 'hosts'), `127.0.0.1 ${originHost}\n`);
  writeFileSync(path.join(d, 'squid.conf'), fill('squid.conf', { PORT: port, DIR: d }));
  const p = startProcess(bin, ['-N', '-f', path.join(d, 'squid.conf')]);
  try {
    await waitForPort(port, 20_000, () => p.alive);
  } catch (err) {
    await p.stop(2000);
    return { skipped: `squid did not start: ${err.message}; ${p.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  }
  return { name: 'squid', pid: p.pid, port, host: originHost, auth: null, version: version(bin, ['-v']), logFile: path.join(d, 'access.log'), stop: () => p.stop(10_000) };
}

/** tinyproxy -d with bench/peers/tinyproxy.conf; it resolves via /etc/hosts, so it gets the IP. { skipped } when it cannot run. */
export async function startTinyproxy(dir, instance = 'tinyproxy') {
  const bin = findBinary('tinyproxy');
  if (bin === null) return { skipped: 'tinyproxy not installed (apt-get install tinyproxy)' };
  const d = path.join(dir, instance);
  mkdirSync(d, { recursive: true });
  chmodSync(dir, 0o711);
  chmodSync(d, 0o777);
  const port = await freePort();
  writeFileSync(path.join(d, 'tinyproxy.conf'), fill('tinyproxy.conf', { PORT: port, DIR: d }));
  const p = startProcess(bin, ['-d', '-c', path.join(d, 'tinyproxy.conf')]);
  try {
    await waitForPort(port, 10_000, () => p.alive);
  } catch (err) {
    await p.stop(2000);
    return { skipped: `tinyproxy did not start: ${err.message}; ${p.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  }
  return { name: 'tinyproxy', pid: p.pid, port, host: '127.0.0.1', auth: null, version: version(bin, ['-v']), logFile: path.join(d, 'tinyproxy.log'), stop: () => p.stop(10_000) };
}

/**
 * `node bench/peers/node-floor.mjs`: a bare Node forwarding proxy (undici pools, net tunnels, no
 * policy, auth, logs or metrics), the floor under Portcullis' costs. Given 127.0.0.1 as the
 * origin's host (no DNS). `nodeArgs` go before the script (e.g. --inspect-port for the RSS
 * figures after a full GC); `workers` > 1 runs it under node:cluster. { skipped } when it cannot
 * start.
 */
export async function startNodeFloor(dir, { nodeArgs = [], instance = 'node-floor', workers = 1 } = {}) {
  const d = path.join(dir, instance);
  mkdirSync(d, { recursive: true });
  // stdin stays open: the script exits when it closes (the bench died) or on SIGTERM (stop()).
  const env = { ...process.env, NODE_FLOOR_WORKERS: String(workers) };
  const p = startProcess(process.execPath, [...nodeArgs, path.join(PEERS, 'node-floor.mjs')], { stdio: ['pipe', 'pipe', 'pipe'], cwd: d, env });
  let banner;
  try {
    banner = await firstLine(p.child.stdout, 10_000);
  } catch (err) {
    await p.stop(2000);
    return { skipped: `node-floor did not start: ${err.message}; ${p.stderr.trim().split('\n').slice(-3).join(' | ')}` };
  }
  return {
    name: 'node-floor',
    pid: p.pid,
    port: banner.port,
    host: '127.0.0.1',
    auth: null,
    version: `node ${banner.node}, undici ${banner.undici}${banner.workers > 1 ? `, ${banner.workers} cluster workers` : ''}`,
    workers: banner.workers,
    process: p,
    stop: () => p.stop(5000),
  };
}

/** The first line of `stream`, parsed as JSON; rejects when the stream ends first or after `timeoutMs`. */
function firstLine(stream, timeoutMs) {
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => done(new Error(`no port line after ${timeoutMs} ms`)), timeoutMs);
    const onData = (chunk) => {
      out += chunk;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      try {
        done(null, JSON.parse(out.slice(0, nl)));
      } catch (err) {
        done(err);
      }
    };
    const onEnd = () => done(new Error('the process exited before printing its port'));
    function done(err, value) {
      clearTimeout(timer);
      stream.removeListener('data', onData);
      stream.removeListener('end', onEnd);
      // Nothing more is printed; keep the pipe drained all the same.
      stream.resume();
      if (err) reject(err);
      else resolve(value);
    }
    stream.setEncoding('utf8');
    stream.on('data', onData);
    stream.once('end', onEnd);
  });
}

function version(bin, args) {
  try {
    return execFileSync(bin, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0].trim();
  } catch {
    return null;
  }
}

/**
 * `node dist/cli.js serve` with a file store, the bench policy, authentication (a session made
 * through the admin API), info logs to a file and the bench DNS server as resolver.
 * `nodeArgs` go before the script (e.g. --cpu-prof). NODE_ENV=production, as in the image: the
 * metrics' strict label checks are a development aid.
 */
export async function startPortcullis(
  dir,
  { originHost, originPorts, dns, account = 'bench-agent', cli = path.join(REPO, 'dist', 'cli.js'), nodeArgs = [], extraFlags = [], logLevel = 'info', instance = 'portcullis' },
) {
  if (!existsSync(cli)) return { skipped: `${cli} not found: run npx tsc -p . first` };
  const d = path.join(dir, instance);
  // The policy sits in a directory of its own, as it would in /etc: the reloader watches that
  // directory, and log or store writes next to it would wake the watcher on every write.
  mkdirSync(path.join(d, 'etc'), { recursive: true });
  const policyFile = path.join(d, 'etc', 'policy.yaml');
  writeFileSync(policyFile, benchPolicy({ originHost, ports: originPorts, account }));
  const logFile = path.join(d, 'portcullis.log');
  const logFd = openSync(logFile, 'a');
  let banner = '';
  const p = startProcess(process.execPath, [
    ...nodeArgs, cli, 'serve',
    '--policy', policyFile,
    '--listen', '127.0.0.1:0',
    '--admin-listen', '127.0.0.1:0',
    '--store', `file:${path.join(d, 'state.json')}`,
    '--admin-token-file', path.join(d, 'admin-tokens.json'),
    '--ca-dir', path.join(d, 'ca'),
    '--resolver', dns,
    '--log-level', logLevel,
    '--drain-timeout-ms', '1000',
    ...extraFlags,
  ], { stdio: ['ignore', logFd, 'pipe'], cwd: d, env: { ...process.env, NODE_ENV: 'production' }, onStderr: (s) => (banner += s) });
  closeSync(logFd);
  const deadline = Date.now() + 20_000;
  let m = null;
  while (m === null) {
    m = /listening on http:\/\/127\.0\.0\.1:(\d+), admin API on (?:http:\/\/)?([\d.]+:\d+)/.exec(banner);
    if (m !== null) break;
    if (!p.alive || Date.now() > deadline) {
      await p.stop(2000);
      return { skipped: `portcullis did not start: ${banner.trim().split('\n').slice(-5).join(' | ')}` };
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  const port = Number(m[1]);
  const adminUrl = `http://${m[2]}`;
  const adminToken = readFileSync(path.join(d, 'admin.token'), 'utf8').trim();
  const res = await fetch(`${adminUrl}/v1/accounts/${account}/sessions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ app: 'portcullis-bench' }),
  });
  if (res.status !== 201) {
    await p.stop(2000);
    return { skipped: `portcullis session create failed: ${res.status} ${await res.text()}` };
  }
  const { token } = await res.json();
  const auth = `Basic ${Buffer.from(`${account}:${token}`).toString('base64')}`;
  /** The admin /metrics text (Prometheus format). */
  const metrics = async () => (await fetch(`${adminUrl}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
  /** Heap figures and gauges from /metrics (prom-client default metrics), bytes and counts. */
  const heap = async () => {
    try {
      const text = await metrics();
      const get = (name) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([\\d.e+]+)$`, 'm').exec(text)?.[1] ?? NaN);
      let requests = 0;
      for (const m of text.matchAll(/^portcullis_requests_total\{[^}]*\} (\d+)/gm)) requests += Number(m[1]);
      return {
        heapUsed: get('portcullis_nodejs_heap_size_used_bytes'),
        heapTotal: get('portcullis_nodejs_heap_size_total_bytes'),
        external: get('portcullis_nodejs_external_memory_bytes'),
        activeTunnels: get('portcullis_active_tunnels'),
        activeConnections: get('portcullis_active_connections'),
        requests,
      };
    } catch {
      return null;
    }
  };
  return { name: 'portcullis', pid: p.pid, port, host: originHost, auth, adminUrl, logFile, heap, metrics, process: p, stop: () => p.stop(15_000) };
}
