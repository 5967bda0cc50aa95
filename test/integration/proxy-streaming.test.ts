/**
 * Bodies stream through the proxy and are never buffered whole: 100 MB each way with the RSS
 * watched, small bodies that arrive with the headers, a client that aborts mid-upload, and a
 * chunked body over the cap that must never complete upstream.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basic, waitFor } from '../helpers/clients.js';
import { startHarness, type Harness } from '../helpers/harness.js';

const MB = 1024 * 1024;
const CHUNK = Buffer.alloc(64 * 1024, 'p');

/** One request as the counting origin saw it. */
interface Counted {
  url: string;
  bytes: number;
  complete: boolean;
  aborted: boolean;
  /** Response bytes the origin has handed to its socket (it waits for 'drain' like any good server). */
  sent: number;
}

/** An origin that counts request bytes without keeping them, and streams downloads of any size. */
interface CountingOrigin {
  readonly port: number;
  readonly seen: Counted[];
  close(): Promise<void>;
}

async function startCountingOrigin(): Promise<CountingOrigin> {
  const seen: Counted[] = [];
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const c: Counted = { url: req.url ?? '', bytes: 0, complete: false, aborted: false, sent: 0 };
    seen.push(c);
    req.on('data', (chunk: Buffer) => (c.bytes += chunk.length));
    req.on('aborted', () => (c.aborted = true));
    req.on('error', () => (c.aborted = true));
    req.on('end', () => {
      c.complete = true;
      const size = Number(new URL(req.url ?? '/', 'http://x').searchParams.get('size') ?? 0);
      if (size === 0) {
        res.writeHead(200, { 'content-type': 'application/json' });
        return void res.end(JSON.stringify({ bytes: c.bytes }));
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
      let sent = 0;
      const pump = (): void => {
        while (sent < size) {
          const n = Math.min(CHUNK.length, size - sent);
          sent += n;
          c.sent = sent;
          if (!res.write(n === CHUNK.length ? CHUNK : CHUNK.subarray(0, n))) return void res.once('drain', pump);
        }
        res.end();
      };
      pump();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Samples RSS every 50 ms; stop() returns the growth of the peak over the starting value. */
function watchRss(): { stop(): { before: number; peak: number; after: number; growth: number } } {
  const before = process.memoryUsage().rss;
  let peak = before;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      const after = process.memoryUsage().rss;
      peak = Math.max(peak, after);
      return { before, peak, after, growth: peak - before };
    },
  };
}

const policyFor = (port: number, maxBody: number): string => `
version: 1
destinations:
  stream:
    hosts: [stream.test]
    ports: [${port}]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [stream]
limits:
  maxRequestBodyBytes: ${maxBody}
`;

/** The head of an absolute-form request to the proxy, as raw text. */
function head(method: string, url: string, auth: string, extra: string): string {
  return `${method} ${url} HTTP/1.1\r\nHost: ${new URL(url).host}\r\nProxy-Authorization: ${auth}\r\n${extra}\r\n`;
}

let origin: CountingOrigin;

beforeAll(async () => {
  origin = await startCountingOrigin();
});

afterAll(async () => {
  await origin?.close();
});

describe('large bodies stream through', () => {
  let h: Harness;
  let auth: string;

  beforeAll(async () => {
    h = await startHarness({ policy: policyFor(origin.port, 200 * MB), dns: { 'stream.test': { A: ['127.0.0.1'] } } });
    auth = basic('streamer', (await h.createSession('streamer')).token);
  });

  afterAll(async () => {
    await h?.close();
  });

  /** Streams `total` bytes up through the proxy, reusing one chunk; resolves with the origin's answer. */
  const upload = (total: number, path: string): Promise<string> =>
    new Promise<string>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: h.proxyPort,
        method: 'POST',
        path: `http://stream.test:${origin.port}${path}`,
        agent: false,
        headers: { host: `stream.test:${origin.port}`, 'proxy-authorization': auth, 'content-length': String(total) },
      });
      req.once('error', reject);
      req.once('response', (res) => {
        let b = '';
        res.on('data', (c: Buffer) => (b += c.toString()));
        res.once('end', () => resolve(b));
      });
      let sent = 0;
      const write = (): void => {
        while (sent < total) {
          sent += CHUNK.length;
          if (!req.write(CHUNK)) return void req.once('drain', write);
        }
        req.end();
      };
      write();
    });

  /** Streams `total` bytes down through the proxy; resolves with the count received. */
  const download = (total: number, path: string): Promise<number> =>
    new Promise<number>((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1',
        port: h.proxyPort,
        path: `http://stream.test:${origin.port}${path}?size=${total}`,
        agent: false,
        headers: { host: `stream.test:${origin.port}`, 'proxy-authorization': auth },
      });
      req.once('error', reject);
      req.once('response', (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => (n += c.length));
        res.once('end', () => resolve(n));
        res.once('error', reject);
      });
      req.end();
    });

  test('a 100 MB upload streams through with bounded memory', async () => {
    // Warm up first: the heap's first growth to its working size is not buffering.
    await upload(16 * MB, '/warm-up');
    await download(16 * MB, '/warm-down');
    const total = 100 * MB;
    const rss = watchRss();
    const result = await upload(total, '/upload');
    const mem = rss.stop();
    expect(JSON.parse(result)).toEqual({ bytes: total });
    expect(origin.seen.at(-1)).toMatchObject({ url: '/upload', bytes: total, complete: true });
    expect(mem.growth, `rss ${JSON.stringify(mem)}`).toBeLessThan(80 * MB);
    expect(h.logs.egress().find((l) => l['path'] === '/upload')).toMatchObject({ decision: 'allow', status: 200, bytesOut: total });
  });

  test('a 100 MB download streams through with bounded memory', async () => {
    const total = 100 * MB;
    const rss = watchRss();
    const received = await download(total, '/download');
    const mem = rss.stop();
    expect(received).toBe(total);
    expect(mem.growth, `rss ${JSON.stringify(mem)}`).toBeLessThan(80 * MB);
    await waitFor(() => h.logs.egress().some((l) => l['path'] === '/download'), 2000, 'download line');
    expect(h.logs.egress().find((l) => l['path'] === '/download')).toMatchObject({ decision: 'allow', status: 200, bytesIn: total });
  });

  // A client that stops reading must hold the origin back through the proxy: the origin can get
  // ahead only by what the kernel's socket buffers take (a few MB on loopback), never by the
  // whole body buffered in the proxy.
  const SLOW_READER_BODY = 512 * MB;
  const stalledOriginBytes = async (path: string, open: (s: net.Socket) => void): Promise<number> => {
    const s = net.connect(h.proxyPort, '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    open(s);
    await waitFor(() => (origin.seen.find((c) => c.url.startsWith(path))?.sent ?? 0) > 0, 3000, 'origin to start sending');
    // The client reads nothing: let the origin run into the proxy's backpressure.
    s.pause();
    await new Promise((r) => setTimeout(r, 1500));
    const sent = origin.seen.find((c) => c.url.startsWith(path))!.sent;
    s.destroy();
    return sent;
  };

  test('a client that stops reading a response holds the origin back', async () => {
    const url = `http://stream.test:${origin.port}/slow-reader-http?size=${SLOW_READER_BODY}`;
    const sent = await stalledOriginBytes('/slow-reader-http', (s) => s.write(head('GET', url, auth, '')));
    expect(sent).toBeLessThan(64 * MB);
  });

  test('a client that stops reading a tunnel holds the origin back', async () => {
    const sent = await stalledOriginBytes('/slow-reader-tunnel', (s) => {
      // Plain HTTP inside the tunnel: not TLS, which is allowed (and noted) outside lockdown.
      s.write(`CONNECT stream.test:${origin.port} HTTP/1.1\r\nHost: stream.test:${origin.port}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
      s.write(`GET /slow-reader-tunnel?size=${SLOW_READER_BODY} HTTP/1.1\r\nHost: stream.test\r\n\r\n`);
    });
    expect(sent).toBeLessThan(64 * MB);
  });

  test.each([1, 175, 5000, 60_000])('a %i-byte body sent in the same write as the headers reaches upstream whole', async (size) => {
    const url = `http://stream.test:${origin.port}/small-${size}`;
    const out = await new Promise<string>((resolve) => {
      const s = net.connect(h.proxyPort, '127.0.0.1');
      let text = '';
      s.on('data', (c: Buffer) => {
        text += c.toString('latin1');
        if (text.includes('}')) s.destroy();
      });
      s.on('close', () => resolve(text));
      s.write(Buffer.concat([Buffer.from(head('POST', url, auth, `Content-Length: ${size}\r\n`), 'latin1'), Buffer.alloc(size, 's')]));
    });
    expect(out).toMatch(/^HTTP\/1\.1 200/);
    expect(out).toContain(`{"bytes":${size}}`);
    expect(origin.seen.find((c) => c.url === `/small-${size}`)).toMatchObject({ bytes: size, complete: true });
  });

  test('a client that aborts mid-upload leaves the origin with an incomplete request, and the line says so', async () => {
    const url = `http://stream.test:${origin.port}/aborted`;
    const s = net.connect(h.proxyPort, '127.0.0.1');
    s.on('error', () => undefined);
    await new Promise((r) => s.once('connect', r));
    s.write(head('POST', url, auth, 'Content-Length: 1000000\r\n'));
    for (let i = 0; i < 100; i++) s.write(Buffer.alloc(1024, 'a'));
    await waitFor(() => (origin.seen.find((c) => c.url === '/aborted')?.bytes ?? 0) > 0, 2000, 'origin to see the upload start');
    s.destroy();
    await waitFor(() => origin.seen.find((c) => c.url === '/aborted')!.aborted, 2000, 'origin to see the abort');
    const seen = origin.seen.find((c) => c.url === '/aborted')!;
    expect(seen.complete).toBe(false);
    expect(seen.bytes).toBeLessThanOrEqual(100 * 1024);
    await waitFor(() => h.logs.egress().some((l) => l['path'] === '/aborted'), 2000, 'egress line');
    const line = h.logs.egress().find((l) => l['path'] === '/aborted')!;
    expect(line).toMatchObject({ decision: 'allow', error: 'client closed the connection' });
    expect(line['status']).toBeUndefined();
    expect(line['bytesOut']).toBeGreaterThan(0);
    expect(line['bytesOut']).toBeLessThanOrEqual(100 * 1024);
  });
});

describe('the body cap', () => {
  let h: Harness;
  let auth: string;
  const cap = 64 * 1024;

  beforeAll(async () => {
    h = await startHarness({ policy: policyFor(origin.port, cap), dns: { 'stream.test': { A: ['127.0.0.1'] } } });
    auth = basic('capped', (await h.createSession('capped')).token);
  });

  afterAll(async () => {
    await h?.close();
  });

  test('a chunked body over the cap is cut off, never completes upstream, and the client gets 413 or a closed connection', async () => {
    const url = `http://stream.test:${origin.port}/chunked-over-cap`;
    const out = await new Promise<string>((resolve) => {
      const s = net.connect(h.proxyPort, '127.0.0.1');
      let text = '';
      s.on('data', (c: Buffer) => (text += c.toString('latin1')));
      s.on('error', () => undefined);
      s.on('close', () => resolve(text));
      s.write(head('POST', url, auth, 'Transfer-Encoding: chunked\r\n'));
      const piece = Buffer.alloc(16 * 1024, 'c');
      let sent = 0;
      const timer = setInterval(() => {
        if (s.destroyed) return clearInterval(timer);
        if (sent >= 4 * cap) {
          clearInterval(timer);
          s.write('0\r\n\r\n');
          setTimeout(() => s.destroy(), 1000).unref();
          return;
        }
        s.write(`${piece.length.toString(16)}\r\n`);
        s.write(piece);
        s.write('\r\n');
        sent += piece.length;
      }, 5);
    });
    expect(out).not.toMatch(/^HTTP\/1\.1 200/);
    if (out !== '') expect(out).toMatch(/^HTTP\/1\.1 413/);
    await waitFor(() => origin.seen.find((c) => c.url === '/chunked-over-cap')?.aborted === true, 2000, 'origin to see the cut');
    const seen = origin.seen.find((c) => c.url === '/chunked-over-cap')!;
    expect(seen.complete).toBe(false);
    expect(seen.bytes).toBeLessThanOrEqual(cap);
    await waitFor(() => h.logs.egress().some((l) => l['path'] === '/chunked-over-cap'), 2000, 'egress line');
    expect(h.logs.egress().find((l) => l['path'] === '/chunked-over-cap')).toMatchObject({ decision: 'deny', reason: 'body_too_large', status: 413 });
  });
});
