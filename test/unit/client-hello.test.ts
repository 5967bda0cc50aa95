import net from 'node:net';
import tls from 'node:tls';
import fc from 'fast-check';
import { beforeAll, describe, expect, test } from 'vitest';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello } from '../../src/net/client-hello.js';
import type { ClientHelloResult } from '../../src/net/client-hello.js';

// ---------------------------------------------------------------------------------------------
// Real ClientHellos, captured from Node's own TLS client talking to a plain TCP socket on loopback.

/** Bytes of the first TLS record a `tls.connect` sends, captured by a raw server on 127.0.0.1. */
async function captureHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  try {
    const captured = new Promise<Buffer>((resolve, reject) => {
      server.once('connection', (socket) => {
        let buf = Buffer.alloc(0);
        socket.on('error', reject);
        socket.on('data', (chunk: Buffer) => {
          buf = Buffer.concat([buf, chunk]);
          if (buf.length >= 5 && buf.length >= 5 + buf.readUInt16BE(3)) {
            resolve(buf.subarray(0, 5 + buf.readUInt16BE(3)));
            socket.destroy();
          }
        });
      });
    });
    const client = tls.connect({ host: '127.0.0.1', port, ...options });
    client.on('error', () => {});
    const hello = await captured;
    client.destroy();
    return hello;
  } finally {
    server.close();
  }
}

/** Re-frames one record's handshake bytes into several records cut at `cuts` (offsets into the fragment). */
function reframe(record: Buffer, cuts: readonly number[], version = record.readUInt16BE(1)): Buffer {
  const fragment = record.subarray(5);
  const bounds = [0, ...cuts, fragment.length];
  const records: Buffer[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) records.push(recordOf(fragment.subarray(bounds[i], bounds[i + 1]), version));
  return Buffer.concat(records);
}

/** One TLS record of `type` around `fragment`. */
function recordOf(fragment: Buffer, version = 0x0301, type = 22): Buffer {
  const header = Buffer.from([type, version >> 8, version & 0xff, fragment.length >> 8, fragment.length & 0xff]);
  return Buffer.concat([header, fragment]);
}

// ---------------------------------------------------------------------------------------------
// Synthetic hellos, for shapes no real client sends.

const u8 = (n: number): Buffer => Buffer.from([n]);
const u16 = (n: number): Buffer => Buffer.from([n >> 8, n & 0xff]);
const vec8 = (b: Buffer): Buffer => Buffer.concat([u8(b.length), b]);
const vec16 = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b]);

/** A server_name extension body listing (type, name) entries. */
function sniBody(entries: ReadonlyArray<readonly [number, string | Buffer]>): Buffer {
  const list = entries.map(([type, name]) => Buffer.concat([u8(type), vec16(Buffer.from(name as string, 'latin1'))]));
  return vec16(Buffer.concat(list));
}

interface HelloShape {
  version?: number;
  sessionId?: Buffer;
  suites?: Buffer;
  compression?: Buffer;
  /** null: no extensions block at all. */
  extensions?: ReadonlyArray<readonly [number, Buffer]> | null;
  trailing?: Buffer;
  handshakeType?: number;
}

/** A ClientHello handshake message (header included) of the given shape. */
function helloMessage(shape: HelloShape = {}): Buffer {
  const exts = shape.extensions === undefined ? [[0, sniBody([[0, 'example.com']])] as const] : shape.extensions;
  const body = Buffer.concat([
    u16(shape.version ?? 0x0303),
    Buffer.alloc(32, 7),
    vec8(shape.sessionId ?? Buffer.alloc(32, 1)),
    vec16(shape.suites ?? Buffer.from([0x13, 0x01, 0x13, 0x02])),
    vec8(shape.compression ?? Buffer.from([0])),
    exts === null ? Buffer.alloc(0) : vec16(Buffer.concat(exts.map(([t, b]) => Buffer.concat([u16(t), vec16(b)])))),
    shape.trailing ?? Buffer.alloc(0),
  ]);
  const len = Buffer.from([shape.handshakeType ?? 1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]);
  return Buffer.concat([len, body]);
}

/** A hello in one record (or several, when the message exceeds 2^14). */
function hello(shape: HelloShape = {}): Buffer {
  const msg = helloMessage(shape);
  const records: Buffer[] = [];
  for (let off = 0; off < msg.length; off += 16384) records.push(recordOf(msg.subarray(off, off + 16384)));
  return Buffer.concat(records);
}

const invalid = (detail: RegExp): unknown => ({ status: 'invalid', detail: expect.stringMatching(detail) });

// ---------------------------------------------------------------------------------------------

let withSni: Buffer;
let withoutSni: Buffer;
let upperSni: Buffer;

beforeAll(async () => {
  withSni = await captureHello({ servername: 'api.example.com' });
  withoutSni = await captureHello({}); // host is an IP: Node sends no server_name
  upperSni = await captureHello({ servername: 'Mixed.Example.COM' });
});

describe('real ClientHellos from tls.connect', () => {
  test('with SNI', () => {
    expect(parseClientHello(withSni)).toEqual({ status: 'ok', sni: 'api.example.com' });
  });

  test('without SNI (IP servername)', () => {
    expect(parseClientHello(withoutSni)).toEqual({ status: 'ok', sni: null });
  });

  test('the name is returned as sent: the caller canonicalizes', () => {
    const r = parseClientHello(upperSni);
    expect(r.status).toBe('ok');
    expect((r as { sni: string }).sni.toLowerCase()).toBe('mixed.example.com');
  });

  test('every proper prefix is incomplete, fed one byte at a time', () => {
    for (let i = 0; i < withSni.length; i++) {
      expect(parseClientHello(withSni.subarray(0, i))).toEqual({ status: 'incomplete' });
    }
    expect(parseClientHello(withSni)).toEqual({ status: 'ok', sni: 'api.example.com' });
  });

  test('bytes after the hello (early data, next records) are ignored', () => {
    const next = recordOf(Buffer.from('ignored'), 0x0303, 23);
    expect(parseClientHello(Buffer.concat([withSni, next]))).toEqual({ status: 'ok', sni: 'api.example.com' });
  });

  test.each([
    ['inside_the_handshake_header', [1]],
    ['right_after_the_handshake_header', [4]],
    ['in_the_middle', [100]],
    ['one_byte_before_the_end', [-1]],
    ['three_records', [2, 60, 200]],
  ])('split across records: %s', (_name, cuts) => {
    const fragmentLength = withSni.length - 5;
    const at = cuts.map((c) => (c < 0 ? fragmentLength + c : c));
    const framed = reframe(withSni, at);
    expect(parseClientHello(framed)).toEqual({ status: 'ok', sni: 'api.example.com' });
    for (let i = 0; i < framed.length; i++) {
      expect(parseClientHello(framed.subarray(0, i)).status).toBe('incomplete');
    }
  });
});

describe('not TLS', () => {
  test.each([
    ['http_get', Buffer.from('GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n')],
    ['http_connect', Buffer.from('CONNECT example.com:443 HTTP/1.1\r\n\r\n')],
    ['ssh_banner', Buffer.from('SSH-2.0-OpenSSH_9.6\r\n')],
    // SSLv2-compatible hello: two-byte length with the high bit set, then msg type 1.
    ['sslv2_hello', Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10])],
    ['tls_alert_record', recordOf(Buffer.from([2, 40]), 0x0303, 21)],
    ['application_data_record', recordOf(Buffer.from('x'), 0x0303, 23)],
    ['single_garbage_byte', Buffer.from([0xff])],
  ])('%s', (_name, bytes) => {
    expect(parseClientHello(bytes)).toEqual({ status: 'not_tls' });
  });

  test('nothing yet is incomplete', () => {
    expect(parseClientHello(Buffer.alloc(0))).toEqual({ status: 'incomplete' });
  });
});

describe('synthetic hellos', () => {
  test('a minimal hello with SNI', () => {
    expect(parseClientHello(hello())).toEqual({ status: 'ok', sni: 'example.com' });
  });

  test('no extensions block at all', () => {
    expect(parseClientHello(hello({ extensions: null }))).toEqual({ status: 'ok', sni: null });
  });

  test('extensions without server_name', () => {
    expect(parseClientHello(hello({ extensions: [[10, Buffer.from([0, 2, 0, 29])]] }))).toEqual({ status: 'ok', sni: null });
  });

  test.each(['0301', '0302', '0303', '0304'])('record and client version 0x%s accepted', (hex) => {
    const v = parseInt(hex, 16);
    const msg = helloMessage({ version: v });
    expect(parseClientHello(recordOf(msg, v))).toEqual({ status: 'ok', sni: 'example.com' });
  });

  // OpenSSL completes a handshake for these: a parser that refused them would leave the SNI unjudged.
  test.each([0x0300, 0x0305, 0x03ff])('any 0x03xx record-layer version (0x%s) is read, as servers do', (v) => {
    expect(parseClientHello(recordOf(helloMessage(), v))).toEqual({ status: 'ok', sni: 'example.com' });
  });

  test('empty handshake records before the hello are skipped, as servers do', () => {
    expect(parseClientHello(recordOf(Buffer.alloc(0)))).toEqual({ status: 'incomplete' });
    expect(parseClientHello(Buffer.concat([recordOf(Buffer.alloc(0)), hello()]))).toEqual({ status: 'ok', sni: 'example.com' });
  });

  test('a large hello (padding) spanning four records', () => {
    const big = hello({ extensions: [[0, sniBody([[0, 'big.example']])], [21, Buffer.alloc(60_000)]] });
    expect(big.length).toBeLessThan(MAX_CLIENT_HELLO_BYTES);
    expect(parseClientHello(big)).toEqual({ status: 'ok', sni: 'big.example' });
    expect(parseClientHello(big.subarray(0, 40_000))).toEqual({ status: 'incomplete' });
  });
});

describe('invalid', () => {
  test.each([
    ['record_version_garbage', recordOf(helloMessage(), 0x7777), /record version/],
    ['client_version_ssl3', hello({ version: 0x0300 }), /client version/],
    ['too_many_empty_records', Buffer.concat([...Array.from({ length: 33 }, () => recordOf(Buffer.alloc(0))), hello()]), /empty records/],
    ['record_over_2_14', Buffer.from([22, 3, 1, 0x40, 0x01]), /record length/],
    ['server_hello_first', hello({ handshakeType: 2 }), /not a ClientHello/],
    ['session_id_over_32', hello({ sessionId: Buffer.alloc(33) }), /session id/],
    ['odd_cipher_suites', hello({ suites: Buffer.from([0x13]) }), /cipher suite/],
    ['no_cipher_suites', hello({ suites: Buffer.alloc(0) }), /cipher suite/],
    ['no_compression', hello({ compression: Buffer.alloc(0) }), /compression/],
    ['junk_after_extensions', hello({ trailing: Buffer.from([1, 2, 3]) }), /junk after extensions/],
    ['duplicate_server_name_extension', hello({ extensions: [[0, sniBody([[0, 'a.example']])], [0, sniBody([[0, 'b.example']])]] }), /duplicate extension/],
    ['two_host_names', hello({ extensions: [[0, sniBody([[0, 'a.example'], [0, 'b.example']])]] }), /more than one host name/],
    ['unknown_name_type', hello({ extensions: [[0, sniBody([[1, 'x']])]] }), /unknown server name type/],
    ['empty_host_name', hello({ extensions: [[0, sniBody([[0, '']])]] }), /host name length/],
    ['nul_in_host_name', hello({ extensions: [[0, sniBody([[0, 'a.example\u0000.evil']])]] }), /non-printable/],
    ['space_in_host_name', hello({ extensions: [[0, sniBody([[0, 'a b']])]] }), /non-printable/],
    ['utf8_host_name', hello({ extensions: [[0, sniBody([[0, Buffer.from('bücher.example', 'utf8')]])]] }), /non-ASCII/],
    ['empty_server_name_list', hello({ extensions: [[0, vec16(Buffer.alloc(0))]] }), /empty server name list/],
    ['server_name_extension_empty', hello({ extensions: [[0, Buffer.alloc(0)]] }), /truncated server name list/],
    ['junk_after_server_name_list', hello({ extensions: [[0, Buffer.concat([sniBody([[0, 'a.example']]), u8(0)])]] }), /junk after server name list/],
  ])('%s', (_name, bytes, detail) => {
    expect(parseClientHello(bytes)).toEqual(invalid(detail));
  });

  test('truncated inside the hello body (lengths overrun the message)', () => {
    const msg = helloMessage();
    // Claim a shorter handshake body than the vectors inside need.
    const cut = Buffer.from(msg);
    cut.writeUIntBE(40, 1, 3);
    expect(parseClientHello(recordOf(cut.subarray(0, 44)))).toEqual(invalid(/truncated/));
  });

  test('truncated extension length', () => {
    const msg = helloMessage({ extensions: null, trailing: Buffer.from([0x00, 0x10, 0x00]) });
    expect(parseClientHello(recordOf(msg))).toEqual(invalid(/truncated extensions/));
  });

  test('a truncated record is just incomplete until more bytes come', () => {
    expect(parseClientHello(withSni.subarray(0, withSni.length - 10))).toEqual({ status: 'incomplete' });
  });

  test('a non-handshake record in the middle of a split hello', () => {
    const framed = reframe(withSni, [50]);
    const firstRecord = framed.subarray(0, 55);
    const alert = recordOf(Buffer.from([2, 40]), 0x0303, 21);
    expect(parseClientHello(Buffer.concat([firstRecord, alert]))).toEqual(invalid(/non-handshake record/));
  });

  test('a claimed hello length over 64 KiB is refused at once', () => {
    const header = Buffer.from([1, 0x01, 0x00, 0x00]); // 65536-byte body
    expect(parseClientHello(recordOf(Buffer.concat([header, Buffer.alloc(100)])))).toEqual(invalid(/over 64 KiB/));
  });

  test('a hello that cannot complete within 64 KiB of input is invalid', () => {
    // Largest claimable body: the record headers push the total past the cap.
    const bodyLength = MAX_CLIENT_HELLO_BYTES - 4;
    const msg = Buffer.concat([Buffer.from([1, bodyLength >> 16, (bodyLength >> 8) & 0xff, bodyLength & 0xff]), Buffer.alloc(bodyLength)]);
    const records: Buffer[] = [];
    for (let off = 0; off < msg.length; off += 16384) records.push(recordOf(msg.subarray(off, off + 16384)));
    const all = Buffer.concat(records);
    const atCap = all.subarray(0, MAX_CLIENT_HELLO_BYTES);
    expect(parseClientHello(atCap)).toEqual(invalid(/over 64 KiB/));
  });

  test('hundreds of one-byte records are refused', () => {
    const msg = helloMessage({ extensions: [[0, sniBody([[0, 'a.example']])], [21, Buffer.alloc(300)]] });
    const framed = reframe(recordOf(msg), Array.from({ length: msg.length - 1 }, (_, i) => i + 1));
    expect(parseClientHello(framed)).toEqual(invalid(/records/));
  });
});

describe('never throws on garbage', () => {
  const statuses = new Set<ClientHelloResult['status']>(['incomplete', 'not_tls', 'ok', 'invalid']);

  test('random bytes that start like a handshake record', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.constantFrom(0x0301, 0x0303, 0x0304), (tail, v) => {
        const bytes = Buffer.concat([Buffer.from([22, v >> 8, v & 0xff]), Buffer.from(tail)]);
        expect(statuses.has(parseClientHello(bytes).status)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  test('single-byte mutations and truncations of a real hello', () => {
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.nat(), (pos, value, cut) => {
        const bytes = Buffer.from(withSni);
        bytes[pos % bytes.length] = value;
        const r = parseClientHello(bytes.subarray(0, (cut % bytes.length) + 1));
        expect(statuses.has(r.status)).toBe(true);
        if (r.status === 'ok' && r.sni !== null) expect(r.sni).toMatch(/^[\x21-\x7e]{1,255}$/);
      }),
      { numRuns: 3000 },
    );
  });
});
