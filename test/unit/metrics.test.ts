import { spawnSync } from 'node:child_process';
import { register as globalRegistry, Registry } from 'prom-client';
import { describe, expect, test } from 'vitest';
import { LABEL_VALUES, METRIC_NAMES, MetricLabelError, Metrics, OTHER_LABEL_VALUE } from '../../src/observability/metrics.js';
import { REASON_CODES } from '../../src/reasons.js';
import type { Reason } from '../../src/reasons.js';

// SPEC §6, copied here on purpose: renaming a metric must break this test.
const SPEC_METRICS: ReadonlyArray<readonly [name: string, type: string, labels: readonly string[]]> = [
  ['portcullis_requests_total', 'counter', ['kind', 'decision', 'reason']],
  ['portcullis_request_duration_seconds', 'histogram', ['kind']],
  ['portcullis_upstream_errors_total', 'counter', ['kind', 'error']],
  ['portcullis_bytes_total', 'counter', ['direction', 'kind']],
  ['portcullis_active_tunnels', 'gauge', []],
  ['portcullis_active_connections', 'gauge', []],
  ['portcullis_sessions_active', 'gauge', []],
  ['portcullis_session_revocations_total', 'counter', ['scope']],
  ['portcullis_accounts_in_lockdown', 'gauge', []],
  ['portcullis_policy_reloads_total', 'counter', ['result']],
  ['portcullis_policy_info', 'gauge', ['hash']],
  ['portcullis_store_up', 'gauge', []],
  ['portcullis_state_propagation_seconds', 'histogram', []],
];

const HASH_A = 'a'.repeat(64);
const HASH_B = '0123456789abcdef'.repeat(4);

/** A Metrics with one of everything recorded, so every labelled series exists. */
function exercised(): Metrics {
  const m = new Metrics();
  m.requests.inc({ kind: 'http', decision: 'allow', reason: 'allowlisted' });
  m.requestDuration.observe({ kind: 'connect' }, 0.004);
  m.upstreamErrors.inc({ kind: 'http', error: 'dns_error' });
  m.bytes.inc({ direction: 'in', kind: 'intercepted' }, 1500);
  m.activeTunnels.inc();
  m.activeConnections.set(3);
  m.sessionsActive.set(2);
  m.sessionRevocations.inc({ scope: 'all' }, 5);
  m.accountsInLockdown.inc();
  m.policyReloads.inc({ result: 'success' });
  m.setPolicyHash(HASH_A);
  m.setStoreUp(true);
  m.statePropagation.observe(0.02);
  return m;
}

/** Sample lines (no comments) of one metric family. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe('exposition', () => {
  test('the module registers exactly the SPEC metrics', () => {
    expect([...METRIC_NAMES].sort()).toEqual(SPEC_METRICS.map(([n]) => n).sort());
  });

  test.each(SPEC_METRICS)('%s has HELP with a unit and TYPE %s', async (name, type) => {
    const text = await exercised().render();
    expect(text).toContain(`# TYPE ${name} ${type}\n`);
    const help = text.split('\n').find((l) => l.startsWith(`# HELP ${name} `));
    expect(help).toBeDefined();
    expect(help).toMatch(/(in seconds|in bytes|\(count[^)]*\)|\(boolean\)|\(info\))\.$/);
  });

  test.each(SPEC_METRICS)('%s uses only its bounded labels', async (name, _type, labels) => {
    const m = exercised();
    const metric = await m.registry.getSingleMetric(name)?.get();
    expect(metric).toBeDefined();
    const used = new Set(metric?.values.flatMap((v) => Object.keys(v.labels)).filter((l) => l !== 'le'));
    expect([...used].sort()).toEqual([...labels].sort());
    for (const label of used) expect(['host', 'account', 'session', 'sessionId']).not.toContain(label);
  });

  test('render() output and contentType are Prometheus text format', async () => {
    const m = exercised();
    expect(m.contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await m.render();
    expect(samples(text, 'portcullis_requests_total')).toEqual(['portcullis_requests_total{kind="http",decision="allow",reason="allowlisted"} 1']);
    expect(samples(text, 'portcullis_session_revocations_total')).toContain('portcullis_session_revocations_total{scope="all"} 5');
    expect(samples(text, 'portcullis_store_up')).toEqual(['portcullis_store_up 1']);
  });

  test('small label sets start at zero so rate() works before the first event', async () => {
    const text = await new Metrics().render();
    expect(samples(text, 'portcullis_policy_reloads_total')).toHaveLength(3);
    expect(samples(text, 'portcullis_session_revocations_total')).toHaveLength(3);
    expect(samples(text, 'portcullis_bytes_total')).toHaveLength(6);
    expect(samples(text, 'portcullis_upstream_errors_total')).toHaveLength(LABEL_VALUES.kind.length * LABEL_VALUES.error.length);
    expect(samples(text, 'portcullis_requests_total')).toHaveLength(0);
  });

  test('histogram buckets: 1 ms to 60 s for requests, 1 ms to 10 s for propagation', async () => {
    const text = await exercised().render();
    const les = (name: string): string[] =>
      text
        .split('\n')
        .filter((l) => l.startsWith(`${name}_bucket{`) && !l.includes('kind="http"') && !l.includes('kind="intercepted"'))
        .map((l) => /le="([^"]+)"/.exec(l)?.[1] ?? '');
    expect(les('portcullis_request_duration_seconds').slice(0, 1)).toEqual(['0.001']);
    expect(les('portcullis_request_duration_seconds').slice(-2)).toEqual(['60', '+Inf']);
    expect(les('portcullis_state_propagation_seconds').slice(0, 1)).toEqual(['0.001']);
    expect(les('portcullis_state_propagation_seconds').slice(-2)).toEqual(['10', '+Inf']);
  });
});

describe('registry', () => {
  test('never the global registry; several instances coexist', async () => {
    const a = new Metrics();
    const b = new Metrics();
    a.activeTunnels.inc();
    expect(await globalRegistry.metrics()).not.toContain('portcullis_');
    expect(samples(await b.render(), 'portcullis_active_tunnels')).toEqual(['portcullis_active_tunnels 0']);
  });

  test('uses a registry it is given', async () => {
    const registry = new Registry();
    const m = new Metrics({ registry });
    expect(m.registry).toBe(registry);
    expect(await registry.metrics()).toContain('# TYPE portcullis_store_up gauge');
  });

  test('default process metrics only on request, prefixed portcullis_', async () => {
    expect(await new Metrics().render()).not.toContain('process_cpu');
    expect(await new Metrics({ collectDefault: true }).render()).toContain('# TYPE portcullis_process_cpu_user_seconds_total counter');
  });
});

describe('label validation', () => {
  type Row = readonly [name: string, act: (m: Metrics) => void];
  const BAD: readonly Row[] = [
    ['unknown_reason', (m) => m.requests.inc({ kind: 'http', decision: 'deny', reason: 'made_up' as Reason })],
    ['unknown_kind', (m) => m.requests.inc({ kind: 'socks' as 'http', decision: 'deny', reason: 'not_allowlisted' })],
    ['unknown_decision', (m) => m.requests.inc({ kind: 'http', decision: 'maybe' as 'allow', reason: 'allowlisted' })],
    ['host_as_reason', (m) => m.requests.inc({ kind: 'http', decision: 'deny', reason: 'evil.example' as Reason })],
    ['non_error_reason_as_error', (m) => m.upstreamErrors.inc({ kind: 'http', error: 'not_allowlisted' as 'dns_error' })],
    ['unknown_direction', (m) => m.bytes.inc({ direction: 'sideways' as 'in', kind: 'http' }, 1)],
    ['unknown_scope', (m) => m.sessionRevocations.inc({ scope: 'some' as 'one' })],
    ['unknown_result', (m) => m.policyReloads.inc({ result: 'partial' as 'success' })],
    ['duration_kind', (m) => m.requestDuration.observe({ kind: 'ftp' as 'http' }, 1)],
    ['policy_hash_not_hex', (m) => m.setPolicyHash('not a hash')],
    ['policy_hash_upper_case', (m) => m.setPolicyHash('ABCDEF0123456789')],
  ];

  test.each(BAD)('%s throws in strict mode', (_name, act) => {
    expect(() => act(new Metrics({ strictLabels: true }))).toThrow(MetricLabelError);
  });

  test.each(BAD)('%s records "other" when not strict, leaving one bounded series', async (_name, act) => {
    const m = new Metrics({ strictLabels: false });
    act(m);
    act(m);
    expect(await m.render()).toContain(`"${OTHER_LABEL_VALUE}"`);
  });

  test('every reason code is accepted as a reason label', () => {
    const m = new Metrics({ strictLabels: true });
    for (const reason of REASON_CODES) m.requests.inc({ kind: 'connect', decision: 'deny', reason });
  });

  test('upstream error labels are the error-kind reasons', () => {
    expect([...LABEL_VALUES.error].sort()).toEqual(['dns_error', 'upstream_connect_error', 'upstream_timeout', 'upstream_tls_error']);
  });

  test('tests run strict by default', () => {
    expect(() => new Metrics().policyReloads.inc({ result: 'nope' as 'success' })).toThrow(MetricLabelError);
  });
});

describe('policy_info', () => {
  test('exactly one series: the current hash, set to 1', async () => {
    const m = new Metrics();
    expect(samples(await m.render(), 'portcullis_policy_info')).toEqual([]);
    m.setPolicyHash(HASH_A);
    expect(samples(await m.render(), 'portcullis_policy_info')).toEqual([`portcullis_policy_info{hash="${HASH_A}"} 1`]);
    m.setPolicyHash(HASH_B);
    expect(samples(await m.render(), 'portcullis_policy_info')).toEqual([`portcullis_policy_info{hash="${HASH_B}"} 1`]);
    m.setPolicyHash(HASH_B);
    expect(samples(await m.render(), 'portcullis_policy_info')).toEqual([`portcullis_policy_info{hash="${HASH_B}"} 1`]);
  });

  test('store_up follows setStoreUp', async () => {
    const m = new Metrics();
    m.setStoreUp(true);
    m.setStoreUp(false);
    expect(samples(await m.render(), 'portcullis_store_up')).toEqual(['portcullis_store_up 0']);
  });
});

describe('promtool check metrics', () => {
  const found = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
  const available = found.error === undefined && found.status === 0;
  const requireTool = process.env['CI'] === 'true';

  /** promtool's complaints about a rendered text, one per line; empty when clean. */
  function promtool(text: string): { status: number | null; problems: string[] } {
    const run = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    const problems = `${run.stdout}\n${run.stderr}`.split('\n').filter((l) => l.trim() !== '');
    return { status: run.status, problems };
  }

  test('promtool is available (required when CI=true)', (ctx) => {
    if (!available && !requireTool) ctx.skip('promtool is not on PATH (Debian package "prometheus"); CI is not "true"');
    expect(available, 'promtool must be on PATH in CI').toBe(true);
  });

  test('our metrics pass the lint with no problems', async (ctx) => {
    if (!available && !requireTool) ctx.skip('promtool is not on PATH; CI is not "true"');
    const result = promtool(await exercised().render());
    expect(result.problems).toEqual([]);
    expect(result.status).toBe(0);
  });

  test('with default process metrics, the only problems are prom-client\'s own gauge names', async (ctx) => {
    if (!available && !requireTool) ctx.skip('promtool is not on PATH; CI is not "true"');
    const full = new Metrics({ collectDefault: true });
    full.setPolicyHash(HASH_A);
    const { problems } = promtool(await full.render());
    // prom-client names three gauges nodejs_active_*_total; not ours to rename.
    for (const p of problems) expect(p).toMatch(/^portcullis_nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/);
  });
});
