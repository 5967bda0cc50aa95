// Builds and drives bench/lib/tlsload.c, the C end points of the tunnel workloads (TLS origin,
// CONNECT+handshake load, bulk source and sink). Node's TLS costs about 1 ms of CPU per client
// handshake here, more than the proxies spend on a tunnel, so C end points keep the figure about
// the proxy. Without a C compiler and OpenSSL headers the bench uses Node end points instead.
import { execFile, execFileSync, spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { findBinary } from './targets.mjs';

const SOURCE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'tlsload.c');

/** Compiles tlsload into `dir`; returns its path, or { skipped } with the reason. */
export function buildTlsload(dir) {
  const cc = findBinary('cc', 'gcc', 'clang');
  if (cc === null) return { skipped: 'no C compiler (apt-get install gcc libssl-dev)' };
  const out = path.join(dir, 'tlsload');
  try {
    execFileSync(cc, ['-O2', '-o', out, SOURCE, '-lssl', '-lcrypto'], { stdio: ['ignore', 'ignore', 'pipe'] });
    return { bin: out };
  } catch (err) {
    return { skipped: `tlsload did not build (apt-get install libssl-dev?): ${String(err.stderr ?? err.message).split('\n')[0]}` };
  }
}

/** Starts a tlsload server mode; resolves with { port, pid, stop }. */
export async function startTlsloadServer(bin, args) {
  const child = spawn(bin, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('\n')) resolve(Number(out.trim()));
    });
    child.once('exit', (code) => reject(new Error(`tlsload ${args[0]} exited with ${code}`)));
  });
  return {
    port,
    pid: child.pid,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.stdin.end();
      setTimeout(() => child.kill('SIGKILL'), 5000).unref();
    }),
  };
}

function run(bin, args, timeoutMs) {
  return new Promise((resolve, reject) => {
    execFile(bin, args, { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop();
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`tlsload ${args[0]} failed: ${err?.message ?? ''} ${stderr.trim()}`.trim()));
      }
    });
  });
}

const authority = (target, port) => (target.port === null ? '-' : `${target.host}:${port}`);

/** CONNECT + verified TLS handshake with SNI, then close, in `concurrency` loops for `durationMs`. */
export async function tlsloadTunnelRate(bin, { target, port, servername, caFile, concurrency, durationMs }) {
  const r = await run(bin, ['client', String(target.port ?? port), authority(target, port), target.auth ?? '-', servername, caFile, String(concurrency), String(durationMs)], durationMs + 30_000);
  return { perSecond: r.count / r.seconds, p50Ms: r.p50Us / 1000, p99Ms: r.p99Us / 1000, count: r.count, errors: r.errors, firstError: r.firstError || null };
}

/** One tunnel to the bulk source: CONNECT, the ClientHello in `helloFile`, then `bytes` down. */
export async function tlsloadBulk(bin, { target, port, helloFile, bytes }) {
  const r = await run(bin, ['bulk-client', String(target.port ?? port), authority(target, port), target.auth ?? '-', helloFile, String(bytes)], 120_000);
  if (r.error) return { mbPerSecond: NaN, errors: 1, firstError: r.error };
  if (r.bytes !== bytes) return { mbPerSecond: NaN, errors: 1, firstError: `received ${r.bytes} of ${bytes} bytes` };
  return { mbPerSecond: r.bytes / r.seconds / 1e6, errors: 0 };
}
