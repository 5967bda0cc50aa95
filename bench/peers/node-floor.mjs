// The proxy benchmark's "node-floor" target: the thinnest forwarding proxy that can be built
// from the platform pieces Portcullis uses (node:http server, undici Pool with a dispatch
// handler, node:net tunnels), with no policy, authentication, logging or metrics. What it costs
// is what Node itself costs; Portcullis minus node-floor is Portcullis' own share.
//   plain HTTP  absolute-form `GET http://host:port/path`: one undici Pool per origin (settings
//               as in src/proxy/upstreams.ts), the response written straight into the
//               ServerResponse as in src/proxy/server.ts #forward; hop-by-hop headers stripped
//   CONNECT     dial host:port, answer 200, relay both ways with backpressure (the pump of
//               src/proxy/tunnel.ts); no SNI peek
// No DNS is meant to happen: the bench gives it 127.0.0.1 as the origin's host.
// `node bench/peers/node-floor.mjs` listens on 127.0.0.1:0 and prints {"port":N,"node":…,
// "undici":…,"workers":N} on stdout; exits when stdin closes or on SIGTERM. NODE_FLOOR_WORKERS=N
// runs it as N node:cluster workers (what `--workers` would buy Portcullis on this machine).
import cluster from 'node:cluster';
import http from 'node:http';
import { createRequire } from 'node:module';
import net from 'node:net';
import { Pool } from 'undici';

const UNDICI_VERSION = createRequire(import.meta.url)('undici/package.json').version;

// Portcullis' defaults: src/proxy/upstreams.ts and the config's idle timeout (300 s).
const UPSTREAM_IDLE_MS = 300_000;
const ESTABLISHED = 'HTTP/1.1 200 Connection established\r\n\r\n';
/** Worker processes (NODE_FLOOR_WORKERS, default 1): more than one runs the floor under node:cluster. */
const WORKERS = Math.max(1, Number(process.env.NODE_FLOOR_WORKERS ?? 1) || 1);

/** Hop-by-hop and proxy-only headers, never forwarded. `expect` too: Node has already answered 100-continue, and undici refuses the header. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'expect']);

const pools = new Map();

/** The pool of one origin (`http://host:port`), created on first use, as Portcullis configures it. */
function poolFor(origin) {
  let pool = pools.get(origin);
  if (pool === undefined) {
    pool = new Pool(origin, {
      connections: 64,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      keepAliveMaxTimeout: 30_000,
      headersTimeout: UPSTREAM_IDLE_MS,
      bodyTimeout: UPSTREAM_IDLE_MS,
      connect: { timeout: 10_000, noDelay: true, keepAlive: true },
    });
    pools.set(origin, pool);
  }
  return pool;
}

/** Request headers for upstream from Node's raw list, hop-by-hop ones dropped. */
function requestHeaders(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) if (!HOP_BY_HOP.has(raw[i].toLowerCase())) out.push(raw[i], raw[i + 1]);
  return out;
}

/** Response headers for the client, lower-case names, hop-by-hop ones dropped. */
function responseHeaders(headers) {
  const out = {};
  for (const name in headers) {
    const lower = name.toLowerCase();
    if (!HOP_BY_HOP.has(lower)) out[lower] = headers[name];
  }
  return out;
}

/** Answers a request the floor cannot forward, and closes the connection. */
function fail(res, status) {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'text/plain', connection: 'close' });
  res.end(`${status}\n`);
}

/** Plain HTTP: `http://authority/path` → the origin's pool, the response written straight back. */
function onRequest(req, res) {
  const url = req.url ?? '';
  if (!url.startsWith('http://')) return fail(res, 400);
  const slash = url.indexOf('/', 7);
  let pool;
  try {
    pool = poolFor(slash < 0 ? url : url.slice(0, slash));
  } catch {
    return fail(res, 400);
  }
  const hasBody = req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
  let controller = null;
  res.once('close', () => {
    if (!res.writableFinished) controller?.abort(new Error('client closed the connection'));
  });
  res.on('drain', () => controller?.resume());
  pool.dispatch(
    { method: req.method, path: slash < 0 ? '/' : url.slice(slash), headers: requestHeaders(req.rawHeaders), body: hasBody ? req : null },
    {
      onRequestStart: (c) => {
        controller = c;
        if (res.destroyed) c.abort(new Error('client closed the connection'));
      },
      onResponseStart: (_c, statusCode, headers) => {
        // 1xx answers stay here (Node has answered 100-continue itself).
        if (statusCode < 200) return;
        res.writeHead(statusCode, responseHeaders(headers));
      },
      onResponseData: (c, chunk) => {
        if (!res.write(chunk)) c.pause();
      },
      onResponseEnd: () => res.end(),
      onResponseError: () => {
        if (!res.destroyed) fail(res, 502);
      },
    },
  );
}

/** Relays one direction with backpressure; `end` is passed on (half-close). */
function pump(from, to) {
  from.on('data', (chunk) => {
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.once('end', () => to.end());
  from.resume();
}

/** CONNECT host:port: dial, answer 200, replay `head`, relay until either side closes. */
function onConnect(req, client, head) {
  const authority = req.url ?? '';
  const colon = authority.lastIndexOf(':');
  const host = authority.slice(0, colon).replace(/^\[(.*)\]$/, '$1');
  const port = Number(authority.slice(colon + 1));
  client.on('error', () => client.destroy());
  if (colon < 0 || !Number.isInteger(port) || port <= 0 || port > 65535) return void client.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  const upstream = net.connect({ host, port, noDelay: true, keepAlive: true });
  let established = false;
  const close = () => {
    client.destroy();
    upstream.destroy();
  };
  // A client that leaves during the dial aborts it.
  client.once('close', close);
  upstream.on('error', () => {
    if (established) return close();
    client.end('HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\n\r\n');
    upstream.destroy();
  });
  upstream.once('connect', () => {
    established = true;
    upstream.once('close', close);
    client.setNoDelay(true);
    client.write(ESTABLISHED);
    if (head.length > 0) upstream.write(head);
    pump(client, upstream);
    pump(upstream, client);
  });
}

// As in src/proxy/server.ts: no delay, 5 s client keep-alive, no whole-request timer.
const server = http.createServer({ noDelay: true, keepAliveTimeout: 5_000, requestTimeout: 0 });
server.on('request', onRequest);
server.on('connect', onConnect);
server.on('error', (err) => {
  console.error(err);
  process.exit(1);
});
const banner = (port) => process.stdout.write(JSON.stringify({ port, node: process.version, undici: UNDICI_VERSION, workers: WORKERS }) + '\n');
const stop = () => process.exit(0);

if (WORKERS > 1 && cluster.isPrimary) {
  // node:cluster: the primary owns the listening socket and hands connections to the workers
  // (round-robin); every worker listens on port 0 and so shares the primary's one port.
  const workers = Array.from({ length: WORKERS }, () => cluster.fork());
  let listening = 0;
  cluster.on('listening', (_worker, address) => {
    if (++listening === WORKERS) banner(address.port);
  });
  cluster.on('exit', (_worker, code) => {
    if (code !== 0) process.exit(1);
  });
  const stopAll = () => {
    for (const w of workers) w.process.kill();
    process.exit(0);
  };
  process.on('SIGTERM', stopAll);
  process.stdin.on('end', stopAll);
  process.stdin.on('close', stopAll);
  process.stdin.resume();
} else {
  server.listen({ host: '127.0.0.1', port: 0 }, () => {
    if (cluster.isPrimary) banner(server.address().port);
  });
  process.on('SIGTERM', stop);
  if (cluster.isPrimary) {
    process.stdin.on('end', stop);
    process.stdin.on('close', stop);
    process.stdin.resume();
  }
}
