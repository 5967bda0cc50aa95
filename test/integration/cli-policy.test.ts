import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';

const run = promisify(execFile);
const root = path.resolve(import.meta.dirname, '../..');
const cli = path.join(root, 'dist/cli.js');

/** Runs the built CLI; resolves with exit code and output (never rejects on a non-zero exit). */
async function portcullis(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(process.execPath, [cli, ...args], { cwd: root });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('portcullis CLI (built dist/cli.js)', () => {
  test('policy check passes every shipped policy', async () => {
    const r = await portcullis(['policy', 'check', 'policies/default.yaml', 'policies/examples/lockdown.yaml']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('policies/default.yaml: ok');
  });

  test('policy check prints every error with file:line:col and exits 1', async () => {
    const file = 'test/fixtures/policies/bad/several_errors.yaml';
    const r = await portcullis(['policy', 'check', file]);
    expect(r.code).toBe(1);
    const lines = r.stderr.split('\n').filter((l) => l.startsWith(`${file}:`) && /:\d+:\d+: /.test(l));
    expect(lines.length).toBeGreaterThan(1);
  });

  test('policy test reports expected vs actual and exits 1 on a failing row', async () => {
    const ok = await portcullis(['policy', 'test', 'policies/default.yaml']);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/14 passed, 0 failed/);
  });

  test('explain shows the decision, the destination and why', async () => {
    const r = await portcullis(['explain', '--policy', 'policies/examples/coding-agent-strict.yaml', '--account', 'ci-build', 'POST', 'https://api.github.com/gists']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^DENY method_not_allowed/);
    expect(r.stdout).toContain('matches accounts[0]');
    const json = await portcullis(['explain', '--json', '--account', 'agent', 'CONNECT', 'registry.npmjs.org:443']);
    expect(JSON.parse(json.stdout)).toMatchObject({ decision: 'allow', reason: 'allowlisted', destination: 'package-registries' });
    const bad = await portcullis(['explain', '--json', '--account', 'agent', 'GET', 'http://a..b/']);
    expect(JSON.parse(bad.stdout)).toMatchObject({ decision: 'deny', reason: 'bad_request' });
  });

  test('usage errors exit 2', async () => {
    expect((await portcullis(['explain', 'GET'])).code).toBe(2);
    expect((await portcullis(['nope'])).code).toBe(2);
    expect((await portcullis(['serve', '--listen', 'nonsense'])).code).toBe(2);
  });
});
