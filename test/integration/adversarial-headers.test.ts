/**
 * Adversarial suite — header hygiene (issue 4), on loopback. Proxy-only and hop-by-hop request
 * headers never reach the origin, whatever their case or count; `Connection:` can strip ordinary
 * headers but never Host or the body's framing; origins cannot forge Portcullis headers, proxy
 * challenges or hop-by-hop headers, and a response with ambiguous framing is never relayed.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { basicAuth, get, internalErrors, rawRequest, startRawOrigin, startRecordingOrigin, type RecordingOrigin, type Trap } from '../helpers/adversary.js';
import { startHarness, type Harness } from '../helpers/harness.js';

/** [trick, header lines sent, lower-case names that must NOT reach the origin]. */
const STRIPPED: ReadonlyArray<readonly [string, readonly string[], readonly string[]]> = [
  ['proxy_connection', ['Proxy-Connection: keep-alive'], ['proxy-connection']],
  ['portcullis_reason_forged_by_client', ['X-Portcullis-Reason: allowlisted'], ['x-portcullis-reason']],
  ['portcullis_headers_any_case', ['x-PORTCULLIS-request-id: forged', 'X-Portcullis-Account: admin', 'X-PORTCULLIS-SESSION: s'], ['x-portcullis-request-id', 'x-portcullis-account', 'x-portcullis-session']],
  ['keep_alive', ['Keep-Alive: timeout=999, max=1000'], ['keep-alive']],
  ['te_trailers', ['TE: trailers, deflate'], ['te']],
  ['trailer_declaration', ['Trailer: X-Late'], ['trailer']],
  ['http2_settings_without_upgrade', ['HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA'], ['http2-settings']],
  ['connection_named_header', ['Connection: X-Secret', 'X-Secret: internal-token'], ['x-secret']],
  ['connection_names_several', ['Connection: X-A, X-B', 'X-A: 1', 'X-B: 2', 'X-C: 3'], ['x-a', 'x-b']],
  ['connection_header_repeated', ['Connection: X-A', 'Connection: X-B', 'X-A: 1', 'X-B: 2'], ['x-a', 'x-b']],
  ['connection_odd_spacing_and_empty_tokens', ['Connection: ,, X-A ,,\t, X-B', 'X-A: 1', 'X-B: 2'], ['x-a', 'x-b']],
  ['connection_upper_case_token', ['Connection: X-SECRET', 'x-secret: 1'], ['x-secret']],
  ['connection_names_portcullis_header', ['Connection: X-Portcullis-Reason', 'X-Portcullis-Reason: x'], ['x-portcullis-reason']],
  ['connection_close', ['Connection: close'], []],
  ['upgrade_without_connection_upgrade', ['Upgrade: websocket'], ['upgrade']],
  ['proxy_authenticate_sent_by_client', ['Proxy-Authenticate: Basic realm="x"'], ['proxy-authenticate']],
  ['proxy_connection_upper_case', ['PROXY-CONNECTION: close'], ['proxy-connection']],
  ['connection_names_keep_alive', ['Connection: Keep-Alive', 'Keep-Alive: timeout=1'], ['keep-alive']],
];

describe('adversarial: header hygiene', () => {
  let h: Harness;
  let origin: RecordingOrigin;
  const raw = new Map<string, Trap>();
  let auth: string;
  let token: string;

  /** Raw origins answering with fixed bytes: forged and malformed responses. */
  const RESPONSES: Readonly<Record<string, string>> = {
    forged: [
      'HTTP/1.1 200 OK',
      'X-Portcullis-Reason: allowlisted',
      'x-portcullis-request-id: forged-id',
      'X-PORTCULLIS-Decision: allow',
      'Proxy-Authenticate: Basic realm="phish"',
      'Proxy-Connection: keep-alive',
      'Keep-Alive: timeout=999',
      'Connection: X-Origin-Secret, Content-Length',
      'X-Origin-Secret: s3cr3t',
      'Trailer: X-Late',
      'Upgrade: h2c',
      'TE: trailers',
      'Set-Cookie: a=1',
      'Set-Cookie: b=2',
      'X-Kept: yes',
      'Content-Length: 2',
      '',
      'ok',
    ].join('\r\n'),
    challenge: 'HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="origin-phish"\r\nContent-Length: 4\r\n\r\nnope',
    clte: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    dupcl: 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!',
    obsfold: 'HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\nok',
    barelf: 'HTTP/1.1 200 OK\nContent-Length: 2\n\nok',
    nul: 'HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok',
    switching: 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW BYTES',
    badstatus: 'HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok',
    notHttp: 'SSH-2.0-OpenSSH_9.6\r\n',
    headerInjection: 'HTTP/1.1 200 OK\r\nX-A: a\rInjected: 1\r\nContent-Length: 2\r\n\r\nok',
    extraResponse: 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nX-Smuggled: yes\r\nContent-Length: 7\r\n\r\nSMUGGLE',
  };

  beforeAll(async () => {
    origin = await startRecordingOrigin('127.0.0.1');
    for (const [name, bytes] of Object.entries(RESPONSES)) raw.set(name, await startRawOrigin(() => bytes));
    const rawPorts = [...raw.values()].map((t) => t.port);
    h = await startHarness({
      policy: `
version: 1
destinations:
  origin:
    hosts: [origin.test, raw.test]
    ports: [${origin.port}, ${rawPorts.join(', ')}]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [origin]
limits:
  requestsPerMinute: 100000
`,
      dns: { 'origin.test': { A: ['127.0.0.1'] }, 'raw.test': { A: ['127.0.0.1'] } },
    });
    ({ token } = await h.createSession('hygiene'));
    auth = basicAuth('hygiene', token);
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await Promise.all([...raw.values()].map((t) => t.close()));
  });

  const url = (path: string): string => `http://origin.test:${origin.port}${path}`;
  const names = (rawHeaders: readonly string[]): string[] => rawHeaders.filter((_v, i) => i % 2 === 0).map((n) => n.toLowerCase());

  describe('request headers', () => {
    test.each(STRIPPED)('%s: %j never reaches the origin', async (_trick, lines, forbidden) => {
      const before = origin.requests.length;
      const r = await rawRequest(h.proxyPort, get(url('/hygiene'), auth, lines));
      expect(r.status).toBe(200);
      const seen = origin.requests.slice(before);
      expect(seen).toHaveLength(1);
      const got = names(seen[0]!.rawHeaders);
      for (const name of forbidden) expect(got).not.toContain(name);
      // Credentials for the proxy never go upstream, whatever else was sent.
      expect(got).not.toContain('proxy-authorization');
    });

    test('proxy_authorization_in_every_spelling: none of them reaches the origin, and none is logged', async () => {
      const before = origin.requests.length;
      const lines = [`PROXY-AUTHORIZATION: ${auth}`, `proxy-authorization: ${basicAuth('hygiene', token)}`];
      const r = await rawRequest(h.proxyPort, get(url('/creds'), undefined, lines));
      expect(r.status).toBe(200);
      expect(names(origin.requests.slice(before)[0]!.rawHeaders)).not.toContain('proxy-authorization');
      expect(h.logs.text()).not.toContain(token);
      expect(h.logs.text()).not.toContain(auth.slice('Basic '.length));
    });

    test.each([
      ['host', 'Connection: Host', [], 'host'],
      ['content_length', 'Connection: Content-Length', ['Content-Length: 5'], 'content-length'],
      ['transfer_encoding', 'Connection: Transfer-Encoding', ['Transfer-Encoding: chunked'], null],
    ] as const)('connection_cannot_strip_%s: the origin still gets a framed request with its Host', async (_trick, connection, framing, kept) => {
      const before = origin.requests.length;
      const body = framing.length === 0 ? '' : framing[0]!.startsWith('Content-Length') ? 'hello' : '5\r\nhello\r\n0\r\n\r\n';
      const r = await rawRequest(h.proxyPort, get(url('/framed'), auth, [connection, ...framing], framing.length === 0 ? 'GET' : 'POST') + body);
      expect(r.status).toBe(200);
      const seen = origin.requests.slice(before);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.headers.host).toBe(`origin.test:${origin.port}`);
      if (kept !== null) expect(names(seen[0]!.rawHeaders)).toContain(kept);
      if (framing.length > 0) expect([seen[0]!.body.toString(), seen[0]!.complete]).toEqual(['hello', true]);
    });

    test('end_to_end_headers_pass: Authorization, Cookie and custom headers reach the origin unchanged', async () => {
      const before = origin.requests.length;
      const r = await rawRequest(h.proxyPort, get(url('/e2e'), auth, ['Authorization: Bearer origin-token', 'Cookie: a=1', 'X-Custom: yes']));
      expect(r.status).toBe(200);
      const seen = origin.requests.slice(before)[0]!;
      expect(seen.headers).toMatchObject({ authorization: 'Bearer origin-token', cookie: 'a=1', 'x-custom': 'yes' });
    });
  });

  describe('response headers', () => {
    const fetchRaw = (name: string): ReturnType<typeof rawRequest> => rawRequest(h.proxyPort, get(`http://raw.test:${raw.get(name)!.port}/`, auth));

    test('forged_proxy_and_hop_by_hop_headers_from_the_origin: dropped; end-to-end headers and the body kept', async () => {
      const r = await fetchRaw('forged');
      expect(r.status).toBe(200);
      const res = r.responses[0]!;
      for (const name of ['x-portcullis-reason', 'x-portcullis-request-id', 'x-portcullis-decision', 'proxy-authenticate', 'proxy-connection', 'x-origin-secret', 'trailer', 'upgrade', 'te']) {
        expect(res.headers[name]).toBeUndefined();
      }
      // Node answers keep-alive itself; the origin's Keep-Alive value never leaks through.
      expect(res.headers['keep-alive'] ?? '').not.toContain('999');
      expect(res.headers).toMatchObject({ 'x-kept': 'yes', 'set-cookie': 'a=1, b=2', 'content-length': '2' });
      expect(res.body).toBe('ok');
    });

    test('origin_407_challenge: passes as the origin status, but without Proxy-Authenticate and never as a Portcullis denial', async () => {
      const r = await fetchRaw('challenge');
      expect(r.status).toBe(407);
      expect(r.responses[0]!.headers['proxy-authenticate']).toBeUndefined();
      expect(r.responses[0]!.headers['x-portcullis-reason']).toBeUndefined();
    });

    test.each([
      ['content_length_and_transfer_encoding', 'clte'],
      ['two_different_content_lengths', 'dupcl'],
      ['obs_fold', 'obsfold'],
      ['bare_lf_line_endings', 'barelf'],
      ['nul_in_header', 'nul'],
      ['switching_protocols_to_a_plain_request', 'switching'],
      ['four_digit_status', 'badstatus'],
      ['not_http_at_all', 'notHttp'],
      ['bare_cr_header_injection', 'headerInjection'],
    ])('malformed_response_%s: 502, the origin bytes are never relayed', async (_trick, name) => {
      const r = await fetchRaw(name);
      expect([r.status, r.reason]).toEqual([502, 'upstream_connect_error']);
      expect(r.text).not.toContain('RAW BYTES');
      expect(r.text).not.toContain('Injected');
      expect(r.text).not.toContain('SSH-2.0');
      expect(r.responses).toHaveLength(1);
    });

    test('origin_sends_a_second_unsolicited_response: the client gets exactly its own response; the extra one is never relayed, not even to its next request', async () => {
      const port = raw.get('extraResponse')!.port;
      const r = await rawRequest(h.proxyPort, get(`http://raw.test:${port}/a`, auth) + get(`http://raw.test:${port}/b`, auth), { responses: 2, timeoutMs: 1500 });
      expect(r.responses.map((x) => [x.status, x.body])).toEqual([
        [200, 'ok'],
        [200, 'ok'],
      ]);
      expect(r.text).not.toContain('SMUGGLE');
      expect(r.text.toLowerCase()).not.toContain('x-smuggled');
    });

    test('no_internal_failures: none of the above made the proxy log an internal error', () => {
      expect(internalErrors(h.logs)).toEqual([]);
    });
  });
});
