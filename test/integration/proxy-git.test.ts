/**
 * git through the proxy, the way agents use it: `git -c http.proxy=...` cloning over smart HTTP
 * from a local `git http-backend` (run as CGI by a node:http server on 127.0.0.1). Covers the
 * proxy-auth challenge git relies on, and method rules stopping the POST of git-upload-pack.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createBareRepo, git, gitEnv, startGitServer, type GitServer } from '../helpers/git-http.js';
import { startHarness, type Harness } from '../helpers/harness.js';

describe('git over smart HTTP through the proxy', () => {
  let h: Harness;
  let server: GitServer;
  let home: string;
  let env: NodeJS.ProcessEnv;
  let commit: string;
  let token: string;

  beforeAll(async () => {
    home = mkdtempSync(path.join(tmpdir(), 'portcullis-git-home-'));
    env = gitEnv(home);
    server = await startGitServer();
    commit = await createBareRepo(server.root, 'repo', env);
    h = await startHarness({
      policy: `
version: 1
destinations:
  git:
    hosts: [git.test]
    ports: [${server.port}]
    allowPrivate: [127.0.0.1/32]
  git-read-only:
    hosts: [git-ro.test]
    ports: [${server.port}]
    schemes: [http]
    methods: [GET]
    allowPrivate: [127.0.0.1/32]
accounts:
  - match: "dev-*"
    allow: [git, git-read-only]
`,
      dns: { 'git.test': { A: ['127.0.0.1'] }, 'git-ro.test': { A: ['127.0.0.1'] } },
    });
    ({ token } = await h.createSession('dev-1', 'git'));
  });

  afterAll(async () => {
    await h?.close();
    await server?.close();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  const clone = (proxy: string, url: string, dest: string) =>
    git(['-c', `http.proxy=${proxy}`, '-c', 'credential.helper=', 'clone', '-q', url, path.join(home, dest)], env);

  test('git clone with http.proxy credentials works, answering the 407 challenge, and the clone has the commit', async () => {
    const mark = h.logs.egress().length;
    const r = await clone(h.proxyUrl('dev-1', token), `http://git.test:${server.port}/repo.git`, 'clone-ok');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const head = await git(['-C', path.join(home, 'clone-ok'), 'rev-parse', 'HEAD'], env);
    expect(head.stdout.trim()).toBe(commit);
    expect(server.seen.map((s) => s.method)).toContain('POST');

    const lines = h.logs.egress().slice(mark);
    // git (libcurl "anyauth") sends credentials only after the proxy's challenge.
    expect(lines[0]).toMatchObject({ status: 407, reason: 'auth_missing' });
    const allowed = lines.filter((l) => l['decision'] === 'allow');
    expect(allowed.map((l) => `${l['method']} ${l['path']}`)).toEqual(
      expect.arrayContaining(['GET /repo.git/info/refs', 'POST /repo.git/git-upload-pack']),
    );
    for (const l of allowed) expect(l).toMatchObject({ kind: 'http', account: 'dev-1', host: 'git.test', destination: 'git', status: 200 });
    // The token travelled in git's Proxy-Authorization header; its secret is never logged.
    expect(h.logs.text()).not.toContain(token.slice(-43));
  });

  test('with only GET allowed, the smart-HTTP POST of git-upload-pack is method_not_allowed and never reaches the server', async () => {
    const mark = h.logs.egress().length;
    const seenBefore = server.seen.length;
    const r = await clone(h.proxyUrl('dev-1', token), `http://git-ro.test:${server.port}/repo.git`, 'clone-ro');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/403/);
    const lines = h.logs.egress().slice(mark);
    expect(lines).toContainEqual(expect.objectContaining({ method: 'GET', path: '/repo.git/info/refs', decision: 'allow', status: 200 }));
    expect(lines).toContainEqual(
      expect.objectContaining({ method: 'POST', path: '/repo.git/git-upload-pack', decision: 'deny', reason: 'method_not_allowed', status: 403, destination: 'git-read-only' }),
    );
    expect(server.seen.slice(seenBefore).map((s) => s.method)).toEqual(['GET']);
  });

  test('http.proxy without credentials gets 407 and git gives up without prompting', async () => {
    const mark = h.logs.egress().length;
    const seenBefore = server.seen.length;
    const r = await clone(`http://127.0.0.1:${h.proxyPort}`, `http://git.test:${server.port}/repo.git`, 'clone-noauth');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/407/);
    const lines = h.logs.egress().slice(mark);
    expect(lines.length).toBeGreaterThan(0);
    for (const l of lines) expect(l).toMatchObject({ decision: 'deny', reason: 'auth_missing', status: 407, host: 'git.test' });
    expect(server.seen.length).toBe(seenBefore);
  });
});
