/**
 * A smart-HTTP git server for tests: a node:http server on 127.0.0.1 that runs
 * `git http-backend` as a CGI program over bare repositories in a temp directory, plus helpers
 * to build a repository and to run git with a clean, proxy-free environment.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';

/** What the git server received. */
export interface GitRequest {
  method: string;
  url: string;
}

/** A running git HTTP server and its repositories' root. */
export interface GitServer {
  readonly port: number;
  readonly root: string;
  readonly seen: GitRequest[];
  close(): Promise<void>;
}

/**
 * An environment for git with no proxy variables, no system or global config and no prompts:
 * only what a test passes with `-c` applies.
 */
export function gitEnv(home: string): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: home,
    XDG_CONFIG_HOME: path.join(home, '.config'),
    GIT_CONFIG_NOSYSTEM: '1',
    GIT_TERMINAL_PROMPT: '0',
    GIT_ASKPASS: '',
    SSH_ASKPASS: '',
    GIT_AUTHOR_NAME: 'Portcullis Test',
    GIT_AUTHOR_EMAIL: 'test@example.invalid',
    GIT_COMMITTER_NAME: 'Portcullis Test',
    GIT_COMMITTER_EMAIL: 'test@example.invalid',
    LANG: 'C',
  };
}

/** Runs git; resolves with exit code and output (never rejects on a non-zero exit). */
export function git(args: readonly string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('git', args, { env, cwd, timeout: 15_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Creates `<root>/<name>.git` with one commit; returns the commit id. */
export async function createBareRepo(root: string, name: string, env: NodeJS.ProcessEnv): Promise<string> {
  const work = path.join(root, `${name}-work`);
  const bare = path.join(root, `${name}.git`);
  for (const args of [
    ['init', '-q', '-b', 'main', work],
    ['-C', work, 'commit', '-q', '--allow-empty', '-m', 'first commit through portcullis'],
    ['init', '-q', '--bare', '-b', 'main', bare],
    ['-C', work, 'push', '-q', bare, 'main'],
  ]) {
    const r = await git(args, env);
    if (r.code !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
  }
  const head = await git(['-C', bare, 'rev-parse', 'main'], env);
  return head.stdout.trim();
}

/** Runs `git http-backend` for one request (RFC 3875 CGI). */
function cgi(root: string, req: IncomingMessage, res: ServerResponse): void {
  const url = new URL(req.url ?? '/', 'http://git.invalid');
  const header = (name: string): string => {
    const v = req.headers[name];
    return Array.isArray(v) ? v.join(', ') : (v ?? '');
  };
  const child = spawn('git', ['http-backend'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      GIT_CONFIG_NOSYSTEM: '1',
      GIT_PROJECT_ROOT: root,
      GIT_HTTP_EXPORT_ALL: '1',
      GATEWAY_INTERFACE: 'CGI/1.1',
      SERVER_PROTOCOL: 'HTTP/1.1',
      REQUEST_METHOD: req.method ?? 'GET',
      PATH_INFO: decodeURIComponent(url.pathname),
      QUERY_STRING: url.search.slice(1),
      CONTENT_TYPE: header('content-type'),
      // Absent for chunked uploads: http-backend then reads the body to EOF.
      ...(req.headers['content-length'] !== undefined ? { CONTENT_LENGTH: header('content-length') } : {}),
      HTTP_CONTENT_ENCODING: header('content-encoding'),
      GIT_PROTOCOL: header('git-protocol'),
      REMOTE_ADDR: req.socket.remoteAddress ?? '127.0.0.1',
    },
    stdio: ['pipe', 'pipe', 'ignore'],
  });
  req.pipe(child.stdin);
  child.stdin.on('error', () => undefined);
  let head = Buffer.alloc(0);
  let started = false;
  child.stdout.on('data', (chunk: Buffer) => {
    if (started) return void res.write(chunk);
    head = Buffer.concat([head, chunk]);
    const crlf = head.indexOf('\r\n\r\n');
    const lf = head.indexOf('\n\n');
    const end = crlf !== -1 && (lf === -1 || crlf < lf) ? crlf : lf;
    if (end === -1) return;
    started = true;
    const sep = end === crlf ? 4 : 2;
    let status = 200;
    const headers: Record<string, string> = {};
    for (const line of head.subarray(0, end).toString('latin1').split(/\r?\n/)) {
      const c = line.indexOf(':');
      if (c <= 0) continue;
      const name = line.slice(0, c).trim();
      const value = line.slice(c + 1).trim();
      if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
      else headers[name] = value;
    }
    res.writeHead(status, headers);
    res.write(head.subarray(end + sep));
  });
  child.stdout.on('end', () => {
    if (!started) res.writeHead(502);
    res.end();
  });
  child.on('error', () => res.destroy());
}

/** Serves every bare repository under a fresh temp root over smart HTTP (HTTPS with `tls`) on 127.0.0.1. */
export async function startGitServer(tls?: { cert: string; key: string }): Promise<GitServer> {
  const root = mkdtempSync(path.join(tmpdir(), 'portcullis-git-'));
  const seen: GitRequest[] = [];
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    seen.push({ method: req.method ?? '', url: req.url ?? '' });
    cgi(root, req, res);
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    root,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          rmSync(root, { recursive: true, force: true });
          resolve();
        });
      }),
  };
}
