/**
 * Prometheus metrics (SPEC §6) on an own Registry, never prom-client's global one, so tests and
 * several servers in one process never share counters. Labels are bounded: every label value
 * comes from a closed set (reason codes from src/reasons.ts), never a host or an account, and
 * is checked on every update so a stray value cannot grow the series count.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { REASON_CODES, REASONS, type Reason } from '../reasons.js';
import type { EgressDecision, EgressKind } from './log-fields.js';

/** Upstream error codes: the `error`-kind reasons of the registry. */
export type UpstreamError = {
  [K in Reason]: (typeof REASONS)[K]['kind'] extends 'error' ? K : never;
}[Reason];

/** Byte direction: out = client to destination, in = destination to client. */
export type Direction = 'in' | 'out';

/** How sessions ended: one revoked, all of an account revoked ("sign out everywhere"), or expired. */
export type RevocationScope = 'one' | 'all' | 'expired';

/** Outcome of a policy reload attempt. */
export type ReloadOutcome = 'success' | 'failure' | 'unchanged';

/** The closed set of values of each label; anything else is refused (or counted as "other", see MetricsOptions). */
export const LABEL_VALUES = {
  kind: ['http', 'connect', 'intercepted'] satisfies EgressKind[],
  decision: ['allow', 'deny', 'report', 'error'] satisfies EgressDecision[],
  reason: REASON_CODES,
  error: REASON_CODES.filter((code) => REASONS[code].kind === 'error') as UpstreamError[],
  direction: ['in', 'out'] satisfies Direction[],
  scope: ['one', 'all', 'expired'] satisfies RevocationScope[],
  result: ['success', 'failure', 'unchanged'] satisfies ReloadOutcome[],
} as const;

// Built once: the per-update check is a Set lookup per label.
const LABEL_SETS: ReadonlyMap<string, ReadonlySet<string>> = new Map(
  Object.entries(LABEL_VALUES).map(([name, values]) => [name, new Set<string>(values)]),
);

// A policy hash is hex (sha256 of the source); one series at a time, so only the shape is checked.
const POLICY_HASH = /^[0-9a-f]{8,64}$/;

/** The value recorded instead of an unknown label value when labels are not strict. */
export const OTHER_LABEL_VALUE = 'other';

/** A label value outside its closed set, in strict mode. */
export class MetricLabelError extends Error {
  override readonly name = 'MetricLabelError';
  readonly code = 'ERR_PORTCULLIS_METRIC_LABEL' as const;
}

/** A counter whose label values are checked. */
export interface CounterHandle<L> {
  inc(labels: L, value?: number): void;
}

/** A histogram whose label values are checked; values in the metric's unit (seconds). */
export interface HistogramHandle<L> {
  observe(labels: L, value: number): void;
}

/** A label-less histogram; values in seconds. */
export interface PlainHistogram {
  observe(value: number): void;
}

/** A label-less gauge. */
export interface PlainGauge {
  inc(value?: number): void;
  dec(value?: number): void;
  set(value: number): void;
}

/** Options of Metrics. */
export interface MetricsOptions {
  /** Registry to register on; a new one by default. */
  readonly registry?: Registry;
  /** Also collect Node process metrics (CPU, memory, event loop), prefixed `portcullis_`. */
  readonly collectDefault?: boolean;
  /**
   * Throw MetricLabelError on an unknown label value. Default: true unless NODE_ENV is
   * "production", where the value is recorded as "other" instead, so a bug costs one series
   * and not a request.
   */
  readonly strictLabels?: boolean;
}

// 1 ms … 60 s: fast denials take well under a millisecond budget, slow uploads tens of seconds.
const REQUEST_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
// 1 ms … 10 s: revocation must reach every replica within 1 s (SPEC §3), so resolution is below that.
const PROPAGATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Every metric name this module registers (default process metrics aside). */
export const METRIC_NAMES = [
  'portcullis_requests_total',
  'portcullis_request_duration_seconds',
  'portcullis_upstream_errors_total',
  'portcullis_bytes_total',
  'portcullis_active_tunnels',
  'portcullis_active_connections',
  'portcullis_sessions_active',
  'portcullis_session_revocations_total',
  'portcullis_accounts_in_lockdown',
  'portcullis_policy_reloads_total',
  'portcullis_policy_info',
  'portcullis_store_up',
  'portcullis_state_propagation_seconds',
] as const;

/** The Portcullis metrics, typed and label-checked, on one registry. */
export class Metrics {
  readonly registry: Registry;
  /** Requests and CONNECTs decided: one per canonical egress decision line. */
  readonly requests: CounterHandle<{ kind: EgressKind; decision: EgressDecision; reason: Reason }>;
  /** Seconds from accepting a request to its egress decision line (response finished; CONNECT established or refused). */
  readonly requestDuration: HistogramHandle<{ kind: EgressKind }>;
  readonly upstreamErrors: CounterHandle<{ kind: EgressKind; error: UpstreamError }>;
  /** Bytes relayed; add as they flow or once at the end, never negative. */
  readonly bytes: CounterHandle<{ direction: Direction; kind: EgressKind }>;
  readonly activeTunnels: PlainGauge;
  readonly activeConnections: PlainGauge;
  readonly sessionsActive: PlainGauge;
  /** Sessions ended, counted per session (revoke-all of five sessions adds 5). */
  readonly sessionRevocations: CounterHandle<{ scope: RevocationScope }>;
  readonly accountsInLockdown: PlainGauge;
  readonly policyReloads: CounterHandle<{ result: ReloadOutcome }>;
  readonly statePropagation: PlainHistogram;
  readonly #storeUp: Gauge;
  readonly #policyInfo: Gauge<'hash'>;
  readonly #strict: boolean;

  constructor(options: MetricsOptions = {}) {
    const registry = options.registry ?? new Registry();
    this.registry = registry;
    this.#strict = options.strictLabels ?? process.env['NODE_ENV'] !== 'production';
    const registers = [registry];

    const requests = new Counter({
      name: 'portcullis_requests_total',
      help: 'Requests and CONNECT tunnels decided, by kind, decision and reason code (count).',
      labelNames: ['kind', 'decision', 'reason'] as const,
      registers,
    });
    const duration = new Histogram({
      name: 'portcullis_request_duration_seconds',
      help: 'Time from accepting a request to its egress decision: response finished (HTTP), tunnel established or refused (CONNECT), in seconds.',
      labelNames: ['kind'] as const,
      buckets: REQUEST_BUCKETS,
      registers,
    });
    const upstreamErrors = new Counter({
      name: 'portcullis_upstream_errors_total',
      help: 'Upstream failures (DNS, connect, TLS, timeout), by kind and error reason code (count).',
      labelNames: ['kind', 'error'] as const,
      registers,
    });
    const bytes = new Counter({
      name: 'portcullis_bytes_total',
      help: 'Bytes relayed, by direction (out: client to destination, in: destination to client) and kind, in bytes.',
      labelNames: ['direction', 'kind'] as const,
      registers,
    });
    const gauge = (name: string, help: string): Gauge => new Gauge({ name, help, registers });
    this.activeTunnels = gauge('portcullis_active_tunnels', 'CONNECT tunnels open now, intercepted ones included (count).');
    this.activeConnections = gauge('portcullis_active_connections', 'Client connections to the proxy listener open now (count).');
    this.sessionsActive = gauge('portcullis_sessions_active', 'Sessions neither revoked nor expired (count).');
    const revocations = new Counter({
      name: 'portcullis_session_revocations_total',
      help: 'Sessions ended, by scope: one (revoked singly), all (sign out everywhere) or expired (count of sessions).',
      labelNames: ['scope'] as const,
      registers,
    });
    this.accountsInLockdown = gauge('portcullis_accounts_in_lockdown', 'Accounts whose lockdown flag is on (count).');
    const reloads = new Counter({
      name: 'portcullis_policy_reloads_total',
      help: 'Policy reload attempts, by result: success, failure (last good policy kept) or unchanged (count).',
      labelNames: ['result'] as const,
      registers,
    });
    this.#policyInfo = new Gauge({
      name: 'portcullis_policy_info',
      help: 'The policy in force: 1 for the sha256 hash of its source, no other series (info).',
      labelNames: ['hash'] as const,
      registers,
    });
    this.#storeUp = gauge('portcullis_store_up', 'Whether the state store is reachable and the cache fresh: 1 yes, 0 no (boolean).');
    const propagation = new Histogram({
      name: 'portcullis_state_propagation_seconds',
      help: 'Delay from a state change being made on any replica to this replica applying it, in seconds.',
      buckets: PROPAGATION_BUCKETS,
      registers,
    });
    this.statePropagation = propagation;

    // The per-request metrics resolve their labelled child once per label combination: hashing
    // labels on every update is a measurable share of a proxied request's CPU.
    const requestChild = this.#children((l: { kind: EgressKind; decision: EgressDecision; reason: Reason }) => requests.labels(l));
    const durationChild = this.#children((l: { kind: EgressKind }) => duration.labels(l));
    const errorChild = this.#children((l: { kind: EgressKind; error: UpstreamError }) => upstreamErrors.labels(l));
    const bytesChild = this.#children((l: { direction: Direction; kind: EgressKind }) => bytes.labels(l));
    this.requests = { inc: (labels, value) => requestChild(labels).inc(value) };
    this.requestDuration = { observe: (labels, value) => durationChild(labels).observe(value) };
    this.upstreamErrors = { inc: (labels, value) => errorChild(labels).inc(value) };
    this.bytes = { inc: (labels, value) => bytesChild(labels).inc(value) };
    this.sessionRevocations = { inc: (labels, value) => revocations.inc(this.#check(labels), value) };
    this.policyReloads = { inc: (labels, value) => reloads.inc(this.#check(labels), value) };

    // Small closed label sets start at zero, so rate() and absent() work before the first event.
    for (const kind of LABEL_VALUES.kind) {
      duration.zero({ kind });
      for (const direction of LABEL_VALUES.direction) bytes.inc({ direction, kind }, 0);
      for (const error of LABEL_VALUES.error) upstreamErrors.inc({ kind, error }, 0);
    }
    for (const scope of LABEL_VALUES.scope) revocations.inc({ scope }, 0);
    for (const result of LABEL_VALUES.result) reloads.inc({ result }, 0);

    if (options.collectDefault === true) collectDefaultMetrics({ register: registry, prefix: 'portcullis_' });
  }

  /**
   * A memo of labelled children. Only label sets that passed the closed-set check are kept, so
   * the memo is as bounded as the series themselves.
   */
  #children<L extends object, C>(make: (labels: L) => C): (labels: L) => C {
    const memo = new Map<string, C>();
    return (labels) => {
      let key = '';
      for (const name in labels) key += `${String(labels[name])}\0`;
      let child = memo.get(key);
      if (child === undefined) {
        const checked = this.#check(labels);
        child = make(checked);
        if (checked === labels) memo.set(key, child);
      }
      return child;
    };
  }

  /** Labels with every value checked against its closed set. */
  #check<L extends object>(labels: L): L {
    let out: L | undefined;
    for (const [name, value] of Object.entries(labels) as Array<[string, unknown]>) {
      const allowed = LABEL_SETS.get(name);
      if (allowed !== undefined && typeof value === 'string' && allowed.has(value)) continue;
      if (this.#strict) throw new MetricLabelError(`metric label ${name}=${JSON.stringify(value)} is not in its closed set`);
      out ??= { ...labels };
      (out as Record<string, unknown>)[name] = OTHER_LABEL_VALUE;
    }
    return out ?? labels;
  }

  /** Sets portcullis_policy_info to 1 for `hash` and removes the previous hash's series. */
  setPolicyHash(hash: string): void {
    let value = hash;
    if (!POLICY_HASH.test(hash)) {
      if (this.#strict) throw new MetricLabelError(`policy hash ${JSON.stringify(hash)} is not lower-case hex`);
      value = OTHER_LABEL_VALUE;
    }
    // reset() and set() run in one tick, so no scrape ever sees zero or two policies.
    this.#policyInfo.reset();
    this.#policyInfo.set({ hash: value }, 1);
  }

  /** Sets portcullis_store_up. */
  setStoreUp(up: boolean): void {
    this.#storeUp.set(up ? 1 : 0);
  }

  /** Content-Type of render()'s output (Prometheus text format). */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** Every metric of the registry in Prometheus text format. */
  render(): Promise<string> {
    return this.registry.metrics();
  }
}
