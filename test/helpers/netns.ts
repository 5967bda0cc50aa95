/**
 * Network-namespace harness for tests that need private, metadata or "public" addresses.
 *
 * scripts/run-tests.mjs runs test/netns/** under `unshare -n` with PORTCULLIS_NETNS=1. Inside,
 * the only interface is a down `lo`; setupNetns brings it up and adds `ifb` interfaces carrying
 * the requested addresses, so servers can listen on 10.0.0.1 or 169.254.169.254 without a single
 * packet leaving the namespace. Safety first: setupNetns refuses to touch any namespace that is
 * not obviously a fresh, empty one — it must never configure the host network.
 */
import { execFileSync } from 'node:child_process';
import { readlinkSync } from 'node:fs';
import { describe, test } from 'vitest';

/** One address to add: CIDR is "ip/32" or "ip/128" (a bare ip means a single host). */
export interface NetnsAddress {
  /** Interface to carry it; default `pcx0`. Must start with `pcx`. */
  iface?: string;
  cidr: string;
}

/** Whether the namespace harness may run here, and why not. */
export type NetnsAvailability = { ok: true } | { ok: false; reason: string };

// Interfaces this helper creates are ifb links named pcx*; any other interface besides lo means
// we are not in the namespace run-tests.mjs made, and nothing may be configured.
const IFACE_PREFIX = 'pcx';
const DEFAULT_IFACE = 'pcx0';

// Fallback tunnel devices some kernels create, down and address-less, in every new namespace.
const KERNEL_FALLBACK = new Set(['tunl0', 'sit0', 'gre0', 'gretap0', 'erspan0', 'ip_vti0', 'ip6_vti0', 'ip6tnl0', 'ip6gre0']);

interface Link {
  readonly name: string;
  readonly ifb: boolean;
  readonly up: boolean;
}

/** Runs `ip` with arguments (no shell); returns stdout. */
function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Every link of the current network namespace, read over netlink (not /sys, which may be the host's). */
function links(): Link[] {
  // One line per link; "-d" adds the link kind ("\    ifb ...") after a backslash separator.
  return ip('-d', '-o', 'link', 'show')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => ({
      name: /^\d+:\s+([^:@\s]+)/.exec(line)?.[1] ?? '?',
      ifb: /\\\s+ifb\s/.test(line),
      up: /<[^>]*\bUP\b[^>]*>/.test(line),
    }));
}

/** The namespace inode of a process, e.g. "net:[4026531840]"; null when not readable. */
function netnsOf(pid: string): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return null;
  }
}

/** Why the current process must not configure its network, or null when it may. */
function refusal(): string | null {
  if (process.env.PORTCULLIS_NETNS !== '1') return 'PORTCULLIS_NETNS=1 is not set (run through scripts/run-tests.mjs)';
  if (process.platform !== 'linux') return `network namespaces need Linux, not ${process.platform}`;
  const self = netnsOf('self');
  if (self === null) return 'cannot read /proc/self/ns/net';
  // run-tests.mjs records the namespace it was started in; ours must be a different one.
  const outer = process.env.PORTCULLIS_OUTER_NETNS;
  if (outer === undefined || outer === '') return 'PORTCULLIS_OUTER_NETNS is not set (run through scripts/run-tests.mjs)';
  if (self === outer) return 'this process is still in the namespace run-tests.mjs started in';
  // PID 1's namespace is the host's (or the container's); it may be unreadable in a sandbox.
  if (self === netnsOf('1')) return 'this process shares the network namespace of PID 1';
  let found: Link[];
  try {
    found = links();
  } catch (err) {
    return `cannot list links with ip(8): ${(err as Error).message.split('\n')[0]}`;
  }
  const foreign = found.filter((l) => !isOurs(l));
  if (foreign.length > 0) return `namespace has foreign interfaces: ${foreign.map((l) => l.name).join(', ')}`;
  return null;
}

/** True for lo, this helper's pcx* ifb links, and the kernel's idle fallback tunnels. */
function isOurs(link: Link): boolean {
  if (link.name === 'lo') return true;
  if (link.name.startsWith(IFACE_PREFIX)) return link.ifb;
  return KERNEL_FALLBACK.has(link.name) && !link.up;
}

/** Whether the namespace harness may run in this process. */
export function netnsAvailable(): NetnsAvailability {
  const reason = refusal();
  return reason === null ? { ok: true } : { ok: false, reason };
}

/** Runs `ip` and treats "already exists" as success, so parallel or repeated setups are harmless. */
function ipIdempotent(...args: string[]): void {
  try {
    ip(...args);
  } catch (err) {
    const stderr = String((err as { stderr?: unknown }).stderr ?? '');
    if (!/File exists|already assigned/i.test(stderr)) throw new Error(`ip ${args.join(' ')}: ${stderr.trim()}`);
  }
}

/** "ip/len" with a host-length prefix; only single addresses are configured. */
function hostCidr(cidr: string): string {
  const [addr, len] = cidr.split('/');
  const full = addr?.includes(':') === true ? '128' : '32';
  if (addr === undefined || addr === '' || (len !== undefined && len !== full)) {
    throw new Error(`setupNetns: ${cidr} must be a single address (/${full})`);
  }
  return `${addr}/${full}`;
}

/**
 * Brings lo up and adds each address on an ifb interface (created if missing). Throws, touching
 * nothing, unless PORTCULLIS_NETNS=1 and the namespace holds only lo and this helper's links.
 */
export function setupNetns(addresses: readonly NetnsAddress[]): void {
  const reason = refusal();
  if (reason !== null) throw new Error(`setupNetns refused: ${reason}`);
  ipIdempotent('link', 'set', 'lo', 'up');
  for (const { iface = DEFAULT_IFACE, cidr } of addresses) {
    if (!iface.startsWith(IFACE_PREFIX) || !/^[a-z0-9]{1,15}$/.test(iface)) {
      throw new Error(`setupNetns: interface ${iface} must be named ${IFACE_PREFIX}* (at most 15 characters)`);
    }
    const host = hostCidr(cidr);
    ipIdempotent('link', 'add', iface, 'type', 'ifb');
    ipIdempotent('link', 'set', iface, 'up');
    // nodad: duplicate address detection would hold an IPv6 address "tentative" (unbindable) for a while.
    const extra = host.includes(':') ? ['nodad'] : [];
    ipIdempotent('addr', 'add', host, 'dev', iface, ...extra);
  }
}

/**
 * `describe` for namespace tests: runs them inside the namespace, skips them (with the reason
 * printed) anywhere else — except with CI=true, where a missing namespace is a failure.
 */
export function describeNetns(name: string, fn: () => void): void {
  const available = netnsAvailable();
  if (available.ok) {
    describe(name, fn);
    return;
  }
  if (process.env.CI === 'true') {
    describe(name, () => {
      test('network namespace is available', () => {
        throw new Error(`namespace tests cannot run with CI=true: ${available.reason}`);
      });
    });
    return;
  }
  process.stderr.write(`[netns] skipping "${name}": ${available.reason}\n`);
  describe.skip(`${name} (skipped: ${available.reason})`, fn);
}
