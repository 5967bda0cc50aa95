import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, test } from 'vitest';
import {
  formatIssue,
  loadPolicyFile,
  loadPolicyFileSync,
  parsePolicy,
  PolicyLoadError,
  type PolicyIssue,
} from '../../src/policy/load.js';
import { DEFAULT_LOCKDOWN_HEADERS } from '../../src/policy/schema.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/policies/', import.meta.url));
const fixture = (name: string): string => join(FIXTURES, name);

/** The issues a load throws (fails the test when it loads). */
function issuesOf(load: () => unknown): readonly PolicyIssue[] {
  try {
    load();
  } catch (err) {
    if (err instanceof PolicyLoadError) return err.issues;
    throw err;
  }
  throw new Error('expected a PolicyLoadError');
}

/**
 * Renders an issue against an expectation "line:col: path: substring": position and path must
 * match exactly and the message must contain the substring; then it renders as the expectation
 * itself, otherwise in full, so toEqual shows a readable diff.
 */
function render(i: PolicyIssue, expected: string | undefined): string {
  const head = `${i.line}:${i.column}: ${i.path === '' ? '' : `${i.path}: `}`;
  if (expected?.startsWith(head) && i.message.includes(expected.slice(head.length))) return expected;
  return head + i.message;
}

function expectIssues(issues: readonly PolicyIssue[], expected: readonly string[]): void {
  expect(issues.map((i, k) => render(i, expected[k]))).toEqual(expected);
}

// One fixture per failure mode, named after it.
const BAD: readonly { fixture: string; expected: readonly string[] }[] = [
  { fixture: 'wildcard_too_broad', expected: ['5:13: destinations.everything.hosts[0]: "*.com" is too broad: a wildcard needs at least two labels after "*."'] },
  { fixture: 'bare_star_host', expected: ['5:7: deny.hosts[0]: "*" is too broad'] },
  {
    fixture: 'mid_label_wildcard',
    expected: [
      '6:9: destinations.cdn.hosts[0]: "cdn*.example.com": wildcards are only allowed as the whole first label',
      '7:9: destinations.cdn.hosts[1]: "assets.*.example.com": wildcards are only allowed as the whole first label',
      '8:9: destinations.cdn.hosts[2]: "*.*.example.com": wildcards are only allowed as the whole first label',
    ],
  },
  { fixture: 'unquoted_wildcard_is_alias', expected: ['6:7: deny.hosts[1]: "*.ngrok.io" must be quoted: an unquoted "*" starts a YAML alias'] },
  { fixture: 'duplicate_key', expected: ['8:3: destinations.github: duplicate key "github"'] },
  {
    fixture: 'unknown_destination_in_account',
    expected: [
      '10:13: accounts[0].allow[0]: no destination named "githb"; did you mean "github"?',
      '10:40: accounts[0].allow[2]: no destination named "gitlab"',
    ],
  },
  { fixture: 'uppercase_host', expected: ['5:13: destinations.github.hosts[0]: "GitHub.com" is not lower case; write "github.com"'] },
  { fixture: 'unicode_host_needs_punycode', expected: ['6:9: destinations.books.hosts[0]: "bücher.example" is not ASCII; use "xn--bcher-kva.example"'] },
  { fixture: 'scheme_in_host', expected: ['5:13: destinations.api.hosts[0]: write the bare host "api.example.com"; schemes are set with schemes:'] },
  { fixture: 'path_in_host', expected: ['5:13: destinations.api.hosts[0]: has a path; write "api.example.com"; paths are set with paths:'] },
  { fixture: 'port_in_host', expected: ['5:13: destinations.api.hosts[0]: has a port; write "api.example.com"; ports are set with ports:'] },
  { fixture: 'trailing_dot_host', expected: ['5:13: destinations.api.hosts[0]: has a trailing dot; write "api.example.com"'] },
  { fixture: 'non_canonical_ipv4', expected: ['5:13: destinations.local-tool.hosts[0]: "127.1" is not a canonical IPv4 address; write "127.0.0.1"'] },
  { fixture: 'unbracketed_ipv6', expected: ['5:13: destinations.v6.hosts[0]: IPv6 literals are written in brackets; write "[2001:db8::1]"'] },
  { fixture: 'unquoted_ipv6_is_a_list', expected: ['6:9: destinations.v6.hosts[0]: expected a string, got a list; in YAML an unquoted [...] is a list'] },
  { fixture: 'duplicate_host', expected: ['5:41: destinations.github.hosts[2]: duplicate host "github.com" (already listed at destinations.github.hosts[0])'] },
  {
    fixture: 'bad_cidr',
    expected: [
      '6:20: destinations.mirror.allowPrivate[0]: invalid CIDR "10.20.0.0/33": prefix too long',
      '12:7: network.allowPrivate[0]: invalid CIDR "192.168.1.7/24": host bits set',
      '13:7: network.allowPrivate[1]: expected a CIDR such as 10.20.0.0/16',
    ],
  },
  {
    fixture: 'unknown_key',
    expected: [
      '5:5: destinations.github.host: unknown key "host"; did you mean "hosts"?',
      '7:5: destinations.github.inspekt: unknown key "inspekt"; did you mean "inspect"?',
      '11:5: accounts[0].colour: unknown key "colour"; allowed here: match, mode, allow',
    ],
  },
  { fixture: 'merge_key', expected: ['7:5: destinations.github-api["<<"]: YAML merge keys ("<<") are not supported'] },
  {
    fixture: 'missing_required_key',
    expected: ['5:5: destinations.github: missing required key "hosts"', '7:5: accounts[0]: missing required key "match"'],
  },
  { fixture: 'missing_version', expected: ['2:1: missing required key "version"'] },
  { fixture: 'wrong_version', expected: ['2:10: version: expected 1, got 2'] },
  {
    fixture: 'wrong_type',
    expected: [
      '5:12: destinations.github.hosts: expected a list, got a string',
      '6:14: destinations.github.inspect: expected true or false, got a string',
      '7:18: destinations.github.ports[1]: expected a number, got a string',
    ],
  },
  { fixture: 'empty_destination', expected: ['4:3: destinations.github: expected a map, got an empty value'] },
  {
    fixture: 'bad_port',
    expected: [
      '6:13: destinations.api.ports[0]: must be at least 1',
      '6:21: destinations.api.ports[2]: must be at most 65535',
      '6:28: destinations.api.ports[3]: expected an integer, got a number with a fraction',
    ],
  },
  {
    fixture: 'empty_list',
    expected: ['5:12: destinations.api.hosts: must not be empty', '6:14: destinations.api.methods: must not be empty'],
  },
  { fixture: 'yaml_syntax_error', expected: ['6:1: Flow sequence in block collection must be sufficiently indented and end with a ]'] },
  { fixture: 'yaml_1_1_directive', expected: ['1:1: only YAML 1.2 is supported; remove the %YAML directive'] },
  {
    fixture: 'lowercase_method',
    expected: [
      '6:20: destinations.api.methods[1]: methods are upper-case HTTP method tokens',
      '12:13: lockdown.methods[0]: methods are upper-case HTTP method tokens',
    ],
  },
  { fixture: 'bad_test_expect_reason', expected: ['16:21: tests[0].expect.deny: unknown reason "lockdown_methods"; did you mean "lockdown_method"?'] },
  {
    fixture: 'wrong_kind_expect_reason',
    expected: [
      '13:21: tests[0].expect.deny: "allowlisted" is an allow reason, not a deny reason',
      '17:22: tests[1].expect.allow: an allow is always "allowlisted"; write expect: allow',
      '21:23: tests[2].expect.report: a report is "report_would_deny" or the allowlist reason',
    ],
  },
  {
    fixture: 'bad_test_expect_shape',
    expected: [
      '7:13: tests[0].expect: expected one of "allow", "deny", "report" or a map',
      '11:38: tests[1].expect.because: unknown key "because"; allowed here: allow, deny, report',
    ],
  },
  {
    fixture: 'bad_test_request',
    expected: [
      '6:14: tests[0].request: request URL does not parse: userinfo is not allowed in the URL; to test that the proxy refuses it, expect { deny: bad_request }',
      '10:14: tests[1].request: request CONNECT authority ("host:port") does not parse: port required',
      '14:14: tests[2].request: expected "METHOD URL"',
    ],
  },
  { fixture: 'invalid_destination_name', expected: ['4:3: destinations["my api!"]: invalid name "my api!": destination names are letters, digits'] },
  { fixture: 'empty_file', expected: ['1:1: the policy is empty; it needs at least "version: 1"'] },
  { fixture: 'not_a_map', expected: ['2:1: expected a map, got a list'] },
  { fixture: 'too_many_aliases', expected: ['4:10: x-b[0]: too many YAML alias expansions'] },
  {
    fixture: 'several_errors',
    expected: [
      '5:13: destinations.github.hosts[0]: "GitHub.com" is not lower case; write "github.com"',
      '5:25: destinations.github.hosts[1]: "*.com" is too broad',
      '6:15: destinations.github.methods[0]: methods are upper-case HTTP method tokens',
      '7:14: destinations.github.inspect: expected true or false, got a string',
      '10:20: destinations.mirror.allowPrivate[0]: host bits set (did you mean 10.0.0.0/8?)',
      '13:21: accounts[0].allow[1]: no destination named "mirorr"; did you mean "mirror"?',
      '14:11: accounts[0].mode: expected "enforce" or "report", got "shadow"',
      '16:22: limits.requestsPerMinute: must be greater than 0',
      '21:21: tests[0].expect.deny: unknown reason "lockdown_methods"; did you mean "lockdown_method"?',
    ],
  },
];

describe('bad fixtures: every issue at its file:line:column', () => {
  test.each(BAD)('$fixture', ({ fixture: name, expected }) => {
    const file = fixture(`bad/${name}.yaml`);
    const issues = issuesOf(() => loadPolicyFileSync(file));
    expectIssues(issues, expected);
    for (const i of issues) expect(i.file).toBe(file);
  });

  test('the table covers every bad fixture, and only those', () => {
    const files = readdirSync(fixture('bad')).map((f) => f.replace(/\.yaml$/, ''));
    expect(BAD.map((b) => b.fixture).sort()).toEqual(files.sort());
  });

  test('several_errors: schema and semantic problems come in one error, sorted by position', () => {
    const issues = issuesOf(() => loadPolicyFileSync(fixture('bad/several_errors.yaml')));
    expect(issues).toHaveLength(9);
    const positions = issues.map((i) => i.line * 1000 + i.column);
    expect(positions).toEqual([...positions].sort((a, b) => a - b));
  });
});

describe('good fixtures', () => {
  test('minimal: every section takes its defaults', () => {
    const { policy, warnings } = loadPolicyFileSync(fixture('good/minimal.yaml'));
    expect(warnings).toEqual([]);
    expect(policy).toEqual({
      version: 1,
      destinations: {},
      accounts: [],
      deny: { hosts: [] },
      lockdown: { methods: ['GET', 'HEAD', 'OPTIONS'], maxUrlLength: 2048, maxRequestBytes: 8192, maxQueryEntropy: 4.5, headers: [...DEFAULT_LOCKDOWN_HEADERS] },
      network: { allowPrivate: [] },
      limits: { maxRequestBodyBytes: 10485760, maxUrlLength: 8192, maxHeaderBytes: 16384, requestsPerMinute: 600, maxConcurrentTunnels: 256 },
      tests: [],
    });
  });

  test('spec_example: the SPEC §5 policy loads with defaults filled in', () => {
    const { policy } = loadPolicyFileSync(fixture('good/spec_example.yaml'));
    expect(Object.keys(policy.destinations)).toEqual(['package-registries', 'github', 'drive', 'mirror', 'chat-ws', 'docs']);
    expect(policy.destinations['drive']).toEqual({
      hosts: ['www.googleapis.com'],
      schemes: ['http', 'https'],
      inspect: false,
      lockdown: 'deny',
      connector: true,
      websocket: false,
      developerOnly: false,
      allowPrivate: [],
    });
    expect(policy.destinations['github']?.paths).toEqual(['/repos/**']);
    expect(policy.accounts[1]).toEqual({ match: '*', mode: 'enforce', allow: ['docs'] });
    expect(policy.lockdown.headers).toEqual(DEFAULT_LOCKDOWN_HEADERS);
    expect(policy.limits.maxHeaderBytes).toBe(16384);
    expect(policy.tests[1]).toEqual({
      name: 'lockdown blocks gist creation',
      account: 'ci-build',
      lockdown: true,
      developerMode: false,
      request: 'POST https://api.github.com/gists',
      headers: {},
      body: false,
      expect: { deny: 'lockdown_method' },
    });
  });

  test('ip_literals_and_anchors: IP literals, aliases, report reasons and an expected bad_request', () => {
    const { policy, warnings } = loadPolicyFileSync(fixture('good/ip_literals_and_anchors.yaml'));
    expect(warnings).toEqual([]);
    expect(policy.destinations['metrics-dev']?.hosts).toEqual(['203.0.113.7', '[2001:db8::1]', '_collector.example.net']);
  });

  test.each<{ fixture: string; warnings: readonly string[] }>([
    { fixture: 'minimal', warnings: [] },
    { fixture: 'ip_literals_and_anchors', warnings: [] },
    {
      fixture: 'spec_example',
      warnings: [
        '13:3: destinations.drive: not allowed for any account',
        '16:3: destinations.mirror: not allowed for any account',
        '19:3: destinations.chat-ws: not allowed for any account',
      ],
    },
    {
      fixture: 'warnings',
      warnings: [
        '6:5: destinations.api.methods: reachable over HTTPS only through a tunnel, which is denied inspection_required; set inspect: true or drop the rules',
        '7:3: destinations.unused: not allowed for any account',
      ],
    },
  ])('warnings of $fixture', ({ fixture: name, warnings }) => {
    expectIssues(loadPolicyFileSync(fixture(`good/${name}.yaml`)).warnings, warnings);
  });

  test('a YAML warning (unknown tag) is passed on, positioned', () => {
    const { warnings } = parsePolicy('version: 1\ndeny:\n  hosts: [!foo pastebin.com]\n', 'p.yaml');
    expectIssues(warnings, ['3:11: Unresolved tag: !foo']);
  });
});

describe('parsePolicy', () => {
  const source = 'version: 1\n';

  test('hash is the sha256 hex of the source text', () => {
    const loaded = parsePolicy(source, 'p.yaml');
    expect(loaded.hash).toBe(createHash('sha256').update(source).digest('hex'));
    expect(loaded.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(loaded.source).toBe(source);
    expect(loaded.file).toBe('p.yaml');
  });

  test('the loaded policy is frozen, and loads never share default arrays', () => {
    const a = parsePolicy(source, 'a.yaml');
    const b = parsePolicy(source, 'b.yaml');
    expect(Object.isFrozen(a.policy.lockdown.methods)).toBe(true);
    expect(() => (a.policy.deny.hosts as string[]).push('x.com')).toThrow(TypeError);
    expect(a.policy.lockdown.methods).not.toBe(b.policy.lockdown.methods);
    expect(a.policy.deny.hosts).not.toBe(b.policy.deny.hosts);
  });

  test('a duplicate key does not hide the other problems', () => {
    const issues = issuesOf(() => parsePolicy('version: 1\nversion: 1\nbogus: true\n', 'p.yaml'));
    expectIssues(issues, ['2:1: version: duplicate key "version"', '3:1: bogus: unknown key "bogus"']);
  });

  test('duplicate keys are found in nested maps and list items, at each repeat', () => {
    const text = 'version: 1\naccounts:\n  - match: a\n    match: b\n    match: c\ndeny: {hosts: [], hosts: []}\n';
    expectIssues(issuesOf(() => parsePolicy(text, 'p.yaml')), [
      '4:5: accounts[0].match: duplicate key "match"',
      '5:5: accounts[0].match: duplicate key "match"',
      '6:19: deny.hosts: duplicate key "hosts"',
    ]);
  });

  test('a problem inside an aliased list is reported where the list is written', () => {
    const text = 'version: 1\ndestinations:\n  a:\n    hosts: &h [ok.example, Bad.example]\n  b:\n    hosts: *h\n';
    const issues = issuesOf(() => parsePolicy(text, 'p.yaml'));
    expectIssues(issues, [
      '4:28: destinations.a.hosts[1]: "Bad.example" is not lower case',
      '4:28: destinations.b.hosts[1]: "Bad.example" is not lower case',
    ]);
  });

  test('PolicyLoadError: every issue formatted, one per line', () => {
    const err = (() => {
      try {
        parsePolicy('version: 2\nbogus: 1\n', 'p.yaml');
      } catch (e) {
        return e as PolicyLoadError;
      }
      throw new Error('loaded');
    })();
    expect(err).toBeInstanceOf(PolicyLoadError);
    expect(err.name).toBe('PolicyLoadError');
    expect(err.code).toBe('policy_invalid');
    expect(err.message).toBe(err.issues.map(formatIssue).join('\n'));
    expect(err.message).toBe('p.yaml:1:10: version: expected 1, got 2\np.yaml:2:1: bogus: unknown key "bogus"; allowed here: $schema, version, destinations, accounts, deny, lockdown, network, limits, tests');
  });

  test('formatIssue leaves out an empty path', () => {
    expect(formatIssue({ file: 'f', line: 3, column: 4, path: '', message: 'm' })).toBe('f:3:4: m');
    expect(formatIssue({ file: 'f', line: 3, column: 4, path: 'a.b[0]', message: 'm' })).toBe('f:3:4: a.b[0]: m');
  });

  describe('a PolicyLoadError message never includes more than the source it quotes', () => {
    const SECRET = 'sk-live-0123456789abcdef';
    const cases: readonly { name: string; text: string; lines: number }[] = [
      {
        name: 'schema and semantic errors',
        text: `# token: ${SECRET}\nversion: 1\ndestinations:\n  a:\n    description: "${SECRET}"\n    hosts: [Bad.example, "${'x'.repeat(4000)}.com/"]\n    inspect: "${SECRET}"\n`,
        lines: 3,
      },
      { name: 'YAML syntax errors', text: `version: 1\ndeny:\n  hosts: [a.example, "${SECRET}\n# ${SECRET}\n`, lines: 2 },
      { name: 'a duplicate key', text: `version: 1\ndeny: {}\n# ${SECRET}\ndeny: {}\n`, lines: 1 },
    ];
    test.each(cases)('$name', ({ text, lines }) => {
      const issues = issuesOf(() => parsePolicy(text, 'p.yaml'));
      const message = issues.map(formatIssue).join('\n');
      expect(issues).toHaveLength(lines);
      expect(message.split('\n')).toHaveLength(lines);
      expect(message).not.toContain(SECRET);
      for (const line of message.split('\n')) expect(line.length).toBeLessThan(300);
    });
  });
});

describe('loadPolicyFile', () => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-policy-load-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test('async and sync loads agree', async () => {
    const file = fixture('good/spec_example.yaml');
    const [a, b] = [await loadPolicyFile(file), loadPolicyFileSync(file)];
    expect(a).toEqual(b);
    expect(a.source).toBe(readFileSync(file, 'utf8'));
  });

  test.each([
    { name: 'a missing file', file: () => join(dir, 'nope.yaml'), message: 'cannot read the policy file: no such file' },
    { name: 'a directory', file: () => dir, message: 'cannot read the policy file: it is a directory' },
  ])('$name is a PolicyLoadError at 1:1', async ({ file, message }) => {
    const expected = [{ file: file(), line: 1, column: 1, path: '', message }];
    await expect(loadPolicyFile(file())).rejects.toMatchObject({ name: 'PolicyLoadError', issues: expected });
    expect(issuesOf(() => loadPolicyFileSync(file()))).toEqual(expected);
  });

  test('a file that is not UTF-8 is refused', async () => {
    const file = join(dir, 'latin1.yaml');
    writeFileSync(file, Buffer.from('version: 1\ndeny:\n  hosts: [b\xfccher.example]\n', 'latin1'));
    await expect(loadPolicyFile(file)).rejects.toMatchObject({ issues: [{ line: 1, column: 1, message: 'the policy file is not valid UTF-8' }] });
  });

  test('a byte-order mark is dropped', () => {
    const file = join(dir, 'bom.yaml');
    writeFileSync(file, '\ufeffversion: 1\n');
    expect(loadPolicyFileSync(file).policy.version).toBe(1);
  });
});
