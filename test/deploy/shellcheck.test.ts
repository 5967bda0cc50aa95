/**
 * shellcheck on every shell script of the repository: files ending in .sh, and files whose
 * first line is a sh/bash shebang (.ci/run), outside node_modules, dist and .git. Without
 * shellcheck the test is skipped with the reason printed; with CI=true it fails. Nothing is
 * installed from here (.ci/run installs the Debian package).
 */
import { spawnSync } from 'node:child_process';
import { openSync, readdirSync, readSync, closeSync } from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { ROOT, tool } from './deploy-files.js';

const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', 'coverage', 'data']);

/** The first bytes of a file, enough for a shebang. */
function head(file: string): string {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(64);
    return buf.subarray(0, readSync(fd, buf, 0, 64, 0)).toString('latin1');
  } finally {
    closeSync(fd);
  }
}

/** Repository-relative paths of every shell script. */
function shellScripts(dir = ROOT): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      if (!SKIP_DIRS.has(entry.name)) out.push(...shellScripts(full));
    } else if (entry.isFile() && (entry.name.endsWith('.sh') || /^#!\s*\/(?:usr\/)?bin\/(?:env\s+)?(?:ba|da)?sh\b/.test(head(full)))) {
      out.push(path.relative(ROOT, full));
    }
  }
  return out.sort();
}

const shellcheck = tool('shellcheck', 'shellcheck');
const scripts = shellScripts();

test('the scripts CI must lint are found', () => {
  expect(scripts).toEqual(expect.arrayContaining(['.ci/run', 'docker/k8s/sidecar/iptables-init.sh', 'scripts/image-smoke.sh']));
});

test('shellcheck is available (required when CI=true)', (ctx) => {
  if (!shellcheck.available && !shellcheck.required) ctx.skip(shellcheck.reason);
  expect(shellcheck.available, 'shellcheck must be on PATH when CI=true').toBe(true);
});

test.for(scripts)('shellcheck %s', (rel, ctx) => {
  if (!shellcheck.available && !shellcheck.required) ctx.skip(shellcheck.reason);
  const r = spawnSync('shellcheck', ['--external-sources', '--format=gcc', rel], { cwd: ROOT, encoding: 'utf8' });
  expect(r.error).toBeUndefined();
  expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
  expect(r.status).toBe(0);
});
