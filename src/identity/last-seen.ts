/**
 * Last-seen batching: the request path records who was seen in memory, and one store write per
 * interval persists it, so no request ever waits on (or causes) a disk or network write.
 */
import type { SessionRecord, SessionTouch, StateStore } from '../state/types.js';

/** Collects session touches and flushes them periodically. */
export class LastSeen {
  #pending = new Map<string, SessionTouch>();
  readonly #store: StateStore;
  readonly #timer: NodeJS.Timeout;
  readonly #onError: (err: unknown) => void;

  constructor(store: StateStore, intervalMs: number, onError: (err: unknown) => void) {
    this.#store = store;
    this.#onError = onError;
    this.#timer = setInterval(() => void this.flush(), intervalMs);
    this.#timer.unref();
  }

  /** Records that a session was seen now, from this client. */
  touch(sessionId: string, clientIp: string | null, userAgent: string | null): void {
    // One touch per session per second is plenty for "last seen"; skip the allocation otherwise.
    const now = Date.now();
    const prev = this.#pending.get(sessionId);
    if (prev !== undefined && now - this.#at.get(sessionId)! < 1000 && prev.clientIp === clientIp && prev.userAgent === userAgent) return;
    this.#at.set(sessionId, now);
    this.#pending.set(sessionId, { lastSeenAt: new Date(now).toISOString(), clientIp, userAgent });
  }

  readonly #at = new Map<string, number>();

  /** The record with any not-yet-written touch applied (what the store will say after the flush). */
  overlay(session: SessionRecord): SessionRecord {
    const t = this.#pending.get(session.id);
    return t === undefined ? session : { ...session, lastSeenAt: t.lastSeenAt, clientIp: t.clientIp, userAgent: t.userAgent };
  }

  /** Writes the pending touches, if any. */
  async flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const batch = this.#pending;
    this.#pending = new Map();
    this.#at.clear();
    try {
      await this.#store.touchSessions(batch);
    } catch (err) {
      this.#onError(err);
    }
  }

  /** Stops the timer and flushes. Idempotent. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}
