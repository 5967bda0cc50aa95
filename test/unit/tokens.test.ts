import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  hashSecret,
  isSessionId,
  mintSessionToken,
  newSessionId,
  parseSessionToken,
  verifySecret,
} from '../../src/identity/tokens.js';

const TOKEN_FORMAT = /^pcs_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/;

describe('mintSessionToken', () => {
  test('format_and_parts_agree', () => {
    const { id, token, secretHash } = mintSessionToken();
    expect(token).toMatch(TOKEN_FORMAT);
    expect(token).toHaveLength(64);
    const parsed = parseSessionToken(token);
    expect(parsed?.id).toBe(id);
    expect(isSessionId(id)).toBe(true);
    expect(secretHash).toBe(hashSecret(parsed?.secret ?? ''));
    expect(secretHash).toMatch(/^[0-9a-f]{64}$/);
    expect(secretHash).not.toContain(parsed?.secret);
  });

  test('secret_carries_256_bits', () => {
    const parsed = parseSessionToken(mintSessionToken().token);
    expect(Buffer.from(parsed?.secret ?? '', 'base64url')).toHaveLength(32);
  });

  test('ids_and_tokens_do_not_repeat', () => {
    const minted = Array.from({ length: 2000 }, () => mintSessionToken());
    expect(new Set(minted.map((m) => m.id)).size).toBe(minted.length);
    expect(new Set(minted.map((m) => m.token)).size).toBe(minted.length);
  });
});

describe('newSessionId', () => {
  test('same_format_as_token_ids', () => {
    for (let i = 0; i < 100; i += 1) expect(newSessionId()).toMatch(/^[0-9a-f]{16}$/);
  });

  test.each([
    ['upper_case', 'ABCDEF0123456789'],
    ['too_short', 'abcdef012345678'],
    ['too_long', 'abcdef01234567890'],
    ['non_hex', 'abcdefg123456789'],
    ['ses_prefix', 'ses_abcdef012345'],
  ])('isSessionId_rejects_%s', (_name, id) => {
    expect(isSessionId(id)).toBe(false);
  });
});

describe('parseSessionToken', () => {
  const good = mintSessionToken().token;
  const id = good.slice(4, 20);
  const secret = good.slice(21);

  test('secret_may_contain_underscores_and_dashes', () => {
    const s = `${'_'.repeat(20)}${'-'.repeat(23)}`;
    expect(parseSessionToken(`pcs_${id}_${s}`)).toEqual({ id, secret: s });
  });

  test.each([
    ['empty', ''],
    ['wrong_prefix', `pct_${id}_${secret}`],
    ['upper_prefix', `PCS_${id}_${secret}`],
    ['no_prefix', `${id}_${secret}`],
    ['upper_case_id', `pcs_${id.toUpperCase().replace(/[0-9]/g, 'A')}_${secret}`],
    ['short_id', `pcs_${id.slice(1)}_${secret}`],
    ['long_id', `pcs_${id}0_${secret}`],
    ['short_secret', `pcs_${id}_${secret.slice(1)}`],
    ['long_secret', `pcs_${id}_${secret}A`],
    ['padded_secret', `pcs_${id}_${secret.slice(1)}=`],
    ['standard_base64_chars', `pcs_${id}_${secret.slice(2)}+/`],
    ['leading_space', ` ${good}`],
    ['trailing_newline', `${good}\n`],
    ['missing_separator', `pcs_${id}${secret}`],
    ['dot_separator', `pcs_${id}.${secret}`],
    ['basic_auth_pair', `alice:${good}`],
    ['non_ascii', `pcs_${id}_${secret.slice(1)}é`],
  ])('rejects_%s', (_name, token) => {
    expect(parseSessionToken(token)).toBeNull();
  });

  test('rejects_non_strings_without_throwing', () => {
    for (const v of [undefined, null, 42, {}, [good]]) {
      expect(parseSessionToken(v as unknown as string)).toBeNull();
    }
  });

  test('never_throws_and_accepts_only_the_format', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }), (s) => {
        const parsed = parseSessionToken(s);
        if (parsed !== null) expect(s).toMatch(TOKEN_FORMAT);
      }),
    );
  });
});

describe('hashSecret and verifySecret', () => {
  test('sha256_hex_known_vector', () => {
    expect(hashSecret('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  test('verifies_the_right_secret_only', () => {
    const token = mintSessionToken();
    const parsed = parseSessionToken(token.token);
    const secret = parsed?.secret ?? '';
    expect(verifySecret(secret, token.secretHash)).toBe(true);
    expect(verifySecret(`${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`, token.secretHash)).toBe(false);
    expect(verifySecret(secret, hashSecret('other'))).toBe(false);
    expect(verifySecret(secret, '')).toBe(false);
    // The raw secret is not a valid stored hash of itself.
    expect(verifySecret(secret, secret)).toBe(false);
  });

  test('a stored value that is not a sha256 hex digest matches nothing', () => {
    const h = hashSecret('s');
    expect(verifySecret('s', h)).toBe(true);
    // Hex decoding stops at the first bad digit; a half-decoded prefix must not match.
    expect(verifySecret('s', `${h.slice(0, 62)}zz`)).toBe(false);
    expect(verifySecret('s', `${h}00`)).toBe(false);
    expect(verifySecret('s', h.slice(0, 62))).toBe(false);
  });

  test('never_throws_on_mismatched_lengths', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (secret, expected) => {
        expect(verifySecret(secret, expected)).toBe(hashSecret(secret) === expected);
      }),
    );
  });
});
