import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { PolicyReloader, type ReloadResult } from '../../src/policy/reloader.js';

const policy = (host: string) => `version: 1
destinations:
  d: { hosts: [${host}] }
accounts: [{ match: "*", allow: [d] }]
`;

function nextReload(r: PolicyReloader, timeoutMs = 3000): Promise<ReloadResult> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no reload event')), timeoutMs);
    r.once('reload', (result: ReloadResult) => {
      clearTimeout(t);
      resolve(result);
    });
  });
}

describe('policy hot reload', () => {
  const dirs: string[] = [];
  const reloaders: PolicyReloader[] = [];
  afterEach(() => {
    for (const r of reloaders.splice(0)) r.close();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  const tmp = () => {
    const d = mkdtempSync(path.join(tmpdir(), 'portcullis-reload-'));
    dirs.push(d);
    return d;
  };
  const open = async (file: string) => {
    const r = await PolicyReloader.open(file, { debounceMs: 20 });
    reloaders.push(r);
    return r.watch();
  };

  test('a changed file is validated, compiled and swapped in', async () => {
    const dir = tmp();
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policy('a.example.com'));
    const r = await open(file);
    const before = r.current.hash;
    const changed = new Promise((resolve) => r.once('change', resolve));
    writeFileSync(file, policy('b.example.com'));
    expect(await nextReload(r)).toMatchObject({ result: 'success' });
    await changed;
    expect(r.current.hash).not.toBe(before);
    expect(r.current.exact.has('b.example.com')).toBe(true);
  });

  test('an invalid file is rejected with file:line:col and the last good policy stays', async () => {
    const dir = tmp();
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policy('a.example.com'));
    const r = await open(file);
    const good = r.current;
    writeFileSync(file, policy('"*.com"'));
    const result = await nextReload(r);
    expect(result.result).toBe('failure');
    if (result.result === 'failure') expect(result.error).toMatch(/policy\.yaml:3:\d+: destinations\.d\.hosts\[0\]/);
    expect(r.current).toBe(good);
  });

  test('an unchanged rewrite is not a swap', async () => {
    const dir = tmp();
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policy('a.example.com'));
    const r = await open(file);
    writeFileSync(file, policy('a.example.com'));
    expect(await nextReload(r)).toMatchObject({ result: 'unchanged' });
  });

  test('a Kubernetes ConfigMap update (..data symlink swap) is seen', async () => {
    // The ConfigMap layout: policy.yaml -> ..data/policy.yaml, ..data -> ..2024_v1; an update
    // writes ..2024_v2 and atomically renames a new ..data symlink over the old one.
    const dir = tmp();
    const v1 = path.join(dir, '..2024_v1');
    mkdirSync(v1);
    writeFileSync(path.join(v1, 'policy.yaml'), policy('a.example.com'));
    symlinkSync('..2024_v1', path.join(dir, '..data'));
    symlinkSync('..data/policy.yaml', path.join(dir, 'policy.yaml'));
    const r = await open(path.join(dir, 'policy.yaml'));
    const v2 = path.join(dir, '..2024_v2');
    mkdirSync(v2);
    writeFileSync(path.join(v2, 'policy.yaml'), policy('c.example.com'));
    symlinkSync('..2024_v2', path.join(dir, '..data_tmp'));
    renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    expect(await nextReload(r)).toMatchObject({ result: 'success' });
    expect(r.current.exact.has('c.example.com')).toBe(true);
  });

  test('reload() on demand; concurrent calls share one run', async () => {
    const dir = tmp();
    const file = path.join(dir, 'policy.yaml');
    writeFileSync(file, policy('a.example.com'));
    const r = await PolicyReloader.open(file);
    reloaders.push(r);
    writeFileSync(file, policy('d.example.com'));
    const [x, y] = await Promise.all([r.reload(), r.reload()]);
    expect(x.result === 'success' || y.result === 'success').toBe(true);
    expect(r.current.exact.has('d.example.com')).toBe(true);
  });
});
