/**
 * The in-memory cache every backend serves reads from, the rules that turn a write request into
 * a StoreChange, and the one place a StoreChange is applied to a cache. Backends differ only in
 * how they make a change durable and how changes from other replicas reach them.
 */
import { boundedMemo } from '../bounded-memo.js';
import { ConflictError } from './types.js';
import type { AccountState, GlobalState, SessionRecord, SessionTouch, StoreChange } from './types.js';

/** The synchronous read side shared by the cache and a staged batch over it. */
export interface CacheReader {
  getSession(id: string): SessionRecord | undefined;
  /** Sessions of an account, newest first (createdAt desc, then id). */
  listSessions(account: string): SessionRecord[];
  getAccount(account: string): AccountState;
  getGlobal(): GlobalState;
}

/** Everything a cache holds, as plain lists (for persisting and loading). */
export interface CacheSnapshot {
  readonly global: GlobalState;
  readonly accounts: readonly AccountState[];
  readonly sessions: readonly SessionRecord[];
}

/** The global switch before anyone has touched it. */
export const INITIAL_GLOBAL: GlobalState = Object.freeze({ lockdown: false, changedAt: null, changedBy: null });

/** The state of an account nothing has been recorded for. */
export function defaultAccountState(account: string): AccountState {
  return Object.freeze({
    account,
    lockdown: false,
    developerMode: false,
    lockdownChangedAt: null,
    lockdownChangedBy: null,
    developerModeChangedAt: null,
    developerModeChangedBy: null,
    signedOutAt: null,
    signedOutExcept: null,
  });
}

/** A frozen copy holding exactly the SessionRecord fields, so stray properties never get persisted. */
export function toSessionRecord(s: SessionRecord): SessionRecord {
  return Object.freeze({
    id: s.id,
    account: s.account,
    app: s.app,
    label: s.label ?? null,
    authMethod: s.authMethod,
    tokenHash: s.tokenHash ?? null,
    createdAt: s.createdAt,
    createdBy: s.createdBy ?? null,
    expiresAt: s.expiresAt ?? null,
    lastSeenAt: s.lastSeenAt ?? null,
    clientIp: s.clientIp ?? null,
    userAgent: s.userAgent ?? null,
    revokedAt: s.revokedAt ?? null,
    revokedBy: s.revokedBy ?? null,
  });
}

/** A frozen copy holding exactly the AccountState fields. */
export function toAccountState(a: AccountState): AccountState {
  return Object.freeze({
    account: a.account,
    lockdown: a.lockdown,
    developerMode: a.developerMode,
    lockdownChangedAt: a.lockdownChangedAt ?? null,
    lockdownChangedBy: a.lockdownChangedBy ?? null,
    developerModeChangedAt: a.developerModeChangedAt ?? null,
    developerModeChangedBy: a.developerModeChangedBy ?? null,
    signedOutAt: a.signedOutAt ?? null,
    signedOutExcept: a.signedOutExcept ?? null,
  });
}

/** "Sign out everywhere": the account's watermark moves to `at` (OIDC tokens issued before it die). */
export function signOutTransition(current: AccountState, at: string, except: string | undefined): AccountState {
  return Object.freeze({ ...current, signedOutAt: at, signedOutExcept: except ?? null });
}

/** A frozen copy holding exactly the GlobalState fields. */
export function toGlobalState(g: GlobalState): GlobalState {
  return Object.freeze({ lockdown: g.lockdown, changedAt: g.changedAt ?? null, changedBy: g.changedBy ?? null });
}

const timeOf = (iso: string | null): number => (iso === null ? Number.NaN : Date.parse(iso));

/** Newest first; ids break ties so the order is total and stable across replicas. */
export function compareNewestFirst(a: SessionRecord, b: SessionRecord): number {
  const byTime = timeOf(b.createdAt) - timeOf(a.createdAt);
  if (byTime !== 0 && !Number.isNaN(byTime)) return byTime;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Neither revoked nor expired at `now`. */
export function isLiveSession(s: SessionRecord, now: Date): boolean {
  return s.revokedAt === null && (s.expiresAt === null || timeOf(s.expiresAt) > now.getTime());
}

/** Revoked or expired strictly before `olderThan`; live sessions are never prunable. */
export function isPrunableSession(s: SessionRecord, olderThan: Date): boolean {
  const cutoff = olderThan.getTime();
  if (s.revokedAt !== null && timeOf(s.revokedAt) < cutoff) return true;
  return s.expiresAt !== null && timeOf(s.expiresAt) < cutoff;
}

/** The session as revoked; an already revoked session keeps its original revocation. */
export function revokeTransition(s: SessionRecord, by: string, at: string): SessionRecord | null {
  if (s.revokedAt !== null) return null;
  return Object.freeze({ ...s, revokedAt: at, revokedBy: by });
}

/**
 * Lockdown on/off for an account; null when it is already in the requested state (no timestamp
 * bump). Refuses to enable it over developer mode: the two are mutually exclusive (SPEC §4).
 */
export function lockdownTransition(
  current: AccountState,
  enabled: boolean,
  by: string,
  at: string,
): AccountState | null {
  if (current.lockdown === enabled) return null;
  if (enabled && current.developerMode) {
    throw new ConflictError(`account ${current.account} is in developer mode; turn off developer mode first`);
  }
  return Object.freeze({ ...current, lockdown: enabled, lockdownChangedAt: at, lockdownChangedBy: by });
}

/**
 * Developer mode on/off for an account; null when already in the requested state. Only the
 * account's own lockdown conflicts: global lockdown is an incident switch that overrides
 * developer mode at decision time rather than refusing it here.
 */
export function developerModeTransition(
  current: AccountState,
  enabled: boolean,
  by: string,
  at: string,
): AccountState | null {
  if (current.developerMode === enabled) return null;
  if (enabled && current.lockdown) {
    throw new ConflictError(`account ${current.account} is in lockdown; turn off lockdown first`);
  }
  return Object.freeze({ ...current, developerMode: enabled, developerModeChangedAt: at, developerModeChangedBy: by });
}

/** The global switch on/off; null when already in the requested state. */
export function globalLockdownTransition(
  current: GlobalState,
  enabled: boolean,
  by: string,
  at: string,
): GlobalState | null {
  if (current.lockdown === enabled) return null;
  return Object.freeze({ lockdown: enabled, changedAt: at, changedBy: by });
}

/**
 * Keeps whichever last-seen facts are newer. Touches are batched and never broadcast, so a
 * session change (say, a revocation) may carry older last-seen data than this cache has.
 */
function mergeLastSeen(next: SessionRecord, cached: SessionRecord | undefined): SessionRecord {
  if (cached === undefined || cached.lastSeenAt === null) return next;
  if (next.lastSeenAt !== null && timeOf(next.lastSeenAt) >= timeOf(cached.lastSeenAt)) return next;
  return Object.freeze({
    ...next,
    lastSeenAt: cached.lastSeenAt,
    clientIp: cached.clientIp,
    userAgent: cached.userAgent,
  });
}

/**
 * Sessions by id, session ids by account, accounts by name, and the global switch. Reads are
 * O(1), or O(n log n) in the sessions of one account for listings. Records are frozen, so callers
 * can hold them without copying.
 */
export class MemoryCache implements CacheReader {
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #byAccount = new Map<string, Set<string>>();
  readonly #accounts = new Map<string, AccountState>();
  #global: GlobalState = INITIAL_GLOBAL;

  /** A session, revoked ones included until pruned. */
  getSession(id: string): SessionRecord | undefined {
    return this.#sessions.get(id);
  }

  /** Sessions of an account, newest first. */
  listSessions(account: string): SessionRecord[] {
    const ids = this.#byAccount.get(account);
    if (ids === undefined) return [];
    const out: SessionRecord[] = [];
    for (const id of ids) {
      const s = this.#sessions.get(id);
      if (s !== undefined) out.push(s);
    }
    return out.sort(compareNewestFirst);
  }

  /** Ids of an account's sessions, in no particular order. */
  sessionIds(account: string): ReadonlySet<string> {
    return this.#byAccount.get(account) ?? new Set();
  }

  /** Sessions neither revoked nor expired at `now`. */
  countLive(now: Date): number {
    let n = 0;
    for (const s of this.#sessions.values()) if (isLiveSession(s, now)) n++;
    return n;
  }

  /** Number of sessions held, revoked ones included. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** An account's state; unknown accounts read as all-off. */
  getAccount(account: string): AccountState {
    return this.#accounts.get(account) ?? this.#defaultFor(account);
  }

  // Accounts without recorded state are read on every request: one frozen default each, kept
  // (bounded) instead of built per read.
  readonly #defaultFor = boundedMemo(defaultAccountState, 10_000, 1024);

  /** Every account with state recorded, by name. */
  listAccounts(): AccountState[] {
    return [...this.#accounts.values()].sort((a, b) => (a.account < b.account ? -1 : a.account > b.account ? 1 : 0));
  }

  /** The global incident switch. */
  getGlobal(): GlobalState {
    return this.#global;
  }

  /** Applies one change, from this process or another replica. */
  apply(change: StoreChange): void {
    switch (change.type) {
      case 'session':
        this.#putSession(toSessionRecord(change.session));
        return;
      case 'account':
        this.#accounts.set(change.state.account, toAccountState(change.state));
        return;
      case 'global':
        this.#global = toGlobalState(change.state);
        return;
    }
  }

  /** Records last-seen facts; false when the session is unknown or the touch is older than what is held. */
  touch(id: string, t: SessionTouch): boolean {
    const s = this.#sessions.get(id);
    if (s === undefined) return false;
    // Batches can arrive out of order (several flush timers, several replicas): never go back in time.
    if (s.lastSeenAt !== null && timeOf(t.lastSeenAt) < timeOf(s.lastSeenAt)) return false;
    this.#sessions.set(id, Object.freeze({ ...s, lastSeenAt: t.lastSeenAt, clientIp: t.clientIp, userAgent: t.userAgent }));
    return true;
  }

  /** Drops a session (pruning); true when it was held. */
  remove(id: string): boolean {
    const s = this.#sessions.get(id);
    if (s === undefined) return false;
    this.#sessions.delete(id);
    this.#unindex(s.account, id);
    return true;
  }

  /** Replaces the whole content, e.g. after loading from disk or resyncing a replica. */
  load(snapshot: CacheSnapshot): void {
    this.#sessions.clear();
    this.#byAccount.clear();
    this.#accounts.clear();
    this.#global = toGlobalState(snapshot.global);
    for (const a of snapshot.accounts) this.#accounts.set(a.account, toAccountState(a));
    for (const s of snapshot.sessions) this.#putSession(toSessionRecord(s));
  }

  /** Everything held, for persisting. */
  snapshot(): CacheSnapshot {
    return { global: this.#global, accounts: [...this.#accounts.values()], sessions: [...this.#sessions.values()] };
  }

  #putSession(next: SessionRecord): void {
    const cached = this.#sessions.get(next.id);
    if (cached !== undefined && cached.account !== next.account) this.#unindex(cached.account, next.id);
    this.#sessions.set(next.id, mergeLastSeen(next, cached));
    let ids = this.#byAccount.get(next.account);
    if (ids === undefined) {
      ids = new Set();
      this.#byAccount.set(next.account, ids);
    }
    ids.add(next.id);
  }

  #unindex(account: string, id: string): void {
    const ids = this.#byAccount.get(account);
    if (ids === undefined) return;
    ids.delete(id);
    if (ids.size === 0) this.#byAccount.delete(account);
  }
}

/**
 * A batch of changes staged over a cache but not yet durable. Reads see the cache plus the batch,
 * so a batch of writes is checked in order (a conflict with an earlier write in the same batch is
 * caught); the cache itself changes only on commit, after the backend made the batch durable.
 */
export class StagedBatch implements CacheReader {
  readonly #base: MemoryCache;
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #accounts = new Map<string, AccountState>();
  readonly #removed = new Set<string>();
  #global: GlobalState | undefined;
  readonly #changes: StoreChange[] = [];

  /** Stages over `base`, which must not change until commit or discard. */
  constructor(base: MemoryCache) {
    this.#base = base;
  }

  /** The changes staged so far, in order. */
  get changes(): readonly StoreChange[] {
    return this.#changes;
  }

  /** Whether committing would change anything. */
  get isEmpty(): boolean {
    return this.#changes.length === 0 && this.#removed.size === 0;
  }

  getSession(id: string): SessionRecord | undefined {
    if (this.#removed.has(id)) return undefined;
    return this.#sessions.get(id) ?? this.#base.getSession(id);
  }

  listSessions(account: string): SessionRecord[] {
    const ids = new Set(this.#base.sessionIds(account));
    for (const s of this.#sessions.values()) if (s.account === account) ids.add(s.id);
    const out: SessionRecord[] = [];
    for (const id of ids) {
      const s = this.getSession(id);
      if (s !== undefined && s.account === account) out.push(s);
    }
    return out.sort(compareNewestFirst);
  }

  /** Every session the committed result would hold. */
  allSessions(): SessionRecord[] {
    const out: SessionRecord[] = [];
    for (const s of this.#base.snapshot().sessions) {
      if (!this.#removed.has(s.id) && !this.#sessions.has(s.id)) out.push(s);
    }
    for (const s of this.#sessions.values()) if (!this.#removed.has(s.id)) out.push(s);
    return out;
  }

  getAccount(account: string): AccountState {
    return this.#accounts.get(account) ?? this.#base.getAccount(account);
  }

  getGlobal(): GlobalState {
    return this.#global ?? this.#base.getGlobal();
  }

  /** Stages a change; later reads through this batch see it. */
  stage(change: StoreChange): void {
    switch (change.type) {
      case 'session':
        this.#removed.delete(change.session.id);
        this.#sessions.set(change.session.id, toSessionRecord(change.session));
        break;
      case 'account':
        this.#accounts.set(change.state.account, toAccountState(change.state));
        break;
      case 'global':
        this.#global = toGlobalState(change.state);
        break;
    }
    this.#changes.push(change);
  }

  /** Stages the removal of a session (pruning, which is not broadcast). */
  remove(id: string): void {
    this.#sessions.delete(id);
    this.#removed.add(id);
  }

  /** What the cache will hold after commit, for persisting before commit. */
  snapshot(): CacheSnapshot {
    const accounts = new Map<string, AccountState>();
    for (const a of this.#base.snapshot().accounts) accounts.set(a.account, a);
    for (const a of this.#accounts.values()) accounts.set(a.account, a);
    return { global: this.getGlobal(), accounts: [...accounts.values()], sessions: this.allSessions() };
  }

  /** Applies the batch to the cache; returns the changes to announce. */
  commit(): StoreChange[] {
    for (const id of this.#removed) this.#base.remove(id);
    const applied: StoreChange[] = [];
    for (const change of this.#changes) {
      // A session pruned after being changed in the same batch stays pruned.
      if (change.type === 'session' && this.#removed.has(change.session.id)) continue;
      this.#base.apply(change);
      applied.push(change);
    }
    return applied;
  }
}
