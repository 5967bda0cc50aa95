/**
 * The state store contract (SPEC §7): accounts and sessions. Reads are synchronous and come
 * from an in-memory cache that the backend keeps current; writes are asynchronous and durable
 * before they resolve. Every backend emits the same change events.
 */

/** Per-account switches (SPEC §4). Absent accounts read as all-off. */
export interface AccountState {
  readonly account: string;
  readonly lockdown: boolean;
  readonly developerMode: boolean;
  /** ISO-8601 time and actor (admin token name, or "cli") of the last change of each flag. */
  readonly lockdownChangedAt: string | null;
  readonly lockdownChangedBy: string | null;
  readonly developerModeChangedAt: string | null;
  readonly developerModeChangedBy: string | null;
  /**
   * "Sign out everywhere" watermark: OIDC tokens issued before it are refused, even ones the
   * proxy has never seen; `signedOutExcept` is the session that sign-out kept.
   */
  readonly signedOutAt: string | null;
  readonly signedOutExcept: string | null;
}

/** The global incident switch: every account in lockdown while it is on. */
export interface GlobalState {
  readonly lockdown: boolean;
  readonly changedAt: string | null;
  readonly changedBy: string | null;
}

/** How a session authenticated. */
export type AuthMethod = 'token' | 'oidc';

/** One session: a credential an agent runtime uses (SPEC §3). */
export interface SessionRecord {
  readonly id: string;
  readonly account: string;
  /** The client application, e.g. "chat", "codex-cli". */
  readonly app: string;
  readonly label: string | null;
  readonly authMethod: AuthMethod;
  /** sha256 (hex) of the token's secret part; null for OIDC sessions. Never the token. */
  readonly tokenHash: string | null;
  readonly createdAt: string;
  readonly createdBy: string | null;
  readonly expiresAt: string | null;
  readonly lastSeenAt: string | null;
  readonly clientIp: string | null;
  readonly userAgent: string | null;
  readonly revokedAt: string | null;
  readonly revokedBy: string | null;
}

/** Last-seen facts gathered on the request path and written in batches. */
export interface SessionTouch {
  readonly lastSeenAt: string;
  readonly clientIp: string | null;
  readonly userAgent: string | null;
}

/** A change, as applied to every replica's cache. `at` is when it was made (ISO-8601). */
export type StoreChange =
  | { readonly type: 'session'; readonly at: string; readonly session: SessionRecord }
  | { readonly type: 'account'; readonly at: string; readonly state: AccountState }
  | { readonly type: 'global'; readonly at: string; readonly state: GlobalState };

/** Turning a flag on while the other is on. Nothing was changed. */
export class ConflictError extends Error {
  override readonly name = 'ConflictError';
  readonly code = 'conflict';
}

/** The store could not be reached or written. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError';
  readonly code = 'state_unavailable';
}

/** The interface every backend implements; one contract suite tests them all. */
export interface StateStore {
  /** Loads the cache; resolves once reads are valid. */
  open(): Promise<void>;
  /** Flushes pending writes and releases resources. Idempotent. */
  close(): Promise<void>;

  /** A session from the cache (revoked ones included, until pruned). */
  getSession(id: string): SessionRecord | undefined;
  /** Sessions of an account from the cache, newest first. */
  listSessions(account: string): SessionRecord[];
  /** Account state from the cache; an unknown account reads as all-off. */
  getAccount(account: string): AccountState;
  /** Every account with any state recorded. */
  listAccounts(): AccountState[];
  getGlobal(): GlobalState;
  /** Sessions that are neither revoked nor expired at `now` (for the sessions_active gauge). */
  countLiveSessions(now: Date): number;
  /** Milliseconds since the cache was last known to be in sync with the store (0 for a local file). */
  stalenessMs(): number;

  createSession(session: SessionRecord): Promise<void>;
  /** Revokes one session; null if it does not exist or belongs to another account. */
  revokeSession(account: string, id: string, by: string): Promise<SessionRecord | null>;
  /** Revokes every live session of the account except `except`; returns the revoked ones. */
  revokeAllSessions(account: string, by: string, except?: string): Promise<SessionRecord[]>;
  /** Throws ConflictError when enabling lockdown while developer mode is on. */
  setLockdown(account: string, enabled: boolean, by: string): Promise<AccountState>;
  /** Throws ConflictError when enabling developer mode while lockdown is on. */
  setDeveloperMode(account: string, enabled: boolean, by: string): Promise<AccountState>;
  setGlobalLockdown(enabled: boolean, by: string): Promise<GlobalState>;
  /** Applies batched last-seen updates (no write per request). */
  touchSessions(touches: ReadonlyMap<string, SessionTouch>): Promise<void>;
  /** Drops revoked/expired sessions older than the audit window. */
  pruneSessions(olderThan: Date): Promise<number>;

  /** Change events, from this process or (for shared backends) any replica. */
  on(event: 'change', listener: (change: StoreChange) => void): this;
  off(event: 'change', listener: (change: StoreChange) => void): this;
}
