import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, afterEach, describe, expect, test, vi } from 'vitest';
import { EGRESS_FIELDS, EGRESS_MSG, egressJsonMembers, egressLine } from '../../src/observability/log-fields.js';
import type { EgressFields } from '../../src/observability/log-fields.js';
import { cachedIsoTime, createLogger, flushLogger, logEgress, REDACTED, scrubSecrets } from '../../src/observability/logger.js';
import type { Logger } from '../../src/observability/logger.js';

/** A logger writing into memory; lines() parses every JSON line. */
function capture(level = 'trace'): { logger: Logger; raw: () => string; lines: () => Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(String(chunk));
      callback();
    },
  });
  const logger = createLogger({ level, destination: stream });
  const raw = (): string => chunks.join('');
  const lines = (): Array<Record<string, unknown>> =>
    raw()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { logger, raw, lines };
}

const SECRET = 'S3cr3tValue-9f8e7d';
const PCS_TOKEN = `pcs_0123456789abcdef_${'A'.repeat(40)}xyz`;
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl';

type LogRow = readonly [name: string, log: (logger: Logger) => void];

// Every shape in which a credential could reach a log line. None may show the secret.
const SECRET_SHAPES: readonly LogRow[] = [
  ['headers_proxy_authorization', (l) => l.info({ headers: { 'proxy-authorization': `Basic ${SECRET}` } }, 'x')],
  ['headers_authorization', (l) => l.info({ headers: { authorization: `Bearer ${SECRET}` } }, 'x')],
  ['headers_cookie', (l) => l.info({ headers: { cookie: `sid=${SECRET}` } }, 'x')],
  ['headers_set_cookie', (l) => l.info({ headers: { 'set-cookie': [`sid=${SECRET}`] } }, 'x')],
  ['headers_title_case', (l) => l.info({ headers: { 'Proxy-Authorization': SECRET, Authorization: SECRET, Cookie: SECRET, 'Set-Cookie': SECRET } }, 'x')],
  ['headers_upper_case', (l) => l.info({ headers: { 'PROXY-AUTHORIZATION': SECRET, AUTHORIZATION: SECRET, COOKIE: SECRET } }, 'x')],
  ['req_headers', (l) => l.warn({ req: { method: 'GET', headers: { 'proxy-authorization': SECRET } } }, 'x')],
  ['request_headers', (l) => l.warn({ request: { headers: { authorization: SECRET } } }, 'x')],
  ['res_headers', (l) => l.warn({ res: { headers: { 'set-cookie': SECRET } } }, 'x')],
  ['response_headers', (l) => l.warn({ response: { headers: { 'Set-Cookie': SECRET } } }, 'x')],
  ['upstream_headers', (l) => l.warn({ upstream: { headers: { cookie: SECRET } } }, 'x')],
  ['raw_headers_array', (l) => l.warn({ rawHeaders: ['Proxy-Authorization', SECRET] }, 'x')],
  ['req_raw_headers', (l) => l.warn({ req: { rawHeaders: ['pRoXy-AuThOrIzAtIoN', SECRET] } }, 'x')],
  ['token_field', (l) => l.info({ token: SECRET }, 'x')],
  ['password_field', (l) => l.info({ password: SECRET }, 'x')],
  ['session_token', (l) => l.info({ session: { id: 's1', token: SECRET } }, 'session created')],
  ['body_password', (l) => l.info({ body: { password: SECRET } }, 'x')],
  ['auth_secret', (l) => l.info({ auth: { secret: SECRET } }, 'x')],
  ['oidc_id_token', (l) => l.info({ oidc: { idToken: SECRET } }, 'x')],
  ['credentials_whole', (l) => l.info({ credentials: { account: 'a', token: SECRET } }, 'x')],
  ['store_url_password', (l) => l.info({ store: { url: `redis://:${SECRET}@redis:6379` } }, 'x')],
  ['config_store_url', (l) => l.info({ config: { store: { url: `redis://:${SECRET}@redis:6379` } } }, 'x')],
  ['child_binding_headers', (l) => l.child({ headers: { authorization: SECRET } }).info('x')],
  ['child_binding_token', (l) => l.child({ token: SECRET }).info('x')],
  ['grandchild_binding', (l) => l.child({ reqId: 'r' }).child({ session: { token: SECRET } }).info('x')],
  [
    'error_with_headers_and_config',
    (l) => l.error({ err: Object.assign(new Error('request failed'), { headers: { authorization: SECRET }, config: { auth: { password: SECRET } } }) }, 'x'),
  ],
  ['error_message_basic', (l) => l.error(new Error(`upstream said: Proxy-Authorization: Basic ${SECRET}`))],
  ['error_message_bearer', (l) => l.error({ err: new Error(`rejected Bearer ${SECRET} from client`) }, 'x')],
  ['error_message_url_password', (l) => l.error({ err: new Error(`connect http://acct:${SECRET}@proxy:3128 failed`) }, 'x')],
  ['error_message_pcs_token', (l) => l.error({ err: new Error(`bad token ${PCS_TOKEN}`) }, 'x')],
  ['error_message_jwt', (l) => l.error({ err: new Error(`jwt ${JWT} expired`) }, 'x')],
  ['error_cause', (l) => l.error({ err: new Error('outer', { cause: new Error(`inner cookie: ${SECRET}`) }) }, 'x')],
  ['aggregate_error', (l) => l.error({ err: new AggregateError([new Error(`Bearer ${SECRET}`)], 'many') }, 'x')],
  ['message_string', (l) => l.warn(`store failed: redis://:${SECRET}@redis:6379`)],
  ['message_interpolation', (l) => l.warn('auth header was %s', `Basic ${SECRET}`)],
  ['message_from_err_field', (l) => l.error({ err: new Error(`Bearer ${SECRET}`) })],
  ['message_from_error_like', (l) => l.error({ err: { message: `cookie: ${SECRET}` } })],
  ['child_message', (l) => l.child({ reqId: 'r' }).info(`token ${PCS_TOKEN}`)],
  ['egress_error_field', (l) => l.info(egressLine({ reqId: 'r', kind: 'http', decision: 'error', reason: 'upstream_connect_error', error: `Bearer ${SECRET}` }), EGRESS_MSG)],
  ['egress_path_query', (l) => l.info(egressLine({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted', path: `/v1?key=${SECRET}` }), EGRESS_MSG)],
  // The proxy writes its egress lines with logEgress, past pino's hooks: the same guarantees.
  ['logEgress_error_field', (l) => logEgress(l, ({ reqId: 'r', kind: 'connect', decision: 'error', reason: 'upstream_connect_error', error: `connect http://a:${SECRET}@x failed: Basic ${SECRET}` }))],
  ['logEgress_jwt_error', (l) => logEgress(l, ({ reqId: 'r', kind: 'http', decision: 'error', reason: 'upstream_tls_error', error: `${JWT} / ${PCS_TOKEN}` }))],
  ['logEgress_path_query', (l) => logEgress(l, ({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted', path: `/v1?key=${SECRET}` }))],
];

describe('redaction', () => {
  test.each(SECRET_SHAPES)('%s: the secret never appears', (_name, log) => {
    const { logger, raw, lines } = capture();
    log(logger);
    expect(raw()).not.toContain(SECRET);
    expect(raw()).not.toContain(PCS_TOKEN);
    expect(raw()).not.toContain(JWT);
    expect(lines()).toHaveLength(1);
  });

  test('redacted values are replaced in place, the rest of the object kept', () => {
    const { logger, lines } = capture();
    logger.info({ headers: { 'proxy-authorization': 'Basic x', host: 'example.com', Cookie: 'a=b' } }, 'h');
    expect(lines()[0]?.['headers']).toEqual({ 'proxy-authorization': REDACTED, host: 'example.com', Cookie: REDACTED });
  });

  test('the logged object itself is not modified', () => {
    const { logger } = capture();
    const headers = { authorization: 'Bearer x' };
    logger.info({ headers }, 'h');
    expect(headers.authorization).toBe('Bearer x');
  });

  test('messages without secrets are untouched, the egress message included', () => {
    const { logger, lines } = capture();
    logger.info('proxy listening on 127.0.0.1:3128 (Basic realm="portcullis")');
    logger.info({ reqId: 'r' }, EGRESS_MSG);
    logger.error(new Error('getaddrinfo ENOTFOUND example.com'));
    expect(lines().map((l) => l['msg'])).toEqual(['proxy listening on 127.0.0.1:3128 (Basic realm="portcullis")', 'egress', 'getaddrinfo ENOTFOUND example.com']);
  });

  test('a pcs_ token keeps its id so the session can be found', () => {
    const { logger, lines } = capture();
    logger.error({ err: new Error(`bad ${PCS_TOKEN}`) }, 'x');
    expect((lines()[0]?.['err'] as { message: string }).message).toBe(`bad pcs_0123456789abcdef_${REDACTED}`);
  });
});

describe('line shape', () => {
  test('JSON lines: level name, ISO time, name, msg; no pid or hostname', () => {
    const { logger, lines } = capture('info');
    logger.info({ a: 1 }, 'hello');
    const [line] = lines();
    expect(line).toBeDefined();
    expect(Object.keys(line ?? {})).toEqual(['level', 'time', 'name', 'a', 'msg']);
    expect(line).toMatchObject({ level: 'info', name: 'portcullis', a: 1, msg: 'hello' });
    expect(new Date(String(line?.['time'])).toISOString()).toBe(line?.['time']);
  });

  test('base fields are added to every line', () => {
    const chunks: string[] = [];
    const stream = new Writable({ write: (c: Buffer, _e, cb) => (chunks.push(String(c)), cb()) });
    createLogger({ level: 'info', destination: stream, base: { replica: 'r-1' } }).info('x');
    expect(JSON.parse(chunks.join(''))).toMatchObject({ name: 'portcullis', replica: 'r-1', msg: 'x' });
  });

  test('the level filters', () => {
    const { logger, lines } = capture('warn');
    logger.info('no');
    logger.debug('no');
    logger.warn('yes');
    logger.error('yes');
    expect(lines().map((l) => l['level'])).toEqual(['warn', 'error']);
  });

  test('errors are serialized with type, message and stack', () => {
    const { logger, lines } = capture();
    logger.error({ err: new TypeError('bad thing') }, 'failed');
    expect(lines()[0]?.['err']).toMatchObject({ type: 'TypeError', message: 'bad thing' });
  });

  test('a non-error value under err passes through', () => {
    const { logger, lines } = capture();
    logger.error({ err: { code: 'X' } }, 'failed');
    expect(lines()[0]?.['err']).toEqual({ code: 'X' });
  });
});

describe('scrubSecrets', () => {
  const ROWS: ReadonlyArray<readonly [name: string, input: string, output: string]> = [
    ['basic', 'Proxy auth Basic YWxpY2U6c2VjcmV0 refused', `Proxy auth Basic ${REDACTED} refused`],
    ['basic_lower_case', 'basic YWxpY2U6c2VjcmV0==', `basic ${REDACTED}`],
    ['bearer', 'got Bearer abc.def-ghi_jkl~mno+p/q= from x', `got Bearer ${REDACTED} from x`],
    ['authorization_header_line', 'Authorization: Digest username="a", response="b"', `Authorization: ${REDACTED}`],
    ['proxy_authorization_header', 'proxy-authorization:Basic Zm9v\nnext line', `proxy-authorization:${REDACTED}\nnext line`],
    ['cookie_header', 'Cookie: sid=1; other=2', `Cookie: ${REDACTED}`],
    ['set_cookie_json', '{"set-cookie": "sid=1"}', `{"set-cookie": "${REDACTED}"}`],
    ['pcs_token', `token ${PCS_TOKEN} rejected`, `token pcs_0123456789abcdef_${REDACTED} rejected`],
    ['pcs_token_exact_length', `pcs_abcdefghij012345_${'a'.repeat(43)}`, `pcs_abcdefghij012345_${REDACTED}`],
    ['pcs_token_truncated', 'pcs_abcdefghij012345_abc', `pcs_abcdefghij012345_${REDACTED}`],
    ['jwt', `id_token=${JWT}; next`, `id_token=${REDACTED}; next`],
    ['jwt_unsigned', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.', REDACTED],
    ['url_password', 'connect ECONNREFUSED http://ci-build:pcs@proxy:3128/', `connect ECONNREFUSED http://ci-build:${REDACTED}@proxy:3128/`],
    ['redis_url_password', 'redis://:hunter2@redis:6379/0 down', `redis://:${REDACTED}@redis:6379/0 down`],
    ['several_in_one', `Bearer ${JWT} and ${PCS_TOKEN}`, `Bearer ${REDACTED} and pcs_0123456789abcdef_${REDACTED}`],
    ['nothing_to_scrub', 'getaddrinfo ENOTFOUND example.com', 'getaddrinfo ENOTFOUND example.com'],
    ['url_without_password', 'GET http://example.com/path failed', 'GET http://example.com/path failed'],
    ['pcs_id_too_short', 'pcs_abc_def', 'pcs_abc_def'],
    ['empty', '', ''],
  ];
  test.each(ROWS)('%s', (_name, input, output) => {
    expect(scrubSecrets(input)).toBe(output);
  });

  test('is stable: scrubbing twice changes nothing more', () => {
    for (const [, input] of ROWS) expect(scrubSecrets(scrubSecrets(input))).toBe(scrubSecrets(input));
  });
});

describe('egressLine', () => {
  const FULL: EgressFields = {
    durationMs: 12,
    reqId: 'r-1',
    reason: 'allowlisted',
    kind: 'http',
    decision: 'allow',
    account: 'ci-build',
    sessionId: 's-1',
    method: 'GET',
    host: 'registry.npmjs.org',
    port: 443,
    path: '/left-pad',
    queryLength: 0,
    wouldDeny: 'not_allowlisted',
    destination: 'package-registries',
    lockdown: false,
    resolvedIp: '104.16.0.1',
    status: 200,
    bytesOut: 10,
    bytesIn: 2000,
    error: 'none',
    phase: 'close',
  };

  test('fields come out in the canonical order', () => {
    expect(Object.keys(egressLine(FULL))).toEqual([...EGRESS_FIELDS]);
  });

  test('undefined fields are left off; false and 0 are kept', () => {
    const line = egressLine({ reqId: 'r', kind: 'connect', decision: 'deny', reason: 'not_allowlisted', lockdown: false, bytesIn: 0, host: undefined });
    expect(line).toEqual({ reqId: 'r', kind: 'connect', decision: 'deny', reason: 'not_allowlisted', lockdown: false, bytesIn: 0 });
    expect(Object.keys(line)).toEqual(['reqId', 'kind', 'decision', 'reason', 'lockdown', 'bytesIn']);
  });

  test('a query is cut off the path and its length logged in place', () => {
    const line = egressLine({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted', path: '/search?q=secret', status: 200 });
    expect(line).toEqual({ reqId: 'r', kind: 'http', path: '/search', queryLength: 8, decision: 'allow', reason: 'allowlisted', status: 200 });
    expect(Object.keys(line)).toEqual(['reqId', 'kind', 'path', 'queryLength', 'decision', 'reason', 'status']);
  });

  test('an explicit queryLength is kept', () => {
    expect(egressLine({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted', path: '/a?', queryLength: 3 })['queryLength']).toBe(3);
  });

  test('logged as msg "egress" with the fields at the top level', () => {
    const { logger, lines } = capture();
    logger.info(egressLine({ reqId: 'r', kind: 'connect', decision: 'allow', reason: 'allowlisted', host: 'github.com', port: 443, phase: 'close', bytesIn: 5, bytesOut: 6, durationMs: 7 }), EGRESS_MSG);
    expect(lines()[0]).toMatchObject({ msg: 'egress', reqId: 'r', host: 'github.com', phase: 'close', bytesIn: 5, bytesOut: 6, durationMs: 7 });
  });
});

describe('logEgress', () => {
  // Lines with every field kind: strings needing escapes, numbers, booleans, a close line.
  const LINES: ReadonlyArray<EgressFields> = [
    { reqId: 'r-1', kind: 'http', decision: 'allow', reason: 'allowlisted', account: 'ci', method: 'GET', host: 'a.example', port: 80, path: '/q"\\\u0001\u2028é', status: 200, bytesOut: 0, bytesIn: 12, durationMs: 0.125, lockdown: false },
    { reqId: 'r-2', kind: 'connect', decision: 'deny', reason: 'sni_mismatch', host: 'b.example', port: 443, error: 'sni says c.example' },
    { reqId: 'r-3', kind: 'connect', decision: 'allow', reason: 'allowlisted', bytesIn: 5, bytesOut: 6, durationMs: 7, phase: 'close' },
  ];
  // Both writes land in the same millisecond unless the clock ticks in between; then only the
  // time differs, and the pair is written again.
  const pinoAndFast = (fields: EgressFields): [string, string] => {
    const sink = (into: string[]): Writable => new Writable({ write: (c: Buffer | string, _e, cb) => (into.push(String(c)), cb()) });
    const viaPino: string[] = [];
    const fast: string[] = [];
    const base = { replica: 'r1' };
    const pinoLogger = createLogger({ level: 'info', destination: sink(viaPino), base });
    const fastLogger = createLogger({ level: 'info', destination: sink(fast), base });
    pinoLogger.info(egressLine(fields), EGRESS_MSG);
    logEgress(fastLogger, fields);
    return [viaPino.join(''), fast.join('')];
  };

  test.each(LINES.map((l) => [l.reqId, l] as const))('%s: the same bytes pino writes for logger.info(line, "egress")', (_id, fields) => {
    let pair = pinoAndFast(fields);
    for (let i = 0; i < 5 && pair[0] !== pair[1]; i++) pair = pinoAndFast(fields);
    expect(pair[1]).toBe(pair[0]);
    expect(pair[1].endsWith('"msg":"egress"}\n')).toBe(true);
  });

  test('child bindings come out as on any other line', () => {
    const { logger, lines } = capture('info');
    logEgress(logger.child({ replica: 'b' }), ({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted' }));
    expect(Object.keys(lines()[0] ?? {})).toEqual(['level', 'time', 'name', 'replica', 'reqId', 'kind', 'decision', 'reason', 'msg']);
  });

  test('below info nothing is written', () => {
    const { logger, raw } = capture('warn');
    logEgress(logger, ({ reqId: 'r', kind: 'http', decision: 'allow', reason: 'allowlisted' }));
    expect(raw()).toBe('');
  });
});

describe('egressJsonMembers', () => {
  const text = fc.string({ unit: 'binary', maxLength: 40 });
  const num = fc.oneof(fc.integer(), fc.double(), fc.constantFrom(0, -0, 1e21, Number.NaN, Number.POSITIVE_INFINITY));
  const fields = fc.record(
    {
      reqId: text,
      account: text,
      sessionId: text,
      kind: fc.constantFrom('http', 'connect', 'intercepted'),
      method: text,
      host: text,
      port: num,
      path: fc.oneof(text, text.map((t) => `/a?${t}`)),
      queryLength: num,
      decision: fc.constantFrom('allow', 'deny', 'report', 'error'),
      reason: fc.constantFrom('allowlisted', 'not_allowlisted'),
      wouldDeny: fc.constantFrom('not_allowlisted', 'path_not_allowed'),
      destination: text,
      lockdown: fc.boolean(),
      resolvedIp: text,
      status: num,
      bytesOut: num,
      bytesIn: num,
      durationMs: num,
      error: text,
      phase: fc.constant('close'),
    },
    { requiredKeys: ['reqId', 'kind', 'decision', 'reason'] },
  ) as fc.Arbitrary<EgressFields>;

  test('the generator covers every canonical field', () => {
    const seen = new Set<string>();
    fc.sample(fields, 300).forEach((f) => Object.keys(f).forEach((k) => seen.add(k)));
    expect([...seen].sort()).toEqual([...EGRESS_FIELDS].sort());
  });

  test('writes exactly what JSON.stringify writes for egressLine, field order included', () => {
    fc.assert(
      fc.property(fields, (f) => {
        expect(`{${egressJsonMembers(f).slice(1)}}`).toBe(JSON.stringify(egressLine(f)));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('cachedIsoTime', () => {
  afterEach(() => vi.useRealTimers());

  test('is the ISO time of now, milliseconds padded, across seconds and a clock stepping back', () => {
    vi.useFakeTimers();
    const instants = ['2026-12-04T23:59:59.999Z', '2026-12-05T00:00:00.000Z', '2026-12-05T00:00:00.007Z', '2026-12-05T00:00:00.042Z', '2026-12-05T00:00:01.500Z', '2026-12-04T22:00:00.300Z', '2030-01-01T00:00:00.099Z'];
    for (const iso of instants) {
      vi.setSystemTime(new Date(iso));
      expect(cachedIsoTime()).toBe(`,"time":"${iso}"`);
    }
  });
});

describe('flushLogger', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-logger-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('writes out lines still buffered by the asynchronous destination', async () => {
    const file = join(dir, 'logs', 'a.log');
    const logger = createLogger({ level: 'info', destination: file });
    logger.info({ n: 1 }, 'one');
    logger.info({ n: 2 }, 'two');
    await flushLogger(logger);
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines.map((l) => l['msg'])).toEqual(['one', 'two']);
  });

  test('many lines across several batches, multi-byte text and egress lines, arrive whole and in order', async () => {
    const file = join(dir, 'logs', 'batches.log');
    const logger = createLogger({ level: 'info', destination: file });
    const n = 3000;
    for (let i = 0; i < n; i++) {
      if (i % 2 === 0) logger.info({ i, text: `é漢字🙂 ${'x'.repeat(i % 300)}` }, `line ${i}`);
      else logEgress(logger, ({ reqId: `r${i}`, kind: 'http', decision: 'allow', reason: 'allowlisted', path: `/ü/${i}` }));
    }
    await flushLogger(logger);
    const lines = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(n);
    lines.forEach((l, i) => {
      if (i % 2 === 0) expect(l).toMatchObject({ i, msg: `line ${i}`, text: `é漢字🙂 ${'x'.repeat(i % 300)}` });
      else expect(l).toMatchObject({ reqId: `r${i}`, path: `/ü/${i}`, msg: 'egress' });
    });
  });

  test('lines still buffered are written when the process exits without flushing', () => {
    const file = join(dir, 'logs', 'exit.log');
    const script = join(dir, 'exit.mts');
    const loggerUrl = new URL('../../src/observability/logger.ts', import.meta.url).href;
    writeFileSync(
      script,
      `import { createLogger } from ${JSON.stringify(loggerUrl)};\n` +
        `const logger = createLogger({ level: 'info', destination: ${JSON.stringify(file)} });\n` +
        `logger.info('before exit');\n` +
        `setTimeout(() => process.exit(0), 50);\n`,
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: resolve(import.meta.dirname, '../..'), encoding: 'utf8', timeout: 15_000 });
    expect(run.status).toBe(0);
    expect(JSON.parse(readFileSync(file, 'utf8').trim())).toMatchObject({ msg: 'before exit' });
  });

  test('resolves on stdout when it is a pipe (fsync is refused there)', () => {
    const script = join(dir, 'pipe.mts');
    const loggerUrl = new URL('../../src/observability/logger.ts', import.meta.url).href;
    writeFileSync(
      script,
      `import { createLogger, flushLogger } from ${JSON.stringify(loggerUrl)};\n` +
        `const logger = createLogger({ level: 'info' });\n` +
        `logger.info('piped');\n` +
        `await flushLogger(logger);\n` +
        `process.stderr.write('flushed\\n');\n`,
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: resolve(import.meta.dirname, '../..'), encoding: 'utf8', timeout: 15_000 });
    expect(run.stderr).toContain('flushed');
    expect(JSON.parse(run.stdout.trim())).toMatchObject({ msg: 'piped', name: 'portcullis' });
  });
});
