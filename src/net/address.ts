/**
 * IP address parsing, canonical text and address classes (SPEC §1 "Address classes denied by
 * default"). Runs on every request and every resolved address, so each address is parsed to
 * bytes once and matched against prefix tables built at module load: no regex per class.
 */

/** The class of an address; everything but `public` is denied unless the operator opens it. */
export type AddressClass =
  | 'public'
  | 'private'
  | 'loopback'
  | 'link_local'
  | 'cgnat'
  | 'multicast'
  | 'unspecified'
  | 'reserved'
  | 'v6_embedded';

/** Reason code for a denied address class. */
export type AddressReason =
  | 'ip_private'
  | 'ip_loopback'
  | 'ip_link_local'
  | 'ip_cgnat'
  | 'ip_multicast'
  | 'ip_unspecified'
  | 'ip_reserved'
  | 'ip_v6_embedded';

/** A parsed IP address: 4 bytes for IPv4, 16 for IPv6, network byte order. */
export interface ParsedIp {
  readonly version: 4 | 6;
  readonly bytes: Uint8Array;
}

// ---------------------------------------------------------------------------------------------
// Parsing

const CH_0 = 0x30;
const CH_9 = 0x39;
const CH_DOT = 0x2e;
const CH_COLON = 0x3a;

/**
 * Strict dotted-quad IPv4 as an unsigned 32-bit number, or -1. Leading zeros are refused:
 * "010" means 8 to inet_aton and 10 to most humans, so a strict parser must not guess.
 */
function parseIpv4Number(s: string): number {
  const len = s.length;
  if (len < 7 || len > 15) return -1;
  let value = 0;
  let parts = 0;
  let i = 0;
  while (i <= len) {
    const start = i;
    let octet = 0;
    while (i < len) {
      const c = s.charCodeAt(i);
      if (c < CH_0 || c > CH_9) break;
      octet = octet * 10 + (c - CH_0);
      i++;
    }
    const digits = i - start;
    if (digits === 0 || digits > 3 || octet > 255) return -1;
    if (digits > 1 && s.charCodeAt(start) === CH_0) return -1;
    value = value * 256 + octet;
    parts++;
    if (i === len) break;
    if (s.charCodeAt(i) !== CH_DOT || parts === 4) return -1;
    i++;
  }
  return parts === 4 ? value : -1;
}

/** Value of one hex digit, or -1. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

/**
 * Strict RFC 4291 textual IPv6 (no brackets, no zone ID) as 16 bytes, or null. One pass, no
 * allocation but the result: this runs on every resolved AAAA record.
 */
function parseIpv6Bytes(s: string): Uint8Array | null {
  const len = s.length;
  if (len < 2 || len > 45) return null;
  const bytes = new Uint8Array(16);
  let count = 0;
  let gap = -1;
  let i = 0;
  if (s.charCodeAt(0) === CH_COLON) {
    if (s.charCodeAt(1) !== CH_COLON) return null;
    gap = 0;
    i = 2;
  }
  while (i < len) {
    if (count === 8) return null;
    const start = i;
    let group = 0;
    for (let h = hexValue(s.charCodeAt(i)); h >= 0 && i - start < 5; h = hexValue(s.charCodeAt(i))) {
      group = group * 16 + h;
      i++;
    }
    if (s.charCodeAt(i) === CH_DOT) {
      // An embedded dotted quad fills the last two groups and must end the address.
      const v4 = count > 6 ? -1 : parseIpv4Number(s.slice(start));
      if (v4 < 0) return null;
      bytes.set(v4Bytes(v4), count * 2);
      count += 2;
      break;
    }
    const digits = i - start;
    if (digits === 0 || digits > 4) return null;
    bytes[count * 2] = group >> 8;
    bytes[count * 2 + 1] = group & 0xff;
    count++;
    if (i === len) break;
    if (s.charCodeAt(i) !== CH_COLON || ++i === len) return null;
    if (s.charCodeAt(i) === CH_COLON) {
      if (gap >= 0) return null;
      gap = count;
      i++;
    }
  }
  // "::" stands for at least one zero group; without it all eight must be written.
  if (gap < 0) return count === 8 ? bytes : null;
  if (count > 7) return null;
  const moved = count - gap;
  bytes.copyWithin(16 - moved * 2, gap * 2, count * 2);
  bytes.fill(0, gap * 2, 16 - moved * 2);
  return bytes;
}

/** Four bytes of an IPv4 number. */
function v4Bytes(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** Strict textual IP parse: dotted-quad IPv4 (decimal, no leading zeros) or RFC 4291 IPv6; null otherwise. */
export function parseIp(ip: string): ParsedIp | null {
  if (ip.includes(':')) {
    const bytes = parseIpv6Bytes(ip);
    return bytes === null ? null : { version: 6, bytes };
  }
  const n = parseIpv4Number(ip);
  return n < 0 ? null : { version: 4, bytes: v4Bytes(n) };
}

// ---------------------------------------------------------------------------------------------
// IPv4 inside IPv6

/** Big-endian uint32 from four bytes at `offset`. */
function readU32(bytes: Uint8Array, offset: number): number {
  return (
    ((bytes[offset] as number) * 0x1000000) +
    (((bytes[offset + 1] as number) << 16) | ((bytes[offset + 2] as number) << 8) | (bytes[offset + 3] as number))
  );
}

/** True when the first `n` bytes are zero. */
function zeroPrefix(bytes: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (bytes[i] !== 0) return false;
  return true;
}

/**
 * The IPv4 address an IPv6 address stands for, or -1: IPv4-mapped ::ffff:a.b.c.d, and the
 * deprecated IPv4-compatible ::a.b.c.d except :: and ::1, which are IPv6's own addresses.
 * Both reach the IPv4 host on dual-stack sockets, so they must be judged as that host.
 */
function embeddedV4(bytes: Uint8Array): number {
  if (!zeroPrefix(bytes, 10)) return -1;
  if (bytes[10] === 0xff && bytes[11] === 0xff) return readU32(bytes, 12);
  if (bytes[10] !== 0 || bytes[11] !== 0) return -1;
  const v4 = readU32(bytes, 12);
  return v4 > 1 ? v4 : -1;
}

// ---------------------------------------------------------------------------------------------
// Canonical text

/** Dotted quad of an IPv4 number. */
function formatIpv4(n: number): string {
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`;
}

/** RFC 5952 text: lower case, no leading zeros, the longest (first on a tie) run of 2+ zero groups as "::". */
function formatIpv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] as number) << 8) | (bytes[i + 1] as number));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]): string => g.map((x) => x.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Canonical text of already-parsed bytes (same rules as canonicalIp), so callers holding bytes parse once. */
export function formatIp(p: ParsedIp): string {
  if (p.version === 4) return formatIpv4(readU32(p.bytes, 0));
  const v4 = embeddedV4(p.bytes);
  return v4 >= 0 ? formatIpv4(v4) : formatIpv6(p.bytes);
}

/** Canonical text of an IP (dotted quad, or RFC 5952 IPv6 with mapped/compatible IPv4 unwrapped); null if not an IP. */
export function canonicalIp(ip: string): string | null {
  const p = parseIp(ip);
  return p === null ? null : formatIp(p);
}

// ---------------------------------------------------------------------------------------------
// CIDRs

/** A CIDR entry that cannot be used; `entry` is the text as the operator wrote it. */
export class CidrError extends Error {
  readonly entry: string;

  constructor(entry: string, why: string) {
    super(`invalid CIDR ${JSON.stringify(entry)}: ${why}`);
    this.name = 'CidrError';
    this.entry = entry;
  }
}

/** A parsed CIDR. */
export interface ParsedCidr {
  readonly version: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

/** Prefix length digits: decimal, no sign, no leading zeros. */
function parsePrefixLength(text: string): number {
  if (!/^(0|[1-9][0-9]{0,2})$/.test(text)) return -1;
  return Number(text);
}

/** True when any bit after `prefix` is set. */
function hostBitsSet(bytes: Uint8Array, prefix: number): boolean {
  for (let bit = prefix; bit < bytes.length * 8; bit++) {
    if (((bytes[bit >> 3] as number) >> (7 - (bit & 7))) & 1) return true;
  }
  return false;
}

/** Copy of `bytes` with every bit after `prefix` cleared. */
function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  const full = prefix >> 3;
  out.set(bytes.subarray(0, full));
  const rest = prefix & 7;
  if (rest !== 0) out[full] = (bytes[full] as number) & (0xff << (8 - rest));
  return out;
}

/**
 * Parses "addr/prefix" (a bare address means a single host). Throws CidrError for a bad address,
 * a bad or too long prefix, or host bits set: "10.0.0.1/8" is refused rather than silently
 * widened, because the operator almost certainly meant something narrower.
 */
export function parseCidr(cidr: string): ParsedCidr {
  const slash = cidr.indexOf('/');
  const addrText = slash < 0 ? cidr : cidr.slice(0, slash);
  const ip = parseIp(addrText);
  if (ip === null) throw new CidrError(cidr, 'bad address (dotted-quad IPv4 or IPv6 expected)');
  const max = ip.version === 4 ? 32 : 128;
  const prefix = slash < 0 ? max : parsePrefixLength(cidr.slice(slash + 1));
  if (prefix < 0) throw new CidrError(cidr, 'bad prefix length (decimal digits expected)');
  if (prefix > max) throw new CidrError(cidr, `prefix too long (at most /${max} for IPv${ip.version})`);
  if (hostBitsSet(ip.bytes, prefix)) {
    const net = formatNetwork(ip.version, maskBytes(ip.bytes, prefix));
    throw new CidrError(cidr, `host bits set (did you mean ${net}/${prefix}?)`);
  }
  return { version: ip.version, bytes: ip.bytes, prefix };
}

/** Network address text without unwrapping, for messages. */
function formatNetwork(version: 4 | 6, bytes: Uint8Array): string {
  return version === 4 ? formatIpv4(readU32(bytes, 0)) : formatIpv6(bytes);
}

// ---------------------------------------------------------------------------------------------
// Classification tables

interface V4Rule {
  readonly net: number;
  readonly mask: number;
  readonly cls: AddressClass;
}

interface V6Rule {
  readonly bytes: Uint8Array;
  readonly prefix: number;
  readonly cls: AddressClass;
}

/** Netmask for a prefix length, as an unsigned 32-bit number. */
function v4Mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Builds a rule table from "addr/prefix" literals; called at module load only. */
function v4Rules(entries: ReadonlyArray<readonly [string, AddressClass]>): readonly V4Rule[] {
  return entries.map(([cidr, cls]) => {
    const c = parseCidr(cidr);
    return { net: readU32(c.bytes, 0), mask: v4Mask(c.prefix), cls };
  });
}

/** Builds an IPv6 rule table; called at module load only. */
function v6Rules(entries: ReadonlyArray<readonly [string, AddressClass]>): readonly V6Rule[] {
  return entries.map(([cidr, cls]) => {
    const c = parseCidr(cidr);
    return { bytes: c.bytes, prefix: c.prefix, cls };
  });
}

// IANA IPv4 special-purpose registry, ranges not globally reachable. More specific entries come
// first (first match wins): 255.255.255.255 is broadcast, the rest of 240/4 is reserved.
const V4_TABLE: readonly V4Rule[] = v4Rules([
  ['255.255.255.255/32', 'multicast'],
  ['0.0.0.0/8', 'unspecified'],
  ['10.0.0.0/8', 'private'],
  ['100.64.0.0/10', 'cgnat'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link_local'],
  ['172.16.0.0/12', 'private'],
  ['192.0.0.0/24', 'reserved'], // IETF protocol assignments; a cloud metadata service lives here
  ['192.0.2.0/24', 'reserved'], // TEST-NET-1
  ['192.88.99.0/24', 'reserved'], // deprecated 6to4 relay anycast (RFC 7526)
  ['192.168.0.0/16', 'private'],
  ['198.18.0.0/15', 'reserved'], // benchmarking
  ['198.51.100.0/24', 'reserved'], // TEST-NET-2
  ['203.0.113.0/24', 'reserved'], // TEST-NET-3
  ['224.0.0.0/4', 'multicast'],
  ['240.0.0.0/4', 'reserved'],
]);

// IANA IPv6 special-purpose registry. IPv4-mapped and IPv4-compatible addresses are handled
// before this table (they are judged as their IPv4). Teredo must precede 2001::/23.
const V6_TABLE: readonly V6Rule[] = v6Rules([
  ['64:ff9b::/96', 'v6_embedded'], // NAT64 well-known prefix
  ['64:ff9b:1::/48', 'v6_embedded'], // local-use NAT64
  ['100::/64', 'reserved'], // discard-only
  ['100:0:0:1::/64', 'reserved'], // dummy prefix (RFC 9780)
  ['2001::/32', 'v6_embedded'], // Teredo
  ['2001::/23', 'reserved'], // IETF protocol assignments
  ['2001:db8::/32', 'reserved'], // documentation
  ['2002::/16', 'v6_embedded'], // 6to4
  ['3fff::/20', 'reserved'], // documentation
  ['5f00::/16', 'reserved'], // SRv6 SIDs
  ['fc00::/7', 'private'], // unique local
  ['fe80::/10', 'link_local'],
  ['fec0::/10', 'reserved'], // deprecated site-local
  ['ff00::/8', 'multicast'],
]);

/** Class of an IPv4 number. */
function classifyV4(n: number): AddressClass {
  for (const rule of V4_TABLE) {
    if (((n & rule.mask) >>> 0) === rule.net) return rule.cls;
  }
  return 'public';
}

/** True when `bytes` starts with the first `prefix` bits of `net`. */
function matchesPrefix(bytes: Uint8Array, net: Uint8Array, prefix: number): boolean {
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (bytes[i] !== net[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((bytes[full] as number) & mask) === ((net[full] as number) & mask);
}

/** Class of 16 IPv6 bytes. */
function classifyV6(bytes: Uint8Array): AddressClass {
  const v4 = embeddedV4(bytes);
  if (v4 >= 0) return classifyV4(v4);
  if (zeroPrefix(bytes, 15)) {
    if (bytes[15] === 0) return 'unspecified';
    if (bytes[15] === 1) return 'loopback';
  }
  for (const rule of V6_TABLE) {
    if (matchesPrefix(bytes, rule.bytes, rule.prefix)) return rule.cls;
  }
  // Only 2000::/3 is allocated as global unicast; the rest is reserved by the IETF and not
  // routable, so failing closed there costs nothing.
  return ((bytes[0] as number) & 0xe0) === 0x20 ? 'public' : 'reserved';
}

/** Address class of an IP (dotted quad or any valid IPv6 spelling); throws TypeError if `ip` is not an IP. */
export function classifyAddress(ip: string): AddressClass {
  const p = parseIp(ip);
  if (p === null) throw new TypeError('classifyAddress: not an IP address');
  return classifyParsed(p);
}

/** Address class of already-parsed bytes. */
export function classifyParsed(p: ParsedIp): AddressClass {
  return p.version === 4 ? classifyV4(readU32(p.bytes, 0)) : classifyV6(p.bytes);
}

const REASON_BY_CLASS: Readonly<Record<AddressClass, AddressReason | null>> = {
  public: null,
  private: 'ip_private',
  loopback: 'ip_loopback',
  link_local: 'ip_link_local',
  cgnat: 'ip_cgnat',
  multicast: 'ip_multicast',
  unspecified: 'ip_unspecified',
  reserved: 'ip_reserved',
  v6_embedded: 'ip_v6_embedded',
};

/** Reason code that denies an address class; null for public. */
export function addressReason(cls: AddressClass): AddressReason | null {
  return REASON_BY_CLASS[cls];
}

// ---------------------------------------------------------------------------------------------
// CIDR sets

const BYTE_HEX: readonly string[] = Array.from({ length: 256 }, (_, b) => b.toString(16).padStart(2, '0'));

/** Hex text of 16 bytes, the key space of the IPv6 maps. */
function hex32(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += BYTE_HEX[b] as string;
  return s;
}

/** Key of an IPv6 address truncated to `prefix` bits: whole nibbles, then the masked partial nibble. */
function v6Key(hex: string, prefix: number): string {
  const nibbles = prefix >> 2;
  const rest = prefix & 3;
  if (rest === 0) return hex.slice(0, nibbles);
  const partial = parseInt(hex.charAt(nibbles), 16) & (0xf << (4 - rest)) & 0xf;
  return hex.slice(0, nibbles) + partial.toString(16);
}

/**
 * An immutable set of IPv4 and IPv6 CIDRs. Networks are kept in one hash set per prefix length,
 * so `has` costs one lookup per distinct prefix length, however many entries there are.
 * IPv4-mapped (and IPv4-compatible) IPv6 addresses are unwrapped first and match IPv4 entries
 * only, exactly as canonicalIp would spell them; a mapped entry such as ::ffff:10.0.0.0/104 is
 * stored as its IPv4 network (10.0.0.0/8).
 */
export class CidrSet {
  /** Number of distinct networks in the set. */
  readonly size: number;
  readonly #v4 = new Map<number, Set<number>>();
  readonly #v6 = new Map<number, Set<string>>();
  readonly #v4Prefixes: readonly number[];
  readonly #v6Prefixes: readonly number[];

  /** Builds the set; throws CidrError naming the first bad entry. */
  constructor(cidrs: readonly string[]) {
    let size = 0;
    for (const text of cidrs) {
      const c = parseCidr(text);
      if (this.#add(c)) size++;
    }
    this.size = size;
    this.#v4Prefixes = [...this.#v4.keys()].sort((a, b) => b - a);
    this.#v6Prefixes = [...this.#v6.keys()].sort((a, b) => b - a);
  }

  /** Adds one network; false when it was already present. */
  #add(c: ParsedCidr): boolean {
    if (c.version === 6 && c.prefix >= 96 && isMappedPrefix(c.bytes)) {
      return addTo(this.#v4, c.prefix - 96, readU32(c.bytes, 12));
    }
    if (c.version === 4) return addTo(this.#v4, c.prefix, readU32(c.bytes, 0));
    return addTo(this.#v6, c.prefix, v6Key(hex32(c.bytes), c.prefix));
  }

  /** True when `ip` (any valid spelling) lies in one of the networks; false for non-IPs. */
  has(ip: string): boolean {
    const p = parseIp(ip);
    if (p === null) return false;
    if (p.version === 4) return this.#hasV4(readU32(p.bytes, 0));
    const v4 = embeddedV4(p.bytes);
    return v4 >= 0 ? this.#hasV4(v4) : this.#hasV6(p.bytes);
  }

  #hasV4(n: number): boolean {
    for (const prefix of this.#v4Prefixes) {
      if (this.#v4.get(prefix)?.has((n & v4Mask(prefix)) >>> 0)) return true;
    }
    return false;
  }

  #hasV6(bytes: Uint8Array): boolean {
    if (this.#v6Prefixes.length === 0) return false;
    const hex = hex32(bytes);
    for (const prefix of this.#v6Prefixes) {
      if (this.#v6.get(prefix)?.has(v6Key(hex, prefix))) return true;
    }
    return false;
  }
}

/** True when the first 96 bits are the IPv4-mapped prefix ::ffff:0:0/96. */
function isMappedPrefix(bytes: Uint8Array): boolean {
  return zeroPrefix(bytes, 10) && bytes[10] === 0xff && bytes[11] === 0xff;
}

/** Inserts `key` into the set for `prefix`; false when already present. */
function addTo<K>(map: Map<number, Set<K>>, prefix: number, key: K): boolean {
  let set = map.get(prefix);
  if (set === undefined) {
    set = new Set<K>();
    map.set(prefix, set);
  }
  if (set.has(key)) return false;
  set.add(key);
  return true;
}
