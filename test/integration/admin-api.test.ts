/**
 * The admin API over real sockets: a FileStore and a PolicyReloader in a temp dir, tokens of
 * every role, and a pino logger whose lines are parsed and checked (never a token in them).
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createAdminServer, MAX_BODY_BYTES, type AdminServer } from '../../src/admin/server.js';
import { AdminTokens, mintAdminToken } from '../../src/admin/tokens.js';
import { Authenticator } from '../../src/identity/authenticate.js';
import { PolicyReloader } from '../../src/policy/reloader.js';
import { FileStore } from '../../src/state/file-store.js';

const POLICY = `version: 1
destinations:
  docs:
    hosts: [docs.example.com]
    lockdown: allow
  api:
    hosts: [api.example.com]
  devtools:
    hosts: [dev.example.com]
    developerOnly: true
  unused:
    hosts: [unused.example.com]
accounts:
  - match: "*"
    allow: [docs, api, devtools]
`;

const START = Date.parse('2025-03-01T12:00:00.000Z');

interface ApiResult {
  status: number;
  headers: Headers;
  json: any;
  text: string;
}

class Harness {
  dir = '';
  base = '';
  now = START;
  ready = { ready: true, checks: { policy: 'ok', store: 'ok' } as Record<string, string> };
  lines: string[] = [];
  revoked: Array<[string, number]> = [];
  reloads: string[] = [];
  secrets: string[] = [];
  store!: FileStore;
  reloader!: PolicyReloader;
  server!: AdminServer;
  policyFile = '';
  token = {} as Record<'admin' | 'ops' | 'reader' | 'teamOps' | 'teamAdmin', string>;

  async start(options: { metricsAuth?: boolean; sessionTtlMs?: number | null; sessionAuditWindowMs?: number } = {}): Promise<this> {
    this.dir = await mkdtemp(join(tmpdir(), 'portcullis-admin-'));
    this.policyFile = join(this.dir, 'policy.yaml');
    await writeFile(this.policyFile, POLICY);
    const clock = (): Date => new Date(this.now);
    this.store = new FileStore(join(this.dir, 'state.json'), { now: clock });
    await this.store.open();
    this.reloader = await PolicyReloader.open(this.policyFile);
    const minted = {
      admin: mintAdminToken('root', 'admin'),
      ops: mintAdminToken('ops', 'operator'),
      reader: mintAdminToken('dash', 'read'),
      teamOps: mintAdminToken('team-a-ops', 'operator', 'team-a-*'),
      teamAdmin: mintAdminToken('team-a-admin', 'admin', 'team-a-*'),
    };
    for (const [k, v] of Object.entries(minted)) {
      this.token[k as keyof typeof minted] = v.token;
      this.secrets.push(v.token);
    }
    const logger = pino({ level: 'debug' }, { write: (line: string) => void this.lines.push(line) });
    this.server = createAdminServer({
      store: this.store,
      policy: this.reloader,
      tokens: AdminTokens.fromEntries(Object.values(minted).map((m) => m.entry)),
      logger,
      metrics: {
        render: async () => '# HELP portcullis_up test\n# TYPE portcullis_up gauge\nportcullis_up 1\n',
        contentType: 'text/plain; version=0.0.4; charset=utf-8',
        onSessionRevoked: (scope, n) => void this.revoked.push([scope, n]),
        onPolicyReload: (result) => void this.reloads.push(result),
      },
      ready: () => this.ready,
      sessionTtlMs: options.sessionTtlMs === undefined ? 24 * 3_600_000 : options.sessionTtlMs,
      metricsAuth: options.metricsAuth ?? false,
      ...(options.sessionAuditWindowMs !== undefined ? { sessionAuditWindowMs: options.sessionAuditWindowMs } : {}),
      clock,
    });
    this.base = `http://${await this.server.listen({ host: '127.0.0.1', port: 0 })}`;
    return this;
  }

  async stop(): Promise<void> {
    await this.server?.close();
    this.reloader?.close();
    await this.store?.close();
    if (this.dir !== '') await rm(this.dir, { recursive: true, force: true });
  }

  /** Parsed log lines with msg "admin". */
  audit(): Array<Record<string, unknown>> {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'admin');
  }

  async api(
    method: string,
    path: string,
    opts: { token?: string | null; json?: unknown; body?: string; headers?: Record<string, string> } = {},
  ): Promise<ApiResult> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers['content-type'] ??= 'application/json';
    } else if (opts.body !== undefined) {
      body = opts.body;
    }
    const res = await fetch(this.base + path, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    if (typeof json === 'object' && json !== null && typeof (json as { token?: unknown }).token === 'string') {
      this.secrets.push((json as { token: string }).token);
    }
    return { status: res.status, headers: res.headers, json, text };
  }
}

let h: Harness;
beforeEach(async () => {
  h = await new Harness().start();
});
afterEach(async () => {
  // Whatever a test did, no credential may ever reach the log.
  const all = h.lines.join('');
  for (const secret of h.secrets) expect(all).not.toContain(secret);
  expect(all).not.toMatch(/Bearer /i);
  expect(all).not.toMatch(/pc[as]_[0-9a-f]{16}_/);
  await h.stop();
});

describe('health, readiness, metrics', () => {
  test('healthz_is_ok_without_auth', async () => {
    const r = await h.api('GET', '/healthz');
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: 'ok' });
    expect(r.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(r.headers.get('cache-control')).toBe('no-store');
  });

  test('readyz_reports_checks_and_503_when_not_ready', async () => {
    expect(await h.api('GET', '/readyz')).toMatchObject({ status: 200, json: { status: 'ready', checks: { policy: 'ok', store: 'ok' } } });
    h.ready = { ready: false, checks: { policy: 'ok', store: 'stale for 9000ms' } };
    expect(await h.api('GET', '/readyz')).toMatchObject({ status: 503, json: { status: 'not_ready', checks: { store: 'stale for 9000ms' } } });
  });

  test('metrics_is_prometheus_text_without_auth_by_default', async () => {
    const r = await h.api('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    expect(r.text).toContain('portcullis_up 1');
  });

  test('metrics_needs_a_token_when_metrics_auth_is_on', async () => {
    await h.stop();
    h = await new Harness().start({ metricsAuth: true });
    const denied = await h.api('GET', '/metrics');
    expect(denied.status).toBe(401);
    expect(denied.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect((await h.api('GET', '/metrics', { token: h.token.reader })).status).toBe(200);
  });
});

describe('authentication and authorization', () => {
  test.each([
    ['no header', {}],
    ['wrong scheme', { authorization: 'Basic YWRtaW46c2VjcmV0' }],
    ['not a token', { authorization: 'Bearer nonsense' }],
    ['unknown token', { authorization: `Bearer pca_${'0'.repeat(16)}_${'A'.repeat(43)}` }],
  ])('401_for_%s', async (_name, headers) => {
    const r = await h.api('GET', '/v1/accounts/alice', { headers });
    expect(r.status).toBe(401);
    expect(r.json).toMatchObject({ error: 'unauthorized' });
    expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(h.audit().at(-1)).toMatchObject({ actor: null, action: 'account.get', result: 'unauthorized', status: 401, level: 40 });
  });

  test.each([
    ['reader', 'PUT', '/v1/accounts/alice/lockdown', { enabled: true }],
    ['reader', 'POST', '/v1/accounts/alice/sessions', { app: 'chat' }],
    ['reader', 'DELETE', '/v1/accounts/alice/sessions', undefined],
    ['ops', 'POST', '/v1/policy/reload', undefined],
    ['teamOps', 'PUT', '/v1/accounts/team-b-1/lockdown', { enabled: true }],
    ['teamOps', 'GET', '/v1/accounts/team-b-1', undefined],
    ['teamOps', 'GET', '/v1/accounts/team-b-1/sessions', undefined],
    ['teamOps', 'PUT', '/v1/lockdown', { enabled: true }],
    ['teamAdmin', 'POST', '/v1/policy/reload', undefined],
    ['teamOps', 'POST', '/v1/explain', { account: 'team-b-1', method: 'GET', url: 'http://api.example.com/' }],
  ] as const)('403_for_%s_%s_%s', async (who, method, path, json) => {
    const r = await h.api(method, path, { token: h.token[who], ...(json !== undefined ? { json } : {}) });
    expect(r.status).toBe(403);
    expect(r.json).toMatchObject({ error: 'forbidden' });
    expect(h.audit().at(-1)).toMatchObject({ result: 'forbidden', status: 403 });
    // Refused changes change nothing.
    expect(h.store.getAccount('team-b-1').lockdown).toBe(false);
    expect(h.store.getGlobal().lockdown).toBe(false);
  });

  test('account_glob_allows_matching_accounts', async () => {
    expect((await h.api('PUT', '/v1/accounts/team-a-1/lockdown', { token: h.token.teamOps, json: { enabled: true } })).status).toBe(200);
    expect((await h.api('GET', '/v1/accounts/team-a-1', { token: h.token.teamOps })).status).toBe(200);
    expect((await h.api('GET', '/v1/policy', { token: h.token.reader })).status).toBe(200);
  });
});

describe('routing and input validation', () => {
  test('404_for_unknown_routes_and_405_with_allow', async () => {
    expect((await h.api('GET', '/v2/nothing', { token: h.token.admin })).json).toMatchObject({ error: 'not_found' });
    const r = await h.api('GET', '/v1/lockdown', { token: h.token.admin });
    expect(r.status).toBe(405);
    expect(r.headers.get('allow')).toBe('PUT');
    const patch = await h.api('PATCH', '/v1/accounts/alice/sessions', { token: h.token.admin });
    expect(patch.status).toBe(405);
    expect(patch.headers.get('allow')).toBe('POST, GET, DELETE');
  });

  test.each([
    ['wrong_type', { enabled: 'yes' }, 'enabled'],
    ['missing', {}, 'enabled'],
    ['unknown_key', { enabled: true, force: true }, 'force'],
  ])('400_names_the_field_%s', async (_name, json, field) => {
    const r = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin, json });
    expect(r.status).toBe(400);
    expect(r.json).toMatchObject({ error: 'bad_request', field });
    expect(r.json.message).toContain(field);
    expect(h.store.getAccount('alice').lockdown).toBe(false);
  });

  test('400_for_a_missing_body', async () => {
    const r = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin });
    expect(r.json).toMatchObject({ error: 'bad_request', field: 'enabled' });
  });

  test.each([
    ['bad characters', 'bad%20name!'],
    ['too long', 'a'.repeat(65)],
    ['empty oidc claim', 'oidc:'],
    ['oidc too long', `oidc:${'x'.repeat(196)}`],
    ['bad percent encoding', '%E0%A4%A'],
  ])('400_for_account_%s', async (_name, account) => {
    const r = await h.api('GET', `/v1/accounts/${account}`, { token: h.token.admin });
    expect(r.status).toBe(400);
    if (_name !== 'bad percent encoding') expect(r.json).toMatchObject({ error: 'bad_request', field: 'account' });
  });

  test('oidc_accounts_are_valid_names', async () => {
    const account = encodeURIComponent('oidc:google-oauth2|1234@example.com');
    const r = await h.api('GET', `/v1/accounts/${account}`, { token: h.token.reader });
    expect(r.status).toBe(200);
    expect(r.json.account).toBe('oidc:google-oauth2|1234@example.com');
  });

  test('415_for_non_json_bodies', async () => {
    const r = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin, body: 'enabled=true', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(r.status).toBe(415);
    expect(r.json).toMatchObject({ error: 'unsupported_media_type' });
  });

  test('400_for_invalid_json_and_non_objects', async () => {
    const bad = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin, body: '{"enabled":', headers: { 'content-type': 'application/json' } });
    expect(bad.json).toMatchObject({ error: 'bad_request', message: 'the body is not valid JSON' });
    const arr = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin, json: [true] });
    expect(arr.json).toMatchObject({ error: 'bad_request' });
  });

  test('413_for_a_declared_oversized_body', async () => {
    const r = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.admin, json: { app: 'chat', label: 'x'.repeat(MAX_BODY_BYTES) } });
    expect(r.status).toBe(413);
    expect(r.json).toMatchObject({ error: 'payload_too_large' });
    expect(h.store.listSessions('alice')).toHaveLength(0);
  });

  test('413_for_a_chunked_oversized_body', async () => {
    const url = new URL(h.base);
    const status = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(
        { host: url.hostname, port: url.port, method: 'POST', path: '/v1/accounts/alice/sessions', headers: { authorization: `Bearer ${h.token.admin}`, 'content-type': 'application/json' } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.write(`{"app":"chat","label":"${'x'.repeat(40_000)}`);
      req.end(`${'y'.repeat(40_000)}"}`);
    });
    expect(status).toBe(413);
  });

  test('unknown_query_parameters_are_refused', async () => {
    // A typo in "except" must not turn into "revoke everything".
    const r = await h.api('DELETE', '/v1/accounts/alice/sessions?excpet=0123456789abcdef', { token: h.token.admin });
    expect(r.json).toMatchObject({ error: 'bad_request', field: 'excpet' });
  });
});

describe('lockdown and developer mode', () => {
  test('enable_is_idempotent_and_audited', async () => {
    const first = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.ops, json: { enabled: true } });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ account: 'alice', lockdown: true, lockdownChangedBy: 'ops', effectiveLockdown: true, changed: true });
    const changedAt = first.json.lockdownChangedAt;
    h.now += 60_000;
    const second = await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.admin, json: { enabled: true } });
    expect(second.json).toMatchObject({ lockdown: true, lockdownChangedAt: changedAt, lockdownChangedBy: 'ops', changed: false });
    const lines = h.audit().filter((l) => l['action'] === 'lockdown.set');
    expect(lines).toEqual([
      expect.objectContaining({ actor: 'ops', account: 'alice', enabled: true, result: 'changed', status: 200 }),
      expect.objectContaining({ actor: 'root', account: 'alice', enabled: true, result: 'unchanged', status: 200 }),
    ]);
  });

  test('developer_mode_refused_while_in_lockdown_and_nothing_changes', async () => {
    await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.ops, json: { enabled: true } });
    const before = h.store.getAccount('alice');
    const r = await h.api('PUT', '/v1/accounts/alice/developer-mode', { token: h.token.ops, json: { enabled: true } });
    expect(r.status).toBe(409);
    expect(r.json).toEqual({ error: 'conflict', message: 'lockdown is on for this account: turn it off first' });
    expect(h.store.getAccount('alice')).toEqual(before);
    expect(h.audit().at(-1)).toMatchObject({ actor: 'ops', action: 'developer-mode.set', account: 'alice', result: 'conflict', status: 409 });
  });

  test('lockdown_refused_while_in_developer_mode_and_nothing_changes', async () => {
    expect((await h.api('PUT', '/v1/accounts/bob/developer-mode', { token: h.token.ops, json: { enabled: true } })).json).toMatchObject({ developerMode: true, changed: true });
    const before = h.store.getAccount('bob');
    const r = await h.api('PUT', '/v1/accounts/bob/lockdown', { token: h.token.ops, json: { enabled: true } });
    expect(r.status).toBe(409);
    expect(r.json).toEqual({ error: 'conflict', message: 'developer mode is on for this account: turn it off first' });
    expect(h.store.getAccount('bob')).toEqual(before);
    // Off first, then on works.
    await h.api('PUT', '/v1/accounts/bob/developer-mode', { token: h.token.ops, json: { enabled: false } });
    expect((await h.api('PUT', '/v1/accounts/bob/lockdown', { token: h.token.ops, json: { enabled: true } })).status).toBe(200);
  });

  test('global_lockdown_shows_in_account_state', async () => {
    const r = await h.api('PUT', '/v1/lockdown', { token: h.token.ops, json: { enabled: true } });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ lockdown: true, changedBy: 'ops', changed: true });
    const a = await h.api('GET', '/v1/accounts/carol', { token: h.token.reader });
    expect(a.json).toMatchObject({ account: 'carol', lockdown: false, effectiveLockdown: true, global: { lockdown: true, changedBy: 'ops' } });
    expect(h.audit().find((l) => l['action'] === 'lockdown.global')).toMatchObject({ actor: 'ops', account: null, result: 'changed' });
    expect((await h.api('PUT', '/v1/lockdown', { token: h.token.admin, json: { enabled: true } })).json.changed).toBe(false);
  });

  test('unknown_account_reads_as_all_off', async () => {
    const r = await h.api('GET', '/v1/accounts/nobody', { token: h.token.reader });
    expect(r.json).toEqual({
      account: 'nobody',
      lockdown: false,
      developerMode: false,
      lockdownChangedAt: null,
      lockdownChangedBy: null,
      developerModeChangedAt: null,
      developerModeChangedBy: null,
      global: { lockdown: false, changedAt: null, changedBy: null },
      effectiveLockdown: false,
      activeSessions: 0,
      signedOutAt: null,
    });
  });
});

describe('sessions', () => {
  test('create_returns_a_working_token_once_and_never_the_hash', async () => {
    const r = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat', label: 'laptop' } });
    expect(r.status).toBe(201);
    expect(r.json.token).toMatch(/^pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(r.json.session).toMatchObject({
      account: 'alice',
      app: 'chat',
      label: 'laptop',
      authMethod: 'token',
      status: 'active',
      createdBy: 'ops',
      createdAt: new Date(START).toISOString(),
      expiresAt: new Date(START + 24 * 3_600_000).toISOString(),
    });
    expect(r.text).not.toContain('tokenHash');
    // The token authenticates against the store like any proxy client's would.
    const auth = new Authenticator(h.store, { now: () => h.now }).authenticate(`Basic ${Buffer.from(`alice:${r.json.token}`).toString('base64')}`);
    expect(auth).toMatchObject({ ok: true, session: { id: r.json.session.id } });
    const list = await h.api('GET', '/v1/accounts/alice/sessions', { token: h.token.reader });
    expect(list.text).not.toContain(r.json.token);
    expect(list.text).not.toContain('tokenHash');
    expect(h.audit().at(-1)).toMatchObject({ actor: 'ops', action: 'session.create', account: 'alice', sessionId: r.json.session.id, app: 'chat', result: 'created', status: 201 });
  });

  test('ttl_shortens_but_may_not_exceed_the_server_ttl', async () => {
    const r = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat', ttl: '90m' } });
    expect(r.json.session.expiresAt).toBe(new Date(START + 90 * 60_000).toISOString());
    for (const ttl of ['2d', 'soon', '0s', '12']) {
      const bad = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat', ttl } });
      expect(bad.json).toMatchObject({ error: 'bad_request', field: 'ttl' });
    }
    expect(h.store.listSessions('alice')).toHaveLength(1);
  });

  test('no_server_ttl_means_no_expiry', async () => {
    await h.stop();
    h = await new Harness().start({ sessionTtlMs: null });
    const r = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat' } });
    expect(r.json.session.expiresAt).toBeNull();
  });

  test.each([
    ['bad_app', { app: 'has space' }, 'app'],
    ['missing_app', {}, 'app'],
    ['unknown_key', { app: 'chat', scope: 'all' }, 'scope'],
    ['label_control_chars', { app: 'chat', label: 'a\u0007b' }, 'label'],
  ])('create_400_%s', async (_name, json, field) => {
    const r = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json });
    expect(r.json).toMatchObject({ error: 'bad_request', field });
  });

  test('no_token_sessions_for_oidc_accounts', async () => {
    const r = await h.api('POST', `/v1/accounts/${encodeURIComponent('oidc:alice')}/sessions`, { token: h.token.admin, json: { app: 'chat' } });
    expect(r.json).toMatchObject({ error: 'bad_request', field: 'account' });
  });

  test('create_list_revoke_list_shows_revoked', async () => {
    const a = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat' } });
    h.now += 1000;
    const b = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'codex-cli' } });
    await h.api('POST', '/v1/accounts/bob/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const idA = a.json.session.id as string;
    const idB = b.json.session.id as string;

    const list = await h.api('GET', '/v1/accounts/alice/sessions', { token: h.token.reader });
    expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([idB, idA]);
    const chat = await h.api('GET', '/v1/accounts/alice/sessions?app=chat', { token: h.token.reader });
    expect(chat.json.sessions.map((s: { id: string }) => s.id)).toEqual([idA]);

    h.now += 1000;
    const revoked = await h.api('DELETE', `/v1/accounts/alice/sessions/${idA}`, { token: h.token.ops });
    expect(revoked.status).toBe(200);
    expect(revoked.json).toMatchObject({ changed: true, session: { id: idA, status: 'revoked', revokedBy: 'ops' } });
    expect(h.revoked).toEqual([['one', 1]]);
    const again = await h.api('DELETE', `/v1/accounts/alice/sessions/${idA}`, { token: h.token.admin });
    expect(again.json).toMatchObject({ changed: false, session: { revokedBy: 'ops' } });
    expect(h.revoked).toHaveLength(1);

    const after = await h.api('GET', '/v1/accounts/alice/sessions', { token: h.token.reader });
    expect(after.json.sessions.map((s: { id: string; status: string }) => [s.id, s.status])).toEqual([
      [idB, 'active'],
      [idA, 'revoked'],
    ]);
    expect(h.audit().filter((l) => l['action'] === 'session.revoke')).toEqual([
      expect.objectContaining({ actor: 'ops', account: 'alice', sessionId: idA, result: 'revoked' }),
      expect.objectContaining({ actor: 'root', account: 'alice', sessionId: idA, result: 'unchanged' }),
    ]);
  });

  test('expired_sessions_are_marked_expired', async () => {
    await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat', ttl: '1m' } });
    h.now += 120_000;
    const list = await h.api('GET', '/v1/accounts/alice/sessions', { token: h.token.reader });
    expect(list.json.sessions[0].status).toBe('expired');
  });

  test('audit_window_hides_old_ended_sessions_unless_all', async () => {
    await h.stop();
    h = await new Harness().start({ sessionAuditWindowMs: 3_600_000 });
    const old = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat' } });
    await h.api('DELETE', `/v1/accounts/alice/sessions/${old.json.session.id}`, { token: h.token.ops });
    h.now += 2 * 3_600_000;
    const live = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const list = await h.api('GET', '/v1/accounts/alice/sessions', { token: h.token.reader });
    expect(list.json.sessions.map((s: { id: string }) => s.id)).toEqual([live.json.session.id]);
    const all = await h.api('GET', '/v1/accounts/alice/sessions?all=true', { token: h.token.reader });
    expect(all.json.sessions).toHaveLength(2);
    expect((await h.api('GET', '/v1/accounts/alice/sessions?all=yes', { token: h.token.reader })).json).toMatchObject({ field: 'all' });
  });

  test('revoke_unknown_or_foreign_session_is_404', async () => {
    const bob = await h.api('POST', '/v1/accounts/bob/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const foreign = await h.api('DELETE', `/v1/accounts/alice/sessions/${bob.json.session.id}`, { token: h.token.ops });
    expect(foreign.status).toBe(404);
    expect(h.store.getSession(bob.json.session.id)?.revokedAt).toBeNull();
    expect((await h.api('DELETE', '/v1/accounts/alice/sessions/0123456789abcdef', { token: h.token.ops })).status).toBe(404);
    expect((await h.api('DELETE', '/v1/accounts/alice/sessions/not-an-id', { token: h.token.ops })).json).toMatchObject({ error: 'bad_request', field: 'id' });
    expect(h.revoked).toEqual([]);
  });

  test('revoke_all_with_except_keeps_one', async () => {
    const ids: string[] = [];
    for (const app of ['chat', 'codex-cli', 'agent']) {
      ids.push((await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app } })).json.session.id);
      h.now += 1000;
    }
    const other = await h.api('POST', '/v1/accounts/bob/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const keep = ids[1]!;
    const r = await h.api('DELETE', `/v1/accounts/alice/sessions?except=${keep}`, { token: h.token.ops });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ account: 'alice', revoked: 2, except: keep });
    expect([...r.json.ids].sort()).toEqual([ids[0], ids[2]].sort());
    expect(h.store.getSession(keep)?.revokedAt).toBeNull();
    expect(h.store.getSession(other.json.session.id)?.revokedAt).toBeNull();
    expect(h.revoked).toEqual([['all', 2]]);
    expect(h.audit().at(-1)).toMatchObject({ actor: 'ops', action: 'session.revoke-all', account: 'alice', count: 2, except: keep, result: 'revoked' });

    const rest = await h.api('DELETE', '/v1/accounts/alice/sessions', { token: h.token.ops });
    expect(rest.json).toMatchObject({ revoked: 1, ids: [keep], except: null });
  });

  test('revoke_all_refuses_an_except_that_is_not_this_accounts', async () => {
    const a = await h.api('POST', '/v1/accounts/alice/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const b = await h.api('POST', '/v1/accounts/bob/sessions', { token: h.token.ops, json: { app: 'chat' } });
    const r = await h.api('DELETE', `/v1/accounts/alice/sessions?except=${b.json.session.id}`, { token: h.token.ops });
    expect(r.json).toMatchObject({ error: 'bad_request', field: 'except' });
    expect(h.store.getSession(a.json.session.id)?.revokedAt).toBeNull();
  });
});

describe('policy', () => {
  test('get_policy_reports_hash_counts_and_warnings', async () => {
    const r = await h.api('GET', '/v1/policy', { token: h.token.reader });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      hash: h.reloader.current.hash,
      file: h.policyFile,
      loadedAt: new Date(START).toISOString(),
      counts: { destinations: 4, accountRules: 1, denyHosts: 0, tests: 0 },
    });
    expect(r.json.warnings).toHaveLength(1);
    expect(r.json.warnings[0]).toMatch(/policy\.yaml:\d+:\d+: .*unused/);
  });

  test('reload_good_then_bad_keeps_the_last_good_policy', async () => {
    const first = h.reloader.current.hash;
    const unchanged = await h.api('POST', '/v1/policy/reload', { token: h.token.admin });
    expect(unchanged.json).toMatchObject({ result: 'unchanged', hash: first });

    await writeFile(h.policyFile, POLICY.replace('  unused:\n    hosts: [unused.example.com]\n', ''));
    h.now += 5000;
    const good = await h.api('POST', '/v1/policy/reload', { token: h.token.admin, json: {} });
    expect(good.status).toBe(200);
    expect(good.json).toMatchObject({ result: 'success', previousHash: first, warnings: [] });
    const second = good.json.hash as string;
    expect(second).not.toBe(first);
    expect((await h.api('GET', '/v1/policy', { token: h.token.reader })).json).toMatchObject({ hash: second, loadedAt: new Date(START + 5000).toISOString(), warnings: [] });

    await writeFile(h.policyFile, 'version: 1\ndestinations:\n  api:\n    hosts: [api.example.com]\n    ports: [0]\n');
    const bad = await h.api('POST', '/v1/policy/reload', { token: h.token.admin });
    expect(bad.status).toBe(422);
    expect(bad.json).toMatchObject({ error: 'policy_invalid', result: 'failure', hash: second });
    expect(bad.json.issues[0]).toMatch(/policy\.yaml:5:\d+: destinations\.api\.ports/);
    expect(h.reloader.current.hash).toBe(second);
    expect((await h.api('GET', '/v1/policy', { token: h.token.reader })).json.hash).toBe(second);
    expect(h.reloads).toEqual(['unchanged', 'success', 'failure']);
    expect(h.audit().filter((l) => l['action'] === 'policy.reload').map((l) => l['result'])).toEqual(['unchanged', 'success', 'policy_invalid']);
  });

  test('reload_refuses_a_body_with_members', async () => {
    const r = await h.api('POST', '/v1/policy/reload', { token: h.token.admin, json: { force: true } });
    expect(r.json).toMatchObject({ error: 'bad_request', field: 'force' });
  });
});

describe('explain', () => {
  const ask = (json: unknown, token = h.token.reader) => h.api('POST', '/v1/explain', { token, json });

  test('allowlisted_request', async () => {
    const r = await ask({ account: 'alice', method: 'get', url: 'http://api.example.com/x' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ decision: 'allow', reason: 'allowlisted', destination: 'api', status: 200, account: 'alice', lockdown: false, developerMode: false, policyHash: h.reloader.current.hash });
    expect(r.json.why.length).toBeGreaterThan(0);
  });

  test('uses_the_accounts_current_state_unless_told', async () => {
    await h.api('PUT', '/v1/accounts/alice/lockdown', { token: h.token.ops, json: { enabled: true } });
    const locked = await ask({ account: 'alice', method: 'POST', url: 'http://docs.example.com/' });
    expect(locked.json).toMatchObject({ decision: 'deny', reason: 'lockdown_method', lockdown: true, status: 403 });
    const asIf = await ask({ account: 'alice', method: 'POST', url: 'http://docs.example.com/', lockdown: false });
    expect(asIf.json).toMatchObject({ decision: 'allow', lockdown: false });
    const dev = await ask({ account: 'bob', method: 'GET', url: 'http://dev.example.com/', developerMode: true });
    expect(dev.json).toMatchObject({ decision: 'allow', destination: 'devtools' });
    expect((await ask({ account: 'bob', method: 'GET', url: 'http://dev.example.com/' })).json).toMatchObject({ reason: 'developer_only' });
  });

  test('malformed_url_is_a_bad_request_decision', async () => {
    const r = await ask({ account: 'alice', method: 'GET', url: 'http://user@api.example.com/' });
    expect(r.json).toMatchObject({ decision: 'deny', reason: 'bad_request', status: 400 });
  });

  test.each([
    ['bad_method', { account: 'alice', method: 'G ET', url: 'http://a.example/' }, 'method'],
    ['bad_account', { account: 'no way', method: 'GET', url: 'http://a.example/' }, 'account'],
    ['unknown_key', { account: 'alice', method: 'GET', url: 'http://a.example/', verbose: true }, 'verbose'],
    ['wrong_type', { account: 'alice', method: 'GET', url: 'http://a.example/', lockdown: 'yes' }, 'lockdown'],
  ])('400_%s', async (_name, json, field) => {
    expect((await ask(json)).json).toMatchObject({ error: 'bad_request', field });
  });

  test('explain_does_not_need_more_than_read', async () => {
    expect((await ask({ account: 'team-a-1', method: 'GET', url: 'http://api.example.com/' }, h.token.teamOps)).status).toBe(200);
  });
});

describe('listeners', () => {
  test('unix_socket_is_0600_and_answers', async () => {
    const path = join(h.dir, 'admin.sock');
    const server = createAdminServer({ ...deps(), logger: pino({ level: 'silent' }) });
    try {
      expect(await server.listen({ path })).toBe(path);
      expect((await stat(path)).mode & 0o777).toBe(0o600);
      const body = await getOverSocket(path, '/healthz');
      expect(JSON.parse(body)).toEqual({ status: 'ok' });
    } finally {
      await server.close();
    }
    await expect(stat(path)).rejects.toThrow();
  });

  test('a_stale_socket_file_is_replaced_and_a_live_one_is_not', async () => {
    const path = join(h.dir, 'stale.sock');
    // A process killed while listening leaves its socket file behind.
    const child = spawnSync(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`]);
    expect(child.signal).toBe('SIGKILL');
    expect((await stat(path)).isSocket()).toBe(true);
    const server = createAdminServer({ ...deps(), logger: pino({ level: 'silent' }) });
    try {
      await server.listen({ path });
      const second = createAdminServer({ ...deps(), logger: pino({ level: 'silent' }) });
      await expect(second.listen({ path })).rejects.toThrow(/in use/);
      await second.close();
    } finally {
      await server.close();
    }
  });

  test('a_regular_file_at_the_socket_path_is_left_alone', async () => {
    const path = join(h.dir, 'not-a-socket');
    await writeFile(path, 'precious');
    const server = createAdminServer({ ...deps(), logger: pino({ level: 'silent' }) });
    await expect(server.listen({ path })).rejects.toThrow(/not a socket/);
    await server.close();
    expect((await stat(path)).isFile()).toBe(true);
  });

  test('close_is_idempotent_and_listen_errors_reject', async () => {
    const blocker = createNetServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const port = (blocker.address() as { port: number }).port;
    const server = createAdminServer({ ...deps(), logger: pino({ level: 'silent' }) });
    await expect(server.listen({ host: '127.0.0.1', port })).rejects.toThrow(/EADDRINUSE/);
    await Promise.all([server.close(), server.close()]);
    await server.close();
    await new Promise<void>((resolve) => blocker.close(() => resolve()));
    await h.server.close();
    await h.server.close();
  });
});

/** Minimal deps for extra servers in the listener tests. */
function deps() {
  return {
    store: h.store,
    policy: h.reloader,
    tokens: AdminTokens.fromEntries([]),
    metrics: { render: async () => '', contentType: 'text/plain' },
    ready: () => ({ ready: true, checks: {} }),
    sessionTtlMs: null,
    metricsAuth: false,
  };
}

function getOverSocket(socketPath: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
    req.on('error', reject);
    req.end();
  });
}
