/**
 * The one contract every StateStore backend must pass (SPEC §7). A backend's test file calls
 * storeContract() with a factory; nothing here knows which backend it is testing.
 *
 * Guarantees asserted beyond the interface's types:
 * - a write's change events have been delivered to local listeners by the time it resolves;
 * - conflicts, no-op writes, touches and pruning emit no change events;
 * - after close(), writes reject with StoreUnavailableError.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { ConflictError, StoreUnavailableError } from '../../src/state/types.js';
import type { SessionRecord, SessionTouch, StateStore, StoreChange } from '../../src/state/types.js';

/** What a backend's factory provides for one test. */
export interface StoreHarness {
  /** An opened store over fresh, empty state. */
  readonly store: StateStore;
  /** Opens another store over the same data; the suite closes the first store before calling it. */
  readonly reopen?: () => Promise<StateStore>;
  /** Removes the data; runs after every store has been closed. */
  readonly cleanup: () => Promise<void>;
}

let sequence = 0;

/** A session record with sensible defaults and a unique id. */
export function sessionRecord(overrides: Partial<SessionRecord> = {}): SessionRecord {
  sequence += 1;
  return {
    id: `${sequence.toString(16).padStart(8, '0')}${Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0')}`,
    account: 'alice',
    app: 'chat',
    label: null,
    authMethod: 'token',
    tokenHash: 'a'.repeat(64),
    createdAt: new Date(Date.UTC(2025, 0, 1, 0, 0, sequence)).toISOString(),
    createdBy: 'admin',
    expiresAt: null,
    lastSeenAt: null,
    clientIp: null,
    userAgent: null,
    revokedAt: null,
    revokedBy: null,
    ...overrides,
  };
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

function expectIsoBetween(at: string | null | undefined, before: number, after: number): void {
  expect(at).toMatch(ISO);
  const t = Date.parse(at ?? '');
  expect(t).toBeGreaterThanOrEqual(before - 1);
  expect(t).toBeLessThanOrEqual(after + 1);
}

function isThenable(v: unknown): boolean {
  return typeof v === 'object' && v !== null && typeof (v as { then?: unknown }).then === 'function';
}

const past = (ms: number): string => new Date(Date.now() - ms).toISOString();
const future = (ms: number): string => new Date(Date.now() + ms).toISOString();

/** Registers the StateStore contract tests for one backend. */
export function storeContract(name: string, make: () => Promise<StoreHarness>): void {
  describe(`StateStore contract: ${name}`, () => {
    let harness: StoreHarness;
    let store: StateStore;
    let changes: StoreChange[];
    let opened: StateStore[];
    const record = (change: StoreChange): void => {
      changes.push(change);
    };

    beforeEach(async () => {
      harness = await make();
      store = harness.store;
      opened = [store];
      changes = [];
      store.on('change', record);
    });

    afterEach(async () => {
      for (const s of opened) await s.close();
      await harness.cleanup();
    });

    /** Closes the current store and opens another over the same data (skips when unsupported). */
    async function reopen(): Promise<StateStore> {
      if (harness.reopen === undefined) throw new Error('backend has no reopen');
      await store.close();
      const next = await harness.reopen();
      opened.push(next);
      return next;
    }
    const canReopen = (): boolean => harness.reopen !== undefined;

    describe('sessions', () => {
      test('create_then_read_from_cache', async () => {
        const s = sessionRecord({ label: 'laptop', clientIp: '203.0.113.9', userAgent: 'curl/8' });
        const before = Date.now();
        await store.createSession(s);
        const after = Date.now();
        const read = store.getSession(s.id);
        expect(isThenable(read)).toBe(false);
        expect(read).toEqual(s);
        expect(changes).toHaveLength(1);
        const [change] = changes;
        expect(change?.type).toBe('session');
        if (change?.type !== 'session') return;
        expect(change.session).toEqual(s);
        expectIsoBetween(change.at, before, after);
      });

      test('unknown_session_reads_undefined', () => {
        expect(store.getSession('0000000000000000')).toBeUndefined();
        expect(store.listSessions('nobody')).toEqual([]);
      });

      test('duplicate_id_is_refused_and_changes_nothing', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        await store.revokeSession(s.account, s.id, 'admin');
        const revoked = store.getSession(s.id);
        changes.length = 0;
        // Re-creating a revoked session's id must never resurrect it.
        await expect(store.createSession({ ...s, account: 'mallory' })).rejects.toBeInstanceOf(ConflictError);
        expect(store.getSession(s.id)).toEqual(revoked);
        expect(store.listSessions('mallory')).toEqual([]);
        expect(changes).toEqual([]);
      });

      test('list_newest_first_then_by_id_and_only_that_account', async () => {
        const t = (sec: number): string => new Date(Date.UTC(2025, 5, 1, 12, 0, sec)).toISOString();
        const a = sessionRecord({ id: 'aaaaaaaaaaaaaaaa', createdAt: t(10) });
        const b = sessionRecord({ id: 'bbbbbbbbbbbbbbbb', createdAt: t(30) });
        const c = sessionRecord({ id: 'cccccccccccccccc', createdAt: t(20) });
        const d = sessionRecord({ id: 'dddddddddddddddd', createdAt: t(20) });
        const other = sessionRecord({ account: 'bob', createdAt: t(40) });
        for (const s of [d, a, other, c, b]) await store.createSession(s);
        expect(store.listSessions('alice').map((s) => s.id)).toEqual([b.id, c.id, d.id, a.id]);
        expect(store.listSessions('bob')).toEqual([other]);
      });

      test('revoke_one', async () => {
        const s = sessionRecord();
        const keep = sessionRecord();
        await store.createSession(s);
        await store.createSession(keep);
        changes.length = 0;
        const before = Date.now();
        const revoked = await store.revokeSession('alice', s.id, 'admin-token');
        const after = Date.now();
        expect(revoked).toEqual({ ...s, revokedAt: expect.any(String), revokedBy: 'admin-token' });
        expectIsoBetween(revoked?.revokedAt, before, after);
        expect(store.getSession(s.id)).toEqual(revoked);
        expect(store.getSession(keep.id)?.revokedAt).toBeNull();
        expect(changes).toEqual([{ type: 'session', at: revoked?.revokedAt, session: revoked }]);
        // Revoked sessions stay listed (for audit) until pruned.
        expect(store.listSessions('alice').map((x) => x.id).sort()).toEqual([s.id, keep.id].sort());
      });

      test('revoke_unknown_session_returns_null', async () => {
        expect(await store.revokeSession('alice', 'ffffffffffffffff', 'admin')).toBeNull();
        expect(changes).toEqual([]);
      });

      test('revoke_another_accounts_session_returns_null_and_changes_nothing', async () => {
        const s = sessionRecord({ account: 'bob' });
        await store.createSession(s);
        changes.length = 0;
        expect(await store.revokeSession('alice', s.id, 'admin')).toBeNull();
        expect(store.getSession(s.id)).toEqual(s);
        expect(changes).toEqual([]);
      });

      test('revoke_twice_keeps_the_first_revocation', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        const first = await store.revokeSession('alice', s.id, 'first');
        changes.length = 0;
        const second = await store.revokeSession('alice', s.id, 'second');
        expect(second).toEqual(first);
        expect(store.getSession(s.id)?.revokedBy).toBe('first');
        expect(changes).toEqual([]);
      });

      test('revoke_all_revokes_every_live_session_with_one_event_each', async () => {
        const live = [sessionRecord(), sessionRecord(), sessionRecord()];
        const bob = sessionRecord({ account: 'bob' });
        for (const s of [...live, bob]) await store.createSession(s);
        changes.length = 0;
        const revoked = await store.revokeAllSessions('alice', 'admin');
        expect(revoked.map((s) => s.id)).toEqual(store.listSessions('alice').map((s) => s.id));
        expect(revoked.map((s) => s.id).sort()).toEqual(live.map((s) => s.id).sort());
        for (const s of revoked) {
          expect(s.revokedBy).toBe('admin');
          expect(store.getSession(s.id)).toEqual(s);
        }
        // One event per session, then the account's sign-out watermark (for OIDC tokens).
        expect(changes).toHaveLength(4);
        for (const c of changes.slice(0, 3)) {
          expect(c.type).toBe('session');
          if (c.type === 'session') expect(c.at).toBe(c.session.revokedAt);
        }
        const mark = changes[3]!;
        expect(mark.type).toBe('account');
        if (mark.type === 'account') expect(mark.state).toMatchObject({ account: 'alice', signedOutAt: mark.at, signedOutExcept: null });
        expect(store.getAccount('alice').signedOutAt).toBe(revoked[0]!.revokedAt);
        expect(store.getSession(bob.id)?.revokedAt).toBeNull();
        expect(store.getAccount('bob').signedOutAt).toBeNull();
      });

      test('revoke_all_except_the_callers_session', async () => {
        const mine = sessionRecord();
        const others = [sessionRecord(), sessionRecord()];
        for (const s of [mine, ...others]) await store.createSession(s);
        const revoked = await store.revokeAllSessions('alice', 'alice', mine.id);
        expect(revoked.map((s) => s.id).sort()).toEqual(others.map((s) => s.id).sort());
        expect(store.getSession(mine.id)?.revokedAt).toBeNull();
        expect(store.getAccount('alice')).toMatchObject({ signedOutExcept: mine.id });
        expect(store.getAccount('alice').signedOutAt).toMatch(ISO);
      });

      test('revoke_all_sets_the_watermark_even_without_known_sessions', async () => {
        // OIDC sessions the proxy has never seen must die too: the watermark is what stops them.
        expect(await store.revokeAllSessions('oidc:carol', 'admin')).toEqual([]);
        expect(store.getAccount('oidc:carol').signedOutAt).toMatch(ISO);
      });

      test('revoke_all_leaves_revoked_and_expired_sessions_alone', async () => {
        const revokedEarlier = sessionRecord();
        const expired = sessionRecord({ expiresAt: past(60_000) });
        const expiresLater = sessionRecord({ expiresAt: future(3_600_000) });
        for (const s of [revokedEarlier, expired, expiresLater]) await store.createSession(s);
        const first = await store.revokeSession('alice', revokedEarlier.id, 'first');
        changes.length = 0;
        const revoked = await store.revokeAllSessions('alice', 'second');
        expect(revoked.map((s) => s.id)).toEqual([expiresLater.id]);
        expect(store.getSession(revokedEarlier.id)).toEqual(first);
        expect(store.getSession(expired.id)).toEqual(expired);
        expect(changes.filter((c) => c.type === 'session')).toHaveLength(1);
        expect(await store.revokeAllSessions('alice', 'third')).toEqual([]);
        expect(await store.revokeAllSessions('nobody', 'third')).toEqual([]);
        // No more session events; only the watermarks moved.
        expect(changes.filter((c) => c.type === 'session')).toHaveLength(1);
        expect(changes.filter((c) => c.type === 'account')).toHaveLength(3);
      });

      test('touch_updates_the_cache_at_once_without_events', async () => {
        const a = sessionRecord();
        const b = sessionRecord();
        await store.createSession(a);
        await store.createSession(b);
        changes.length = 0;
        const seen = new Date().toISOString();
        const touches = new Map<string, SessionTouch>([
          [a.id, { lastSeenAt: seen, clientIp: '198.51.100.4', userAgent: 'codex-cli/1.0' }],
          [b.id, { lastSeenAt: seen, clientIp: '2001:db8::7', userAgent: null }],
          ['0000000000000000', { lastSeenAt: seen, clientIp: null, userAgent: null }],
        ]);
        const pending = store.touchSessions(touches);
        // The request path reads last-seen data before the batch is durable.
        expect(store.getSession(a.id)).toMatchObject({ lastSeenAt: seen, clientIp: '198.51.100.4', userAgent: 'codex-cli/1.0' });
        await pending;
        expect(store.getSession(b.id)).toMatchObject({ lastSeenAt: seen, clientIp: '2001:db8::7', userAgent: null });
        expect(store.getSession('0000000000000000')).toBeUndefined();
        expect(changes).toEqual([]);
      });

      test('touch_never_moves_last_seen_back', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        const newer = new Date(Date.UTC(2025, 1, 2)).toISOString();
        const older = new Date(Date.UTC(2025, 1, 1)).toISOString();
        await store.touchSessions(new Map([[s.id, { lastSeenAt: newer, clientIp: '192.0.2.1', userAgent: 'new' }]]));
        await store.touchSessions(new Map([[s.id, { lastSeenAt: older, clientIp: '192.0.2.2', userAgent: 'old' }]]));
        expect(store.getSession(s.id)).toMatchObject({ lastSeenAt: newer, clientIp: '192.0.2.1', userAgent: 'new' });
      });

      test('touch_survives_a_later_revocation', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        const seen = new Date().toISOString();
        await store.touchSessions(new Map([[s.id, { lastSeenAt: seen, clientIp: '192.0.2.1', userAgent: 'ua' }]]));
        const revoked = await store.revokeSession('alice', s.id, 'admin');
        expect(revoked?.lastSeenAt).toBe(seen);
        expect(store.getSession(s.id)).toMatchObject({ lastSeenAt: seen, revokedBy: 'admin' });
      });

      test('touch_batches_many_sessions_in_one_call', async () => {
        const sessions = Array.from({ length: 200 }, () => sessionRecord());
        await Promise.all(sessions.map((s) => store.createSession(s)));
        const seen = new Date().toISOString();
        await store.touchSessions(new Map(sessions.map((s, i) => [s.id, { lastSeenAt: seen, clientIp: `10.0.${i >> 8}.${i & 255}`, userAgent: null }])));
        for (const [i, s] of sessions.entries()) {
          expect(store.getSession(s.id)?.clientIp).toBe(`10.0.${i >> 8}.${i & 255}`);
        }
      });

      test('prune_drops_only_dead_sessions_older_than_the_cutoff', async () => {
        const live = sessionRecord();
        const oldRevoked = sessionRecord({ revokedAt: past(10 * 86_400_000), revokedBy: 'admin' });
        const newRevoked = sessionRecord({ revokedAt: past(60_000), revokedBy: 'admin' });
        const oldExpired = sessionRecord({ expiresAt: past(10 * 86_400_000) });
        const newExpired = sessionRecord({ expiresAt: past(60_000) });
        const liveOldCreated = sessionRecord({ createdAt: past(100 * 86_400_000) });
        const bobOld = sessionRecord({ account: 'bob', revokedAt: past(10 * 86_400_000), revokedBy: 'admin' });
        const all = [live, oldRevoked, newRevoked, oldExpired, newExpired, liveOldCreated, bobOld];
        for (const s of all) await store.createSession(s);
        changes.length = 0;
        const pruned = await store.pruneSessions(new Date(Date.now() - 86_400_000));
        expect(pruned).toBe(3);
        for (const s of [oldRevoked, oldExpired, bobOld]) expect(store.getSession(s.id)).toBeUndefined();
        for (const s of [live, newRevoked, newExpired, liveOldCreated]) expect(store.getSession(s.id)).toEqual(s);
        expect(store.listSessions('alice')).toHaveLength(4);
        expect(store.listSessions('bob')).toEqual([]);
        expect(changes).toEqual([]);
        expect(await store.pruneSessions(new Date(Date.now() - 86_400_000))).toBe(0);
      });
    });

    describe('account state', () => {
      test('unknown_account_reads_all_off', () => {
        expect(store.getAccount('carol')).toEqual({
          account: 'carol',
          lockdown: false,
          developerMode: false,
          lockdownChangedAt: null,
          lockdownChangedBy: null,
          developerModeChangedAt: null,
          developerModeChangedBy: null,
          signedOutAt: null,
          signedOutExcept: null,
        });
        expect(store.listAccounts()).toEqual([]);
      });

      test('lockdown_on_and_off', async () => {
        const before = Date.now();
        const on = await store.setLockdown('alice', true, 'sec-oncall');
        const after = Date.now();
        expect(on).toMatchObject({ account: 'alice', lockdown: true, developerMode: false, lockdownChangedBy: 'sec-oncall' });
        expectIsoBetween(on.lockdownChangedAt, before, after);
        expect(store.getAccount('alice')).toEqual(on);
        expect(store.listAccounts()).toEqual([on]);
        expect(changes).toEqual([{ type: 'account', at: on.lockdownChangedAt, state: on }]);

        const off = await store.setLockdown('alice', false, 'cli');
        expect(off).toMatchObject({ lockdown: false, lockdownChangedBy: 'cli' });
        expect(store.getAccount('alice')).toEqual(off);
        expect(changes).toHaveLength(2);
        expect(changes[1]).toEqual({ type: 'account', at: off.lockdownChangedAt, state: off });
        // An account whose flags were ever changed stays listed (its audit timestamps are state).
        expect(store.listAccounts()).toEqual([off]);
      });

      test('developer_mode_on_and_off', async () => {
        const on = await store.setDeveloperMode('alice', true, 'admin');
        expect(on).toMatchObject({ developerMode: true, lockdown: false, developerModeChangedBy: 'admin' });
        expect(on.developerModeChangedAt).toMatch(ISO);
        expect(store.getAccount('alice')).toEqual(on);
        expect(changes).toEqual([{ type: 'account', at: on.developerModeChangedAt, state: on }]);
        const off = await store.setDeveloperMode('alice', false, 'admin');
        expect(off.developerMode).toBe(false);
        expect(changes).toHaveLength(2);
      });

      test('enabling_what_is_on_changes_nothing', async () => {
        const lockdown = await store.setLockdown('alice', true, 'first');
        const dev = await store.setDeveloperMode('bob', true, 'first');
        const global = await store.setGlobalLockdown(true, 'first');
        changes.length = 0;
        expect(await store.setLockdown('alice', true, 'second')).toEqual(lockdown);
        expect(await store.setDeveloperMode('bob', true, 'second')).toEqual(dev);
        expect(await store.setGlobalLockdown(true, 'second')).toEqual(global);
        expect(store.getAccount('alice')).toEqual(lockdown);
        expect(store.getAccount('bob')).toEqual(dev);
        expect(store.getGlobal()).toEqual(global);
        expect(changes).toEqual([]);
      });

      test('disabling_what_is_off_changes_nothing', async () => {
        expect(await store.setLockdown('carol', false, 'admin')).toEqual(store.getAccount('carol'));
        expect(await store.setDeveloperMode('carol', false, 'admin')).toMatchObject({ developerMode: false, developerModeChangedAt: null });
        expect(await store.setGlobalLockdown(false, 'admin')).toEqual({ lockdown: false, changedAt: null, changedBy: null });
        expect(store.listAccounts()).toEqual([]);
        expect(changes).toEqual([]);
      });

      test('lockdown_while_developer_mode_conflicts_and_changes_nothing', async () => {
        const dev = await store.setDeveloperMode('alice', true, 'admin');
        changes.length = 0;
        const attempt = store.setLockdown('alice', true, 'sec');
        await expect(attempt).rejects.toBeInstanceOf(ConflictError);
        await expect(attempt).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/turn off developer mode first/) });
        expect(store.getAccount('alice')).toEqual(dev);
        expect(changes).toEqual([]);
      });

      test('developer_mode_while_lockdown_conflicts_and_changes_nothing', async () => {
        const locked = await store.setLockdown('alice', true, 'sec');
        changes.length = 0;
        const attempt = store.setDeveloperMode('alice', true, 'admin');
        await expect(attempt).rejects.toBeInstanceOf(ConflictError);
        await expect(attempt).rejects.toMatchObject({ code: 'conflict', message: expect.stringMatching(/turn off lockdown first/) });
        expect(store.getAccount('alice')).toEqual(locked);
        expect(changes).toEqual([]);
      });

      test('either_flag_can_be_enabled_once_the_other_is_off', async () => {
        await store.setDeveloperMode('alice', true, 'admin');
        await store.setDeveloperMode('alice', false, 'admin');
        expect(await store.setLockdown('alice', true, 'sec')).toMatchObject({ lockdown: true, developerMode: false });
        await store.setLockdown('alice', false, 'sec');
        expect(await store.setDeveloperMode('alice', true, 'admin')).toMatchObject({ lockdown: false, developerMode: true });
      });

      test('concurrent_conflicting_requests_let_exactly_one_win', async () => {
        for (const account of ['p', 'q']) {
          const requests = account === 'p'
            ? [store.setLockdown(account, true, 'sec'), store.setDeveloperMode(account, true, 'admin')]
            : [store.setDeveloperMode(account, true, 'admin'), store.setLockdown(account, true, 'sec')];
          const results = await Promise.allSettled(requests);
          expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
          const rejected = results.filter((r) => r.status === 'rejected');
          expect(rejected).toHaveLength(1);
          expect((rejected[0] as PromiseRejectedResult).reason).toBeInstanceOf(ConflictError);
          const state = store.getAccount(account);
          expect(Number(state.lockdown) + Number(state.developerMode)).toBe(1);
        }
      });

      test('accounts_are_independent', async () => {
        await store.setLockdown('alice', true, 'sec');
        expect(store.getAccount('bob').lockdown).toBe(false);
        expect(await store.setDeveloperMode('bob', true, 'admin')).toMatchObject({ developerMode: true });
        expect(store.listAccounts().map((a) => a.account)).toEqual(['alice', 'bob']);
      });
    });

    describe('global lockdown', () => {
      test('starts_off_and_switches', async () => {
        expect(store.getGlobal()).toEqual({ lockdown: false, changedAt: null, changedBy: null });
        const before = Date.now();
        const on = await store.setGlobalLockdown(true, 'incident-42');
        const after = Date.now();
        expect(on).toMatchObject({ lockdown: true, changedBy: 'incident-42' });
        expectIsoBetween(on.changedAt, before, after);
        expect(store.getGlobal()).toEqual(on);
        expect(changes).toEqual([{ type: 'global', at: on.changedAt, state: on }]);
        const off = await store.setGlobalLockdown(false, 'incident-42');
        expect(off.lockdown).toBe(false);
        expect(store.getGlobal()).toEqual(off);
        expect(changes).toHaveLength(2);
      });

      test('does_not_conflict_with_developer_mode_either_way', async () => {
        // The incident switch always wins at decision time, so refusing here would only slow an incident.
        await store.setDeveloperMode('alice', true, 'admin');
        expect((await store.setGlobalLockdown(true, 'sec')).lockdown).toBe(true);
        expect(await store.setDeveloperMode('bob', true, 'admin')).toMatchObject({ developerMode: true });
        expect(store.getAccount('alice').developerMode).toBe(true);
        expect(store.getAccount('alice').lockdown).toBe(false);
      });
    });

    describe('change events', () => {
      test('every_kind_of_write_emits_its_change_before_resolving', async () => {
        const s = sessionRecord();
        const s2 = sessionRecord();
        const seenAtResolve: number[] = [];
        const steps: Array<() => Promise<unknown>> = [
          () => store.createSession(s),
          () => store.createSession(s2),
          () => store.revokeSession('alice', s.id, 'admin'),
          () => store.revokeAllSessions('alice', 'admin'),
          () => store.setLockdown('alice', true, 'admin'),
          () => store.setLockdown('alice', false, 'admin'),
          () => store.setDeveloperMode('alice', true, 'admin'),
          () => store.setGlobalLockdown(true, 'admin'),
        ];
        for (const step of steps) {
          await step();
          seenAtResolve.push(changes.length);
        }
        expect(seenAtResolve).toEqual([1, 2, 3, 5, 6, 7, 8, 9]);
        expect(changes.map((c) => c.type)).toEqual(['session', 'session', 'session', 'session', 'account', 'account', 'account', 'account', 'global']);
        for (const c of changes) expect(c.at).toMatch(ISO);
      });

      test('off_stops_delivery', async () => {
        store.off('change', record);
        await store.setLockdown('alice', true, 'admin');
        expect(changes).toEqual([]);
      });

      test('each_listener_gets_each_change_once', async () => {
        const second: StoreChange[] = [];
        const listener = (c: StoreChange): void => {
          second.push(c);
        };
        store.on('change', listener);
        await Promise.all([store.createSession(sessionRecord()), store.setGlobalLockdown(true, 'admin')]);
        expect(changes).toHaveLength(2);
        expect(second).toEqual(changes);
        store.off('change', listener);
      });
    });

    describe('reads', () => {
      test('are_synchronous_values', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        await store.setLockdown('alice', true, 'admin');
        const reads: unknown[] = [
          store.getSession(s.id),
          store.listSessions('alice'),
          store.getAccount('alice'),
          store.listAccounts(),
          store.getGlobal(),
          store.stalenessMs(),
        ];
        for (const r of reads) expect(isThenable(r)).toBe(false);
        expect(store.stalenessMs()).toBeGreaterThanOrEqual(0);
      });

      test('returned_lists_are_copies', async () => {
        await store.createSession(sessionRecord());
        store.listSessions('alice').length = 0;
        store.listAccounts().push(store.getAccount('x'));
        expect(store.listSessions('alice')).toHaveLength(1);
        expect(store.listAccounts()).toEqual([]);
      });
    });

    describe('lifecycle', () => {
      test('open_again_is_harmless', async () => {
        const s = sessionRecord();
        await store.createSession(s);
        await store.open();
        expect(store.getSession(s.id)).toEqual(s);
      });

      test('close_is_idempotent_and_later_writes_reject', async () => {
        await store.close();
        await store.close();
        await expect(store.setLockdown('alice', true, 'admin')).rejects.toBeInstanceOf(StoreUnavailableError);
        await expect(store.createSession(sessionRecord())).rejects.toBeInstanceOf(StoreUnavailableError);
      });

      test('close_flushes_pending_writes', async () => {
        const sessions = Array.from({ length: 20 }, () => sessionRecord());
        const writes = [
          ...sessions.map((s) => store.createSession(s)),
          store.setLockdown('alice', true, 'admin'),
        ];
        const closing = store.close();
        await Promise.all(writes);
        await closing;
        if (!canReopen()) return;
        const next = await reopen();
        for (const s of sessions) expect(next.getSession(s.id)).toEqual(s);
        expect(next.getAccount('alice').lockdown).toBe(true);
      });

      test('reopen_keeps_everything', async () => {
        if (!canReopen()) return;
        const alive = sessionRecord({ label: 'ünïcödé ✓', userAgent: 'Mozilla/5.0 "quoted"' });
        const revoked = sessionRecord();
        const oidc = sessionRecord({ account: 'oidc:dana@example.com', authMethod: 'oidc', tokenHash: null });
        const old = sessionRecord({ revokedAt: past(10 * 86_400_000), revokedBy: 'admin' });
        for (const s of [alive, revoked, oidc, old]) await store.createSession(s);
        await store.revokeSession('alice', revoked.id, 'admin');
        await store.touchSessions(new Map([[alive.id, { lastSeenAt: new Date().toISOString(), clientIp: '192.0.2.8', userAgent: 'curl/8' }]]));
        await store.pruneSessions(new Date(Date.now() - 86_400_000));
        await store.setLockdown('alice', true, 'sec');
        await store.setDeveloperMode('bob', true, 'admin');
        // A legal account name that is also a JavaScript prototype key.
        await store.setLockdown('__proto__', true, 'sec');
        await store.setGlobalLockdown(true, 'incident');

        const expected = {
          alice: store.listSessions('alice'),
          oidc: store.listSessions(oidc.account),
          accounts: store.listAccounts(),
          global: store.getGlobal(),
        };
        expect(expected.alice).toHaveLength(2);
        const next = await reopen();
        expect(next.listSessions('alice')).toEqual(expected.alice);
        expect(next.listSessions(oidc.account)).toEqual(expected.oidc);
        expect(next.getSession(old.id)).toBeUndefined();
        expect(next.getSession(alive.id)?.clientIp).toBe('192.0.2.8');
        expect(next.listAccounts()).toEqual(expected.accounts);
        expect(next.getAccount('__proto__').lockdown).toBe(true);
        expect(next.getGlobal()).toEqual(expected.global);
      });

      test('reopened_store_enforces_rules_on_persisted_state', async () => {
        if (!canReopen()) return;
        const s = sessionRecord();
        await store.createSession(s);
        await store.setLockdown('alice', true, 'sec');
        const next = await reopen();
        await expect(next.setDeveloperMode('alice', true, 'admin')).rejects.toBeInstanceOf(ConflictError);
        await expect(next.createSession(s)).rejects.toBeInstanceOf(ConflictError);
        const events: StoreChange[] = [];
        next.on('change', (c) => events.push(c));
        expect((await next.revokeSession('alice', s.id, 'admin'))?.revokedBy).toBe('admin');
        expect(events).toHaveLength(1);
      });
    });
  });
}
