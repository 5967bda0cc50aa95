import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import {
  ADMIN_TOKEN_FILENAME,
  AdminTokens,
  AdminTokensError,
  ensureAdminTokens,
  mintAdminToken,
  parseAdminToken,
  roleAllows,
  serializeAdminTokens,
} from '../../src/admin/tokens.js';
import { hashSecret } from '../../src/identity/tokens.js';

const TOKEN_FORMAT = /^pca_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/;

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'portcullis-admin-tokens-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('mintAdminToken', () => {
  test('format_and_entry_agree', () => {
    const { entry, token } = mintAdminToken('ops', 'operator', 'team-a-*');
    expect(token).toMatch(TOKEN_FORMAT);
    const parsed = parseAdminToken(token);
    expect(parsed?.id).toBe(entry.id);
    expect(entry.hash).toBe(hashSecret(parsed?.secret ?? ''));
    expect(entry).toEqual({ name: 'ops', role: 'operator', accounts: 'team-a-*', id: entry.id, hash: entry.hash });
    expect(JSON.stringify(entry)).not.toContain(parsed?.secret);
  });

  test('refuses_bad_names_and_globs', () => {
    expect(() => mintAdminToken('has space', 'read')).toThrow();
    expect(() => mintAdminToken('ok', 'read', 'bad glob!')).toThrow();
  });
});

describe('parseAdminToken', () => {
  test.each([
    ['session token prefix', `pcs_${'a'.repeat(16)}_${'b'.repeat(43)}`],
    ['short secret', `pca_${'a'.repeat(16)}_${'b'.repeat(42)}`],
    ['upper-case id', `pca_${'A'.repeat(16)}_${'b'.repeat(43)}`],
    ['empty', ''],
    ['trailing newline', `pca_${'a'.repeat(16)}_${'b'.repeat(43)}\n`],
  ])('rejects_%s', (_name, text) => {
    expect(parseAdminToken(text)).toBeNull();
  });
});

describe('AdminTokens.verify', () => {
  const admin = mintAdminToken('root', 'admin');
  const reader = mintAdminToken('dash', 'read', 'team-a-*');
  const tokens = AdminTokens.fromEntries([admin.entry, reader.entry]);

  test('valid_tokens_map_to_their_principal', () => {
    const p = tokens.verify(admin.token);
    expect(p).toMatchObject({ name: 'root', role: 'admin', accounts: '*', allAccounts: true });
    expect(p?.canAccess('anything')).toBe(true);
    const r = tokens.verify(reader.token);
    expect(r).toMatchObject({ name: 'dash', role: 'read', allAccounts: false });
    expect(r?.canAccess('team-a-1')).toBe(true);
    expect(r?.canAccess('team-b-1')).toBe(false);
  });

  test('wrong_secret_unknown_id_and_garbage_are_refused', () => {
    const parsed = parseAdminToken(admin.token)!;
    const flipped = parsed.secret.startsWith('A') ? `B${parsed.secret.slice(1)}` : `A${parsed.secret.slice(1)}`;
    expect(tokens.verify(`pca_${parsed.id}_${flipped}`)).toBeNull();
    expect(tokens.verify(`pca_${'0'.repeat(16)}_${parsed.secret}`)).toBeNull();
    expect(tokens.verify('Bearer ' + admin.token)).toBeNull();
    expect(tokens.verify('')).toBeNull();
  });

  test('duplicate_names_are_refused', () => {
    const twin = mintAdminToken('root', 'read');
    expect(() => AdminTokens.fromEntries([admin.entry, twin.entry])).toThrow(AdminTokensError);
  });
});

describe('roleAllows', () => {
  test.each([
    ['read', 'read', true],
    ['read', 'operator', false],
    ['operator', 'read', true],
    ['operator', 'admin', false],
    ['admin', 'operator', true],
  ] as const)('%s_for_%s_is_%s', (have, need, expected) => {
    expect(roleAllows(have, need)).toBe(expected);
  });
});

describe('AdminTokens.load', () => {
  test('loads_a_file_and_defaults_accounts', async () => {
    const { entry, token } = mintAdminToken('ci', 'operator');
    const file = join(dir, 'tokens.json');
    const { accounts: _omitted, ...withoutAccounts } = entry;
    await writeFile(file, JSON.stringify({ version: 1, tokens: [withoutAccounts] }), { mode: 0o600 });
    const tokens = await AdminTokens.load(file);
    expect(tokens.size).toBe(1);
    expect(tokens.verify(token)?.accounts).toBe('*');
  });

  test.each([
    ['not_json', '{'],
    ['wrong_version', JSON.stringify({ version: 2, tokens: [] })],
    ['unknown_key', JSON.stringify({ version: 1, tokens: [], extra: true })],
    ['bad_role', JSON.stringify({ version: 1, tokens: [{ name: 'x', role: 'root', id: 'a'.repeat(16), hash: 'b'.repeat(64) }] })],
    ['bad_hash', JSON.stringify({ version: 1, tokens: [{ name: 'x', role: 'read', id: 'a'.repeat(16), hash: 'xyz' }] })],
  ])('refuses_%s', async (_name, content) => {
    const file = join(dir, 'tokens.json');
    await writeFile(file, content, { mode: 0o600 });
    await expect(AdminTokens.load(file)).rejects.toThrow(AdminTokensError);
  });

  test.skipIf(process.platform === 'win32')('a_group_writable_file_is_refused', async () => {
    const file = join(dir, 'tokens.json');
    await writeFile(file, serializeAdminTokens([mintAdminToken('x', 'read').entry]));
    await chmod(file, 0o664);
    await expect(AdminTokens.load(file)).rejects.toThrow(/writable by group or others \(mode 664\)/);
    await chmod(file, 0o644);
    expect((await AdminTokens.load(file)).size).toBe(1);
  });

  test('missing_file_is_an_error_naming_it', async () => {
    await expect(AdminTokens.load(join(dir, 'nope.json'))).rejects.toThrow(/nope\.json/);
  });
});

describe('ensureAdminTokens', () => {
  test('first_start_creates_token_and_plaintext_file_0600', async () => {
    const file = join(dir, 'data', 'admin-tokens.json');
    const result = await ensureAdminTokens(file);
    expect(result).toEqual({ created: true, tokenFile: join(dir, 'data', ADMIN_TOKEN_FILENAME) });
    const token = (await readFile(result.tokenFile!, 'utf8')).trim();
    expect(token).toMatch(TOKEN_FORMAT);
    const tokens = await AdminTokens.load(file);
    expect(tokens.verify(token)).toMatchObject({ name: 'admin', role: 'admin', accounts: '*' });
    // The tokens file holds only the hash.
    expect(await readFile(file, 'utf8')).not.toContain(parseAdminToken(token)!.secret);
    if (process.platform !== 'win32') {
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      expect((await stat(result.tokenFile!)).mode & 0o777).toBe(0o600);
      expect((await stat(join(dir, 'data'))).mode & 0o777).toBe(0o700);
    }
  });

  test('existing_file_is_left_alone', async () => {
    const file = join(dir, 'admin-tokens.json');
    const content = serializeAdminTokens([mintAdminToken('keep', 'read').entry]);
    await writeFile(file, content, { mode: 0o600 });
    expect(await ensureAdminTokens(file)).toEqual({ created: false });
    expect(await readFile(file, 'utf8')).toBe(content);
    await expect(stat(join(dir, ADMIN_TOKEN_FILENAME))).rejects.toThrow();
  });
});
