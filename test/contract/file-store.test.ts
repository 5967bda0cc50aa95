import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  FileStore,
  StateFileError,
  serializeStateDocument,
  writeFileAtomic,
} from '../../src/state/file-store.js';
import { openStore } from '../../src/state/open-store.js';
import { StoreUnavailableError } from '../../src/state/types.js';
import type { StoreChange } from '../../src/state/types.js';
import { sessionRecord, storeContract } from './store-contract.js';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'portcullis-store-'));
}

storeContract('file', async () => {
  const dir = await tempDir();
  const file = join(dir, 'data', 'state.json');
  const store = new FileStore(file);
  await store.open();
  return {
    store,
    reopen: () => openStore(pathToFileURL(file).href),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

/** A writer that holds each write until released, to make "a write is in flight" deterministic. */
function gatedWriter(): {
  writeFile: (file: string, data: string) => Promise<void>;
  calls: string[];
  started: () => Promise<void>;
  release: () => void;
  maxConcurrent: () => number;
} {
  const calls: string[] = [];
  let gate: { promise: Promise<void>; open: () => void } = deferred();
  let onStart = deferred();
  let active = 0;
  let max = 0;
  return {
    calls,
    async writeFile(file, data) {
      calls.push(data);
      active += 1;
      max = Math.max(max, active);
      onStart.open();
      try {
        await gate.promise;
        await writeFileAtomic(file, data);
      } finally {
        active -= 1;
      }
    },
    started: async () => {
      await onStart.promise;
      onStart = deferred();
    },
    release: () => {
      gate.open();
      gate = deferred();
    },
    maxConcurrent: () => max,
  };
}

function deferred(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => {
    open = r;
  });
  return { promise, open };
}

describe('FileStore', () => {
  let dir: string;
  let file: string;
  const stores: FileStore[] = [];
  const track = (s: FileStore): FileStore => {
    stores.push(s);
    return s;
  };

  beforeEach(async () => {
    dir = await tempDir();
    file = join(dir, 'nested', 'state.json');
  });

  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('missing_file_opens_empty_and_creates_it_private', async () => {
    const store = track(new FileStore(file));
    await store.open();
    expect(store.listAccounts()).toEqual([]);
    expect(store.getGlobal().lockdown).toBe(false);
    expect((await stat(join(dir, 'nested'))).mode & 0o777).toBe(0o700);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({
      version: 1,
      global: { lockdown: false, changedAt: null, changedBy: null },
      accounts: {},
      sessions: {},
    });
  });

  test('document_shape_after_writes', async () => {
    const store = track(new FileStore(file));
    await store.open();
    const s = sessionRecord();
    await store.createSession(s);
    const state = await store.setLockdown('alice', true, 'sec');
    const doc = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown>;
    expect(Object.keys(doc)).toEqual(['version', 'global', 'accounts', 'sessions']);
    expect(doc.sessions).toEqual({ [s.id]: s });
    expect(doc.accounts).toEqual({ alice: state });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  test.each([
    ['corrupt_json', '{"version":1,"global":', /is not valid JSON/],
    ['empty_file', '', /is empty/],
    ['not_an_object', '[]', /is not a JSON object/],
    ['newer_version', '{"version":2}', /has version 2, and this portcullis reads version 1/],
    [
      'invalid_session_field',
      JSON.stringify({
        version: 1,
        global: { lockdown: false, changedAt: null, changedBy: null },
        accounts: {},
        sessions: { abc: { ...sessionRecord({ id: 'abc' }), createdAt: 'yesterday' } },
      }),
      /sessions\["abc"\]\.createdAt: expected an ISO-8601 time/,
    ],
    [
      'session_under_wrong_key',
      JSON.stringify({
        version: 1,
        global: { lockdown: false, changedAt: null, changedBy: null },
        accounts: {},
        sessions: { abc: sessionRecord({ id: 'def' }) },
      }),
      /sessions\["abc"\] holds session "def"/,
    ],
  ])('refuses_to_start_over_%s', async (_name, content, message) => {
    await mkdir(join(dir, 'nested'));
    await writeFile(file, content);
    const store = track(new FileStore(file));
    const attempt = store.open();
    await expect(attempt).rejects.toBeInstanceOf(StateFileError);
    await expect(attempt).rejects.toThrow(message);
    await expect(attempt).rejects.toThrow(file);
    await expect(attempt).rejects.toThrow(/refusing to start with an empty state/);
    // The file must be left exactly as found: it may hold the only record of a revocation.
    expect(await readFile(file, 'utf8')).toBe(content);
    await expect(store.createSession(sessionRecord())).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  test('open_can_be_retried_after_the_file_is_fixed', async () => {
    await mkdir(join(dir, 'nested'));
    await writeFile(file, '{oops');
    const store = track(new FileStore(file));
    await expect(store.open()).rejects.toBeInstanceOf(StateFileError);
    await writeFile(file, serializeStateDocument({ global: { lockdown: true, changedAt: null, changedBy: null }, accounts: [], sessions: [] }));
    await store.open();
    expect(store.getGlobal().lockdown).toBe(true);
  });

  test('leftover_temp_files_are_removed_on_open_and_others_kept', async () => {
    await mkdir(join(dir, 'nested'));
    const names = ['state.json.4242.1.tmp', 'state.json.1.17.tmp', 'state.json.bak', 'other.json.1.1.tmp', 'notes.tmp'];
    for (const n of names) await writeFile(join(dir, 'nested', n), 'partial');
    const store = track(new FileStore(file));
    await store.open();
    expect((await readdir(join(dir, 'nested'))).sort()).toEqual(['notes.tmp', 'other.json.1.1.tmp', 'state.json', 'state.json.bak']);
  });

  test('no_temp_files_remain_after_writes', async () => {
    const store = track(new FileStore(file));
    await store.open();
    await Promise.all(Array.from({ length: 30 }, () => store.createSession(sessionRecord())));
    expect(await readdir(join(dir, 'nested'))).toEqual(['state.json']);
  });

  test('same_tick_writes_share_one_write', async () => {
    const store = track(new FileStore(file));
    await store.open();
    const before = store.writeCount;
    await Promise.all([
      ...Array.from({ length: 50 }, () => store.createSession(sessionRecord())),
      store.setLockdown('alice', true, 'sec'),
    ]);
    expect(store.writeCount - before).toBe(1);
  });

  test('writes_requested_during_a_write_join_the_next_one_and_never_interleave', async () => {
    const writer = gatedWriter();
    const store = track(new FileStore(file, { writeFile: writer.writeFile }));
    const opening = store.open();
    await writer.started();
    writer.release();
    await opening;
    writer.calls.length = 0;

    const first = store.createSession(sessionRecord({ id: 'first' }));
    await writer.started();
    const queued = [
      store.createSession(sessionRecord({ id: 'second' })),
      store.setDeveloperMode('alice', true, 'admin'),
      store.touchSessions(new Map([['first', { lastSeenAt: new Date().toISOString(), clientIp: null, userAgent: null }]])),
      store.setLockdown('alice', true, 'sec'),
    ];
    writer.release();
    await first;
    await writer.started();
    writer.release();
    const results = await Promise.allSettled(queued);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
    expect(writer.calls).toHaveLength(2);
    expect(writer.maxConcurrent()).toBe(1);
    const second = JSON.parse(writer.calls[1] ?? '') as { sessions: Record<string, unknown> };
    expect(Object.keys(second.sessions).sort()).toEqual(['first', 'second']);
  });

  test('touches_are_persisted_without_events', async () => {
    const store = track(new FileStore(file));
    await store.open();
    const s = sessionRecord();
    await store.createSession(s);
    const events: StoreChange[] = [];
    store.on('change', (c) => events.push(c));
    const seen = new Date().toISOString();
    await store.touchSessions(new Map([[s.id, { lastSeenAt: seen, clientIp: '192.0.2.1', userAgent: 'ua' }]]));
    const doc = JSON.parse(await readFile(file, 'utf8')) as { sessions: Record<string, { lastSeenAt: string }> };
    expect(doc.sessions[s.id]?.lastSeenAt).toBe(seen);
    expect(events).toEqual([]);
  });

  test('change_events_fire_only_once_the_change_is_on_disk', async () => {
    const store = track(new FileStore(file));
    await store.open();
    const onDisk: boolean[] = [];
    store.on('change', (c) => {
      const doc = JSON.parse(readFileSync(file, 'utf8')) as { accounts: Record<string, { lockdown: boolean }> };
      onDisk.push(c.type === 'account' && doc.accounts[c.state.account]?.lockdown === c.state.lockdown);
    });
    await store.setLockdown('alice', true, 'sec');
    await store.setLockdown('alice', false, 'sec');
    expect(onDisk).toEqual([true, true]);
  });

  test('failed_write_rejects_changes_nothing_and_the_next_write_recovers', async () => {
    let fail = false;
    const store = track(
      new FileStore(file, {
        writeFile: async (f, data) => {
          if (fail) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
          await writeFileAtomic(f, data);
        },
      }),
    );
    await store.open();
    const events: StoreChange[] = [];
    store.on('change', (c) => events.push(c));
    fail = true;
    const s = sessionRecord();
    const results = await Promise.allSettled([store.createSession(s), store.setLockdown('alice', true, 'sec')]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      const reason = (r as PromiseRejectedResult).reason as Error;
      expect(reason).toBeInstanceOf(StoreUnavailableError);
      expect(reason.message).toMatch(/cannot write state file .*no space left/);
    }
    expect(store.getSession(s.id)).toBeUndefined();
    expect(store.getAccount('alice').lockdown).toBe(false);
    expect(events).toEqual([]);

    fail = false;
    await store.setLockdown('alice', true, 'sec');
    expect(events).toHaveLength(1);
    const reopened = track(new FileStore(file));
    await store.close();
    await reopened.open();
    expect(reopened.getAccount('alice').lockdown).toBe(true);
    expect(reopened.getSession(s.id)).toBeUndefined();
  });

  test('a_throwing_listener_does_not_break_the_writer', async () => {
    const store = track(new FileStore(file));
    await store.open();
    const uncaught: unknown[] = [];
    const onUncaught = (err: unknown): void => {
      uncaught.push(err);
    };
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', onUncaught);
    try {
      store.on('change', () => {
        throw new Error('listener bug');
      });
      await store.setLockdown('alice', true, 'sec');
      await new Promise((r) => setImmediate(r));
      await store.setLockdown('alice', false, 'sec');
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('uncaughtException', onUncaught);
      for (const l of listeners) process.on('uncaughtException', l);
    }
    expect(uncaught).toHaveLength(2);
    expect(store.getAccount('alice').lockdown).toBe(false);
  });

  test('writes_before_open_reject', async () => {
    const store = track(new FileStore(file));
    await expect(store.setGlobalLockdown(true, 'sec')).rejects.toThrow(/not open/);
    await expect(store.touchSessions(new Map())).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  test('open_after_close_rejects', async () => {
    const store = track(new FileStore(file));
    await store.open();
    await store.close();
    await expect(store.open()).rejects.toThrow(/closed/);
  });

  test('staleness_is_zero', async () => {
    const store = track(new FileStore(file));
    await store.open();
    expect(store.stalenessMs()).toBe(0);
  });

  test('injected_clock_stamps_changes', async () => {
    const at = new Date('2030-01-02T03:04:05.678Z');
    const store = track(new FileStore(file, { now: () => at }));
    await store.open();
    const events: StoreChange[] = [];
    store.on('change', (c) => events.push(c));
    const state = await store.setLockdown('alice', true, 'sec');
    expect(state.lockdownChangedAt).toBe(at.toISOString());
    expect(events[0]?.at).toBe(at.toISOString());
  });

  test('invalid_session_records_are_refused_before_reaching_disk', async () => {
    const store = track(new FileStore(file));
    await store.open();
    await expect(store.createSession(sessionRecord({ createdAt: 'not a time' }))).rejects.toThrow(/createdAt/);
    await expect(store.createSession(sessionRecord({ id: '' }))).rejects.toThrow(TypeError);
    expect(JSON.parse(await readFile(file, 'utf8'))).toMatchObject({ sessions: {} });
  });
});

describe('openStore', () => {
  let dir: string;
  const stores: Array<{ close(): Promise<void> }> = [];

  beforeEach(async () => {
    dir = await tempDir();
  });

  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('file_path_relative_to_cwd', async () => {
    const store = await openStore('file:./data/state.json', { cwd: dir });
    stores.push(store);
    expect((await stat(join(dir, 'data', 'state.json'))).isFile()).toBe(true);
    expect(store).toBeInstanceOf(FileStore);
  });

  test('relative_path_defaults_to_process_cwd', async () => {
    const target = join(dir, 'rel', 'state.json');
    const store = await openStore(`file:${relative(process.cwd(), target)}`);
    stores.push(store);
    expect((store as FileStore).file).toBe(target);
  });

  test('absolute_path_and_file_url', async () => {
    const a = await openStore(`file:${join(dir, 'a.json')}`);
    const b = await openStore(pathToFileURL(join(dir, 'b c.json')).href);
    stores.push(a, b);
    expect((await readdir(dir)).sort()).toEqual(['a.json', 'b c.json']);
  });

  test.each([
    ['empty_path', 'file:', /names no file/],
    ['unknown_scheme', 'postgres://u:secret@db/x', /unsupported store URL scheme "postgres:"/],
    ['no_scheme', './state.json', /has no scheme/],
  ])('rejects_%s', async (_name, url, message) => {
    await expect(openStore(url, { cwd: dir })).rejects.toThrow(message);
  });
});
