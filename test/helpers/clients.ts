/**
 * Test clients for the proxy: curl, raw sockets, hand-made CONNECT tunnels (optionally with the
 * ClientHello inside the CONNECT's own write, or dribbled one byte at a time), plain requests
 * through the proxy, metrics scrapes and small waiting helpers. Every socket goes to loopback.
 */
import { execFile } from 'node:child_process';
import http, { type IncomingHttpHeaders } from 'node:http';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/** `Basic base64(account:token)`. */
export function basic(account: string, token: string): string {
  return `Basic ${Buffer.from(`${account}:${token}`).toString('base64')}`;
}

/** A parsed curl result: the last response block (after CONNECT, 100 and answered 407 blocks). */
export interface CurlResult {
  status: number;
  headers: Record<string, string>;
  body: string;
  /** Every status line curl printed, in order (the CONNECT response included). */
  statuses: number[];
}

/** curl with no proxy environment and no config file; never follows redirects. */
export async function curl(args: readonly string[]): Promise<CurlResult> {
  const { stdout } = await execFileP('curl', ['-q', '-s', '-i', '--max-time', '10', '--noproxy', '', ...args], {
    env: { PATH: process.env.PATH ?? '' },
    maxBuffer: 16 << 20,
  });
  const statuses = [...stdout.matchAll(/(?:^|\r\n)HTTP\/[\d.]+ (\d{3})/g)].map((m) => Number(m[1]));
  const blocks = stdout.split(/\r\n\r\n/);
  let i = 0;
  while (i < blocks.length - 1 && /^HTTP\/[\d.]+ \d{3}/.test(blocks[i + 1]!)) i++;
  const [head, ...rest] = blocks.slice(i);
  const [statusLine, ...lines] = head!.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body: rest.join('\r\n\r\n'), statuses };
}

/** Writes raw bytes to the proxy port; resolves with everything read until close or `waitMs`. */
export function raw(port: number, payload: string | Buffer, waitMs = 1500): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve(out));
    s.write(payload);
    setTimeout(() => {
      s.destroy();
      resolve(out);
    }, waitMs).unref();
  });
}

/** The proxy's answer to a CONNECT, and the socket (paused, bytes after the head unshifted). */
export interface ConnectResult {
  socket: net.Socket;
  status: number;
  headers: Record<string, string>;
  /** The response body of a refusal (read to the end); empty for 200. */
  body: string;
}

/** Parses "HTTP/1.1 200 ...\r\nk: v\r\n" into status and lower-case headers. */
function parseHead(head: string): { status: number; headers: Record<string, string> } {
  const [statusLine, ...lines] = head.split('\r\n');
  const headers: Record<string, string> = {};
  for (const l of lines) {
    const c = l.indexOf(':');
    if (c > 0) headers[l.slice(0, c).toLowerCase()] = l.slice(c + 1).trim();
  }
  return { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '')?.[1] ?? 0), headers };
}

/** Options of openConnect. */
export interface ConnectOptions {
  /** Proxy-Authorization value (see basic()). */
  auth?: string;
  /** Bytes sent in the same write as the CONNECT head. */
  head?: Buffer;
  /** TLS to the proxy listener itself (an https:// proxy), trusting this CA. */
  proxyCa?: string;
}

/** Opens `CONNECT authority` on the proxy and reads its answer. */
export function openConnect(port: number, authority: string, o: ConnectOptions = {}): Promise<ConnectResult> {
  return new Promise((resolve, reject) => {
    const socket: net.Socket = o.proxyCa
      ? tls.connect({ host: '127.0.0.1', port, ca: o.proxyCa })
      : net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let parsed: { status: number; headers: Record<string, string>; rest: Buffer } | null = null;
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (parsed !== null) return;
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const { status, headers } = parseHead(buf.subarray(0, end).toString('latin1'));
      parsed = { status, headers, rest: buf.subarray(end + 4) };
      if (status === 200) {
        socket.off('data', onData);
        socket.off('error', reject);
        socket.pause();
        if (parsed.rest.length > 0) socket.unshift(parsed.rest);
        resolve({ socket, status, headers, body: '' });
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
    socket.once('close', () => {
      if (parsed === null) return reject(new Error(`proxy closed before answering CONNECT ${authority}: ${buf.toString('latin1')}`));
      if (parsed.status !== 200) {
        const end = buf.indexOf('\r\n\r\n');
        resolve({ socket, status: parsed.status, headers: parsed.headers, body: buf.subarray(end + 4).toString('utf8') });
      }
    });
    const authLine = o.auth ? `Proxy-Authorization: ${o.auth}\r\n` : '';
    const head = Buffer.from(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${authLine}\r\n`, 'latin1');
    socket.write(o.head ? Buffer.concat([head, o.head]) : head);
  });
}

/** Resolves with the milliseconds from now until the socket closes (rejects after `timeoutMs`). */
export function closedWithin(socket: net.Socket, timeoutMs = 3000): Promise<number> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    if (socket.destroyed) return resolve(0);
    const t = setTimeout(() => reject(new Error(`socket still open after ${timeoutMs} ms`)), timeoutMs);
    socket.once('close', () => {
      clearTimeout(t);
      resolve(performance.now() - start);
    });
    socket.on('error', () => undefined);
    // A paused socket may not notice the peer's FIN; read (and drop) to see it.
    socket.resume();
  });
}

/**
 * A Duplex that hands TLS (or anything) a transport whose FIRST write is sent in `piece`-byte
 * writes, `delayMs` apart: a ClientHello arriving in tiny TCP segments.
 */
export function dribbleFirstWrite(inner: net.Socket, piece = 1, delayMs = 1): Duplex {
  let first = true;
  const d = new Duplex({
    read() {
      inner.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (!first) return void inner.write(chunk, cb);
      first = false;
      void (async () => {
        for (let i = 0; i < chunk.length; i += piece) {
          inner.write(chunk.subarray(i, i + piece));
          await new Promise((r) => setTimeout(r, delayMs));
        }
        cb();
      })();
    },
    final(cb) {
      inner.end(cb);
    },
    destroy(err, cb) {
      inner.destroy();
      cb(err);
    },
  });
  inner.on('data', (c: Buffer) => {
    if (!d.push(c)) inner.pause();
  });
  inner.on('end', () => d.push(null));
  inner.on('close', () => d.destroy());
  inner.on('error', () => undefined);
  return d;
}

/**
 * A transport that opens `CONNECT authority` only on the first write and sends the CONNECT head
 * and that first write (a ClientHello) as ONE write, so the proxy finds the hello in the
 * CONNECT's `head`. The proxy's 200 is stripped from what the caller reads.
 */
export function connectWithFirstWrite(port: number, authority: string, auth: string): Duplex & { connectStatus: () => number } {
  let inner: net.Socket | null = null;
  let status = 0;
  let headDone = false;
  let pending = Buffer.alloc(0);
  const d = new Duplex({
    read() {
      inner?.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      if (inner !== null) return void inner.write(chunk, cb);
      const s = net.connect(port, '127.0.0.1');
      inner = s;
      s.setNoDelay(true);
      s.on('error', () => undefined);
      s.on('data', (c: Buffer) => {
        if (!headDone) {
          pending = Buffer.concat([pending, c]);
          const end = pending.indexOf('\r\n\r\n');
          if (end === -1) return;
          headDone = true;
          status = parseHead(pending.subarray(0, end).toString('latin1')).status;
          c = pending.subarray(end + 4);
          if (status !== 200) return void d.destroy(new Error(`CONNECT answered ${status}`));
          if (c.length === 0) return;
        }
        if (!d.push(c)) s.pause();
      });
      s.on('end', () => d.push(null));
      s.on('close', () => d.destroy());
      const head = `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\nProxy-Authorization: ${auth}\r\n\r\n`;
      s.once('connect', () => s.write(Buffer.concat([Buffer.from(head, 'latin1'), chunk]), cb));
    },
    final(cb) {
      if (inner === null) return cb();
      inner.end(cb);
    },
    destroy(err, cb) {
      inner?.destroy();
      cb(err);
    },
  });
  return Object.assign(d, { connectStatus: () => status });
}

/** Sends one HTTP/1.0 request (no chunking, closes after) over a stream; reads the response until close. */
export function requestOver(stream: Duplex, host: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    let out = '';
    stream.on('data', (c: Buffer) => (out += c.toString('utf8')));
    stream.once('error', reject);
    stream.once('end', () => {
      const end = out.indexOf('\r\n\r\n');
      resolve({ status: parseHead(out.slice(0, end)).status, body: out.slice(end + 4) });
    });
    stream.write(`GET ${path} HTTP/1.0\r\nHost: ${host}\r\n\r\n`);
    // openConnect hands sockets over paused; a 'data' listener alone does not resume them.
    stream.resume();
  });
}

/** The result of a plain request through the proxy. */
export interface ProxyResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** An absolute-form request through the proxy (node:http, connection not reused). */
export function proxyRequest(
  port: number,
  url: string,
  o: { auth?: string; method?: string; body?: string; agent?: http.Agent } = {},
): Promise<ProxyResponse> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = http.request({
      host: '127.0.0.1',
      port,
      method: o.method ?? 'GET',
      path: url,
      agent: o.agent ?? false,
      headers: { host: u.host, ...(o.auth ? { 'proxy-authorization': o.auth } : {}) },
    });
    req.once('error', reject);
    req.once('response', (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      res.once('error', reject);
    });
    req.end(o.body);
  });
}

/** Polls `check` until it returns true (or throws after `timeoutMs`). */
export async function waitFor(check: () => boolean | Promise<boolean>, timeoutMs = 2000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** One sample value from the admin listener's /metrics (first series whose labels contain `labels`). */
export async function scrapeMetric(adminUrl: string, name: string, labels = ''): Promise<number | undefined> {
  const text = await (await fetch(`${adminUrl}/metrics`)).text();
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    if (labels !== '' && !rest.includes(labels)) continue;
    return Number(rest.slice(rest.lastIndexOf(' ') + 1));
  }
  return undefined;
}

/** A TCP server on 127.0.0.1 (port 0) that records connections and runs `onSocket` for each. */
export interface TcpServer {
  readonly port: number;
  readonly server: net.Server;
  accepted: number;
  received: number;
  close(): Promise<void>;
}

/** Starts a TCP server; the default behaviour echoes every byte back. */
export async function startTcpServer(onSocket?: (s: net.Socket) => void, host = '127.0.0.1', port = 0): Promise<TcpServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer();
  const t: TcpServer = {
    port: 0,
    server,
    accepted: 0,
    received: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (s) => {
    t.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    s.on('data', (c: Buffer) => (t.received += c.length));
    if (onSocket) onSocket(s);
    else s.pipe(s);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return Object.assign(t, { port: (server.address() as net.AddressInfo).port });
}
