/**
 * The sidecar's iptables rules (docker/k8s/sidecar/iptables-init.sh), applied for real inside
 * the private network namespace of the netns suite (scripts/run-tests.mjs runs this file under
 * `unshare -n`; nothing here runs, or touches iptables, anywhere else). Clients run as the
 * proxy's UID and as the agent's UID (setpriv), against servers on loopback and on 10.0.0.1 /
 * fd00:5ec::1, namespace-local addresses on an ifb interface that stand in for "outside":
 *
 *   - the agent's UID reaches the proxy port on loopback, and nothing else: not 10.0.0.1, not
 *     another loopback port, not the proxy port on a non-loopback address, not DNS (UDP);
 *   - the proxy's UID reaches 10.0.0.1, TCP and UDP;
 *   - root is confined like the agent; replies to connections the agent accepted still pass.
 *
 * The rules live in a test-named chain and are removed afterwards: the namespace is shared with
 * the suite's other files, which run one after another.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { describeNetns, netnsAvailable, setupNetns } from '../helpers/netns.js';

const run = promisify(execFile);
const SCRIPT = path.resolve(import.meta.dirname, '../../docker/k8s/sidecar/iptables-init.sh');
const PROXY_UID = 10001;
const AGENT_UID = 10002;
const CHAIN = 'PCX-SIDECAR-TEST';
const OUTSIDE_V4 = '10.0.0.1';
const OUTSIDE_V6 = 'fd00:5ec::1';
const ipv6 = existsSync('/proc/net/if_inet6');

/** Why these tests cannot run here (beyond the namespace itself), or null. */
function missingTools(): string | null {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) return 'needs root inside the namespace (setpriv, iptables)';
  for (const [bin, pkg] of [['iptables', 'iptables'], ['setpriv', 'util-linux']] as const) {
    const probe = spawnSync(bin, ['--version'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) return `${bin} is not installed (Debian package "${pkg}"; .ci/run installs it)`;
  }
  return null;
}

/** A TCP server that answers "pong" and counts accepted connections. */
interface Counting {
  readonly server: net.Server;
  readonly port: number;
  accepted: number;
}

async function tcpServer(host: string, port = 0): Promise<Counting> {
  const server = net.createServer();
  const s = { server, port: 0, accepted: 0 };
  server.on('connection', (socket) => {
    s.accepted++;
    socket.on('error', () => undefined);
    socket.end('pong');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  s.port = (server.address() as net.AddressInfo).port;
  return s;
}

/** A UDP echo server ("DNS") that counts datagrams. */
async function udpServer(host: string): Promise<{ socket: dgram.Socket; port: number; received: () => number }> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  let received = 0;
  socket.on('message', (msg, rinfo) => {
    received++;
    socket.send(msg, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  return { socket, port: socket.address().port, received: () => received };
}

// Runs in the child as the given UID: one TCP connect or one UDP round trip, prints the outcome.
const CLIENT = `
const [proto, host, port] = process.argv.slice(1);
const done = (s) => { console.log(s); process.exit(0); };
setTimeout(() => done('timeout'), 1500);
if (proto === 'tcp') {
  const s = require('node:net').connect({ host, port: Number(port) });
  s.on('data', (d) => done('reply:' + d));
  s.on('error', (e) => done('error:' + e.code));
} else {
  const s = require('node:dgram').createSocket(host.includes(':') ? 'udp6' : 'udp4');
  s.on('message', (d) => done('reply:' + d));
  s.on('error', (e) => done('error:' + e.code));
  s.send('ping', Number(port), host, (e) => e && done('error:' + e.code));
}`;

/** Connects (TCP) or sends (UDP) as `uid`; "reply:pong" / "reply:ping" on success. */
async function as(uid: number, proto: 'tcp' | 'udp', host: string, port: number): Promise<string> {
  const args = uid === 0 ? [] : ['setpriv', `--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', '--'];
  const argv = [...args, process.execPath, '-e', CLIENT, proto, host, String(port)];
  const { stdout } = await run(argv[0] as string, argv.slice(1), { cwd: '/', env: { PATH: process.env['PATH'] ?? '' }, timeout: 10_000 });
  return stdout.trim();
}

/** Runs iptables-init.sh with the test chain; returns its output. */
function applyRules(env: Record<string, string>): string {
  return execFileSync('/bin/sh', [SCRIPT], { env: { PATH: process.env['PATH'] ?? '', CHAIN, ...env }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Removes the test chain and its OUTPUT hook (both families), ignoring what is already gone. */
function removeRules(): void {
  for (const bin of ['iptables', ...(ipv6 ? ['ip6tables'] : [])]) {
    spawnSync(bin, ['-w', '-D', 'OUTPUT', '-j', CHAIN]);
    spawnSync(bin, ['-w', '-F', CHAIN]);
    spawnSync(bin, ['-w', '-X', CHAIN]);
  }
}

const NAME = 'sidecar iptables rules inside a network namespace';
const missing = missingTools();

/** The tests; registered only when the tools are here (see the end of the file). */
function suite(): void {
  const servers: Counting[] = [];
  let outside: Counting;
  let outside6: Counting | null = null;
  let proxyPort: Counting;
  let otherLoopback: Counting;
  let dnsLoop: Awaited<ReturnType<typeof udpServer>>;
  let dnsOutside: Awaited<ReturnType<typeof udpServer>>;
  let applied = false;

  beforeAll(async () => {
    // Second guard before any iptables call: never the host's namespace.
    const available = netnsAvailable();
    if (!available.ok) throw new Error(`refusing to touch iptables: ${available.reason}`);
    setupNetns([{ cidr: `${OUTSIDE_V4}/32`, iface: 'pcx5' }, ...(ipv6 ? [{ cidr: `${OUTSIDE_V6}/128`, iface: 'pcx5' }] : [])]);
    proxyPort = await tcpServer('127.0.0.1');
    outside = await tcpServer(OUTSIDE_V4);
    otherLoopback = await tcpServer('127.0.0.1');
    servers.push(proxyPort, outside, otherLoopback);
    if (ipv6) {
      outside6 = await tcpServer(OUTSIDE_V6);
      servers.push(outside6, await tcpServer('::1', proxyPort.port));
    }
    dnsLoop = await udpServer('127.0.0.1');
    dnsOutside = await udpServer(OUTSIDE_V4);
    // Controls before the rules: the agent's UID can reach everything.
    expect(await as(AGENT_UID, 'tcp', OUTSIDE_V4, outside.port)).toBe('reply:pong');
    expect(await as(AGENT_UID, 'udp', OUTSIDE_V4, dnsOutside.port)).toBe('reply:ping');
    const out = applyRules({ PROXY_UID: String(PROXY_UID), PROXY_PORT: String(proxyPort.port), AGENT_UID: String(AGENT_UID) });
    applied = true;
    expect(out).toContain(`only uid ${PROXY_UID} opens connections`);
  });

  afterAll(async () => {
    if (applied) removeRules();
    await Promise.all(servers.map((s) => new Promise((resolve) => s.server.close(resolve))));
    dnsLoop?.socket.close();
    dnsOutside?.socket.close();
  });

  test("the agent's UID reaches the proxy port on loopback", async () => {
    const before = proxyPort.accepted;
    expect(await as(AGENT_UID, 'tcp', '127.0.0.1', proxyPort.port)).toBe('reply:pong');
    expect(proxyPort.accepted).toBe(before + 1);
  });

  test("the agent's UID cannot reach a namespace-local outside address; the proxy's UID can", async () => {
    const before = outside.accepted;
    expect(await as(AGENT_UID, 'tcp', OUTSIDE_V4, outside.port)).toMatch(/^error:(ECONNREFUSED|EPERM|ECONNRESET)$/);
    expect(outside.accepted).toBe(before);
    expect(await as(PROXY_UID, 'tcp', OUTSIDE_V4, outside.port)).toBe('reply:pong');
    expect(outside.accepted).toBe(before + 1);
  });

  test("the agent's UID cannot reach other loopback ports, nor the proxy port on another address", async () => {
    expect(await as(AGENT_UID, 'tcp', '127.0.0.1', otherLoopback.port)).toMatch(/^error:/);
    expect(otherLoopback.accepted).toBe(0);
    const onOutside = await tcpServer(OUTSIDE_V4, proxyPort.port);
    servers.push(onOutside);
    expect(await as(AGENT_UID, 'tcp', OUTSIDE_V4, proxyPort.port)).toMatch(/^error:/);
    expect(onOutside.accepted).toBe(0);
  });

  test("no DNS for the agent's UID, on loopback or outside; the proxy's UID still resolves", async () => {
    expect(await as(AGENT_UID, 'udp', '127.0.0.1', dnsLoop.port)).toMatch(/^(error:\w+|timeout)$/);
    expect(await as(AGENT_UID, 'udp', OUTSIDE_V4, dnsOutside.port)).toMatch(/^(error:\w+|timeout)$/);
    expect(dnsLoop.received()).toBe(0);
    const before = dnsOutside.received();
    expect(await as(PROXY_UID, 'udp', OUTSIDE_V4, dnsOutside.port)).toBe('reply:ping');
    expect(dnsOutside.received()).toBe(before + 1);
  });

  test('root is confined like the agent: only the proxy UID is exempt', async () => {
    const before = outside.accepted;
    expect(await as(0, 'tcp', OUTSIDE_V4, outside.port)).toMatch(/^error:/);
    expect(outside.accepted).toBe(before);
  });

  test.runIf(ipv6)('IPv6: the agent reaches [::1] on the proxy port only; the proxy UID reaches outside', async () => {
    expect(await as(AGENT_UID, 'tcp', '::1', proxyPort.port)).toBe('reply:pong');
    expect(await as(AGENT_UID, 'tcp', OUTSIDE_V6, (outside6 as Counting).port)).toMatch(/^error:/);
    expect(await as(PROXY_UID, 'tcp', OUTSIDE_V6, (outside6 as Counting).port)).toBe('reply:pong');
  });

  test('replies to a connection the agent accepted still leave (inbound works)', async () => {
    // The agent serves on the outside address; the proxy UID (allowed to open it) connects.
    const child = execFile('setpriv', [`--reuid=${AGENT_UID}`, `--regid=${AGENT_UID}`, '--clear-groups', '--', process.execPath, '-e',
      `require('node:net').createServer((s) => s.end('agent-pong')).listen(0, '${OUTSIDE_V4}', function () { console.log(this.address().port); });`], { cwd: '/' });
    try {
      const port = await new Promise<number>((resolve) => child.stdout?.once('data', (d: Buffer) => resolve(Number(String(d).trim()))));
      expect(await as(PROXY_UID, 'tcp', OUTSIDE_V4, port)).toBe('reply:agent-pong');
    } finally {
      child.kill();
    }
  });

  test('the script is idempotent and refuses an agent running as the proxy UID', () => {
    applyRules({ PROXY_UID: String(PROXY_UID), PROXY_PORT: String(proxyPort.port) });
    const hooks = execFileSync('iptables', ['-w', '-S', 'OUTPUT'], { encoding: 'utf8' }).split('\n').filter((l) => l.includes(`-j ${CHAIN}`));
    expect(hooks).toHaveLength(1);
    const refused = spawnSync('/bin/sh', [SCRIPT], { env: { PATH: process.env['PATH'] ?? '', CHAIN, PROXY_UID: '10001', AGENT_UID: '10001' }, encoding: 'utf8' });
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/AGENT_UID equals PROXY_UID/);
  });
}

if (missing === null) {
  describeNetns(NAME, suite);
} else if (process.env['CI'] === 'true') {
  describeNetns(NAME, () => {
    test('iptables and setpriv are available', () => {
      throw new Error(`iptables tests cannot run with CI=true: ${missing}`);
    });
  });
} else {
  process.stderr.write(`[netns] skipping "${NAME}": ${missing}\n`);
  describe.skip(`${NAME} (skipped: ${missing})`, suite);
}
