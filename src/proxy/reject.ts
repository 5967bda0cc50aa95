/**
 * reject(): the only place where a denial or error becomes a response, for plain requests
 * (ServerResponse) and for raw sockets (CONNECT, upgrades), so status, headers, body and the
 * log line can never disagree.
 */
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { REASONS, type Reason } from '../reasons.js';
import type { EgressRecord } from './egress-record.js';

/** The `error` field of the JSON body for a reason. */
function errorClass(reason: Reason, status: number): string {
  if (status === 400) return 'bad_request';
  if (status === 407) return 'proxy_authentication_required';
  if (status === 429) return 'too_many_requests';
  if (status === 503) return 'unavailable';
  if (REASONS[reason].kind === 'error') return 'upstream_error';
  return 'egress_denied';
}

/** Status, headers and body for a reason; `detail` is an optional extra (never a secret). */
export function rejection(
  reason: Reason,
  requestId: string,
  options: { detail?: string; retryAfterS?: number } = {},
): { status: number; headers: Record<string, string>; body: string } {
  const info = REASONS[reason];
  const status = info.status;
  const body = JSON.stringify({
    error: errorClass(reason, status),
    reason,
    requestId,
    message: options.detail ? `${info.message}: ${options.detail}` : info.message,
  });
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(body)),
    'cache-control': 'no-store',
    'x-portcullis-reason': reason,
    'x-portcullis-request-id': requestId,
  };
  // git and some curl modes send credentials only after this challenge.
  if (status === 407) headers['proxy-authenticate'] = 'Basic realm="portcullis"';
  if (status === 429) headers['retry-after'] = String(Math.max(1, Math.ceil(options.retryAfterS ?? 1)));
  return { status, headers, body };
}

/** Whether the client connection should be closed after this rejection. */
function closesConnection(status: number): boolean {
  // A malformed request leaves the stream in an unknown state; a 407 must keep the connection so
  // the client can answer the challenge on it.
  return status === 400 || status === 413 || status === 431 || status === 414 || status === 503;
}

/** Answers a plain request with the reason's status; records it on the egress record. */
export function rejectResponse(
  res: ServerResponse,
  record: EgressRecord,
  reason: Reason,
  options: { detail?: string; retryAfterS?: number; close?: boolean } = {},
): void {
  record.setReason(reason);
  const r = rejection(reason, record.reqId, options);
  record.status = r.status;
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (options.close || closesConnection(r.status)) r.headers['connection'] = 'close';
  res.writeHead(r.status, r.headers);
  res.end(r.body);
}

/** Answers on a raw socket (CONNECT or upgrade) and closes it after the response is flushed. */
export function rejectSocket(
  socket: Duplex,
  record: EgressRecord,
  reason: Reason,
  options: { detail?: string; retryAfterS?: number } = {},
): void {
  record.setReason(reason);
  const r = rejection(reason, record.reqId, options);
  record.status = r.status;
  if (socket.destroyed || !socket.writable) {
    socket.destroy();
    return;
  }
  let head = `HTTP/1.1 ${r.status} ${STATUS_TEXT[r.status] ?? 'Error'}\r\n`;
  for (const [k, v] of Object.entries(r.headers)) head += `${k}: ${v}\r\n`;
  head += 'connection: close\r\n\r\n';
  socket.end(head + r.body);
  // A client that never reads must not keep the socket alive.
  setTimeout(() => socket.destroy(), 2000).unref();
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  407: 'Proxy Authentication Required',
  413: 'Payload Too Large',
  414: 'URI Too Long',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};
