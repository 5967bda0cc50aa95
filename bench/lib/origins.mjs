// The benchmark's origins, run as their own process so they never share an event loop with a
// proxy or with the load generators: `node bench/lib/origins.mjs CERT KEY BULK_BYTES`.
//   http  — HTTP/1.1 keep-alive, a small fixed response to every request;
//   tls   — TLS server (the CONNECT target): completes handshakes, then idles until closed;
//   bulk  — raw TCP: after the client's first bytes (a ClientHello through a tunnel), sends
//           BULK_BYTES and closes.
// Prints {"http":PORT,"tls":PORT,"bulk":PORT} on stdout; exits when stdin closes or on SIGTERM.
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';

const [certFile, keyFile, bulkArg] = process.argv.slice(2);
const bulkBytes = Number(bulkArg ?? 256 * 1024 * 1024);
const BODY = Buffer.from(JSON.stringify({ id: 42, name: 'item', tags: ['a', 'b'], ok: true }) + '\n');
const CHUNK = Buffer.alloc(1 << 20, 0x61);

const httpServer = http.createServer({ keepAliveTimeout: 120_000, requestTimeout: 0, headersTimeout: 60_000 }, (req, res) => {
  req.resume();
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length, 'cache-control': 'no-store' });
  res.end(BODY);
});
httpServer.keepAliveTimeout = 120_000;

const tlsServer = tls.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), ALPNProtocols: ['http/1.1'] }, (socket) => {
  socket.on('error', () => socket.destroy());
  socket.resume();
});
tlsServer.on('tlsClientError', () => undefined);

const bulkServer = net.createServer((socket) => {
  socket.on('error', () => socket.destroy());
  socket.once('data', () => {
    socket.resume();
    let left = bulkBytes;
    const pump = () => {
      while (left > 0) {
        const n = Math.min(left, CHUNK.length);
        left -= n;
        if (!socket.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void socket.once('drain', pump);
      }
      socket.end();
    };
    pump();
  });
});

for (const s of [httpServer, tlsServer, bulkServer]) s.on('error', (err) => { console.error(err); process.exit(1); });
await Promise.all([httpServer, tlsServer, bulkServer].map((s) => new Promise((resolve) => s.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, resolve))));
process.stdout.write(JSON.stringify({ http: httpServer.address().port, tls: tlsServer.address().port, bulk: bulkServer.address().port }) + '\n');

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.on('close', stop);
process.stdin.resume();
