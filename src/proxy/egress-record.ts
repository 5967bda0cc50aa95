/**
 * The per-request record that becomes the one canonical `egress` log line and its metrics.
 * Everything on the request path writes into it; `finish()` emits exactly once.
 */
import type { Logger } from 'pino';
import type { Decision } from '../policy/decide.js';
import { REASONS, type Reason } from '../reasons.js';
import type { EgressDecision, EgressFields, EgressKind } from '../observability/log-fields.js';
import { logEgress } from '../observability/logger.js';
import type { Metrics, UpstreamError } from '../observability/metrics.js';

let counter = 0;
const BOOT = Date.now().toString(36);

/** A short, unique request id: boot time plus a counter (cheaper than a UUID per request). */
export function nextRequestId(): string {
  counter = (counter + 1) % Number.MAX_SAFE_INTEGER;
  return `${BOOT}-${counter.toString(36)}`;
}

/** What the proxy learns about one request or tunnel while handling it. */
export class EgressRecord {
  readonly reqId = nextRequestId();
  readonly startedAt = performance.now();
  kind: EgressKind;
  account: string | undefined;
  sessionId: string | undefined;
  method: string | undefined;
  host: string | undefined;
  port: number | undefined;
  path: string | undefined;
  queryLength: number | undefined;
  decision: EgressDecision = 'deny';
  reason: Reason = 'bad_request';
  wouldDeny: Reason | undefined;
  destination: string | undefined;
  lockdown: boolean | undefined;
  resolvedIp: string | undefined;
  status: number | undefined;
  bytesOut = 0;
  bytesIn = 0;
  error: string | undefined;
  #finished = false;

  constructor(kind: EgressKind) {
    this.kind = kind;
  }

  /** Records a policy decision (allow, report or deny). */
  applyDecision(d: Decision): void {
    this.decision = d.verdict;
    this.reason = d.reason;
    this.wouldDeny = d.wouldDeny;
    this.destination = d.destination ?? undefined;
  }

  /** Records a denial or error by reason code; the decision class follows from the registry. */
  setReason(reason: Reason): void {
    this.reason = reason;
    const kind = REASONS[reason].kind;
    this.decision = kind === 'error' ? 'error' : kind === 'deny' ? 'deny' : this.decision;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** Writes the canonical line and the metrics. Later calls do nothing. */
  finish(logger: Logger, metrics: Metrics): void {
    if (this.#finished) return;
    this.#finished = true;
    const durationMs = Math.round((performance.now() - this.startedAt) * 1000) / 1000;
    logEgress(logger, this.#line(durationMs));
    metrics.requests.inc({ kind: this.kind, decision: this.decision, reason: this.reason });
    metrics.requestDuration.observe({ kind: this.kind }, durationMs / 1000);
    if (this.decision === 'error') metrics.upstreamErrors.inc({ kind: this.kind, error: this.reason as UpstreamError });
    if (this.kind !== 'connect') this.countBytes(metrics);
  }

  /** Adds this record's bytes to the byte counters (tunnels do this on close). */
  countBytes(metrics: Metrics): void {
    if (this.bytesOut > 0) metrics.bytes.inc({ direction: 'out', kind: this.kind }, this.bytesOut);
    if (this.bytesIn > 0) metrics.bytes.inc({ direction: 'in', kind: this.kind }, this.bytesIn);
  }

  /** The tunnel's close line: bytes and lifetime, `phase: "close"`. */
  logClose(logger: Logger, metrics: Metrics, reason?: Reason): void {
    this.countBytes(metrics);
    logEgress(logger, this.#line(Math.round(performance.now() - this.startedAt), reason ?? this.reason));
  }

  /**
   * The canonical line. The decision line carries everything; a tunnel's close line (`closeReason`
   * given) carries identity, outcome, bytes and lifetime only.
   */
  #line(durationMs: number, closeReason?: Reason): EgressFields {
    const close = closeReason !== undefined;
    return {
      reqId: this.reqId,
      account: this.account,
      sessionId: this.sessionId,
      kind: this.kind,
      method: this.method,
      host: this.host,
      port: this.port,
      path: close ? undefined : this.path,
      queryLength: close ? undefined : this.queryLength,
      decision: this.decision,
      reason: closeReason ?? this.reason,
      wouldDeny: close ? undefined : this.wouldDeny,
      destination: this.destination,
      lockdown: close ? undefined : this.lockdown,
      resolvedIp: this.resolvedIp,
      status: close ? undefined : this.status,
      bytesOut: this.bytesOut,
      bytesIn: this.bytesIn,
      durationMs,
      error: this.error,
      phase: close ? 'close' : undefined,
    };
  }
}
