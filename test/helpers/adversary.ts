/**
 * Tools for the adversarial suite (test/netns/adversarial-*, test/integration/adversarial-*):
 * a raw-socket client that speaks bytes, not HTTP, and parses every response it gets back;
 * traps that record every TCP connection made to a forbidden address; origins that record every
 * connection and request; CONNECT tunnels with real or rewritten TLS through them; a hand-built
 * TLS ClientHello; and the namespace "world" the netns files share. Sockets only ever go to the
 * address a test names, which is loopback or an address inside the test's own network namespace.
 */
import { readFileSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { DnsQuery, DnsRecords } from './dns-server.js';
import { selfSignedCert, startHarness, type Harness, type LogSink } from './harness.js';
import { setupNetns } from './netns.js';

// ---------------------------------------------------------------------------------------------
// Raw client

/** One HTTP response parsed out of the bytes the proxy sent. */
export interface RawResponse {
  readonly status: number;
  /** Lower-case header names; repeated headers joined with ", ". */
  readonly headers: Record<string, string>;
  readonly body: string;
}

/** Everything one raw connection saw. */
export interface RawResult {
  /** Every byte received, as latin1 text. */
  readonly text: string;
  /** Every complete response, in order. */
  readonly responses: RawResponse[];
  /** Status of the first response (0 when none). */
  readonly status: number;
  /** `x-portcullis-reason` of the first response, or the JSON body's reason. */
  readonly reason: string | undefined;
  /** True when the proxy closed (or reset) the connection before our deadline. */
  readonly closedByPeer: boolean;
  /** Milliseconds from connect until the proxy closed, or until we stopped waiting. */
  readonly ms: number;
}

/** Options of rawRequest. */
export interface RawOptions {
  /** Stop once this many complete responses arrived (default 1). */
  readonly responses?: number;
  /** Give up after this long, ms (default 3000). */
  readonly timeoutMs?: number;
  /** Pieces written one after another, `gapMs` apart (default: the payload in one write). */
  readonly gapMs?: number;
  /** Keep reading after the wanted responses until the peer closes (or the timeout). */
  readonly untilClose?: boolean;
  /** Half-close our side after the last write. */
  readonly endAfterWrite?: boolean;
}

const HEAD_END = '\r\n\r\n';

/** Parses as many complete HTTP/1.x responses as `text` holds. */
export function parseResponses(text: string): RawResponse[] {
  const out: RawResponse[] = [];
  let off = 0;
  while (off < text.length) {
    const end = text.indexOf(HEAD_END, off);
    if (end < 0) break;
    const [statusLine, ...lines] = text.slice(off, end).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? '');
    if (m === null) break;
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const c = l.indexOf(':');
      if (c <= 0) continue;
      const k = l.slice(0, c).trim().toLowerCase();
      const v = l.slice(c + 1).trim();
      headers[k] = headers[k] === undefined ? v : `${headers[k]}, ${v}`;
    }
    const status = Number(m[1]);
    let bodyStart = end + 4;
    let body = '';
    if (status < 200 || status === 204 || status === 304 || /Connection Established/i.test(statusLine ?? '')) {
      // No body: a 1xx is followed by the real response, a CONNECT's 200 by the tunnel's bytes.
    } else if (headers['transfer-encoding']?.toLowerCase().includes('chunked')) {
      let p = bodyStart;
      let complete = false;
      while (p < text.length) {
        const nl = text.indexOf('\r\n', p);
        if (nl < 0) break;
        const size = parseInt(text.slice(p, nl), 16);
        if (Number.isNaN(size)) break;
        if (size === 0) {
          const trailerEnd = text.indexOf(HEAD_END, nl);
          if (trailerEnd < 0 && text.slice(nl, nl + 4) !== HEAD_END) break;
          p = text.slice(nl, nl + 4) === HEAD_END ? nl + 4 : trailerEnd + 4;
          complete = true;
          break;
        }
        if (nl + 2 + size + 2 > text.length) break;
        body += text.slice(nl + 2, nl + 2 + size);
        p = nl + 2 + size + 2;
      }
      if (!complete) break;
      bodyStart = p;
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (bodyStart + n > text.length) break;
      body = text.slice(bodyStart, bodyStart + n);
      bodyStart += n;
    } else {
      // Delimited by close: everything that is left.
      body = text.slice(bodyStart);
      bodyStart = text.length;
    }
    out.push({ status, headers, body });
    off = bodyStart;
  }
  return out;
}

function reasonOf(r: RawResponse | undefined): string | undefined {
  if (r === undefined) return undefined;
  if (r.headers['x-portcullis-reason'] !== undefined) return r.headers['x-portcullis-reason'];
  try {
    const j = JSON.parse(r.body) as { reason?: unknown };
    return typeof j.reason === 'string' ? j.reason : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Connects to `host:port` and writes `payload` (one write, or pieces `gapMs` apart). Resolves
 * once `responses` complete responses arrived, the peer closed, or the timeout passed; never
 * rejects (a reset is just a close).
 */
export function rawRequest(port: number, payload: string | Buffer | readonly (string | Buffer)[], o: RawOptions = {}, host = '127.0.0.1'): Promise<RawResult> {
  const want = o.responses ?? 1;
  const pieces = (Array.isArray(payload) ? payload : [payload]) as (string | Buffer)[];
  return new Promise((resolve) => {
    const start = performance.now();
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    let text = '';
    let done = false;
    let closedByPeer = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const responses = parseResponses(text);
      resolve({ text, responses, status: responses[0]?.status ?? 0, reason: reasonOf(responses[0]), closedByPeer, ms: performance.now() - start });
    };
    const timer = setTimeout(finish, o.timeoutMs ?? 3000);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (!o.untilClose && parseResponses(text).length >= want) finish();
    });
    socket.on('error', () => {
      closedByPeer = true;
      finish();
    });
    socket.on('close', () => {
      closedByPeer = true;
      finish();
    });
    socket.on('connect', () => {
      void (async () => {
        for (let i = 0; i < pieces.length; i++) {
          if (done || socket.destroyed) return;
          socket.write(typeof pieces[i] === 'string' ? Buffer.from(pieces[i] as string, 'latin1') : (pieces[i] as Buffer));
          if (o.gapMs !== undefined && i < pieces.length - 1) await sleep(o.gapMs);
        }
        if (o.endAfterWrite && !socket.destroyed) socket.end();
      })();
    });
  });
}

/** `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** `Basic base64(account:token)`. */
export function basicAuth(account: string, token: string): string {
  return `Basic ${Buffer.from(`${account}:${token}`).toString('base64')}`;
}

/**
 * A request head: request line, the given header lines, Proxy-Authorization when `auth` is set,
 * and the blank line. Header lines are written exactly as given (that is the point).
 */
export function head(requestLine: string, headerLines: readonly string[] = [], auth?: string): string {
  const lines = [requestLine, ...headerLines];
  if (auth !== undefined) lines.push(`Proxy-Authorization: ${auth}`);
  return `${lines.join('\r\n')}\r\n\r\n`;
}

/** `GET url HTTP/1.1` with a Host header taken from the URL (or `host`). */
export function get(url: string, auth: string | undefined, extra: readonly string[] = [], method = 'GET'): string {
  let host = 'x';
  try {
    host = new URL(url).host;
  } catch {
    // A deliberately broken URL still needs some Host header.
  }
  return head(`${method} ${url} HTTP/1.1`, [`Host: ${host}`, ...extra], auth);
}

/** `CONNECT authority HTTP/1.1`. */
export function connect(authority: string, auth: string | undefined, extra: readonly string[] = []): string {
  return head(`CONNECT ${authority} HTTP/1.1`, [`Host: ${authority}`, ...extra], auth);
}

// ---------------------------------------------------------------------------------------------
// Traps and recording origins

/** A TCP listener on a forbidden address: any connection to it is a failure of the proxy. */
export interface Trap {
  readonly host: string;
  readonly port: number;
  /** Connections accepted. */
  connections: number;
  /** Bytes received over all connections. */
  bytes: number;
  close(): Promise<void>;
}

/** A TCP server whose Trap counts connections and closes every socket on close(). */
function countingServer(host: string, port: number): { server: net.Server; trap: Trap } {
  const sockets = new Set<net.Socket>();
  const server = net.createServer();
  const trap: Trap = {
    host,
    port,
    connections: 0,
    bytes: 0,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  server.on('connection', (s) => {
    trap.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
  });
  return { server, trap };
}

/** Listens on `host:port`; answers anything with a 200 so that a leak would look like success. */
export async function startTrap(host: string, port: number): Promise<Trap> {
  const { server, trap } = countingServer(host, port);
  server.on('connection', (s) => {
    s.on('data', (c: Buffer) => {
      trap.bytes += c.length;
      s.end('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nLEAKED');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host.includes(':') }, resolve);
  });
  return Object.assign(trap, { port: (server.address() as AddressInfo).port });
}

/** Traps on many addresses and ports; `hits()` lists every trap that saw anything. */
export class TrapSet {
  readonly traps: Trap[] = [];

  /** One trap per address and port. */
  static async start(hosts: readonly string[], ports: readonly number[]): Promise<TrapSet> {
    const set = new TrapSet();
    for (const host of hosts) for (const port of ports) set.traps.push(await startTrap(host, port));
    return set;
  }

  /** "host:port ×connections (bytes)" for every trap that was touched. */
  hits(): string[] {
    return this.traps.filter((t) => t.connections > 0).map((t) => `${t.host}:${t.port} x${t.connections} (${t.bytes} bytes)`);
  }

  /** Connections over all traps. */
  get connections(): number {
    return this.traps.reduce((n, t) => n + t.connections, 0);
  }

  close(): Promise<unknown> {
    return Promise.all(this.traps.map((t) => t.close()));
  }
}

/** A request an origin received. */
export interface OriginRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly rawHeaders: string[];
  body: Buffer;
  /** The body ended normally (an aborted upload stays false). */
  complete: boolean;
}

/** An HTTP(S) origin that records every TCP connection and every request. */
export interface RecordingOrigin {
  readonly host: string;
  readonly port: number;
  readonly requests: OriginRequest[];
  /** TCP connections accepted (before any HTTP parsing). */
  connections: number;
  /** Completed TLS handshakes (TLS origins only). */
  handshakes: number;
  readonly server: http.Server;
  close(): Promise<void>;
}

/** Answer of an origin handler; the default echoes method, url, host and body length as JSON. */
export type OriginHandler = (req: IncomingMessage, res: ServerResponse, seen: OriginRequest) => void;

/** Starts an origin on `host:port` (port 0 picks one). */
export async function startRecordingOrigin(host: string, port = 0, o: { tls?: { cert: string; key: string }; handler?: OriginHandler } = {}): Promise<RecordingOrigin> {
  const requests: OriginRequest[] = [];
  const sockets = new Set<net.Socket>();
  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const seen: OriginRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0), complete: false };
    requests.push(seen);
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      seen.complete = true;
      seen.body = Buffer.concat(chunks);
      if (o.handler) return o.handler(req, res, seen);
      res.writeHead(200, { 'content-type': 'application/json', 'x-origin': 'yes' });
      res.end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, bodyLength: seen.body.length, origin: host }));
    });
  };
  const server: http.Server = o.tls ? https.createServer({ cert: o.tls.cert, key: o.tls.key }, onRequest) : http.createServer(onRequest);
  const origin: RecordingOrigin = {
    host,
    port,
    requests,
    connections: 0,
    handshakes: 0,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
  // 'connection' fires for the raw TCP socket on both http and https servers.
  server.on('connection', (s: net.Socket) => {
    origin.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  if (o.tls) server.on('secureConnection', () => origin.handshakes++);
  server.on('clientError', (_err, s) => s.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: host.includes(':') }, resolve);
  });
  return Object.assign(origin, { port: (server.address() as AddressInfo).port });
}

/** A raw TCP origin that answers every connection with fixed bytes (for malformed upstream responses). */
export async function startRawOrigin(answer: (firstBytes: Buffer) => string | Buffer, host = '127.0.0.1'): Promise<Trap> {
  const { server, trap: t } = countingServer(host, 0);
  server.on('connection', (s) => {
    let answered = false;
    s.on('data', (c: Buffer) => {
      t.bytes += c.length;
      if (answered) return;
      answered = true;
      s.end(answer(c));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return Object.assign(t, { port: (server.address() as AddressInfo).port });
}

// ---------------------------------------------------------------------------------------------
// Log lines

/** The decision line (not the close line) with this request id; scans from the newest line. */
export function egressLine(logs: LogSink, reqId: string): Record<string, unknown> | undefined {
  const needle = `"reqId":"${reqId}"`;
  for (let i = logs.raw.length - 1; i >= 0; i--) {
    const raw = logs.raw[i]!;
    if (!raw.includes(needle)) continue;
    const line = JSON.parse(raw) as Record<string, unknown>;
    if (line['msg'] === 'egress' && line['phase'] === undefined) return line;
  }
  return undefined;
}

/** The decision line for the request id a response carried (x-portcullis-request-id). */
export function egressLineFor(logs: LogSink, r: RawResult): Record<string, unknown> | undefined {
  const id = r.responses[0]?.headers['x-portcullis-request-id'];
  return id === undefined ? undefined : egressLine(logs, id);
}

/** Log lines at pino's error level or above: the proxy hit something it did not expect. */
export function internalErrors(logs: LogSink): string[] {
  return logs.raw.filter((l) => /"level":(50|60)/.test(l));
}

// ---------------------------------------------------------------------------------------------
// TLS ClientHello

/** Options of clientHello. */
export interface HelloOptions {
  /** host_name values of ONE server_name extension (several = a multi-name list). */
  readonly sni?: readonly (string | Buffer)[];
  /** Add a second server_name extension with this name. */
  readonly duplicateSni?: string;
  /** Split the handshake message over records of at most this many bytes. */
  readonly recordSize?: number;
}

/** A minimal TLS 1.2-style ClientHello record (enough for the proxy's peek, not for a server). */
export function clientHello(o: HelloOptions = {}): Buffer {
  const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
  const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);
  const sniExt = (names: readonly (string | Buffer)[]): Buffer => {
    const list = Buffer.concat(names.map((n) => {
      const b = typeof n === 'string' ? Buffer.from(n, 'latin1') : n;
      return Buffer.concat([Buffer.from([0]), vec16(b)]);
    }));
    return Buffer.concat([u16(0), vec16(vec16(list))]);
  };
  const exts: Buffer[] = [];
  if (o.sni !== undefined) exts.push(sniExt(o.sni));
  if (o.duplicateSni !== undefined) exts.push(sniExt([o.duplicateSni]));
  const body = Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7),
    Buffer.from([0]),
    vec16(Buffer.from([0x13, 0x01, 0xc0, 0x2f])),
    Buffer.from([1, 0]),
    ...(exts.length > 0 ? [vec16(Buffer.concat(exts))] : []),
  ]);
  const hs = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  const size = o.recordSize ?? hs.length;
  const records: Buffer[] = [];
  for (let i = 0; i < hs.length; i += size) {
    const frag = hs.subarray(i, i + size);
    records.push(Buffer.concat([Buffer.from([22, 3, 1]), u16(frag.length), frag]));
  }
  return Buffer.concat(records);
}

// ---------------------------------------------------------------------------------------------
// Tunnels

/** The proxy's answer to a CONNECT; on 200 the socket is handed over paused, ready for bytes. */
export interface Tunnel {
  readonly status: number;
  readonly reason: string | undefined;
  readonly socket: net.Socket;
  /** Bytes that followed the 200 head in the same read. */
  readonly rest: Buffer;
}

/** Opens `CONNECT authority` (auth as a Basic value); `first` goes in the same write as the head. */
export function openTunnel(port: number, authority: string, auth: string | undefined, o: { first?: Buffer; extra?: readonly string[]; timeoutMs?: number } = {}): Promise<Tunnel> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.setNoDelay(true);
    let buf = Buffer.alloc(0);
    let settled = false;
    const settle = (status: number, reason: string | undefined, rest: Buffer): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('data', onData);
      resolve({ status, reason, socket, rest });
    };
    const timer = setTimeout(() => settle(0, undefined, Buffer.alloc(0)), o.timeoutMs ?? 3000);
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf(HEAD_END);
      if (end < 0) return;
      const responses = parseResponses(buf.toString('latin1'));
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString('latin1'))?.[1] ?? 0);
      if (status === 200) {
        socket.pause();
        return settle(200, undefined, buf.subarray(end + 4));
      }
      // A refusal: wait for its JSON body to read the reason.
      if (responses.length > 0) settle(status, reasonOf(responses[0]), Buffer.alloc(0));
    };
    socket.on('data', onData);
    socket.on('error', () => undefined);
    socket.on('close', () => {
      const responses = parseResponses(buf.toString('latin1'));
      settle(responses[0]?.status ?? 0, reasonOf(responses[0]), Buffer.alloc(0));
    });
    const h = Buffer.from(connect(authority, auth, o.extra), 'latin1');
    socket.write(o.first ? Buffer.concat([h, o.first]) : h);
  });
}

/** Sends `payload` over an open tunnel and collects what comes back until close or `waitMs`. */
export function overTunnel(t: Tunnel, payload: string | Buffer, waitMs = 1500): Promise<{ text: string; closed: boolean }> {
  return new Promise((resolve) => {
    let text = t.rest.toString('latin1');
    let closed = false;
    const done = (): void => {
      clearTimeout(timer);
      t.socket.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(done, waitMs);
    t.socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      const responses = parseResponses(text);
      if (responses.length > 0 && responses[0]!.headers['content-length'] !== undefined) done();
    });
    t.socket.on('close', () => {
      closed = true;
      done();
    });
    t.socket.resume();
    t.socket.write(payload);
  });
}

/**
 * A TLS handshake over an open tunnel with `servername` as SNI (no SNI when empty). `rewrite`
 * may alter the first write (the ClientHello) on its way out: how record-layer tricks are tried
 * with a real client and a real server. Resolves true when the handshake completed.
 */
export function tlsThroughTunnel(t: Tunnel, servername: string, ca: string, rewrite?: (hello: Buffer) => Buffer, timeoutMs = 2000): Promise<boolean> {
  return new Promise((resolve) => {
    const inner = t.socket;
    let first = true;
    const transport = new Duplex({
      read() {
        inner.resume();
      },
      write(chunk: Buffer, _enc, cb) {
        const out = first && rewrite ? rewrite(chunk) : chunk;
        first = false;
        inner.write(out, cb);
      },
      final(cb) {
        inner.end(cb);
      },
      destroy(err, cb) {
        inner.destroy();
        cb(err);
      },
    });
    if (t.rest.length > 0) transport.push(t.rest);
    inner.on('data', (c: Buffer) => {
      if (!transport.push(c)) inner.pause();
    });
    inner.on('end', () => transport.push(null));
    inner.on('close', () => transport.destroy());
    const options: tls.ConnectionOptions = { socket: transport as unknown as net.Socket, ca, checkServerIdentity: () => undefined };
    if (servername !== '') options.servername = servername;
    const socket = tls.connect(options);
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), timeoutMs);
    // End gracefully so our Finished reaches the server before the transport goes.
    let secured = false;
    socket.once('secureConnect', () => {
      secured = true;
      socket.end();
      setTimeout(() => finish(true), 100);
    });
    socket.once('error', () => finish(secured));
    socket.once('close', () => finish(secured));
  });
}

/**
 * One request inside an intercepted tunnel: CONNECT `authority`, TLS to the proxy (trusting its
 * CA, SNI `servername`), then `request` (raw bytes) over the decrypted connection.
 */
export async function interceptedRequest(port: number, authority: string, auth: string, ca: string, request: string, servername = authority.slice(0, authority.lastIndexOf(':'))): Promise<RawResult> {
  const start = performance.now();
  const t = await openTunnel(port, authority, auth);
  if (t.status !== 200) {
    t.socket.destroy();
    return { text: '', responses: [], status: t.status, reason: t.reason, closedByPeer: true, ms: performance.now() - start };
  }
  return new Promise((resolve) => {
    const socket = tls.connect({ socket: t.socket, servername, ca });
    let text = '';
    let done = false;
    const finish = (closedByPeer: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      const responses = parseResponses(text);
      resolve({ text, responses, status: responses[0]?.status ?? 0, reason: reasonOf(responses[0]), closedByPeer, ms: performance.now() - start });
    };
    const timer = setTimeout(() => finish(false), 3000);
    socket.on('secureConnect', () => socket.write(request));
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (parseResponses(text).length > 0) finish(false);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    t.socket.resume();
  });
}

// ---------------------------------------------------------------------------------------------
// The namespace world (test/netns/adversarial-*): forbidden servers on every address class,
// a "public" origin on 11.0.0.1 / 2600:1::1, a DNS server that logs every question, and one
// Portcullis. Only ever built inside the namespace scripts/run-tests.mjs creates (setupNetns
// refuses anywhere else), so even a proxy that dialed everything could reach nothing real.

/** Forbidden IPv4 addresses, one per class, each carrying a trap on every TRAP_PORTS port. */
export const FORBIDDEN_V4 = {
  loopback: '127.0.0.1',
  private10: '10.0.0.1',
  private172: '172.16.0.1',
  private192: '192.168.1.1',
  metadata: '169.254.169.254',
  cgnat: '100.64.0.1',
  alibabaMetadata: '100.100.100.200',
  ietfMetadata: '192.0.0.192',
  benchmark: '198.18.0.1',
  testNet1: '192.0.2.1',
  testNet3: '203.0.113.10',
  classE: '240.0.0.1',
} as const;

/** Forbidden IPv6 addresses with traps: loopback, ULA metadata, NAT64, 6to4, Teredo, documentation. */
export const FORBIDDEN_V6 = {
  loopback: '::1',
  ulaMetadata: 'fd00:ec2::254',
  nat64Metadata: '64:ff9b::a9fe:a9fe',
  sixToFourMetadata: '2002:a9fe:a9fe::1',
  teredo: '2001:0:a9fe:a9fe::1',
  documentation: '2001:db8::1',
} as const;

/** Public-class addresses: the allowed origins, and strangers (public, never allowlisted: traps). */
export const PUBLIC = { origin: '11.0.0.1', stranger: '11.0.0.2', origin6: '2600:1::1', stranger6: '2600:1::2' } as const;

/** Ports every trap listens on: the default ports and one more. */
export const TRAP_PORTS = [80, 443, 8080] as const;

/** Names that resolve to the public origin. */
const ORIGIN_NAMES = [
  'allowed.test', 'a.wild.test', 'b.c.wild.test', 'x_y.wild.test', '_acme.wild.test', 'under_score.test', 'ruled.test',
  'dev.test', 'secure.test', 'tunnel.test', 'inspected.test',
];

/** Names that must never be resolved; if one ever is, it points at a trap. */
export const NEVER_RESOLVED = [
  'evil.test', 'wild.test', 'allowed.test.evil.test', 'evilallowed.test', 'allowed.testevil', 'denied.test', 'x.denied.test',
  'pastebin.test', 'localhost', 'metadata.google.internal', 'instance-data', 'exfil.evil.test',
];

/** The DNS zone of the world. */
function worldRecords(): DnsRecords {
  const records: Record<string, DnsRecords[string]> = {};
  for (const n of ORIGIN_NAMES) records[n] = { A: [PUBLIC.origin] };
  for (const n of NEVER_RESOLVED) records[n] = { A: [PUBLIC.stranger], AAAA: [PUBLIC.stranger6] };
  records['metadata.google.internal'] = { A: [FORBIDDEN_V4.metadata] };
  records['instance-data'] = { A: [FORBIDDEN_V4.metadata] };
  records['loop.test'] = { A: ['127.0.0.1'] };
  records['v6only.test'] = { AAAA: [PUBLIC.origin6] };
  records['nx.test'] = { rcode: 'NXDOMAIN' };
  records['servfail.test'] = { rcode: 'SERVFAIL' };
  records['refused.test'] = { rcode: 'REFUSED' };
  records['nodata.test'] = {};
  return records;
}

/** The world's policy; `self` ports are the proxy's own, known only once it listens. */
export function worldPolicy(proxyPort = 1, adminPort = 2, extra = ''): string {
  return `
version: 1
destinations:
  web:
    hosts: [allowed.test, "*.wild.test", under_score.test, v6only.test, nx.test, servfail.test, refused.test, nodata.test, "*.mix.test", "*.rebind.test"]
    ports: [80, 443, 8080]
  private-answers:
    hosts: ["*.dns.test"]
    ports: [80, 443, 8080]
  literals:
    hosts: ["${PUBLIC.origin}", "[${PUBLIC.origin6}]"]
  ruled:
    hosts: [ruled.test]
    methods: [GET]
    paths: ["/allowed/**"]
  dev:
    hosts: [dev.test]
    developerOnly: true
  https-only:
    hosts: [secure.test]
    schemes: [https]
  inspected:
    hosts: [inspected.test]
    methods: [GET, HEAD]
    paths: ["/allowed/**"]
    inspect: true
    lockdown: allow
  tunnel-ok:
    hosts: [tunnel.test]
    ports: [80, 443, 8080]
    lockdown: allow-tunnel
  self:
    hosts: [loop.test]
    ports: [${proxyPort}, ${adminPort}]
    allowPrivate: [127.0.0.0/8]
${extra}
accounts:
  - match: "*"
    allow: [web, private-answers, literals, ruled, dev, https-only, inspected, tunnel-ok, self]
deny:
  hosts: [denied.test, "*.denied.test", pastebin.test]
limits:
  requestsPerMinute: 1000000
  maxConcurrentTunnels: 1000
`;
}

/** What changed since a snapshot: DNS questions and requests/connections at the origins. */
export interface WorldDelta {
  readonly dnsQueries: DnsQuery[];
  readonly webRequests: OriginRequest[];
  readonly web6Requests: OriginRequest[];
  readonly tlsConnections: number;
  readonly tlsHandshakes: number;
}

/** The running world. */
export interface World {
  readonly h: Harness;
  readonly traps: TrapSet;
  /** http origin on 11.0.0.1:80. */
  readonly web: RecordingOrigin;
  /** http origin on [2600:1::1]:80. */
  readonly web6: RecordingOrigin;
  /** https origin on 11.0.0.1:443 (certificate for allowed.test, tunnel.test, inspected.test, a.wild.test and evil.test). */
  readonly tls: RecordingOrigin;
  readonly cert: { cert: string; key: string };
  /** The proxy's interception CA certificate (PEM), which clients of inspected.test must trust. */
  readonly proxyCa: string;
  readonly account: string;
  readonly token: string;
  /** Basic credentials of `account`. */
  readonly auth: string;
  /** Log lines at error level or above (an internal failure, e.g. "request handler failed"). */
  internalErrors(): string[];
  /** Marks the present; `since()` reports everything after it. */
  mark(): void;
  since(): WorldDelta;
  close(): Promise<void>;
}

/** Builds the world inside the namespace; `flags` go to `portcullis serve`. */
export async function startWorld(o: { flags?: readonly string[]; records?: DnsRecords } = {}): Promise<World> {
  setupNetns([
    ...Object.values(FORBIDDEN_V4).filter((ip) => ip !== '127.0.0.1').map((ip, i) => ({ iface: `pcx${i % 4}`, cidr: `${ip}/32` })),
    ...Object.values(FORBIDDEN_V6).filter((ip) => ip !== '::1').map((ip) => ({ iface: 'pcx4', cidr: `${ip}/128` })),
    { iface: 'pcx5', cidr: `${PUBLIC.origin}/32` },
    { iface: 'pcx5', cidr: `${PUBLIC.stranger}/32` },
    { iface: 'pcx5', cidr: `${PUBLIC.origin6}/128` },
    { iface: 'pcx5', cidr: `${PUBLIC.stranger6}/128` },
  ]);
  const trapHosts = [...Object.values(FORBIDDEN_V4), ...Object.values(FORBIDDEN_V6), PUBLIC.stranger, PUBLIC.stranger6];
  const traps = await TrapSet.start(trapHosts, TRAP_PORTS);
  const cert = selfSignedCert(['allowed.test', 'tunnel.test', 'inspected.test', 'a.wild.test', 'evil.test', PUBLIC.origin]);
  const web = await startRecordingOrigin(PUBLIC.origin, 80);
  const web6 = await startRecordingOrigin(PUBLIC.origin6, 80);
  const tls = await startRecordingOrigin(PUBLIC.origin, 443, { tls: cert });
  const h = await startHarness({ policy: worldPolicy(), dns: { ...worldRecords(), ...o.records }, flags: o.flags ?? [], overrides: { upstreamCa: cert.cert } });
  await h.setPolicy(worldPolicy(h.proxyPort, Number(new URL(h.adminUrl).port)));
  const account = 'agent-1';
  const { token } = await h.createSession(account);
  let mark = { dns: 0, web: 0, web6: 0, tlsConnections: 0, tlsHandshakes: 0 };
  const world: World = {
    h,
    traps,
    web,
    web6,
    tls,
    cert,
    proxyCa: readFileSync(path.join(h.dir, 'ca', 'ca-cert.pem'), 'utf8'),
    account,
    token,
    auth: basicAuth(account, token),
    internalErrors: () => internalErrors(h.logs),
    mark() {
      mark = { dns: h.dns.queries.length, web: web.requests.length, web6: web6.requests.length, tlsConnections: tls.connections, tlsHandshakes: tls.handshakes };
    },
    since() {
      return {
        dnsQueries: h.dns.queries.slice(mark.dns),
        webRequests: web.requests.slice(mark.web),
        web6Requests: web6.requests.slice(mark.web6),
        tlsConnections: tls.connections - mark.tlsConnections,
        tlsHandshakes: tls.handshakes - mark.tlsHandshakes,
      };
    },
    async close() {
      await h.close();
      await Promise.all([traps.close(), web.close(), web6.close(), tls.close()]);
    },
  };
  return world;
}
