/**
 * A tiny MaxMind DB (MMDB v2) writer for tests: an IPv6 tree (IPv4 under ::/96), 32-bit records,
 * and the data types a GeoIP2-City record uses (maps, UTF-8 strings, unsigned ints, arrays).
 */
import { isIPv4 } from 'node:net';

type Value = string | number | Value[] | { [key: string]: Value };

/** One network and its record. */
export interface MmdbEntry {
  /** CIDR, IPv4 or IPv6. */
  readonly network: string;
  readonly data: Value;
}

function ipBits(ip: string): number[] {
  const bytes: number[] = [];
  if (isIPv4(ip)) {
    bytes.push(...new Array(12).fill(0), ...ip.split('.').map(Number));
  } else {
    const [head, tail] = ip.split('::') as [string, string | undefined];
    const h = head ? head.split(':') : [];
    const t = tail ? tail.split(':') : [];
    const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill('0'), ...t];
    for (const g of groups) {
      const v = parseInt(g, 16);
      bytes.push(v >> 8, v & 0xff);
    }
  }
  const bits: number[] = [];
  for (const b of bytes) for (let i = 7; i >= 0; i--) bits.push((b >> i) & 1);
  return bits;
}

function control(type: number, size: number): Buffer {
  const parts: number[] = [];
  let first: number;
  let extra: number[] = [];
  if (size < 29) first = size;
  else if (size < 285) (first = 29), (extra = [size - 29]);
  else if (size < 65821) (first = 30), (extra = [(size - 285) >> 8, (size - 285) & 0xff]);
  else (first = 31), (extra = [((size - 65821) >> 16) & 0xff, ((size - 65821) >> 8) & 0xff, (size - 65821) & 0xff]);
  if (type <= 7) parts.push((type << 5) | first);
  else parts.push(first, type - 7);
  return Buffer.from([...parts, ...extra]);
}

function encode(v: Value): Buffer {
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([control(2, b.length), b]);
  }
  if (typeof v === 'number') {
    const bytes: number[] = [];
    for (let n = v; n > 0; n = Math.floor(n / 256)) bytes.unshift(n % 256);
    return Buffer.concat([control(6, bytes.length), Buffer.from(bytes)]);
  }
  if (Array.isArray(v)) return Buffer.concat([control(11, v.length), ...v.map(encode)]);
  const entries = Object.entries(v);
  return Buffer.concat([control(7, entries.length), ...entries.flatMap(([k, val]) => [encode(k), encode(val)])]);
}

/** Builds an MMDB file's bytes. */
export function buildMmdb(entries: readonly MmdbEntry[], databaseType = 'Portcullis-Test-City'): Buffer {
  // Trie of nodes: each node has [left, right] children: node index, {data: i}, or null.
  type Rec = number | { data: number } | null;
  const nodes: [Rec, Rec][] = [[null, null]];
  const blobs: Buffer[] = [];
  const offsets: number[] = [];
  let size = 0;
  entries.forEach((e, i) => {
    const blob = encode(e.data);
    offsets.push(size);
    size += blob.length;
    blobs.push(blob);
    const [addr, prefixText] = e.network.split('/') as [string, string];
    const prefix = Number(prefixText) + (isIPv4(addr) ? 96 : 0);
    const bits = ipBits(addr);
    let node = 0;
    for (let d = 0; d < prefix; d++) {
      const bit = bits[d]!;
      if (d === prefix - 1) {
        nodes[node]![bit] = { data: i };
        break;
      }
      const next = nodes[node]![bit];
      if (typeof next === 'number') node = next;
      else {
        nodes.push([null, null]);
        nodes[node]![bit] = nodes.length - 1;
        node = nodes.length - 1;
      }
    }
  });
  const n = nodes.length;
  const value = (r: Rec): number => (r === null ? n : typeof r === 'number' ? r : n + 16 + offsets[r.data]!);
  const tree = Buffer.alloc(n * 8);
  nodes.forEach(([l, r], i) => {
    tree.writeUInt32BE(value(l), i * 8);
    tree.writeUInt32BE(value(r), i * 8 + 4);
  });
  const metadata = encode({
    node_count: n,
    record_size: 32,
    ip_version: 6,
    database_type: databaseType,
    languages: ['en'],
    binary_format_major_version: 2,
    binary_format_minor_version: 0,
    build_epoch: Math.floor(Date.now() / 1000),
    description: { en: 'test database' },
  });
  return Buffer.concat([tree, Buffer.alloc(16), ...blobs, Buffer.from([0xab, 0xcd, 0xef]), Buffer.from('MaxMind.com'), metadata]);
}

/** A GeoIP2-City-shaped record. */
export function cityRecord(country: string, city: string): Value {
  return { country: { iso_code: country, names: { en: country } }, city: { names: { en: city } } };
}
