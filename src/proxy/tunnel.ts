/**
 * Opaque tunnels (CONNECT) and raw upgrade relays: dial the checked address, answer 200, peek
 * the ClientHello so that its SNI must equal the CONNECT host, then relay with idle and total
 * time limits. Every tunnel is registered so revocation, lockdown and reloads can close it.
 */
import net, { type Socket } from 'node:net';
import type { Logger } from 'pino';
import { canonicalizeHost, type CanonicalAuthority } from '../net/canonical.js';
import { MAX_CLIENT_HELLO_BYTES, parseClientHello, type ClientHelloResult } from '../net/client-hello.js';
import type { Metrics } from '../observability/metrics.js';
import type { DecisionInput } from '../policy/decide.js';
import type { Reason } from '../reasons.js';
import type { EgressRecord } from './egress-record.js';
import type { ConnectionRegistry } from './registry.js';
import { upstreamErrorReason } from './upstreams.js';

/** What openTunnel needs. */
export interface TunnelOptions {
  readonly client: Socket;
  /** Bytes the client sent after the CONNECT head (or the rebuilt upgrade request). */
  readonly head: Buffer;
  readonly target: CanonicalAuthority;
  readonly addresses: readonly string[];
  readonly record: EgressRecord;
  readonly input: DecisionInput;
  readonly lockdown: boolean;
  readonly deps: { readonly logger: Logger; readonly metrics: Metrics; readonly registry: ConnectionRegistry };
  readonly idleTimeoutMs: number;
  readonly helloTimeoutMs: number;
  readonly maxDurationMs: number | null;
  /** Answers the client with a rejection (before any 200 was sent) and logs. */
  readonly onReject: (reason: Reason, detail?: string) => void;
  /** A WebSocket relay: `head` goes upstream as is, no 200 and no ClientHello peek. */
  readonly upgrade?: boolean;
  /** Dial timeout, ms (default 10 s). */
  readonly connectTimeoutMs?: number;
}

const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/** Dials the first checked address that answers. */
function dial(addresses: readonly string[], port: number, timeoutMs: number): Promise<{ socket: Socket; ip: string }> {
  return new Promise((resolve, reject) => {
    let i = 0;
    let lastError: unknown = null;
    const next = (): void => {
      const ip = addresses[i++];
      if (ip === undefined) return reject(lastError ?? new Error('no address to dial'));
      const socket = net.connect({ host: ip, port, noDelay: true, keepAlive: true });
      const timer = setTimeout(() => socket.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), timeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve({ socket, ip });
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        lastError = err;
        next();
      });
    };
    next();
  });
}

/** Opens and runs one tunnel; resolves once it is established or refused. */
export async function openTunnel(o: TunnelOptions): Promise<void> {
  const { client, record, deps } = o;
  const { logger, metrics, registry } = deps;
  let upstream: Socket;
  try {
    const dialed = await dial(o.addresses, o.target.port, o.connectTimeoutMs ?? 10_000);
    upstream = dialed.socket;
    record.resolvedIp = dialed.ip;
  } catch (err) {
    record.error = err instanceof Error ? err.message : String(err);
    return o.onReject(upstreamErrorReason(err));
  }
  if (client.destroyed) {
    upstream.destroy();
    record.error = 'client closed before the tunnel was established';
    record.finish(logger, metrics);
    return;
  }

  let closed = false;
  let closeReason: Reason | undefined;
  const close = (reason?: string): void => {
    if (closed) return;
    closed = true;
    if (reason) {
      record.error = reason;
      if (reason === 'session_revoked' || reason === 'session_expired' || reason === 'sni_mismatch' || reason === 'sni_missing') closeReason = reason;
    }
    client.destroy();
    upstream.destroy();
  };
  const unregister = registry.addTunnel({ account: record.account!, sessionId: record.sessionId!, input: o.input, close });
  metrics.activeTunnels.inc();
  let maxTimer: NodeJS.Timeout | undefined;
  if (o.maxDurationMs !== null) maxTimer = setTimeout(() => close('tunnel_max_duration'), o.maxDurationMs).unref();
  let cleaned = false;
  const cleanup = (): void => {
    if (cleaned) return;
    cleaned = true;
    close();
    if (maxTimer) clearTimeout(maxTimer);
    unregister();
    metrics.activeTunnels.dec();
    // A tunnel closed before it proved its SNI still gets its decision line.
    if (!record.finished) record.finish(logger, metrics);
    record.logClose(logger, metrics, closeReason);
  };
  client.once('close', cleanup);
  upstream.once('close', cleanup);
  client.on('error', () => close());
  upstream.on('error', (err) => {
    record.error = err.message;
    close();
  });
  const idle = (): void => close('idle_timeout');
  client.setTimeout(o.idleTimeoutMs, idle);
  upstream.setTimeout(o.idleTimeoutMs, idle);
  // One listener per direction both relays and counts: cheaper per tunnel than pipe() plus a
  // counting listener (2,000 idle tunnels are a realistic sidecar load).
  const countOut = (n: number): void => {
    record.bytesOut += n;
  };
  const countIn = (n: number): void => {
    record.bytesIn += n;
  };
  const relay = (initial: Buffer): void => {
    if (initial.length > 0) {
      countOut(initial.length);
      upstream.write(initial);
    }
    // Upstream is read only from here on: a server that speaks first (SSH, SMTP) keeps its
    // greeting in the socket until there is somewhere to send it.
    pump(client, upstream, countOut);
    pump(upstream, client, countIn);
  };

  if (o.upgrade) {
    // Only a 101 turns the connection into a relay. Anything else is an ordinary response:
    // it goes to the client and the connection ends, so bytes the client sends after its
    // upgrade request can never reach the origin as an unjudged request.
    upstream.write(o.head);
    upstream.once('data', (first: Buffer) => {
      record.bytesIn += first.length;
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(first.toString('latin1', 0, 16))?.[1] ?? 0);
      record.status = status;
      client.write(first);
      if (status !== 101) {
        record.error = `upgrade refused by the origin (status ${status || 'unparsable'})`;
        record.finish(logger, metrics);
        client.end();
        upstream.destroy();
        return;
      }
      record.finish(logger, metrics);
      pump(client, upstream, countOut);
      pump(upstream, client, countIn);
    });
    return;
  }

  client.write(ESTABLISHED);
  record.status = 200;
  peekClientHello(client, o.head, o.helloTimeoutMs, (peeked) => {
    if (peeked === null) return close('client sent no TLS ClientHello in time');
    const verdict = judgeSni(peeked.hello, o.target.host, o.lockdown);
    if (!verdict.ok) {
      record.setReason(verdict.reason);
      record.finish(logger, metrics);
      close(verdict.reason);
      return;
    }
    if (verdict.note) record.error = verdict.note;
    record.finish(logger, metrics);
    client.pause();
    relay(peeked.buffered);
    client.resume();
  });
}

/** Relays one direction with backpressure, counting bytes; `end` is passed on (half-close). */
function pump(from: Socket, to: Socket, count: (bytes: number) => void): void {
  from.on('data', (chunk: Buffer) => {
    count(chunk.length);
    // write() answers false for every chunk over the 16 KiB mark, even one the kernel took
    // whole at once; pausing then would cost a read stop and restart per 64 KiB read. Pause
    // only while bytes are really queued ('drain' follows every false answer).
    if (!to.write(chunk) && to.writableLength > 0) from.pause();
  });
  to.on('drain', () => from.resume());
  from.once('end', () => to.end());
  from.resume();
}

/** The verdict on a tunnel's first bytes. */
export type SniVerdict = { readonly ok: true; readonly note?: string } | { readonly ok: false; readonly reason: 'sni_mismatch' | 'sni_missing' };

/**
 * SNI must name the CONNECT host: a tunnel granted for one name whose TLS session asks for
 * another is domain fronting. A missing SNI (IP-literal TLS, plain HTTP through CONNECT) is
 * allowed outside lockdown and noted for the log.
 */
export function judgeSni(hello: ClientHelloResult, host: string, lockdown: boolean): SniVerdict {
  const sni = hello.status === 'ok' ? hello.sni : null;
  if (sni !== null) {
    let canonical: string | null = null;
    try {
      canonical = canonicalizeHost(sni).host;
    } catch {
      canonical = null;
    }
    return canonical === host ? { ok: true } : { ok: false, reason: 'sni_mismatch' };
  }
  // A hello that cannot be parsed could name anything: refuse it in every mode.
  if (lockdown || hello.status === 'invalid') return { ok: false, reason: 'sni_missing' };
  return { ok: true, note: hello.status === 'ok' ? 'sni_missing' : `sni_missing (${hello.status === 'not_tls' ? 'not TLS' : 'unparsable ClientHello'})` };
}

/**
 * Reads the client's first bytes until a whole ClientHello (or clearly something else) is
 * there: it may arrive in pieces, or inside the CONNECT's own packet (`head`). Calls back once,
 * with null when the client closed or stayed silent past the timeout. The bytes read are
 * handed back so they can be replayed.
 */
export function peekClientHello(
  client: Socket,
  head: Buffer,
  timeoutMs: number,
  done: (peeked: { buffered: Buffer; hello: ClientHelloResult } | null) => void,
): void {
  let buffered = head;
  let finished = false;
  const finish = (result: { buffered: Buffer; hello: ClientHelloResult } | null): void => {
    if (finished) return;
    finished = true;
    clearTimeout(timer);
    client.removeListener('data', onData);
    // The listener allows half-open sockets: a client that ends before its first bytes were
    // judged would otherwise hold the tunnel (and its upstream) until the timeout.
    client.removeListener('end', onEnd);
    done(result);
  };
  const judge = (): void => {
    const hello = parseClientHello(buffered);
    if (hello.status === 'incomplete' && buffered.length < MAX_CLIENT_HELLO_BYTES) return;
    finish({ buffered, hello });
  };
  const onData = (chunk: Buffer): void => {
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
    judge();
  };
  const onEnd = (): void => finish(null);
  const timer = setTimeout(() => finish(null), timeoutMs);
  timer.unref();
  if (buffered.length > 0) judge();
  if (!finished) {
    client.on('data', onData);
    client.once('end', onEnd);
  }
}
