/**
 * The pino logger factory. All logger defaults live here: JSON lines with ISO time, level
 * names, `name: "portcullis"` and no pid/hostname; credentials redacted by path once at setup;
 * secrets scrubbed from free text (messages, error messages and stacks, the egress `error`
 * field) by scrubSecrets. Stdout is written asynchronously in 32 KiB batches, flushed every
 * second, so call flushLogger() before the process exits on purpose.
 */
import { pino, type DestinationStream, type LogFn, type Logger, type LoggerOptions as PinoOptions, type SerializedError } from 'pino';
import { egressJsonMembers, egressLine, EGRESS_MSG, type EgressFields } from './log-fields.js';

/** The logger type every module receives (injected, never imported as a singleton). */
export type { Logger } from 'pino';

/** Options of createLogger. */
export interface LoggerOptions {
  /** pino level: fatal, error, warn, info, debug, trace or silent. */
  readonly level: string;
  /** A stream (tests), a file descriptor, or a file path; default stdout (fd 1), asynchronous. */
  readonly destination?: DestinationStream | number | string;
  /** Extra fields on every line (e.g. a replica id). */
  readonly base?: Readonly<Record<string, unknown>>;
}

/** What a redacted value is replaced with. */
export const REDACTED = '[redacted]';

// Header names whose values are credentials. Node lower-cases incoming headers, but objects we
// build for undici or copy from other libraries may use Title-Case, and some tools shout.
const SECRET_HEADERS = ['authorization', 'proxy-authorization', 'cookie', 'set-cookie'] as const;

// Where a headers object can sit in what we log: error paths log `headers` alone or inside a
// request/response/error object.
const HEADER_HOLDERS = [
  'headers',
  'req.headers',
  'request.headers',
  'res.headers',
  'response.headers',
  'upstream.headers',
  'err.headers',
  'err.request.headers',
  'err.response.headers',
] as const;

// Field names that hold secrets, redacted at the top level and one level down in the objects
// we log. Session creation never logs its token; this is the second line of defence.
const SECRET_FIELDS = [
  'token',
  'password',
  'secret',
  'authorization',
  'proxyAuthorization',
  'cookie',
  'jwt',
  'idToken',
  'accessToken',
  'refreshToken',
  'clientSecret',
  'apiKey',
] as const;
const SECRET_FIELD_HOLDERS = ['session', 'auth', 'user', 'req', 'request', 'body', 'err', 'oidc', 'admin'] as const;

// Censored whole: raw header arrays keep the client's casing and cannot be redacted by name;
// HTTP-client errors (axios style) carry their request config, headers and auth included;
// a redis store URL may hold a password.
const WHOLE = ['credentials', 'rawHeaders', 'req.rawHeaders', 'request.rawHeaders', 'err.config', 'store.url', 'config.store.url'] as const;

/** "proxy-authorization" → "Proxy-Authorization". */
function titleCase(header: string): string {
  return header.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

/**
 * Every redaction path, built once. No leading wildcards ("*.token"): pino runs a wildcard
 * redactor over every field of every line, the hot egress line included, while named holders
 * cost nothing on lines that do not have them.
 */
export const LOG_REDACT_PATHS: readonly string[] = [
  ...WHOLE,
  ...SECRET_FIELDS,
  ...SECRET_FIELD_HOLDERS.flatMap((holder) => SECRET_FIELDS.map((field) => `${holder}.${field}`)),
  ...HEADER_HOLDERS.flatMap((holder) =>
    SECRET_HEADERS.flatMap((h) => [...new Set([h, titleCase(h), h.toUpperCase()])].map((name) => `${holder}[${JSON.stringify(name)}]`)),
  ),
];

// Free-text patterns, in order. Header-style "name: value" first, so a whole value goes at once.
const SCRUB_PATTERNS: ReadonlyArray<readonly [RegExp, string]> = [
  // Quoted value, as in JSON or a dumped object: "set-cookie": "sid=1" (escaped quotes skipped).
  [/\b((?:proxy-)?authorization|(?:set-)?cookie)(["']?\s*[:=]\s*)(["'])(?:\\.|[^\\\r\n])*?\3/gi, `$1$2$3${REDACTED}$3`],
  // Unquoted value, as in a header line: the rest of the line ("Authorization: Digest a="b", …").
  [/\b((?:proxy-)?authorization|(?:set-)?cookie)(\s*[:=]\s*)(?!["'\s])[^\r\n]+/gi, `$1$2${REDACTED}`],
  // Basic/Bearer credentials (token68). Eight characters at least, so prose such as "Basic realm"
  // or "Bearer token" survives; every Portcullis credential is far longer.
  [/\b(basic|bearer)\s+[A-Za-z0-9._~+/-]{8,}=*/gi, `$1 ${REDACTED}`],
  // Session tokens pcs_<id>_<secret>: the id is kept so the session can be found and revoked;
  // any secret length counts, a truncated token is still a secret.
  [/\b(pcs_[a-z0-9]{16}_)[A-Za-z0-9_-]+/g, `$1${REDACTED}`],
  // JWTs: base64url JSON header and payload ("eyJ" is '{"'), any signature.
  [/\beyJ[A-Za-z0-9_-]*\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*/g, REDACTED],
  // Passwords in URLs (proxy URLs carry ACCOUNT:TOKEN, redis URLs a password).
  [/(\b[a-z][a-z0-9+.-]*:\/\/[^\s/?#@:]*):[^\s/?#@]*@/gi, `$1:${REDACTED}@`],
];

/**
 * Replaces credentials inside free text (error messages from sockets, TLS, undici, the store):
 * Basic/Bearer credentials, authorization and cookie header values, pcs_ session tokens (their
 * id is kept), JWTs and URL passwords. Errs towards over-redaction ("Basic realm" included).
 */
export function scrubSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SCRUB_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/** A serialized error with its text scrubbed, aggregated errors included (causes are inside message and stack). */
function scrubSerialized(out: SerializedError): SerializedError {
  out.message = scrubSecrets(out.message);
  if (typeof out.stack === 'string') out.stack = scrubSecrets(out.stack);
  const aggregated: unknown = out['aggregateErrors'];
  if (Array.isArray(aggregated)) out['aggregateErrors'] = aggregated.map((e: SerializedError) => scrubSerialized(e));
  return out;
}

/** pino's error serializer with message and stack scrubbed (they quote headers and URLs); plain strings scrubbed too. */
function serializeError(value: unknown): unknown {
  if (typeof value === 'string') return scrubSecrets(value);
  const out: unknown = pino.stdSerializers.err(value as Error);
  // Not error-like: pino hands the value back untouched, and redaction paths still apply.
  return out === value || out === null || typeof out !== 'object' ? out : scrubSerialized(out as SerializedError);
}

/**
 * Scrubs message strings and interpolation values before pino formats them. pino copies an
 * error's message into `msg` when none is given, past the `err` serializer, so that case gets
 * an explicit scrubbed message. The canonical line's constant message skips all of it.
 */
function scrubMessages(this: Logger, args: Parameters<LogFn>, method: LogFn): void {
  const first: unknown = args[0];
  if (args.length === 1 && first !== null && typeof first === 'object' && !('msg' in first)) {
    const err: unknown = first instanceof Error ? first : (first as { err?: unknown }).err;
    const message: unknown = err !== null && typeof err === 'object' ? (err as { message?: unknown }).message : undefined;
    if (typeof message === 'string') {
      method.call(this, first, scrubSecrets(message));
      return;
    }
  }
  let out: unknown[] | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg: unknown = args[i];
    if (typeof arg !== 'string' || arg === EGRESS_MSG) continue;
    const scrubbed = scrubSecrets(arg);
    if (scrubbed !== arg) (out ??= [...args])[i] = scrubbed;
  }
  method.apply(this, (out ?? args) as Parameters<LogFn>);
}

let secondStart = -1;
let secondPrefix = '';
/**
 * pino's isoTime (`,"time":"2026-12-04T23:45:12.345Z"`) without a Date per line: the text up to
 * the second is made once a second, the milliseconds appended (a proxy logs thousands of lines a
 * second).
 */
export function cachedIsoTime(): string {
  const now = Date.now();
  const ms = now - secondStart;
  if (ms < 0 || ms >= 1000) {
    secondStart = now - (now % 1000);
    secondPrefix = `,"time":"${new Date(secondStart).toISOString().slice(0, 20)}`;
    return cachedIsoTime();
  }
  return `${secondPrefix}${ms < 10 ? '00' : ms < 100 ? '0' : ''}${ms}Z"`;
}

/**
 * Writes one canonical egress line (SPEC §6) straight to the logger's destination: the bytes
 * pino writes for `logger.info(line, EGRESS_MSG)`, without its hook, redaction and serializer
 * passes (a sixth of a keep-alive request's CPU). Those passes have nothing to do here: the
 * line's fields are fixed (egressLine), none is a credential, and the one free-text field,
 * `error`, is scrubbed below as the `error` serializer would.
 */
export function logEgress(logger: Logger, fields: EgressFields): void {
  if (!logger.isLevelEnabled('info')) return;
  const f = fields.error === undefined ? fields : { ...fields, error: scrubSecrets(fields.error) };
  const internals = logger as unknown as Record<symbol, unknown>;
  const stream = internals[pino.symbols.streamSym] as DestinationStream | undefined;
  const bindings = internals[pino.symbols.chindingsSym];
  if (stream === undefined || typeof bindings !== 'string') {
    logger.info(egressLine(f), EGRESS_MSG);
    return;
  }
  stream.write(`{"level":"info"${cachedIsoTime()}${bindings}${egressJsonMembers(f)},"msg":"${EGRESS_MSG}"}\n`);
}

/** The options shared by every Portcullis logger; only level, base and stream vary. */
const LOGGER_DEFAULTS = {
  messageKey: 'msg',
  errorKey: 'err',
  timestamp: cachedIsoTime,
  // Level names, not numbers: operators grep for "level":"error".
  formatters: { level: (label: string) => ({ level: label }) },
  // `error` is the egress line's error text; it and `err` both get scrubbed.
  serializers: { err: serializeError, error: serializeError },
  redact: { paths: [...LOG_REDACT_PATHS], censor: REDACTED },
  hooks: { logMethod: scrubMessages },
} as const satisfies PinoOptions;

// Writes are batched until 32 KiB; a quiet proxy would sit on its last lines indefinitely, so
// the buffer is also flushed every second.
const ASYNC_MIN_LENGTH = 32 * 1024;
const PERIODIC_FLUSH_MS = 1000;

/**
 * pino's asynchronous file/fd destination (sonic-boom: batching, EAGAIN retries, flush on exit)
 * in its buffer mode, each line handed over as bytes. In its default text mode sonic-boom
 * measures the whole pending batch (Buffer.byteLength over up to 64 KiB) on every write: 8% of a
 * keep-alive request's CPU in the profile; buffer mode keeps running lengths.
 */
function batchedDestination(dest: number | string): DestinationStream {
  const boom = pino.destination({
    dest,
    sync: false,
    minLength: ASYNC_MIN_LENGTH,
    // sonic-boom requires minLength < maxWrite; one write of up to 64 KiB per batch.
    maxWrite: 2 * ASYNC_MIN_LENGTH,
    periodicFlush: PERIODIC_FLUSH_MS,
    mkdir: typeof dest === 'string',
    contentMode: 'buffer',
  });
  const writeBytes = boom.write.bind(boom) as (data: string | Buffer) => boolean;
  boom.write = ((data: string | Buffer) => writeBytes(typeof data === 'string' ? Buffer.from(data, 'utf8') : data)) as typeof boom.write;
  return boom;
}

/** A JSON-lines logger with the Portcullis defaults, writing to `destination` (stdout by default). */
export function createLogger(options: LoggerOptions): Logger {
  const { destination } = options;
  const stream = typeof destination === 'object' ? destination : batchedDestination(destination ?? 1);
  return pino({ ...LOGGER_DEFAULTS, level: options.level, base: { name: 'portcullis', ...options.base } }, stream);
}

// fsync is refused on pipes, sockets and ttys (stdout under Docker and Kubernetes), after the
// bytes were already written: for flushing purposes that is success.
const FSYNC_NOT_APPLICABLE = new Set(['EINVAL', 'ENOTSUP', 'EOPNOTSUPP', 'EROFS']);

/** One flush of the destination; resolves when that write is done. */
function flushOnce(logger: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    logger.flush((err?: Error) => {
      const code = (err as NodeJS.ErrnoException | undefined)?.code;
      if (err === undefined || err === null || (code !== undefined && FSYNC_NOT_APPLICABLE.has(code))) resolve();
      else reject(err);
    });
  });
}

/** Bytes the asynchronous destination still holds (sonic-boom keeps the count in `_len`); 0 for other streams. */
function pendingBytes(logger: Logger): number {
  const stream = (logger as unknown as Record<symbol, unknown>)[pino.symbols.streamSym] as { _len?: unknown } | undefined;
  return typeof stream?._len === 'number' ? stream._len : 0;
}

/**
 * Writes out everything buffered; resolves once it is written. Call before exiting on purpose.
 * sonic-boom calls a flush back when one write is done, even with up to a batch (32 KiB) still
 * waiting behind it, so this flushes until nothing is left.
 */
export async function flushLogger(logger: Logger): Promise<void> {
  await flushOnce(logger);
  for (let round = 0; round < 1000 && pendingBytes(logger) > 0; round++) await flushOnce(logger);
}
