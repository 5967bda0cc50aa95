/**
 * Header hygiene between client, proxy and origin: hop-by-hop and proxy-only headers never
 * cross the proxy, and origins cannot forge Portcullis headers.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

/** RFC 9110 §7.6.1 hop-by-hop headers, plus the legacy ones clients still send. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'expect',
  'host',
  'http2-settings',
]);

/** Headers a `Connection:` list may never remove: the proxy and the origin rely on them. */
const PROTECTED = new Set(['host', 'content-length', 'transfer-encoding']);

function connectionTokens(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const joined = Array.isArray(value) ? value.join(',') : value;
  return joined
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '' && !PROTECTED.has(t));
}

/**
 * Request headers for upstream from Node's raw header list: drops hop-by-hop, proxy-only and
 * X-Portcullis-* headers and whatever `Connection:` names, and sets the canonical Host.
 * `keepUpgrade` keeps Upgrade/Connection for a WebSocket handshake.
 */
export function upstreamRequestHeaders(rawHeaders: readonly string[], hostHeader: string, keepUpgrade = false): string[] {
  const named = new Set<string>();
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i]!.toLowerCase() === 'connection') for (const t of connectionTokens(rawHeaders[i + 1])) named.add(t);
  }
  const out: string[] = ['host', hostHeader];
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    const lower = name.toLowerCase();
    if (keepUpgrade && (lower === 'upgrade' || lower === 'connection')) {
      if (lower === 'connection') out.push(name, 'Upgrade');
      else out.push(name, rawHeaders[i + 1]!);
      continue;
    }
    if (HOP_BY_HOP.has(lower) || named.has(lower) || lower.startsWith('x-portcullis-')) continue;
    out.push(name, rawHeaders[i + 1]!);
  }
  return out;
}

/** Response headers for the client: no hop-by-hop headers and no forged X-Portcullis-*. */
export function clientResponseHeaders(headers: IncomingHttpHeaders | Record<string, string | string[] | undefined>): OutgoingHttpHeaders {
  const connection = headers['connection'];
  const named = connection === undefined ? null : new Set(connectionTokens(connection));
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named?.has(lower) === true || lower.startsWith('x-portcullis-')) continue;
    out[lower] = value;
  }
  return out;
}

/** Lower-case request header names (for lockdown's header list), from Node's raw list. */
export function headerNames(rawHeaders: readonly string[]): string[] {
  const names: string[] = [];
  for (let i = 0; i < rawHeaders.length; i += 2) names.push(rawHeaders[i]!.toLowerCase());
  return names;
}

/** Bytes of request line plus header block, as received (for lockdown's maxRequestBytes). */
export function requestHeadBytes(method: string, url: string, rawHeaders: readonly string[]): number {
  let n = method.length + url.length + 12;
  for (let i = 0; i < rawHeaders.length; i += 2) n += rawHeaders[i]!.length + rawHeaders[i + 1]!.length + 4;
  return n + 2;
}
