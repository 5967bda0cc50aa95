// The bench world shared by the proxy benchmark, the soak and the profile: a temp directory,
// the origins (their own process), the C or Node tunnel end points, the DNS server, and a way to
// start each target. Everything listens on 127.0.0.1 and `close()` stops all of it.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSelfSignedCert } from './cert.mjs';
import { startDnsServer } from './dns-server.mjs';
import { directTarget, startNodeFloor, startPortcullis, startSquid, startTinyproxy } from './targets.mjs';
import { buildTlsload, startTlsloadServer, tlsloadBulk, tlsloadTunnelRate } from './tlsload.mjs';
import { bulkThroughTunnel, captureClientHello, openIdleTunnels, tunnelSetupRate } from './tunnels.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** The origin's test name: Portcullis resolves it through the bench DNS server. */
export const ORIGIN_HOST = 'origin.bench.test';

/** Starts the origins process; resolves with its ports and a stop function. */
async function startOrigins(certFile, keyFile, bulkBytes) {
  const child = spawn(process.execPath, [path.join(HERE, 'origins.mjs'), certFile, keyFile, String(bulkBytes)], { stdio: ['pipe', 'pipe', 'inherit'] });
  const ports = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)));
    });
    child.once('exit', (code) => reject(new Error(`origins exited with ${code}`)));
  });
  return {
    ...ports,
    pid: child.pid,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.stdin.end();
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}

/**
 * Sets up the world. Options: bulkBytes, nodeEndpoints (skip the C end points), portcullisCli,
 * portcullisNodeArgs, keep (leave the temp directory).
 */
export async function startBenchEnv(o) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'portcullis-bench-'));
  const closers = [];
  const env = { dir, closers, meta: {} };
  // A run that dies half-way still leaves no temp directory behind (its processes are killed by
  // procs.mjs, and the origins and tlsload servers exit when their stdin closes).
  const removeDir = () => {
    if (!o.keep) rmSync(dir, { recursive: true, force: true });
  };
  process.once('exit', removeDir);
  env.close = async () => {
    for (const c of closers.reverse()) await Promise.resolve(c()).catch(() => undefined);
    closers.length = 0;
    removeDir();
    process.removeListener('exit', removeDir);
  };
  try {
    const { certFile, keyFile, cert } = writeSelfSignedCert(dir, [ORIGIN_HOST, '127.0.0.1']);
    env.cert = cert;
    const origins = await startOrigins(certFile, keyFile, o.bulkBytes);
    closers.push(() => origins.stop());
    env.origins = origins;
    env.httpPort = origins.http;
    env.tlsPort = origins.tls;
    env.bulkPort = origins.bulk;
    const dns = await startDnsServer({ [ORIGIN_HOST]: ['127.0.0.1'] });
    closers.push(() => dns.close());
    env.dns = dns;
    const hello = await captureClientHello(ORIGIN_HOST);
    const helloFile = path.join(dir, 'client-hello.bin');
    writeFileSync(helloFile, hello);
    // C end points for the tunnel workloads when they build; Node ones otherwise.
    const tl = o.nodeEndpoints ? { skipped: 'Node end points asked for' } : buildTlsload(dir);
    if (tl.bin) {
      const tlsServer = await startTlsloadServer(tl.bin, ['server', certFile, keyFile]);
      closers.push(() => tlsServer.stop());
      const bulkServer = await startTlsloadServer(tl.bin, ['bulk-server', String(o.bulkBytes)]);
      closers.push(() => bulkServer.stop());
      env.tlsPort = tlsServer.port;
      env.bulkPort = bulkServer.port;
      env.tunnelRate = (t, ms, concurrency) =>
        tlsloadTunnelRate(tl.bin, { target: t, port: env.tlsPort, servername: ORIGIN_HOST, caFile: certFile, concurrency, durationMs: ms });
      env.bulk = (t) => tlsloadBulk(tl.bin, { target: t, port: env.bulkPort, helloFile, bytes: o.bulkBytes });
      env.meta.tunnelEndpoints = 'C (bench/lib/tlsload.c, OpenSSL)';
    } else {
      env.tunnelRate = (t, ms, concurrency) => tunnelSetupRate({ target: t, port: env.tlsPort, servername: ORIGIN_HOST, ca: cert, concurrency, durationMs: ms });
      env.bulk = (t) => bulkThroughTunnel({ target: t, port: env.bulkPort, hello, bytes: o.bulkBytes });
      env.meta.tunnelEndpoints = `Node (${tl.skipped})`;
    }
    /** Opens `count` idle tunnels (TLS handshake done) through `t`. */
    env.idleTunnels = (t, count) => openIdleTunnels({ target: t, port: env.tlsPort, servername: ORIGIN_HOST, ca: cert, count });
    const originPorts = [...new Set([origins.http, origins.tls, origins.bulk, env.tlsPort, env.bulkPort])];
    /** Starts a target by name; `instance` names its directory (a second instance needs another). */
    env.startTarget = async (name, instance = name, extra = {}) => {
      let t;
      if (name === 'direct') t = directTarget();
      else if (name === 'squid') t = await startSquid(dir, ORIGIN_HOST, instance);
      else if (name === 'tinyproxy') t = await startTinyproxy(dir, instance);
      else if (name === 'node-floor') t = await startNodeFloor(dir, { instance, nodeArgs: extra.nodeArgs ?? [], workers: o.floorWorkers ?? 1 });
      else if (name === 'portcullis')
        t = await startPortcullis(dir, { originHost: ORIGIN_HOST, originPorts, dns: dns.server, cli: o.portcullisCli, nodeArgs: o.portcullisNodeArgs ?? [], instance, ...extra });
      else throw new Error(`unknown target ${name}`);
      if (!t.skipped) closers.push(() => t.stop());
      return t;
    };
    return env;
  } catch (err) {
    await env.close();
    throw err;
  }
}
