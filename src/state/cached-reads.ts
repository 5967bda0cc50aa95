/**
 * The synchronous half of every StateStore: reads from the in-memory cache the backend keeps
 * current. Backends extend this and add durable writes and change delivery.
 */
import { MemoryCache } from './memory-cache.js';
import type { AccountState, GlobalState, SessionRecord } from './types.js';

/** Cache-backed reads shared by every backend. */
export abstract class CachedReads {
  /** The cache this replica decides on; only the backend's own write path changes it. */
  protected readonly cache = new MemoryCache();

  getSession(id: string): SessionRecord | undefined {
    return this.cache.getSession(id);
  }

  listSessions(account: string): SessionRecord[] {
    return this.cache.listSessions(account);
  }

  getAccount(account: string): AccountState {
    return this.cache.getAccount(account);
  }

  listAccounts(): AccountState[] {
    return this.cache.listAccounts();
  }

  getGlobal(): GlobalState {
    return this.cache.getGlobal();
  }

  countLiveSessions(now: Date): number {
    return this.cache.countLive(now);
  }
}
