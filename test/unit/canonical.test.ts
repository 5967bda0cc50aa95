import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import { canonicalIp, classifyAddress } from '../../src/net/address.js';
import type { AddressClass } from '../../src/net/address.js';
import {
  CanonicalError,
  canonicalizeHost,
  defaultPortFor,
  formatAuthority,
  parseAbsoluteUrl,
  parseAuthority,
  parsePort,
} from '../../src/net/canonical.js';
import type { CanonicalAuthority, CanonicalHost, CanonicalTarget, HostKind } from '../../src/net/canonical.js';

/** Runs `fn` and returns the CanonicalError it throws; fails the test if it throws anything else or nothing. */
function canonicalError(fn: () => unknown): CanonicalError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(CanonicalError);
    return e as CanonicalError;
  }
  throw new Error('expected a CanonicalError, nothing was thrown');
}

// ---------------------------------------------------------------------------------------------
// Every IPv4 spelling of sensitive addresses (inet_aton forms, IDNA forms, IPv6 wrappers)

type SpellingRow = readonly [trick: string, raw: string, host: string, cls: AddressClass];

const SENSITIVE: ReadonlyArray<readonly [string, readonly [number, number, number, number], AddressClass]> = [
  ['loopback', [127, 0, 0, 1], 'loopback'],
  ['metadata', [169, 254, 169, 254], 'link_local'],
  ['private_10', [10, 0, 0, 1], 'private'],
  ['private_172_16', [172, 16, 0, 1], 'private'],
  ['private_192_168', [192, 168, 1, 1], 'private'],
  ['cgnat_alibaba_metadata', [100, 100, 100, 200], 'cgnat'],
  ['oracle_metadata_192_0_0', [192, 0, 0, 192], 'reserved'],
  ['unspecified', [0, 0, 0, 0], 'unspecified'],
  ['broadcast', [255, 255, 255, 255], 'multicast'],
];

const FULL_WIDTH_DIGITS = '０１２３４５６７８９';

/** Every way a client can spell one IPv4 address as a host, each named after its trick. */
function spellings(label: string, o: readonly [number, number, number, number], cls: AddressClass): SpellingRow[] {
  const [a, b, c, d] = o;
  const n = ((a << 24) >>> 0) + (b << 16) + (c << 8) + d;
  const dotted = o.join('.');
  const hex = (x: number): string => `0x${x.toString(16)}`;
  const oct = (x: number): string => `0${x.toString(8)}`;
  const h16 = (x: number): string => x.toString(16);
  const mappedHex = `${h16((a << 8) | b)}:${h16((c << 8) | d)}`;
  const rows: Array<readonly [string, string]> = [
    ['dotted_quad', dotted],
    ['single_decimal', String(n)],
    ['single_hex', hex(n)],
    ['single_hex_upper_case', `0X${n.toString(16).toUpperCase()}`],
    ['single_hex_zero_padded', `0x0000${n.toString(16)}`],
    ['single_octal', oct(n)],
    ['hex_octets', o.map(hex).join('.')],
    ['octal_octets', o.map(oct).join('.')],
    ['octal_octets_extra_zeros', o.map((x) => `000${x.toString(8)}`).join('.')],
    ['two_parts_a_b24', `${a}.${(b << 16) + (c << 8) + d}`],
    ['three_parts_a_b_c16', `${a}.${b}.${(c << 8) + d}`],
    ['mixed_hex_octal_decimal', `${hex(a)}.${oct(b)}.${c}.${d}`],
    ['mixed_two_parts_hex_tail', `${oct(a)}.${hex((b << 16) + (c << 8) + d)}`],
    ['trailing_dot', `${dotted}.`],
    ['many_trailing_dots', `${dotted}...`],
    ['full_width_digits', dotted.replace(/[0-9]/g, (x) => FULL_WIDTH_DIGITS.charAt(Number(x)))],
    ['ideographic_full_stops', o.join('。')],
    ['full_width_full_stops', o.join('．')],
    ['bracketed_mapped_dotted', `[::ffff:${dotted}]`],
    ['bracketed_mapped_hex', `[::ffff:${mappedHex}]`],
    ['bracketed_mapped_upper_case', `[::FFFF:${mappedHex.toUpperCase()}]`],
    ['unbracketed_mapped', `::ffff:${dotted}`],
    ['mapped_full_form', `[0:0:0:0:0:ffff:${mappedHex}]`],
    ['mapped_zero_padded', `[0000:0000:0000:0000:0000:ffff:${dotted}]`],
  ];
  if (n > 1) {
    // :: and ::1 are IPv6's own unspecified and loopback, not IPv4-compatible addresses.
    rows.push(['bracketed_compatible_dotted', `[::${dotted}]`], ['bracketed_compatible_hex', `[::${mappedHex}]`]);
  }
  return rows.map(([trick, raw]) => [`${label}_${trick}`, raw, dotted, cls] as const);
}

const SPELLINGS: readonly SpellingRow[] = SENSITIVE.flatMap(([label, octets, cls]) => spellings(label, octets, cls));

const EXPLICIT_SPELLINGS: readonly SpellingRow[] = [
  ['loopback_short_127_1', '127.1', '127.0.0.1', 'loopback'],
  ['loopback_three_parts_127_0_1', '127.0.1', '127.0.0.1', 'loopback'],
  ['loopback_decimal_2130706433', '2130706433', '127.0.0.1', 'loopback'],
  ['loopback_hex_first_octet', '0x7f.0.0.1', '127.0.0.1', 'loopback'],
  ['loopback_octal_first_octet', '0177.0.0.1', '127.0.0.1', 'loopback'],
  ['loopback_hex_u32', '0x7f000001', '127.0.0.1', 'loopback'],
  ['loopback_other_address_127_2', '127.2', '127.0.0.2', 'loopback'],
  ['metadata_hex_0xa9fea9fe', '0xa9fea9fe', '169.254.169.254', 'link_local'],
  ['metadata_decimal_2852039166', '2852039166', '169.254.169.254', 'link_local'],
  ['metadata_octal_octets', '0251.0376.0251.0376', '169.254.169.254', 'link_local'],
  ['metadata_three_parts_169_254_43518', '169.254.43518', '169.254.169.254', 'link_local'],
  ['metadata_hex_octets_upper_case', '0XA9.0XFE.0XA9.0XFE', '169.254.169.254', 'link_local'],
  ['metadata_mapped_hex_bracketed', '[::ffff:a9fe:a9fe]', '169.254.169.254', 'link_local'],
  ['unspecified_single_zero', '0', '0.0.0.0', 'unspecified'],
  ['unspecified_bare_0x', '0x', '0.0.0.0', 'unspecified'],
  ['unspecified_all_bare_0x', '0x.0x.0x.0x', '0.0.0.0', 'unspecified'],
  ['max_decimal_is_broadcast', '4294967295', '255.255.255.255', 'multicast'],
  ['public_google_dns_decimal', '134744072', '8.8.8.8', 'public'],
  ['loopback_circled_digits', '①②⑦.⓪.⓪.①', '127.0.0.1', 'loopback'],
  ['loopback_circled_number_twelve', '⑫⑦.1', '127.0.0.1', 'loopback'],
  ['loopback_full_width_short_form', '１２７。１', '127.0.0.1', 'loopback'],
];

describe('canonicalizeHost: IPv4 spellings', () => {
  test.each([...EXPLICIT_SPELLINGS, ...SPELLINGS])('%s: %j -> %s (%s)', (_trick, raw, host, cls) => {
    expect(canonicalizeHost(raw)).toEqual({ host, hostKind: 'ipv4' });
    expect(classifyAddress(host)).toBe(cls);
  });
});

// ---------------------------------------------------------------------------------------------
// Names and IPv6 literals

type HostRow = readonly [trick: string, raw: string, host: string, kind: HostKind];

const LABEL_63 = 'a'.repeat(63);
const NAME_253 = `${LABEL_63}.${LABEL_63}.${LABEL_63}.${'b'.repeat(61)}`;

const VALID_HOSTS: readonly HostRow[] = [
  ['plain_name', 'example.com', 'example.com', 'name'],
  ['upper_case_folded', 'EXAMPLE.COM', 'example.com', 'name'],
  ['mixed_case_folded', 'ExAmPlE.CoM', 'example.com', 'name'],
  ['single_trailing_dot', 'example.com.', 'example.com', 'name'],
  ['many_trailing_dots', 'example.com...', 'example.com', 'name'],
  ['trailing_dot_upper_case', 'Example.COM.', 'example.com', 'name'],
  ['single_label', 'localhost', 'localhost', 'name'],
  ['single_label_trailing_dot', 'intranet.', 'intranet', 'name'],
  ['deep_name', 'a.b.c.d.e.f.example', 'a.b.c.d.e.f.example', 'name'],
  ['underscore_dmarc', '_dmarc.example.com', '_dmarc.example.com', 'name'],
  ['underscore_in_label', 'my_host.example.com', 'my_host.example.com', 'name'],
  ['underscore_srv', '_sip._tcp.example.com', '_sip._tcp.example.com', 'name'],
  ['double_hyphen_not_punycode', 'r3---sn-abc.googlevideo.com', 'r3---sn-abc.googlevideo.com', 'name'],
  ['digits_in_name', '123.example.com', '123.example.com', 'name'],
  ['ip_lookalike_prefix_is_name', '127.0.0.1.nip.io', '127.0.0.1.nip.io', 'name'],
  ['hexish_last_label_not_a_number', 'foo.0xg', 'foo.0xg', 'name'],
  ['digit_letter_last_label', 'a.b.1a', 'a.b.1a', 'name'],
  ['hex_word_without_0x', 'deadbeef', 'deadbeef', 'name'],
  ['label_63_octets', `${LABEL_63}.com`, `${LABEL_63}.com`, 'name'],
  ['name_253_octets', NAME_253, NAME_253, 'name'],
  ['name_253_octets_plus_trailing_dot', `${NAME_253}.`, NAME_253, 'name'],
  ['full_width_letters', 'ｅｘａｍｐｌｅ.com', 'example.com', 'name'],
  ['full_width_everything', 'ｅｘａｍｐｌｅ．ｃｏｍ', 'example.com', 'name'],
  ['enclosed_letter', 'ⓔxample.com', 'example.com', 'name'],
  ['enclosed_everything', 'ⓔⓧⓐⓜⓟⓛⓔ.ⓒⓞⓜ', 'example.com', 'name'],
  ['math_bold_letters', '𝐞𝐱𝐚𝐦𝐩𝐥𝐞.com', 'example.com', 'name'],
  ['ideographic_full_stop', 'example。com', 'example.com', 'name'],
  ['halfwidth_ideographic_full_stop', 'example｡com', 'example.com', 'name'],
  ['full_width_full_stop', 'example．com', 'example.com', 'name'],
  ['soft_hyphen_ignored', 'ex\u00adample.com', 'example.com', 'name'],
  ['zero_width_space_ignored_per_uts46', 'exa\u200bmple.com', 'example.com', 'name'],
  ['idn_umlaut', 'bücher.de', 'xn--bcher-kva.de', 'name'],
  ['idn_upper_case_umlaut', 'BÜCHER.de', 'xn--bcher-kva.de', 'name'],
  ['idn_sharp_s_nontransitional', 'faß.de', 'xn--fa-hia.de', 'name'],
  ['idn_final_sigma_nontransitional', 'ς.com', 'xn--3xa.com', 'name'],
  ['idn_dotted_capital_i', 'İ.com', 'xn--i-9bb.com', 'name'],
  ['idn_greek', 'παράδειγμα.δοκιμή', 'xn--hxajbheg2az3al.xn--jxalpdlp', 'name'],
  ['idn_japanese', '例え.テスト', 'xn--r8jz45g.xn--zckzah', 'name'],
  ['punycode_kept', 'xn--bcher-kva.de', 'xn--bcher-kva.de', 'name'],
  ['punycode_upper_case', 'XN--BCHER-KVA.DE', 'xn--bcher-kva.de', 'name'],
  ['punycode_full_width_prefix', 'ＸＮ--bcher-kva.de', 'xn--bcher-kva.de', 'name'],
  ['punycode_sharp_s', 'xn--zca.de', 'xn--zca.de', 'name'],
  ['v6_loopback_bracketed', '[::1]', '::1', 'ipv6'],
  ['v6_loopback_unbracketed', '::1', '::1', 'ipv6'],
  ['v6_unspecified', '[::]', '::', 'ipv6'],
  ['v6_upper_case', '[2001:DB8::1]', '2001:db8::1', 'ipv6'],
  ['v6_zero_padded', '[2001:0db8:0000:0000:0000:0000:0000:0001]', '2001:db8::1', 'ipv6'],
  ['v6_link_local', '[fe80::1]', 'fe80::1', 'ipv6'],
  ['v6_first_longest_run', '[2001:db8:0:0:1:0:0:1]', '2001:db8::1:0:0:1', 'ipv6'],
  ['v6_nat64_stays_v6', '[64:ff9b::127.0.0.1]', '64:ff9b::7f00:1', 'ipv6'],
  ['v6_6to4_stays_v6', '[2002:7f00:1::]', '2002:7f00:1::', 'ipv6'],
  ['v6_teredo_stays_v6', '[2001::1]', '2001::1', 'ipv6'],
  ['v6_siit_translated_stays_v6', '[::ffff:0:7f00:1]', '::ffff:0:7f00:1', 'ipv6'],
  ['v6_public', '[2606:4700:4700::1111]', '2606:4700:4700::1111', 'ipv6'],
];

describe('canonicalizeHost: names and IPv6 literals', () => {
  test.each(VALID_HOSTS)('%s: %j -> %s (%s)', (_trick, raw, host, kind) => {
    expect(canonicalizeHost(raw)).toEqual({ host, hostKind: kind });
  });
});

describe('canonicalizeHost: idempotence', () => {
  const rows: ReadonlyArray<readonly [string, string]> = [...VALID_HOSTS, ...EXPLICIT_SPELLINGS, ...SPELLINGS].map(
    ([trick, raw]) => [trick, raw] as const,
  );
  test.each(rows)('%s: canonical form is a fixed point', (_trick, raw) => {
    const once = canonicalizeHost(raw);
    expect(canonicalizeHost(once.host)).toEqual(once);
  });
});

const INVALID_HOSTS: ReadonlyArray<readonly [trick: string, raw: string]> = [
  ['empty', ''],
  ['only_a_dot', '.'],
  ['only_dots', '...'],
  ['only_ideographic_dots', '。。'],
  ['leading_dot', '.example.com'],
  ['empty_label_in_middle', 'a..b'],
  ['empty_label_before_tld', 'example..com'],
  ['space_inside', 'exa mple.com'],
  ['leading_space', ' example.com'],
  ['trailing_space', 'example.com '],
  ['tab_inside_whatwg_would_drop_it', 'exa\tmple.com'],
  ['cr_inside', 'example.com\r'],
  ['lf_inside', 'example.com\nevil.com'],
  ['crlf_header_injection', 'example.com\r\nX-Evil: 1'],
  ['nul_byte_truncation', 'example.com\u0000.evil.com'],
  ['del_character', 'exa\u007fmple.com'],
  ['c1_next_line', 'exa\u0085mple.com'],
  ['no_break_space', 'exa\u00a0mple.com'],
  ['ideographic_space', 'exa\u3000mple.com'],
  ['byte_order_mark', '\ufeffexample.com'],
  ['zone_id_unbracketed', 'fe80::1%eth0'],
  ['zone_id_bracketed', '[fe80::1%eth0]'],
  ['zone_id_percent_encoded', '[fe80::1%25eth0]'],
  ['zone_id_numeric', '[fe80::1%1]'],
  ['percent_encoded_name_whatwg_would_decode', 'ex%61mple.com'],
  ['percent_encoded_dot', 'example%2ecom'],
  ['full_width_percent', 'ex％61mple.com'],
  ['wildcard_label', '*.example.com'],
  ['asterisk_in_label', 'a*b.example.com'],
  ['slash', 'example.com/evil'],
  ['backslash', 'example.com\\evil'],
  ['at_sign_userinfo', 'user@example.com'],
  ['question_mark', 'example.com?x'],
  ['hash', 'example.com#x'],
  ['colon_port_in_host', 'example.com:80'],
  ['caret', 'exa^mple.com'],
  ['pipe', 'exa|mple.com'],
  ['tilde', 'exa~mple.com'],
  ['exclamation', 'exa!mple.com'],
  ['dollar', 'exa$mple.com'],
  ['ampersand', 'exa&mple.com'],
  ['single_quote', "exa'mple.com"],
  ['parenthesis', 'exa(mple.com'],
  ['equals', 'exa=mple.com'],
  ['plus', 'exa+mple.com'],
  ['comma', 'exa,mple.com'],
  ['semicolon', 'exa;mple.com'],
  ['double_quote', 'exa"mple.com'],
  ['angle_bracket', 'exa<mple.com'],
  ['curly_brace', 'exa{mple.com'],
  ['backtick', 'exa`mple.com'],
  ['leading_hyphen', '-example.com'],
  ['trailing_hyphen', 'example-.com'],
  ['small_commercial_at_maps_to_at', 'a\ufe6bb.com'],
  ['account_of_maps_to_slash', '\u2100.com'],
  ['digit_full_stop_maps_to_dot', 'a\u2488b.com'],
  ['zero_width_joiner_contextj', 'a\u200db.com'],
  ['full_width_colon_maps_to_colon', 'example.com：80'],
  ['full_width_solidus_maps_to_slash', 'example.com／x'],
  ['full_width_at_maps_to_at', 'a＠b.com'],
  ['one_dot_leader', 'a\u2024b.com'],
  ['name_in_brackets', '[example.com]'],
  ['ipv4_in_brackets', '[127.0.0.1]'],
  ['empty_brackets', '[]'],
  ['unterminated_bracket', '[::1'],
  ['stray_closing_bracket', '::1]'],
  ['bracket_with_port', '[::1]:80'],
  ['v6_two_gaps', '[1::2::3]'],
  ['v6_too_many_groups', '[1:2:3:4:5:6:7:8:9]'],
  ['v6_five_hex_digits', '[12345::1]'],
  ['v6_embedded_v4_short_form', '[::ffff:127.1]'],
  ['v6_embedded_v4_leading_zero', '[::ffff:127.0.0.01]'],
  ['label_64_octets', `${'a'.repeat(64)}.com`],
  ['name_254_octets', `${NAME_253}b`],
  // 216 characters as typed, 258 octets once every label becomes xn--…
  ['name_over_253_after_punycode', Array.from({ length: 7 }, () => 'ü'.repeat(30)).join('.')],
  ['label_over_63_after_punycode', `${'ü'.repeat(60)}.de`],
  ['huge_input', 'a'.repeat(5000)],
  ['punycode_prefix_only', 'xn--.com'],
  ['punycode_ascii_only_does_not_round_trip', 'xn--abc-.com'],
  ['punycode_truncated', 'xn--a.com'],
  ['punycode_undecodable', 'xn--zz.com'],
  ['punycode_decodes_to_mapped_char', 'xn--ber-ska.com'],
  ['numeric_tld_not_ipv4', 'foo.123'],
  ['octal_invalid_digit_tld', 'foo.09'],
  ['invalid_octal_alone', '08'],
  ['hex_tld_not_ipv4', 'example.0x1'],
  ['bare_0x_tld_not_ipv4', 'example.0x'],
  ['five_parts', '1.2.3.4.5'],
  ['five_parts_trailing_dot', '1.2.3.4.5.'],
  ['octet_over_255', '256.256.256.256'],
  ['last_part_over_255', '1.2.3.256'],
  ['three_parts_tail_over_16_bits', '1.2.65536'],
  ['decimal_over_32_bits', '4294967296'],
  ['hex_over_32_bits', '0x100000000'],
  ['bad_hex_digit_in_ipv4', '0x7g.0.0.1'],
  ['empty_part_in_ipv4', '127..1'],
  ['negative_part', '127.0.0.-1'],
];

describe('canonicalizeHost: rejections', () => {
  test.each(INVALID_HOSTS)('%s: %j is rejected', (_trick, raw) => {
    const e = canonicalError(() => canonicalizeHost(raw));
    expect(e.code).toBe('bad_request');
    expect(e.detail.length).toBeGreaterThan(0);
  });
});

// A hostile alphabet: letters, digits, every separator WHATWG or a resolver might treat
// specially, full-width and enclosed forms, and characters UTS-46 maps or ignores.
const HOST_ALPHABET = [
  ...'abcxXn019-_.:[]%@/\\*#?^ ~\t\u0000',
  '0x', 'xn--', 'ü', 'ß', 'ｅ', 'ⓔ', '。', '．', '\u00ad', '\u200b', '\u200d', 'İ', '％', '１', '::ffff:',
];
// Weighted towards plain letters so that a fair share of inputs are accepted and compared.
const HOST_PIECE = fc.oneof(
  { arbitrary: fc.constantFrom(...'abcdefghijk'), weight: 3 },
  { arbitrary: fc.constantFrom(...HOST_ALPHABET), weight: 2 },
);

describe('canonicalizeHost: fuzzing against a hostile alphabet (property)', () => {
  test('throws only CanonicalError; output is strict, idempotent and agrees with WHATWG URL', () => {
    fc.assert(
      fc.property(fc.array(HOST_PIECE, { maxLength: 12 }), (parts) => {
        const raw = parts.join('');
        let result: CanonicalHost;
        try {
          result = canonicalizeHost(raw);
        } catch (e) {
          expect(e).toBeInstanceOf(CanonicalError);
          return;
        }
        if (result.hostKind === 'name') {
          expect(result.host).toMatch(/^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/);
        } else {
          expect(canonicalIp(result.host)).toBe(result.host);
        }
        expect(canonicalizeHost(result.host)).toEqual(result);
        // Where WHATWG URL also accepts the raw host, it must name the same host (modulo the
        // trailing dots and IPv6 unwrapping WHATWG leaves alone).
        const bracketed = raw.includes(':') && !raw.startsWith('[') ? `[${raw}]` : raw;
        let whatwg: string | null = null;
        try {
          whatwg = new URL(`http://${bracketed}/`).hostname;
        } catch {
          whatwg = null;
        }
        if (whatwg !== null) {
          const theirs = whatwg.startsWith('[') ? canonicalIp(whatwg.slice(1, -1)) : whatwg.replace(/\.+$/, '');
          expect(theirs).toBe(result.host);
        }
      }),
      { numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Ports

describe('parsePort', () => {
  test.each([
    ['lowest', '1', 1],
    ['http', '80', 80],
    ['https', '443', 443],
    ['alt_http', '8080', 8080],
    ['highest', '65535', 65535],
  ])('%s: %j -> %d', (_trick, raw, port) => {
    expect(parsePort(raw)).toBe(port);
  });

  test.each([
    ['empty', ''],
    ['zero', '0'],
    ['double_zero', '00'],
    ['leading_zero', '080'],
    ['leading_zero_max', '065535'],
    ['one_past_max', '65536'],
    ['five_nines', '99999'],
    ['six_digits', '100000'],
    ['negative', '-1'],
    ['plus_sign', '+80'],
    ['leading_space', ' 80'],
    ['trailing_space', '80 '],
    ['inner_space', '8 0'],
    ['tab', '\t80'],
    ['trailing_newline', '80\n'],
    ['scheme_name', 'http'],
    ['hex', '0x50'],
    ['exponent', '1e3'],
    ['decimal_point', '80.0'],
    ['full_width_digits', '８０'],
    ['arabic_indic_digits', '٨٠'],
    ['huge', '9'.repeat(400)],
  ])('%s: %j is rejected', (_trick, raw) => {
    canonicalError(() => parsePort(raw));
  });
});

describe('defaultPortFor', () => {
  test.each([
    ['http', 80],
    ['https', 443],
    ['ws', 80],
    ['wss', 443],
    ['ftp', 21],
    ['gopher', undefined],
    ['HTTP', undefined],
    ['', undefined],
    ['constructor', undefined],
    ['__proto__', undefined],
    ['toString', undefined],
  ])('%j -> %s', (scheme, port) => {
    expect(defaultPortFor(scheme)).toBe(port);
  });
});

// ---------------------------------------------------------------------------------------------
// Authorities (CONNECT, Host)

type AuthorityRow = readonly [trick: string, raw: string, defaultPort: number | undefined, expected: CanonicalAuthority];

describe('parseAuthority', () => {
  test.each<AuthorityRow>([
    ['connect_name', 'example.com:443', undefined, { host: 'example.com', hostKind: 'name', port: 443 }],
    ['connect_upper_case_trailing_dot', 'EXAMPLE.com.:443', undefined, { host: 'example.com', hostKind: 'name', port: 443 }],
    ['connect_idn', 'bücher.de:443', undefined, { host: 'xn--bcher-kva.de', hostKind: 'name', port: 443 }],
    ['connect_v6', '[::1]:443', undefined, { host: '::1', hostKind: 'ipv6', port: 443 }],
    ['connect_v6_long_form', '[2001:0DB8:0:0:0:0:0:1]:8443', undefined, { host: '2001:db8::1', hostKind: 'ipv6', port: 8443 }],
    ['connect_mapped_v6_unwrapped', '[::ffff:127.0.0.1]:443', undefined, { host: '127.0.0.1', hostKind: 'ipv4', port: 443 }],
    ['connect_short_ipv4', '127.1:80', undefined, { host: '127.0.0.1', hostKind: 'ipv4', port: 80 }],
    ['connect_decimal_metadata', '2852039166:80', undefined, { host: '169.254.169.254', hostKind: 'ipv4', port: 80 }],
    ['connect_underscore', '_acme.example.com:443', undefined, { host: '_acme.example.com', hostKind: 'name', port: 443 }],
    ['host_header_default_port', 'example.com', 80, { host: 'example.com', hostKind: 'name', port: 80 }],
    ['host_header_explicit_port', 'example.com:8080', 80, { host: 'example.com', hostKind: 'name', port: 8080 }],
    ['host_header_v6_default_port', '[::1]', 443, { host: '::1', hostKind: 'ipv6', port: 443 }],
  ])('%s: %j', (_trick, raw, defaultPort, expected) => {
    expect(parseAuthority(raw, defaultPort)).toEqual(expected);
  });

  test.each([
    ['userinfo', 'a@b:443', undefined],
    ['userinfo_with_password', 'user:secret@example.com:443', undefined],
    ['userinfo_allowed_host_first', 'allowed.com:443@evil.com:443', undefined],
    ['port_missing_without_default', 'example.com', undefined],
    ['v6_port_missing_without_default', '[::1]', undefined],
    ['empty_port', 'example.com:', undefined],
    ['empty_port_with_default', 'example.com:', 80],
    ['empty_port_v6', '[::1]:', undefined],
    ['empty_host', ':443', undefined],
    ['empty', '', 443],
    ['unbracketed_v6_with_port', '::1:443', undefined],
    ['unbracketed_v6_without_port', '::1', 443],
    ['unbracketed_v6_full', '2001:db8::1', 443],
    ['double_port', 'example.com:443:443', undefined],
    ['path', 'example.com:443/path', undefined],
    ['path_without_port', 'example.com/path', 443],
    ['query', 'example.com:443?x', undefined],
    ['fragment', 'example.com:443#f', undefined],
    ['backslash', 'example.com\\:443', undefined],
    ['backslash_after_port', 'example.com:443\\evil.com', undefined],
    ['space_before_port', 'example.com :443', undefined],
    ['trailing_space', 'example.com:443 ', undefined],
    ['leading_tab', '\texample.com:443', undefined],
    ['trailing_crlf', 'example.com:443\r\n', undefined],
    ['nul', 'example.com\u0000:443', undefined],
    ['junk_after_v6', '[::1]443', undefined],
    ['double_closing_bracket', '[::1]]:443', undefined],
    ['unterminated_v6', '[::1:443', undefined],
    ['empty_brackets', '[]:443', undefined],
    ['name_in_brackets', '[example.com]:443', undefined],
    ['zone_id', '[fe80::1%25eth0]:443', undefined],
    ['port_zero', 'example.com:0', undefined],
    ['port_too_big', 'example.com:65536', undefined],
    ['port_leading_zero', 'example.com:0443', undefined],
    ['port_plus', 'example.com:+443', undefined],
    ['port_with_space', 'example.com:4 43', undefined],
    ['port_name', 'example.com:https', undefined],
    ['percent_encoded_colon', 'example.com%3a443', undefined],
    ['invalid_host', 'exa*mple.com:443', undefined],
    ['failed_ipv4_attempt', 'foo.09:443', undefined],
  ] as const)('%s: %j is rejected', (_trick, raw, defaultPort) => {
    const e = canonicalError(() => parseAuthority(raw, defaultPort));
    expect(e.detail).not.toContain('secret');
  });
});

describe('formatAuthority', () => {
  test.each<readonly [string, CanonicalAuthority, number | undefined, string]>([
    ['name_non_default_port', { host: 'example.com', hostKind: 'name', port: 8080 }, 80, 'example.com:8080'],
    ['name_default_port_omitted', { host: 'example.com', hostKind: 'name', port: 80 }, 80, 'example.com'],
    ['name_no_default_given', { host: 'example.com', hostKind: 'name', port: 443 }, undefined, 'example.com:443'],
    ['ipv4', { host: '10.0.0.1', hostKind: 'ipv4', port: 443 }, undefined, '10.0.0.1:443'],
    ['ipv6_bracketed', { host: '::1', hostKind: 'ipv6', port: 443 }, undefined, '[::1]:443'],
    ['ipv6_default_port_still_bracketed', { host: '2001:db8::1', hostKind: 'ipv6', port: 443 }, 443, '[2001:db8::1]'],
  ])('%s -> %s', (_trick, authority, defaultPort, expected) => {
    expect(formatAuthority(authority, defaultPort)).toBe(expected);
  });

  test.each([
    ['name', 'example.com:8443'],
    ['v6', '[2001:db8::1]:443'],
    ['mapped_v6', '[::ffff:10.0.0.1]:80'],
  ])('round-trips through parseAuthority (%s)', (_trick, raw) => {
    const a = parseAuthority(raw);
    expect(parseAuthority(formatAuthority(a))).toEqual(a);
  });
});

// ---------------------------------------------------------------------------------------------
// Absolute-form request targets

type UrlRow = readonly [trick: string, raw: string, expected: CanonicalTarget];

const t = (scheme: string, host: string, hostKind: HostKind, port: number, path: string, query: string | null): CanonicalTarget => ({
  scheme,
  host,
  hostKind,
  port,
  path,
  query,
});

const VALID_URLS: readonly UrlRow[] = [
  ['spec_example', 'http://Example.COM.:8080/a/../b?x=1', t('http', 'example.com', 'name', 8080, '/b', 'x=1')],
  ['upper_case_scheme_and_host', 'HTTP://EXAMPLE.COM/', t('http', 'example.com', 'name', 80, '/', null)],
  ['no_path', 'http://example.com', t('http', 'example.com', 'name', 80, '/', null)],
  ['empty_query_kept_distinct_from_none', 'http://example.com/?', t('http', 'example.com', 'name', 80, '/', '')],
  ['query_without_path', 'http://example.com?x=1', t('http', 'example.com', 'name', 80, '/', 'x=1')],
  ['https_default_port', 'https://example.com/', t('https', 'example.com', 'name', 443, '/', null)],
  ['ws_default_port', 'ws://example.com/chat', t('ws', 'example.com', 'name', 80, '/chat', null)],
  ['wss_default_port', 'wss://example.com/chat', t('wss', 'example.com', 'name', 443, '/chat', null)],
  ['ftp_parses_so_policy_can_deny_by_scheme', 'ftp://example.com/pub', t('ftp', 'example.com', 'name', 21, '/pub', null)],
  ['unknown_scheme_with_explicit_port', 'foo://example.com:9/a', t('foo', 'example.com', 'name', 9, '/a', null)],
  ['odd_scheme_characters', 'x-Y.z+1://example.com:1/', t('x-y.z+1', 'example.com', 'name', 1, '/', null)],
  ['explicit_default_port', 'http://example.com:80/', t('http', 'example.com', 'name', 80, '/', null)],
  ['max_port', 'http://example.com:65535/', t('http', 'example.com', 'name', 65535, '/', null)],
  ['v6_literal', 'http://[::1]:80/', t('http', '::1', 'ipv6', 80, '/', null)],
  ['v6_literal_default_port', 'http://[2001:DB8::1]/', t('http', '2001:db8::1', 'ipv6', 80, '/', null)],
  ['mapped_v6_unwrapped', 'http://[::ffff:127.0.0.1]/', t('http', '127.0.0.1', 'ipv4', 80, '/', null)],
  ['mapped_v6_hex_metadata', 'http://[::ffff:a9fe:a9fe]/latest/meta-data/', t('http', '169.254.169.254', 'ipv4', 80, '/latest/meta-data/', null)],
  ['short_ipv4', 'http://127.1/', t('http', '127.0.0.1', 'ipv4', 80, '/', null)],
  ['hex_ipv4_with_port', 'http://0x7f000001:8080/x', t('http', '127.0.0.1', 'ipv4', 8080, '/x', null)],
  ['decimal_metadata', 'http://2852039166/latest', t('http', '169.254.169.254', 'ipv4', 80, '/latest', null)],
  ['trailing_dot_host', 'http://example.com./', t('http', 'example.com', 'name', 80, '/', null)],
  ['idn_host', 'http://bücher.de/', t('http', 'xn--bcher-kva.de', 'name', 80, '/', null)],
  ['full_width_host', 'http://ｅｘａｍｐｌｅ.com/', t('http', 'example.com', 'name', 80, '/', null)],
  ['underscore_host', 'http://_dmarc.example.com/', t('http', '_dmarc.example.com', 'name', 80, '/', null)],
  ['dot_dot_resolved', 'http://example.com/a/b/../c', t('http', 'example.com', 'name', 80, '/a/c', null)],
  ['dot_resolved', 'http://example.com/a/./b', t('http', 'example.com', 'name', 80, '/a/b', null)],
  ['dot_dot_above_root', 'http://example.com/../../etc/passwd', t('http', 'example.com', 'name', 80, '/etc/passwd', null)],
  ['encoded_dot_dot_resolved', 'http://example.com/public/%2e%2e/secret', t('http', 'example.com', 'name', 80, '/secret', null)],
  ['encoded_dot_dot_upper_case', 'http://example.com/public/%2E%2E/secret', t('http', 'example.com', 'name', 80, '/secret', null)],
  ['mixed_encoded_dot_dot', 'http://example.com/public/.%2e/secret', t('http', 'example.com', 'name', 80, '/secret', null)],
  ['encoded_slash_kept', 'http://example.com/a%2Fb', t('http', 'example.com', 'name', 80, '/a%2Fb', null)],
  ['encoded_space_kept', 'http://example.com/a%20b', t('http', 'example.com', 'name', 80, '/a%20b', null)],
  ['backslash_in_path_is_slash_for_http', 'http://example.com/a\\..\\b', t('http', 'example.com', 'name', 80, '/b', null)],
  ['non_ascii_path_percent_encoded', 'http://example.com/ü', t('http', 'example.com', 'name', 80, '/%C3%BC', null)],
  ['double_slash_path_kept', 'http://example.com//evil.com/x', t('http', 'example.com', 'name', 80, '//evil.com/x', null)],
  ['query_kept_raw', 'http://example.com/p?q=1&r=%2F', t('http', 'example.com', 'name', 80, '/p', 'q=1&r=%2F')],
  ['query_dot_dot_not_resolved', 'http://example.com/p?next=/../x', t('http', 'example.com', 'name', 80, '/p', 'next=/../x')],
  ['query_angle_brackets_encoded', 'http://example.com/p?q=<x>', t('http', 'example.com', 'name', 80, '/p', 'q=%3Cx%3E')],
  ['question_mark_in_query', 'http://example.com/?a?b', t('http', 'example.com', 'name', 80, '/', 'a?b')],
  ['at_sign_in_path_is_not_userinfo', 'http://example.com/@evil.com', t('http', 'example.com', 'name', 80, '/@evil.com', null)],
  ['at_sign_in_query_is_not_userinfo', 'http://example.com/?u=a@b', t('http', 'example.com', 'name', 80, '/', 'u=a@b')],
];

describe('parseAbsoluteUrl', () => {
  test.each(VALID_URLS)('%s: %j', (_trick, raw, expected) => {
    expect(parseAbsoluteUrl(raw)).toEqual(expected);
  });

  test.each(VALID_URLS)('%s: rebuilt target parses to itself', (_trick, raw) => {
    const once = parseAbsoluteUrl(raw);
    const rebuilt = `${once.scheme}://${formatAuthority(once)}${once.path}${once.query === null ? '' : `?${once.query}`}`;
    expect(parseAbsoluteUrl(rebuilt)).toEqual(once);
  });

  test.each([
    ['userinfo_allowed_at_evil', 'http://allowed.com@evil.com/'],
    ['userinfo_with_password', 'http://user:secret@example.com/'],
    ['userinfo_empty', 'http://@example.com/'],
    ['backslash_before_at', 'http://a.com\\@b.com/'],
    ['backslash_as_authority_end', 'http://a.com\\b.com/'],
    ['fragment_before_at', 'http://a.com#@b.com/'],
    ['port_then_userinfo', 'http://a.com:80@b.com/'],
    ['encoded_slash_then_at', 'http://a.com%2f@b.com/'],
    ['fragment', 'http://example.com/#frag'],
    ['fragment_after_query', 'http://example.com/?q#f'],
    ['empty_port', 'http://example.com:/'],
    ['port_zero', 'http://example.com:0/'],
    ['port_too_big', 'http://example.com:65536/'],
    ['port_leading_zero', 'http://example.com:080/'],
    ['port_letter_o', 'http://example.com:8O/'],
    ['double_port', 'http://example.com:80:80/'],
    ['unknown_scheme_without_port', 'gopher://example.com/'],
    ['origin_form', '/relative/path'],
    ['no_scheme', 'example.com/path'],
    ['scheme_single_slash', 'http:/example.com/'],
    ['scheme_no_slash', 'http:example.com'],
    ['scheme_backslashes', 'http:\\\\example.com\\'],
    ['empty_scheme', '://example.com/'],
    ['scheme_starts_with_digit', '1http://example.com/'],
    ['scheme_with_space', 'ht tp://example.com/'],
    ['leading_space', ' http://example.com/'],
    ['empty_host', 'http:///path'],
    ['empty_host_query', 'http://?x'],
    ['nothing_after_scheme', 'http://'],
    ['space_in_host', 'http://exa mple.com/'],
    ['nbsp_in_host', 'http://exa\u00a0mple.com/'],
    ['ideographic_space', 'http://example.com\u3000/'],
    ['space_in_path', 'http://example.com/a b'],
    ['tab_in_path_whatwg_would_drop', 'http://example.com/a\tb'],
    ['tab_in_host_whatwg_would_drop', 'http://exa\tmple.com/'],
    ['crlf_request_splitting', 'http://example.com/\r\nHost: evil.com'],
    ['lf_in_query', 'http://example.com/?a=\n'],
    ['nul_in_path', 'http://example.com/\u0000'],
    ['del_in_path', 'http://example.com/\u007f'],
    ['unterminated_v6', 'http://[::1/'],
    ['junk_after_v6', 'http://[::1]x/'],
    ['unbracketed_v6', 'http://::1/'],
    ['zone_id', 'http://[fe80::1%25eth0]/'],
    ['percent_encoded_host', 'http://ex%61mple.com/'],
    ['wildcard_host', 'http://*.example.com/'],
    ['failed_ipv4_attempt', 'http://foo.09/'],
    ['numeric_tld', 'http://example.123/'],
    ['empty_label', 'http://a..b/'],
    ['name_in_brackets', 'http://[example.com]/'],
    ['over_long_label', `http://${'a'.repeat(64)}.com/`],
  ])('%s: %j is rejected', (_trick, raw) => {
    const e = canonicalError(() => parseAbsoluteUrl(raw));
    expect(e.code).toBe('bad_request');
    expect(e.detail).not.toContain('secret');
  });
});

describe('CanonicalError', () => {
  test('carries a stable code and a detail, and is an Error', () => {
    const e = canonicalError(() => parseAbsoluteUrl('http://alice:hunter2@example.com/'));
    expect(e).toBeInstanceOf(Error);
    expect(e.name).toBe('CanonicalError');
    expect(e.code).toBe('bad_request');
    expect(e.message).toBe(e.detail);
    expect(e.detail).not.toContain('hunter2');
    expect(e.detail).not.toContain('alice');
  });
});
