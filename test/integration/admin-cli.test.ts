/**
 * The admin CLI verbs, run in-process through main() with captured output, against a live
 * admin API (real FileStore and policy) on 127.0.0.1 port 0 and on a unix socket.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { createAdminServer, type AdminServer } from '../../src/admin/server.js';
import { AdminTokens, mintAdminToken } from '../../src/admin/tokens.js';
import { formatTable } from '../../src/commands/admin-client.js';
import type { Io } from '../../src/commands/io.js';
import { main } from '../../src/commands/main.js';
import { PolicyReloader } from '../../src/policy/reloader.js';
import { FileStore } from '../../src/state/file-store.js';

const POLICY = 'version: 1\ndestinations:\n  api:\n    hosts: [api.example.com]\naccounts:\n  - match: "*"\n    allow: [api]\n';

let dir: string;
let store: FileStore;
let reloader: PolicyReloader;
let server: AdminServer;
let url: string;
let tokenFile: string;
let readerFile: string;
let logLines: string[];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-admin-cli-'));
  await writeFile(join(dir, 'policy.yaml'), POLICY);
  store = new FileStore(join(dir, 'state.json'));
  await store.open();
  reloader = await PolicyReloader.open(join(dir, 'policy.yaml'));
  const ops = mintAdminToken('ops', 'operator');
  const reader = mintAdminToken('dash', 'read');
  tokenFile = join(dir, 'admin.token');
  readerFile = join(dir, 'reader.token');
  await writeFile(tokenFile, `${ops.token}\n`);
  await writeFile(readerFile, reader.token);
  logLines = [];
  server = createAdminServer({
    store,
    policy: reloader,
    tokens: AdminTokens.fromEntries([ops.entry, reader.entry]),
    logger: pino({ level: 'info' }, { write: (l: string) => void logLines.push(l) }),
    metrics: { render: async () => '', contentType: 'text/plain' },
    ready: () => ({ ready: true, checks: {} }),
    sessionTtlMs: null,
    metricsAuth: false,
  });
  url = `http://${await server.listen({ host: '127.0.0.1', port: 0 })}`;
});

afterEach(async () => {
  vi.unstubAllEnvs();
  await server.close();
  reloader.close();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

/** Runs `portcullis ARGS` against the live server; stdout and stderr lines are captured. */
async function cli(args: string[], options: { auth?: boolean } = {}): Promise<{ code: number; out: string[]; err: string[] }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: Io = { out: (l) => void out.push(...l.split('\n')), err: (l) => void err.push(...l.split('\n')) };
  const common = options.auth === false ? [] : ['--admin-url', url, '--token-file', tokenFile];
  const code = await main([...args, ...common], io);
  return { code, out, err };
}

describe('sessions', () => {
  test('create_prints_the_token_once_and_an_http_proxy_line', async () => {
    const r = await cli(['sessions', 'create', 'alice', '--app', 'chat', '--label', 'laptop', '--ttl', '12h']);
    expect(r.code).toBe(0);
    const token = r.out.find((l) => /^\s+pcs_/.test(l))?.trim();
    expect(token).toMatch(/^pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(r.out).toContain(`HTTP_PROXY=http://alice:${token}@127.0.0.1:3128`);
    expect(r.out[0]).toMatch(/^created session [0-9a-f]{16} for alice \(app chat, expires 20\d\d-/);
    const [session] = store.listSessions('alice');
    expect(session).toMatchObject({ app: 'chat', label: 'laptop', createdBy: 'ops' });
    expect(logLines.join('')).not.toContain(token);
  });

  test('list_prints_an_aligned_table_and_json_on_request', async () => {
    await cli(['sessions', 'create', 'alice', '--app', 'chat']);
    await cli(['sessions', 'create', 'alice', '--app', 'codex-cli']);
    const r = await cli(['sessions', 'list', 'alice']);
    expect(r.code).toBe(0);
    expect(r.out).toHaveLength(3);
    const header = r.out[0]!;
    expect(header).toMatch(/^ID\s+APP\s+METHOD\s+CREATED\s+LAST SEEN\s+CLIENT\s+STATUS$/);
    const statusColumn = header.indexOf('STATUS');
    for (const row of r.out.slice(1)) {
      expect(row).toMatch(/^[0-9a-f]{16}\s+(chat|codex-cli)\s+token\s+\d{4}-\d\d-\d\dT\d\d:\d\dZ\s+-\s+-\s+active$/);
      expect(row.indexOf('active')).toBe(statusColumn);
    }
    const json = await cli(['sessions', 'list', 'alice', '--app', 'chat', '--json']);
    const parsed = JSON.parse(json.out.join('\n')) as { sessions: Array<{ app: string }> };
    expect(parsed.sessions.map((s) => s.app)).toEqual(['chat']);
  });

  test('list_of_an_account_without_sessions', async () => {
    expect((await cli(['sessions', 'list', 'nobody'])).out).toEqual(['no sessions for nobody']);
  });

  test('revoke_then_list_shows_revoked', async () => {
    await cli(['sessions', 'create', 'alice', '--app', 'chat']);
    const id = store.listSessions('alice')[0]!.id;
    expect((await cli(['sessions', 'revoke', 'alice', id])).out).toEqual([`revoked session ${id} of alice`]);
    expect((await cli(['sessions', 'revoke', 'alice', id])).out).toEqual([`session ${id} of alice was already revoked`]);
    const list = await cli(['sessions', 'list', 'alice']);
    expect(list.out[1]).toMatch(/revoked$/);
    expect(store.getSession(id)?.revokedBy).toBe('ops');
  });

  test('revoke_of_an_unknown_session_exits_1_with_the_servers_message', async () => {
    const r = await cli(['sessions', 'revoke', 'alice', '0123456789abcdef']);
    expect(r.code).toBe(1);
    expect(r.err[0]).toBe('error: no session 0123456789abcdef for this account (field: id)');
  });

  test('revoke_all_except_one', async () => {
    for (const app of ['a', 'b', 'c']) await cli(['sessions', 'create', 'alice', '--app', app]);
    const keep = store.listSessions('alice').find((s) => s.app === 'b')!.id;
    const r = await cli(['sessions', 'revoke-all', 'alice', '--except', keep]);
    expect(r.code).toBe(0);
    expect(r.out[0]).toBe(`revoked 2 sessions of alice (kept ${keep})`);
    expect(r.out.slice(1)).toHaveLength(2);
    expect(store.getSession(keep)?.revokedAt).toBeNull();
  });
});

describe('lockdown and developer mode', () => {
  test('on_status_conflict_off', async () => {
    expect((await cli(['lockdown', 'on', 'alice'])).out).toEqual(['lockdown is on for alice']);
    expect((await cli(['lockdown', 'on', 'alice'])).out).toEqual(['lockdown is on for alice (unchanged)']);
    const status = await cli(['lockdown', 'status', 'alice']);
    expect(status.out[0]).toBe('alice');
    expect(status.out[1]).toMatch(/^ {2}lockdown: +on \(since \S+ by ops\)$/);
    expect(status.out).toContain('  effective:        locked down');

    const conflict = await cli(['developer-mode', 'on', 'alice']);
    expect(conflict.code).toBe(1);
    expect(conflict.err).toEqual(['error: lockdown is on for this account: turn it off first']);
    expect(store.getAccount('alice').developerMode).toBe(false);

    expect((await cli(['lockdown', 'off', 'alice'])).code).toBe(0);
    expect((await cli(['developer-mode', 'on', 'alice'])).out).toEqual(['developer mode is on for alice']);
    const back = await cli(['lockdown', 'on', 'alice']);
    expect(back.err).toEqual(['error: developer mode is on for this account: turn it off first']);
    expect((await cli(['developer-mode', 'off', 'alice'])).code).toBe(0);
  });

  test('global_switch_with_all', async () => {
    expect((await cli(['lockdown', 'on', '--all'])).out).toEqual(['global lockdown is on: every account is locked down']);
    expect(store.getGlobal()).toMatchObject({ lockdown: true, changedBy: 'ops' });
    const off = await cli(['lockdown', 'off', 'bob']);
    expect(off.out[1]).toMatch(/^note: global lockdown is on/);
    expect((await cli(['lockdown', 'status', 'bob'])).out).toContain('  effective:        locked down');
    expect((await cli(['lockdown', 'off', '--all'])).out).toEqual(['global lockdown is off']);
  });

  test('read_token_cannot_change_anything', async () => {
    const r = await main(['lockdown', 'on', 'alice', '--admin-url', url, '--token-file', readerFile], capture());
    expect(r).toBe(1);
    expect(store.getAccount('alice').lockdown).toBe(false);
  });
});

describe('connection, token and usage', () => {
  test.each([
    ['sessions list without account', ['sessions', 'list']],
    ['create without --app', ['sessions', 'create', 'alice']],
    ['revoke without id', ['sessions', 'revoke', 'alice']],
    ['lockdown with account and --all', ['lockdown', 'on', 'alice', '--all']],
    ['lockdown status without account', ['lockdown', 'status']],
    ['unknown flag', ['sessions', 'list', 'alice', '--bogus']],
    ['unknown sub-verb', ['lockdown', 'toggle', 'alice']],
  ])('usage_error_exits_2_%s', async (_name, args) => {
    const r = await cli(args);
    expect(r.code).toBe(2);
    expect(r.err.join('\n')).toMatch(/usage|Unknown option|--app/);
  });

  test('missing_token_file_exits_2_and_says_how_to_fix_it', async () => {
    const io = capture();
    const code = await main(['sessions', 'list', 'alice', '--admin-url', url, '--token-file', join(dir, 'missing.token')], io);
    expect(code).toBe(2);
    expect(io.errLines.join('\n')).toMatch(/PORTCULLIS_ADMIN_TOKEN/);
  });

  test('environment_supplies_url_and_token', async () => {
    vi.stubEnv('PORTCULLIS_ADMIN_URL', url);
    vi.stubEnv('PORTCULLIS_ADMIN_TOKEN', (await import('node:fs')).readFileSync(tokenFile, 'utf8').trim());
    const r = await cli(['lockdown', 'on', 'carol'], { auth: false });
    expect(r.code).toBe(0);
    expect(store.getAccount('carol').lockdownChangedBy).toBe('ops');
  });

  test('a_wrong_token_exits_1_with_a_hint', async () => {
    const bad = join(dir, 'bad.token');
    await writeFile(bad, `pca_${'0'.repeat(16)}_${'A'.repeat(43)}`);
    const io = capture();
    expect(await main(['lockdown', 'status', 'alice', '--admin-url', url, '--token-file', bad], io)).toBe(1);
    expect(io.errLines[0]).toMatch(/^error: a valid admin token is required/);
    expect(io.errLines).toContain('check PORTCULLIS_ADMIN_TOKEN or --token-file');
  });

  test('an_unreachable_server_exits_1', async () => {
    const closed = createNetServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as { port: number }).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const io = capture();
    expect(await main(['lockdown', 'status', 'alice', '--admin-url', `http://127.0.0.1:${port}`, '--token-file', tokenFile], io)).toBe(1);
    expect(io.errLines[0]).toMatch(/cannot reach the admin API at http:\/\/127\.0\.0\.1:\d+: ECONNREFUSED/);
  });

  test('a_bad_admin_url_is_a_usage_error', async () => {
    const io = capture();
    expect(await main(['lockdown', 'status', 'alice', '--admin-url', 'ftp://x', '--token-file', tokenFile], io)).toBe(2);
  });

  test('unix_socket_admin_url', async () => {
    const path = join(dir, 'admin.sock');
    const unixServer = createAdminServer({
      store,
      policy: reloader,
      tokens: AdminTokens.fromEntries([]),
      logger: pino({ level: 'silent' }),
      metrics: { render: async () => '', contentType: 'text/plain' },
      ready: () => ({ ready: true, checks: {} }),
      sessionTtlMs: null,
      metricsAuth: false,
    });
    try {
      await unixServer.listen({ path });
      // No tokens on this server: the 401 proves the request went over the socket to it.
      const io = capture();
      expect(await main(['lockdown', 'status', 'alice', '--admin-url', `unix:${path}`, '--token-file', tokenFile], io)).toBe(1);
      expect(io.errLines[0]).toMatch(/^error: a valid admin token is required/);
    } finally {
      await unixServer.close();
    }
  });
});

describe('formatTable', () => {
  test('pads_all_but_the_last_column', () => {
    expect(formatTable([['A', 'BB', 'C'], ['long', 'x', 'y']])).toEqual(['A     BB  C', 'long  x   y']);
  });
});

function capture(): Io & { outLines: string[]; errLines: string[] } {
  const outLines: string[] = [];
  const errLines: string[] = [];
  return { outLines, errLines, out: (l) => void outLines.push(l), err: (l) => void errLines.push(l) };
}
