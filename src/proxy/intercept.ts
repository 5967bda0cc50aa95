/**
 * TLS interception for `inspect: true` destinations: after the CONNECT decision the proxy
 * answers 200, checks the ClientHello's SNI like any tunnel, terminates TLS with a leaf minted
 * for the CONNECT's canonical host, and hands the decrypted connection to an inner HTTP server
 * whose every request is decided on its own (kind `intercepted`). Nothing is dialed here: each
 * inner request resolves and connects upstream with full certificate verification.
 */
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from 'pino';
import type { CanonicalAuthority } from '../net/canonical.js';
import type { Metrics } from '../observability/metrics.js';
import type { DecisionInput } from '../policy/decide.js';
import type { LeafMinter } from '../tls/ca.js';
import type { EgressRecord } from './egress-record.js';
import type { ConnectionRegistry } from './registry.js';
import { judgeSni, peekClientHello } from './tunnel.js';

/** The identity and destination an intercepted connection was granted by its CONNECT. */
export interface InterceptedConnection {
  readonly target: CanonicalAuthority;
  readonly account: string;
  readonly sessionId: string;
}

/** Where the inner server finds the connection's grant. */
export const INTERCEPTED = Symbol('portcullis.intercepted');

/** A socket carrying an intercepted connection's grant. */
export type InterceptedSocket = tls.TLSSocket & { [INTERCEPTED]?: InterceptedConnection };

/**
 * A duplex over the client socket that first replays the bytes already read while peeking at
 * the ClientHello; TLSSocket over a raw net.Socket would read its handle and miss them.
 */
function replayingDuplex(socket: Socket, initial: Buffer, onWrite: (bytes: number) => void): Duplex {
  const duplex = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _enc, cb) {
      onWrite(chunk.length);
      socket.write(chunk, cb);
    },
    final(cb) {
      socket.end();
      cb();
    },
    destroy(err, cb) {
      socket.destroy();
      cb(err);
    },
  });
  if (initial.length > 0) duplex.push(initial);
  socket.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) socket.pause();
  });
  socket.once('end', () => duplex.push(null));
  socket.once('close', () => duplex.destroy());
  return duplex;
}

/** What startInterception needs. */
export interface InterceptOptions {
  readonly client: Socket;
  readonly head: Buffer;
  readonly target: CanonicalAuthority;
  readonly record: EgressRecord;
  readonly input: DecisionInput;
  readonly minter: LeafMinter;
  readonly inner: Server;
  readonly deps: { readonly logger: Logger; readonly metrics: Metrics; readonly registry: ConnectionRegistry };
  readonly idleTimeoutMs: number;
  readonly helloTimeoutMs: number;
  readonly maxDurationMs: number | null;
}

const ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';

/** Runs one intercepted tunnel: registered, closable by revocation/lockdown/reload like any other. */
export function startInterception(o: InterceptOptions): void {
  const { client, record, deps } = o;
  const { logger, metrics, registry } = deps;
  let closed = false;
  let tlsSocket: tls.TLSSocket | null = null;
  const close = (reason?: string): void => {
    if (closed) return;
    closed = true;
    if (reason) record.error = reason;
    tlsSocket?.destroy();
    client.destroy();
  };
  const unregister = registry.addTunnel({ account: record.account!, sessionId: record.sessionId!, input: o.input, close });
  metrics.activeTunnels.inc();
  const maxTimer = o.maxDurationMs !== null ? setTimeout(() => close('tunnel_max_duration'), o.maxDurationMs).unref() : undefined;
  client.once('close', () => {
    if (maxTimer) clearTimeout(maxTimer);
    unregister();
    metrics.activeTunnels.dec();
    if (!record.finished) record.finish(logger, metrics);
    record.logClose(logger, metrics);
  });
  client.on('error', () => close());
  client.setTimeout(o.idleTimeoutMs, () => close('idle_timeout'));
  client.write(ESTABLISHED);
  record.status = 200;
  const grant: InterceptedConnection = { target: o.target, account: record.account!, sessionId: record.sessionId! };
  const serve = (socket: InterceptedSocket): void => {
    tlsSocket = socket;
    socket[INTERCEPTED] = grant;
    socket.on('error', () => close());
    socket.once('close', () => close());
    o.inner.emit('connection', socket);
  };

  if (o.head.length === 0) {
    // Fast path: TLS runs on the socket's own handle, and the SNI is judged in the handshake
    // itself (SNICallback) instead of by peeking, which would need a JS stream in between.
    client.once('close', () => {
      record.bytesOut = tlsSocket?.bytesRead ?? 0;
      record.bytesIn = tlsSocket?.bytesWritten ?? 0;
    });
    const helloTimer = setTimeout(() => close('client sent no TLS ClientHello in time'), o.helloTimeoutMs);
    helloTimer.unref();
    o.minter.contextFor(o.target.host).then(
      (secureContext) => {
        if (closed) return;
        let mismatch = false;
        const socket = new tls.TLSSocket(client, {
          isServer: true,
          secureContext,
          ALPNProtocols: ['http/1.1'],
          SNICallback: (name, cb) => {
            if (judgeSni({ status: 'ok', sni: name }, o.target.host, false).ok) return cb(null, secureContext);
            mismatch = true;
            cb(new Error('sni_mismatch'));
          },
        }) as InterceptedSocket;
        socket.once('secure', () => {
          clearTimeout(helloTimer);
          record.finish(logger, metrics);
        });
        socket.once('error', () => {
          clearTimeout(helloTimer);
          if (mismatch) {
            record.setReason('sni_mismatch');
            record.finish(logger, metrics);
            close('sni_mismatch');
          }
        });
        serve(socket);
      },
      (err: unknown) => close(`cannot mint a certificate: ${err instanceof Error ? err.message : String(err)}`),
    );
    return;
  }

  // Bytes arrived with the CONNECT itself: peek at them, then replay them into TLS.
  client.on('data', (chunk: Buffer) => {
    record.bytesOut += chunk.length;
  });
  record.bytesOut += o.head.length;
  peekClientHello(client, o.head, o.helloTimeoutMs, (peeked) => {
    if (peeked === null) return close('client sent no TLS ClientHello in time');
    if (peeked.hello.status !== 'ok') {
      record.setReason('bad_request');
      record.finish(logger, metrics);
      return close('an intercepted destination needs TLS');
    }
    // A missing SNI is fine here: the leaf is minted for the CONNECT host anyway.
    const verdict = judgeSni(peeked.hello, o.target.host, false);
    if (!verdict.ok) {
      record.setReason(verdict.reason);
      record.finish(logger, metrics);
      return close(verdict.reason);
    }
    record.finish(logger, metrics);
    client.pause();
    o.minter.contextFor(o.target.host).then(
      (secureContext) => {
        if (closed) return;
        serve(
          new tls.TLSSocket(replayingDuplex(client, peeked.buffered, (n) => (record.bytesIn += n)), {
            isServer: true,
            secureContext,
            ALPNProtocols: ['http/1.1'],
          }) as InterceptedSocket,
        );
        client.resume();
      },
      (err: unknown) => close(`cannot mint a certificate: ${err instanceof Error ? err.message : String(err)}`),
    );
  });
}
