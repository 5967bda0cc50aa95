/**
 * Adversarial suite — request framing (issue 4). Raw bytes on the proxy port, on loopback only:
 * TE+CL, duplicate and odd Content-Length, obs-fold, bare CR and LF, chunk-size tricks, bodies
 * that hide a second request, aborted uploads, oversize heads (431), `Trailer:`, pipelining,
 * h2c and WebSocket upgrade smuggling, and garbage, HTTP/2 and TLS bytes on the plaintext port.
 * Every case states its status and EXACTLY how many requests the origin saw, and after every
 * case the proxy must still serve the next client: never a crash, never two requests upstream.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { basicAuth, clientHello, get, head, internalErrors, rawRequest, sleep, startRecordingOrigin, type RecordingOrigin } from '../helpers/adversary.js';
import { startHarness, type Harness } from '../helpers/harness.js';

const MAX_HEADER_BYTES = 4096;
const MAX_URL = 1000;
const MAX_BODY = 1000;
const INNER = 'GET /admin HTTP/1.1\r\nHost: origin.test\r\n\r\n';

/** [trick, head lines after the request line (Host and auth are added), body bytes, status]: refused before anything goes upstream. */
const REFUSED: ReadonlyArray<readonly [string, readonly string[], string, number]> = [
  ['te_and_cl', ['Content-Length: 4', 'Transfer-Encoding: chunked'], '0\r\n\r\n', 400],
  ['cl_and_te', ['Transfer-Encoding: chunked', 'Content-Length: 4'], '0\r\n\r\n', 400],
  ['duplicate_cl_different', ['Content-Length: 5', 'Content-Length: 6'], 'hello!', 400],
  ['duplicate_cl_same', ['Content-Length: 5', 'Content-Length: 5'], 'hello', 400],
  ['cl_list', ['Content-Length: 5, 5'], 'hello', 400],
  ['cl_plus_sign', ['Content-Length: +5'], 'hello', 400],
  ['cl_negative', ['Content-Length: -1'], '', 400],
  ['cl_hex', ['Content-Length: 0x5'], 'hello', 400],
  ['cl_inner_space', ['Content-Length: 5 5'], 'hello', 400],
  ['cl_overflow', ['Content-Length: 184467440737095516160'], '', 400],
  ['te_chunked_then_identity', ['Transfer-Encoding: chunked, identity'], '0\r\n\r\n', 400],
  ['te_identity_only', ['Transfer-Encoding: identity'], '', 400],
  ['te_unknown_coding_last', ['Transfer-Encoding: chunked, gzip'], '0\r\n\r\n', 400],
  ['te_xchunked', ['Transfer-Encoding: xchunked'], '0\r\n\r\n', 400],
  ['te_space_before_colon', ['Transfer-Encoding : chunked'], '0\r\n\r\n', 400],
  ['te_duplicate_header', ['Transfer-Encoding: chunked', 'Transfer-Encoding: chunked'], '0\r\n\r\n', 400],
  ['te_vertical_tab', ['Transfer-Encoding:\x0bchunked'], '0\r\n\r\n', 400],
  ['te_obs_fold', ['Transfer-Encoding:', ' chunked'], '0\r\n\r\n', 400],
  ['obs_fold_any_header', ['X-A: 1', ' folded'], '', 400],
  ['obs_fold_tab', ['X-A: 1', '\tfolded'], '', 400],
  ['bare_cr_in_header_value', ['X-A: 1\rX-B: 2'], '', 400],
  ['bare_cr_as_line_end', ['X-A: 1\r'], '', 400],
  ['nul_in_header_value', ['X-A: a\x00b'], '', 400],
  ['space_in_header_name', ['X A: b'], '', 400],
  ['space_before_colon', ['X-A : b'], '', 400],
  ['empty_header_name', [': b'], '', 400],
  ['non_token_header_name', ['X(A): b'], '', 400],
  ['expect_unknown', ['Expect: 200-ok', 'Content-Length: 1'], 'x', 400],
];

/**
 * [trick, head lines, body, status]: broken chunked bodies. The head is fine, so the request may
 * already be on its way upstream when the body breaks: it must then be cut, never completed.
 */
const BROKEN_BODIES: ReadonlyArray<readonly [string, readonly string[], string, number]> = [
  ['chunk_size_overflow', ['Transfer-Encoding: chunked'], 'fffffffffffffffff1\r\nx\r\n0\r\n\r\n', 400],
  ['chunk_size_not_hex', ['Transfer-Encoding: chunked'], 'zz\r\nx\r\n0\r\n\r\n', 400],
  ['chunk_size_with_sign', ['Transfer-Encoding: chunked'], '+1\r\nx\r\n0\r\n\r\n', 400],
  ['chunk_data_longer_than_size', ['Transfer-Encoding: chunked'], '1\r\nxx\r\n0\r\n\r\n', 400],
  ['chunk_lf_only', ['Transfer-Encoding: chunked'], '1\nx\n0\n\n', 400],
  ['chunk_extension_bare_cr', ['Transfer-Encoding: chunked'], '1;a=\rb\r\nx\r\n0\r\n\r\n', 400],
  ['trailer_with_content_length', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nContent-Length: 99\r\n\r\n', 400],
  ['trailer_obs_fold', ['Transfer-Encoding: chunked'], '5\r\nhello\r\n0\r\nX-A: 1\r\n folded\r\n\r\n', 400],
];

/** [trick, raw bytes]: not an HTTP/1.1 request at all; 400 (or a close), nothing upstream. */
const NOT_HTTP: ReadonlyArray<readonly [string, string | Buffer]> = [
  ['http_2_preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
  ['http_1_2', 'GET http://origin.test/ HTTP/1.2\r\nHost: origin.test\r\n\r\n'],
  ['http_3_0', 'GET http://origin.test/ HTTP/3.0\r\nHost: origin.test\r\n\r\n'],
  ['version_with_junk', 'GET http://origin.test/ HTTP/1.1x\r\nHost: origin.test\r\n\r\n'],
  ['lower_case_method', 'get http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n'],
  ['tab_in_request_line', 'GET\thttp://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n'],
  ['bare_lf_line_endings', 'GET http://origin.test/ HTTP/1.1\nHost: origin.test\n\n'],
  ['bare_cr_in_request_line', 'GET http://origin.test/\r HTTP/1.1\r\nHost: origin.test\r\n\r\n'],
  ['nul_in_request_target', 'GET http://origin.test/\x00 HTTP/1.1\r\nHost: origin.test\r\n\r\n'],
  ['tls_client_hello_on_plain_port', clientHello({ sni: ['origin.test'] })],
  ['sslv2_style_hello', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10])],
  ['binary_garbage', Buffer.from([0x00, 0x01, 0x02, 0xff, 0xfe, 0x0d, 0x0a, 0x0d, 0x0a])],
  ['utf8_bom_before_method', '\ufeffGET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n'],
  ['ssh_banner', 'SSH-2.0-OpenSSH_9.6\r\n'],
  ['smtp_helo', 'HELO evil.test\r\n\r\n'],
];

describe('adversarial: request framing', () => {
  let h: Harness;
  let origin: RecordingOrigin;
  let wsOrigin: net.Server;
  let wsBytes = '';
  let auth: string;
  let wsPort = 0;

  beforeAll(async () => {
    origin = await startRecordingOrigin('127.0.0.1');
    // A WebSocket destination whose server does NOT switch protocols: it answers 200 and keeps
    // the connection open, recording every byte it is sent.
    wsOrigin = net.createServer((s) => {
      let answered = false;
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => {
        wsBytes += d.toString('latin1');
        if (!answered && wsBytes.includes('\r\n\r\n')) {
          answered = true;
          s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
        }
      });
    });
    await new Promise<void>((resolve) => wsOrigin.listen(0, '127.0.0.1', resolve));
    wsPort = (wsOrigin.address() as net.AddressInfo).port;
    h = await startHarness({
      policy: `
version: 1
destinations:
  origin:
    hosts: [origin.test]
    ports: [${origin.port}]
    allowPrivate: [127.0.0.1/32]
  ws:
    hosts: [ws.test]
    ports: [${wsPort}]
    websocket: true
    methods: [GET]
    paths: ["/ws"]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [origin, ws]
limits:
  maxHeaderBytes: ${MAX_HEADER_BYTES}
  maxUrlLength: ${MAX_URL}
  maxRequestBodyBytes: ${MAX_BODY}
  requestsPerMinute: 100000
`,
      dns: { 'origin.test': { A: ['127.0.0.1'] }, 'ws.test': { A: ['127.0.0.1'] } },
    });
    const { token } = await h.createSession('framer');
    auth = basicAuth('framer', token);
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await new Promise((resolve) => wsOrigin?.close(resolve));
  });

  // After every trick: the proxy is alive, serves the next client, and logged no internal failure.
  afterEach(async () => {
    const before = origin.requests.length;
    const next = await rawRequest(h.proxyPort, get(`http://origin.test:${origin.port}/next-client`, auth));
    expect(next.status).toBe(200);
    expect(origin.requests.length).toBe(before + 1);
    expect(internalErrors(h.logs)).toEqual([]);
  });

  const url = (path = '/'): string => `http://origin.test:${origin.port}${path}`;
  /** Origin requests during `fn`. */
  const upstream = async <T>(fn: () => Promise<T>, settleMs = 50): Promise<{ out: T; seen: typeof origin.requests }> => {
    const before = origin.requests.length;
    const out = await fn();
    await sleep(settleMs);
    return { out, seen: origin.requests.slice(before) };
  };

  describe('ambiguous framing is refused before anything goes upstream', () => {
    test.each(REFUSED)('%s: %s, the origin sees no request, the connection is closed', async (_trick, lines, body, status) => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, head(`POST ${url('/framing')} HTTP/1.1`, ['Host: origin.test', ...lines], auth) + body, { untilClose: true, timeoutMs: 1500 }));
      expect(out.status).toBe(status);
      expect(out.responses).toHaveLength(1);
      expect(out.closedByPeer).toBe(true);
      expect(seen).toEqual([]);
    });

    test.each(BROKEN_BODIES)('%s: %s, the connection is closed, nothing ever completes upstream', async (_trick, lines, body, status) => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, head(`POST ${url('/framing')} HTTP/1.1`, ['Host: origin.test', ...lines], auth) + body, { untilClose: true, timeoutMs: 1500 }), 150);
      expect(out.status).toBe(status);
      expect(out.closedByPeer).toBe(true);
      expect(seen.length).toBeLessThanOrEqual(1);
      expect(seen.filter((r) => r.complete)).toEqual([]);
    });

    test.each(NOT_HTTP)('%s: refused, never parsed as a request, nothing upstream', async (_trick, bytes) => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, bytes, { untilClose: true, timeoutMs: 1500 }));
      expect([0, 400]).toContain(out.status);
      expect(out.responses.length).toBeLessThanOrEqual(1);
      expect(seen).toEqual([]);
    });

    test('http_0_9_request: no version, so no headers and no credentials: 407 at most, never forwarded', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, `GET ${url('/')}\r\n\r\n`, { untilClose: true, timeoutMs: 1000 }));
      expect([0, 400, 407]).toContain(out.status);
      expect(seen).toEqual([]);
    });

    test('double_space_in_request_line: tolerated by the parser, but judged as one request and rebuilt upstream', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, `GET  ${url('/double-space')} HTTP/1.1\r\nHost: origin.test\r\nProxy-Authorization: ${auth}\r\n\r\n`));
      expect(out.status).toBe(200);
      expect(seen.map((r) => [r.method, r.url])).toEqual([['GET', '/double-space']]);
    });
  });

  describe('bodies that hide a second request reach the origin as one request', () => {
    test('get_with_chunked_body_hiding_a_request: one GET upstream, its body the hidden bytes, no /admin', async () => {
      const body = `${INNER.length.toString(16)}\r\n${INNER}\r\n0\r\n\r\n`;
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/outer'), auth, ['Transfer-Encoding: chunked']) + body));
      expect(out.status).toBe(200);
      expect(seen.map((s) => [s.method, s.url, s.body.toString('latin1'), s.complete])).toEqual([['GET', '/outer', INNER, true]]);
    });

    test('post_with_content_length_body_hiding_a_request: one POST upstream, no /admin', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/outer'), auth, [`Content-Length: ${INNER.length}`], 'POST') + INNER));
      expect(out.status).toBe(200);
      expect(seen.map((s) => [s.url, s.body.toString('latin1')])).toEqual([['/outer', INNER]]);
    });

    test('denied_request_whose_body_is_an_allowed_request: 403; the body is discarded, never parsed as the next request', async () => {
      const allowed = get(url('/smuggled'), auth);
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get('http://evil.test/', auth, [`Content-Length: ${allowed.length}`], 'POST') + allowed, { responses: 2, timeoutMs: 800 }));
      expect(out.responses.map((r) => r.status)).toEqual([403]);
      expect(seen).toEqual([]);
    });

    test('chunk_extensions_are_legal: forwarded as one request with the decoded body', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/ext'), auth, ['Transfer-Encoding: chunked'], 'POST') + '5;name=value\r\nhello\r\n0\r\n\r\n'));
      expect(out.status).toBe(200);
      expect(seen.map((s) => s.body.toString())).toEqual(['hello']);
    });

    test('te_gzip_then_chunked_is_legal_framing: chunked is last, one request upstream', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/gz'), auth, ['Transfer-Encoding: gzip, chunked'], 'POST') + '3\r\nabc\r\n0\r\n\r\n'));
      expect(out.status).toBe(200);
      expect(seen).toHaveLength(1);
    });

    test('trailer_header_and_trailers: a declared Trailer header and the trailer fields (Host included) never reach the origin', async () => {
      const body = '5\r\nhello\r\n0\r\nX-Evil: 1\r\nHost: 169.254.169.254\r\nX-Portcullis-Reason: allowlisted\r\n\r\n';
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/trailer'), auth, ['Transfer-Encoding: chunked', 'Trailer: X-Evil, X-Portcullis-Reason'], 'POST') + body));
      expect(out.status).toBe(200);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.body.toString()).toBe('hello');
      expect(seen[0]!.headers['trailer']).toBeUndefined();
      expect(seen[0]!.headers['x-evil']).toBeUndefined();
      expect(seen[0]!.headers.host).toBe(`origin.test:${origin.port}`);
    });
  });

  describe('aborted uploads never complete upstream', () => {
    test('aborted_content_length_upload: half the body then a reset: at most one request upstream, and it never completes', async () => {
      const { seen } = await upstream(async () => {
        const s = net.connect(h.proxyPort, '127.0.0.1');
        s.on('error', () => undefined);
        await new Promise((resolve) => s.once('connect', resolve));
        s.write(get(url('/abort-cl'), auth, ['Content-Length: 100'], 'POST') + 'x'.repeat(50));
        await sleep(150);
        s.destroy();
      }, 200);
      expect(seen.length).toBeLessThanOrEqual(1);
      expect(seen.every((s) => !s.complete)).toBe(true);
    });

    test('aborted_chunked_upload: chunks without the terminating chunk then a reset: never completes upstream', async () => {
      const { seen } = await upstream(async () => {
        const s = net.connect(h.proxyPort, '127.0.0.1');
        s.on('error', () => undefined);
        await new Promise((resolve) => s.once('connect', resolve));
        s.write(get(url('/abort-chunked'), auth, ['Transfer-Encoding: chunked'], 'POST') + '5\r\nhello\r\n');
        await sleep(150);
        s.destroy();
      }, 200);
      expect(seen.length).toBeLessThanOrEqual(1);
      expect(seen.every((s) => !s.complete)).toBe(true);
    });

    test('half_closed_after_partial_body: the client ends its side mid-body: never completes upstream', async () => {
      const { seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/abort-fin'), auth, ['Content-Length: 100'], 'POST') + 'x'.repeat(10), { endAfterWrite: true, untilClose: true, timeoutMs: 800 }), 200);
      expect(seen.every((s) => !s.complete)).toBe(true);
    });
  });

  describe('oversize heads', () => {
    test.each([
      ['one_huge_header', [`X-Big: ${'a'.repeat(MAX_HEADER_BYTES)}`], '/', 431, 'headers_too_large'],
      ['many_small_headers', Array.from({ length: 1500 }, (_, i) => `x${i}: y`), '/', 431, 'headers_too_large'],
      ['request_line_over_the_head_limit', [], `/${'a'.repeat(MAX_HEADER_BYTES)}`, 431, 'headers_too_large'],
      ['url_over_the_url_limit_under_the_head_limit', [], `/${'a'.repeat(MAX_URL + 10)}`, 414, 'url_too_long'],
      ['huge_cookie', [`Cookie: ${'k=v; '.repeat(1000)}`], '/', 431, 'headers_too_large'],
    ] as const)('%s: %s %s %s, nothing upstream', async (_trick, lines, path, status, reason) => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url(path), auth, lines)));
      expect([out.status, out.reason]).toEqual([status, reason]);
      expect(seen).toEqual([]);
    });

    test('oversize_method_token: 400, nothing upstream', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/'), auth, [], 'A'.repeat(MAX_HEADER_BYTES))));
      expect([400, 431]).toContain(out.status);
      expect(seen).toEqual([]);
    });
  });

  describe('pipelining and Expect', () => {
    test('pipelined_allowed_then_denied: two responses in order, exactly one request upstream', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/first'), auth) + get('http://evil.test/second', auth), { responses: 2 }));
      expect(out.responses.map((r) => r.status)).toEqual([200, 403]);
      expect(seen.map((s) => s.url)).toEqual(['/first']);
    });

    test('pipelined_ten_requests: ten responses, exactly ten requests upstream, in order', async () => {
      const reqs = Array.from({ length: 10 }, (_, i) => get(url(`/p${i}`), auth)).join('');
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, reqs, { responses: 10, timeoutMs: 5000 }));
      expect(out.responses.map((r) => r.status)).toEqual(Array(10).fill(200));
      expect(seen.map((s) => s.url)).toEqual(Array.from({ length: 10 }, (_, i) => `/p${i}`));
    });

    test('pipelined_request_after_a_400: the connection closes after the 400; the second request is never read', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/x'), auth, ['Bad Header: x']) + get(url('/after-400'), auth), { untilClose: true, timeoutMs: 1500 }));
      expect(out.responses.map((r) => r.status)).toEqual([400]);
      expect(out.closedByPeer).toBe(true);
      expect(seen).toEqual([]);
    });

    test('expect_continue_on_a_denied_upload: 403 and no 100 Continue; the body is never sent anywhere', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get('http://evil.test/upload', auth, ['Content-Length: 5', 'Expect: 100-continue'], 'POST')));
      expect(out.text).not.toContain('100 Continue');
      expect(out.status).toBe(403);
      expect(seen).toEqual([]);
    });

    test('expect_continue_over_the_body_cap: 413 and no 100 Continue', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/big'), auth, [`Content-Length: ${MAX_BODY + 1}`, 'Expect: 100-continue'], 'POST')));
      expect(out.text).not.toContain('100 Continue');
      expect([out.status, out.reason]).toEqual([413, 'body_too_large']);
      expect(seen).toEqual([]);
    });
  });

  describe('upgrade smuggling', () => {
    test('h2c_upgrade_is_stripped: served as a plain request, no Upgrade or HTTP2-Settings upstream, then closed', async () => {
      const { out, seen } = await upstream(() =>
        rawRequest(h.proxyPort, get(url('/h2c'), auth, ['Connection: Upgrade, HTTP2-Settings', 'Upgrade: h2c', 'HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA']), { untilClose: true, timeoutMs: 1500 }),
      );
      expect(out.responses.map((r) => r.status)).toEqual([200]);
      expect(out.closedByPeer).toBe(true);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.headers['upgrade']).toBeUndefined();
      expect(seen[0]!.headers['http2-settings']).toBeUndefined();
    });

    test('h2c_upgrade_with_body: refused 400; the body is never a second request', async () => {
      const { out, seen } = await upstream(() => rawRequest(h.proxyPort, get(url('/h2c'), auth, ['Connection: Upgrade', 'Upgrade: h2c', `Content-Length: ${INNER.length}`], 'POST') + INNER, { untilClose: true, timeoutMs: 1500 }));
      expect(out.responses.map((r) => r.status)).toEqual([400]);
      expect(seen).toEqual([]);
    });

    test('websocket_upgrade_to_a_path_outside_the_rules: path_not_allowed before anything is dialed', async () => {
      wsBytes = '';
      const out = await rawRequest(h.proxyPort, get(`http://ws.test:${wsPort}/admin`, auth, ['Upgrade: websocket', 'Connection: Upgrade']));
      expect([out.status, out.reason]).toEqual([403, 'path_not_allowed']);
      expect(wsBytes).toBe('');
    });

    // Found by this suite, now fixed (src/proxy/server.ts #onUpgrade + tunnel.ts relay): the upgrade request is relayed
    // and the connection becomes a raw pipe at once, whatever the origin answers. When the origin
    // does not switch protocols (any non-101), every later byte from the client reaches it as
    // new, unjudged requests: methods and paths rules of a websocket destination are bypassed.
    // See the report of issue 4 for the repro and the fix (read the upstream status line; relay
    // only after a 101, otherwise answer and close).
    test('websocket_upgrade_refused_by_origin_then_smuggled_request: nothing after a non-101 answer reaches the origin', async () => {
      wsBytes = '';
      const out = await rawRequest(h.proxyPort, [get(`http://ws.test:${wsPort}/ws`, auth, ['Upgrade: websocket', 'Connection: Upgrade']), 'POST /admin HTTP/1.1\r\nHost: ws.test\r\nContent-Length: 0\r\n\r\n'], { gapMs: 200, responses: 2, timeoutMs: 800 });
      expect(out.status).toBe(200);
      expect(wsBytes).not.toContain('/admin');
    });

    // Found by this suite, now fixed (same place): Transfer-Encoding is dropped from the forwarded upgrade head as hop-by-hop,
    // but the chunked body bytes that followed are relayed raw: the origin sees a body-less GET
    // followed by whatever the "body" says. Upgrade requests with a body should be refused (400),
    // as h2c upgrades with a body already are.
    test('websocket_upgrade_with_chunked_body: refused, the body never reaches the origin as a request', async () => {
      wsBytes = '';
      const out = await rawRequest(h.proxyPort, get(`http://ws.test:${wsPort}/ws`, auth, ['Upgrade: websocket', 'Connection: Upgrade', 'Transfer-Encoding: chunked']) + `${INNER.length.toString(16)}\r\n${INNER}\r\n0\r\n\r\n`, { timeoutMs: 800 });
      expect(out.status).toBe(400);
      expect(wsBytes).not.toContain('/admin');
    });
  });
});
