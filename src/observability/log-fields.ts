/**
 * The canonical `egress` log line (SPEC §6): its field names, in one order, and the builder that
 * every request path uses, so dashboards and tests never meet a renamed or reordered field.
 *
 * One line per request and per CONNECT, written when the outcome is known, with `msg: "egress"`
 * and no `phase`. A tunnel that was opened logs a second line when it closes, also
 * `msg: "egress"`, with `phase: "close"`, its bytes and its lifetime. So "decisions" are the
 * egress lines without `phase`, and a tunnel's bytes are on its close line. Log at `info`.
 */
import type { Reason } from '../reasons.js';

/** The message of every canonical line. */
export const EGRESS_MSG = 'egress';

/** The field names, in the order they appear on the line. `phase` only on a tunnel's close line. */
export const EGRESS_FIELDS = [
  'reqId',
  'account',
  'sessionId',
  'kind',
  'method',
  'host',
  'port',
  'path',
  'queryLength',
  'decision',
  'reason',
  'wouldDeny',
  'destination',
  'lockdown',
  'resolvedIp',
  'status',
  'bytesOut',
  'bytesIn',
  'durationMs',
  'error',
  'phase',
] as const;

/** One canonical field name. */
export type EgressField = (typeof EGRESS_FIELDS)[number];

/** How the request reached the proxy: plain HTTP, an opaque CONNECT tunnel, or a request inside an intercepted tunnel. */
export type EgressKind = 'http' | 'connect' | 'intercepted';

/** The outcome class; the same values label portcullis_requests_total. */
export type EgressDecision = 'allow' | 'deny' | 'report' | 'error';

/** The values of one canonical line; absent fields are left off the line, never written as null. */
export interface EgressFields {
  /** Request id, the same as `requestId` in error response bodies. */
  readonly reqId: string;
  /** Account name; absent before authentication (bad_request, auth_missing). */
  readonly account?: string;
  readonly sessionId?: string;
  readonly kind: EgressKind;
  /** HTTP method; CONNECT for a tunnel. */
  readonly method?: string;
  /** Canonical host (SPEC §1), never the client's raw spelling. */
  readonly host?: string;
  readonly port?: number;
  /** Path without the query string; a "?" and what follows are cut off by egressLine. */
  readonly path?: string;
  /** Length of the query string in characters (the query itself may carry secrets). */
  readonly queryLength?: number;
  readonly decision: EgressDecision;
  readonly reason: Reason;
  /** In report mode: the reason enforce mode would have denied with. */
  readonly wouldDeny?: Reason;
  /** Name of the policy destination that matched. */
  readonly destination?: string;
  /** Whether the account was in lockdown for this decision. */
  readonly lockdown?: boolean;
  /** The address actually dialed. */
  readonly resolvedIp?: string;
  /** HTTP status sent to the client (200 for an established tunnel). */
  readonly status?: number;
  /** Bytes from the client to the destination (request body, or tunnel client→origin). */
  readonly bytesOut?: number;
  /** Bytes from the destination to the client. */
  readonly bytesIn?: number;
  /** Milliseconds from accept to the end of the response, or the tunnel's lifetime on its close line. */
  readonly durationMs?: number;
  /** Short error text for `decision: "error"`; pass it through scrubSecrets first. */
  readonly error?: string;
  /** "close" on a tunnel's second line; absent on the decision line. */
  readonly phase?: 'close';
}

/** The fields with any query cut off the path (its length logged as queryLength instead). */
function withoutQuery(fields: EgressFields): EgressFields {
  // Queries carry API keys and tokens often enough that a path with one is never logged whole.
  const path = fields.path;
  const q = path === undefined ? -1 : path.indexOf('?');
  return path === undefined || q < 0 ? fields : { ...fields, path: path.slice(0, q), queryLength: fields.queryLength ?? path.length - q - 1 };
}

/** The line's object: fields in EGRESS_FIELDS order, undefined ones omitted, any query cut off the path. */
export function egressLine(fields: EgressFields): Record<string, unknown> {
  const f = withoutQuery(fields);
  const line: Record<string, unknown> = {};
  for (const name of EGRESS_FIELDS) {
    const value = f[name];
    if (value !== undefined) line[name] = value;
  }
  return line;
}

/** A JSON value of the line: strings escaped, non-finite numbers null (as JSON.stringify writes them). */
function json(value: string | number | boolean): string {
  if (typeof value === 'string') return JSON.stringify(value);
  return typeof value === 'number' && !Number.isFinite(value) ? 'null' : String(value);
}

/**
 * The fields as JSON members, comma first (`,"reqId":"…",…`): exactly what JSON.stringify of
 * egressLine(fields) holds between its braces (a property test holds the two together), written
 * field by field in EGRESS_FIELDS order without building that object: the canonical line is
 * written once per request.
 */
export function egressJsonMembers(fields: EgressFields): string {
  const f = withoutQuery(fields);
  let out = `,"reqId":${json(f.reqId)}`;
  if (f.account !== undefined) out += `,"account":${json(f.account)}`;
  if (f.sessionId !== undefined) out += `,"sessionId":${json(f.sessionId)}`;
  out += `,"kind":${json(f.kind)}`;
  if (f.method !== undefined) out += `,"method":${json(f.method)}`;
  if (f.host !== undefined) out += `,"host":${json(f.host)}`;
  if (f.port !== undefined) out += `,"port":${json(f.port)}`;
  if (f.path !== undefined) out += `,"path":${json(f.path)}`;
  if (f.queryLength !== undefined) out += `,"queryLength":${json(f.queryLength)}`;
  out += `,"decision":${json(f.decision)},"reason":${json(f.reason)}`;
  if (f.wouldDeny !== undefined) out += `,"wouldDeny":${json(f.wouldDeny)}`;
  if (f.destination !== undefined) out += `,"destination":${json(f.destination)}`;
  if (f.lockdown !== undefined) out += `,"lockdown":${json(f.lockdown)}`;
  if (f.resolvedIp !== undefined) out += `,"resolvedIp":${json(f.resolvedIp)}`;
  if (f.status !== undefined) out += `,"status":${json(f.status)}`;
  if (f.bytesOut !== undefined) out += `,"bytesOut":${json(f.bytesOut)}`;
  if (f.bytesIn !== undefined) out += `,"bytesIn":${json(f.bytesIn)}`;
  if (f.durationMs !== undefined) out += `,"durationMs":${json(f.durationMs)}`;
  if (f.error !== undefined) out += `,"error":${json(f.error)}`;
  if (f.phase !== undefined) out += `,"phase":${json(f.phase)}`;
  return out;
}
