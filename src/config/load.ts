/**
 * Loads `portcullis serve` settings from flags, `PORTCULLIS_*` environment variables and an
 * optional YAML file (`--config FILE`, camelCase keys), in that order of precedence over the
 * defaults, validates them once with ServerConfigSchema and returns a deep-frozen ServerConfig.
 *
 * Every problem is a ConfigError with one line naming where the value came from:
 *   --listen: expected HOST:PORT, got "abc"
 *   PORTCULLIS_FAIL_MODE: expected closed|lockdown, got "open"
 *   config.yaml:3:5: failMode: expected closed|lockdown, got "open"
 * Relative paths are relative to the working directory, wherever they were written. An empty
 * environment variable counts as unset; so does a YAML key whose value is null (`geoip:`).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isMap, isNode, isScalar, LineCounter, parseDocument } from 'yaml';
import type { z } from 'zod';
import {
  envVarName,
  FLAGS,
  requiresMessage,
  ServerConfigSchema,
  SETTING_KEYS,
  type RequiresParams,
  type ServerConfig,
  type SettingKey,
} from './schema.js';

export { describeFlags, FLAG_NAMES, parseDuration, ServerConfigSchema, type ServerConfig } from './schema.js';

/** A configuration problem, as one line; the CLI prints the message and exits 2. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code = 'ERR_PORTCULLIS_CONFIG' as const;
}

/** Where a value came from; decides how a message spells the setting. */
type Origin = 'flag' | 'env' | 'file';

/** One value the user gave, with the prefix its messages start with. */
interface Given {
  readonly value: unknown;
  readonly origin: Origin;
  /** "--listen", "PORTCULLIS_LISTEN" or "config.yaml:3:5: listen". */
  readonly label: string;
}

const FLAG_BY_NAME = new Map(FLAGS.map((f) => [f.name, f]));
const FLAG_BY_KEY = new Map(FLAGS.map((f) => [f.key, f]));
const KEY_SET: ReadonlySet<string> = new Set(SETTING_KEYS);
// YAML aliases may reuse a value or two; a small cap stops "billion laughs" expansion.
const MAX_ALIAS_COUNT = 16;

/** Reads a file as UTF-8 text (the default for loadConfig's readFile). */
function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

/**
 * Validated, defaulted, deep-frozen settings from `argv` (the words after `serve`), `env` and
 * the file named by --config / PORTCULLIS_CONFIG. Precedence: flags > env > file > defaults.
 * Throws ConfigError (one line) for unknown flags or keys, bad values and missing partners.
 */
export function loadConfig(
  argv: readonly string[],
  env: NodeJS.ProcessEnv,
  readFile: (path: string) => string = readText,
): ServerConfig {
  const flags = fromFlags(argv);
  const configFile = flags.get('config') ?? fromEnv(env, 'config');
  const file = configFile === undefined ? new Map<string, Given>() : fromFile(configFile, readFile);

  const raw: Record<string, unknown> = {};
  const given = new Map<SettingKey, Given>();
  for (const key of SETTING_KEYS) {
    const name = (FLAG_BY_KEY.get(key) as { name: string }).name;
    const value = flags.get(name) ?? fromEnv(env, name) ?? file.get(key);
    if (value === undefined) continue;
    raw[key] = value.value;
    given.set(key, value);
  }

  const parsed = ServerConfigSchema.safeParse(raw);
  if (parsed.success) return parsed.data;
  throw toConfigError(parsed.error.issues, given);
}

/** The first issue as one line, prefixed with where the offending value came from. */
function toConfigError(issues: readonly z.core.$ZodIssue[], given: ReadonlyMap<SettingKey, Given>): ConfigError {
  const issue = issues[0];
  if (issue === undefined) return new ConfigError('invalid configuration');
  const key = issue.path[0];
  const source = typeof key === 'string' ? given.get(key as SettingKey) : undefined;
  const label = source?.label ?? (typeof key === 'string' ? key : 'configuration');
  const requires = issue.code === 'custom' ? (issue.params as Partial<RequiresParams> | undefined)?.requires : undefined;
  const message = requires === undefined ? issue.message : requiresMessage(requires.map((k) => spell(k, source?.origin ?? 'file')));
  return new ConfigError(`${label}: ${message}`);
}

/** A setting's name as the user would write it in the same kind of source. */
function spell(key: SettingKey, origin: Origin): string {
  const name = (FLAG_BY_KEY.get(key) as { name: string }).name;
  if (origin === 'flag') return `--${name}`;
  if (origin === 'env') return envVarName(name);
  return key;
}

// ---------------------------------------------------------------------------------------------
// Flags

/** Flag values by kebab name (`config` included). Unknown, repeated and value-less flags are errors. */
function fromFlags(argv: readonly string[]): Map<string, Given> {
  const options: Record<string, { type: 'string' | 'boolean' }> = { config: { type: 'string' } };
  for (const f of FLAGS) options[f.name] = { type: f.arg === null ? 'boolean' : 'string' };
  // Non-strict with tokens: we word every error ourselves, one line, in the "--flag: ..." form.
  const { tokens } = parseArgs({ args: [...argv], options, strict: false, allowPositionals: true, tokens: true });

  const out = new Map<string, Given>();
  for (const token of tokens) {
    if (token.kind === 'option-terminator') continue;
    if (token.kind === 'positional') throw new ConfigError(`unexpected argument ${JSON.stringify(token.value)}: settings are given as --name VALUE`);
    const negated = token.name.startsWith('no-') ? FLAG_BY_NAME.get(token.name.slice(3)) : undefined;
    const spec = token.name === 'config' ? { arg: 'FILE' } : FLAG_BY_NAME.get(token.name);
    const label = token.rawName;
    let name = token.name;
    let value: unknown;
    if (negated !== undefined && negated.arg === null && token.value === undefined) {
      name = negated.name;
      value = false;
    } else if (spec === undefined || token.rawName.length === 2) {
      throw new ConfigError(`${label}: unknown flag (${suggestFlag(token.name)})`);
    } else if (spec.arg === null) {
      // Booleans: "--metrics-auth" or "--metrics-auth=false"; the schema checks the word.
      value = token.value ?? true;
    } else {
      // A value that is the next flag means the real value was forgotten ("--listen --policy x").
      if (token.value === undefined || (!token.inlineValue && token.value.startsWith('--'))) {
        throw new ConfigError(`${label}: expected a value (${label} ${spec.arg})`);
      }
      value = token.value;
    }
    if (out.has(name)) throw new ConfigError(`--${name}: given more than once`);
    out.set(name, { value, origin: 'flag', label: `--${name}` });
  }
  return out;
}

/** "did you mean --listen?" for a near miss (edit distance at most 2), else where the list is. */
function suggestFlag(name: string): string {
  let best: string | undefined;
  let bestDistance = 3;
  for (const candidate of ['config', ...FLAG_BY_NAME.keys()]) {
    const d = editDistance(name, candidate);
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best === undefined ? 'portcullis serve --help lists them' : `did you mean --${best}?`;
}

/** Levenshtein distance; flag names are short, so the quadratic table is fine. */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_v, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, (previous[j - 1] as number) + cost);
    }
    previous = current;
  }
  return previous[b.length] as number;
}

// ---------------------------------------------------------------------------------------------
// Environment

/** PORTCULLIS_<FLAG>, if set and not empty. */
function fromEnv(env: NodeJS.ProcessEnv, name: string): Given | undefined {
  const variable = envVarName(name);
  const value = env[variable];
  return value === undefined || value === '' ? undefined : { value, origin: 'env', label: variable };
}

// ---------------------------------------------------------------------------------------------
// Config file

const FS_ERRORS: Readonly<Record<string, string>> = {
  ENOENT: 'no such file',
  EACCES: 'permission denied',
  EISDIR: 'it is a directory',
};

/** Settings from the YAML file, each labelled "file:line:col: key" at its value. */
function fromFile(config: Given, readFile: (path: string) => string): Map<string, Given> {
  const path = String(config.value);
  let source: string;
  try {
    source = readFile(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException | null)?.code ?? 'unknown error';
    throw new ConfigError(`${config.label}: cannot read ${JSON.stringify(path)}: ${FS_ERRORS[code] ?? code}`);
  }

  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined): string => {
    const { line, col } = lineCounter.linePos(offset ?? 0);
    return `${path}:${line}:${col}`;
  };
  const syntax = doc.errors[0];
  if (syntax !== undefined) throw new ConfigError(`${at(syntax.pos[0])}: ${syntax.message.split('\n')[0]}`);

  const out = new Map<string, Given>();
  if (doc.contents === null) return out;
  if (!isMap(doc.contents)) {
    throw new ConfigError(`${at(doc.contents.range?.[0])}: expected a mapping of settings (camelCase keys, e.g. adminListen: 127.0.0.1:9090)`);
  }
  for (const pair of doc.contents.items) {
    const keyNode = pair.key;
    const key = isScalar(keyNode) ? String(keyNode.value) : '';
    const keyAt = at(isNode(keyNode) ? keyNode.range?.[0] : undefined);
    if (!KEY_SET.has(key)) throw new ConfigError(`${keyAt}: ${unknownKeyMessage(key)}`);
    const valueNode = pair.value;
    const value: unknown = isNode(valueNode) ? valueNode.toJS(doc, { maxAliasCount: MAX_ALIAS_COUNT }) : valueNode;
    if (value === null || value === undefined) continue;
    const valueAt = isNode(valueNode) ? at(valueNode.range?.[0]) : keyAt;
    out.set(key, { value, origin: 'file', label: `${valueAt}: ${key}` });
  }
  return out;
}

/** Unknown file key; keys are camelCase only, so a kebab or snake spelling gets pointed at its camelCase form. */
function unknownKeyMessage(key: string): string {
  const camel = key.toLowerCase().replace(/[-_]+([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
  const hint = KEY_SET.has(camel) ? `did you mean ${camel}?` : 'see portcullis serve --help';
  return `unknown setting ${JSON.stringify(key)} (keys are camelCase, e.g. adminListen; ${hint})`;
}
