/**
 * Readers for the deployment files (Dockerfile, .dockerignore, compose and Kubernetes YAML,
 * PromQL in alert rules and dashboards) and a guard for external tools, shared by the
 * test/deploy suites. Nothing here touches the network.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

/** The repository root. */
export const ROOT = path.resolve(import.meta.dirname, '../..');

/** A repository file as text. */
export function readRepo(rel: string): string {
  return readFileSync(path.join(ROOT, rel), 'utf8');
}

/** Every document of a YAML file; throws naming the file on any syntax error or duplicate key. */
export function readYamlDocs(rel: string): unknown[] {
  const docs = parseAllDocuments(readRepo(rel), { uniqueKeys: true, prettyErrors: true });
  if (!Array.isArray(docs)) throw new Error(`${rel}: not a YAML stream`);
  const out: unknown[] = [];
  for (const doc of docs) {
    const problem = doc.errors[0] ?? doc.warnings[0];
    if (problem !== undefined) throw new Error(`${rel}: ${problem.message}`);
    const value: unknown = doc.toJS({ maxAliasCount: 16 });
    if (value !== null && value !== undefined) out.push(value);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// External tools

/** Whether a tool runs here; with CI=true a missing tool is the test's failure, else a skip. */
export interface Tool {
  readonly available: boolean;
  /** Why the tests that need it are skipped (only meaningful when not available). */
  readonly reason: string;
  /** CI=true: missing tools fail instead of skipping. */
  readonly required: boolean;
}

/** Probes `name --version` (or the given args); installs nothing. */
export function tool(name: string, debianPackage: string, args: readonly string[] = ['--version']): Tool {
  const probe = spawnSync(name, [...args], { encoding: 'utf8' });
  const available = probe.error === undefined && probe.status === 0;
  const reason = `${name} is not on PATH (Debian package "${debianPackage}"; .ci/run installs it); CI is not "true"`;
  const required = process.env['CI'] === 'true';
  if (!available) process.stderr.write(`[deploy] ${required ? `CI=true: tests that need ${name} will fail` : `skipping tests that need ${name}: ${reason}`}\n`);
  return { available, reason, required };
}

// ---------------------------------------------------------------------------------------------
// Dockerfile

/** One COPY of a stage: `from` is the source stage, or null for the build context. */
export interface CopyInstruction {
  readonly from: string | null;
  readonly sources: readonly string[];
  /** Absolute destination in the image. */
  readonly dest: string;
  /** The destination is a directory (ends in "/" or has several sources). */
  readonly intoDir: boolean;
}

/** What a stage of the Dockerfile declares. */
export interface ImageStage {
  readonly name: string;
  readonly base: string;
  readonly env: Readonly<Record<string, string>>;
  readonly user: string | null;
  readonly workdir: string;
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  readonly healthcheck: readonly string[];
  readonly expose: readonly string[];
  readonly volumes: readonly string[];
  readonly copies: readonly CopyInstruction[];
}

/** Instructions with continuation lines joined and comments dropped. */
function dockerInstructions(text: string): Array<{ op: string; args: string }> {
  const out: Array<{ op: string; args: string }> = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (pending === '' && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (line.trimStart().startsWith('#')) continue;
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    const m = /^([A-Za-z]+)\s+(.*)$/s.exec(full);
    if (m) out.push({ op: (m[1] as string).toUpperCase(), args: (m[2] as string).trim() });
  }
  return out;
}

/** A JSON-array (exec form) instruction argument. */
function execForm(args: string, what: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`${what} must be exec form: ${args}`);
  return parsed as string[];
}

/** Every stage of the Dockerfile, in order. */
export function parseDockerfile(text: string = readRepo('Dockerfile')): ImageStage[] {
  const stages: ImageStage[] = [];
  let s: { -readonly [K in keyof ImageStage]: ImageStage[K] } | null = null;
  for (const { op, args } of dockerInstructions(text)) {
    if (op === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      if (!m) throw new Error(`FROM ${args}`);
      s = { name: m[2] ?? String(stages.length), base: m[1] as string, env: {}, user: null, workdir: '/', entrypoint: [], cmd: [], healthcheck: [], expose: [], volumes: [], copies: [] };
      stages.push(s);
      continue;
    }
    if (s === null) continue;
    const words = args.split(/\s+/);
    switch (op) {
      case 'ENV':
        for (const pair of words) {
          const eq = pair.indexOf('=');
          if (eq > 0) s.env = { ...s.env, [pair.slice(0, eq)]: pair.slice(eq + 1) };
        }
        break;
      case 'USER':
        s.user = args;
        break;
      case 'WORKDIR':
        s.workdir = path.posix.resolve(s.workdir, args);
        break;
      case 'ENTRYPOINT':
        s.entrypoint = execForm(args, 'ENTRYPOINT');
        break;
      case 'CMD':
        s.cmd = execForm(args, 'CMD');
        break;
      case 'HEALTHCHECK': {
        const cmd = /\bCMD\s+(\[.*\])$/.exec(args);
        s.healthcheck = cmd ? execForm(cmd[1] as string, 'HEALTHCHECK CMD') : [];
        break;
      }
      case 'EXPOSE':
        s.expose = [...s.expose, ...words];
        break;
      case 'VOLUME':
        s.volumes = [...s.volumes, ...(args.startsWith('[') ? execForm(args, 'VOLUME') : words)];
        break;
      case 'COPY': {
        const flags = words.filter((w) => w.startsWith('--'));
        const rest = words.filter((w) => !w.startsWith('--'));
        const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length) ?? null;
        const dest = rest.at(-1) as string;
        const sources = rest.slice(0, -1);
        s.copies = [
          ...s.copies,
          { from, sources, dest: path.posix.resolve(s.workdir, dest), intoDir: dest.endsWith('/') || sources.length > 1 },
        ];
        break;
      }
      default:
        break;
    }
  }
  return stages;
}

/** One stage by name. */
export function stage(name: string, stages: readonly ImageStage[] = parseDockerfile()): ImageStage {
  const found = stages.find((x) => x.name === name);
  if (!found) throw new Error(`Dockerfile has no stage ${name}`);
  return found;
}

/** The runtime image: the last stage. */
export function runtimeStage(stages: readonly ImageStage[] = parseDockerfile()): ImageStage {
  return stages.at(-1) as ImageStage;
}

const PACKAGE = JSON.parse(readRepo('package.json')) as { version: string; dependencies: Record<string, string> };

/** The package version (image tags in the manifests follow it). */
export const PACKAGE_VERSION = PACKAGE.version;

/**
 * Where an absolute image path comes from, or null if the image has no such file: a repository
 * file (COPY from the context), a file built from src/ (dist), a production dependency, or an
 * image VOLUME (written at run time).
 */
export function imageSource(image: ImageStage, file: string): string | null {
  for (const volume of image.volumes) if (file === volume || file.startsWith(`${volume}/`)) return `volume ${volume}`;
  for (const copy of [...image.copies].reverse()) {
    for (const src of copy.sources) {
      const target = copy.intoDir ? path.posix.join(copy.dest, path.posix.basename(src)) : copy.dest;
      if (file !== target && !file.startsWith(`${target}/`)) continue;
      const rest = file.slice(target.length).replace(/^\//, '');
      if (copy.from === null) {
        const rel = path.posix.join(src, rest);
        return existsSync(path.join(ROOT, rel)) ? `repo ${rel}` : null;
      }
      if (copy.from === 'build' && src === '/src/dist') {
        const ts = rest.replace(/\.js$/, '.ts');
        return existsSync(path.join(ROOT, 'src', ts)) ? `built from src/${ts}` : null;
      }
      if (copy.from === 'deps' && src === '/app/node_modules') {
        const pkg = rest.startsWith('@') ? rest.split('/').slice(0, 2).join('/') : (rest.split('/')[0] ?? '');
        return pkg in PACKAGE.dependencies ? `dependency ${pkg}` : null;
      }
      return null;
    }
  }
  return null;
}

/** Whether .dockerignore keeps a context path out of the build (last matching rule wins). */
export function dockerIgnored(rel: string, ignoreText: string = readRepo('.dockerignore')): boolean {
  let ignored = false;
  for (const raw of ignoreText.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const negate = line.startsWith('!');
    const pattern = (negate ? line.slice(1) : line).replace(/^\/+/, '').replace(/\/+$/, '');
    const source = pattern
      .split('**')
      .map((part) => part.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('[^/]*'))
      .join('.*');
    // A pattern matches the path itself or any directory above it.
    if (new RegExp(`^${source}(?:/.*)?$`).test(rel)) ignored = !negate;
  }
  return ignored;
}

// ---------------------------------------------------------------------------------------------
// PromQL and the exposition format

const PROMQL_WORDS = new Set([
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset',
  'sum', 'min', 'max', 'avg', 'count', 'stddev', 'stdvar', 'topk', 'bottomk', 'quantile', 'count_values', 'group',
  'inf', 'nan', 'atan2',
]);

/** Metric names a PromQL expression selects (functions, keywords and label names excluded). */
export function promqlMetricNames(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // string literals
    .replace(/\{[^}]*\}/g, ' ') // label matchers
    .replace(/\[[^\]]*\]/g, ' ') // ranges and subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' '); // grouping labels
  const names = new Set<string>();
  for (const m of stripped.matchAll(/(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (call !== undefined || PROMQL_WORDS.has((name as string).toLowerCase())) continue;
    names.add(name as string);
  }
  return [...names];
}

/** Sample names in a Prometheus text exposition (histogram _bucket/_sum/_count included). */
export function exposedSamples(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
    if (m) names.add(m[1] as string);
  }
  return names;
}

/** Every `expr` of a Grafana dashboard's panels (rows' nested panels included). */
export function dashboardExprs(dashboard: unknown): Array<{ panel: string; expr: string }> {
  const out: Array<{ panel: string; expr: string }> = [];
  const visit = (panels: unknown): void => {
    if (!Array.isArray(panels)) return;
    for (const p of panels as Array<{ title?: string; targets?: Array<{ expr?: string }>; panels?: unknown }>) {
      for (const t of p.targets ?? []) if (typeof t.expr === 'string') out.push({ panel: p.title ?? '?', expr: t.expr });
      visit(p.panels);
    }
  };
  visit((dashboard as { panels?: unknown }).panels);
  return out;
}

/** Grafana's template variables replaced by values PromQL accepts, for syntax checks. */
export function concreteExpr(expr: string): string {
  return expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replace(/\$\{?\w+\}?/g, '.*');
}
