import fc from 'fast-check';
import { describe, expect, test } from 'vitest';
import {
  addressReason,
  canonicalIp,
  CidrError,
  CidrSet,
  classifyAddress,
  parseCidr,
  parseIp,
} from '../../src/net/address.js';
import type { AddressClass } from '../../src/net/address.js';

type ClassRow = readonly [trick: string, ip: string, cls: AddressClass];

const IPV4_CLASSES: readonly ClassRow[] = [
  // loopback and unspecified
  ['loopback_first', '127.0.0.0', 'loopback'],
  ['loopback_usual', '127.0.0.1', 'loopback'],
  ['loopback_odd_address', '127.53.1.2', 'loopback'],
  ['loopback_last', '127.255.255.255', 'loopback'],
  ['below_loopback_is_public', '126.255.255.255', 'public'],
  ['above_loopback_is_public', '128.0.0.0', 'public'],
  ['unspecified_zero', '0.0.0.0', 'unspecified'],
  ['this_network_nonzero_host', '0.1.2.3', 'unspecified'],
  ['this_network_last', '0.255.255.255', 'unspecified'],
  ['after_this_network_public', '1.0.0.0', 'public'],
  // RFC 1918
  ['rfc1918_10_first', '10.0.0.0', 'private'],
  ['rfc1918_10_mid', '10.20.30.40', 'private'],
  ['rfc1918_10_last', '10.255.255.255', 'private'],
  ['before_10_public', '9.255.255.255', 'public'],
  ['after_10_public', '11.0.0.0', 'public'],
  ['rfc1918_172_15_boundary_public', '172.15.255.255', 'public'],
  ['rfc1918_172_16_first', '172.16.0.0', 'private'],
  ['rfc1918_172_docker_default', '172.17.0.1', 'private'],
  ['rfc1918_172_31_last', '172.31.255.255', 'private'],
  ['rfc1918_172_32_boundary_public', '172.32.0.0', 'public'],
  ['rfc1918_192_168_first', '192.168.0.0', 'private'],
  ['rfc1918_192_168_router', '192.168.1.1', 'private'],
  ['rfc1918_192_168_last', '192.168.255.255', 'private'],
  ['before_192_168_public', '192.167.255.255', 'public'],
  ['after_192_168_public', '192.169.0.0', 'public'],
  // link-local (cloud metadata)
  ['link_local_first', '169.254.0.0', 'link_local'],
  ['metadata_aws_gcp_azure', '169.254.169.254', 'link_local'],
  ['metadata_ecs_task', '169.254.170.2', 'link_local'],
  ['link_local_last', '169.254.255.255', 'link_local'],
  ['before_link_local_public', '169.253.255.255', 'public'],
  ['after_link_local_public', '169.255.0.0', 'public'],
  // CGNAT
  ['cgnat_boundary_below_public', '100.63.255.255', 'public'],
  ['cgnat_first', '100.64.0.0', 'cgnat'],
  ['cgnat_metadata_alibaba', '100.100.100.200', 'cgnat'],
  ['cgnat_last', '100.127.255.255', 'cgnat'],
  ['cgnat_boundary_above_public', '100.128.0.0', 'public'],
  // 192.0.0.0/24 and documentation
  ['ietf_192_0_0_first', '192.0.0.0', 'reserved'],
  ['metadata_oracle_192_0_0_192', '192.0.0.192', 'reserved'],
  ['ietf_192_0_0_last', '192.0.0.255', 'reserved'],
  ['before_192_0_0_public', '191.255.255.255', 'public'],
  ['after_192_0_0_public', '192.0.1.0', 'public'],
  ['test_net_1', '192.0.2.1', 'reserved'],
  ['test_net_1_last', '192.0.2.255', 'reserved'],
  ['after_test_net_1_public', '192.0.3.0', 'public'],
  ['test_net_2', '198.51.100.7', 'reserved'],
  ['test_net_3', '203.0.113.7', 'reserved'],
  ['after_test_net_3_public', '203.0.114.0', 'public'],
  ['deprecated_6to4_relay_anycast', '192.88.99.1', 'reserved'],
  // benchmarking
  ['benchmark_first', '198.18.0.0', 'reserved'],
  ['benchmark_second_half', '198.19.255.255', 'reserved'],
  ['before_benchmark_public', '198.17.255.255', 'public'],
  ['after_benchmark_public', '198.20.0.0', 'public'],
  // multicast, reserved, broadcast
  ['multicast_first', '224.0.0.0', 'multicast'],
  ['multicast_mdns', '224.0.0.251', 'multicast'],
  ['multicast_last', '239.255.255.255', 'multicast'],
  ['before_multicast_public', '223.255.255.255', 'public'],
  ['class_e_first', '240.0.0.0', 'reserved'],
  ['class_e_mid', '250.1.2.3', 'reserved'],
  ['class_e_last_before_broadcast', '255.255.255.254', 'reserved'],
  ['limited_broadcast', '255.255.255.255', 'multicast'],
  // public anchors
  ['public_google_dns', '8.8.8.8', 'public'],
  ['public_cloudflare_dns', '1.1.1.1', 'public'],
  ['public_as112_globally_reachable', '192.31.196.1', 'public'],
  ['public_amt_globally_reachable', '192.52.193.1', 'public'],
  ['public_just_below_multicast', '223.1.2.3', 'public'],
];

const IPV6_CLASSES: readonly ClassRow[] = [
  ['v6_loopback', '::1', 'loopback'],
  ['v6_loopback_full_form', '0:0:0:0:0:0:0:1', 'loopback'],
  ['v6_loopback_zero_padded', '0000:0000:0000:0000:0000:0000:0000:0001', 'loopback'],
  ['v6_unspecified', '::', 'unspecified'],
  ['v6_unspecified_full_form', '0:0:0:0:0:0:0:0', 'unspecified'],
  ['mapped_loopback_dotted', '::ffff:127.0.0.1', 'loopback'],
  ['mapped_loopback_hex', '::ffff:7f00:1', 'loopback'],
  ['mapped_loopback_upper_case', '::FFFF:7F00:0001', 'loopback'],
  ['mapped_loopback_full_form', '0:0:0:0:0:ffff:127.0.0.1', 'loopback'],
  ['mapped_metadata_hex', '::ffff:a9fe:a9fe', 'link_local'],
  ['mapped_metadata_dotted', '::ffff:169.254.169.254', 'link_local'],
  ['mapped_private_10', '::ffff:10.0.0.1', 'private'],
  ['mapped_cgnat', '::ffff:100.64.0.1', 'cgnat'],
  ['mapped_unspecified', '::ffff:0.0.0.0', 'unspecified'],
  ['mapped_broadcast', '::ffff:255.255.255.255', 'multicast'],
  ['mapped_public', '::ffff:8.8.8.8', 'public'],
  ['compatible_loopback_dotted', '::127.0.0.1', 'loopback'],
  ['compatible_loopback_hex', '::7f00:1', 'loopback'],
  ['compatible_metadata', '::169.254.169.254', 'link_local'],
  ['compatible_private_192_168', '::c0a8:101', 'private'],
  ['compatible_low_value_is_this_network', '::2', 'unspecified'],
  ['compatible_public', '::8.8.8.8', 'public'],
  ['nat64_well_known_loopback', '64:ff9b::127.0.0.1', 'v6_embedded'],
  ['nat64_well_known_public', '64:ff9b::808:808', 'v6_embedded'],
  ['nat64_local_use', '64:ff9b:1::a9fe:a9fe', 'v6_embedded'],
  ['nat64_local_use_last', '64:ff9b:1:ffff:ffff:ffff:ffff:ffff', 'v6_embedded'],
  ['nat64_outside_96_reserved', '64:ff9b:0:0:1::', 'reserved'],
  ['sixtofour_loopback', '2002:7f00:1::', 'v6_embedded'],
  ['sixtofour_public', '2002:808:808::1', 'v6_embedded'],
  ['sixtofour_last', '2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'v6_embedded'],
  ['teredo', '2001:0:4136:e378:8000:63bf:3fff:fdd2', 'v6_embedded'],
  ['teredo_short', '2001::1', 'v6_embedded'],
  ['ietf_assignments_benchmark', '2001:2::1', 'reserved'],
  ['ietf_assignments_orchid', '2001:10::1', 'reserved'],
  ['ietf_assignments_last', '2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
  ['after_ietf_assignments_public', '2001:200::1', 'public'],
  ['documentation_2001_db8', '2001:db8::1', 'reserved'],
  ['documentation_upper_case', '2001:DB8:0:0:0:0:0:1', 'reserved'],
  ['documentation_3fff', '3fff::1', 'reserved'],
  ['documentation_3fff_last', '3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
  ['after_3fff_20_public', '3fff:1000::1', 'public'],
  ['discard_only', '100::1', 'reserved'],
  ['discard_only_last', '100::ffff:ffff:ffff:ffff', 'reserved'],
  ['dummy_prefix', '100:0:0:1::1', 'reserved'],
  ['srv6_sids', '5f00::1', 'reserved'],
  ['ula_fc', 'fc00::1', 'private'],
  ['ula_fd', 'fd12:3456:789a::1', 'private'],
  ['ula_aws_metadata', 'fd00:ec2::254', 'private'],
  ['ula_last', 'fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'private'],
  ['link_local_v6', 'fe80::1', 'link_local'],
  ['link_local_v6_upper_case', 'FE80::ABCD', 'link_local'],
  ['link_local_v6_last', 'febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'link_local'],
  ['site_local_deprecated', 'fec0::1', 'reserved'],
  ['site_local_last', 'feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'reserved'],
  ['multicast_v6_all_nodes', 'ff02::1', 'multicast'],
  ['multicast_v6_global', 'ff0e::101', 'multicast'],
  ['unallocated_below_global_unicast', '1fff:ffff::1', 'reserved'],
  ['unallocated_above_global_unicast', '4000::1', 'reserved'],
  ['siit_translated_not_global', '::ffff:0:7f00:1', 'reserved'],
  ['global_unicast_first', '2000::1', 'public'],
  ['public_google_v6', '2001:4860:4860::8888', 'public'],
  ['public_cloudflare_v6', '2606:4700:4700::1111', 'public'],
  ['public_zero_padded', '2606:4700:4700:0000:0000:0000:0000:1111', 'public'],
  ['public_last_global_unicast', '3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'public'],
  ['public_as112_direct_delegation', '2620:4f:8000::1', 'public'],
];

describe('classifyAddress', () => {
  test.each(IPV4_CLASSES)('%s: %s is %s', (_trick, ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
  });

  test.each(IPV6_CLASSES)('%s: %s is %s', (_trick, ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
  });

  test.each([
    ['empty', ''],
    ['host_name', 'example.com'],
    ['inet_aton_short_form', '127.1'],
    ['bracketed_v6', '[::1]'],
    ['zone_id', 'fe80::1%eth0'],
  ])('throws TypeError for non-IP input (%s)', (_trick, input) => {
    expect(() => classifyAddress(input)).toThrow(TypeError);
  });

  test('every IPv4 address classifies as its IPv4-mapped IPv6 form (property)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
        const dotted = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
        const hex = `::ffff:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
        expect(classifyAddress(hex)).toBe(classifyAddress(dotted));
        expect(classifyAddress(`::ffff:${dotted}`)).toBe(classifyAddress(dotted));
      }),
      { numRuns: 500 },
    );
  });
});

describe('addressReason', () => {
  test.each([
    ['public', null],
    ['private', 'ip_private'],
    ['loopback', 'ip_loopback'],
    ['link_local', 'ip_link_local'],
    ['cgnat', 'ip_cgnat'],
    ['multicast', 'ip_multicast'],
    ['unspecified', 'ip_unspecified'],
    ['reserved', 'ip_reserved'],
    ['v6_embedded', 'ip_v6_embedded'],
  ] as const)('%s -> %s', (cls, reason) => {
    expect(addressReason(cls)).toBe(reason);
  });
});

describe('canonicalIp', () => {
  test.each([
    ['dotted_quad_unchanged', '8.8.8.8', '8.8.8.8'],
    ['zero_address', '0.0.0.0', '0.0.0.0'],
    ['v6_upper_case_lowered', '2001:DB8::A', '2001:db8::a'],
    ['v6_leading_zeros_dropped', '2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['v6_longest_run_compressed', '2001:db8:0:0:1:0:0:0', '2001:db8:0:0:1::'],
    ['v6_first_of_equal_runs_compressed', '2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['v6_single_zero_group_not_compressed', '2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['v6_double_colon_for_one_group_expanded', '2001:db8::1:1:1:1:1', '2001:db8:0:1:1:1:1:1'],
    ['v6_trailing_run', '1:0:0:0:0:0:0:0', '1::'],
    ['v6_leading_run', '0:0:0:0:1:2:3:4', '::1:2:3:4'],
    ['v6_leading_run_low_value_is_compatible_form', '0:0:0:0:0:0:0:2', '0.0.0.2'],
    ['v6_all_zero', '::', '::'],
    ['v6_loopback_kept', '::1', '::1'],
    ['v6_loopback_full_form', '0:0:0:0:0:0:0:1', '::1'],
    ['mapped_dotted_unwrapped', '::ffff:127.0.0.1', '127.0.0.1'],
    ['mapped_hex_unwrapped', '::ffff:7f00:1', '127.0.0.1'],
    ['mapped_upper_case_unwrapped', '::FFFF:A9FE:A9FE', '169.254.169.254'],
    ['mapped_full_form_unwrapped', '0:0:0:0:0:ffff:0a00:0001', '10.0.0.1'],
    ['compatible_dotted_unwrapped', '::127.0.0.1', '127.0.0.1'],
    ['compatible_hex_unwrapped', '::a9fe:a9fe', '169.254.169.254'],
    ['nat64_kept_as_v6_hex', '64:ff9b::192.0.2.1', '64:ff9b::c000:201'],
    ['siit_translated_kept', '::ffff:0:1.2.3.4', '::ffff:0:102:304'],
    ['full_eight_groups', 'fe80:1:2:3:4:5:6:7', 'fe80:1:2:3:4:5:6:7'],
  ])('%s: %s -> %s', (_trick, input, expected) => {
    expect(canonicalIp(input)).toBe(expected);
  });

  test.each([
    ['empty', ''],
    ['leading_zero_octet_ambiguous_octal', '010.0.0.1'],
    ['octet_over_255', '256.0.0.1'],
    ['three_parts', '127.0.1'],
    ['five_parts', '1.2.3.4.5'],
    ['single_decimal', '2130706433'],
    ['hex_octet', '0x7f.0.0.1'],
    ['trailing_dot', '1.2.3.4.'],
    ['leading_dot', '.1.2.3.4'],
    ['empty_octet', '1..3.4'],
    ['sign', '+1.2.3.4'],
    ['space_inside', '1.2.3. 4'],
    ['four_digit_octet', '0001.2.3.4'],
    ['bracketed_v6', '[::1]'],
    ['zone_id', 'fe80::1%eth0'],
    ['percent_encoded_zone', 'fe80::1%25eth0'],
    ['triple_colon', ':::'],
    ['two_double_colons', '1::2::3'],
    ['leading_single_colon', ':1::2'],
    ['trailing_single_colon', '1::2:'],
    ['five_hex_digits', '12345::1'],
    ['nine_groups', '1:2:3:4:5:6:7:8:9'],
    ['seven_groups_without_gap', '1:2:3:4:5:6:7'],
    ['eight_groups_plus_gap', '1:2:3:4:5:6:7::8'],
    ['non_hex', '::g'],
    ['v4_not_last', '::1.2.3.4:1'],
    ['v4_tail_leading_zero', '::ffff:127.0.0.01'],
    ['v4_tail_short', '::ffff:127.1'],
    ['v4_tail_too_many_groups', '1:2:3:4:5:6:7:1.2.3.4'],
    ['host_name', 'localhost'],
    ['full_width_digits', '１.２.３.４'],
  ])('%s: %s is not an IP', (_trick, input) => {
    expect(canonicalIp(input)).toBeNull();
    expect(parseIp(input)).toBeNull();
  });

  test('IPv6 canonical text round-trips to the same bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.boolean(), (bytes, sparse) => {
        const b = sparse ? bytes.map((x, i) => (i % 4 < 2 ? 0 : x)) : bytes;
        const groups: string[] = [];
        for (let i = 0; i < 16; i += 2) groups.push((((b[i] ?? 0) << 8) | (b[i + 1] ?? 0)).toString(16).padStart(4, '0'));
        const canonical = canonicalIp(groups.join(':'));
        expect(canonical).not.toBeNull();
        expect(canonicalIp(canonical as string)).toBe(canonical);
        const reparsed = parseIp(canonical as string);
        if (reparsed?.version === 6) expect([...reparsed.bytes]).toEqual([...b]);
      }),
      { numRuns: 500 },
    );
  });
});

describe('parseIp', () => {
  test('IPv6 parsing agrees with the WHATWG URL parser (differential property)', () => {
    // Near-miss addresses: 1–9 groups (empty groups make "::" and ":::"), sometimes a dotted tail.
    const group = fc.oneof(
      { arbitrary: fc.constantFrom('0', '1', 'ff', 'FFFF', '0db8', 'a'), weight: 12 },
      { arbitrary: fc.constant(''), weight: 3 },
      { arbitrary: fc.constantFrom('00000', '12345', 'g'), weight: 1 },
    );
    const tail = fc.constantFrom('', '', '', '1.2.3.4', '127.0.0.01', '256.1.1.1', '1.2.3', '1.2.3.4.');
    fc.assert(
      fc.property(fc.array(group, { minLength: 1, maxLength: 9 }), tail, (groups, v4) => {
        const text = [...groups, ...(v4 === '' ? [] : [v4])].join(':');
        if (!text.includes(':')) return;
        let theirs: string | null;
        try {
          theirs = new URL(`http://[${text}]/`).hostname.slice(1, -1);
        } catch {
          theirs = null;
        }
        const ours = parseIp(text);
        expect(ours === null, text).toBe(theirs === null);
        if (ours !== null && theirs !== null) expect([...ours.bytes]).toEqual([...(parseIp(theirs)?.bytes ?? [])]);
      }),
      { numRuns: 1000 },
    );
  });

  test('IPv4 gives four bytes', () => {
    expect(parseIp('192.168.1.2')).toEqual({ version: 4, bytes: Uint8Array.of(192, 168, 1, 2) });
  });

  test('IPv6 gives sixteen bytes, mapped addresses are not unwrapped', () => {
    const p = parseIp('::ffff:1.2.3.4');
    expect(p?.version).toBe(6);
    expect([...(p?.bytes ?? [])]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 1, 2, 3, 4]);
  });
});

describe('parseCidr', () => {
  test.each([
    ['v4_slash_8', '10.0.0.0/8', 4, 8],
    ['v4_slash_0', '0.0.0.0/0', 4, 0],
    ['v4_slash_32', '10.1.2.3/32', 4, 32],
    ['v4_bare_address_is_host_route', '10.1.2.3', 4, 32],
    ['v4_odd_prefix', '100.64.0.0/10', 4, 10],
    ['v6_slash_32', '2001:db8::/32', 6, 32],
    ['v6_slash_0', '::/0', 6, 0],
    ['v6_slash_128', '::1/128', 6, 128],
    ['v6_bare_address', 'fd00:ec2::254', 6, 128],
    ['v6_odd_prefix', 'fe80::/10', 6, 10],
    ['v6_nibble_unaligned', '2001::/23', 6, 23],
  ] as const)('%s: %s', (_trick, cidr, version, prefix) => {
    const c = parseCidr(cidr);
    expect(c.version).toBe(version);
    expect(c.prefix).toBe(prefix);
  });

  test.each([
    ['empty', '', 'bad address'],
    ['host_name', 'example.com/24', 'bad address'],
    ['inet_aton_short', '10.1/16', 'bad address'],
    ['leading_zero_octet', '010.0.0.0/8', 'bad address'],
    ['v4_prefix_too_long', '10.0.0.0/33', 'prefix too long'],
    ['v6_prefix_too_long', '::/129', 'prefix too long'],
    ['prefix_empty', '10.0.0.0/', 'bad prefix'],
    ['prefix_negative', '10.0.0.0/-1', 'bad prefix'],
    ['prefix_plus_sign', '10.0.0.0/+8', 'bad prefix'],
    ['prefix_leading_zero', '10.0.0.0/08', 'bad prefix'],
    ['prefix_not_decimal', '10.0.0.0/0x8', 'bad prefix'],
    ['prefix_netmask_form', '10.0.0.0/255.0.0.0', 'bad prefix'],
    ['two_slashes', '10.0.0.0/8/8', 'bad prefix'],
    ['v4_host_bits_set', '10.0.0.1/8', 'host bits set'],
    ['v4_host_bits_set_odd_prefix', '100.65.0.0/9', 'host bits set'],
    ['v6_host_bits_set', '2001:db8::1/32', 'host bits set'],
    ['v6_host_bits_set_partial_byte', 'fe80::/8', 'host bits set'],
    ['zone_id', 'fe80::%eth0/10', 'bad address'],
    ['bracketed_v6', '[::1]/128', 'bad address'],
    ['whitespace', ' 10.0.0.0/8', 'bad address'],
  ])('%s: %s throws CidrError (%s)', (_trick, cidr, why) => {
    let error: unknown;
    try {
      parseCidr(cidr);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(CidrError);
    expect((error as CidrError).entry).toBe(cidr);
    expect((error as CidrError).message).toContain(why);
    expect((error as CidrError).message).toContain(JSON.stringify(cidr));
  });

  test('host bits message suggests the network', () => {
    expect(() => parseCidr('10.0.0.1/8')).toThrow('did you mean 10.0.0.0/8?');
  });
});

describe('CidrSet', () => {
  const set = new CidrSet([
    '10.20.0.0/16',
    '192.168.1.5',
    '100.64.0.0/10',
    'fd00:ec2::/32',
    '2001:db8:1::/48',
    '::ffff:172.16.0.0/108',
    '2001::/23',
  ]);

  test.each([
    ['v4_inside_16', '10.20.3.4', true],
    ['v4_first_of_16', '10.20.0.0', true],
    ['v4_last_of_16', '10.20.255.255', true],
    ['v4_just_outside_16', '10.21.0.0', false],
    ['v4_just_below_16', '10.19.255.255', false],
    ['v4_host_route', '192.168.1.5', true],
    ['v4_next_to_host_route', '192.168.1.6', false],
    ['v4_cgnat_10_bit_prefix_edge', '100.127.255.255', true],
    ['v4_cgnat_outside', '100.128.0.0', false],
    ['mapped_v6_matches_v4_entry', '::ffff:10.20.1.1', true],
    ['mapped_v6_hex_matches_v4_entry', '::ffff:a14:101', true],
    ['compatible_v6_matches_v4_entry', '::10.20.1.1', true],
    ['mapped_entry_stored_as_v4', '172.16.9.9', true],
    ['mapped_entry_matches_mapped_address', '::ffff:172.31.0.1', true],
    ['mapped_entry_boundary', '172.32.0.0', false],
    ['v6_inside_32', 'fd00:ec2::254', true],
    ['v6_outside_32', 'fd00:ec3::1', false],
    ['v6_inside_48', '2001:db8:1:ffff::1', true],
    ['v6_outside_48', '2001:db8:2::1', false],
    ['v6_unaligned_prefix_inside', '2001:1ff::1', true],
    ['v6_unaligned_prefix_outside', '2001:200::1', false],
    ['v6_upper_case_spelling', 'FD00:0EC2:0000::0001', true],
    ['not_an_ip', 'example.com', false],
    ['empty', '', false],
  ])('%s: %s -> %s', (_trick, ip, expected) => {
    expect(set.has(ip)).toBe(expected);
  });

  test('size counts distinct networks', () => {
    expect(set.size).toBe(7);
    expect(new CidrSet(['10.0.0.0/8', '10.0.0.0/8', '::ffff:10.0.0.0/104']).size).toBe(1);
    expect(new CidrSet([]).size).toBe(0);
  });

  test('empty set matches nothing', () => {
    expect(new CidrSet([]).has('10.0.0.1')).toBe(false);
    expect(new CidrSet([]).has('::1')).toBe(false);
  });

  test('a v6 catch-all does not capture mapped IPv4 (they are judged as IPv4)', () => {
    const all6 = new CidrSet(['::/0']);
    expect(all6.has('2606:4700::1')).toBe(true);
    expect(all6.has('::ffff:127.0.0.1')).toBe(false);
    expect(new CidrSet(['0.0.0.0/0']).has('::ffff:127.0.0.1')).toBe(true);
  });

  test('constructor names the first bad entry', () => {
    expect(() => new CidrSet(['10.0.0.0/8', '10.0.0.0/40'])).toThrow(CidrError);
    try {
      new CidrSet(['10.0.0.0/8', '10.0.0.0/40']);
    } catch (e) {
      expect((e as CidrError).entry).toBe('10.0.0.0/40');
    }
  });

  test('agrees with a naive linear scan (property)', () => {
    const v4 = fc.integer({ min: 0, max: 0xffffffff });
    const toDotted = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
    const mask = (p: number): number => (p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0);
    const cidr = fc.tuple(v4, fc.integer({ min: 0, max: 32 })).map(([n, p]) => [((n & mask(p)) >>> 0), p] as const);
    fc.assert(
      fc.property(fc.array(cidr, { maxLength: 12 }), fc.array(v4, { minLength: 1, maxLength: 20 }), (nets, ips) => {
        const s = new CidrSet(nets.map(([n, p]) => `${toDotted(n)}/${p}`));
        for (const ip of ips) {
          const naive = nets.some(([n, p]) => ((ip & mask(p)) >>> 0) === n);
          expect(s.has(toDotted(ip))).toBe(naive);
        }
      }),
      { numRuns: 300 },
    );
  });
});
