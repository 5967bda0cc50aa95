/**
 * `portcullis sessions|lockdown|developer-mode …`: thin clients of the admin API (SPEC §6).
 * They send one request and print the answer; the server validates, decides and records the
 * actor (the admin token's name). Exit codes: 0 ok, 1 the API refused or could not be reached,
 * 2 usage. Common flags: --admin-url URL|unix:PATH, --token-file FILE, --json.
 */
import { readFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseArgs } from 'node:util';
import { UsageError, type Io } from './io.js';

/** Where the CLI looks for the admin API without --admin-url or PORTCULLIS_ADMIN_URL. */
export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:9090';
/** The plaintext admin token written on first start, relative to the working directory. */
export const DEFAULT_TOKEN_FILE = './data/admin.token';
/** The proxy address printed in the HTTP_PROXY line of `sessions create`. */
export const DEFAULT_PROXY = '127.0.0.1:3128';

const REQUEST_TIMEOUT_MS = 10_000;

const COMMON = {
  'admin-url': { type: 'string' },
  'token-file': { type: 'string' },
  json: { type: 'boolean', default: false },
} as const;

const COMMON_USAGE = '[--admin-url URL|unix:PATH] [--token-file FILE] [--json]';

/** How to reach the admin API and as whom. */
interface Client {
  readonly url: string;
  readonly token: string;
  readonly json: boolean;
}

interface ApiResponse {
  readonly status: number;
  readonly body: unknown;
}

interface SessionJson {
  id: string;
  account: string;
  app: string;
  label: string | null;
  authMethod: string;
  status: string;
  createdAt: string;
  expiresAt: string | null;
  lastSeenAt: string | null;
  clientIp: string | null;
  userAgent: string | null;
}

interface AccountJson {
  account: string;
  lockdown: boolean;
  developerMode: boolean;
  lockdownChangedAt: string | null;
  lockdownChangedBy: string | null;
  developerModeChangedAt: string | null;
  developerModeChangedBy: string | null;
  global: { lockdown: boolean; changedAt: string | null; changedBy: string | null };
  effectiveLockdown: boolean;
  activeSessions: number;
  changed?: boolean;
}

type CommonValues = { 'admin-url'?: string | undefined; 'token-file'?: string | undefined; json?: boolean | undefined };

/** The token: --token-file wins, then PORTCULLIS_ADMIN_TOKEN, then the first-start file. */
async function readToken(tokenFile: string | undefined): Promise<string> {
  const fromEnv = process.env['PORTCULLIS_ADMIN_TOKEN'];
  if (tokenFile === undefined && fromEnv !== undefined && fromEnv.trim() !== '') return fromEnv.trim();
  const file = tokenFile ?? DEFAULT_TOKEN_FILE;
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `cannot read the admin token from ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); ` +
        'set PORTCULLIS_ADMIN_TOKEN or pass --token-file FILE',
    );
  }
  const token = text.trim();
  if (token === '') throw new UsageError(`the admin token file ${file} is empty`);
  return token;
}

async function clientFrom(values: CommonValues): Promise<Client> {
  const url = values['admin-url'] ?? nonEmpty(process.env['PORTCULLIS_ADMIN_URL']) ?? DEFAULT_ADMIN_URL;
  requestTarget(url, '/'); // fail on a bad URL before reading any token
  return { url, token: await readToken(values['token-file']), json: values.json ?? false };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

/** Request options for an API path under `url` (http, https, or unix:PATH). */
function requestTarget(url: string, path: string): { options: RequestOptions; https: boolean } {
  if (url.startsWith('unix:')) {
    const socketPath = url.slice('unix:'.length);
    if (socketPath === '') throw new UsageError('--admin-url unix: needs a socket path, e.g. unix:/run/portcullis/admin.sock');
    return { options: { socketPath, path, host: 'localhost' }, https: false };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UsageError(`--admin-url "${url}" is not a URL; expected http://HOST:PORT or unix:PATH`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new UsageError(`--admin-url "${url}" must be http://, https:// or unix:PATH`);
  }
  const base = parsed.pathname.replace(/\/+$/, '');
  return {
    options: { hostname: parsed.hostname.replace(/^\[|\]$/g, ''), port: parsed.port === '' ? undefined : Number(parsed.port), path: base + path },
    https: parsed.protocol === 'https:',
  };
}

function readResponse(res: IncomingMessage): Promise<ApiResponse> {
  return new Promise((resolveResponse, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('error', reject);
    res.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown = text;
      try {
        body = JSON.parse(text);
      } catch {
        // Not JSON (a proxy in between, say): keep the text for the error message.
      }
      resolveResponse({ status: res.statusCode ?? 0, body });
    });
  });
}

/** Sends one request to the admin API. */
function call(c: Client, method: string, path: string, body?: unknown): Promise<ApiResponse> {
  const { options, https } = requestTarget(c.url, path);
  const payload = body === undefined ? undefined : JSON.stringify(body);
  const headers: Record<string, string | number> = { authorization: `Bearer ${c.token}`, accept: 'application/json' };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(payload);
  }
  return new Promise((resolveCall, reject) => {
    const req = (https ? httpsRequest : httpRequest)({ ...options, method, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      readResponse(res).then(resolveCall, reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${REQUEST_TIMEOUT_MS / 1000}s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

function errorLines(res: ApiResponse): string[] {
  const b = res.body;
  if (typeof b !== 'object' || b === null) return [`error: HTTP ${res.status}${typeof b === 'string' && b !== '' ? `: ${b.slice(0, 200)}` : ''}`];
  const { error, message, field, issues } = b as { error?: unknown; message?: unknown; field?: unknown; issues?: unknown };
  const lines = [`error: ${String(message ?? error ?? `HTTP ${res.status}`)}${typeof field === 'string' ? ` (field: ${field})` : ''}`];
  if (Array.isArray(issues)) for (const i of issues) lines.push(`  ${String(i)}`);
  if (res.status === 401) lines.push('check PORTCULLIS_ADMIN_TOKEN or --token-file');
  return lines;
}

/** Sends, then prints: the raw JSON with --json, else `render`'s lines; errors go to stderr. */
async function execute(io: Io, c: Client, method: string, path: string, body: unknown, render: (body: unknown) => string[]): Promise<number> {
  let res: ApiResponse;
  try {
    res = await call(c, method, path, body);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    io.err(`error: cannot reach the admin API at ${c.url}: ${e.code ?? e.message}`);
    return 1;
  }
  const ok = res.status >= 200 && res.status < 300;
  if (c.json) {
    io.out(JSON.stringify(res.body));
    return ok ? 0 : 1;
  }
  if (!ok) {
    for (const line of errorLines(res)) io.err(line);
    return 1;
  }
  for (const line of render(res.body)) io.out(line);
  return 0;
}

function accountPath(account: string, rest = ''): string {
  return `/v1/accounts/${encodeURIComponent(account)}${rest}`;
}

/** Exactly `count` positionals, or a usage error. */
function positionalsOf(positionals: string[], count: number, usage: string): string[] {
  if (positionals.length !== count) throw new UsageError(`usage: ${usage}`);
  return positionals;
}

/** "2025-01-02T03:04Z": minutes are enough in a table, and UTC avoids guessing the server's zone. */
function shortTime(iso: string | null): string {
  return iso === null ? '-' : `${iso.slice(0, 16)}Z`;
}

function clientOf(s: SessionJson): string {
  // The first product token of the user agent ("curl/8.5.0") says enough in a table.
  const agent = s.userAgent?.split(' ')[0]?.slice(0, 32);
  const parts = [s.clientIp, agent].filter((p): p is string => p !== null && p !== undefined && p !== '');
  return parts.length > 0 ? parts.join(' ') : '-';
}

/** Rows padded into aligned columns, two spaces apart. */
export function formatTable(rows: readonly (readonly string[])[]): string[] {
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd());
}

const LIST_USAGE = `portcullis sessions list ACCOUNT [--app APP] [--all] ${COMMON_USAGE}`;

/** `sessions list ACCOUNT [--app X] [--all]`: an aligned table, newest first. */
export async function sessionsList(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...COMMON, app: { type: 'string' }, all: { type: 'boolean', default: false } } });
  const [account] = positionalsOf(positionals, 1, LIST_USAGE) as [string];
  const c = await clientFrom(values);
  const query = new URLSearchParams();
  if (values.app !== undefined) query.set('app', values.app);
  if (values.all) query.set('all', 'true');
  const qs = query.size > 0 ? `?${query.toString()}` : '';
  return execute(io, c, 'GET', accountPath(account, `/sessions${qs}`), undefined, (body) => {
    const sessions = (body as { sessions: SessionJson[] }).sessions;
    if (sessions.length === 0) return [`no sessions for ${account}`];
    const header = ['ID', 'APP', 'METHOD', 'CREATED', 'LAST SEEN', 'CLIENT', 'STATUS'];
    const rows = sessions.map((s) => [s.id, s.app, s.authMethod, shortTime(s.createdAt), shortTime(s.lastSeenAt), clientOf(s), s.status]);
    return formatTable([header, ...rows]);
  });
}

const CREATE_USAGE = `portcullis sessions create ACCOUNT --app APP [--label TEXT] [--ttl DURATION] [--proxy HOST:PORT] ${COMMON_USAGE}`;

/** `sessions create ACCOUNT --app X [--label L] [--ttl 12h]`: prints the token once, and an HTTP_PROXY line. */
export async function sessionsCreate(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { ...COMMON, app: { type: 'string' }, label: { type: 'string' }, ttl: { type: 'string' }, proxy: { type: 'string', default: DEFAULT_PROXY } },
  });
  const [account] = positionalsOf(positionals, 1, CREATE_USAGE) as [string];
  if (values.app === undefined) throw new UsageError(`--app is required\nusage: ${CREATE_USAGE}`);
  const c = await clientFrom(values);
  const body = { app: values.app, ...(values.label !== undefined ? { label: values.label } : {}), ...(values.ttl !== undefined ? { ttl: values.ttl } : {}) };
  return execute(io, c, 'POST', accountPath(account, '/sessions'), body, (res) => {
    const { session, token } = res as { session: SessionJson; token: string };
    return [
      `created session ${session.id} for ${account} (app ${session.app}, expires ${session.expiresAt ?? 'never'})`,
      'token (shown only now; store it as a secret):',
      `  ${token}`,
      `HTTP_PROXY=http://${encodeURIComponent(account)}:${token}@${values.proxy}`,
    ];
  });
}

const REVOKE_USAGE = `portcullis sessions revoke ACCOUNT ID ${COMMON_USAGE}`;

/** `sessions revoke ACCOUNT ID`. */
export async function sessionsRevoke(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: COMMON });
  const [account, id] = positionalsOf(positionals, 2, REVOKE_USAGE) as [string, string];
  const c = await clientFrom(values);
  return execute(io, c, 'DELETE', accountPath(account, `/sessions/${encodeURIComponent(id)}`), undefined, (res) => {
    const { changed } = res as { changed: boolean };
    return [changed ? `revoked session ${id} of ${account}` : `session ${id} of ${account} was already revoked`];
  });
}

const REVOKE_ALL_USAGE = `portcullis sessions revoke-all ACCOUNT [--except ID] ${COMMON_USAGE}`;

/** `sessions revoke-all ACCOUNT [--except ID]`: sign out everywhere. */
export async function sessionsRevokeAll(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...COMMON, except: { type: 'string' } } });
  const [account] = positionalsOf(positionals, 1, REVOKE_ALL_USAGE) as [string];
  const c = await clientFrom(values);
  const qs = values.except !== undefined ? `?except=${encodeURIComponent(values.except)}` : '';
  return execute(io, c, 'DELETE', accountPath(account, `/sessions${qs}`), undefined, (res) => {
    const { revoked, ids } = res as { revoked: number; ids: string[] };
    const kept = values.except !== undefined ? ` (kept ${values.except})` : '';
    return [`revoked ${revoked} session${revoked === 1 ? '' : 's'} of ${account}${kept}`, ...ids.map((id) => `  ${id}`)];
  });
}

function flagWords(a: AccountJson, flag: 'lockdown' | 'developerMode'): string {
  const on = a[flag];
  const at = flag === 'lockdown' ? a.lockdownChangedAt : a.developerModeChangedAt;
  const by = flag === 'lockdown' ? a.lockdownChangedBy : a.developerModeChangedBy;
  return `${on ? 'on' : 'off'}${at !== null ? ` (since ${at}${by !== null ? ` by ${by}` : ''})` : ''}`;
}

async function setLockdown(argv: string[], io: Io, enabled: boolean): Promise<number> {
  const word = enabled ? 'on' : 'off';
  const usage = `portcullis lockdown ${word} ACCOUNT | --all ${COMMON_USAGE}`;
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { ...COMMON, all: { type: 'boolean', default: false } } });
  // Exactly one of ACCOUNT and --all: a stray argument next to --all must not go unnoticed.
  if (values.all ? positionals.length !== 0 : positionals.length !== 1) throw new UsageError(`usage: ${usage}`);
  const c = await clientFrom(values);
  if (values.all) {
    return execute(io, c, 'PUT', '/v1/lockdown', { enabled }, (res) => {
      const { changed } = res as { changed: boolean };
      const what = enabled ? 'global lockdown is on: every account is locked down' : 'global lockdown is off';
      return [`${what}${changed ? '' : ' (unchanged)'}`];
    });
  }
  const account = positionals[0] as string;
  return execute(io, c, 'PUT', accountPath(account, '/lockdown'), { enabled }, (res) => {
    const a = res as AccountJson;
    const lines = [`lockdown is ${word} for ${account}${a.changed === false ? ' (unchanged)' : ''}`];
    if (!enabled && a.global.lockdown) lines.push(`note: global lockdown is on, so ${account} stays locked down until it is turned off`);
    return lines;
  });
}

/** `lockdown on ACCOUNT` or `lockdown on --all` (the global incident switch). */
export function lockdownOn(argv: string[], io: Io): Promise<number> {
  return setLockdown(argv, io, true);
}

/** `lockdown off ACCOUNT` or `lockdown off --all`. */
export function lockdownOff(argv: string[], io: Io): Promise<number> {
  return setLockdown(argv, io, false);
}

/** `lockdown status ACCOUNT`: the account's flags, the global switch and the effective state. */
export async function lockdownStatus(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: COMMON });
  const [account] = positionalsOf(positionals, 1, `portcullis lockdown status ACCOUNT ${COMMON_USAGE}`) as [string];
  const c = await clientFrom(values);
  return execute(io, c, 'GET', accountPath(account), undefined, (res) => {
    const a = res as AccountJson;
    const g = a.global;
    return [
      account,
      `  lockdown:         ${flagWords(a, 'lockdown')}`,
      `  developer mode:   ${flagWords(a, 'developerMode')}`,
      `  global lockdown:  ${g.lockdown ? 'on' : 'off'}${g.changedAt !== null ? ` (since ${g.changedAt}${g.changedBy !== null ? ` by ${g.changedBy}` : ''})` : ''}`,
      `  effective:        ${a.effectiveLockdown ? 'locked down' : 'not locked down'}`,
      `  active sessions:  ${a.activeSessions}`,
    ];
  });
}

async function setDeveloperMode(argv: string[], io: Io, enabled: boolean): Promise<number> {
  const word = enabled ? 'on' : 'off';
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: COMMON });
  const [account] = positionalsOf(positionals, 1, `portcullis developer-mode ${word} ACCOUNT ${COMMON_USAGE}`) as [string];
  const c = await clientFrom(values);
  return execute(io, c, 'PUT', accountPath(account, '/developer-mode'), { enabled }, (res) => {
    const a = res as AccountJson;
    const lines = [`developer mode is ${word} for ${account}${a.changed === false ? ' (unchanged)' : ''}`];
    if (enabled && a.global.lockdown) lines.push('note: global lockdown is on and overrides developer mode until it is turned off');
    return lines;
  });
}

/** `developer-mode on ACCOUNT`. */
export function developerModeOn(argv: string[], io: Io): Promise<number> {
  return setDeveloperMode(argv, io, true);
}

/** `developer-mode off ACCOUNT`. */
export function developerModeOff(argv: string[], io: Io): Promise<number> {
  return setDeveloperMode(argv, io, false);
}
