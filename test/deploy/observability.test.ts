/**
 * The Prometheus and Grafana files against a real Portcullis: the alert rules pass promtool
 * (syntax, and unit tests that each alert fires on its failure), the dashboard's queries are
 * valid PromQL, and every metric either of them uses exists in a live /metrics scrape taken
 * after real traffic through an in-process proxy (loopback origins, test DNS server).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parse, stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { METRIC_NAMES } from '../../src/observability/metrics.js';
import { curl, waitFor } from '../helpers/clients.js';
import { selfSignedCert, startHarness, startOrigin, type Harness, type Origin } from '../helpers/harness.js';
import { concreteExpr, dashboardExprs, exposedSamples, promqlMetricNames, readRepo, ROOT, tool } from './deploy-files.js';

const promtool = tool('promtool', 'prometheus');

interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const rulesDoc = parse(readRepo('docker/prometheus/alerts.yml')) as { groups: Array<{ name: string; rules: AlertRule[] }> };
const alerts = rulesDoc.groups.flatMap((g) => g.rules);
const dashboard = JSON.parse(readRepo('docker/grafana/dashboard.json')) as Record<string, unknown>;
const exprs = dashboardExprs(dashboard);
const readme = readRepo('README.md');

/** Runs promtool; returns exit status and combined output. */
function runPromtool(args: string[], input?: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  return { status: r.status, output: `${r.stdout}\n${r.stderr}`.trim() };
}

/** Runs `fn` in a temp directory that is removed afterwards. */
function inTempDir<T>(fn: (dir: string) => T): T {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-deploy-'));
  try {
    return fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Skips (or, with CI=true, fails) a test that needs promtool. */
function needPromtool(ctx: { skip: (note?: string) => void }): void {
  if (!promtool.available && !promtool.required) ctx.skip(promtool.reason);
  expect(promtool.available, 'promtool must be on PATH when CI=true').toBe(true);
}

describe('alert rules (docker/prometheus/alerts.yml)', () => {
  test('promtool check rules accepts them', (ctx) => {
    needPromtool(ctx);
    const r = runPromtool(['check', 'rules', path.join(ROOT, 'docker/prometheus/alerts.yml')]);
    expect(r.output).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(r.status).toBe(0);
  });

  test('promtool test rules: each alert fires on the failure it is named after', (ctx) => {
    needPromtool(ctx);
    inTempDir((dir) => {
      // promtool compares annotations too; they are prose, checked below, so test the rules without them.
      const rulesOnly = structuredClone(rulesDoc);
      for (const g of rulesOnly.groups) for (const r of g.rules) delete r.annotations;
      writeFileSync(path.join(dir, 'alerts.rules-only.yml'), stringify(rulesOnly));
      writeFileSync(path.join(dir, 'alerts.test.yml'), readRepo('docker/prometheus/alerts.test.yml'));
      const r = runPromtool(['test', 'rules', path.join(dir, 'alerts.test.yml')]);
      expect(r.output).toContain('SUCCESS');
      expect(r.status, r.output).toBe(0);
    });
  });

  test('every alert is covered by a unit test', () => {
    const tests = parse(readRepo('docker/prometheus/alerts.test.yml')) as { tests: Array<{ alert_rule_test?: Array<{ alertname: string; exp_alerts: unknown[] }> }> };
    const firing = new Set(tests.tests.flatMap((t) => (t.alert_rule_test ?? []).filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)));
    expect([...firing].sort()).toEqual(alerts.map((a) => a.alert).sort());
  });

  test('promtool check config accepts the compose Prometheus config and its rule file', (ctx) => {
    needPromtool(ctx);
    const r = runPromtool(['check', 'config', path.join(ROOT, 'docker/prometheus/prometheus.yml')]);
    expect(r.output).toContain('SUCCESS: 1 rule files found');
    expect(r.status, r.output).toBe(0);
  });

  test('the failure modes of the issue each have an alert', () => {
    const names = alerts.map((a) => a.alert);
    for (const name of ['PortcullisDown', 'PortcullisDenyRateSpike', 'PortcullisStateUnavailable', 'PortcullisPolicyReloadFailed', 'PortcullisStoreDown', 'PortcullisTunnelSaturation']) {
      expect(names).toContain(name);
    }
  });

  test.each(alerts.map((a) => [a.alert, a] as const))('%s has a severity, a summary, a description, a runbook and a README section', (name, rule) => {
    expect(['critical', 'warning']).toContain(rule.labels?.severity);
    for (const key of ['summary', 'description', 'runbook']) expect(rule.annotations?.[key]?.length ?? 0, key).toBeGreaterThan(20);
    expect(new RegExp(`^#### ${name}$`, 'm').test(readme), `README has no "#### ${name}" runbook section`).toBe(true);
  });
});

describe('Grafana dashboard (docker/grafana/dashboard.json)', () => {
  test('has panels with unique ids, each query on the datasource variable', () => {
    expect(dashboard['uid']).toBe('portcullis');
    expect(exprs.length).toBeGreaterThan(15);
    const ids: number[] = [];
    const visit = (panels: unknown): void => {
      for (const p of (panels ?? []) as Array<{ id: number; panels?: unknown; targets?: Array<{ datasource?: { uid?: string } }> }>) {
        ids.push(p.id);
        for (const t of p.targets ?? []) expect(t.datasource?.uid).toBe('${datasource}');
        visit(p.panels);
      }
    };
    visit(dashboard['panels']);
    expect(new Set(ids).size).toBe(ids.length);
  });

  test('every query is valid PromQL (promtool check rules on them as recording rules)', (ctx) => {
    needPromtool(ctx);
    inTempDir((dir) => {
      const rules = { groups: [{ name: 'dashboard', rules: exprs.map((e, i) => ({ record: `dashboard:query_${i}`, expr: concreteExpr(e.expr) })) }] };
      const file = path.join(dir, 'dashboard-queries.yml');
      writeFileSync(file, stringify(rules));
      const r = runPromtool(['check', 'rules', file]);
      expect(r.status, r.output).toBe(0);
    });
  });

  test('shows decisions by reason, latency quantiles, bytes, tunnels, sessions, lockdown and policy reloads', () => {
    const byPanel = new Map<string, string>();
    for (const e of exprs) byPanel.set(e.panel, `${byPanel.get(e.panel) ?? ''}\n${e.expr}`);
    const find = (re: RegExp): string[] => [...byPanel].filter(([, q]) => re.test(q)).map(([title]) => title);
    expect(find(/sum by \(decision, reason\) \(rate\(portcullis_requests_total/)).not.toEqual([]);
    expect(find(/histogram_quantile\(0\.99, sum by \(le, kind\) \(rate\(portcullis_request_duration_seconds_bucket/)).not.toEqual([]);
    expect(find(/portcullis_bytes_total/)).not.toEqual([]);
    expect(find(/portcullis_active_tunnels/)).not.toEqual([]);
    expect(find(/portcullis_sessions_active/)).not.toEqual([]);
    expect(find(/portcullis_accounts_in_lockdown/)).not.toEqual([]);
    expect(find(/portcullis_policy_reloads_total/)).not.toEqual([]);
  });
});

describe('live /metrics of a real Portcullis after traffic', () => {
  let h: Harness;
  let origin: Origin;
  let tlsOrigin: Origin;
  let scrape = '';
  const tlsCert = selfSignedCert(['tls.test']);
  const files = mkdtempSync(path.join(tmpdir(), 'portcullis-scrape-'));
  const caFile = path.join(files, 'origin-ca.pem');
  writeFileSync(caFile, tlsCert.cert);

  const policy = (extra = ''): string => `
version: 1
destinations:
  origin:
    hosts: [origin.test, nx.test]
    ports: [${origin.port}]
    allowPrivate: [127.0.0.1/32]
  tls:
    hosts: [tls.test]
    ports: [${tlsOrigin.port}]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "*"
    allow: [origin, tls]
${extra}`;

  beforeAll(async () => {
    origin = await startOrigin();
    tlsOrigin = await startOrigin(undefined, tlsCert);
    h = await startHarness({ policy: policy() });
    h.dns.setRecords({ 'origin.test': { A: ['127.0.0.1'] }, 'tls.test': { A: ['127.0.0.1'] }, 'nx.test': { rcode: 'NXDOMAIN' } });
    const { token } = await h.createSession('agent-1');
    const proxy = ['-x', h.proxyUrl('agent-1', token)];
    // Allowed plain HTTP, a denial, an HTTPS tunnel and an upstream (DNS) error.
    expect((await curl([...proxy, `http://origin.test:${origin.port}/hello`])).status).toBe(200);
    expect((await curl([...proxy, 'http://exfil.example/collect'])).status).toBe(403);
    expect((await curl([...proxy, '--cacert', caFile, `https://tls.test:${tlsOrigin.port}/`])).status).toBe(200);
    expect((await curl([...proxy, `http://nx.test:${origin.port}/`])).status).toBe(502);
    // A revocation, a lockdown, and policy reloads that succeed and fail.
    const second = await h.createSession('agent-2');
    expect((await h.admin('DELETE', `/v1/accounts/agent-2/sessions/${second.id}`)).status).toBe(200);
    expect((await h.admin('PUT', '/v1/accounts/agent-3/lockdown', { enabled: true })).status).toBe(200);
    await h.setPolicy(policy('deny:\n  hosts: [pastebin.com]\n'));
    await h.setPolicy('version: 1\ndestinations: {oops\n');
    await waitFor(async () => /^portcullis_active_tunnels 0$/m.test(await (await fetch(`${h.adminUrl}/metrics`)).text()), 5000, 'the tunnel to close');
    scrape = await (await fetch(`${h.adminUrl}/metrics`)).text();
  });

  afterAll(async () => {
    await h?.close();
    await origin?.close();
    await tlsOrigin?.close();
    rmSync(files, { recursive: true, force: true });
  });

  const samples = (): Set<string> => exposedSamples(scrape);

  test('every SPEC metric is exposed', () => {
    for (const name of METRIC_NAMES) expect(scrape, name).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
  });

  test('the traffic is counted', () => {
    expect(scrape).toMatch(/^portcullis_requests_total\{kind="http",decision="allow",reason="allowlisted"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_requests_total\{kind="http",decision="deny",reason="not_allowlisted"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_requests_total\{kind="connect",decision="allow",reason="allowlisted"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_upstream_errors_total\{kind="http",error="dns_error"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_bytes_total\{direction="in",kind="connect"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_session_revocations_total\{scope="one"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_accounts_in_lockdown [1-9]/m);
    expect(scrape).toMatch(/^portcullis_policy_reloads_total\{result="success"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_policy_reloads_total\{result="failure"\} [1-9]/m);
    expect(scrape).toMatch(/^portcullis_store_up 1$/m);
  });

  test('promtool check metrics: no problems but prom-client\'s own nodejs_active_*_total gauges', (ctx) => {
    needPromtool(ctx);
    const r = runPromtool(['check', 'metrics'], scrape);
    const problems = r.output.split('\n').filter((l) => l.trim() !== '');
    for (const p of problems) expect(p).toMatch(/^portcullis_nodejs_active_\w+_total non-counter metrics should not have "_total" suffix$/);
  });

  test('every metric the dashboard queries exists in the scrape', () => {
    const used = new Set(exprs.flatMap((e) => promqlMetricNames(e.expr)));
    expect(used.size).toBeGreaterThan(10);
    const missing = [...used].filter((m) => !samples().has(m));
    expect(missing).toEqual([]);
  });

  test('every metric the alert rules use exists in the scrape (up is Prometheus\'s own)', () => {
    const used = new Set(alerts.flatMap((a) => promqlMetricNames(a.expr)));
    expect(used).toContain('up');
    const missing = [...used].filter((m) => m !== 'up' && !samples().has(m));
    expect(missing).toEqual([]);
  });
});

test('the README shows a parseable example of every log line kind, each a message the code writes', () => {
  const section = readme.slice(readme.indexOf('### Log lines'));
  const block = /```json\n([\s\S]*?)\n```/.exec(section)?.[1] ?? '';
  const lines = block.split('\n').map((l) => JSON.parse(l) as { msg: string; level: string; name: string });
  expect(lines.length).toBeGreaterThanOrEqual(12);
  const source = readdirSync(path.join(ROOT, 'src'), { recursive: true })
    .filter((f) => String(f).endsWith('.ts'))
    .map((f) => readFileSync(path.join(ROOT, 'src', String(f)), 'utf8'))
    .join('\n');
  for (const l of lines) {
    expect(l.name).toBe('portcullis');
    // "egress" is a constant (EGRESS_MSG); every other message is a literal in src/.
    expect(l.msg === 'egress' || source.includes(`'${l.msg}'`), l.msg).toBe(true);
  }
  const kinds = new Set(lines.map((l) => (l.msg === 'egress' ? `egress ${(l as { phase?: string }).phase ?? (l as { decision?: string }).decision}` : l.msg)));
  for (const kind of ['egress allow', 'egress deny', 'egress close', 'admin', 'session revoked', 'account state changed', 'policy reloaded', 'draining', 'stopped']) expect(kinds, kind).toContain(kind);
});

test('promqlMetricNames finds metrics, not functions, keywords or labels', () => {
  expect(
    promqlMetricNames('histogram_quantile(0.99, sum by (le, kind) (rate(portcullis_request_duration_seconds_bucket{job=~"$job", kind="x"}[$__rate_interval]))) > 1e-3 and on (instance) up offset 5m'),
  ).toEqual(['portcullis_request_duration_seconds_bucket', 'up']);
  expect(promqlMetricNames('count(count by (hash) (portcullis_policy_info)) > 1')).toEqual(['portcullis_policy_info']);
});
