/**
 * Admin tokens (SPEC §6): named bearer tokens `pca_<id>_<secret>` with a role and an account
 * glob. Like session tokens, the id (16 hex chars) finds the entry in O(1) and the secret
 * (43 base64url chars, 256 random bits) is kept only as its sha256 and compared in constant time.
 * The tokens file holds no secrets; the plaintext of the first admin token is written once to
 * `admin.token` beside it so that `serve` can say where it is.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { z } from 'zod';
import { hashSecret, newSessionId, verifySecret } from '../identity/tokens.js';
import { compileAccountGlob } from '../policy/glob.js';
import { writeFileAtomic } from '../state/file-store.js';

/** Prefix that marks a Portcullis admin token (and lets secret scanners recognize leaks). */
export const ADMIN_TOKEN_PREFIX = 'pca_';

/** The tokens file format this code reads and writes. */
export const ADMIN_TOKENS_VERSION = 1;

/** Name of the plaintext first-start token file, next to the tokens file. */
export const ADMIN_TOKEN_FILENAME = 'admin.token';

/** Roles, weakest first: read (GET only) < operator (sessions, lockdown, developer mode) < admin (everything). */
export const ADMIN_ROLES = ['read', 'operator', 'admin'] as const;

/** What an admin token may do. */
export type AdminRole = (typeof ADMIN_ROLES)[number];

// Fixed lengths make the split unambiguous even though base64url secrets may contain "_".
const ADMIN_TOKEN = /^pca_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ADMIN_TOKEN_LENGTH = ADMIN_TOKEN_PREFIX.length + 16 + 1 + 43;

/** Token names end up in logs and in `changedBy`/`revokedBy`, so they are plain words. */
const TokenNameSchema = z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'token names are 1-64 characters of A-Za-z0-9._-');
/** An account glob: account characters (OIDC ones included) plus "*" and "?". */
const AccountGlobSchema = z.string().regex(/^[A-Za-z0-9._\-:@|*?]{1,200}$/, 'accounts is a glob of account characters, "*" and "?"');

/** One entry of the tokens file. */
export const AdminTokenEntrySchema = z.strictObject({
  name: TokenNameSchema,
  role: z.enum(ADMIN_ROLES),
  accounts: AccountGlobSchema.default('*'),
  id: z.string().regex(/^[0-9a-f]{16}$/, 'id is 16 lowercase hex characters'),
  hash: z.string().regex(/^[0-9a-f]{64}$/, 'hash is the sha256 of the secret, 64 lowercase hex characters'),
});

/** One token as stored: never the secret. */
export type AdminTokenEntry = z.infer<typeof AdminTokenEntrySchema>;

const AdminTokensFileSchema = z.strictObject({
  version: z.literal(ADMIN_TOKENS_VERSION),
  tokens: z.array(AdminTokenEntrySchema),
});

/** Who is calling the admin API: the token's name, role and the accounts it may touch or see. */
export interface AdminPrincipal {
  readonly name: string;
  readonly role: AdminRole;
  /** The account glob as written in the tokens file. */
  readonly accounts: string;
  /** True when the glob is "*": only such tokens may act on every account at once. */
  readonly allAccounts: boolean;
  /** Whether the token may touch or see this account. */
  canAccess(account: string): boolean;
}

/** The tokens file exists but cannot be used; the server refuses to start rather than guess. */
export class AdminTokensError extends Error {
  override readonly name = 'AdminTokensError';
  readonly code = 'admin_tokens_invalid';
  /** Absolute path of the offending file. */
  readonly file: string;

  constructor(file: string, problem: string, options?: ErrorOptions) {
    super(`admin tokens file ${file} ${problem}`, options);
    this.file = file;
  }
}

/** Whether a token of role `have` may call a route that needs `need`. */
export function roleAllows(have: AdminRole, need: AdminRole): boolean {
  return ADMIN_ROLES.indexOf(have) >= ADMIN_ROLES.indexOf(need);
}

/** Splits an admin token into id and secret; null for anything not exactly in the format. */
export function parseAdminToken(token: string): { id: string; secret: string } | null {
  if (typeof token !== 'string' || token.length !== ADMIN_TOKEN_LENGTH) return null;
  const m = ADMIN_TOKEN.exec(token);
  if (m === null) return null;
  const [, id, secret] = m;
  if (id === undefined || secret === undefined) return null;
  return { id, secret };
}

/** A new token and its file entry; the token is shown once and only the entry is stored. */
export function mintAdminToken(name: string, role: AdminRole, accounts = '*'): { entry: AdminTokenEntry; token: string } {
  const checked = AdminTokenEntrySchema.pick({ name: true, role: true, accounts: true }).parse({ name, role, accounts });
  const id = newSessionId();
  const secret = randomBytes(32).toString('base64url');
  return { entry: { ...checked, id, hash: hashSecret(secret) }, token: `${ADMIN_TOKEN_PREFIX}${id}_${secret}` };
}

function toPrincipal(entry: AdminTokenEntry): AdminPrincipal {
  const matches = compileAccountGlob(entry.accounts);
  return Object.freeze({
    name: entry.name,
    role: entry.role,
    accounts: entry.accounts,
    allAccounts: entry.accounts === '*',
    canAccess: (account: string) => matches(account),
  });
}

// Compared against when the id is unknown, so that a miss costs about as much as a wrong secret.
const DUMMY_HASH = hashSecret('portcullis-admin-token-miss');

/** The loaded tokens: verify() maps a bearer token to its principal. Immutable once built. */
export class AdminTokens {
  readonly #byId: ReadonlyMap<string, { readonly hash: string; readonly principal: AdminPrincipal }>;

  private constructor(entries: readonly AdminTokenEntry[]) {
    this.#byId = new Map(entries.map((e) => [e.id, { hash: e.hash, principal: toPrincipal(e) }]));
  }

  /** Reads and validates a tokens file; throws AdminTokensError on any problem. */
  static async load(file: string): Promise<AdminTokens> {
    const path = resolve(file);
    let json: string;
    let mode: number;
    try {
      json = await readFile(path, 'utf8');
      mode = (await stat(path)).mode;
    } catch (err) {
      throw new AdminTokensError(path, `cannot be read: ${(err as Error).message}`, { cause: err });
    }
    // Whoever can write this file can add an admin token for themselves (as ssh refuses such keys files).
    if (process.platform !== 'win32' && (mode & 0o022) !== 0) {
      throw new AdminTokensError(path, `is writable by group or others (mode ${(mode & 0o777).toString(8)}); run chmod 600 on it`);
    }
    return new AdminTokens(parseAdminTokensDocument(json, path));
  }

  /** Tokens from entries already in memory (tests, and a future `admin-token` command). */
  static fromEntries(entries: readonly AdminTokenEntry[]): AdminTokens {
    checkUnique(entries.map((e) => AdminTokenEntrySchema.parse(e)), '(memory)');
    return new AdminTokens(entries);
  }

  /** Number of tokens. */
  get size(): number {
    return this.#byId.size;
  }

  /** The principal a bearer token (the text after "Bearer ") belongs to; null if it is not valid. */
  verify(bearer: string): AdminPrincipal | null {
    const parsed = parseAdminToken(bearer);
    if (parsed === null) return null;
    const entry = this.#byId.get(parsed.id);
    const ok = verifySecret(parsed.secret, entry?.hash ?? DUMMY_HASH);
    return ok && entry !== undefined ? entry.principal : null;
  }
}

function checkUnique(entries: readonly AdminTokenEntry[], file: string): void {
  const names = new Set<string>();
  const ids = new Set<string>();
  for (const e of entries) {
    if (names.has(e.name)) throw new AdminTokensError(file, `has two tokens named "${e.name}"; names identify the actor in logs`);
    if (ids.has(e.id)) throw new AdminTokensError(file, `has two tokens with id ${e.id}`);
    names.add(e.name);
    ids.add(e.id);
  }
}

/** Parses a tokens document; `file` only names it in errors. */
export function parseAdminTokensDocument(json: string, file: string): AdminTokenEntry[] {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    throw new AdminTokensError(file, `is not valid JSON (${(err as Error).message})`, { cause: err });
  }
  const parsed = AdminTokensFileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue ? issue.path.map(String).join('.') : '';
    throw new AdminTokensError(file, `is invalid: ${where === '' ? '' : `${where}: `}${issue?.message ?? 'unknown problem'}`);
  }
  checkUnique(parsed.data.tokens, file);
  return parsed.data.tokens;
}

/** The tokens file content for these entries. */
export function serializeAdminTokens(entries: readonly AdminTokenEntry[]): string {
  return `${JSON.stringify({ version: ADMIN_TOKENS_VERSION, tokens: entries }, null, 2)}\n`;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * First start: when `file` does not exist, creates one `admin` token, writes its plaintext to
 * `admin.token` in the same directory, then the tokens file (both 0600, directory 0700).
 * An existing file is left alone.
 */
export async function ensureAdminTokens(file: string): Promise<{ created: boolean; tokenFile?: string }> {
  const path = resolve(file);
  if (await exists(path)) return { created: false };
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const { entry, token } = mintAdminToken('admin', 'admin', '*');
  const tokenFile = join(dirname(path), ADMIN_TOKEN_FILENAME);
  // Plaintext first: a crash in between then leaves no tokens file and the next start simply
  // mints again, instead of a tokens file whose only secret was never written anywhere.
  await writeFileAtomic(tokenFile, `${token}\n`);
  await writeFileAtomic(path, serializeAdminTokens([entry]));
  return { created: true, tokenFile };
}
