/**
 * User-agent → client / OS / device for the session list. CLI agents and SDKs usually parse to
 * nothing, so the raw string is always kept beside the parsed fields.
 */
import { UAParser } from 'ua-parser-js';

/** What the session list shows about the client software. */
export interface DeviceInfo {
  /** e.g. "Chrome 120.0", "curl 8.5.0", or null when unknown. */
  readonly client: string | null;
  /** e.g. "Mac OS 14.2", or null. */
  readonly os: string | null;
  /** e.g. "mobile Apple iPhone", "desktop", or null. */
  readonly device: string | null;
}

/** Tools the browser-oriented parser does not know, matched as `name/version` at the start. */
const KNOWN_TOOLS = /^(curl|Wget|git|python-requests|python-httpx|aiohttp|node-fetch|undici|axios|Go-http-client|okhttp|npm|pip|Python-urllib|openai-python|anthropic-python|OpenAI|Anthropic)\/(\S+)/i;

const cache = new Map<string, DeviceInfo>();
const CACHE_MAX = 1000;

function join(...parts: (string | undefined)[]): string | null {
  const s = parts.filter((p) => p !== undefined && p !== '').join(' ');
  return s === '' ? null : s;
}

/** Parses a User-Agent header (memoized; the same few strings repeat for every request). */
export function parseUserAgent(ua: string | null | undefined): DeviceInfo {
  if (!ua) return { client: null, os: null, device: null };
  const hit = cache.get(ua);
  if (hit) return hit;
  const r = new UAParser(ua).getResult();
  const tool = KNOWN_TOOLS.exec(ua);
  const info: DeviceInfo = Object.freeze({
    client: join(r.browser.name, r.browser.version) ?? (tool ? `${tool[1]} ${tool[2]}` : null),
    os: join(r.os.name, r.os.version),
    device: join(r.device.type, r.device.vendor, r.device.model) ?? (r.os.name && !r.device.type ? 'desktop' : null),
  });
  if (cache.size >= CACHE_MAX) cache.clear();
  cache.set(ua, info);
  return info;
}
