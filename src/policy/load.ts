/**
 * Policy loading (SPEC §5): YAML text → validated, defaulted, frozen Policy, or a
 * PolicyLoadError listing EVERY problem at once, each as `file:line:column: key.path: message`.
 *
 * Three passes, all positioned on the YAML node they are about: YAML syntax, the zod schema,
 * then semantic checks the schema cannot express (host pattern grammar, CIDRs, references
 * between sections, the policy's own test rows). Warnings are positioned the same way.
 * Pure apart from reading the file in loadPolicyFile*: no process or global state.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document, type Pair, type YAMLError, type YAMLMap } from 'yaml';
import { z } from 'zod';
import { CidrError, parseCidr } from '../net/address.js';
import { CanonicalError, parseAbsoluteUrl, parseAuthority } from '../net/canonical.js';
import { isReason, REASON_CODES, REASONS, type Reason } from '../reasons.js';
import { formatHostPattern, parseHostPattern } from './host-pattern.js';
import { PolicySchema, type Policy } from './schema.js';

/** One problem, positioned: line/column 1-based; path like "destinations.github.hosts[2]". */
export interface PolicyIssue {
  readonly file: string;
  readonly line: number;
  readonly column: number;
  readonly path: string;
  readonly message: string;
}

/** A policy that loaded: the validated policy, its source text, and what it was read from. */
export interface LoadedPolicy {
  readonly policy: Policy;
  readonly source: string;
  readonly file: string;
  /** sha256 hex of the source text; the first 12 characters are what users see. */
  readonly hash: string;
  readonly warnings: readonly PolicyIssue[];
}

/** A policy that did not load; `issues` holds every problem found, sorted by position. */
export class PolicyLoadError extends Error {
  readonly code = 'policy_invalid' as const;
  readonly issues: readonly PolicyIssue[];

  constructor(issues: readonly PolicyIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'PolicyLoadError';
    this.issues = issues;
  }
}

/** "file:line:col: key.path: message" (the path part is left out for whole-file problems). */
export function formatIssue(i: PolicyIssue): string {
  const where = `${i.file}:${i.line}:${i.column}`;
  return i.path === '' ? `${where}: ${i.message}` : `${where}: ${i.path}: ${i.message}`;
}

/** Parses and validates policy text; throws PolicyLoadError with all issues at once. */
export function parsePolicy(source: string, file: string): LoadedPolicy {
  const hash = createHash('sha256').update(source).digest('hex');
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, {
    lineCounter,
    prettyErrors: true,
    // yaml's own uniqueKeys check is quadratic in the keys of a map (100,000 destinations take
    // minutes); duplicates are found in one pass by addDuplicateKeys instead.
    uniqueKeys: false,
    // YAML 1.2 has no merge keys; "<<" stays an ordinary key, which the strict schema rejects.
    merge: false,
    // Library code prints nothing; everything worth saying becomes an issue.
    logLevel: 'silent',
  });
  const loc = new Locator(doc, lineCounter, file);

  const syntax = yamlIssues(doc, loc, source);
  // A broken tree only yields cascades of misleading schema errors; duplicate keys leave it intact.
  if (syntax.some((s) => s.fatal)) throw new PolicyLoadError(sortIssues(syntax.map((s) => s.issue)));

  const data = toData(doc, loc);
  const parsed = PolicySchema.safeParse(data, { reportInput: true });
  const schemaIssues = parsed.success ? [] : parsed.error.issues.flatMap((i) => fromZodIssue(i, loc));
  const flagged = new Set(parsed.success ? [] : parsed.error.issues.map((i) => pathKey(i.path)));
  const semantic = semanticFindings(data)
    .filter((f) => !flagged.has(pathKey(f.path)))
    .map((f) => loc.issue(f.path, f.message));

  const issues = [...syntax.map((s) => s.issue), ...schemaIssues, ...semantic];
  if (!parsed.success || issues.length > 0) throw new PolicyLoadError(sortIssues(issues));

  const warnings = [...doc.warnings.map((w) => loc.yamlIssue(w, yamlMessage(w))), ...policyWarnings(parsed.data, loc)];
  return Object.freeze({ policy: deepFreeze(parsed.data), source, file, hash, warnings: sortIssues(warnings) });
}

/** Reads a policy file and parses it; an unreadable file is a PolicyLoadError at 1:1. */
export async function loadPolicyFile(file: string): Promise<LoadedPolicy> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (err) {
    throw unreadable(file, err);
  }
  return parsePolicy(decodeUtf8(bytes, file), file);
}

/** Synchronous loadPolicyFile, for the CLI's one-shot commands. */
export function loadPolicyFileSync(file: string): LoadedPolicy {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw unreadable(file, err);
  }
  return parsePolicy(decodeUtf8(bytes, file), file);
}

// ---------------------------------------------------------------------------------------------
// Files

const FS_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory',
};

/** A whole-file issue for a file that could not be read (the OS message would repeat the path). */
function unreadable(file: string, err: unknown): PolicyLoadError {
  const code = (err as NodeJS.ErrnoException | null)?.code ?? 'unknown error';
  const why = FS_ERRORS[code] ?? code;
  return new PolicyLoadError([{ file, line: 1, column: 1, path: '', message: `cannot read the policy file: ${why}` }]);
}

/** Strict UTF-8 decoding (a BOM is dropped): a mis-encoded file must not load with U+FFFD in host names. */
function decodeUtf8(bytes: Uint8Array, file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new PolicyLoadError([{ file, line: 1, column: 1, path: '', message: 'the policy file is not valid UTF-8' }]);
  }
}

// ---------------------------------------------------------------------------------------------
// Paths and positions

type PathKey = string | number;
type Path = readonly PathKey[];

/** A problem before it is positioned. */
interface Finding {
  readonly path: Path;
  readonly message: string;
}

const PLAIN_KEY = /^[A-Za-z_$][A-Za-z0-9_$-]*$/;
const MAX_QUOTE = 64;
// Aliases may reuse a list or two; a small cap stops "billion laughs" expansion.
const MAX_ALIAS_COUNT = 32;

/** "destinations.github.hosts[2]"; keys that are not plain words are bracket-quoted. */
function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (typeof seg === 'string' && PLAIN_KEY.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(String(seg))}]`;
  }
  return out;
}

/** A set key for a path. */
function pathKey(path: readonly PropertyKey[]): string {
  return JSON.stringify(path.map(String));
}

/** JSON-quotes user text for a message, cut short: messages quote the offending value and no more. */
function q(text: string): string {
  return JSON.stringify(text.length > MAX_QUOTE ? `${text.slice(0, MAX_QUOTE)}…` : text);
}

/** Text of a map key as the parsed data spells it (toJS turns every key into a string). */
function keyText(key: unknown): string {
  return isScalar(key) ? String(key.value) : String(key);
}

/** Start offset of a node, if it has one. */
function startOf(node: unknown): number | undefined {
  const range = (node as { range?: [number, number, number] } | null)?.range;
  return range?.[0];
}

/** Where a path ends up in the document: the deepest node reached and how many segments that took. */
interface Walk {
  readonly node: unknown;
  readonly key: unknown;
  readonly depth: number;
}

/** Maps data paths to document positions. */
class Locator {
  private readonly pairIndexes = new WeakMap<YAMLMap, Map<string, Pair>>();

  constructor(
    private readonly doc: Document,
    private readonly lineCounter: LineCounter,
    private readonly file: string,
  ) {}

  /** An issue at the value of `path` (or its key with atKey); a missing path points at its nearest parent. */
  issue(path: Path, message: string, atKey = false): PolicyIssue {
    const walk = this.walk(path);
    const complete = walk.depth === path.length;
    let offset = complete && atKey ? startOf(walk.key) : startOf(walk.node);
    // "key:" with nothing after it is an empty scalar just past the colon; the key reads better.
    if (complete && isScalar(walk.node) && walk.node.source === '' && walk.node.value === null) offset = startOf(walk.key);
    return this.at(offset ?? startOf(walk.key) ?? 0, formatPath(path), message);
  }

  /** An issue at a YAML error's own position. */
  yamlIssue(err: YAMLError, message: string, path: Path = []): PolicyIssue {
    return this.at(err.pos[0], formatPath(path), message);
  }

  /** True when the document has a node at exactly this path. */
  has(path: Path): boolean {
    return this.walk(path).depth === path.length;
  }

  /** Follows `path` through maps and sequences (and aliases), as far as the document goes. */
  walk(path: Path): Walk {
    let node: unknown = this.doc.contents;
    let key: unknown = null;
    let depth = 0;
    for (const seg of path) {
      if (isAlias(node)) node = node.resolve(this.doc) ?? node;
      if (isMap(node)) {
        const pair = this.pairIndex(node).get(String(seg));
        if (pair === undefined) break;
        key = pair.key;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number' && seg < node.items.length) {
        key = null;
        node = node.items[seg];
      } else {
        break;
      }
      depth++;
    }
    return { node, key, depth };
  }

  /**
   * Key → pair of one map, built once per map: a linear search per lookup would make positioning
   * quadratic on a policy with 100,000 destinations. With a duplicated key the last pair wins,
   * as in toJS, so positions match the values.
   */
  private pairIndex(map: YAMLMap): Map<string, Pair> {
    let index = this.pairIndexes.get(map);
    if (index === undefined) {
      index = new Map();
      for (const p of map.items) index.set(keyText(p.key), p as Pair);
      this.pairIndexes.set(map, index);
    }
    return index;
  }

  /** Every node of the document with its path, keys included (for errors found by offset). */
  *entries(node: unknown = this.doc.contents, path: Path = []): Generator<{ path: Path; node: unknown; key: unknown }> {
    if (isMap(node)) {
      for (const pair of node.items) {
        const child = [...path, keyText(pair.key)];
        yield { path: child, node: pair.value, key: pair.key };
        yield* this.entries(pair.value, child);
      }
    } else if (isSeq(node)) {
      for (const [i, item] of node.items.entries()) {
        yield { path: [...path, i], node: item, key: null };
        yield* this.entries(item, [...path, i]);
      }
    }
  }

  /** An issue at a source offset. */
  at(offset: number, path: string, message: string): PolicyIssue {
    const { line, col } = this.lineCounter.linePos(offset);
    return { file: this.file, line, column: col, path, message };
  }
}

/** Issues by position, then by message, so output is stable whatever order the passes ran in. */
function sortIssues(issues: readonly PolicyIssue[]): PolicyIssue[] {
  return [...issues].sort((a, b) => a.line - b.line || a.column - b.column || a.message.localeCompare(b.message));
}

/** Recursively freezes the validated policy: it is shared by every request until the next reload. */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Pass 1: YAML

/** A YAML-level issue, and whether the tree is too broken to validate further. */
interface SyntaxIssue {
  readonly issue: PolicyIssue;
  readonly fatal: boolean;
}

/** The error's own sentence, without the position and source excerpt prettyErrors appends. */
function yamlMessage(err: YAMLError): string {
  const first = err.message.split('\n', 1)[0] ?? '';
  return first.replace(/ at line \d+, column \d+:?$/, '');
}

/** Adds every repeated key of every map, at the repeat; not fatal (the tree is intact). */
function addDuplicateKeys(loc: Locator, node: unknown, path: Path, out: SyntaxIssue[]): void {
  if (isMap(node)) {
    const keys = new Set<string>();
    for (const pair of node.items) {
      const name = keyText(pair.key);
      const child = [...path, name];
      if (keys.has(name)) out.push({ issue: loc.at(startOf(pair.key) ?? 0, formatPath(child), `duplicate key ${q(name)}: keys must be unique`), fatal: false });
      keys.add(name);
      addDuplicateKeys(loc, pair.value, child, out);
    }
  } else if (isSeq(node)) {
    node.items.forEach((item, i) => addDuplicateKeys(loc, item, [...path, i], out));
  }
}

/** Every YAML error, duplicate keys, and aliases to missing anchors (which yaml reports only when converting). */
function yamlIssues(doc: Document, loc: Locator, source: string): SyntaxIssue[] {
  const out: SyntaxIssue[] = doc.errors.map((err) => ({ issue: loc.yamlIssue(err, yamlMessage(err)), fatal: true }));
  addDuplicateKeys(loc, doc.contents, [], out);
  const version = doc.directives?.yaml.version;
  if (version !== undefined && version !== '1.2') {
    // A %YAML 1.1 directive would turn yes/no/on/off into booleans and "<<" into merges.
    const message = 'only YAML 1.2 is supported; remove the %YAML directive';
    out.push({ issue: loc.at(Math.max(0, source.search(/^%YAML\b/m)), '', message), fatal: true });
  }
  for (const e of loc.entries()) {
    if (isAlias(e.node) && e.node.resolve(doc) === undefined) {
      out.push({ issue: loc.issue(e.path, unresolvedAliasMessage(e.node.source)), fatal: true });
    }
  }
  return out;
}

/** An alias with no anchor; usually an unquoted wildcard host, since "*" starts a YAML alias. */
function unresolvedAliasMessage(anchor: string): string {
  const written = `*${anchor}`;
  if (anchor.startsWith('.')) return `${q(written)} must be quoted: an unquoted "*" starts a YAML alias; write ${q(written)} in quotes`;
  return `YAML alias ${q(written)} refers to no anchor`;
}

/** The document as plain data; alias expansion is capped. */
function toData(doc: Document, loc: Locator): unknown {
  try {
    return doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    if (!(err instanceof ReferenceError)) throw err;
    const alias = [...loc.entries()].find((e) => isAlias(e.node));
    throw new PolicyLoadError([loc.issue(alias?.path ?? [], `too many YAML alias expansions (more than ${MAX_ALIAS_COUNT}); write the values out`)]);
  }
}

// ---------------------------------------------------------------------------------------------
// Pass 2: the zod schema

type ZodIssue = z.core.$ZodIssue;

/** One zod issue as positioned policy issues (an unknown-keys issue becomes one per key). */
function fromZodIssue(issue: ZodIssue, loc: Locator): PolicyIssue[] {
  const path = issue.path.map((seg) => (typeof seg === 'number' ? seg : String(seg)));
  switch (issue.code) {
    case 'unrecognized_keys':
      return issue.keys.map((key) => loc.issue([...path, key], unknownKeyMessage(key, path), true));
    case 'invalid_key':
      return [loc.issue(path, `invalid name ${q(String(path.at(-1)))}: ${issue.issues.map((i) => i.message).join('; ')}`, true)];
    default:
      if (path.length === 0 && issue.input == null) return [loc.issue(path, 'the policy is empty; it needs at least "version: 1"')];
      if (path.length > 0 && issue.input === undefined && !loc.has(path)) {
        // Point at the map that lacks the key; the key itself is not in the file to point at.
        return [loc.issue(path.slice(0, -1), `missing required key ${q(String(path.at(-1)))}`)];
      }
      return [loc.issue(path, zodMessage(issue, path))];
  }
}

/** The message for one zod issue, in the words of a YAML author. */
function zodMessage(issue: ZodIssue, path: Path): string {
  switch (issue.code) {
    case 'invalid_type':
      return typeMessage(issue.expected, issue.input);
    case 'invalid_value':
      return `expected ${alternatives(issue.values.map((v) => JSON.stringify(v)))}, got ${describeScalar(issue.input)}`;
    case 'too_small':
      return boundMessage('min', issue.origin, issue.minimum, issue.inclusive ?? true);
    case 'too_big':
      return boundMessage('max', issue.origin, issue.maximum, issue.inclusive ?? true);
    case 'invalid_union':
      return unionMessage(issue.errors, path);
    default:
      return issue.message;
  }
}

const TYPE_WORDS: Readonly<Record<string, string>> = {
  array: 'a list',
  object: 'a map',
  record: 'a map',
  string: 'a string',
  number: 'a number',
  int: 'an integer',
  boolean: 'true or false',
};

/** "expected a list, got a string", in the words a YAML author uses. */
function typeMessage(expected: string, input: unknown): string {
  const message = `expected ${TYPE_WORDS[expected] ?? expected}, got ${describeValue(input)}`;
  // `- [2001:db8::1]` is a one-element flow list in YAML, not a bracketed IPv6 literal.
  if (expected === 'string' && Array.isArray(input)) return `${message}; in YAML an unquoted [...] is a list, so quote the value`;
  return message;
}

/** "x", "x or y", "one of x, y or z". */
function alternatives(options: readonly string[]): string {
  if (options.length < 3) return options.join(' or ');
  return `one of ${options.slice(0, -1).join(', ')} or ${options.at(-1)}`;
}

/** A scalar quoted (short, it is what the author wrote); anything bigger described by kind. */
function describeScalar(v: unknown): string {
  if (typeof v === 'string') return q(v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return describeValue(v);
}

/** What kind of YAML value this is, never the value itself. */
function describeValue(v: unknown): string {
  if (v === null || v === undefined) return 'an empty value';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a map';
  if (typeof v === 'number') return Number.isInteger(v) ? 'an integer' : 'a number with a fraction';
  if (typeof v === 'boolean') return 'a boolean';
  return `a ${typeof v}`;
}

/** A bound on a list's length, a string's length or a number. */
function boundMessage(side: 'min' | 'max', origin: string, bound: number | bigint, inclusive: boolean): string {
  const sized = origin === 'array' || origin === 'set' || origin === 'string';
  if (sized && side === 'min' && bound === 1) return 'must not be empty';
  const unit = origin === 'string' ? ' characters' : sized ? ' entries' : '';
  const words = side === 'min' ? (inclusive ? 'at least' : 'greater than') : inclusive ? 'at most' : 'less than';
  return `must be ${words} ${bound}${unit}`;
}

/** A union that matched no branch: list what each branch would have taken. */
function unionMessage(branches: readonly (readonly ZodIssue[])[], path: Path): string {
  const values: string[] = [];
  const kinds = new Set<string>();
  for (const errors of branches) {
    const top = errors.find((e) => e.path.length === 0);
    if (top?.code === 'invalid_value') values.push(...top.values.map((v) => JSON.stringify(v)));
    else if (top?.code === 'invalid_type') kinds.add(TYPE_WORDS[top.expected] ?? top.expected);
    else kinds.add('a map');
  }
  const example = path.at(-1) === 'expect' ? ', e.g. allow or { deny: lockdown_method }' : '';
  return `expected ${alternatives([...values, ...kinds])}${example}`;
}

/** "unknown key", with the closest allowed key (or the allowed list) as a hint. */
function unknownKeyMessage(key: string, parent: Path): string {
  if (key === '<<') return 'YAML merge keys ("<<") are not supported; write the keys out';
  const allowed = schemaKeysAt(parent);
  const close = closest(key, allowed);
  if (close.length > 0) return `unknown key ${q(key)}; did you mean ${close.map((k) => q(k)).join(' or ')}?`;
  return allowed.length > 0 ? `unknown key ${q(key)}; allowed here: ${allowed.join(', ')}` : `unknown key ${q(key)}`;
}

/** The keys the schema allows at a data path (object shapes, through lists, maps and defaults). */
function schemaKeysAt(path: Path): string[] {
  let schemas: z.ZodType[] = [PolicySchema];
  for (const seg of path) schemas = schemas.flatMap((s) => childSchemas(unwrap(s), seg));
  return [...new Set(schemas.flatMap((s) => objectKeys(unwrap(s))))];
}

/** Strips default/prefault/optional wrappers. */
function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodDefault || s instanceof z.ZodPrefault || s instanceof z.ZodOptional) s = s.unwrap() as z.ZodType;
  return s;
}

/** The schemas one path segment below `schema`. */
function childSchemas(schema: z.ZodType, seg: PathKey): z.ZodType[] {
  if (schema instanceof z.ZodObject) {
    const child = (schema.shape as Record<string, z.ZodType>)[String(seg)];
    return child ? [child] : [];
  }
  if (schema instanceof z.ZodArray) return [schema.element as z.ZodType];
  if (schema instanceof z.ZodRecord) return [schema.valueType as z.ZodType];
  if (schema instanceof z.ZodUnion) return (schema.options as z.ZodType[]).flatMap((o) => childSchemas(unwrap(o), seg));
  return [];
}

/** Keys of an object schema, or of every object branch of a union. */
function objectKeys(schema: z.ZodType): string[] {
  if (schema instanceof z.ZodObject) return Object.keys(schema.shape as object);
  if (schema instanceof z.ZodUnion) return (schema.options as z.ZodType[]).flatMap((o) => objectKeys(unwrap(o)));
  return [];
}

// ---------------------------------------------------------------------------------------------
// Pass 3: semantic checks, on the raw data so they run even where the schema failed elsewhere

/** Report mode may name the allowlist ground enforce would deny on (SPEC §4) instead of report_would_deny. */
const REPORTABLE: ReadonlySet<string> = new Set(['not_allowlisted', 'port_not_allowed', 'method_not_allowed', 'path_not_allowed']);
const DENY_REASONS: readonly Reason[] = REASON_CODES.filter((r) => REASONS[r].kind === 'deny');
const REQUEST = /^([A-Z][A-Z0-9-]*) (\S+)$/;

/** Every semantic problem; a finding at a path the schema already flagged is dropped by the caller. */
function semanticFindings(data: unknown): Finding[] {
  return [...hostFindings(data), ...cidrFindings(data), ...accountFindings(data), ...testFindings(data)];
}

/** A plain object (a YAML map). */
function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Entries of a map, or none. */
function entriesOf(v: unknown): [string, unknown][] {
  return isRecord(v) ? Object.entries(v) : [];
}

/** Indexed string items of a list, or none. */
function stringsOf(v: unknown): [number, string][] {
  if (!Array.isArray(v)) return [];
  return v.flatMap((item, i): [number, string][] => (typeof item === 'string' ? [[i, item]] : []));
}

/** Host pattern grammar and duplicates, for each destination and for deny.hosts. */
function hostFindings(data: unknown): Finding[] {
  const root = isRecord(data) ? data : {};
  const lists: [Path, unknown][] = entriesOf(root['destinations']).map(([name, d]) => [['destinations', name, 'hosts'], isRecord(d) ? d['hosts'] : undefined]);
  lists.push([['deny', 'hosts'], isRecord(root['deny']) ? root['deny']['hosts'] : undefined]);
  return lists.flatMap(([path, hosts]) => hostListFindings(path, hosts));
}

/** One hosts list: each entry parses, and none repeats an earlier one. */
function hostListFindings(path: Path, hosts: unknown): Finding[] {
  const out: Finding[] = [];
  const seen = new Map<string, number>();
  for (const [i, raw] of stringsOf(hosts)) {
    if (raw === '') continue; // the schema reports empty strings
    const parsed = parseHostPattern(raw);
    if ('error' in parsed) {
      out.push({ path: [...path, i], message: parsed.error });
      continue;
    }
    const key = formatHostPattern(parsed);
    const first = seen.get(key);
    if (first === undefined) seen.set(key, i);
    else out.push({ path: [...path, i], message: `duplicate host ${q(key)} (already listed at ${formatPath([...path, first])})` });
  }
  return out;
}

/** network.allowPrivate and each destination's allowPrivate parse as CIDRs. */
function cidrFindings(data: unknown): Finding[] {
  const root = isRecord(data) ? data : {};
  const lists: [Path, unknown][] = entriesOf(root['destinations']).map(([name, d]) => [['destinations', name, 'allowPrivate'], isRecord(d) ? d['allowPrivate'] : undefined]);
  lists.push([['network', 'allowPrivate'], isRecord(root['network']) ? root['network']['allowPrivate'] : undefined]);
  return lists.flatMap(([path, cidrs]) =>
    stringsOf(cidrs).flatMap(([i, cidr]): Finding[] => {
      try {
        parseCidr(cidr);
        return [];
      } catch (err) {
        if (!(err instanceof CidrError)) throw err;
        return [{ path: [...path, i], message: err.message }];
      }
    }),
  );
}

/** Each account rule allows only destinations that exist. */
function accountFindings(data: unknown): Finding[] {
  const root = isRecord(data) ? data : {};
  // A malformed destinations section is the schema's to report; every name would look unknown.
  if (root['destinations'] !== undefined && !isRecord(root['destinations'])) return [];
  const names = Object.keys(root['destinations'] ?? {});
  const known = new Set(names);
  const rules = Array.isArray(root['accounts']) ? root['accounts'] : [];
  return rules.flatMap((rule, i) =>
    stringsOf(isRecord(rule) ? rule['allow'] : undefined)
      .filter(([, name]) => !known.has(name))
      .map(([j, name]): Finding => ({ path: ['accounts', i, 'allow', j], message: unknownDestinationMessage(name, names) })),
  );
}

/** "no destination named …", with the closest names as a hint. */
function unknownDestinationMessage(name: string, names: readonly string[]): string {
  const base = `no destination named ${q(name)}`;
  if (names.length === 0) return `${base}; destinations: is empty`;
  const close = closest(name, names);
  if (close.length > 0) return `${base}; did you mean ${close.map((n) => q(n)).join(' or ')}?`;
  return `${base}; defined: ${names.slice(0, 10).join(', ')}${names.length > 10 ? ', …' : ''}`;
}

/** Each test row: its expected reason fits its verdict, and its request parses. */
function testFindings(data: unknown): Finding[] {
  const root = isRecord(data) ? data : {};
  const rows = Array.isArray(root['tests']) ? root['tests'] : [];
  return rows.flatMap((row, i): Finding[] => {
    if (!isRecord(row)) return [];
    const out: Finding[] = [];
    const expected = expectedReason(row['expect']);
    const reasonProblem = expected && expectReasonProblem(expected.verdict, expected.reason);
    if (expected && reasonProblem) out.push({ path: ['tests', i, 'expect', expected.verdict], message: reasonProblem });
    // A row may test that a malformed request is refused; only then may it fail to parse.
    const refusalExpected = expected?.verdict === 'deny' && expected.reason === 'bad_request';
    const requestText = row['request'];
    const requestIssue = typeof requestText === 'string' && !refusalExpected ? requestProblem(requestText) : null;
    if (requestIssue) out.push({ path: ['tests', i, 'request'], message: requestIssue });
    return out;
  });
}

/** The `{ verdict: reason }` form of a test's expect, or null for the bare-verdict and malformed forms. */
function expectedReason(expect: unknown): { verdict: string; reason: string } | null {
  const entries = Object.entries(isRecord(expect) ? expect : {});
  const [verdict, reason] = entries[0] ?? [];
  return entries.length === 1 && typeof verdict === 'string' && typeof reason === 'string' ? { verdict, reason } : null;
}

/** Why a reason cannot appear under this verdict, or null when it can. */
function expectReasonProblem(verdict: string, reason: string): string | null {
  if (verdict === 'allow') return reason === 'allowlisted' ? null : `an allow is always "allowlisted"; write expect: allow`;
  if (verdict === 'report') {
    if (reason === 'report_would_deny' || REPORTABLE.has(reason)) return null;
    return `a report is "report_would_deny" or the allowlist reason enforce would deny with: ${[...REPORTABLE].join(', ')}`;
  }
  if (verdict !== 'deny') return null; // the schema reports other keys
  if (isReason(reason) && REASONS[reason].kind === 'deny') return null;
  if (isReason(reason)) return `${q(reason)} is an ${REASONS[reason].kind} reason, not a deny reason`;
  const close = closest(reason, DENY_REASONS);
  return `unknown reason ${q(reason)}${close.length > 0 ? `; did you mean ${close.map((r) => q(r)).join(' or ')}?` : ''}`;
}

/** Why a test's "METHOD URL" cannot be evaluated, or null (the schema checks the overall shape). */
function requestProblem(request: string): string | null {
  const m = REQUEST.exec(request);
  if (m === null) return null;
  const [, method, target] = m as unknown as [string, string, string];
  try {
    if (method === 'CONNECT') parseAuthority(target);
    else parseAbsoluteUrl(target);
    return null;
  } catch (err) {
    if (!(err instanceof CanonicalError)) throw err;
    const what = method === 'CONNECT' ? 'CONNECT authority ("host:port")' : 'URL';
    return `request ${what} does not parse: ${err.detail}; to test that the proxy refuses it, expect { deny: bad_request }`;
  }
}

// ---------------------------------------------------------------------------------------------
// Warnings

/** Things that load but are probably not what the author meant. */
function policyWarnings(policy: Policy, loc: Locator): PolicyIssue[] {
  const allowed = new Set(policy.accounts.flatMap((a) => a.allow));
  const out: PolicyIssue[] = [];
  for (const [name, d] of Object.entries(policy.destinations)) {
    const path = ['destinations', name];
    if ((d.methods || d.paths) && !d.inspect && d.schemes.includes('https')) {
      // SPEC §1 "Rules need visibility": an opaque tunnel cannot enforce methods or paths.
      const rule = d.methods ? 'methods' : 'paths';
      out.push(loc.issue([...path, rule], 'reachable over HTTPS only through a tunnel, which is denied inspection_required; set inspect: true or drop the rules', true));
    }
    if (!allowed.has(name)) {
      out.push(loc.issue(path, 'not allowed for any account: no accounts[].allow lists it; add it to one or remove it', true));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Hints

/** The candidates nearest to `word` (at most three), if any is within a small edit distance. */
function closest(word: string, candidates: readonly string[]): string[] {
  const limit = Math.max(1, Math.floor(word.length / 3));
  const scored = candidates.map((c) => ({ c, d: editDistance(word.toLowerCase(), c.toLowerCase()) }));
  const best = Math.min(limit, ...scored.map(({ d }) => d));
  return scored
    .filter(({ d }) => d === best)
    .slice(0, 3)
    .map(({ c }) => c);
}

/** Levenshtein distance, one row at a time. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      row.push(Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = row;
  }
  return prev[b.length] ?? 0;
}
