/**
 * Explains what the proxy would do with a request, without sending anything: the CONNECT
 * decision for https URLs, then the inner request where the destination is intercepted.
 * Shared by `portcullis explain`, `portcullis policy test` and `POST /v1/explain`.
 */
import { parseAbsoluteUrl, parseAuthority } from '../net/canonical.js';
import { REASONS, type Reason } from '../reasons.js';
import type { CompiledPolicy } from './compile.js';
import { decide, type Decision, type DecisionInput, type RequestKind } from './decide.js';

/** A request to explain, as a security engineer writes it. */
export interface ExplainRequest {
  readonly account: string;
  /** Upper-case method; "CONNECT" with an authority as url. */
  readonly method: string;
  /** Absolute URL (http/https), or "host:port" for CONNECT. */
  readonly url: string;
  readonly lockdown?: boolean;
  readonly developerMode?: boolean;
  /** Extra request headers (names are matched case-insensitively). */
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: boolean;
}

/** One evaluated hop: the tunnel, or a request (plain or intercepted). */
export interface ExplainStep {
  readonly kind: RequestKind;
  readonly decision: Decision;
}

/** The explanation: the final decision plus every step that led to it. */
export interface Explanation {
  readonly decision: Decision;
  readonly steps: readonly ExplainStep[];
  readonly host: string;
  readonly port: number;
  /** Human lines: which account rule, which destination, why. */
  readonly why: readonly string[];
}

/** The scheme a CONNECT is judged as: port 80 carries plain HTTP, anything else is treated as TLS. */
export function tunnelScheme(port: number): 'http' | 'https' {
  return port === 80 ? 'http' : 'https';
}

function headerInfo(req: ExplainRequest, host: string, requestLine: string): { names: string[]; bytes: number } {
  const headers: Record<string, string> = { host, 'user-agent': 'portcullis-explain', accept: '*/*' };
  for (const [k, v] of Object.entries(req.headers ?? {})) headers[k.toLowerCase()] = v;
  let bytes = requestLine.length + 2;
  for (const [k, v] of Object.entries(headers)) bytes += k.length + v.length + 4;
  return { names: Object.keys(headers), bytes: bytes + 2 };
}

/** Evaluates a request the way the proxy would; throws CanonicalError on a malformed URL. */
export function explain(req: ExplainRequest, policy: CompiledPolicy): Explanation {
  const base = { account: req.account, lockdown: req.lockdown ?? false, developerMode: req.developerMode ?? false };
  const steps: ExplainStep[] = [];

  if (req.method === 'CONNECT') {
    const a = parseAuthority(req.url);
    const decision = decide({ ...base, kind: 'connect', scheme: tunnelScheme(a.port), host: a.host, hostKind: a.hostKind, port: a.port, method: 'CONNECT' }, policy);
    steps.push({ kind: 'connect', decision });
    return finish(decision, steps, a.host, a.port, req, policy);
  }

  const t = parseAbsoluteUrl(req.url);
  const target = t.path + (t.query !== null ? `?${t.query}` : '');
  const info = headerInfo(req, t.host, `${req.method} ${target} HTTP/1.1`);
  const inner = (kind: RequestKind): DecisionInput => ({
    ...base,
    kind,
    scheme: t.scheme,
    host: t.host,
    hostKind: t.hostKind,
    port: t.port,
    method: req.method,
    path: t.path,
    query: t.query,
    headerNames: info.names,
    hasBody: req.body ?? false,
    upgrade: req.headers ? upgradeOf(req.headers) : null,
    requestBytes: info.bytes,
  });

  if (t.scheme !== 'https') {
    const decision = decide(inner('http'), policy);
    steps.push({ kind: 'http', decision });
    return finish(decision, steps, t.host, t.port, req, policy);
  }
  // HTTPS always starts with a CONNECT; only an intercepted tunnel lets the inner request be judged.
  const tunnel = decide({ ...base, kind: 'connect', scheme: 'https', host: t.host, hostKind: t.hostKind, port: t.port, method: 'CONNECT' }, policy);
  steps.push({ kind: 'connect', decision: tunnel });
  if (tunnel.verdict === 'deny' || !tunnel.matched?.inspect) return finish(tunnel, steps, t.host, t.port, req, policy);
  const decision = decide(inner('intercepted'), policy);
  steps.push({ kind: 'intercepted', decision });
  return finish(decision, steps, t.host, t.port, req, policy);
}

function upgradeOf(headers: Readonly<Record<string, string>>): string | null {
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === 'upgrade') return v.toLowerCase();
  return null;
}

function finish(decision: Decision, steps: ExplainStep[], host: string, port: number, req: ExplainRequest, policy: CompiledPolicy): Explanation {
  const why: string[] = [];
  const rule = decision.accountRule === null ? null : policy.accounts[decision.accountRule];
  why.push(rule ? `account "${req.account}" matches accounts[${rule.index}] (match: "${rule.match}", mode: ${rule.mode})` : `no account rule matches "${req.account}"`);
  for (const step of steps) {
    const d = step.decision;
    const dest = d.destination ? ` via destination "${d.destination}"` : '';
    why.push(`${step.kind}: ${d.verdict} ${d.reason}${dest}: ${describe(d)}`);
  }
  return { decision, steps, host, port, why };
}

/** The one-line message for a decision, naming the would-be denial in report mode. */
export function describe(d: Decision): string {
  if (d.verdict === 'report' && d.wouldDeny) return `${REASONS.report_would_deny.message} (${d.wouldDeny}: ${REASONS[d.wouldDeny].message})`;
  return REASONS[d.reason as Reason].message;
}

/** The machine-readable form shared by `explain --json` and `POST /v1/explain`. */
export function explanationJson(result: Explanation, policyHash: string): Record<string, unknown> {
  const d = result.decision;
  return {
    decision: d.verdict,
    reason: d.reason,
    ...(d.wouldDeny ? { wouldDeny: d.wouldDeny } : {}),
    destination: d.destination,
    accountRule: d.accountRule,
    host: result.host,
    port: result.port,
    status: d.verdict === 'deny' ? REASONS[d.reason].status : 200,
    steps: result.steps.map((s) => ({ kind: s.kind, decision: s.decision.verdict, reason: s.decision.reason, destination: s.decision.destination })),
    why: result.why,
    policyHash,
  };
}
