/**
 * The shared StateStore contract against RedisStore, plus what only a shared store must do:
 * propagate between replicas in well under a second, keep the lockdown/developer-mode conflict
 * atomic across replicas, and survive Redis going away (fail closed, re-sync, never fail open).
 * Each file gets its own redis-server on a free loopback port; each test its own key prefix.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createClient } from 'redis';
import { openStore } from '../../src/state/open-store.js';
import { RedisStore, type RedisStoreOptions, type StoreStatus } from '../../src/state/redis-store.js';
import { ConflictError, StoreUnavailableError } from '../../src/state/types.js';
import type { StoreChange } from '../../src/state/types.js';
import { HAVE_REDIS, startRedisServer, startRelay, type Relay, type RedisServer } from '../helpers/redis-server.js';
import { sessionRecord, storeContract } from './store-contract.js';

if (!HAVE_REDIS && process.env.CI === 'true') throw new Error('redis-server is required in CI');

let server: RedisServer;
let prefixes = 0;
/** Fast timings for tests: 200 ms heartbeat, reconnect attempts at most 200 ms apart. */
const FAST: Omit<RedisStoreOptions, 'url'> = { heartbeatMs: 200, maxBackoffMs: 200, connectTimeoutMs: 5_000, syncWaitMs: 3_000 };
const nextPrefix = (): string => `t${++prefixes}-${process.pid}:`;

/** Removes a test's keys (a fresh client: the server may have been restarted in between). */
async function deletePrefix(prefix: string): Promise<void> {
  const admin = createClient({ url: server.url, RESP: 2 });
  admin.on('error', () => undefined);
  await admin.connect();
  try {
    const keys = (await admin.sendCommand(['KEYS', `${prefix}*`])) as string[];
    if (keys.length > 0) await admin.sendCommand(['DEL', ...keys]);
  } finally {
    admin.destroy();
  }
}

async function until(check: () => boolean, timeoutMs: number, what: string): Promise<number> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
  return performance.now() - start;
}

beforeAll(async () => {
  if (HAVE_REDIS) server = await startRedisServer();
});

afterAll(async () => {
  await server?.close();
});

describe.skipIf(!HAVE_REDIS)('redis', () => {
  storeContract('redis', async () => {
    const prefix = nextPrefix();
    const store = new RedisStore({ url: server.url, prefix, ...FAST });
    await store.open();
    return {
      store,
      reopen: async () => {
        const next = new RedisStore({ url: server.url, prefix, ...FAST });
        await next.open();
        return next;
      },
      cleanup: () => deletePrefix(prefix),
    };
  });

  describe('RedisStore replicas', () => {
    const stores: RedisStore[] = [];
    const relays: Relay[] = [];
    const open = async (options: Partial<RedisStoreOptions> & { prefix: string }): Promise<RedisStore> => {
      const s = new RedisStore({ url: server.url, ...FAST, ...options });
      stores.push(s);
      await s.open();
      return s;
    };

    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
      for (const r of relays.splice(0)) await r.close();
    });

    test('a_change_through_one_replica_reaches_another_well_under_a_second', async () => {
      const prefix = nextPrefix();
      const a = await open({ prefix });
      const b = await open({ prefix });
      const seen: StoreChange[] = [];
      b.on('change', (c) => seen.push(c));
      const s = sessionRecord();
      await a.createSession(s);
      const created = await until(() => b.getSession(s.id) !== undefined, 1_000, 'the session on B');
      const t0 = performance.now();
      const locked = await a.setLockdown('alice', true, 'sec');
      await until(() => b.getAccount('alice').lockdown, 1_000, 'lockdown on B');
      const lockdownMs = performance.now() - t0;
      const revoked = await a.revokeSession('alice', s.id, 'admin');
      await until(() => b.getSession(s.id)?.revokedAt != null, 1_000, 'the revocation on B');
      expect(lockdownMs).toBeLessThan(250);
      expect(created).toBeLessThan(250);
      expect(b.getAccount('alice')).toEqual(locked);
      expect(b.getSession(s.id)).toEqual(revoked);
      // Each change once, carrying the time it was made (what the propagation histogram measures).
      expect(seen.map((c) => c.type)).toEqual(['session', 'account', 'session']);
      expect(seen[1]).toEqual({ type: 'account', at: locked.lockdownChangedAt, state: locked });
      expect(seen[2]?.at).toBe(revoked?.revokedAt);
    });

    test('the_conflict_check_is_atomic_across_replicas', async () => {
      const prefix = nextPrefix();
      const a = await open({ prefix });
      const b = await open({ prefix });
      const accounts = Array.from({ length: 25 }, (_, i) => `acct-${i}`);
      const results = await Promise.all(
        accounts.map((acct, i) =>
          Promise.allSettled(i % 2 === 0
            ? [a.setLockdown(acct, true, 'a'), b.setDeveloperMode(acct, true, 'b')]
            : [b.setDeveloperMode(acct, true, 'b'), a.setLockdown(acct, true, 'a')]),
        ),
      );
      for (const pair of results) {
        expect(pair.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        const rejected = pair.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        expect(rejected?.reason).toBeInstanceOf(ConflictError);
      }
      await until(() => accounts.every((acct) => JSON.stringify(a.getAccount(acct)) === JSON.stringify(b.getAccount(acct))), 1_000, 'agreement');
      for (const acct of accounts) {
        const state = a.getAccount(acct);
        expect(Number(state.lockdown) + Number(state.developerMode)).toBe(1);
      }
    });

    test('revoke_all_on_one_replica_includes_a_session_just_created_on_another', async () => {
      const prefix = nextPrefix();
      const a = await open({ prefix });
      const b = await open({ prefix });
      for (let round = 0; round < 10; round++) {
        const s = sessionRecord({ account: `acct-${round}` });
        await a.createSession(s);
        // B decides from its cache, which may not have the session yet: the commit must notice.
        const revoked = await b.revokeAllSessions(s.account, 'sec');
        expect(revoked.map((r) => r.id)).toEqual([s.id]);
        await until(() => a.getSession(s.id)?.revokedAt != null, 1_000, 'the revocation on A');
      }
    });

    test('a_replica_cut_off_goes_stale_then_applies_what_it_missed', async () => {
      const prefix = nextPrefix();
      const relay = await startRelay(server.port);
      relays.push(relay);
      const a = await open({ prefix });
      const b = await open({ prefix, url: `redis://127.0.0.1:${relay.port}`, syncWaitMs: 300 });
      const statuses: StoreStatus[] = [];
      const changes: StoreChange[] = [];
      b.on('status', (s) => statuses.push(s));
      b.on('change', (c) => changes.push(c));
      const s = sessionRecord();
      await a.createSession(s);
      await until(() => b.getSession(s.id) !== undefined, 1_000, 'the session on B');
      expect(b.stalenessMs()).toBe(0);
      expect(b.isUp()).toBe(true);

      relay.cut();
      await until(() => b.stalenessMs() > 300, 2_000, 'staleness on B');
      expect(statuses).toEqual(['down']);
      expect(b.isUp()).toBe(false);
      // B keeps what it knew (the app's fail mode decides what staleness means), and refuses writes.
      expect(b.getSession(s.id)?.revokedAt).toBeNull();
      await expect(b.setGlobalLockdown(true, 'b')).rejects.toBeInstanceOf(StoreUnavailableError);

      const revoked = await a.revokeSession('alice', s.id, 'admin');
      const locked = await a.setLockdown('alice', true, 'sec');
      changes.length = 0;
      relay.resume();
      await until(() => b.isUp(), 3_000, 'B back up');
      expect(statuses).toEqual(['down', 'up']);
      expect(b.stalenessMs()).toBe(0);
      expect(b.getSession(s.id)).toEqual(revoked);
      expect(b.getAccount('alice')).toEqual(locked);
      // Missed changes are announced with their original times, so tunnels close after a gap too.
      expect(changes).toEqual(expect.arrayContaining([
        { type: 'session', at: revoked?.revokedAt, session: revoked },
        { type: 'account', at: locked.lockdownChangedAt, state: locked },
      ]));
      expect(b.getGlobal().lockdown).toBe(false);
      await b.setGlobalLockdown(true, 'b');
      await until(() => a.getGlobal().lockdown, 1_000, 'global lockdown on A');
    });

    test('a_trimmed_stream_makes_a_returning_replica_reload_everything', async () => {
      const prefix = nextPrefix();
      const relay = await startRelay(server.port);
      relays.push(relay);
      const a = await open({ prefix, streamMaxLen: 10 });
      const b = await open({ prefix, url: `redis://127.0.0.1:${relay.port}`, streamMaxLen: 10 });
      relay.cut();
      await until(() => !b.isUp(), 2_000, 'B down');
      const sessions = Array.from({ length: 300 }, () => sessionRecord({ account: 'many' }));
      await Promise.all(sessions.map((s) => a.createSession(s)));
      relay.resume();
      await until(() => b.isUp(), 3_000, 'B back up');
      expect(b.listSessions('many')).toHaveLength(300);
    });

    test('redis_restarting_empty_fails_closed_then_restores_from_the_replicas', async () => {
      const prefix = nextPrefix();
      const a = await open({ prefix, syncWaitMs: 300 });
      const b = await open({ prefix });
      const s = sessionRecord();
      await a.createSession(s);
      const locked = await a.setLockdown('bob', true, 'sec');
      await a.setGlobalLockdown(true, 'incident');
      await until(() => b.getGlobal().lockdown && b.getSession(s.id) !== undefined, 1_000, 'B in sync');
      const statuses: StoreStatus[] = [];
      b.on('status', (st) => statuses.push(st));

      await server.kill();
      await until(() => a.stalenessMs() > 300 && b.stalenessMs() > 300, 2_000, 'both stale');
      expect([a.isUp(), b.isUp()]).toEqual([false, false]);
      // Never fail open: nothing is forgotten while Redis is gone.
      expect(b.getAccount('bob')).toEqual(locked);
      expect(b.getGlobal().lockdown).toBe(true);
      await expect(a.setLockdown('bob', false, 'x')).rejects.toBeInstanceOf(StoreUnavailableError);

      await server.restart();
      await until(() => a.isUp() && b.isUp(), 5_000, 'both back up');
      expect(statuses).toEqual(['down', 'up']);
      // Redis came back empty; the replicas wrote back what they knew.
      const fresh = await open({ prefix });
      expect(fresh.getAccount('bob')).toEqual(locked);
      expect(fresh.getGlobal().lockdown).toBe(true);
      expect(fresh.getSession(s.id)).toEqual(s);
      // Writes work again, and their versions come after the restored ones.
      const unlocked = await b.setLockdown('bob', false, 'sec');
      await until(() => !a.getAccount('bob').lockdown && !fresh.getAccount('bob').lockdown, 1_000, 'unlock everywhere');
      expect(a.getAccount('bob')).toEqual(unlocked);
    });

    test('after_data_loss_a_newer_history_wins_and_the_returning_replica_fills_in_the_rest', async () => {
      const prefix = nextPrefix();
      const relay = await startRelay(server.port);
      relays.push(relay);
      const a = await open({ prefix, url: `redis://127.0.0.1:${relay.port}` });
      const s = sessionRecord();
      await a.createSession(s);
      await a.setLockdown('bob', true, 'sec');
      relay.cut();
      await server.restart();
      // A replica that starts meanwhile knows nothing of the old history and writes on.
      const c = await open({ prefix });
      const dev = await c.setDeveloperMode('bob', true, 'admin');
      relay.resume();
      await until(() => a.isUp(), 5_000, 'A back up');
      // The later decision about bob stands; what only A knew is written back.
      expect(a.getAccount('bob')).toEqual(dev);
      await until(() => c.getSession(s.id) !== undefined, 1_000, 'the session on C');
      expect(c.getSession(s.id)).toEqual(s);
      // And writes about bob work from either side.
      const off = await a.setDeveloperMode('bob', false, 'admin');
      await until(() => !c.getAccount('bob').developerMode, 1_000, 'developer mode off on C');
      expect(c.getAccount('bob')).toEqual(off);
    });
  });

  describe('openStore', () => {
    test('redis_url_opens_a_redis_store_with_the_prefix_from_the_url', async () => {
      const store = await openStore(`${server.url}/0?prefix=viaurl:`, { redis: FAST });
      try {
        expect(store).toBeInstanceOf(RedisStore);
        expect((store as RedisStore).prefix).toBe('viaurl:');
        await store.setLockdown('alice', true, 'sec');
      } finally {
        await store.close();
        await deletePrefix('viaurl:');
      }
    });

    test('an_unreachable_redis_fails_without_echoing_the_url', async () => {
      const attempt = openStore('redis://:hunter2@127.0.0.1:1', { redis: { connectTimeoutMs: 300 } });
      await expect(attempt).rejects.toBeInstanceOf(StoreUnavailableError);
      await expect(attempt).rejects.toThrow(/cannot load state from the redis store at 127\.0\.0\.1:1/);
      await expect(attempt).rejects.not.toThrow(/hunter2/);
    });
  });
});
