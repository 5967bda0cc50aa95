/**
 * A small authoritative DNS server for tests, on 127.0.0.1 port 0 (UDP, and TCP on the same
 * port). Hand-written wire format: A and AAAA answers, NXDOMAIN for unknown names, chosen rcodes,
 * silence (for timeouts) and per-query answers through functions (for rebinding tests).
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { parseIp } from '../../src/net/address.js';

/** One question as the server received it (name without trailing dot, case as sent). */
export interface DnsQuery {
  readonly name: string;
  readonly type: string;
}

/** What to answer for a name. */
export interface DnsAnswer {
  A?: readonly string[];
  AAAA?: readonly string[];
  /** TTL of every record, seconds; default 60. */
  ttl?: number;
  /** Answer with this rcode and no records. */
  rcode?: 'NXDOMAIN' | 'SERVFAIL' | 'REFUSED';
  /** Never answer (the client times out). */
  drop?: boolean;
}

/** `count` is how many times this name and type have been asked, starting at 1. */
export type DnsRecordFn = (query: DnsQuery, count: number) => DnsAnswer;

/** Records by name (matched case-insensitively, without trailing dot). */
export type DnsRecords = Readonly<Record<string, DnsAnswer | DnsRecordFn>>;

/** A running test DNS server. */
export interface DnsServer {
  readonly port: number;
  readonly address: string;
  /** "127.0.0.1:PORT", ready for EgressResolver's `servers`. */
  readonly server: string;
  /** Every question received, in order. */
  readonly queries: DnsQuery[];
  /** Replaces the records (the query log and counts are kept). */
  setRecords(records: DnsRecords): void;
  /** Stops both listeners; idempotent. */
  close(): Promise<void>;
}

const TYPE_NAMES: Readonly<Record<number, string>> = { 1: 'A', 28: 'AAAA', 5: 'CNAME', 15: 'MX', 16: 'TXT', 33: 'SRV', 65: 'HTTPS' };
const RCODES = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 } as const;

interface Question {
  readonly id: number;
  readonly flags: number;
  readonly name: string;
  readonly qtype: number;
  /** The raw question section, echoed back verbatim. */
  readonly section: Buffer;
}

/** Parses the header and first question of a query; null when it is not one. */
function parseQuery(msg: Buffer): Question | null {
  if (msg.length < 12 || msg.readUInt16BE(4) < 1) return null;
  const labels: string[] = [];
  let off = 12;
  for (;;) {
    const len = msg[off];
    if (len === undefined || len > 63) return null;
    off += 1;
    if (len === 0) break;
    if (off + len > msg.length) return null;
    labels.push(msg.toString('latin1', off, off + len));
    off += len;
  }
  if (off + 4 > msg.length) return null;
  return {
    id: msg.readUInt16BE(0),
    flags: msg.readUInt16BE(2),
    name: labels.join('.'),
    qtype: msg.readUInt16BE(off),
    section: msg.subarray(12, off + 4),
  };
}

/** One answer record pointing back at the question name (offset 12). */
function record(type: number, ttl: number, rdata: Uint8Array): Buffer {
  const rr = Buffer.alloc(12 + rdata.length);
  rr.writeUInt16BE(0xc00c, 0);
  rr.writeUInt16BE(type, 2);
  rr.writeUInt16BE(1, 4);
  rr.writeUInt32BE(ttl, 6);
  rr.writeUInt16BE(rdata.length, 10);
  rr.set(rdata, 12);
  return rr;
}

/** Address bytes for a record, or a thrown error for a typo in a test. */
function rdataOf(ip: string, version: 4 | 6): Uint8Array {
  const p = parseIp(ip);
  // IPv4-mapped text parses as version 6, which is what an AAAA record of it must carry.
  if (p === null || p.version !== version) throw new Error(`dns-server: ${ip} is not an IPv${version} address`);
  return p.bytes;
}

/** The response message for a question and the chosen answer. */
function response(q: Question, answer: DnsAnswer | undefined): Buffer {
  const ttl = answer?.ttl ?? 60;
  let rcode: number = answer === undefined ? RCODES.NXDOMAIN : RCODES.NOERROR;
  if (answer?.rcode !== undefined) rcode = RCODES[answer.rcode];
  const records: Buffer[] = [];
  if (rcode === RCODES.NOERROR && q.qtype === 1) for (const ip of answer?.A ?? []) records.push(record(1, ttl, rdataOf(ip, 4)));
  if (rcode === RCODES.NOERROR && q.qtype === 28) for (const ip of answer?.AAAA ?? []) records.push(record(28, ttl, rdataOf(ip, 6)));
  const header = Buffer.alloc(12);
  header.writeUInt16BE(q.id, 0);
  // QR=1, opcode copied, AA=1, RD copied, RA=1, rcode.
  header.writeUInt16BE(0x8000 | (q.flags & 0x7800) | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode, 2);
  header.writeUInt16BE(1, 4);
  header.writeUInt16BE(records.length, 6);
  return Buffer.concat([header, q.section, ...records]);
}

/** Case-insensitive lookup without trailing dot. */
function findRecord(records: DnsRecords, name: string): DnsAnswer | DnsRecordFn | undefined {
  const want = name.toLowerCase().replace(/\.$/, '');
  for (const [key, value] of Object.entries(records)) {
    if (key.toLowerCase().replace(/\.$/, '') === want) return value;
  }
  return undefined;
}

/** Binds UDP and TCP to the same free port on 127.0.0.1 (retrying if TCP finds it taken). */
async function bindPair(): Promise<{ udp: dgram.Socket; tcp: net.Server }> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
    const tcp = net.createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(udp.address().port, '127.0.0.1', resolve);
      });
      return { udp, tcp };
    } catch (err) {
      udp.close();
      if (attempt >= 10) throw err;
    }
  }
}

/** Serves DNS over TCP: two-byte length prefix per message. */
function serveTcp(socket: net.Socket, answer: (msg: Buffer) => Buffer | null): void {
  let pending = Buffer.alloc(0);
  socket.on('error', () => {});
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
      const msg = pending.subarray(2, 2 + pending.readUInt16BE(0));
      pending = pending.subarray(2 + msg.length);
      const out = answer(msg);
      if (out !== null) socket.write(Buffer.concat([Buffer.from([out.length >> 8, out.length & 0xff]), out]));
    }
  });
}

/** Starts a DNS server on 127.0.0.1 port 0 serving `records`. */
export async function startDnsServer(initial: DnsRecords): Promise<DnsServer> {
  let records = initial;
  const queries: DnsQuery[] = [];
  const counts = new Map<string, number>();
  const sockets = new Set<net.Socket>();
  const { udp, tcp } = await bindPair();

  const answer = (msg: Buffer): Buffer | null => {
    const q = parseQuery(msg);
    if (q === null) return null;
    const query: DnsQuery = { name: q.name, type: TYPE_NAMES[q.qtype] ?? String(q.qtype) };
    queries.push(query);
    const key = `${q.name.toLowerCase()} ${query.type}`;
    const count = (counts.get(key) ?? 0) + 1;
    counts.set(key, count);
    const rec = findRecord(records, q.name);
    const chosen = typeof rec === 'function' ? rec(query, count) : rec;
    return chosen?.drop === true ? null : response(q, chosen);
  };

  udp.on('message', (msg, rinfo) => {
    const out = answer(msg);
    if (out !== null) udp.send(out, rinfo.port, rinfo.address);
  });
  tcp.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    serveTcp(socket, answer);
  });

  let closing: Promise<void> | null = null;
  const port = udp.address().port;
  return {
    port,
    address: '127.0.0.1',
    server: `127.0.0.1:${port}`,
    queries,
    setRecords(next) {
      records = next;
    },
    close() {
      closing ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        udp.close(() => tcp.close(() => resolve()));
      });
      return closing;
    },
  };
}
