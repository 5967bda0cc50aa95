/**
 * Turns a `--store` URL into an opened StateStore: `file:PATH` (relative to the working
 * directory, or `file:///absolute/path`) selects the embedded file store; `redis://` and
 * `rediss://` (TLS) select the shared Redis store.
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FileStore } from './file-store.js';
import type { FileStoreOptions } from './file-store.js';
import type { RedisStoreOptions } from './redis-store.js';
import type { StateStore } from './types.js';

/** Options for openStore; backend options pass through to the backend. */
export interface OpenStoreOptions extends FileStoreOptions {
  /** Base for relative `file:` paths (default: process.cwd()). */
  readonly cwd?: string;
  /** Options of the Redis store (timings, key prefix); the URL comes from `url`. */
  readonly redis?: Omit<RedisStoreOptions, 'url'>;
}

/** The file path a `file:` store URL names. */
export function fileStorePath(url: string, cwd: string = process.cwd()): string {
  // `file://` is a real file URL (absolute, percent-encoded); bare `file:PATH` is a plain path so
  // that `file:./data/state.json` means what it looks like.
  if (!/^file:/i.test(url)) throw new Error('not a file: store URL');
  const rest = url.slice('file:'.length);
  const path = rest.startsWith('//') ? fileURLToPath(url) : rest;
  if (path === '') throw new Error('store URL "file:" names no file; use e.g. file:./data/state.json');
  return resolve(cwd, path);
}

/** Opens the store a URL names; the returned store's cache is loaded. */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<StateStore> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === 'file') {
    const store = new FileStore(fileStorePath(url, options.cwd), options);
    await store.open();
    return store;
  }
  // Never echo the URL itself: a redis:// URL may carry a password.
  if (scheme === 'redis' || scheme === 'rediss') {
    if (!URL.canParse(url)) throw new Error(`store URL is not a valid ${scheme}:// URL`);
    // Loaded only when asked for: the Redis client alone costs ~27 MiB of RSS in every sidecar.
    const { RedisStore } = await import('./redis-store.js');
    const store = new RedisStore({ now: options.now, ...options.redis, url });
    await store.open();
    return store;
  }
  const expected = 'expected file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT]';
  throw new Error(scheme === undefined ? `store URL has no scheme; ${expected}` : `unsupported store URL scheme "${scheme}:"; ${expected}`);
}
