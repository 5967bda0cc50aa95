/**
 * The embedded default state backend (SPEC §7): the whole state as one JSON document, replaced
 * atomically on every write, so a crash or `kill -9` leaves either the old or the new file and
 * never a torn one. One process owns a file; replicas that share state use the Redis backend.
 */
import { EventEmitter } from 'node:events';
import { mkdir, open as openFile, readdir, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { z } from 'zod';
import { AccountSchema, GlobalSchema, SessionSchema } from './schemas.js';
import { CachedReads } from './cached-reads.js';
import {
  developerModeTransition,
  globalLockdownTransition,
  isLiveSession,
  isPrunableSession,
  lockdownTransition,
  revokeTransition,
  signOutTransition,
  StagedBatch,
  toSessionRecord,
} from './memory-cache.js';
import type { CacheSnapshot } from './memory-cache.js';
import { ConflictError, StoreUnavailableError } from './types.js';
import type {
  AccountState,
  GlobalState,
  SessionRecord,
  SessionTouch,
  StateStore,
  StoreChange,
} from './types.js';

/** The document format this code reads and writes. */
export const STATE_FILE_VERSION = 1;

/** The state file exists but cannot be understood; the store refuses to start rather than drop revocations. */
export class StateFileError extends Error {
  override readonly name = 'StateFileError';
  readonly code = 'state_file_invalid';
  /** Absolute path of the offending file. */
  readonly file: string;

  constructor(file: string, problem: string, options?: ErrorOptions) {
    super(
      `state file ${file} ${problem}; refusing to start with an empty state because the file holds ` +
        'session revocations and lockdowns. Restore it from a backup, or move it aside to start empty.',
      options,
    );
    this.file = file;
  }
}

/** Options; dependencies are injectable for tests. */
export interface FileStoreOptions {
  /** Clock for change timestamps (default: the system clock). */
  readonly now?: () => Date;
  /** How a serialized document reaches disk (default: writeFileAtomic). */
  readonly writeFile?: (file: string, data: string) => Promise<void>;
}


function describeIssues(where: string, error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${where}${i.path.map((p) => `.${String(p)}`).join('')}: ${i.message}`)
    .join('; ');
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Parses a state document, checking every record; `file` only names it in errors. Entries are
 * walked with Object.entries rather than copied into objects, so an account literally named
 * `__proto__` (a legal account name) round-trips instead of touching a prototype.
 */
export function parseStateDocument(json: string, file: string): CacheSnapshot {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    const reason = json.trim() === '' ? 'is empty' : `is not valid JSON (${(err as Error).message})`;
    throw new StateFileError(file, reason, { cause: err });
  }
  if (!isPlainObject(raw)) throw new StateFileError(file, 'is not a JSON object');
  if (raw.version !== STATE_FILE_VERSION) {
    throw new StateFileError(file, `has version ${JSON.stringify(raw.version)}, and this portcullis reads version ${STATE_FILE_VERSION}`);
  }
  const globalResult = GlobalSchema.safeParse(raw.global);
  if (!globalResult.success) throw new StateFileError(file, `is invalid: ${describeIssues('global', globalResult.error)}`);
  if (!isPlainObject(raw.accounts)) throw new StateFileError(file, 'is invalid: accounts must be an object');
  if (!isPlainObject(raw.sessions)) throw new StateFileError(file, 'is invalid: sessions must be an object');

  const accounts: AccountState[] = [];
  for (const [key, value] of Object.entries(raw.accounts)) {
    const where = `accounts[${JSON.stringify(key)}]`;
    const r = AccountSchema.safeParse(value);
    if (!r.success) throw new StateFileError(file, `is invalid: ${describeIssues(where, r.error)}`);
    if (r.data.account !== key) throw new StateFileError(file, `is invalid: ${where} holds account ${JSON.stringify(r.data.account)}`);
    accounts.push(r.data);
  }
  const sessions: SessionRecord[] = [];
  for (const [key, value] of Object.entries(raw.sessions)) {
    const where = `sessions[${JSON.stringify(key)}]`;
    const r = SessionSchema.safeParse(value);
    if (!r.success) throw new StateFileError(file, `is invalid: ${describeIssues(where, r.error)}`);
    if (r.data.id !== key) throw new StateFileError(file, `is invalid: ${where} holds session ${JSON.stringify(r.data.id)}`);
    sessions.push(r.data);
  }
  return { global: globalResult.data, accounts, sessions };
}

/** The state document for a snapshot, as written to disk. */
export function serializeStateDocument(snapshot: CacheSnapshot): string {
  // Object.fromEntries defines own properties, so "__proto__" keys are kept (see parseStateDocument).
  const doc = {
    version: STATE_FILE_VERSION,
    global: snapshot.global,
    accounts: Object.fromEntries(snapshot.accounts.map((a) => [a.account, a])),
    sessions: Object.fromEntries(snapshot.sessions.map((s) => [s.id, s])),
  };
  return `${JSON.stringify(doc)}\n`;
}

let tempCounter = 0;

/** Temp files are `<name>.<pid>.<n>.tmp` next to the target; this matches the leftovers of any process. */
function tempFilePattern(file: string): RegExp {
  const escaped = basename(file).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`^${escaped}\\.\\d+\\.\\d+\\.tmp$`);
}

async function syncDirectory(dir: string): Promise<void> {
  // Windows cannot open a directory for fsync; NTFS journals the rename itself.
  if (process.platform === 'win32') return;
  const handle = await openFile(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Replaces `file` with `data` so that a crash at any point leaves the old or the new content:
 * write a temp file in the same directory (rename is only atomic within one file system),
 * fsync it so the rename cannot land before the data, rename, then fsync the directory so the
 * rename itself survives a power loss. The file is created with mode 0600.
 */
export async function writeFileAtomic(file: string, data: string): Promise<void> {
  tempCounter += 1;
  const temp = `${file}.${process.pid}.${tempCounter}.tmp`;
  try {
    const handle = await openFile(temp, 'wx', 0o600);
    try {
      await handle.writeFile(data, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await syncDirectory(dirname(file));
}

interface PendingOp {
  run(batch: StagedBatch): unknown;
  resolve(value: unknown): void;
  reject(reason: unknown): void;
}

interface Waiter {
  resolve(): void;
  reject(reason: unknown): void;
}

type Outcome = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: unknown };

function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String(err.code) : undefined;
}

/**
 * StateStore over a local JSON file. Writes go through one queue: requests that arrive while a
 * write is in flight are checked in order against the cache plus the batch before them and then
 * persisted together in the next write. A write resolves, and its change events fire, only once
 * the file and its directory entry are fsynced; the cache changes at the same moment, so it never
 * shows anything the disk does not hold (except last-seen touches, which are applied at once).
 */
export class FileStore extends CachedReads implements StateStore {
  /** Absolute path of the state file. */
  readonly file: string;
  readonly #events = new EventEmitter<{ change: [StoreChange] }>();
  readonly #now: () => Date;
  readonly #writeFile: (file: string, data: string) => Promise<void>;
  #opening: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #writable = false;
  #queue: PendingOp[] = [];
  #touchWaiters: Waiter[] = [];
  #draining: Promise<void> | null = null;
  #writes = 0;

  /** A store for `file` (resolved against the working directory); call open() before use. */
  constructor(file: string, options: FileStoreOptions = {}) {
    super();
    this.file = resolve(file);
    this.#now = options.now ?? (() => new Date());
    this.#writeFile = options.writeFile ?? writeFileAtomic;
  }

  /** Completed durable writes (each may carry many coalesced changes). */
  get writeCount(): number {
    return this.#writes;
  }

  /** Creates the directory (0700) if missing, removes crash leftovers and loads the file. Idempotent. */
  open(): Promise<void> {
    if (this.#closing !== null) return Promise.reject(new StoreUnavailableError('state store is closed'));
    this.#opening ??= this.#load().catch((err: unknown) => {
      this.#opening = null; // let the operator fix the file and retry
      throw err;
    });
    return this.#opening;
  }

  /** Waits for queued and in-flight writes, then refuses new ones. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Always 0: this process is the only writer, so its cache is the state. */
  stalenessMs(): number {
    return 0;
  }

  /** Adds a session; a ConflictError if the id is taken (overwriting could resurrect a revoked session). */
  createSession(session: SessionRecord): Promise<void> {
    // Checked with the loader's schema: a record the loader would reject must never reach the disk.
    const checked = SessionSchema.safeParse(toSessionRecord(session));
    if (!checked.success) return Promise.reject(new TypeError(`invalid session record: ${describeIssues('session', checked.error)}`));
    const record = checked.data;
    return this.#enqueue((batch) => {
      if (batch.getSession(record.id) !== undefined) throw new ConflictError(`session ${record.id} already exists`);
      batch.stage({ type: 'session', at: this.#at(), session: record });
    });
  }

  /** Revoking an already revoked session returns it unchanged (its first revocation stands). */
  revokeSession(account: string, id: string, by: string): Promise<SessionRecord | null> {
    return this.#enqueue((batch) => {
      const current = batch.getSession(id);
      if (current === undefined || current.account !== account) return null;
      const next = revokeTransition(current, by, this.#at());
      if (next === null) return current;
      batch.stage({ type: 'session', at: next.revokedAt ?? this.#at(), session: next });
      return next;
    });
  }

  /** Expired and already revoked sessions are left as they are; one change event per revoked session. */
  revokeAllSessions(account: string, by: string, except?: string): Promise<SessionRecord[]> {
    return this.#enqueue((batch) => {
      const now = this.#now();
      const at = now.toISOString();
      const revoked: SessionRecord[] = [];
      for (const s of batch.listSessions(account)) {
        if (s.id === except || !isLiveSession(s, now)) continue;
        const next = revokeTransition(s, by, at);
        if (next === null) continue;
        batch.stage({ type: 'session', at, session: next });
        revoked.push(next);
      }
      batch.stage({ type: 'account', at, state: signOutTransition(batch.getAccount(account), at, except) });
      return revoked;
    });
  }

  setLockdown(account: string, enabled: boolean, by: string): Promise<AccountState> {
    return this.#enqueue((batch) => {
      const current = batch.getAccount(account);
      const next = lockdownTransition(current, enabled, by, this.#at());
      if (next === null) return current;
      batch.stage({ type: 'account', at: next.lockdownChangedAt ?? this.#at(), state: next });
      return next;
    });
  }

  setDeveloperMode(account: string, enabled: boolean, by: string): Promise<AccountState> {
    return this.#enqueue((batch) => {
      const current = batch.getAccount(account);
      const next = developerModeTransition(current, enabled, by, this.#at());
      if (next === null) return current;
      batch.stage({ type: 'account', at: next.developerModeChangedAt ?? this.#at(), state: next });
      return next;
    });
  }

  setGlobalLockdown(enabled: boolean, by: string): Promise<GlobalState> {
    return this.#enqueue((batch) => {
      const current = batch.getGlobal();
      const next = globalLockdownTransition(current, enabled, by, this.#at());
      if (next === null) return current;
      batch.stage({ type: 'global', at: next.changedAt ?? this.#at(), state: next });
      return next;
    });
  }

  /**
   * Applies last-seen facts to the cache at once and resolves when they are on disk. Emits no
   * change events: touches arrive for every active session all the time and would flood replicas,
   * and nothing a replica decides depends on them. Unknown sessions are ignored.
   */
  touchSessions(touches: ReadonlyMap<string, SessionTouch>): Promise<void> {
    if (!this.#writable) return Promise.reject(this.#notWritable());
    let touched = false;
    for (const [id, touch] of touches) if (this.cache.touch(id, touch)) touched = true;
    if (!touched) return Promise.resolve();
    return new Promise<void>((resolveTouch, reject) => {
      this.#touchWaiters.push({ resolve: resolveTouch, reject });
      this.#kick();
    });
  }

  /** Emits no change events: pruned sessions are already dead, and each replica prunes its own cache. */
  pruneSessions(olderThan: Date): Promise<number> {
    return this.#enqueue((batch) => {
      let pruned = 0;
      for (const s of batch.allSessions()) {
        if (!isPrunableSession(s, olderThan)) continue;
        batch.remove(s.id);
        pruned += 1;
      }
      return pruned;
    });
  }

  on(event: 'change', listener: (change: StoreChange) => void): this {
    this.#events.on(event, listener);
    return this;
  }

  off(event: 'change', listener: (change: StoreChange) => void): this {
    this.#events.off(event, listener);
    return this;
  }

  async #load(): Promise<void> {
    const dir = dirname(this.file);
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      const leftovers = tempFilePattern(this.file);
      for (const name of await readdir(dir)) {
        if (leftovers.test(name)) await unlink(resolve(dir, name)).catch(() => undefined);
      }
    } catch (err) {
      throw new StoreUnavailableError(`cannot prepare state directory ${dir}: ${(err as Error).message}`, { cause: err });
    }
    let json: string | null = null;
    try {
      json = await readFile(this.file, 'utf8');
    } catch (err) {
      if (errorCode(err) !== 'ENOENT') {
        throw new StoreUnavailableError(`cannot read state file ${this.file}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (json === null) {
      // Write the empty state now so an unwritable location fails at startup, not at the first revocation.
      try {
        await this.#writeFile(this.file, serializeStateDocument(this.cache.snapshot()));
      } catch (err) {
        throw new StoreUnavailableError(`cannot create state file ${this.file}: ${(err as Error).message}`, { cause: err });
      }
      this.#writes += 1;
    } else {
      this.cache.load(parseStateDocument(json, this.file));
    }
    this.#writable = this.#closing === null;
  }

  async #shutdown(): Promise<void> {
    await this.#opening?.catch(() => undefined);
    this.#writable = false;
    while (this.#draining !== null) await this.#draining;
  }

  #notWritable(): StoreUnavailableError {
    return new StoreUnavailableError(this.#closing !== null ? 'state store is closed' : 'state store is not open');
  }

  #at(): string {
    return this.#now().toISOString();
  }

  #enqueue<T>(run: (batch: StagedBatch) => T): Promise<T> {
    if (!this.#writable) return Promise.reject(this.#notWritable());
    return new Promise<T>((resolveOp, reject) => {
      this.#queue.push({ run, resolve: resolveOp as (value: unknown) => void, reject });
      this.#kick();
    });
  }

  #kick(): void {
    this.#draining ??= this.#drain();
  }

  /** The single writer. Never rejects: every failure is delivered to the callers it concerns. */
  async #drain(): Promise<void> {
    // Yield once so that requests made in the same tick share the first write.
    await Promise.resolve();
    while (this.#queue.length > 0 || this.#touchWaiters.length > 0) {
      const ops = this.#queue.splice(0);
      const touchWaiters = this.#touchWaiters.splice(0);
      const batch = new StagedBatch(this.cache);
      const outcomes: Outcome[] = ops.map((op) => {
        try {
          return { ok: true, value: op.run(batch) };
        } catch (error) {
          return { ok: false, error };
        }
      });
      if (!batch.isEmpty || touchWaiters.length > 0) {
        try {
          await this.#writeFile(this.file, serializeStateDocument(batch.snapshot()));
          this.#writes += 1;
        } catch (err) {
          // Nothing of this batch reached the cache, so "failed" really means "nothing changed".
          const failure = new StoreUnavailableError(`cannot write state file ${this.file}: ${(err as Error).message}`, {
            cause: err,
          });
          for (const op of ops) op.reject(failure);
          for (const waiter of touchWaiters) waiter.reject(failure);
          continue;
        }
      }
      this.#announce(batch.commit());
      ops.forEach((op, i) => {
        const outcome = outcomes[i];
        if (outcome === undefined || outcome.ok) op.resolve(outcome?.value);
        else op.reject(outcome.error);
      });
      for (const waiter of touchWaiters) waiter.resolve();
    }
    this.#draining = null;
  }

  #announce(changes: readonly StoreChange[]): void {
    for (const change of changes) {
      try {
        this.#events.emit('change', change);
      } catch (err) {
        // A throwing listener is a bug elsewhere: surface it as uncaught, but keep the writer consistent.
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }
}
