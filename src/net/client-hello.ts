/**
 * TLS ClientHello peek for opaque CONNECT tunnels (SPEC §1 HTTPS: SNI must equal the CONNECT host).
 *
 * The caller accumulates the client's first bytes and calls parseClientHello again after every
 * chunk until the status is no longer `incomplete`. The hello may span several TLS records and
 * arrive one byte at a time. Input is hostile: every read is bounds-checked and nothing throws.
 */

/** The most bytes a caller should buffer while waiting for a complete ClientHello. */
export const MAX_CLIENT_HELLO_BYTES = 64 * 1024;

/** Result of a peek: wait for more bytes, not TLS at all, the server name, or a broken hello. */
export type ClientHelloResult =
  | { status: 'incomplete' }
  | { status: 'not_tls' }
  | { status: 'ok'; sni: string | null }
  | { status: 'invalid'; detail: string };

const RECORD_HEADER = 5;
const HANDSHAKE_HEADER = 4;
const CONTENT_HANDSHAKE = 22;
const HANDSHAKE_CLIENT_HELLO = 1;
// RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes and handshake fragments are never empty.
const MAX_FRAGMENT = 16384;
const MAX_RECORDS = 256;
// OpenSSL skips up to this many empty records before failing; we must find the hello it finds.
const MAX_EMPTY_RECORDS = 32;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
const MAX_HOST_NAME = 255;

const INCOMPLETE: ClientHelloResult = { status: 'incomplete' };
const NOT_TLS: ClientHelloResult = { status: 'not_tls' };

/** Marks a malformed hello; caught inside this module only. */
class Malformed extends Error {}

/** A bounds-checked cursor over a buffer; every overrun is a Malformed. */
class Reader {
  readonly #buf: Buffer;
  #off = 0;

  constructor(buf: Buffer) {
    this.#buf = buf;
  }

  get remaining(): number {
    return this.#buf.length - this.#off;
  }

  u8(what: string): number {
    this.#need(1, what);
    return this.#buf.readUInt8(this.#off++);
  }

  u16(what: string): number {
    this.#need(2, what);
    const v = this.#buf.readUInt16BE(this.#off);
    this.#off += 2;
    return v;
  }

  bytes(n: number, what: string): Buffer {
    this.#need(n, what);
    const out = this.#buf.subarray(this.#off, this.#off + n);
    this.#off += n;
    return out;
  }

  /** A sub-reader over a vector with a `lenBytes`-byte length prefix. */
  vector(lenBytes: 1 | 2, what: string): Reader {
    const len = lenBytes === 1 ? this.u8(what) : this.u16(what);
    return new Reader(this.bytes(len, what));
  }

  #need(n: number, what: string): void {
    if (n > this.remaining) throw new Malformed(`truncated ${what}`);
  }
}

/** True for the TLS 1.0–1.3 version numbers (0x0301–0x0304). */
function isTlsVersion(v: number): boolean {
  return v >= 0x0301 && v <= 0x0304;
}

/**
 * Record-layer version of a hello record. RFC 8446 §5.1 says legacy_record_version is ignored,
 * and OpenSSL accepts any 0x03xx there: refusing one would leave the hello unjudged while the
 * server still completes the handshake with whatever SNI it carries.
 */
function isRecordVersion(v: number): boolean {
  return v >> 8 === 3;
}

/** Reassembles the hello body from consecutive handshake records; null when more bytes are needed. */
function handshakeBody(buf: Buffer): Buffer | null {
  const fragments: Buffer[] = [];
  let total = 0;
  let off = 0;
  let needed = -1;
  let empty = 0;
  for (let records = 0; ; records++) {
    // Splitting a hello over a few records is legal (and a known DPI-evasion trick); thousands
    // of tiny records only make every re-parse slower, so a few hundred is the limit.
    if (records >= MAX_RECORDS) throw new Malformed(`ClientHello split over more than ${MAX_RECORDS} records`);
    const fragment = nextFragment(buf, off);
    if (fragment === null) return null;
    if (fragment.length === 0) {
      // Forbidden by RFC 8446, yet servers skip them: so must we, or the real hello goes unread.
      if (++empty > MAX_EMPTY_RECORDS) throw new Malformed('too many empty records');
      off += RECORD_HEADER;
      continue;
    }
    fragments.push(fragment);
    total += fragment.length;
    off += RECORD_HEADER + fragment.length;
    if (needed < 0 && total >= HANDSHAKE_HEADER) needed = helloLength(Buffer.concat(fragments, total));
    if (needed >= 0 && total >= needed) return Buffer.concat(fragments, total).subarray(HANDSHAKE_HEADER, needed);
  }
}

/** The fragment of the handshake record at `off`; null when it has not fully arrived. */
function nextFragment(buf: Buffer, off: number): Buffer | null {
  if (buf.length - off < RECORD_HEADER) return null;
  const type = buf.readUInt8(off);
  const version = buf.readUInt16BE(off + 1);
  const length = buf.readUInt16BE(off + 3);
  // A record of another type before the hello is complete is a protocol violation.
  if (type !== CONTENT_HANDSHAKE) throw new Malformed('non-handshake record inside the ClientHello');
  if (!isRecordVersion(version)) throw new Malformed(`unsupported record version 0x${version.toString(16)}`);
  if (length > MAX_FRAGMENT) throw new Malformed(`bad record length ${length}`);
  if (buf.length - off - RECORD_HEADER < length) return null;
  return buf.subarray(off + RECORD_HEADER, off + RECORD_HEADER + length);
}

/** Total length (header included) of the handshake message that must be a ClientHello. */
function helloLength(start: Buffer): number {
  if (start.readUInt8(0) !== HANDSHAKE_CLIENT_HELLO) throw new Malformed('first handshake message is not a ClientHello');
  const needed = HANDSHAKE_HEADER + start.readUIntBE(1, 3);
  // Refused before waiting for the body: a claimed length over the cap will never be accepted.
  if (needed > MAX_CLIENT_HELLO_BYTES) throw new Malformed('ClientHello over 64 KiB');
  return needed;
}

/** Skips the fixed fields of the hello body, leaving the reader at the extensions. */
function skipHelloPrologue(r: Reader): void {
  const version = r.u16('client version');
  if (!isTlsVersion(version)) throw new Malformed(`unsupported client version 0x${version.toString(16)}`);
  r.bytes(32, 'random');
  const sessionId = r.vector(1, 'session id');
  if (sessionId.remaining > 32) throw new Malformed('session id over 32 bytes');
  const suites = r.vector(2, 'cipher suites');
  if (suites.remaining === 0 || suites.remaining % 2 !== 0) throw new Malformed('bad cipher suite list');
  if (r.vector(1, 'compression methods').remaining === 0) throw new Malformed('empty compression method list');
}

/** The host_name of a server_name extension body (RFC 6066 §3). */
function parseServerName(r: Reader): string {
  const list = r.vector(2, 'server name list');
  if (r.remaining !== 0) throw new Malformed('junk after server name list');
  if (list.remaining === 0) throw new Malformed('empty server name list');
  let host: string | null = null;
  while (list.remaining > 0) {
    const type = list.u8('server name type');
    // Unknown name types have no known length format, so the list cannot be walked past them.
    if (type !== NAME_TYPE_HOST) throw new Malformed(`unknown server name type ${type}`);
    const name = list.vector(2, 'host name');
    // Two host names would let the proxy check one while the origin serves the other.
    if (host !== null) throw new Malformed('more than one host name');
    host = hostNameText(name.bytes(name.remaining, 'host name'));
  }
  return host as string;
}

/** Validates host_name bytes: 1–255 printable ASCII characters. */
function hostNameText(bytes: Buffer): string {
  if (bytes.length === 0 || bytes.length > MAX_HOST_NAME) throw new Malformed('bad host name length');
  for (const b of bytes) {
    if (b <= 0x20 || b >= 0x7f) throw new Malformed('non-printable or non-ASCII byte in host name');
  }
  return bytes.toString('latin1');
}

/** Walks the extensions block; returns the SNI host name or null. */
function parseExtensions(r: Reader): string | null {
  // The extensions block is optional (pre-TLS 1.2 clients may omit it).
  if (r.remaining === 0) return null;
  const exts = r.vector(2, 'extensions');
  if (r.remaining !== 0) throw new Malformed('junk after extensions');
  const seen = new Set<number>();
  let sni: string | null = null;
  while (exts.remaining > 0) {
    const type = exts.u16('extension type');
    const body = exts.vector(2, 'extension body');
    if (seen.has(type)) throw new Malformed(`duplicate extension ${type}`);
    seen.add(type);
    if (type === EXT_SERVER_NAME) sni = parseServerName(body);
  }
  return sni;
}

/** The SNI of a complete ClientHello body. */
function parseHelloBody(body: Buffer): string | null {
  const r = new Reader(body);
  skipHelloPrologue(r);
  return parseExtensions(r);
}

/**
 * Peeks the server name from the client's first bytes. `sni` is the host_name exactly as sent
 * (ASCII, possibly upper case or with a trailing dot): canonicalize it before comparing.
 */
export function parseClientHello(buf: Buffer): ClientHelloResult {
  if (buf.length === 0) return INCOMPLETE;
  // Everything that does not start like a TLS handshake record (HTTP, SSLv2-style hellos with
  // the high bit set, garbage) is simply not TLS.
  if (buf.readUInt8(0) !== CONTENT_HANDSHAKE) return NOT_TLS;
  try {
    const body = handshakeBody(buf);
    if (body !== null) return { status: 'ok', sni: parseHelloBody(body) };
    if (buf.length >= MAX_CLIENT_HELLO_BYTES) return { status: 'invalid', detail: 'ClientHello over 64 KiB' };
    return INCOMPLETE;
  } catch (err) {
    if (err instanceof Malformed) return { status: 'invalid', detail: err.message };
    return { status: 'invalid', detail: 'unparseable ClientHello' };
  }
}
