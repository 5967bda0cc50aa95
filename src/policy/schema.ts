/**
 * The policy file's schema (SPEC §5). Every default lives here; units are in the descriptions,
 * which also become the editor hints of policies/policy.schema.json.
 */
import { z } from 'zod';

/** HTTP method token, upper case (RFC 9110 token characters). */
const method = z
  .string()
  .regex(/^[A-Z][A-Z0-9!#$%&'*+.^_`|~-]*$/, 'methods are upper-case HTTP method tokens, e.g. GET');

/** IPv4 or IPv6 CIDR such as 10.20.0.0/16 or fd00::/8 (checked in depth by the compiler). */
const cidr = z
  .string()
  .regex(/^[0-9a-fA-F:.]+\/\d{1,3}$/, 'expected a CIDR such as 10.20.0.0/16 or fd00::/8');

const port = z.number().int().min(1).max(65535);

/** A host pattern; its grammar (exact, `*.` wildcard, IP literal) is checked by host-pattern.ts. */
const hostPattern = z.string().min(1);

/** How a destination behaves while its account is in lockdown. */
export const LockdownModeSchema = z
  .enum(['deny', 'allow', 'cache-only', 'allow-tunnel'])
  .describe(
    'deny: unreachable in lockdown (default); allow: reachable read-only; cache-only: served from the response cache only; allow-tunnel: like allow, and the operator accepts an opaque HTTPS tunnel',
  );

/** A named group of hosts with the rules that apply to them. */
export const DestinationSchema = z.strictObject({
  description: z.string().optional().describe('Free text for humans.'),
  hosts: z
    .array(hostPattern)
    .min(1)
    .describe('Exact names, IP literals (203.0.113.7, [2001:db8::1]) or one leading "*." label wildcard (never matches the apex).'),
  ports: z
    .array(port)
    .min(1)
    .optional()
    .describe('Allowed ports. Absent: 80 and 443.'),
  schemes: z
    .array(z.enum(['http', 'https']))
    .min(1)
    .default(['http', 'https'])
    .describe('Allowed URL schemes. A CONNECT tunnel counts as https.'),
  methods: z
    .array(method)
    .min(1)
    .optional()
    .describe('Allowed methods. Absent: any. Enforced on plain HTTP and intercepted HTTPS; an opaque tunnel to a destination with methods is inspection_required.'),
  paths: z
    .array(z.string().regex(/^\//, 'paths start with "/"'))
    .min(1)
    .optional()
    .describe('Allowed path globs: "*" matches within one segment, "**" any number of segments. Matched on the percent-decoded, dot-segment-normalized path; %2F is never decoded.'),
  inspect: z.boolean().default(false).describe('Intercept TLS for these hosts so every inner request is checked.'),
  lockdown: LockdownModeSchema.default('deny'),
  connector: z.boolean().default(false).describe('A live connector (drive, mail, ...): disabled in lockdown.'),
  websocket: z.boolean().default(false).describe('Allow WebSocket upgrades.'),
  developerOnly: z.boolean().default(false).describe('Reachable only for accounts in developer mode.'),
  allowPrivate: z
    .array(cidr)
    .default([])
    .describe('Private ranges this destination alone may resolve into, e.g. an internal mirror.'),
});

/** An account rule: the first whose glob matches the account applies. */
export const AccountRuleSchema = z.strictObject({
  match: z
    .string()
    .min(1)
    .describe('Account glob: "*" matches any run of characters, "?" one character.'),
  mode: z.enum(['enforce', 'report']).default('enforce').describe('report: allow what enforce would deny on allowlist grounds, and log report_would_deny.'),
  allow: z.array(z.string().min(1)).default([]).describe('Destination names this account may reach.'),
});

/** Ordinary request headers allowed in lockdown (lower case). */
export const DEFAULT_LOCKDOWN_HEADERS: readonly string[] = [
  'accept',
  'accept-encoding',
  'accept-language',
  'cache-control',
  'connection',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'pragma',
  'proxy-authorization',
  'proxy-connection',
  'range',
  'te',
  'user-agent',
  'keep-alive',
];

/** The `lockdown:` block: limits that apply to every account while it is in lockdown. */
export const LockdownSettingsSchema = z.strictObject({
  methods: z.array(method).min(1).default(['GET', 'HEAD', 'OPTIONS']).describe('Methods allowed in lockdown.'),
  maxUrlLength: z.number().int().positive().default(2048).describe('Characters of the request URL (path + query).'),
  maxRequestBytes: z.number().int().positive().default(8192).describe('Bytes of request line plus headers.'),
  maxQueryEntropy: z.number().positive().default(4.5).describe('Shannon entropy, bits per character, of any one query value.'),
  headers: z
    .array(z.string().regex(/^[a-z0-9!#$%&'*+.^_`|~-]+$/, 'header names are lower-case tokens'))
    .default([...DEFAULT_LOCKDOWN_HEADERS])
    .describe('Request headers allowed in lockdown (lower case). Absent: a default list of ordinary headers.'),
});

/** The `limits:` block: per-request and per-account limits. */
export const LimitsSchema = z.strictObject({
  maxRequestBodyBytes: z.number().int().positive().default(10 * 1024 * 1024).describe('Bytes of one request body.'),
  maxUrlLength: z.number().int().positive().default(8192).describe('Characters of the request-target (414 above).'),
  maxHeaderBytes: z.number().int().positive().default(16384).describe('Bytes of the request head (431 above). Read at start; a reload does not change it.'),
  requestsPerMinute: z.number().int().positive().default(600).describe('Requests and tunnels per account per minute, per replica.'),
  maxConcurrentTunnels: z.number().int().positive().default(256).describe('Open tunnels per account, per replica.'),
});

/** One row of the policy's own test table. */
export const PolicyTestSchema = z.strictObject({
  name: z.string().min(1),
  account: z.string().min(1),
  lockdown: z.boolean().default(false),
  developerMode: z.boolean().default(false),
  request: z
    .string()
    .regex(/^[A-Z][A-Z0-9-]* \S+$/, 'expected "METHOD URL", e.g. "GET https://pypi.org/simple/" or "CONNECT github.com:443"')
    .describe('"METHOD URL" (plain HTTP for http://, intercepted-or-tunnel for https://), or "CONNECT host:port".'),
  headers: z.record(z.string(), z.string()).default({}),
  body: z.boolean().default(false).describe('Whether the request carries a body.'),
  expect: z.union([
    z.enum(['allow', 'deny', 'report']),
    z.strictObject({ allow: z.string() }),
    z.strictObject({ deny: z.string() }),
    z.strictObject({ report: z.string() }),
  ]),
});

/**
 * The whole policy file. Sections default through `.prefault({})`, which runs the section's own
 * schema on `{}`: its field defaults then stay in one place and every parse gets fresh arrays,
 * where `.default(value)` would hand every loaded policy the same (shared, mutable) arrays.
 */
export const PolicySchema = z.strictObject({
  $schema: z.string().optional(),
  version: z.literal(1),
  destinations: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'destination names are letters, digits, ".", "_" and "-"'), DestinationSchema).default({}),
  accounts: z.array(AccountRuleSchema).default([]),
  deny: z.strictObject({ hosts: z.array(hostPattern).default([]) }).prefault({}),
  lockdown: LockdownSettingsSchema.prefault({}),
  network: z.strictObject({ allowPrivate: z.array(cidr).default([]) }).prefault({}),
  limits: LimitsSchema.prefault({}),
  tests: z.array(PolicyTestSchema).default([]),
});

/** A validated policy with every default filled in. */
export type Policy = z.infer<typeof PolicySchema>;
export type Destination = z.infer<typeof DestinationSchema>;
export type AccountRule = z.infer<typeof AccountRuleSchema>;
export type LockdownSettings = z.infer<typeof LockdownSettingsSchema>;
export type Limits = z.infer<typeof LimitsSchema>;
export type PolicyTest = z.infer<typeof PolicyTestSchema>;
export type LockdownMode = z.infer<typeof LockdownModeSchema>;
