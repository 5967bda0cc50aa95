// Node clients for the tunnel workloads: CONNECT + TLS handshake setup rate, bulk bytes through
// one tunnel, and many idle tunnels (for RSS). Direct targets skip the CONNECT and dial the
// origin. All sockets are loopback and every loop is bounded by time or count.
import net from 'node:net';
import tls from 'node:tls';
import { percentile } from './stats.mjs';

/**
 * Opens a tunnel through `target` to `host:port` (a plain TCP connection for direct) and
 * resolves with the socket once the proxy answered 200.
 */
export function openTunnel(target, port, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    if (target.port === null) {
      const s = net.connect({ host: '127.0.0.1', port, noDelay: true }, () => {
        s.removeListener('error', reject);
        resolve(s);
      });
      s.once('error', reject);
      return;
    }
    const s = net.connect({ host: '127.0.0.1', port: target.port, noDelay: true });
    const timer = setTimeout(() => s.destroy(new Error('CONNECT timeout')), timeoutMs);
    let head = '';
    const fail = (err) => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    s.once('error', fail);
    s.once('connect', () => {
      const authority = `${target.host}:${port}`;
      s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${target.auth ? `Proxy-Authorization: ${target.auth}\r\n` : ''}\r\n`);
    });
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > 8192) fail(new Error('CONNECT response head too long'));
        return;
      }
      clearTimeout(timer);
      s.removeListener('data', onData);
      s.removeListener('error', fail);
      s.pause();
      if (!/^HTTP\/1\.[01] 200/.test(head)) {
        s.destroy();
        return reject(new Error(`CONNECT refused: ${head.split('\r\n')[0]}`));
      }
      if (end + 4 < head.length) s.unshift(Buffer.from(head.slice(end + 4), 'latin1'));
      resolve(s);
    };
    s.on('data', onData);
  });
}

// One client context per CA: passing `ca` to every tls.connect would parse the PEM and build a
// new context per handshake, which costs more than the handshake itself.
const contexts = new Map();

/** TLS client handshake over `socket` with SNI, verified against `ca`; resolves with the TLS socket. */
function handshake(socket, servername, ca) {
  let secureContext = contexts.get(ca);
  if (secureContext === undefined) contexts.set(ca, (secureContext = tls.createSecureContext({ ca })));
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, servername, secureContext, ALPNProtocols: ['http/1.1'] }, () => {
      t.removeListener('error', reject);
      resolve(t);
    });
    t.once('error', reject);
  });
}

/**
 * Tunnel setup rate: `concurrency` loops, each CONNECT → 200 → TLS handshake (SNI, verified
 * against `ca`) → close, for `durationMs`. Returns { perSecond, p50Ms, p99Ms, errors, firstError }.
 */
export async function tunnelSetupRate({ target, port, servername, ca, concurrency, durationMs }) {
  const stopAt = performance.now() + durationMs;
  let done = 0;
  let errors = 0;
  let firstError = null;
  const latencies = [];
  const loop = async () => {
    while (performance.now() < stopAt) {
      const t0 = performance.now();
      try {
        const raw = await openTunnel(target, port);
        const t = await handshake(raw, servername, ca);
        latencies.push(performance.now() - t0);
        done++;
        t.destroy();
      } catch (err) {
        errors++;
        firstError ??= err.message;
        // Back off a little so a refusing target does not spin the loop.
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: concurrency }, loop));
  const seconds = (performance.now() - started) / 1000;
  return { perSecond: done / seconds, p50Ms: percentile(latencies, 50), p99Ms: percentile(latencies, 99), count: done, errors, firstError };
}

/**
 * A real TLS ClientHello for `servername`, captured from node:tls against a throwaway listener:
 * the bulk workload sends it first so Portcullis takes its normal SNI-checked path, while the
 * bytes that follow stay plain (so the figure is the proxy's relay, not the endpoints' crypto).
 */
export async function captureClientHello(servername) {
  const server = net.createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    return await new Promise((resolve, reject) => {
      server.once('connection', (s) => {
        s.once('data', (chunk) => {
          resolve(chunk);
          s.destroy();
        });
      });
      const c = tls.connect({ host: '127.0.0.1', port: server.address().port, servername, rejectUnauthorized: false });
      c.on('error', () => undefined);
      setTimeout(() => reject(new Error('no ClientHello captured')), 5000).unref();
    });
  } finally {
    server.close();
  }
}

/**
 * Bulk: one tunnel to the bulk origin, send `hello`, read `bytes` until the origin closes.
 * Returns { mbPerSecond (10^6 B/s), bytes, seconds }.
 */
export async function bulkThroughTunnel({ target, port, hello, bytes }) {
  const s = await openTunnel(target, port);
  return new Promise((resolve, reject) => {
    let got = 0;
    const t0 = performance.now();
    const timer = setTimeout(() => s.destroy(new Error('bulk transfer timeout')), 120_000);
    s.on('data', (c) => {
      got += c.length;
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.once('end', () => {
      clearTimeout(timer);
      const seconds = (performance.now() - t0) / 1000;
      s.destroy();
      if (got !== bytes) return reject(new Error(`bulk: received ${got} of ${bytes} bytes`));
      resolve({ mbPerSecond: got / seconds / 1e6, bytes: got, seconds });
    });
    s.resume();
    s.write(hello);
  });
}

/**
 * Opens `count` tunnels with a completed TLS handshake each and leaves them idle. Returns
 * { sockets, errors, firstError, close() }.
 */
export async function openIdleTunnels({ target, port, servername, ca, count, concurrency = 50 }) {
  const sockets = [];
  let errors = 0;
  let firstError = null;
  let next = 0;
  const loop = async () => {
    while (next < count) {
      next++;
      try {
        const t = await handshake(await openTunnel(target, port), servername, ca);
        t.on('error', () => undefined);
        sockets.push(t);
      } catch (err) {
        errors++;
        firstError ??= err.message;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  return {
    sockets,
    errors,
    firstError,
    close: async () => {
      await Promise.all(sockets.map((s) => new Promise((r) => {
        if (s.destroyed) return r();
        s.once('close', r);
        s.destroy();
      })));
    },
  };
}
