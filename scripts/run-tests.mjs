#!/usr/bin/env node
/**
 * `npm test`: runs the main vitest suite, then the namespace suite (test/netns/**) inside a fresh
 * network namespace (`unshare -n`), where tests may put private and metadata addresses on
 * interfaces without any packet reaching the host network.
 *
 * Usage: node scripts/run-tests.mjs [vitest args...]   (the args go to both runs)
 * Without namespace support the namespace suite is skipped with one line of explanation, except
 * with CI=true, where that is a failure. Exit code: non-zero when any part failed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// The local vitest entry point, the same file `npx vitest` would run, started with this node.
const vitest = path.join(root, 'node_modules', 'vitest', 'vitest.mjs');
const extra = process.argv.slice(2);
// File or name filters may legitimately match nothing in one of the two suites.
const filtered = extra.some((a) => !a.startsWith('-'));
const ci = process.env.CI === 'true';
const outDir = mkdtempSync(path.join(tmpdir(), 'portcullis-tests-'));

let current = null;
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    current?.kill(signal);
    process.exitCode = 130;
  });
}

/** Runs a command with inherited stdio; resolves with its exit code. */
function run(command, args, env) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, env, stdio: 'inherit' });
    current = child;
    child.on('error', (err) => {
      process.stderr.write(`run-tests: cannot start ${command}: ${err.message}\n`);
      resolve(127);
    });
    child.on('exit', (code, signal) => {
      current = null;
      resolve(code ?? (signal ? 128 : 1));
    });
  });
}

/** Test counts from vitest's JSON report, or null when the report is missing or unreadable. */
function readCounts(file) {
  try {
    const r = JSON.parse(readFileSync(file, 'utf8'));
    const n = (k) => (typeof r[k] === 'number' ? r[k] : 0);
    if (typeof r.numTotalTests !== 'number') return null;
    return {
      passed: n('numPassedTests'),
      failed: n('numFailedTests'),
      skipped: n('numPendingTests') + n('numTodoTests'),
      total: n('numTotalTests'),
      // numFailedTestSuites counts describe blocks too; a file that fails to load has no tests.
      failedFiles: Array.isArray(r.testResults) ? r.testResults.filter((f) => f.status === 'failed').length : 0,
    };
  } catch {
    return null;
  }
}

/** vitest arguments for one suite, with a JSON report for the summary. */
function vitestArgs(name, config) {
  const report = path.join(outDir, `${name}.json`);
  const args = [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`];
  if (config) args.push('--config', config);
  if (filtered) args.push('--passWithNoTests');
  return { args: [...args, ...extra], report };
}

/** Why this host cannot create a network namespace, or null when it can. */
function netnsUnavailable() {
  if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`;
  const probe = spawnSync('unshare', ['-n', 'true'], { encoding: 'utf8' });
  if (probe.error) return `unshare is not available (${probe.error.code ?? probe.error.message})`;
  if (probe.status !== 0) return `unshare -n failed: ${(probe.stderr || `exit ${probe.status}`).trim().split('\n')[0]}`;
  return null;
}

/** One summary line for a suite. */
function summary(name, code, counts) {
  if (counts === null) return `${name}: exit ${code}`;
  const files = counts.failedFiles > 0 ? `, ${counts.failedFiles} file(s) failed` : '';
  return `${name}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped${files} (exit ${code})`;
}

/** Runs both suites; returns the process exit code. */
async function main() {
  const lines = [];
  let failed = false;
  let total = 0;

  const mainEnv = { ...process.env };
  // The main suite must never believe it is inside the namespace.
  delete mainEnv.PORTCULLIS_NETNS;
  delete mainEnv.PORTCULLIS_OUTER_NETNS;
  const mainRun = vitestArgs('main', null);
  const mainCode = await run(process.execPath, mainRun.args, mainEnv);
  const mainCounts = readCounts(mainRun.report);
  lines.push(summary('main', mainCode, mainCounts));
  failed ||= mainCode !== 0;
  total += mainCounts?.total ?? 0;

  const why = netnsUnavailable();
  if (why !== null) {
    lines.push(`netns: skipped: ${why}${ci ? ' (CI=true: this is a failure)' : ''}`);
    failed ||= ci;
  } else {
    const nsRun = vitestArgs('netns', 'vitest.netns.config.ts');
    // The helper refuses to configure a namespace equal to this one: a second guard against
    // ever touching the host network, should unshare somehow not have switched namespaces.
    const nsEnv = { ...process.env, PORTCULLIS_NETNS: '1', PORTCULLIS_OUTER_NETNS: readlinkSync('/proc/self/ns/net') };
    const nsCode = await run('unshare', ['-n', '--', process.execPath, ...nsRun.args], nsEnv);
    const nsCounts = readCounts(nsRun.report);
    lines.push(summary('netns', nsCode, nsCounts));
    failed ||= nsCode !== 0;
    total += nsCounts?.total ?? 0;
  }

  // With the namespace suite skipped, the filter may well have aimed at it alone.
  if (filtered && total === 0 && !failed && why === null) {
    lines.push(`no test matched the filters: ${extra.join(' ')}`);
    failed = true;
  }
  process.stdout.write(`\n${lines.join('\n')}\n`);
  return failed ? 1 : 0;
}

try {
  if (!existsSync(vitest)) throw new Error(`vitest is not installed (${vitest} is missing); run npm install`);
  process.exitCode = process.exitCode || (await main());
} catch (err) {
  process.stderr.write(`run-tests: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
} finally {
  rmSync(outDir, { recursive: true, force: true });
}
