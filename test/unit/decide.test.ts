import { describe, expect, test } from 'vitest';
import { decide, type DecisionInput } from '../../src/policy/decide.js';
import { normalizePathForMatch } from '../../src/policy/glob.js';
import { connectInput, compileYaml, httpInput } from '../helpers/policy.js';

const policy = compileYaml(`
version: 1
destinations:
  registries:
    hosts: [registry.npmjs.org, pypi.org, files.pythonhosted.org]
  github-read:
    hosts: [github.com, api.github.com, "*.githubusercontent.com"]
    methods: [GET, HEAD]
    inspect: true
    lockdown: allow
  github-git:
    hosts: [github.com]
    methods: [POST]
    paths: ["/*/*/git-upload-pack"]
    inspect: true
  api-rules:
    hosts: [api.example.com]
    methods: [GET, POST]
    paths: ["/v1/**", "/health"]
  plain-rules:
    hosts: [rules.example.com]
    methods: [GET]
  drive:
    hosts: [www.googleapis.com]
    inspect: true
    connector: true
    lockdown: allow
  chat-ws:
    hosts: [ws.example.com]
    websocket: true
    inspect: true
    lockdown: allow
  tunnel-ok:
    hosts: [tunnel.example.com]
    lockdown: allow-tunnel
  cached:
    hosts: [docs.example.com]
    lockdown: cache-only
  dev:
    hosts: [mcp.dev.example.com]
    developerOnly: true
  mirror:
    hosts: [mirror.internal]
    allowPrivate: [10.20.0.0/16]
  literal:
    hosts: ["8.8.8.8", "[2606:4700::1111]", "10.20.0.5"]
    allowPrivate: [10.20.0.5/32]
  https-only:
    hosts: [secure.example.com]
    schemes: [https]
  odd-port:
    hosts: [odd.example.com]
    ports: [8443]
accounts:
  - match: "canary-*"
    mode: report
    allow: [registries, api-rules]
  - match: "ci-*"
    allow: [registries, github-read, github-git, api-rules, plain-rules, drive, chat-ws, tunnel-ok, cached, dev, mirror, literal, https-only, odd-port]
  - match: "*"
    allow: [registries]
deny:
  hosts: ["*.ngrok.io", pastebin.com, "bad.githubusercontent.com"]
network:
  allowPrivate: [192.168.50.0/24]
`);

interface Row {
  name: string;
  input: DecisionInput;
  verdict: 'allow' | 'deny' | 'report';
  reason: string;
  destination?: string | null;
}

const ci = 'ci-build';
const rows: Row[] = [
  // allowlist basics
  { name: 'allow_exact_host_for_default_account', input: connectInput({ host: 'pypi.org' }), verdict: 'allow', reason: 'allowlisted', destination: 'registries' },
  { name: 'deny_unknown_host', input: connectInput({ host: 'evil.example' }), verdict: 'deny', reason: 'not_allowlisted', destination: null },
  { name: 'deny_suffix_confusion_allowed_name_as_prefix', input: connectInput({ host: 'pypi.org.evil.example' }), verdict: 'deny', reason: 'not_allowlisted' },
  { name: 'deny_suffix_confusion_glued_label', input: connectInput({ host: 'evilpypi.org' }), verdict: 'deny', reason: 'not_allowlisted' },
  { name: 'deny_subdomain_of_exact_host', input: connectInput({ host: 'x.pypi.org' }), verdict: 'deny', reason: 'not_allowlisted' },
  { name: 'allow_wildcard_one_label', input: httpInput({ account: ci, host: 'raw.githubusercontent.com', scheme: 'https', kind: 'intercepted', port: 443 }), verdict: 'allow', reason: 'allowlisted', destination: 'github-read' },
  { name: 'allow_wildcard_many_labels', input: httpInput({ account: ci, host: 'a.b.githubusercontent.com', scheme: 'https', kind: 'intercepted', port: 443 }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_wildcard_never_matches_apex', input: connectInput({ account: ci, host: 'githubusercontent.com' }), verdict: 'deny', reason: 'not_allowlisted' },
  { name: 'deny_account_not_granted_destination', input: connectInput({ account: 'someone', host: 'github.com' }), verdict: 'deny', reason: 'not_allowlisted' },
  // deny wins
  { name: 'deny_global_denylist_wins_over_wildcard_allow', input: connectInput({ account: ci, host: 'bad.githubusercontent.com' }), verdict: 'deny', reason: 'denied_host' },
  { name: 'deny_global_denylist_wildcard', input: connectInput({ host: 'x.y.ngrok.io' }), verdict: 'deny', reason: 'denied_host' },
  { name: 'deny_denylist_precedes_ip_class', input: connectInput({ host: 'pastebin.com', port: 1 }), verdict: 'deny', reason: 'denied_host' },
  // IP literals
  { name: 'deny_private_ip_when_enforcing', input: httpInput({ host: '10.0.0.1', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_private' },
  { name: 'deny_loopback_literal', input: httpInput({ host: '127.0.0.1', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_loopback' },
  { name: 'deny_metadata_literal', input: httpInput({ host: '169.254.169.254', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_link_local' },
  { name: 'deny_cgnat_literal', input: httpInput({ host: '100.64.0.1', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_cgnat' },
  { name: 'deny_v6_loopback_literal', input: connectInput({ host: '::1', hostKind: 'ipv6' }), verdict: 'deny', reason: 'ip_loopback' },
  { name: 'deny_nat64_literal', input: connectInput({ host: '64:ff9b::a9fe:a9fe', hostKind: 'ipv6' }), verdict: 'deny', reason: 'ip_v6_embedded' },
  { name: 'deny_public_literal_not_allowlisted', input: connectInput({ host: '1.1.1.1', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_literal' },
  { name: 'deny_allowlisted_literal_for_other_account', input: connectInput({ host: '8.8.8.8', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_literal' },
  { name: 'allow_allowlisted_public_literal', input: connectInput({ account: ci, host: '8.8.8.8', hostKind: 'ipv4' }), verdict: 'allow', reason: 'allowlisted', destination: 'literal' },
  { name: 'allow_allowlisted_v6_literal', input: connectInput({ account: ci, host: '2606:4700::1111', hostKind: 'ipv6' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'allow_private_literal_opened_by_destination', input: httpInput({ account: ci, host: '10.20.0.5', hostKind: 'ipv4' }), verdict: 'allow', reason: 'allowlisted', destination: 'literal' },
  { name: 'deny_private_literal_opened_for_other_account', input: httpInput({ host: '10.20.0.5', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_private' },
  { name: 'deny_global_allow_private_still_needs_allowlisted_literal', input: httpInput({ host: '192.168.50.4', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_literal' },
  // schemes and ports
  { name: 'deny_non_http_scheme', input: httpInput({ host: 'pypi.org', scheme: 'ftp', port: 21 }), verdict: 'deny', reason: 'scheme_not_allowed' },
  { name: 'deny_scheme_outside_destination_schemes', input: httpInput({ account: ci, host: 'secure.example.com' }), verdict: 'deny', reason: 'scheme_not_allowed' },
  { name: 'allow_scheme_inside_destination_schemes', input: connectInput({ account: ci, host: 'secure.example.com' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_port_not_default', input: connectInput({ host: 'pypi.org', port: 22 }), verdict: 'deny', reason: 'port_not_allowed', destination: 'registries' },
  { name: 'allow_plain_http_connect_port_80', input: connectInput({ host: 'pypi.org', port: 80, scheme: 'http' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_default_port_when_ports_set', input: connectInput({ account: ci, host: 'odd.example.com' }), verdict: 'deny', reason: 'port_not_allowed' },
  { name: 'allow_listed_port', input: connectInput({ account: ci, host: 'odd.example.com', port: 8443 }), verdict: 'allow', reason: 'allowlisted' },
  // methods, paths, inspection
  { name: 'deny_opaque_tunnel_to_ruled_destination', input: connectInput({ account: ci, host: 'api.example.com' }), verdict: 'deny', reason: 'inspection_required', destination: 'api-rules' },
  { name: 'deny_plain_http_connect_to_ruled_destination', input: connectInput({ account: ci, host: 'rules.example.com', port: 80, scheme: 'http' }), verdict: 'deny', reason: 'inspection_required' },
  { name: 'allow_tunnel_to_inspected_ruled_destination', input: connectInput({ account: ci, host: 'github.com' }), verdict: 'allow', reason: 'allowlisted', destination: 'github-read' },
  { name: 'allow_method_and_path_on_plain_http', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1/users/7' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'allow_double_star_matches_zero_segments', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_method_not_listed', input: httpInput({ account: ci, host: 'api.example.com', method: 'DELETE', path: '/v1/x' }), verdict: 'deny', reason: 'method_not_allowed' },
  { name: 'deny_path_not_listed', input: httpInput({ account: ci, host: 'api.example.com', path: '/v2/x' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'deny_path_prefix_is_not_a_segment', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1x/y' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'deny_exact_path_with_trailing_segment', input: httpInput({ account: ci, host: 'api.example.com', path: '/health/x' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'deny_encoded_dot_segments_escaping_rule', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1/%2e%2e/admin' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'deny_encoded_slash_traversal', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1/x%2F..%2F..%2Fadmin' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'deny_bad_percent_encoding', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1/%zz' }), verdict: 'deny', reason: 'path_not_allowed' },
  { name: 'allow_encoded_slash_kept_in_one_segment', input: httpInput({ account: ci, host: 'api.example.com', path: '/v1/a%2Fb' }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'allow_git_upload_pack_post', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'github.com', method: 'POST', path: '/octo/hello.git/git-upload-pack', hasBody: true }), verdict: 'allow', reason: 'allowlisted', destination: 'github-git' },
  { name: 'deny_git_receive_pack_post', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'github.com', method: 'POST', path: '/octo/hello.git/git-receive-pack', hasBody: true }), verdict: 'deny', reason: 'path_not_allowed', destination: 'github-git' },
  { name: 'deny_put_on_read_only_github', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', method: 'PUT', path: '/repos/a/b' }), verdict: 'deny', reason: 'method_not_allowed' },
  // upgrades
  { name: 'deny_websocket_without_flag', input: httpInput({ account: ci, host: 'pypi.org', upgrade: 'websocket' }), verdict: 'deny', reason: 'upgrade_not_allowed' },
  { name: 'allow_websocket_with_flag', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'ws.example.com', upgrade: 'websocket' }), verdict: 'allow', reason: 'allowlisted' },
  // developer mode
  { name: 'deny_developer_only_without_developer_mode', input: connectInput({ account: ci, host: 'mcp.dev.example.com' }), verdict: 'deny', reason: 'developer_only' },
  { name: 'allow_developer_only_in_developer_mode', input: connectInput({ account: ci, host: 'mcp.dev.example.com', developerMode: true }), verdict: 'allow', reason: 'allowlisted' },
  // lockdown
  { name: 'deny_lockdown_destination_not_marked', input: connectInput({ host: 'pypi.org', lockdown: true }), verdict: 'deny', reason: 'lockdown_destination' },
  { name: 'deny_lockdown_connector', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'www.googleapis.com', lockdown: true }), verdict: 'deny', reason: 'lockdown_connector' },
  { name: 'deny_lockdown_opaque_tunnel', input: connectInput({ account: ci, host: 'docs.example.com', lockdown: true }), verdict: 'deny', reason: 'lockdown_tunnel' },
  { name: 'allow_lockdown_allow_tunnel', input: connectInput({ account: ci, host: 'tunnel.example.com', lockdown: true }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'allow_lockdown_intercepted_tunnel', input: connectInput({ account: ci, host: 'api.github.com', lockdown: true }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_lockdown_upgrade', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'ws.example.com', upgrade: 'websocket', lockdown: true }), verdict: 'deny', reason: 'lockdown_upgrade' },
  { name: 'deny_lockdown_method', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'github.com', method: 'POST', path: '/a/b/git-upload-pack', lockdown: true }), verdict: 'deny', reason: 'lockdown_method' },
  { name: 'deny_lockdown_method_override_header', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', headerNames: ['host', 'x-http-method-override'], lockdown: true }), verdict: 'deny', reason: 'lockdown_method' },
  { name: 'deny_lockdown_method_override_query', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', query: '_method=DELETE', lockdown: true }), verdict: 'deny', reason: 'lockdown_method' },
  { name: 'deny_lockdown_body_on_get', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', hasBody: true, lockdown: true }), verdict: 'deny', reason: 'lockdown_body' },
  { name: 'deny_lockdown_long_url', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', path: '/' + 'a'.repeat(2100), lockdown: true }), verdict: 'deny', reason: 'lockdown_url' },
  { name: 'deny_lockdown_high_entropy_query', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', query: 'q=dGhlIHNlY3JldCBrZXkgaXMgc2stbGl2ZS0xMjM0NTY3ODk', lockdown: true }), verdict: 'deny', reason: 'lockdown_url' },
  { name: 'allow_lockdown_low_entropy_query', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', query: 'q=json+decoder&page=2', lockdown: true }), verdict: 'allow', reason: 'allowlisted' },
  { name: 'deny_lockdown_big_head', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', requestBytes: 9000, lockdown: true }), verdict: 'deny', reason: 'lockdown_url' },
  { name: 'deny_lockdown_unlisted_header', input: httpInput({ account: ci, kind: 'intercepted', scheme: 'https', port: 443, host: 'api.github.com', headerNames: ['host', 'authorization'], lockdown: true }), verdict: 'deny', reason: 'lockdown_url' },
  { name: 'deny_lockdown_cache_only_is_a_miss', input: httpInput({ account: ci, host: 'docs.example.com', lockdown: true }), verdict: 'deny', reason: 'lockdown_not_cached' },
  { name: 'deny_lockdown_not_allowlisted_stays_not_allowlisted', input: connectInput({ host: 'evil.example', lockdown: true }), verdict: 'deny', reason: 'not_allowlisted' },
  // report mode
  { name: 'report_unknown_host_for_canary', input: connectInput({ account: 'canary-1', host: 'unknown.example' }), verdict: 'report', reason: 'report_would_deny' },
  { name: 'report_path_for_canary', input: httpInput({ account: 'canary-1', host: 'api.example.com', path: '/v9' }), verdict: 'report', reason: 'report_would_deny', destination: 'api-rules' },
  { name: 'report_never_relaxes_ip_class', input: httpInput({ account: 'canary-1', host: '10.0.0.1', hostKind: 'ipv4' }), verdict: 'deny', reason: 'ip_private' },
  { name: 'report_never_relaxes_denylist', input: connectInput({ account: 'canary-1', host: 'pastebin.com' }), verdict: 'deny', reason: 'denied_host' },
  { name: 'report_never_relaxes_inspection_required', input: connectInput({ account: 'canary-1', host: 'api.example.com' }), verdict: 'deny', reason: 'inspection_required' },
  { name: 'report_never_relaxes_lockdown', input: connectInput({ account: 'canary-1', host: 'unknown.example', lockdown: true }), verdict: 'deny', reason: 'lockdown_destination' },
  { name: 'report_never_relaxes_scheme', input: httpInput({ account: 'canary-1', host: 'unknown.example', scheme: 'gopher', port: 70 }), verdict: 'deny', reason: 'scheme_not_allowed' },
];

describe('decide()', () => {
  test.each(rows)('$name', ({ input, verdict, reason, destination }) => {
    const d = decide(input, policy);
    expect({ verdict: d.verdict, reason: d.reason }).toEqual({ verdict, reason });
    if (destination !== undefined) expect(d.destination).toBe(destination);
  });

  test('report mode names the reason enforce would give', () => {
    const d = decide(connectInput({ account: 'canary-1', host: 'unknown.example' }), policy);
    expect(d.wouldDeny).toBe('not_allowlisted');
    const p = decide(httpInput({ account: 'canary-1', host: 'api.example.com', path: '/v9' }), policy);
    expect(p.wouldDeny).toBe('path_not_allowed');
  });

  test('first matching account rule wins', () => {
    // canary-* is report mode and does not grant github; the later ci-* rule is never consulted.
    const d = decide(connectInput({ account: 'canary-ci-1', host: 'github.com' }), policy);
    expect(d.accountRule).toBe(0);
    expect(d.verdict).toBe('report');
  });

  test('is pure: same input, same output, input untouched', () => {
    const input = Object.freeze(httpInput({ account: ci, host: 'api.example.com', path: '/v1/a' }));
    expect(decide(input, policy)).toEqual(decide(input, policy));
  });
});

describe('reason precedence (SPEC §1 step 4)', () => {
  const p = compileYaml(`
version: 1
destinations:
  all-rules:
    hosts: [x.example.com]
    ports: [8443]
    schemes: [https]
    methods: [GET]
    paths: ["/ok"]
    developerOnly: true
    connector: true
accounts:
  - match: "*"
    allow: [all-rules]
deny:
  hosts: [denied.example.com]
`);
  const everythingWrong = (over: Partial<DecisionInput>) =>
    httpInput({ host: 'x.example.com', scheme: 'http', port: 80, method: 'POST', path: '/no', hasBody: true, upgrade: 'websocket', lockdown: true, ...over });

  test.each([
    ['denied_host beats everything', { host: 'denied.example.com' }, 'denied_host'],
    ['scheme beats port', {}, 'scheme_not_allowed'],
    ['port beats developer_only', { scheme: 'https' }, 'port_not_allowed'],
    ['developer_only beats lockdown', { scheme: 'https', port: 8443 }, 'developer_only'],
    ['lockdown_destination beats methods', { scheme: 'https', port: 8443, developerMode: true }, 'lockdown_destination'],
    ['method beats path once out of lockdown', { scheme: 'https', port: 8443, developerMode: true, lockdown: false }, 'method_not_allowed'],
    ['path beats upgrade', { scheme: 'https', port: 8443, developerMode: true, lockdown: false, method: 'GET' }, 'path_not_allowed'],
    ['upgrade last', { scheme: 'https', port: 8443, developerMode: true, lockdown: false, method: 'GET', path: '/ok' }, 'upgrade_not_allowed'],
  ] as const)('%s', (_name, over, reason) => {
    expect(decide(everythingWrong(over as Partial<DecisionInput>), p).reason).toBe(reason);
  });

  test('lockdown reasons come in their own order', () => {
    const l = compileYaml(`
version: 1
destinations:
  c: { hosts: [c.example.com], connector: true, lockdown: allow }
  t: { hosts: [t.example.com], lockdown: allow }
  w: { hosts: [w.example.com], lockdown: allow, websocket: true }
accounts: [{ match: "*", allow: [c, t, w] }]
`);
    const lock = (over: Partial<DecisionInput> & { host: string }) => decide(httpInput({ lockdown: true, ...over }), l).reason;
    expect(lock({ host: 'c.example.com', method: 'POST' })).toBe('lockdown_connector');
    expect(decide(connectInput({ host: 't.example.com', lockdown: true }), l).reason).toBe('lockdown_tunnel');
    expect(lock({ host: 'w.example.com', upgrade: 'websocket', method: 'POST' })).toBe('lockdown_upgrade');
    expect(lock({ host: 'w.example.com', method: 'POST', hasBody: true })).toBe('lockdown_method');
    expect(lock({ host: 'w.example.com', hasBody: true, path: '/' + 'x'.repeat(3000) })).toBe('lockdown_body');
    expect(lock({ host: 'w.example.com', path: '/' + 'x'.repeat(3000) })).toBe('lockdown_url');
  });
});

describe('path normalization for matching', () => {
  test.each([
    ['/a/b', '/a/b'],
    ['/a/./b', '/a/b'],
    ['/a/../b', '/b'],
    ['/a/b/..', '/a/'],
    ['/../../a', '/a'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/%2E/b', '/a/b'],
    ['/a%20b', '/a b'],
    ['/a%2Fb', '/a%2Fb'],
    ['/a%2fb', '/a%2Fb'],
    ['/a%5cb', '/a%5Cb'],
    ['/a%252e%252e/b', '/a%2e%2e/b'],
    ['/a/x%2F..%2Fb', null],
    ['/a/..%5Cb', null],
    ['/%zz', null],
  ])('%s → %s', (input, expected) => {
    expect(normalizePathForMatch(input)).toBe(expected);
  });
});

describe('matching cost does not depend on rule count', () => {
  test('100,000 host rules compile and decide correctly', { timeout: 60_000 }, () => {
    const lines = ['version: 1', 'destinations:'];
    for (let i = 0; i < 50_000; i++) lines.push(`  d${i}: { hosts: [host${i}.example.com, "*.w${i}.example.net"] }`);
    lines.push('accounts:', '  - match: "*"', '    allow: [d0, d49999]');
    const big = compileYaml(lines.join('\n'));
    expect(decide(connectInput({ host: 'host49999.example.com' }), big).destination).toBe('d49999');
    expect(decide(connectInput({ host: 'a.b.w0.example.net' }), big).destination).toBe('d0');
    expect(decide(connectInput({ host: 'host123.example.com' }), big).reason).toBe('not_allowlisted');
  });
});

describe('several destinations naming one host', () => {
  // Three destinations name shared.example.com; a wildcard one names it too. Accounts list them
  // in different orders: the account's own order decides, never the policy file's.
  const shared = compileYaml(`
version: 1
destinations:
  read:
    hosts: [shared.example.com]
    methods: [GET]
  write:
    hosts: [shared.example.com]
    methods: [POST]
    paths: ["/upload/**"]
  any:
    hosts: ["*.example.com"]
  filler-1:
    hosts: [a.test]
  filler-2:
    hosts: [b.test]
accounts:
  - match: "writer-first"
    allow: [filler-1, write, filler-2, read, any]
  - match: "read-first"
    allow: [read, filler-1, write]
  - match: "wild-first"
    allow: [any, read, write]
  - match: "write-only"
    allow: [filler-2, write]
`);
  const at = (account: string, method: string, path = '/x'): { verdict: string; reason: string; destination: string | null } => {
    const d = decide(httpInput({ account, host: 'shared.example.com', method, path }), shared);
    return { verdict: d.verdict, reason: d.reason, destination: d.destination };
  };

  test('the first destination in the account allow list that allows the request wins', () => {
    expect(at('writer-first', 'POST', '/upload/a')).toEqual({ verdict: 'allow', reason: 'allowlisted', destination: 'write' });
    expect(at('writer-first', 'GET')).toEqual({ verdict: 'allow', reason: 'allowlisted', destination: 'read' });
    expect(at('read-first', 'GET')).toEqual({ verdict: 'allow', reason: 'allowlisted', destination: 'read' });
    expect(at('wild-first', 'GET')).toEqual({ verdict: 'allow', reason: 'allowlisted', destination: 'any' });
    // writer-first lists `any` last: a DELETE fails write and read and is allowed by any.
    expect(at('writer-first', 'DELETE')).toEqual({ verdict: 'allow', reason: 'allowlisted', destination: 'any' });
  });

  test('when none allows, the reason that got furthest is given, with its destination', () => {
    // read-first: read says method_not_allowed, write gets past the method and fails the path.
    expect(at('read-first', 'POST', '/elsewhere')).toEqual({ verdict: 'deny', reason: 'path_not_allowed', destination: 'write' });
    expect(at('read-first', 'DELETE')).toMatchObject({ verdict: 'deny', reason: 'method_not_allowed' });
    expect(at('write-only', 'GET')).toEqual({ verdict: 'deny', reason: 'method_not_allowed', destination: 'write' });
  });
});
