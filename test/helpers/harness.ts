/**
 * Integration harness: a real Portcullis (in-process) on 127.0.0.1 port 0 with a temp data
 * directory, a test DNS server on loopback, origins that record what they receive, and parsed
 * JSON log lines. Everything is closed by close().
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http, { type IncomingMessage, type Server } from 'node:http';
import https from 'node:https';
import { isIP, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { startApp, type App, type AppOverrides } from '../../src/app.js';
import { loadConfig } from '../../src/config/load.js';
import { createLogger } from '../../src/observability/logger.js';
import { startDnsServer, type DnsRecords, type DnsServer } from './dns-server.js';

/** A log sink whose lines can be read back as parsed JSON. */
export class LogSink extends Writable {
  readonly raw: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') this.raw.push(line);
    cb();
  }
  /** Every line, parsed. */
  lines(): Record<string, unknown>[] {
    return this.raw.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
  /** The canonical egress lines (decision lines unless `phase` is asked for). */
  egress(phase?: 'close'): Record<string, unknown>[] {
    return this.lines().filter((l) => l['msg'] === 'egress' && l['phase'] === phase);
  }
  /** Everything written, as one string (for secret searches). */
  text(): string {
    return this.raw.join('\n');
  }
}

/** A request an origin received. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: Buffer;
  complete: boolean;
}

/** An HTTP(S) origin on 127.0.0.1 that records requests and answers via a handler. */
export interface Origin {
  readonly port: number;
  readonly seen: SeenRequest[];
  readonly server: Server;
  close(): Promise<void>;
}

/** Starts an origin; the default handler echoes method, url and body length as JSON. */
export async function startOrigin(
  handler?: (req: IncomingMessage, res: http.ServerResponse, seen: SeenRequest) => void,
  tls?: { cert: string; key: string },
): Promise<Origin> {
  const seen: SeenRequest[] = [];
  const onRequest = (req: IncomingMessage, res: http.ServerResponse): void => {
    const record: SeenRequest = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.alloc(0), complete: false };
    seen.push(record);
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= 1 << 20) chunks.push(c);
    });
    req.on('end', () => {
      record.complete = true;
      record.body = Buffer.concat(chunks);
      if (handler) return handler(req, res, record);
      const body = JSON.stringify({ method: req.method, url: req.url, bodyLength: size, host: req.headers.host });
      res.writeHead(200, { 'content-type': 'application/json', 'x-portcullis-reason': 'forged-by-origin', 'x-origin': 'yes' });
      res.end(body);
    });
  };
  const server = tls ? https.createServer({ cert: tls.cert, key: tls.key }, onRequest) : http.createServer(onRequest);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    seen,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A self-signed certificate for the given names (openssl, ECDSA P-256); IP literals become IP SANs. */
export function selfSignedCert(names: readonly string[]): { cert: string; key: string } {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-cert-'));
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '2',
      '-subj', `/CN=${names[0]}`, '-addext', `subjectAltName=${names.map((n) => `${isIP(n) ? 'IP' : 'DNS'}:${n}`).join(',')}`,
    ], { stdio: 'ignore' });
    return { cert: readFileSync(path.join(dir, 'cert.pem'), 'utf8'), key: readFileSync(path.join(dir, 'key.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Options of startHarness. */
export interface HarnessOptions {
  /** Policy YAML text. */
  readonly policy: string;
  /** DNS records served to the proxy. */
  readonly dns?: DnsRecords;
  /** Extra `serve` flags. */
  readonly flags?: readonly string[];
  /** `--drain-timeout-ms` (default 2000; a flag may be given only once). */
  readonly drainTimeoutMs?: number;
  readonly overrides?: AppOverrides;
}

/** A running proxy with its helpers. */
export interface Harness {
  readonly app: App;
  readonly dir: string;
  readonly dns: DnsServer;
  readonly logs: LogSink;
  readonly proxyPort: number;
  readonly adminUrl: string;
  readonly adminToken: string;
  /** http://ACCOUNT:TOKEN@127.0.0.1:PORT */
  proxyUrl(account: string, token: string, scheme?: 'http' | 'https'): string;
  /** Creates a session through the admin API; returns its token and id. */
  createSession(account: string, app?: string): Promise<{ token: string; id: string }>;
  /** Calls the admin API with the admin token. */
  admin(method: string, path: string, body?: unknown): Promise<{ status: number; json: unknown }>;
  /** Rewrites the policy file and reloads it. */
  setPolicy(yaml: string): Promise<unknown>;
  close(): Promise<void>;
}

/** Starts Portcullis with a temp data dir and a loopback DNS server. */
export async function startHarness(options: HarnessOptions): Promise<Harness> {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-it-'));
  const policyFile = path.join(dir, 'policy.yaml');
  writeFileSync(policyFile, options.policy);
  const dns = await startDnsServer(options.dns ?? {});
  const logs = new LogSink();
  const logger = createLogger({ level: 'info', destination: logs });
  const config = loadConfig(
    [
      '--policy', policyFile,
      '--listen', '127.0.0.1:0',
      '--admin-listen', '127.0.0.1:0',
      '--store', `file:${path.join(dir, 'state.json')}`,
      '--admin-token-file', path.join(dir, 'admin-tokens.json'),
      '--ca-dir', path.join(dir, 'ca'),
      '--drain-timeout-ms', String(options.drainTimeoutMs ?? 2000),
      ...(options.flags ?? []),
    ],
    {},
  );
  const app = await startApp(config, { logger, dnsServers: [dns.server], lastSeenFlushMs: 200, ...options.overrides });
  const adminToken = readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
  const adminUrl = `http://${app.adminAddress}`;
  const admin = async (method: string, p: string, body?: unknown): Promise<{ status: number; json: unknown }> => {
    const res = await fetch(adminUrl + p, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, json: text ? (JSON.parse(text) as unknown) : null };
  };
  return {
    app,
    dir,
    dns,
    logs,
    proxyPort: app.proxyAddress.port,
    adminUrl,
    adminToken,
    proxyUrl: (account, token, scheme = 'http') => `${scheme}://${encodeURIComponent(account)}:${token}@127.0.0.1:${app.proxyAddress.port}`,
    createSession: async (account, appName = 'test-agent') => {
      const r = await admin('POST', `/v1/accounts/${encodeURIComponent(account)}/sessions`, { app: appName });
      if (r.status !== 201) throw new Error(`session create failed: ${r.status} ${JSON.stringify(r.json)}`);
      const j = r.json as { token: string; session: { id: string } };
      return { token: j.token, id: j.session.id };
    },
    admin,
    setPolicy: async (yaml) => {
      writeFileSync(policyFile, yaml);
      return app.policy.reload();
    },
    close: async () => {
      await app.close();
      await dns.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
