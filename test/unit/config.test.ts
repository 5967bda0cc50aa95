import { describe, expect, test } from 'vitest';
import { ConfigError, describeFlags, FLAG_NAMES, loadConfig, parseDuration, ServerConfigSchema } from '../../src/config/load.js';
import type { ServerConfig } from '../../src/config/load.js';
import { envVarName, FLAGS, SETTING_KEYS } from '../../src/config/schema.js';

type Files = Readonly<Record<string, string>>;

/** A readFile over in-memory files; a missing file fails like fs does. */
function files(map: Files): (path: string) => string {
  return (path) => {
    const text = map[path];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return text;
  };
}

/** loadConfig's error message, or a failure when it does not throw ConfigError. */
function errorOf(argv: readonly string[], env: NodeJS.ProcessEnv = {}, map: Files = {}): string {
  try {
    loadConfig(argv, env, files(map));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).message;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(argv)}`);
}

const DEFAULT_CONFIG: ServerConfig = {
  policy: 'policies/default.yaml',
  listen: { host: '127.0.0.1', port: 3128 },
  tls: null,
  adminListen: { host: '127.0.0.1', port: 9090 },
  adminTokenFile: './data/admin-tokens.json',
  metricsAuth: false,
  store: { url: 'file:./data/state.json', kind: 'file', path: './data/state.json', maxStalenessMs: 5000, failMode: 'closed' },
  resolver: null,
  caDir: './data/ca',
  geoip: null,
  sessionTtlMs: null,
  sessionAuditWindowMs: 7 * 86_400_000,
  oidc: null,
  headerTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  tunnelMaxDurationMs: null,
  drainTimeoutMs: 30_000,
  logLevel: 'info',
};

const OIDC_BASE = ['--oidc-issuer', 'https://idp.example', '--oidc-audience', 'portcullis', '--oidc-jwks-url', 'https://idp.example/jwks'];

describe('defaults', () => {
  test('no flags, no env, no file: every default', () => {
    expect(loadConfig([], {})).toEqual(DEFAULT_CONFIG);
  });

  test('ServerConfigSchema alone applies the same defaults', () => {
    expect(ServerConfigSchema.parse({})).toEqual(DEFAULT_CONFIG);
  });

  test('the result is frozen all the way down', () => {
    const config = loadConfig([...OIDC_BASE], {});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.listen)).toBe(true);
    expect(Object.isFrozen(config.store)).toBe(true);
    expect(Object.isFrozen(config.oidc)).toBe(true);
    expect(Object.isFrozen(config.oidc?.sessionClaims)).toBe(true);
    expect(() => {
      (config.listen as { port: number }).port = 1;
    }).toThrow(TypeError);
  });
});

// One row per flag: the flag's value as text, and what it becomes. Every flag is run through
// all three sources (flag, env, file), so each row proves PORTCULLIS_<FLAG> and the file key too.
type FlagRow = readonly [flag: string, value: string, pick: (c: ServerConfig) => unknown, expected: unknown, extra: readonly string[]];

const TLS_EXTRA = ['--tls-cert', 'c.pem', '--tls-key', 'k.pem'];
const EVERY_FLAG: readonly FlagRow[] = [
  ['policy', 'p.yaml', (c) => c.policy, 'p.yaml', []],
  ['listen', '0.0.0.0:8080', (c) => c.listen, { host: '0.0.0.0', port: 8080 }, []],
  ['tls-cert', 'cert.pem', (c) => c.tls, { cert: 'cert.pem', key: 'k.pem' }, ['--tls-key', 'k.pem']],
  ['tls-key', 'key.pem', (c) => c.tls, { cert: 'c.pem', key: 'key.pem' }, ['--tls-cert', 'c.pem']],
  ['admin-listen', 'unix:/run/portcullis/admin.sock', (c) => c.adminListen, { path: '/run/portcullis/admin.sock' }, []],
  ['admin-token-file', '/etc/portcullis/tokens.json', (c) => c.adminTokenFile, '/etc/portcullis/tokens.json', []],
  ['metrics-auth', 'true', (c) => c.metricsAuth, true, []],
  ['store', 'redis://redis:6379/0', (c) => c.store, { url: 'redis://redis:6379/0', kind: 'redis', maxStalenessMs: 5000, failMode: 'closed' }, []],
  ['store-max-staleness-ms', '250', (c) => c.store.maxStalenessMs, 250, []],
  ['fail-mode', 'lockdown', (c) => c.store.failMode, 'lockdown', []],
  ['resolver', '9.9.9.9:5353', (c) => c.resolver, { host: '9.9.9.9', port: 5353 }, []],
  ['ca-dir', '/var/lib/portcullis/ca', (c) => c.caDir, '/var/lib/portcullis/ca', []],
  ['geoip', 'GeoLite2-City.mmdb', (c) => c.geoip, 'GeoLite2-City.mmdb', []],
  ['session-ttl', '12h', (c) => c.sessionTtlMs, 12 * 3_600_000, []],
  ['session-audit-window', '30d', (c) => c.sessionAuditWindowMs, 30 * 86_400_000, []],
  ['oidc-issuer', 'https://other.example', (c) => c.oidc?.issuer, 'https://other.example', OIDC_BASE.slice(2)],
  ['oidc-audience', 'aud-2', (c) => c.oidc?.audience, 'aud-2', [...OIDC_BASE.slice(0, 2), ...OIDC_BASE.slice(4)]],
  ['oidc-jwks-url', 'https://idp.example/keys', (c) => c.oidc?.jwksUrl, 'https://idp.example/keys', OIDC_BASE.slice(0, 4)],
  ['oidc-account-claim', 'email', (c) => c.oidc?.accountClaim, 'email', OIDC_BASE],
  ['oidc-session-claim', 'jti', (c) => c.oidc?.sessionClaims, ['jti'], OIDC_BASE],
  ['oidc-account-prefix', 'sso:', (c) => c.oidc?.accountPrefix, 'sso:', OIDC_BASE],
  ['oidc-algorithms', 'ES384,EdDSA', (c) => c.oidc?.algorithms, ['ES384', 'EdDSA'], OIDC_BASE],
  ['header-timeout-ms', '5000', (c) => c.headerTimeoutMs, 5000, []],
  ['idle-timeout-ms', '60000', (c) => c.idleTimeoutMs, 60_000, []],
  ['tunnel-max-duration-ms', '3600000', (c) => c.tunnelMaxDurationMs, 3_600_000, []],
  ['drain-timeout-ms', '0', (c) => c.drainTimeoutMs, 0, []],
  ['log-level', 'debug', (c) => c.logLevel, 'debug', []],
];

/** The camelCase key of a flag. */
function keyOf(flag: string): string {
  const spec = FLAGS.find((f) => f.name === flag);
  if (spec === undefined) throw new Error(`no flag ${flag}`);
  return spec.key;
}

/** Partner flags given through the same source as the flag under test. */
function extraAsEnv(extra: readonly string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (let i = 0; i < extra.length; i += 2) env[envVarName((extra[i] as string).slice(2))] = extra[i + 1];
  return env;
}

function extraAsYaml(extra: readonly string[]): string {
  let out = '';
  for (let i = 0; i < extra.length; i += 2) out += `${keyOf((extra[i] as string).slice(2))}: ${JSON.stringify(extra[i + 1])}\n`;
  return out;
}

describe('every flag', () => {
  test('the table covers every flag but --config', () => {
    expect(EVERY_FLAG.map(([flag]) => flag).sort()).toEqual(FLAG_NAMES.filter((f) => f !== 'config').sort());
  });

  test('flags and schema keys match one to one', () => {
    expect(FLAGS.map((f) => f.key).sort()).toEqual([...SETTING_KEYS].sort());
    for (const f of FLAGS) expect(f.key).toBe(f.name.replace(/-([a-z])/g, (_m, c: string) => c.toUpperCase()));
  });

  test.each(EVERY_FLAG)('--%s %s (flag)', (flag, value, pick, expected, extra) => {
    const argv = FLAGS.find((f) => f.name === flag)?.arg === null ? [`--${flag}=${value}`] : [`--${flag}`, value];
    expect(pick(loadConfig([...argv, ...extra], {}))).toEqual(expected);
  });

  test.each(EVERY_FLAG)('--%s %s (env)', (flag, value, pick, expected, extra) => {
    const env = { ...extraAsEnv(extra), [envVarName(flag)]: value };
    expect(pick(loadConfig([], env))).toEqual(expected);
  });

  test.each(EVERY_FLAG)('--%s %s (file)', (flag, value, pick, expected, extra) => {
    const yaml = `${extraAsYaml(extra)}${keyOf(flag)}: ${JSON.stringify(value)}\n`;
    expect(pick(loadConfig(['--config', 'c.yaml'], {}, files({ 'c.yaml': yaml })))).toEqual(expected);
  });

  test('env names are upper snake case', () => {
    expect(envVarName('admin-listen')).toBe('PORTCULLIS_ADMIN_LISTEN');
    expect(envVarName('store-max-staleness-ms')).toBe('PORTCULLIS_STORE_MAX_STALENESS_MS');
  });
});

describe('precedence: flags > env > file > defaults', () => {
  type Row = readonly [name: string, flag: string | null, env: string | null, file: string | null, expected: number];
  const ROWS: readonly Row[] = [
    ['default_when_nothing_given', null, null, null, 5000],
    ['file_over_default', null, null, '300', 300],
    ['env_over_file', null, '200', '300', 200],
    ['env_over_default', null, '200', null, 200],
    ['flag_over_env_and_file', '100', '200', '300', 100],
    ['flag_over_file', '100', null, '300', 100],
    ['flag_over_env', '100', '200', null, 100],
    ['empty_env_is_unset', null, '', '300', 300],
  ];
  test.each(ROWS)('%s', (_name, flag, env, file, expected) => {
    const argv = ['--config', 'c.yaml', ...(flag === null ? [] : ['--store-max-staleness-ms', flag])];
    const vars: NodeJS.ProcessEnv = env === null ? {} : { PORTCULLIS_STORE_MAX_STALENESS_MS: env };
    const yaml = file === null ? 'policy: p.yaml\n' : `storeMaxStalenessMs: ${file}\n`;
    expect(loadConfig(argv, vars, files({ 'c.yaml': yaml })).store.maxStalenessMs).toBe(expected);
  });

  test('each setting is taken from its own winning source', () => {
    const yaml = 'listen: 10.0.0.1:1000\nfailMode: lockdown\nlogLevel: warn\n';
    const config = loadConfig(['--config', 'c.yaml', '--listen', ':2000'], { PORTCULLIS_LOG_LEVEL: 'error' }, files({ 'c.yaml': yaml }));
    expect(config.listen).toEqual({ host: '::', port: 2000 });
    expect(config.logLevel).toBe('error');
    expect(config.store.failMode).toBe('lockdown');
  });

  test('a boolean flag can be turned off against env and file', () => {
    const yaml = 'metricsAuth: true\n';
    expect(loadConfig(['--config', 'c.yaml'], {}, files({ 'c.yaml': yaml })).metricsAuth).toBe(true);
    expect(loadConfig(['--config', 'c.yaml'], { PORTCULLIS_METRICS_AUTH: 'false' }, files({ 'c.yaml': yaml })).metricsAuth).toBe(false);
    expect(loadConfig(['--no-metrics-auth'], { PORTCULLIS_METRICS_AUTH: 'true' }).metricsAuth).toBe(false);
    expect(loadConfig(['--metrics-auth'], {}).metricsAuth).toBe(true);
  });

  test('the config file can be named by PORTCULLIS_CONFIG; --config wins', () => {
    const map = { 'a.yaml': 'policy: a.yaml\n', 'b.yaml': 'policy: b.yaml\n' };
    expect(loadConfig([], { PORTCULLIS_CONFIG: 'a.yaml' }, files(map)).policy).toBe('a.yaml');
    expect(loadConfig(['--config', 'b.yaml'], { PORTCULLIS_CONFIG: 'a.yaml' }, files(map)).policy).toBe('b.yaml');
  });
});

describe('parsed values', () => {
  type Row = readonly [name: string, argv: readonly string[], pick: (c: ServerConfig) => unknown, expected: unknown];
  const ROWS: readonly Row[] = [
    ['listen_host_port', ['--listen', 'proxy.internal:3128'], (c) => c.listen, { host: 'proxy.internal', port: 3128 }],
    ['listen_bracketed_ipv6', ['--listen', '[::1]:3128'], (c) => c.listen, { host: '::1', port: 3128 }],
    ['listen_ipv6_canonicalized', ['--listen', '[2001:DB8:0::1]:80'], (c) => c.listen, { host: '2001:db8::1', port: 80 }],
    ['listen_port_only_is_all_interfaces', ['--listen', ':3128'], (c) => c.listen, { host: '::', port: 3128 }],
    ['listen_port_zero_for_tests', ['--listen', '127.0.0.1:0'], (c) => c.listen, { host: '127.0.0.1', port: 0 }],
    ['listen_host_lower_cased', ['--listen', 'LocalHost:1'], (c) => c.listen, { host: 'localhost', port: 1 }],
    ['admin_tcp', ['--admin-listen', '[::1]:9090'], (c) => c.adminListen, { host: '::1', port: 9090 }],
    ['admin_unix_relative', ['--admin-listen', 'unix:./admin.sock'], (c) => c.adminListen, { path: './admin.sock' }],
    ['resolver_default_port', ['--resolver', '1.1.1.1'], (c) => c.resolver, { host: '1.1.1.1', port: 53 }],
    ['resolver_ipv6_default_port', ['--resolver', '2606:4700::1111'], (c) => c.resolver, { host: '2606:4700::1111', port: 53 }],
    ['resolver_ipv6_port', ['--resolver', '[2606:4700::1111]:5353'], (c) => c.resolver, { host: '2606:4700::1111', port: 5353 }],
    ['store_file_relative', ['--store', 'file:state.json'], (c) => c.store, { url: 'file:state.json', kind: 'file', path: 'state.json', maxStalenessMs: 5000, failMode: 'closed' }],
    ['store_file_url', ['--store', 'file:///var/lib/p/state.json'], (c) => c.store, { url: 'file:///var/lib/p/state.json', kind: 'file', path: '/var/lib/p/state.json', maxStalenessMs: 5000, failMode: 'closed' }],
    ['store_rediss', ['--store', 'rediss://user:pw@redis.example:6380'], (c) => c.store.kind, 'redis'],
    ['token_file_next_to_file_store', ['--store', 'file:/var/lib/p/state.json'], (c) => c.adminTokenFile, '/var/lib/p/admin-tokens.json'],
    ['token_file_bare_store_name', ['--store', 'file:state.json'], (c) => c.adminTokenFile, './admin-tokens.json'],
    ['token_file_default_dir_for_redis', ['--store', 'redis://r:6379'], (c) => c.adminTokenFile, './data/admin-tokens.json'],
    ['token_file_explicit_wins', ['--store', 'file:/x/s.json', '--admin-token-file', 't.json'], (c) => c.adminTokenFile, 't.json'],
    ['oidc_defaults', OIDC_BASE, (c) => c.oidc, { issuer: 'https://idp.example', audience: 'portcullis', jwksUrl: 'https://idp.example/jwks', accountClaim: 'sub', sessionClaims: ['sid', 'jti'], accountPrefix: 'oidc:', algorithms: ['RS256', 'ES256'] }],
    ['oidc_session_claims_ordered', [...OIDC_BASE, '--oidc-session-claim', 'jti, sid'], (c) => c.oidc?.sessionClaims, ['jti', 'sid']],
    ['oidc_jwks_http_loopback_allowed', [...OIDC_BASE.slice(0, 4), '--oidc-jwks-url', 'http://127.0.0.1:8080/jwks'], (c) => c.oidc?.jwksUrl, 'http://127.0.0.1:8080/jwks'],
    ['tls_both', TLS_EXTRA, (c) => c.tls, { cert: 'c.pem', key: 'k.pem' }],
    ['inline_flag_value', ['--listen=127.0.0.1:1'], (c) => c.listen, { host: '127.0.0.1', port: 1 }],
    ['max_timer', ['--idle-timeout-ms', '2147483647'], (c) => c.idleTimeoutMs, 2_147_483_647],
    ['staleness_zero_means_no_grace', ['--store-max-staleness-ms', '0'], (c) => c.store.maxStalenessMs, 0],
    ['audit_window_zero', ['--session-audit-window', '0s'], (c) => c.sessionAuditWindowMs, 0],
    ['log_level_silent', ['--log-level', 'silent'], (c) => c.logLevel, 'silent'],
  ];
  test.each(ROWS)('%s', (_name, argv, pick, expected) => {
    expect(pick(loadConfig(argv, {}))).toEqual(expected);
  });

  test('YAML lists and numbers are accepted where text would be', () => {
    const yaml = [
      'oidcIssuer: https://idp.example',
      'oidcAudience: portcullis',
      'oidcJwksUrl: https://idp.example/jwks',
      'oidcAlgorithms: [PS256, ES512]',
      'oidcSessionClaim:',
      '  - sid',
      'headerTimeoutMs: 2500',
      'metricsAuth: true',
      'geoip:            # null: unset',
    ].join('\n');
    const config = loadConfig(['--config', 'c.yaml'], {}, files({ 'c.yaml': yaml }));
    expect(config.oidc?.algorithms).toEqual(['PS256', 'ES512']);
    expect(config.oidc?.sessionClaims).toEqual(['sid']);
    expect(config.headerTimeoutMs).toBe(2500);
    expect(config.metricsAuth).toBe(true);
    expect(config.geoip).toBeNull();
  });

  test('an empty config file is all defaults', () => {
    expect(loadConfig(['--config', 'c.yaml'], {}, files({ 'c.yaml': '# nothing yet\n' }))).toEqual(DEFAULT_CONFIG);
  });
});

describe('durations', () => {
  const ROWS: ReadonlyArray<readonly [text: string, ms: number | null]> = [
    ['90s', 90_000],
    ['30m', 1_800_000],
    ['12h', 43_200_000],
    ['7d', 604_800_000],
    ['500ms', 500],
    ['1h30m', 5_400_000],
    ['0s', 0],
    ['30', null],
    ['', null],
    ['1.5h', null],
    ['-5m', null],
    ['5 m', null],
    ['5M', null],
    ['1w', null],
    ['h', null],
    ['99999999999999999d', null],
  ];
  test.each(ROWS)('%j → %j', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
});

describe('errors: one line, naming the source', () => {
  type Row = readonly [name: string, argv: readonly string[], env: NodeJS.ProcessEnv, file: string | null, message: string];
  const ROWS: readonly Row[] = [
    ['listen_not_host_port', ['--listen', 'abc'], {}, null, '--listen: expected HOST:PORT, got "abc"'],
    ['listen_port_too_big', ['--listen', '127.0.0.1:65536'], {}, null, '--listen: expected HOST:PORT, got "127.0.0.1:65536"'],
    ['listen_unbracketed_ipv6', ['--listen', '::1:80'], {}, null, '--listen: expected HOST:PORT, got "::1:80"'],
    ['listen_bad_host', ['--listen', 'a b:80'], {}, null, '--listen: expected HOST:PORT, got "a b:80"'],
    ['listen_port_leading_zero', ['--listen', ':080'], {}, null, '--listen: expected HOST:PORT, got ":080"'],
    ['env_fail_mode', [], { PORTCULLIS_FAIL_MODE: 'open' }, null, 'PORTCULLIS_FAIL_MODE: expected closed|lockdown, got "open"'],
    ['file_fail_mode', ['--config', 'config.yaml'], {}, 'listen: 127.0.0.1:1\n\nfailMode:   open\n', 'config.yaml:3:13: failMode: expected closed|lockdown, got "open"'],
    ['file_number_for_address', ['--config', 'config.yaml'], {}, 'listen: 3128\n', 'config.yaml:1:9: listen: expected HOST:PORT, got 3128'],
    ['file_list_for_number', ['--config', 'config.yaml'], {}, 'idleTimeoutMs: [1]\n', 'config.yaml:1:16: idleTimeoutMs: expected an integer from 1 to 2147483647 (milliseconds), got a list'],
    ['admin_listen', ['--admin-listen', 'unix:'], {}, null, '--admin-listen: expected HOST:PORT or unix:PATH, got "unix:"'],
    ['negative_number', ['--store-max-staleness-ms', '-1'], {}, null, '--store-max-staleness-ms: expected an integer from 0 to 2147483647 (milliseconds), got "-1"'],
    ['fraction', ['--drain-timeout-ms', '1.5'], {}, null, '--drain-timeout-ms: expected an integer from 0 to 2147483647 (milliseconds), got "1.5"'],
    ['exponent', ['--drain-timeout-ms', '1e3'], {}, null, '--drain-timeout-ms: expected an integer from 0 to 2147483647 (milliseconds), got "1e3"'],
    ['header_timeout_zero', ['--header-timeout-ms', '0'], {}, null, '--header-timeout-ms: expected an integer from 1 to 2147483647 (milliseconds), got "0"'],
    ['tunnel_max_zero', ['--tunnel-max-duration-ms', '0'], {}, null, '--tunnel-max-duration-ms: expected an integer from 1 to 2147483647 (milliseconds), got "0"'],
    ['timer_overflow', [], { PORTCULLIS_IDLE_TIMEOUT_MS: '2147483648' }, null, 'PORTCULLIS_IDLE_TIMEOUT_MS: expected an integer from 1 to 2147483647 (milliseconds), got "2147483648"'],
    ['duration_without_unit', ['--session-ttl', '30'], {}, null, '--session-ttl: expected a duration such as 90s, 30m, 12h or 7d (more than 0), got "30"'],
    ['session_ttl_zero', ['--session-ttl', '0s'], {}, null, '--session-ttl: expected a duration such as 90s, 30m, 12h or 7d (more than 0), got "0s"'],
    ['audit_window', ['--session-audit-window', 'forever'], {}, null, '--session-audit-window: expected a duration such as 90s, 30m, 12h or 7d, got "forever"'],
    ['log_level', ['--log-level', 'verbose'], {}, null, '--log-level: expected fatal|error|warn|info|debug|trace|silent, got "verbose"'],
    ['metrics_auth_word', [], { PORTCULLIS_METRICS_AUTH: 'yes' }, null, 'PORTCULLIS_METRICS_AUTH: expected true|false, got "yes"'],
    ['store_scheme', ['--store', 'postgres://db'], {}, null, '--store: expected file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT], got "postgres://db"'],
    ['store_password_masked', ['--store', 'redis://:hunter2@'], {}, null, '--store: expected file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT], got "redis://:***@"'],
    ['store_remote_file', ['--store', 'file://host/state.json'], {}, null, '--store: expected file:PATH, redis://HOST[:PORT] or rediss://HOST[:PORT], got "file://host/state.json"'],
    ['resolver_name', ['--resolver', 'dns.google:53'], {}, null, '--resolver: expected IP:PORT of a DNS server, got "dns.google:53"'],
    ['resolver_port_zero', ['--resolver', '8.8.8.8:0'], {}, null, '--resolver: expected IP:PORT of a DNS server, got "8.8.8.8:0"'],
    ['empty_path', ['--policy', ''], {}, null, '--policy: expected a file path, got ""'],
    ['tls_cert_alone', ['--tls-cert', 'c.pem'], {}, null, '--tls-cert: needs --tls-key as well'],
    ['tls_key_alone_env', [], { PORTCULLIS_TLS_KEY: 'k.pem' }, null, 'PORTCULLIS_TLS_KEY: needs PORTCULLIS_TLS_CERT as well'],
    ['oidc_partial', ['--oidc-issuer', 'https://idp'], {}, null, '--oidc-issuer: needs --oidc-audience and --oidc-jwks-url as well'],
    ['oidc_claim_alone', ['--oidc-account-claim', 'email'], {}, null, '--oidc-account-claim: needs --oidc-issuer, --oidc-audience and --oidc-jwks-url as well'],
    ['oidc_partial_file', ['--config', 'c.yaml'], {}, 'oidcAudience: a\n', 'c.yaml:1:15: oidcAudience: needs oidcIssuer and oidcJwksUrl as well'],
    ['oidc_hs256_refused', [...OIDC_BASE, '--oidc-algorithms', 'HS256'], {}, null, '--oidc-algorithms: expected a comma-separated list of RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512|EdDSA, got "HS256"'],
    ['oidc_none_refused', [...OIDC_BASE, '--oidc-algorithms', 'RS256,none'], {}, null, '--oidc-algorithms: expected a comma-separated list of RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|ES512|EdDSA, got "RS256,none"'],
    ['oidc_jwks_plain_http', [...OIDC_BASE.slice(0, 4), '--oidc-jwks-url', 'http://idp.example/jwks'], {}, null, '--oidc-jwks-url: expected an https:// URL (http:// only for localhost), got "http://idp.example/jwks"'],
    ['oidc_prefix_with_space', [...OIDC_BASE, '--oidc-account-prefix', 'a b'], {}, null, '--oidc-account-prefix: expected a non-empty prefix without spaces, got "a b"'],
    ['unknown_flag_near_miss', ['--lisen', ':1'], {}, null, '--lisen: unknown flag (did you mean --listen?)'],
    ['unknown_flag_snake_case', ['--fail_mode', 'closed'], {}, null, '--fail_mode: unknown flag (did you mean --fail-mode?)'],
    ['unknown_flag_far', ['--verbose'], {}, null, '--verbose: unknown flag (portcullis serve --help lists them)'],
    ['short_flag', ['-l', ':1'], {}, null, '-l: unknown flag (portcullis serve --help lists them)'],
    ['missing_value_at_end', ['--listen'], {}, null, '--listen: expected a value (--listen ADDR)'],
    ['missing_value_before_flag', ['--listen', '--policy', 'p.yaml'], {}, null, '--listen: expected a value (--listen ADDR)'],
    ['repeated_flag', ['--listen', ':1', '--listen', ':2'], {}, null, '--listen: given more than once'],
    ['on_and_off', ['--metrics-auth', '--no-metrics-auth'], {}, null, '--metrics-auth: given more than once'],
    ['positional', ['serve'], {}, null, 'unexpected argument "serve": settings are given as --name VALUE'],
    ['negated_string_flag', ['--no-listen'], {}, null, '--no-listen: unknown flag (portcullis serve --help lists them)'],
    ['boolean_bad_inline', ['--metrics-auth=1'], {}, null, '--metrics-auth: expected true|false, got "1"'],
    ['config_unreadable', ['--config', 'missing.yaml'], {}, null, '--config: cannot read "missing.yaml": no such file'],
    ['config_unreadable_env', [], { PORTCULLIS_CONFIG: 'missing.yaml' }, null, 'PORTCULLIS_CONFIG: cannot read "missing.yaml": no such file'],
    ['file_kebab_key', ['--config', 'c.yaml'], {}, 'policy: p.yaml\nadmin-listen: x\n', 'c.yaml:2:1: unknown setting "admin-listen" (keys are camelCase, e.g. adminListen; did you mean adminListen?)'],
    ['file_snake_key', ['--config', 'c.yaml'], {}, 'fail_mode: closed\n', 'c.yaml:1:1: unknown setting "fail_mode" (keys are camelCase, e.g. adminListen; did you mean failMode?)'],
    ['file_unknown_key', ['--config', 'c.yaml'], {}, 'colour: blue\n', 'c.yaml:1:1: unknown setting "colour" (keys are camelCase, e.g. adminListen; see portcullis serve --help)'],
    ['file_not_mapping', ['--config', 'c.yaml'], {}, '- listen\n', 'c.yaml:1:1: expected a mapping of settings (camelCase keys, e.g. adminListen: 127.0.0.1:9090)'],
    ['file_duplicate_key', ['--config', 'c.yaml'], {}, 'policy: a\npolicy: b\n', 'c.yaml:2:1: Map keys must be unique'],
  ];

  test.each(ROWS)('%s', (_name, argv, env, file, message) => {
    const map = file === null ? {} : { [argv[1] ?? 'c.yaml']: file };
    expect(errorOf(argv, env, map)).toBe(message);
  });

  test('YAML syntax errors are positioned and one line', () => {
    const message = errorOf(['--config', 'c.yaml'], {}, { 'c.yaml': 'policy: [a,\nlisten: x\n' });
    expect(message).toMatch(/^c\.yaml:\d+:\d+: \S/);
    expect(message).not.toContain('\n');
  });

  test('ServerConfigSchema is strict about unknown keys', () => {
    expect(ServerConfigSchema.safeParse({ adminListen: ':1', admin_listen: ':2' }).success).toBe(false);
  });
});

describe('help', () => {
  test('describeFlags has one line per flag, each with its default', () => {
    const lines = describeFlags().split('\n');
    expect(lines).toHaveLength(FLAG_NAMES.length);
    FLAG_NAMES.forEach((name, i) => {
      expect(lines[i]).toMatch(new RegExp(`^\\s+--${name}\\b`));
      if (name !== 'config') expect(lines[i]).toMatch(/\[default: .+\]$/);
    });
  });

  test('defaults in the help text are the ones applied', () => {
    const help = describeFlags();
    expect(help).toMatch(/--listen ADDR .*\[default: 127\.0\.0\.1:3128\]/);
    expect(help).toMatch(/--store-max-staleness-ms MS .*\[default: 5000\]/);
    expect(help).toMatch(/--tunnel-max-duration-ms MS .*\[default: none: unlimited\]/);
  });
});
