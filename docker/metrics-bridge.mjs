#!/usr/bin/env node
/**
 * Read-only TCP bridge to an admin unix socket, for the sidecar pattern: the admin API stays on a
 * socket that only the proxy's user can open (mode 0600, in a volume the agent does not mount),
 * and Prometheus still scrapes /metrics over TCP. Only GET /metrics, /healthz and /readyz are
 * passed on; every other method or path is answered 404 here and never reaches the socket.
 *
 *   node metrics-bridge.mjs --socket /run/portcullis/admin.sock [--listen 0.0.0.0:9090]
 *
 * Run it as the proxy's user (it must open the 0600 socket). In the sidecar pod the agent cannot
 * reach this port: the iptables rules let the agent's user open only the proxy port on loopback.
 * SIGTERM/SIGINT close the listener and exit.
 */
import { createServer, request } from 'node:http';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

/** The only paths passed on to the admin socket. */
export const BRIDGED_PATHS = new Set(['/metrics', '/healthz', '/readyz']);

// Request headers passed on: content negotiation for /metrics, and a token if --metrics-auth is on.
const FORWARDED_HEADERS = ['accept', 'authorization'];
const UPSTREAM_TIMEOUT_MS = 10_000;
// Hop-by-hop headers describe the socket connection, not the answer; node frames our side itself.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);

/** A bridge server (not yet listening) to the admin API on `socketPath`. */
export function createBridge(socketPath) {
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !BRIDGED_PATHS.has(path)) {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('not bridged: only GET /metrics, /healthz and /readyz\n');
      return;
    }
    const headers = {};
    for (const name of FORWARDED_HEADERS) if (req.headers[name] !== undefined) headers[name] = req.headers[name];
    const upstream = request({ socketPath, path, method: req.method, headers, timeout: UPSTREAM_TIMEOUT_MS }, (up) => {
      const out = {};
      for (const [name, value] of Object.entries(up.headers)) if (!HOP_BY_HOP.has(name)) out[name] = value;
      res.writeHead(up.statusCode ?? 502, out);
      up.pipe(res);
    });
    upstream.on('timeout', () => upstream.destroy(new Error('admin socket timed out')));
    upstream.on('error', (err) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      res.writeHead(502, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`admin socket unavailable: ${err.message}\n`);
    });
    upstream.end();
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  return server;
}

/** "HOST:PORT", "[IPV6]:PORT" or ":PORT" → listen options. */
export function parseListen(text) {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  if (m === null || Number(m[3]) > 65535) throw new Error(`--listen: expected HOST:PORT, got ${JSON.stringify(text)}`);
  const host = m[1] ?? m[2] ?? '';
  return { host: host === '' ? '::' : host, port: Number(m[3]) };
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (isMain) {
  const { values } = parseArgs({ options: { socket: { type: 'string' }, listen: { type: 'string', default: '0.0.0.0:9090' } } });
  if (values.socket === undefined) {
    process.stderr.write('usage: metrics-bridge.mjs --socket /run/portcullis/admin.sock [--listen 0.0.0.0:9090]\n');
    process.exit(2);
  }
  const { host, port } = parseListen(values.listen);
  const server = createBridge(values.socket);
  server.listen(port, host, () => {
    process.stderr.write(`metrics-bridge: ${host}:${port} → unix:${values.socket} (GET /metrics, /healthz, /readyz)\n`);
  });
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      server.close();
      server.closeAllConnections();
    });
  }
}
