/**
 * The Dockerfile, compose file and Kubernetes manifests are read as data and checked against the
 * code: every `portcullis serve` invocation goes through the real loadConfig() (so every flag and
 * PORTCULLIS_* variable is a real one, with a valid value), every path it names exists in the
 * repository, the image, or a mounted ConfigMap/Secret key (or lies on a writable volume when
 * the server creates it), the policies and token files in ConfigMaps and Secrets load, and the
 * properties that make the proxy the only way out hold (agent NetworkPolicy, sidecar UIDs,
 * loopback-only proxy, admin socket and Secrets out of the agent's reach).
 */
import { readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { parseAdminTokensDocument } from '../../src/admin/tokens.js';
import { main } from '../../src/commands/main.js';
import { FLAG_NAMES, loadConfig, type ServerConfig } from '../../src/config/load.js';
import { envVarName } from '../../src/config/schema.js';
import { compilePolicy } from '../../src/policy/compile.js';
import { parsePolicy } from '../../src/policy/load.js';
import { runPolicyTests } from '../../src/policy/policy-tests.js';
import { startHarness, type Harness } from '../helpers/harness.js';
import {
  dockerIgnored,
  imageSource,
  PACKAGE_VERSION,
  parseDockerfile,
  readRepo,
  readYamlDocs,
  ROOT,
  runtimeStage,
  stage,
  type ImageStage,
} from './deploy-files.js';

// ---------------------------------------------------------------------------------------------
// Shapes (only what the checks read)

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: { name: string; key: string } };
}
interface Mount {
  name: string;
  mountPath: string;
  readOnly?: boolean;
}
interface Probe {
  exec?: { command: string[] };
  httpGet?: { path: string; port: string | number };
}
interface SecurityContext {
  runAsUser?: number;
  runAsNonRoot?: boolean;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  volumeMounts?: Mount[];
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { limits?: { cpu?: string; memory?: string }; requests?: { cpu?: string; memory?: string } };
  securityContext?: SecurityContext;
  restartPolicy?: string;
}
interface Volume {
  name: string;
  configMap?: { name: string };
  secret?: { secretName: string; defaultMode?: number };
  emptyDir?: object;
  persistentVolumeClaim?: object;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  automountServiceAccountToken?: boolean;
  shareProcessNamespace?: boolean;
  dnsPolicy?: string;
  securityContext?: SecurityContext & { fsGroup?: number };
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}
interface Workload extends K8sObject {
  spec: { replicas?: number; template: { metadata: { labels: Record<string, string> }; spec: PodSpec } };
}

// ---------------------------------------------------------------------------------------------
// Loading

const stages = parseDockerfile();
const runtime = runtimeStage(stages);
const initImage = stage('iptables-init', stages);
const PORTCULLIS_IMAGE = `portcullis:${PACKAGE_VERSION}`;
const INIT_IMAGE = `portcullis-iptables-init:${PACKAGE_VERSION}`;
const FLAG_ENV = new Set(FLAG_NAMES.map(envVarName));
// Read by the admin CLI (`portcullis sessions ...`), not by serve.
const CLIENT_ENV = new Set(['PORTCULLIS_ADMIN_URL', 'PORTCULLIS_ADMIN_TOKEN']);

/** Every Kubernetes object in a directory of docker/k8s. */
function loadK8s(dir: string): K8sObject[] {
  const rel = `docker/k8s/${dir}`;
  return readdirSync(path.join(ROOT, rel))
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .flatMap((f) => readYamlDocs(`${rel}/${f}`) as K8sObject[]);
}
const egressTier = loadK8s('egress-tier');
const sidecar = loadK8s('sidecar');
const allK8s = [...egressTier, ...sidecar];

function find<T extends K8sObject = K8sObject>(objects: readonly K8sObject[], kind: string, name: string): T {
  const o = objects.find((x) => x.kind === kind && x.metadata.name === name);
  if (o === undefined) throw new Error(`no ${kind} ${name}`);
  return o as T;
}
const workloads = (objects: readonly K8sObject[]): Workload[] => objects.filter((o) => o.kind === 'Deployment' || o.kind === 'StatefulSet') as Workload[];

/** A Secret or ConfigMap value by key (stringData, or base64 data). */
function keyOf(kind: 'Secret' | 'ConfigMap', namespace: string, name: string, key: string): string | undefined {
  const o = allK8s.find((x) => x.kind === kind && x.metadata.name === name && (x.metadata.namespace ?? 'default') === namespace);
  if (o === undefined) return undefined;
  if (o.stringData?.[key] !== undefined) return o.stringData[key];
  const data = o.data?.[key];
  if (data === undefined) return undefined;
  return kind === 'Secret' ? Buffer.from(data, 'base64').toString('utf8') : data;
}

/** The environment a container sees: the image's ENV, then its own (valueFrom resolved). */
function containerEnv(c: Container, namespace: string, image: ImageStage | null): Record<string, string> {
  const env: Record<string, string> = { ...(image?.env ?? {}) };
  for (const e of c.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
    const value = ref ? keyOf(e.valueFrom?.secretKeyRef ? 'Secret' : 'ConfigMap', namespace, ref.name, ref.key) : e.value;
    if (value === undefined) throw new Error(`${c.name}: env ${e.name} refers to a missing key`);
    env[e.name] = value;
  }
  return env;
}

/** What runs: Kubernetes command/args over the image's ENTRYPOINT/CMD. */
function containerArgv(c: Container, image: ImageStage): string[] {
  if (c.command !== undefined) return [...c.command, ...(c.args ?? [])];
  return [...image.entrypoint, ...(c.args ?? image.cmd)];
}

const isServe = (argv: readonly string[]): boolean => argv[0] === 'node' && argv[1] === '/app/dist/cli.js' && argv[2] === 'serve';

/** Where a path lives in a container: a mount (with the volume), or the image. */
function locate(c: Container, volumes: readonly Volume[], file: string): { mount: Mount; volume: Volume; rest: string } | { image: string | null } {
  const mounts = [...(c.volumeMounts ?? [])].sort((a, b) => b.mountPath.length - a.mountPath.length);
  for (const m of mounts) {
    if (file === m.mountPath || file.startsWith(`${m.mountPath.replace(/\/$/, '')}/`)) {
      const volume = volumes.find((v) => v.name === m.name);
      if (volume === undefined) throw new Error(`${c.name}: mount ${m.name} has no volume`);
      return { mount: m, volume, rest: file.slice(m.mountPath.length).replace(/^\//, '') };
    }
  }
  return { image: imageSource(runtime, file) };
}

/** A file the server reads: a key of a mounted ConfigMap/Secret, or a file of the image. */
function existingFile(c: Container, volumes: readonly Volume[], namespace: string, file: string): string | null {
  const where = locate(c, volumes, file);
  if ('image' in where) return where.image === null ? `${file} is not in the image` : null;
  const { volume, rest } = where;
  if (volume.configMap) return keyOf('ConfigMap', namespace, volume.configMap.name, rest) === undefined ? `${file}: ConfigMap ${volume.configMap.name} has no key ${rest}` : null;
  if (volume.secret) return keyOf('Secret', namespace, volume.secret.secretName, rest) === undefined ? `${file}: Secret ${volume.secret.secretName} has no key ${rest}` : null;
  return `${file} is on ${volume.name}, which starts empty`;
}

/** A path the server creates: on a writable emptyDir or volume claim mount. */
function writablePath(c: Container, volumes: readonly Volume[], file: string): string | null {
  const where = locate(c, volumes, file);
  if ('image' in where) return `${file} is not on a volume (the root filesystem is read-only)`;
  if (where.mount.readOnly === true) return `${file} is on a read-only mount`;
  return where.volume.emptyDir !== undefined || where.volume.persistentVolumeClaim !== undefined ? null : `${file} is on ${where.volume.name}, which is not writable`;
}

/** loadConfig() over a container's serve flags and environment, plus its path problems. */
function checkServe(c: Container, volumes: readonly Volume[], namespace: string): { config: ServerConfig; problems: string[] } {
  const env = containerEnv(c, namespace, runtime);
  const config = loadConfig(containerArgv(c, runtime).slice(3), env);
  const problems = [
    existingFile(c, volumes, namespace, config.policy),
    existingFile(c, volumes, namespace, config.adminTokenFile) === null ? null : writablePath(c, volumes, path.posix.dirname(config.adminTokenFile)),
    writablePath(c, volumes, config.caDir),
    config.store.kind === 'file' ? writablePath(c, volumes, path.posix.dirname(config.store.path)) : null,
    'path' in config.adminListen ? writablePath(c, volumes, path.posix.dirname(config.adminListen.path)) : null,
    ...(config.tls ? [existingFile(c, volumes, namespace, config.tls.cert), existingFile(c, volumes, namespace, config.tls.key)] : []),
    config.geoip === null ? null : existingFile(c, volumes, namespace, config.geoip),
  ].filter((p): p is string => p !== null);
  return { config, problems };
}

/** Every container of a pod, init (and sidecar) containers first. */
const podContainers = (pod: PodSpec): Container[] => [...(pod.initContainers ?? []), ...pod.containers];

// ---------------------------------------------------------------------------------------------

describe('Dockerfile', () => {
  test('builds from one BASE argument (node:20-bookworm-slim by default) in every stage', () => {
    expect(readRepo('Dockerfile')).toMatch(/^ARG BASE=node:20-bookworm-slim$/m);
    for (const s of stages) expect(s.base, s.name).toBe('${BASE}');
    expect(stages.map((s) => s.name)).toEqual(['build', 'deps', 'iptables-init', 'runtime']);
  });

  test('compiles with tsc in the build stage and installs production dependencies only for the runtime', () => {
    const text = readRepo('Dockerfile');
    expect(text).toMatch(/^RUN npm run build$/m);
    expect(text).toMatch(/^RUN npm ci --omit=dev\b/m);
    expect(runtime.copies.filter((c) => c.from !== null).map((c) => `${c.from}:${c.sources.join(',')}`)).toEqual(['deps:/app/node_modules', 'build:/src/dist']);
  });

  test('runtime: non-root user, ports 3128 and 9090, /data volume, exec-form HEALTHCHECK, node as PID 1', () => {
    expect(runtime.user).toBe('10001:10001');
    expect(runtime.expose).toEqual(['3128', '9090']);
    expect(runtime.volumes).toEqual(['/data']);
    expect(runtime.healthcheck).toEqual(['node', '/app/docker/healthcheck.mjs']);
    expect(runtime.entrypoint).toEqual(['node', '/app/dist/cli.js']);
    expect(runtime.cmd).toEqual(['serve']);
    expect(imageSource(runtime, '/app/docker/healthcheck.mjs')).toBe('repo docker/healthcheck.mjs');
    expect(imageSource(runtime, '/app/dist/cli.js')).toBe('built from src/cli.ts');
  });

  test("the image's own settings are real flags: all interfaces, state, tokens and CA in /data", () => {
    for (const name of Object.keys(runtime.env).filter((n) => n.startsWith('PORTCULLIS_'))) expect(FLAG_ENV, name).toContain(name);
    const config = loadConfig([], runtime.env);
    expect(config.listen).toEqual({ host: '0.0.0.0', port: 3128 });
    expect(config.adminListen).toEqual({ host: '0.0.0.0', port: 9090 });
    expect(config.store).toMatchObject({ kind: 'file', path: '/data/state.json' });
    expect(config.adminTokenFile).toBe('/data/admin-tokens.json');
    expect(config.caDir).toBe('/data/ca');
    expect(imageSource(runtime, config.policy)).toBe('repo policies/default.yaml');
    expect(runtime.env['NODE_ENV']).toBe('production');
  });

  test('every COPY source exists and is not excluded by .dockerignore', () => {
    for (const s of stages) {
      for (const copy of s.copies.filter((c) => c.from === null)) {
        for (const src of copy.sources) {
          expect(imageSource({ ...s, volumes: [], copies: [copy] }, copy.intoDir ? path.posix.join(copy.dest, path.posix.basename(src)) : copy.dest), `${s.name}: COPY ${src}`).not.toBeNull();
          expect(dockerIgnored(src), `${src} is excluded by .dockerignore`).toBe(false);
        }
      }
    }
  });

  test('.dockerignore keeps local state, secrets and build output out of the context', () => {
    for (const p of ['node_modules/zod/package.json', 'dist/cli.js', 'data/state.json', 'data/admin.token', '.git/HEAD', 'docker/compose.yaml', 'x/admin-tokens.json']) {
      expect(dockerIgnored(p), p).toBe(true);
    }
    for (const p of ['src/cli.ts', 'policies/default.yaml', 'docker/healthcheck.mjs', 'package-lock.json']) expect(dockerIgnored(p), p).toBe(false);
  });

  test('the iptables-init stage runs the repository script', () => {
    expect(initImage.entrypoint).toEqual(['/usr/local/bin/iptables-init.sh']);
    expect(imageSource(initImage, '/usr/local/bin/iptables-init.sh')).toBe('repo docker/k8s/sidecar/iptables-init.sh');
  });
});

describe('Kubernetes manifests', () => {
  test('parse, and every object has apiVersion, kind, name and namespace', () => {
    expect(allK8s.length).toBeGreaterThan(10);
    for (const o of allK8s) {
      expect(o.apiVersion, JSON.stringify(o.metadata)).toMatch(/^([a-z0-9.]+\/)?v1$/);
      expect(o.metadata.name).toMatch(/^[a-z0-9-]+$/);
      if (o.kind !== 'Namespace') expect(o.metadata.namespace, `${o.kind} ${o.metadata.name}`).toMatch(/^(portcullis|agents)$/);
    }
  });

  const pods = workloads(allK8s).map((w) => [`${w.kind} ${w.metadata.name}`, w] as const);

  test.each(pods)('%s: every container has resource limits and no privilege escalation', (_name, w) => {
    for (const c of podContainers(w.spec.template.spec)) {
      expect(c.resources?.limits?.cpu, c.name).toBeDefined();
      expect(c.resources?.limits?.memory, c.name).toBeDefined();
      expect(c.resources?.requests?.memory, c.name).toBeDefined();
      expect(c.securityContext?.allowPrivilegeEscalation, c.name).toBe(false);
      expect(c.securityContext?.capabilities?.drop, c.name).toEqual(['ALL']);
    }
    expect(w.spec.template.spec.automountServiceAccountToken).toBe(false);
  });

  test.each(pods)('%s: Portcullis containers use real flags, real paths, the versioned image and probes', (_name, w) => {
    const pod = w.spec.template.spec;
    const namespace = w.metadata.namespace as string;
    const ours = podContainers(pod).filter((c) => c.image.startsWith('portcullis'));
    for (const c of ours) {
      expect([PORTCULLIS_IMAGE, INIT_IMAGE], c.name).toContain(c.image);
      const env = containerEnv(c, namespace, c.image === PORTCULLIS_IMAGE ? runtime : initImage);
      for (const name of Object.keys(env).filter((n) => n.startsWith('PORTCULLIS_'))) {
        expect(FLAG_ENV.has(name) || CLIENT_ENV.has(name), `${c.name}: ${name} is not a portcullis setting`).toBe(true);
      }
      if (c.image !== PORTCULLIS_IMAGE) continue;
      const argv = containerArgv(c, runtime);
      if (isServe(argv)) {
        const { problems } = checkServe(c, pod.volumes ?? [], namespace);
        expect(problems, c.name).toEqual([]);
        expect(c.livenessProbe, `${c.name} liveness`).toBeDefined();
        expect(c.readinessProbe, `${c.name} readiness`).toBeDefined();
        expect(c.securityContext?.readOnlyRootFilesystem, c.name).toBe(true);
      } else {
        expect(argv[0], c.name).toBe('node');
        expect(imageSource(runtime, argv[1] as string), `${c.name}: ${argv[1]}`).not.toBeNull();
      }
      // Exec probes run node scripts that must be in the image.
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        const cmd = probe?.exec?.command;
        if (cmd) expect(imageSource(runtime, cmd[1] as string), `${c.name} probe ${cmd.join(' ')}`).not.toBeNull();
      }
    }
  });

  test('policies in ConfigMaps load and pass their own tests; admin token files parse', () => {
    const maps = allK8s.filter((o) => o.kind === 'ConfigMap');
    expect(maps.length).toBe(2);
    for (const m of maps) {
      const source = m.data?.['policy.yaml'] as string;
      const loaded = parsePolicy(source, `${m.metadata.name}/policy.yaml`);
      const results = runPolicyTests(compilePolicy(loaded));
      expect(results.length).toBeGreaterThanOrEqual(4);
      expect(results.filter((r) => !r.passed)).toEqual([]);
    }
    const tokenSecrets = allK8s.filter((o) => o.kind === 'Secret' && o.stringData?.['admin-tokens.json'] !== undefined);
    expect(tokenSecrets.length).toBe(2);
    for (const s of tokenSecrets) expect(parseAdminTokensDocument(s.stringData?.['admin-tokens.json'] as string, s.metadata.name)).toHaveLength(1);
  });

  test('store URLs name the Redis Service that exists, in its namespace', () => {
    const redis = find(egressTier, 'Service', 'portcullis-redis');
    const redisPort = (redis.spec?.['ports'] as Array<{ port: number }>)[0]?.port;
    for (const [namespace, name] of [['portcullis', 'portcullis-store'], ['agents', 'coding-agent-store']] as const) {
      const url = new URL(keyOf('Secret', namespace, name, 'url') as string);
      expect(url.protocol).toBe('redis:');
      expect(url.hostname).toBe(`${redis.metadata.name}.${redis.metadata.namespace}.svc.cluster.local`);
      expect(Number(url.port)).toBe(redisPort);
    }
    expect(decodeURIComponent(new URL(keyOf('Secret', 'portcullis', 'portcullis-store', 'url') as string).password)).toBe(keyOf('Secret', 'portcullis', 'portcullis-store', 'password'));
  });
});

describe('egress tier: agents reach only the Portcullis Service', () => {
  const deployment = find<Workload>(egressTier, 'Deployment', 'portcullis');
  const proxy = deployment.spec.template.spec.containers[0] as Container;
  const podLabels = deployment.spec.template.metadata.labels;
  const proxyPort = proxy.ports?.find((p) => p.name === 'proxy')?.containerPort;
  // Computed in the tests, so a bad flag fails them with loadConfig's message.
  const serve = (): ServerConfig => checkServe(proxy, deployment.spec.template.spec.volumes ?? [], 'portcullis').config;

  test('replicas share a Redis store, listen on all interfaces, and fail closed', () => {
    const config = serve();
    expect(deployment.spec.replicas).toBeGreaterThan(1);
    expect(config.store.kind).toBe('redis');
    expect(config.store.failMode).toBe('closed');
    expect(config.listen).toEqual({ host: '0.0.0.0', port: proxyPort });
    expect(find(egressTier, 'PodDisruptionBudget', 'portcullis')).toBeDefined();
  });

  test("the agents' NetworkPolicy allows one thing: TCP to the Portcullis pods' proxy port (no DNS)", () => {
    const np = egressTier.find((o) => o.kind === 'NetworkPolicy' && o.metadata.namespace === 'agents') as K8sObject;
    const spec = np.spec as { podSelector: object; policyTypes: string[]; egress: Array<{ to: Array<{ namespaceSelector?: { matchLabels: Record<string, string> }; podSelector?: { matchLabels: Record<string, string> } }>; ports: Array<{ protocol: string; port: number }> }> };
    expect(spec.podSelector).toEqual({});
    expect(spec.policyTypes).toEqual(['Egress']);
    expect(spec.egress).toHaveLength(1);
    const [rule] = spec.egress;
    expect(rule?.ports).toEqual([{ protocol: 'TCP', port: proxyPort }]);
    expect(rule?.to).toHaveLength(1);
    const peer = rule?.to[0];
    expect(peer?.namespaceSelector?.matchLabels).toEqual({ 'kubernetes.io/metadata.name': deployment.metadata.namespace });
    for (const [k, v] of Object.entries(peer?.podSelector?.matchLabels ?? {})) expect(podLabels[k]).toBe(v);
    expect(Object.keys(peer?.podSelector?.matchLabels ?? {})).not.toHaveLength(0);
    expect(JSON.stringify(spec)).not.toMatch(/"port":53\b/);
  });

  test('the Service selects the Deployment, and the example agent uses its pinned IP, no DNS and no API token', () => {
    const svc = find(egressTier, 'Service', 'portcullis');
    const spec = svc.spec as { clusterIP: string; selector: Record<string, string>; ports: Array<{ name: string; port: number; targetPort: string }> };
    for (const [k, v] of Object.entries(spec.selector)) expect(podLabels[k]).toBe(v);
    for (const p of spec.ports) expect(proxy.ports?.map((x) => x.name)).toContain(p.targetPort);
    const agent = find<Workload>(egressTier, 'Deployment', 'example-agent');
    const pod = agent.spec.template.spec;
    expect(pod.dnsPolicy).toBe('None');
    expect(pod.automountServiceAccountToken).toBe(false);
    const env = containerEnv(pod.containers[0] as Container, 'agents', null);
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY']) {
      const url = new URL(env[name] as string);
      expect(url.hostname, name).toBe(spec.clusterIP);
      expect(Number(url.port), name).toBe(spec.ports.find((p) => p.name === 'proxy')?.port);
    }
  });

  test('the Portcullis pods accept the proxy port from agents only, and never egress to private ranges', () => {
    const np = find(egressTier, 'NetworkPolicy', 'portcullis');
    const text = JSON.stringify(np.spec);
    for (const cidr of ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '169.254.0.0/16', '100.64.0.0/10', 'fc00::/7', 'fe80::/10']) expect(text).toContain(cidr);
  });
});

describe('sidecar: only the proxy UID opens outside connections', () => {
  const pod = find<Workload>(sidecar, 'Deployment', 'coding-agent');
  const spec = pod.spec.template.spec;
  const inits = spec.initContainers ?? [];
  const lockdown = inits.find((c) => c.image === INIT_IMAGE) as Container;
  const proxy = inits.find((c) => c.image === PORTCULLIS_IMAGE && isServe(containerArgv(c, runtime))) as Container;
  const bridge = inits.find((c) => c.name === 'metrics-bridge') as Container;
  const agent = spec.containers.find((c) => c.name === 'agent') as Container;
  const initEnv = containerEnv(lockdown, 'agents', initImage);
  const serve = (): ServerConfig => checkServe(proxy, spec.volumes ?? [], 'agents').config;
  const script = readRepo('docker/k8s/sidecar/iptables-init.sh');

  test('the iptables init container runs first, as root with NET_ADMIN, with variables the script reads', () => {
    expect(inits[0]).toBe(lockdown);
    expect(lockdown.command).toBeUndefined();
    expect(lockdown.securityContext?.runAsUser).toBe(0);
    expect(lockdown.securityContext?.capabilities?.add).toEqual(expect.arrayContaining(['NET_ADMIN']));
    for (const name of Object.keys(lockdown.env?.reduce((a, e) => ({ ...a, [e.name]: 1 }), {}) ?? {})) expect(script).toContain(`\${${name}`);
  });

  test("PROXY_UID is the proxy's user, PROXY_PORT its loopback port, AGENT_UID the agent's (a different) user", () => {
    expect(initEnv['PROXY_UID']).toBe(String(proxy.securityContext?.runAsUser));
    expect(runtime.user).toBe(`${initEnv['PROXY_UID']}:${initEnv['PROXY_UID']}`);
    expect(serve().listen).toEqual({ host: '127.0.0.1', port: Number(initEnv['PROXY_PORT']) });
    expect(initEnv['AGENT_UID']).toBe(String(agent.securityContext?.runAsUser));
    expect(agent.securityContext?.runAsUser).not.toBe(proxy.securityContext?.runAsUser);
    expect(bridge.securityContext?.runAsUser).toBe(proxy.securityContext?.runAsUser);
  });

  test('the agent is unprivileged and sends everything to the loopback proxy', () => {
    expect(agent.securityContext).toMatchObject({ runAsNonRoot: true, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(agent.securityContext?.capabilities?.add).toBeUndefined();
    expect(spec.shareProcessNamespace).toBe(false);
    expect(spec.securityContext?.fsGroup).toBeUndefined();
    const env = containerEnv(agent, 'agents', null);
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY']) {
      const url = new URL(env[name] as string);
      expect(`${url.hostname}:${url.port}`, name).toBe(`127.0.0.1:${serve().listen.port}`);
    }
  });

  test("the admin API is a unix socket on a volume only the proxy and the bridge mount; Secrets reach only the proxy", () => {
    const { adminListen } = serve();
    expect('path' in adminListen).toBe(true);
    const socket = (adminListen as { path: string }).path;
    const socketVolume = proxy.volumeMounts?.find((m) => m.mountPath === path.posix.dirname(socket))?.name;
    expect(spec.volumes?.find((v) => v.name === socketVolume)?.emptyDir).toBeDefined();
    expect(bridge.args?.slice(0, 2)).toEqual(['--socket', socket]);
    expect(bridge.volumeMounts?.map((m) => m.name)).toEqual([socketVolume]);
    for (const probe of [proxy.livenessProbe, proxy.readinessProbe, proxy.startupProbe]) expect(probe?.exec?.command[2]).toBe(`unix:${socket}`);
    // The agent mounts nothing of the proxy's, and no Secret but its own session credential.
    const proxyVolumes = new Set(proxy.volumeMounts?.map((m) => m.name));
    for (const m of agent.volumeMounts ?? []) expect(proxyVolumes.has(m.name), m.name).toBe(false);
    for (const v of spec.volumes ?? []) {
      if (!v.secret) continue;
      const users = podContainers(spec).filter((c) => c.volumeMounts?.some((m) => m.name === v.name)).map((c) => c.name);
      expect(users, v.name).toEqual([proxy.name]);
    }
    const agentSecrets = (agent.env ?? []).map((e) => e.valueFrom?.secretKeyRef?.name).filter(Boolean);
    expect(new Set(agentSecrets)).toEqual(new Set(['coding-agent-proxy']));
  });

  test('proxy and bridge are sidecar containers that start after the rules and before the agent', () => {
    expect(inits.map((c) => c.name)).toEqual([lockdown.name, proxy.name, bridge.name]);
    expect(proxy.restartPolicy).toBe('Always');
    expect(bridge.restartPolicy).toBe('Always');
    expect(pod.spec.template.metadata.labels['portcullis.dev/sidecar']).toBe('true');
  });
});

describe('compose (docker/compose.yaml)', () => {
  interface Service {
    image?: string;
    build?: { context: string; dockerfile: string };
    entrypoint?: string[];
    command?: string | string[];
    environment?: Record<string, string>;
    volumes?: string[];
    networks?: string[];
    user?: string;
    depends_on?: Record<string, { condition: string }> | string[];
  }
  const [compose] = readYamlDocs('docker/compose.yaml') as Array<{ services: Record<string, Service>; networks: Record<string, { internal?: boolean }>; volumes: Record<string, unknown> }>;
  const services = compose?.services ?? {};
  const usesImage = (s: Service): boolean => s.image === 'portcullis:dev';
  let h: Harness;

  beforeAll(async () => {
    h = await startHarness({ policy: 'version: 1\ndestinations:\n  npm:\n    hosts: [registry.npmjs.org]\naccounts:\n  - match: "*"\n    allow: [npm]\n' });
  });
  afterAll(async () => {
    await h?.close();
  });

  test('has the demo agent, Portcullis, Redis, Prometheus and Grafana, and builds the repository Dockerfile', () => {
    expect(Object.keys(services).sort()).toEqual(['agent', 'bootstrap', 'grafana', 'portcullis', 'prometheus', 'redis']);
    expect(services['portcullis']?.build).toEqual({ context: '..', dockerfile: 'Dockerfile' });
  });

  test('bind mounts name files that exist, and named volumes are declared', () => {
    for (const [name, s] of Object.entries(services)) {
      for (const v of s.volumes ?? []) {
        const [source] = v.split(':') as [string];
        if (source.startsWith('.')) expect(readdirSync(path.dirname(path.join(ROOT, 'docker', source))), `${name}: ${source}`).toContain(path.basename(source));
        else expect(Object.keys(compose?.volumes ?? {}), `${name}: ${source}`).toContain(source);
      }
    }
  });

  test('the Portcullis service uses real settings and keeps its state on a volume', () => {
    const s = services['portcullis'] as Service;
    const env = { ...runtime.env, ...s.environment };
    for (const name of Object.keys(env).filter((n) => n.startsWith('PORTCULLIS_'))) expect(FLAG_ENV, name).toContain(name);
    const config = loadConfig(typeof s.command === 'string' ? s.command.split(/\s+/).slice(1) : (s.command ?? runtime.cmd).slice(1), env);
    expect(config.store.kind).toBe('redis');
    expect(imageSource(runtime, config.policy)).not.toBeNull();
    expect(s.volumes).toContain('portcullis-data:/data');
    expect(config.caDir.startsWith('/data/')).toBe(true);
    expect(config.adminTokenFile.startsWith('/data/')).toBe(true);
  });

  test("the agent's only network is internal and shared with Portcullis alone; it never sees Portcullis's data", () => {
    const agent = services['agent'] as Service;
    expect(agent.networks).toEqual(['agents']);
    expect(compose?.networks['agents']?.internal).toBe(true);
    const onAgents = Object.entries(services).filter(([, s]) => s.networks?.includes('agents')).map(([n]) => n);
    expect(onAgents.sort()).toEqual(['agent', 'portcullis']);
    expect(agent.volumes?.some((v) => v.startsWith('portcullis-data'))).toBe(false);
  });

  test("the bootstrap's CLI call creates a session and yields the agent's proxy URL", async () => {
    const s = services['bootstrap'] as Service;
    expect(usesImage(s)).toBe(true);
    const script = (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? '')).replace(/\s+/g, ' ');
    const call = /node \/app\/dist\/cli\.js ([^|&;]+)/.exec(script)?.[1]?.trim().split(' ') ?? [];
    expect(call.slice(0, 2)).toEqual(['sessions', 'create']);
    // Point the same arguments at a real admin API; only where to reach it changes.
    const args = [...call];
    const at = (flag: string): number => args.indexOf(flag) + 1;
    const image = loadConfig([], runtime.env);
    expect(args[at('--admin-url')]).toBe(`http://portcullis:${(image.adminListen as { port: number }).port}`);
    expect(args[at('--token-file')]).toBe('/data/admin.token');
    expect(args[at('--proxy')]).toBe(`portcullis:${image.listen.port}`);
    args[at('--admin-url')] = h.adminUrl;
    const tokenFile = path.join(h.dir, 'bootstrap.token');
    writeFileSync(tokenFile, h.adminToken);
    args[at('--token-file')] = tokenFile;
    const out: string[] = [];
    const code = await main(args, { out: (l) => out.push(l), err: (l) => out.push(l) });
    expect(code, out.join('\n')).toBe(0);
    // The same extraction as the compose command's sed.
    const proxyLine = out.find((l) => l.startsWith('HTTP_PROXY='))?.slice('HTTP_PROXY='.length) ?? '';
    const url = new URL(proxyLine);
    expect(url.username).toBe('demo-agent');
    expect(url.host).toBe('portcullis:3128');
    expect(url.password.length).toBeGreaterThan(20);
    expect(script).toContain("sed -n 's/^HTTP_PROXY=//p'");
  });
});
