/**
 * The shared state backend for many replicas (SPEC §7): Redis holds the truth, every replica
 * holds all of it in a MemoryCache, and reads never leave the process.
 *
 * Layout under a key prefix (default `portcullis:`):
 *   seq                        INCR counter: every change gets the next number (its version)
 *   epoch, base                which history this Redis holds (see "lost data" below)
 *   global                     the global switch, as an envelope `{"v":VERSION,"c":CHANGE}`
 *   accounts, sessions         hashes of envelopes by account name / session id
 *   account-sessions:ACCOUNT   set of the account's session ids (for an atomic "revoke all")
 *   lastseen                   hash of last-seen facts by session id (touches: no version, no event)
 *   changes                    stream of envelopes, one entry per version, capped (MAXLEN ~)
 *
 * Propagation is a Redis stream rather than pub/sub or keyspace notifications: pub/sub and
 * notifications are fire-and-forget, so a replica whose connection drops for a second misses
 * the revocations sent in that second and cannot even tell. Stream entries carry consecutive
 * versions: each replica XREADs (BLOCK) from its last entry on a dedicated connection, resumes
 * from there after a reconnect, and when the next version is not the one it expects (entries
 * trimmed past it, Redis restarted) it reloads everything before trusting its cache again.
 *
 * Writes are optimistic: the change is computed from the cache with the shared transition rules,
 * then one Lua script checks that every record the decision read still has the version the
 * cache saw (and, for "revoke all", that Redis knows no session of the account the cache does
 * not), and only then writes, INCRs and XADDs, atomically. On a mismatch the replica reloads
 * those records and decides again. So the lockdown/developer-mode conflict check holds across
 * replicas: two replicas enabling the two flags at once cannot both succeed.
 *
 * Lost data: Redis without persistence forgets everything on restart, and a failover can lose
 * the last writes. Forgetting a lockdown would fail open, so a replica that finds Redis knowing
 * less than its cache (epoch gone or new, or an older sequence) writes back what Redis lacks.
 * The first replica to notice also moves the sequence far ahead, so that old versions written
 * back later never beat a change made since (see RESTORE_SCRIPT).
 */
import { createHash, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createClient } from 'redis';
import { z } from 'zod';
import { AccountSchema, GlobalSchema, isoTime, SessionSchema, text } from './schemas.js';
import { CachedReads } from './cached-reads.js';
import {
  developerModeTransition,
  globalLockdownTransition,
  isLiveSession,
  isPrunableSession,
  lockdownTransition,
  revokeTransition,
  signOutTransition,
  toSessionRecord,
} from './memory-cache.js';
import { ConflictError, StoreUnavailableError } from './types.js';
import type {
  AccountState,
  GlobalState,
  SessionRecord,
  SessionTouch,
  StateStore,
  StoreChange,
} from './types.js';

/** Whether the replica's cache is being kept in sync with Redis. */
export type StoreStatus = 'up' | 'down';

/** Options; all but `url` have defaults suited to production. */
export interface RedisStoreOptions {
  /** `redis://` or `rediss://` URL (credentials, db number; `?prefix=` sets the key prefix). Never logged. */
  readonly url: string;
  /** Key prefix; overrides the URL's `prefix` (default `portcullis:`). */
  readonly prefix?: string;
  /** Clock for change timestamps (default: the system clock). */
  readonly now?: () => Date;
  /** How long one XREAD blocks, ms: the heartbeat of a quiet replica (default 1000). */
  readonly heartbeatMs?: number;
  /** Approximate number of changes the stream keeps for replicas that reconnect (default 10000). */
  readonly streamMaxLen?: number;
  /** How long open() tries to connect and load, ms (default 10000). */
  readonly connectTimeoutMs?: number;
  /** How long a write waits for the replica to be back in sync before failing, ms (default 2000). */
  readonly syncWaitMs?: number;
  /** Longest pause between reconnection attempts, ms (default 2000). */
  readonly maxBackoffMs?: number;
}

const DEFAULT_PREFIX = 'portcullis:';
/** How far a restore moves the sequence: old versions can never beat a change made afterwards. */
const RESTORE_JUMP = 1e12;
const MAX_WRITE_ATTEMPTS = 10;
const TOUCH_CHUNK = 300;

// ---------------------------------------------------------------------------------------------
// Lua. Envelopes are `{"v":N,"c":...}` with v first, so scripts read versions without cjson.

const VERSION_OF = `
local function version(env)
  if not env then return 0 end
  return tonumber(string.match(env, '^{"v":(%d+),')) or 0
end
local function getrec(kind, field)
  if kind == 'g' then return redis.call('GET', KEYS[3]) end
  if kind == 'a' then return redis.call('HGET', KEYS[4], field) end
  return redis.call('HGET', KEYS[5], field)
end
`;

/**
 * KEYS: seq, changes, global, accounts, sessions, account-sessions:* (referenced by index).
 * ARGV: maxlen, nreads, (kind, field, expected version)*, nlisted, (key index, n, id*)*,
 *       nwrites, (kind, field, change JSON, key index or 0)*.
 * Returns {1, first version} (0 when nothing was written) or {0} when the cache was behind.
 */
const COMMIT_SCRIPT = `${VERSION_OF}
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  if version(getrec(ARGV[i], ARGV[i + 1])) ~= tonumber(ARGV[i + 2]) then return {0} end
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local key = KEYS[tonumber(ARGV[i])]
  local count = tonumber(ARGV[i + 1])
  local known = {}
  for j = 1, count do known[ARGV[i + 1 + j]] = true end
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    if not known[id] then return {0} end
  end
  i = i + 2 + count
end
n = tonumber(ARGV[i]); i = i + 1
local first = 0
for _ = 1, n do
  local kind, field, json, idx = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  i = i + 4
  local v = redis.call('INCR', KEYS[1])
  if first == 0 then first = v end
  local env = '{"v":' .. string.format('%d', v) .. ',"c":' .. json .. '}'
  if kind == 'g' then redis.call('SET', KEYS[3], env)
  elseif kind == 'a' then redis.call('HSET', KEYS[4], field, env)
  else
    redis.call('HSET', KEYS[5], field, env)
    if idx > 0 then redis.call('SADD', KEYS[idx], field) end
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'env', env)
end
return {1, first}
`;

/**
 * KEYS: seq, changes, global, accounts, sessions, account-sessions:* to expand.
 * ARGV: (kind, field)*. Returns (kind, field, envelope or nil)* for those and for every
 * session of the expanded accounts.
 */
const READ_SCRIPT = `${VERSION_OF}
local out = {}
for i = 1, #ARGV, 2 do
  out[#out + 1] = ARGV[i]; out[#out + 1] = ARGV[i + 1]; out[#out + 1] = getrec(ARGV[i], ARGV[i + 1])
end
for k = 6, #KEYS do
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[k])) do
    out[#out + 1] = 's'; out[#out + 1] = id; out[#out + 1] = redis.call('HGET', KEYS[5], id)
  end
end
return out
`;

/**
 * KEYS: seq, changes, global, accounts, sessions, epoch, base, account-sessions:*.
 * ARGV: maxlen, epoch this replica knew, new epoch, jump, highest version known, nrec,
 *       (kind, field, version, envelope, key index or 0)*.
 * Called when Redis knows less than this replica. The first replica to notice (epoch gone, or
 * the same epoch with an older sequence) writes back what Redis lacks or holds older and moves
 * the sequence ahead by `jump`; `base` then marks everything at or below it as old history, so
 * replicas that arrive later fill in only what is missing or old, never over a newer change.
 * Returns the number of records written.
 */
const RESTORE_SCRIPT = `${VERSION_OF}
local current = redis.call('GET', KEYS[6])
local base = tonumber(redis.call('GET', KEYS[7]) or '0')
local first = false
if not current then
  redis.call('SET', KEYS[6], ARGV[3])
  first = true
elseif current == ARGV[2] then
  first = true
end
local written = 0
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  local kind, field, v, env, idx = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3], tonumber(ARGV[i + 4])
  i = i + 5
  local cv = version(getrec(kind, field))
  if cv == 0 or (cv < v and (first or cv < base)) then
    if kind == 'g' then redis.call('SET', KEYS[3], env)
    elseif kind == 'a' then redis.call('HSET', KEYS[4], field, env)
    else
      redis.call('HSET', KEYS[5], field, env)
      if idx > 0 then redis.call('SADD', KEYS[idx], field) end
    end
    written = written + 1
  end
end
local seq = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), tonumber(ARGV[5]))
if first then
  seq = seq + tonumber(ARGV[4])
  redis.call('SET', KEYS[7], string.format('%d', seq))
end
redis.call('SET', KEYS[1], string.format('%d', seq))
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'env', '{"v":' .. string.format('%d', v) .. ',"c":{"type":"resync"}}')
return written
`;

/**
 * KEYS: lastseen, sessions. ARGV: (id, time ms, JSON)*. Keeps the newest facts of sessions that
 * still exist.
 */
const TOUCH_SCRIPT = `
local n = 0
for i = 1, #ARGV, 3 do
  local id, t = ARGV[i], tonumber(ARGV[i + 1])
  if redis.call('HEXISTS', KEYS[2], id) == 1 then
    local cur = redis.call('HGET', KEYS[1], id)
    local ct = cur and tonumber(string.match(cur, '^{"t":(%-?%d+),'))
    if not ct or ct < t then
      redis.call('HSET', KEYS[1], id, ARGV[i + 2])
      n = n + 1
    end
  end
end
return n
`;

/**
 * KEYS: sessions, lastseen, account-sessions:*. ARGV: (id, expected version, key index)*.
 * Deletes sessions still at the version the replica judged prunable; returns the ids gone.
 */
const PRUNE_SCRIPT = `
local out = {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  local cur = redis.call('HGET', KEYS[1], id)
  local v = cur and tonumber(string.match(cur, '^{"v":(%d+),')) or 0
  if v == 0 or v == tonumber(ARGV[i + 1]) then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('SREM', KEYS[tonumber(ARGV[i + 2])], id)
    out[#out + 1] = id
  end
end
return out
`;

interface Script {
  readonly source: string;
  readonly sha: string;
}

const script = (source: string): Script => ({ source, sha: createHash('sha1').update(source).digest('hex') });
const SCRIPTS = {
  commit: script(COMMIT_SCRIPT),
  read: script(READ_SCRIPT),
  restore: script(RESTORE_SCRIPT),
  touch: script(TOUCH_SCRIPT),
  prune: script(PRUNE_SCRIPT),
} as const;

// ---------------------------------------------------------------------------------------------
// What comes back from Redis is checked before it reaches a cache that decides on it.


const EnvelopeSchema = z.object({
  v: z.number().int().positive(),
  c: z.discriminatedUnion('type', [
    z.object({ type: z.literal('session'), at: isoTime, session: SessionSchema }),
    z.object({ type: z.literal('account'), at: isoTime, state: AccountSchema }),
    z.object({ type: z.literal('global'), at: isoTime, state: GlobalSchema }),
    // Written by a restore: every replica reloads.
    z.object({ type: z.literal('resync') }),
  ]),
});

type Envelope = { readonly v: number; readonly c: StoreChange | { readonly type: 'resync' } };

const TouchSchema = z.object({ t: z.number(), lastSeenAt: isoTime, clientIp: text, userAgent: text });

function parseEnvelope(raw: unknown): Envelope | null {
  if (typeof raw !== 'string') return null;
  try {
    const r = EnvelopeSchema.safeParse(JSON.parse(raw));
    return r.success ? (r.data as Envelope) : null;
  } catch {
    return null;
  }
}

function parseTouch(raw: unknown): SessionTouch | null {
  if (typeof raw !== 'string') return null;
  try {
    const r = TouchSchema.safeParse(JSON.parse(raw));
    return r.success ? { lastSeenAt: r.data.lastSeenAt, clientIp: r.data.clientIp, userAgent: r.data.userAgent } : null;
  } catch {
    return null;
  }
}

/** A cache key: `g`, `a:ACCOUNT` or `s:SESSION_ID` (a Map key, so `__proto__` is just a name). */
type RecordKey = string;

function keyOf(change: StoreChange): RecordKey {
  switch (change.type) {
    case 'global':
      return 'g';
    case 'account':
      return `a:${change.state.account}`;
    case 'session':
      return `s:${change.session.id}`;
  }
}

/** Pairs of a flat RESP2 array (HGETALL). */
function pairs(reply: unknown): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (!Array.isArray(reply)) return out;
  for (let i = 0; i + 1 < reply.length; i += 2) out.push([String(reply[i]), String(reply[i + 1])]);
  return out;
}

/** Stream entries `[id, [field, value, …]]` of an XRANGE/XREAD reply. */
function streamEntries(reply: unknown): Array<{ id: string; env: unknown }> {
  if (!Array.isArray(reply)) return [];
  return reply.flatMap((entry: unknown) => {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !Array.isArray(entry[1])) return [];
    const fields = entry[1] as unknown[];
    const at = fields.indexOf('env');
    return [{ id: entry[0], env: at >= 0 ? fields[at + 1] : undefined }];
  });
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Parses the URL once; the prefix is ours, the rest is node-redis's. */
function splitUrl(raw: string): { url: string; prefix: string | null; where: string } {
  const url = new URL(raw);
  const prefix = url.searchParams.get('prefix');
  url.searchParams.delete('prefix');
  // host:port only: the URL itself may carry a password.
  const where = `${url.hostname}:${url.port || '6379'}`;
  return { url: url.toString(), prefix, where };
}

function newClient(url: string, name: string, options: { maxBackoffMs: number; socketTimeoutMs?: number; pingIntervalMs?: number }) {
  return createClient({
    url,
    // RESP2: replies stay flat arrays, so no Redis field name ever becomes an object key.
    RESP: 2,
    name,
    // Fail fast while disconnected: a write must not hang until Redis is back.
    disableOfflineQueue: true,
    ...(options.pingIntervalMs !== undefined ? { pingInterval: options.pingIntervalMs } : {}),
    socket: {
      connectTimeout: 5_000,
      keepAlive: true,
      ...(options.socketTimeoutMs !== undefined ? { socketTimeout: options.socketTimeoutMs } : {}),
      // Exponential backoff with jitter, so a fleet does not reconnect (and reload) in lockstep.
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** Math.min(retries, 10), options.maxBackoffMs) + Math.floor(Math.random() * 100),
    },
  });
}

type Client = ReturnType<typeof newClient>;

/** Everything one consistent read of Redis returns. */
interface Snapshot {
  readonly epoch: string | null;
  readonly seq: number;
  readonly lastId: string;
  readonly records: ReadonlyMap<RecordKey, Envelope & { readonly c: StoreChange }>;
  readonly touches: ReadonlyMap<string, SessionTouch>;
}

interface Meta {
  readonly v: number;
  readonly at: string;
}

interface Waiter {
  resolve(): void;
  reject(err: unknown): void;
}

/**
 * StateStore over Redis for many replicas. Reads are synchronous from the local cache; writes
 * resolve once Redis holds them, with their change events already delivered locally; changes
 * from other replicas arrive through the stream. `stalenessMs()` is 0 while the feed connection
 * is live and in sync, and otherwise counts from the last moment it was.
 */
export class RedisStore extends CachedReads implements StateStore {
  readonly #events = new EventEmitter<{ change: [StoreChange]; status: [StoreStatus]; warning: [string] }>();
  readonly #url: string;
  readonly #where: string;
  readonly #prefix: string;
  readonly #now: () => Date;
  readonly #heartbeatMs: number;
  readonly #streamMaxLen: number;
  readonly #connectTimeoutMs: number;
  readonly #syncWaitMs: number;
  readonly #maxBackoffMs: number;
  /** Version and original time of every record the cache holds (and of pruned sessions). */
  readonly #meta = new Map<RecordKey, Meta>();
  readonly #pending = new Set<Promise<unknown>>();
  #client: Client | null = null;
  #reader: Client | null = null;
  #opening: Promise<void> | null = null;
  #closing: Promise<void> | null = null;
  #loop: Promise<void> | null = null;
  #writable = false;
  #inSync = false;
  #status: StoreStatus = 'down';
  #syncedAt = Number.NEGATIVE_INFINITY;
  #readSince: number | null = null;
  #epoch: string | null = null;
  #lastId = '0-0';
  #lastSeq = 0;
  #highest = 0;
  /** Another replica wrote back lost records: reload, while staying in sync otherwise. */
  #reloadWanted = false;
  #syncWaiters: Waiter[] = [];

  /** A store for `options.url`; call open() before use. */
  constructor(options: RedisStoreOptions) {
    super();
    const parts = splitUrl(options.url);
    this.#url = parts.url;
    this.#where = parts.where;
    this.#prefix = options.prefix ?? parts.prefix ?? DEFAULT_PREFIX;
    this.#now = options.now ?? (() => new Date());
    this.#heartbeatMs = options.heartbeatMs ?? 1_000;
    this.#streamMaxLen = options.streamMaxLen ?? 10_000;
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#syncWaitMs = options.syncWaitMs ?? 2_000;
    this.#maxBackoffMs = options.maxBackoffMs ?? 2_000;
  }

  /** The key prefix in use. */
  get prefix(): string {
    return this.#prefix;
  }

  /** Connects, loads everything and starts following the change stream. Idempotent. */
  open(): Promise<void> {
    if (this.#closing !== null) return Promise.reject(new StoreUnavailableError('state store is closed'));
    this.#opening ??= this.#open().catch((err: unknown) => {
      this.#opening = null;
      throw err;
    });
    return this.#opening;
  }

  /** Waits for writes in flight, then disconnects. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /**
   * 0 while the feed connection is in sync and its blocked read is within its heartbeat (Redis
   * would have pushed any change at once); otherwise ms since the last moment it was in sync.
   */
  stalenessMs(): number {
    const t = performance.now();
    if (this.#inSync && (this.#readSince === null || t - this.#readSince <= this.#heartbeatMs * 2)) return 0;
    return Math.max(0, t - this.#syncedAt);
  }

  /** Whether the cache is being kept in sync (the `portcullis_store_up` gauge). */
  isUp(): boolean {
    return this.#status === 'up';
  }

  /** Adds a session; a ConflictError if the id is taken on any replica. */
  createSession(session: SessionRecord): Promise<void> {
    const checked = SessionSchema.safeParse(toSessionRecord(session));
    if (!checked.success) {
      const issue = checked.error.issues[0];
      return Promise.reject(new TypeError(`invalid session record: session.${issue?.path.join('.') ?? ''}: ${issue?.message ?? 'invalid'}`));
    }
    const record = toSessionRecord(checked.data);
    return this.#write(
      () => ({ reads: [`s:${record.id}`] }),
      () => {
        if (this.cache.getSession(record.id) !== undefined) throw new ConflictError(`session ${record.id} already exists`);
        return { result: undefined, changes: [{ type: 'session', at: this.#at(), session: record }] };
      },
    );
  }

  /** Revoking an already revoked session returns it unchanged (its first revocation stands). */
  revokeSession(account: string, id: string, by: string): Promise<SessionRecord | null> {
    return this.#write(
      () => ({ reads: [`s:${id}`] }),
      () => {
        const current = this.cache.getSession(id);
        if (current === undefined || current.account !== account) return { result: null, changes: [] };
        const next = revokeTransition(current, by, this.#at());
        if (next === null) return { result: current, changes: [] };
        return { result: next, changes: [{ type: 'session', at: next.revokedAt ?? this.#at(), session: next }] };
      },
    );
  }

  /** Checked against every session of the account Redis knows, so none created elsewhere is missed. */
  revokeAllSessions(account: string, by: string, except?: string): Promise<SessionRecord[]> {
    return this.#write(
      () => ({ reads: [`a:${account}`, ...[...this.cache.sessionIds(account)].map((id) => `s:${id}`)], listed: [account] }),
      () => {
        const now = this.#now();
        const at = now.toISOString();
        const revoked: SessionRecord[] = [];
        const changes: StoreChange[] = [];
        for (const s of this.cache.listSessions(account)) {
          if (s.id === except || !isLiveSession(s, now)) continue;
          const next = revokeTransition(s, by, at);
          if (next === null) continue;
          revoked.push(next);
          changes.push({ type: 'session', at, session: next });
        }
        changes.push({ type: 'account', at, state: signOutTransition(this.cache.getAccount(account), at, except) });
        return { result: revoked, changes };
      },
    );
  }

  setLockdown(account: string, enabled: boolean, by: string): Promise<AccountState> {
    return this.#write(
      () => ({ reads: [`a:${account}`] }),
      () => {
        const current = this.cache.getAccount(account);
        const next = lockdownTransition(current, enabled, by, this.#at());
        if (next === null) return { result: current, changes: [] };
        return { result: next, changes: [{ type: 'account', at: next.lockdownChangedAt ?? this.#at(), state: next }] };
      },
    );
  }

  setDeveloperMode(account: string, enabled: boolean, by: string): Promise<AccountState> {
    return this.#write(
      () => ({ reads: [`a:${account}`] }),
      () => {
        const current = this.cache.getAccount(account);
        const next = developerModeTransition(current, enabled, by, this.#at());
        if (next === null) return { result: current, changes: [] };
        return { result: next, changes: [{ type: 'account', at: next.developerModeChangedAt ?? this.#at(), state: next }] };
      },
    );
  }

  setGlobalLockdown(enabled: boolean, by: string): Promise<GlobalState> {
    return this.#write(
      () => ({ reads: ['g'] }),
      () => {
        const current = this.cache.getGlobal();
        const next = globalLockdownTransition(current, enabled, by, this.#at());
        if (next === null) return { result: current, changes: [] };
        return { result: next, changes: [{ type: 'global', at: next.changedAt ?? this.#at(), state: next }] };
      },
    );
  }

  /**
   * Applies last-seen facts to this cache at once and persists them in pipelined batches. No
   * change events and no stream entries: touches arrive for every active session all the time,
   * and nothing another replica decides depends on them (it reads them on its next reload).
   */
  touchSessions(touches: ReadonlyMap<string, SessionTouch>): Promise<void> {
    if (!this.#writable) return Promise.reject(this.#notWritable());
    const args: string[] = [];
    for (const [id, touch] of touches) {
      if (!this.cache.touch(id, touch)) continue;
      const t = Date.parse(touch.lastSeenAt);
      if (Number.isNaN(t)) continue;
      args.push(id, String(t), JSON.stringify({ t, lastSeenAt: touch.lastSeenAt, clientIp: touch.clientIp, userAgent: touch.userAgent }));
    }
    if (args.length === 0) return Promise.resolve();
    const keys = [this.#key('lastseen'), this.#key('sessions')];
    const chunks: Promise<unknown>[] = [];
    for (let i = 0; i < args.length; i += TOUCH_CHUNK * 3) chunks.push(this.#eval(SCRIPTS.touch, keys, args.slice(i, i + TOUCH_CHUNK * 3)));
    return this.#track(Promise.all(chunks).then(() => undefined, (err: unknown) => Promise.reject(this.#unavailable(err))));
  }

  /**
   * Drops dead sessions from Redis and this cache. No change events: pruned sessions are already
   * dead; other replicas drop them when they prune or reload.
   */
  pruneSessions(olderThan: Date): Promise<number> {
    if (!this.#writable) return Promise.reject(this.#notWritable());
    const candidates = this.cache.snapshot().sessions.filter((s) => isPrunableSession(s, olderThan));
    if (candidates.length === 0) return Promise.resolve(0);
    const keys = [this.#key('sessions'), this.#key('lastseen')];
    const indexOf = new Map<string, number>();
    const args: string[] = [];
    for (const s of candidates) {
      let idx = indexOf.get(s.account);
      if (idx === undefined) {
        keys.push(this.#accountSessionsKey(s.account));
        idx = keys.length;
        indexOf.set(s.account, idx);
      }
      args.push(s.id, String(this.#meta.get(`s:${s.id}`)?.v ?? 0), String(idx));
    }
    return this.#track(
      this.#eval(SCRIPTS.prune, keys, args).then(
        (reply) => {
          let pruned = 0;
          for (const id of Array.isArray(reply) ? reply : []) if (this.cache.remove(String(id))) pruned += 1;
          return pruned;
        },
        (err: unknown) => Promise.reject(this.#unavailable(err)),
      ),
    );
  }

  on(event: 'change', listener: (change: StoreChange) => void): this;
  /** `down` when the replica stops being sure its cache is current, `up` once it reloaded. */
  on(event: 'status', listener: (status: StoreStatus) => void): this;
  /** Things an operator should know about, e.g. a restore after Redis lost its data. */
  on(event: 'warning', listener: (message: string) => void): this;
  on(event: 'change' | 'status' | 'warning', listener: (arg: never) => void): this {
    this.#events.on(event, listener as (arg: unknown) => void);
    return this;
  }

  off(event: 'change', listener: (change: StoreChange) => void): this;
  off(event: 'status', listener: (status: StoreStatus) => void): this;
  off(event: 'warning', listener: (message: string) => void): this;
  off(event: 'change' | 'status' | 'warning', listener: (arg: never) => void): this {
    this.#events.off(event, listener as (arg: unknown) => void);
    return this;
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  async #open(): Promise<void> {
    const client = newClient(this.#url, 'portcullis', { maxBackoffMs: this.#maxBackoffMs, pingIntervalMs: 1_000, socketTimeoutMs: 10_000 });
    // The blocked XREAD answers at least every heartbeat: silence beyond that is a dead link.
    const reader = newClient(this.#url, 'portcullis-feed', { maxBackoffMs: this.#maxBackoffMs, socketTimeoutMs: this.#heartbeatMs + 4_000 });
    // Errors surface as rejected commands and status events; node-redis reconnects by itself.
    client.on('error', () => undefined);
    reader.on('error', () => undefined);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.#connectTimeoutMs} ms`)), this.#connectTimeoutMs);
    });
    try {
      await Promise.race([
        (async () => {
          await Promise.all([client.connect(), reader.connect()]);
          this.#client = client;
          this.#reader = reader;
          await this.#resync();
        })(),
        timeout,
      ]);
    } catch (err) {
      this.#client = null;
      this.#reader = null;
      client.destroy();
      reader.destroy();
      throw new StoreUnavailableError(`cannot load state from the redis store at ${this.#where}: ${errorMessage(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
    if (this.#closing !== null) return;
    this.#writable = true;
    this.#markUp();
    this.#loop = this.#follow();
  }

  async #shutdown(): Promise<void> {
    await this.#opening?.catch(() => undefined);
    this.#writable = false;
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
    this.#inSync = false;
    for (const w of this.#syncWaiters.splice(0)) w.reject(new StoreUnavailableError('state store is closed'));
    // Destroying the feed connection ends its blocked XREAD, and with it the loop.
    this.#reader?.destroy();
    await this.#loop;
    this.#client?.destroy();
  }

  #notWritable(): StoreUnavailableError {
    return new StoreUnavailableError(this.#closing !== null ? 'state store is closed' : 'state store is not open');
  }

  #unavailable(err: unknown): Error {
    if (err instanceof ConflictError || err instanceof StoreUnavailableError || err instanceof TypeError) return err;
    return new StoreUnavailableError(`redis state store: ${errorMessage(err)}`, { cause: err });
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    const done = (): void => {
      this.#pending.delete(p);
    };
    p.then(done, done);
    return p;
  }

  #key(name: string): string {
    return this.#prefix + name;
  }

  #accountSessionsKey(account: string): string {
    return `${this.#prefix}account-sessions:${account}`;
  }

  #baseKeys(): string[] {
    return ['seq', 'changes', 'global', 'accounts', 'sessions'].map((k) => this.#key(k));
  }

  #at(): string {
    return this.#now().toISOString();
  }

  /** EVALSHA, falling back to EVAL once after a Redis restart emptied the script cache. */
  async #eval(s: Script, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    const client = this.#client;
    if (client === null) throw new StoreUnavailableError('state store is not connected');
    const tail = [String(keys.length), ...keys, ...args];
    try {
      return await client.sendCommand(['EVALSHA', s.sha, ...tail]);
    } catch (err) {
      if (!errorMessage(err).startsWith('NOSCRIPT')) throw err;
      return client.sendCommand(['EVAL', s.source, ...tail]);
    }
  }

  // -------------------------------------------------------------------------------------------
  // Writes

  /**
   * One optimistic write: decide from the cache, then commit only if every record read is still
   * at the version the cache saw; otherwise reload those records and decide again. Decisions that
   * change nothing, conflicts included, are checked the same way, so every answer is one Redis
   * agreed with at some instant.
   */
  #write<T>(
    reads: () => { reads: readonly RecordKey[]; listed?: readonly string[] },
    decide: () => { result: T; changes: readonly StoreChange[] },
  ): Promise<T> {
    if (!this.#writable) return Promise.reject(this.#notWritable());
    return this.#track(
      (async () => {
        for (let attempt = 0; attempt < MAX_WRITE_ATTEMPTS; attempt++) {
          await this.#whenInSync();
          const { reads: keys, listed = [] } = reads();
          let outcome: { ok: true; result: T; changes: readonly StoreChange[] } | { ok: false; error: ConflictError };
          try {
            outcome = { ok: true, ...decide() };
          } catch (err) {
            if (!(err instanceof ConflictError)) throw err;
            outcome = { ok: false, error: err };
          }
          const expected = keys.map((k) => [k, this.#knownVersion(k)] as const);
          const changes = outcome.ok ? outcome.changes : [];
          const first = await this.#commit(expected, listed, changes).catch((err: unknown) => Promise.reject(this.#unavailable(err)));
          if (first !== null) {
            changes.forEach((change, i) => this.#apply(keyOf(change), first + i, change));
            if (!outcome.ok) throw outcome.error;
            return outcome.result;
          }
          await this.#refresh(keys, listed);
        }
        throw new StoreUnavailableError('the state kept changing under this write; nothing was changed, try again');
      })(),
    );
  }

  /** Runs the commit script; the first new version, or null when the cache was behind. */
  async #commit(expected: ReadonlyArray<readonly [RecordKey, number]>, listed: readonly string[], changes: readonly StoreChange[]): Promise<number | null> {
    const keys = this.#baseKeys();
    const indexOf = (account: string): number => {
      const key = this.#accountSessionsKey(account);
      const at = keys.indexOf(key, 5);
      if (at >= 0) return at + 1;
      keys.push(key);
      return keys.length;
    };
    const args: string[] = [String(this.#streamMaxLen), String(expected.length)];
    for (const [k, v] of expected) args.push(k.slice(0, 1), k.slice(2), String(v));
    args.push(String(listed.length));
    for (const account of listed) {
      const ids = [...this.cache.sessionIds(account)];
      args.push(String(indexOf(account)), String(ids.length), ...ids);
    }
    args.push(String(changes.length));
    for (const change of changes) {
      const k = keyOf(change);
      const idx = change.type === 'session' ? indexOf(change.session.account) : 0;
      args.push(k.slice(0, 1), k.slice(2), JSON.stringify(change), String(idx));
    }
    const reply = await this.#eval(SCRIPTS.commit, keys, args);
    if (!Array.isArray(reply) || Number(reply[0]) !== 1) return null;
    return Number(reply[1]);
  }

  /**
   * Brings the given records (and every session of the listed accounts) up to what Redis holds.
   * Redis holding less than the cache means it lost data: reload (and restore) before any write.
   */
  async #refresh(keys: readonly RecordKey[], listed: readonly string[]): Promise<void> {
    const args: string[] = [];
    for (const k of keys) args.push(k.slice(0, 1), k.slice(2));
    const reply = await this.#eval(SCRIPTS.read, [...this.#baseKeys(), ...listed.map((a) => this.#accountSessionsKey(a))], args).catch(
      (err: unknown) => Promise.reject(this.#unavailable(err)),
    );
    const flat = Array.isArray(reply) ? reply : [];
    for (let i = 0; i + 2 < flat.length; i += 3) {
      const key: RecordKey = flat[i] === 'g' ? 'g' : `${String(flat[i])}:${String(flat[i + 1])}`;
      const raw = flat[i + 2] ?? null;
      const known = this.#knownVersion(key);
      if (raw === null) {
        if (known === 0) continue;
        const session = key.startsWith('s:') ? this.cache.getSession(key.slice(2)) : undefined;
        // Pruned by another replica: dead sessions only.
        if (session !== undefined && !isLiveSession(session, this.#now())) {
          this.cache.remove(session.id);
          continue;
        }
        throw this.#lost(`redis no longer holds ${key.startsWith('s:') ? 'a session' : 'account state'} this replica knows`);
      }
      const env = parseEnvelope(raw);
      if (env === null || env.c.type === 'resync') throw this.#lost('redis holds a record this replica cannot read');
      if (env.v < known) throw this.#lost('redis holds an older version of a record than this replica');
      this.#apply(key, env.v, env.c);
    }
  }

  /** Marks the cache out of sync (the feed loop reloads it); returns the error for the write. */
  #lost(why: string): StoreUnavailableError {
    this.#markDown(false);
    return new StoreUnavailableError(`${why}; reloading before any write`);
  }

  #knownVersion(key: RecordKey): number {
    if (key.startsWith('s:') && this.cache.getSession(key.slice(2)) === undefined) return 0;
    return this.#meta.get(key)?.v ?? 0;
  }

  /**
   * Applies a change if it is newer than what the cache holds (`adopt`: if it differs at all, for
   * a reload after Redis lost data); emits it then, and only then.
   */
  #apply(key: RecordKey, v: number, change: StoreChange, adopt = false): boolean {
    const known = this.#meta.get(key)?.v ?? 0;
    this.#highest = Math.max(this.#highest, v);
    if (adopt ? v === known : v <= known) return false;
    this.#meta.set(key, { v, at: change.at });
    this.cache.apply(change);
    this.#emit('change', change);
    return true;
  }

  #emit<E extends 'change' | 'status' | 'warning'>(event: E, arg: E extends 'change' ? StoreChange : E extends 'status' ? StoreStatus : string): void {
    for (const listener of this.#events.listeners(event)) {
      try {
        (listener as (a: unknown) => void)(arg);
      } catch (err) {
        // A throwing listener is a bug elsewhere: surface it as uncaught, but keep the cache consistent.
        process.nextTick(() => {
          throw err;
        });
      }
    }
  }

  /** Resolves when the cache is in sync; rejects after syncWaitMs. */
  #whenInSync(): Promise<void> {
    if (this.#inSync) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.#syncWaiters = this.#syncWaiters.filter((w) => w !== waiter);
        reject(new StoreUnavailableError(`the redis state store at ${this.#where} is unreachable; nothing was changed`));
      }, this.#syncWaitMs);
      this.#syncWaiters.push(waiter);
    });
  }

  // -------------------------------------------------------------------------------------------
  // Following the stream

  #markUp(): void {
    this.#inSync = true;
    this.#syncedAt = performance.now();
    for (const w of this.#syncWaiters.splice(0)) w.resolve();
    if (this.#status !== 'up') {
      this.#status = 'up';
      this.#emit('status', 'up');
    }
  }

  /** `connectionLost`: the feed was live until now (a read within its heartbeat was pending). */
  #markDown(connectionLost: boolean): void {
    const t = performance.now();
    if (this.#inSync && connectionLost && (this.#readSince === null || t - this.#readSince <= this.#heartbeatMs * 2)) this.#syncedAt = t;
    this.#inSync = false;
    if (this.#status !== 'down' && this.#closing === null) {
      this.#status = 'down';
      this.#emit('status', 'down');
    }
  }

  /** The feed loop: XREAD from the last entry; reload whenever the cache may have missed something. */
  async #follow(): Promise<void> {
    let failures = 0;
    const streamKey = this.#key('changes');
    while (this.#closing === null) {
      const reader = this.#reader;
      if (reader === null) return;
      try {
        if (!this.#inSync || this.#reloadWanted) {
          // Both connections must be back: a reload through one while the other still
          // reconnects would be reported up and then fall down again at the next read.
          if (!reader.isReady || this.#client?.isReady !== true) throw new Error('redis connections are not ready');
          this.#reloadWanted = false;
          await this.#resync();
          this.#markUp();
        }
        this.#readSince = performance.now();
        const reply = await reader.sendCommand(['XREAD', 'COUNT', '1000', 'BLOCK', String(this.#heartbeatMs), 'STREAMS', streamKey, this.#lastId]);
        this.#readSince = null;
        failures = 0;
        if (!this.#inSync) continue;
        this.#syncedAt = performance.now();
        const streams = Array.isArray(reply) ? (reply as unknown[]) : [];
        for (const s of streams) {
          if (!Array.isArray(s)) continue;
          for (const entry of streamEntries(s[1])) if (!this.#consume(entry.id, entry.env)) break;
        }
      } catch {
        if (this.#closing !== null) break;
        this.#markDown(true);
        this.#readSince = null;
        failures += 1;
        await sleep(Math.min(50 * 2 ** Math.min(failures, 10), this.#maxBackoffMs));
      }
    }
  }

  /** Applies one stream entry; false when the rest must wait for a reload (a skipped version: out of sync). */
  #consume(id: string, raw: unknown): boolean {
    const env = parseEnvelope(raw);
    if (env === null || env.v !== this.#lastSeq + 1) {
      this.#markDown(false);
      return false;
    }
    this.#lastSeq = env.v;
    this.#lastId = id;
    if (env.c.type === 'resync') {
      this.#reloadWanted = true;
      return false;
    }
    this.#apply(keyOf(env.c), env.v, env.c);
    return true;
  }

  /** One consistent read of everything, and where the stream stood at that instant. */
  async #snapshot(): Promise<Snapshot> {
    const client = this.#client;
    if (client === null) throw new StoreUnavailableError('state store is not connected');
    const replies = await client
      .multi()
      .addCommand(['GET', this.#key('epoch')])
      .addCommand(['GET', this.#key('seq')])
      .addCommand(['GET', this.#key('global')])
      .addCommand(['HGETALL', this.#key('accounts')])
      .addCommand(['HGETALL', this.#key('sessions')])
      .addCommand(['HGETALL', this.#key('lastseen')])
      .addCommand(['XREVRANGE', this.#key('changes'), '+', '-', 'COUNT', '1'])
      .exec();
    const [epoch, seq, global, accounts, sessions, lastseen, last] = replies as unknown[];
    const records = new Map<RecordKey, Envelope & { c: StoreChange }>();
    const add = (raw: unknown): void => {
      const env = parseEnvelope(raw);
      if (env === null || env.c.type === 'resync') throw new Error('redis holds a state record this version cannot read');
      records.set(keyOf(env.c), env as Envelope & { c: StoreChange });
    };
    if (global !== null && global !== undefined) add(global);
    for (const [, raw] of pairs(accounts)) add(raw);
    for (const [, raw] of pairs(sessions)) add(raw);
    const touches = new Map<string, SessionTouch>();
    for (const [id, raw] of pairs(lastseen)) {
      const touch = parseTouch(raw);
      if (touch !== null) touches.set(id, touch);
    }
    return {
      epoch: typeof epoch === 'string' ? epoch : null,
      seq: Number(seq ?? 0),
      lastId: streamEntries(last)[0]?.id ?? '0-0',
      records,
      touches,
    };
  }

  /**
   * Reloads the cache from Redis, emitting a change for every record that moved while this
   * replica was not listening (so revocations made during a disconnect still close tunnels).
   */
  async #resync(): Promise<void> {
    const client = this.#client;
    if (client === null) throw new StoreUnavailableError('state store is not connected');
    let snap = await this.#snapshot();
    if (snap.epoch === null && this.#epoch === null) {
      await client.sendCommand(['SET', this.#key('epoch'), randomUUID(), 'NX']);
      snap = await this.#snapshot();
    } else if (this.#epoch !== null && (snap.epoch !== this.#epoch || snap.seq < this.#highest)) {
      const written = await this.#restore();
      this.#emit('warning', `the redis state store lost data; this replica wrote back ${written} records from its cache`);
      snap = await this.#snapshot();
    }
    this.#load(snap);
  }

  /** Writes back what Redis lost, from this cache; returns the number of records written. */
  async #restore(): Promise<number> {
    const keys = [...this.#baseKeys(), this.#key('epoch'), this.#key('base')];
    const indexOf = new Map<string, number>();
    const records: string[] = [];
    let count = 0;
    const push = (change: StoreChange): void => {
      const key = keyOf(change);
      const meta = this.#meta.get(key);
      if (meta === undefined) return;
      let idx = 0;
      if (change.type === 'session') {
        idx = indexOf.get(change.session.account) ?? 0;
        if (idx === 0) {
          keys.push(this.#accountSessionsKey(change.session.account));
          idx = keys.length;
          indexOf.set(change.session.account, idx);
        }
      }
      const original = { ...change, at: meta.at };
      records.push(key.slice(0, 1), key.slice(2), String(meta.v), JSON.stringify({ v: meta.v, c: original }), String(idx));
      count += 1;
    };
    const at = this.#at();
    const snapshot = this.cache.snapshot();
    push({ type: 'global', at, state: snapshot.global });
    for (const state of snapshot.accounts) push({ type: 'account', at, state });
    for (const session of snapshot.sessions) push({ type: 'session', at, session });
    const args = [String(this.#streamMaxLen), this.#epoch ?? '', randomUUID(), String(RESTORE_JUMP), String(this.#highest), String(count), ...records];
    return Number(await this.#eval(SCRIPTS.restore, keys, args));
  }

  /**
   * Makes the cache match a snapshot: records that differ are applied (and announced), sessions
   * Redis no longer holds (pruned elsewhere) are dropped. What this replica learned after the
   * snapshot was taken (a version above its sequence) is kept. Redis only ever holds a version
   * older than the cache's after it lost data, and by then the restore has written back what it
   * should: what Redis holds is the truth.
   */
  #load(snap: Snapshot): void {
    const newer = (key: RecordKey): boolean => (this.#meta.get(key)?.v ?? 0) > snap.seq;
    for (const [key, env] of snap.records) if (!newer(key)) this.#apply(key, env.v, env.c, true);
    for (const s of this.cache.snapshot().sessions) {
      const key = `s:${s.id}`;
      if (!snap.records.has(key) && !newer(key)) this.cache.remove(s.id);
    }
    for (const key of [...this.#meta.keys()]) if (key.startsWith('s:') && !snap.records.has(key) && !newer(key)) this.#meta.delete(key);
    for (const [id, touch] of snap.touches) this.cache.touch(id, touch);
    this.#epoch = snap.epoch;
    this.#lastSeq = snap.seq;
    this.#lastId = snap.lastId;
    this.#highest = Math.max(this.#highest, snap.seq);
  }
}
