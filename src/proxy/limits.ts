/**
 * Per-account request rate (token bucket, per replica). Tunnel concurrency is counted by the
 * connection registry.
 */

/** Token buckets keyed by account: `perMinute` tokens refilled continuously. */
export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  readonly #now: () => number;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /**
   * Takes one token for the account. Returns 0 when allowed, otherwise the seconds until a
   * token is available (for Retry-After).
   */
  take(account: string, perMinute: number): number {
    const now = this.#now();
    const ratePerMs = perMinute / 60_000;
    let b = this.#buckets.get(account);
    if (b === undefined) {
      // Bounded memory: forget full buckets when the map grows large; a full bucket is the default.
      if (this.#buckets.size > 100_000) this.#sweep(now, ratePerMs, perMinute);
      b = { tokens: perMinute, at: now };
      this.#buckets.set(account, b);
    } else {
      b.tokens = Math.min(perMinute, b.tokens + (now - b.at) * ratePerMs);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return (1 - b.tokens) / ratePerMs / 1000;
  }

  #sweep(now: number, ratePerMs: number, perMinute: number): void {
    for (const [k, b] of this.#buckets) if (b.tokens + (now - b.at) * ratePerMs >= perMinute) this.#buckets.delete(k);
  }
}
