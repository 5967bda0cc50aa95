/**
 * `portcullis policy check|test` and `portcullis explain`: the security engineer's tools.
 * They read a policy file and print; nothing is sent anywhere.
 */
import { parseArgs } from 'node:util';
import { CanonicalError } from '../net/canonical.js';
import { compilePolicy } from '../policy/compile.js';
import { explain, explanationJson } from '../policy/explain.js';
import { formatIssue, loadPolicyFile, PolicyLoadError, type LoadedPolicy } from '../policy/load.js';
import { runPolicyTests } from '../policy/policy-tests.js';
import { UsageError, type Io } from './io.js';

/** Default policy path, relative to the working directory. */
export const DEFAULT_POLICY = 'policies/default.yaml';

async function loadOrReport(file: string, io: Io): Promise<LoadedPolicy | null> {
  try {
    return await loadPolicyFile(file);
  } catch (err) {
    if (!(err instanceof PolicyLoadError)) throw err;
    for (const issue of err.issues) io.err(formatIssue(issue));
    io.err(`${file}: ${err.issues.length} error${err.issues.length === 1 ? '' : 's'}`);
    return null;
  }
}

/** `policy check FILE`: validate and print every error with file:line:col. Exit 0 or 1. */
export async function policyCheck(argv: string[], io: Io): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length === 0) throw new UsageError('usage: portcullis policy check FILE...');
  let failed = false;
  for (const file of positionals) {
    const loaded = await loadOrReport(file, io);
    if (!loaded) {
      failed = true;
      continue;
    }
    for (const w of loaded.warnings) io.err(`${formatIssue(w)} (warning)`);
    const p = loaded.policy;
    io.out(`${file}: ok (hash ${loaded.hash.slice(0, 12)}, ${Object.keys(p.destinations).length} destinations, ${p.accounts.length} account rules, ${p.tests.length} tests)`);
  }
  return failed ? 1 : 0;
}

/** `policy test FILE`: run the file's tests: table, print failures with expected vs actual. */
export async function policyTest(argv: string[], io: Io): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length === 0) throw new UsageError('usage: portcullis policy test FILE...');
  let failed = 0;
  for (const file of positionals) {
    const loaded = await loadOrReport(file, io);
    if (!loaded) {
      failed++;
      continue;
    }
    const results = runPolicyTests(compilePolicy(loaded));
    for (const r of results) {
      if (r.passed) io.out(`  ok    ${r.name}`);
      else io.out(`  FAIL  ${r.name}\n        expected: ${r.expected}\n        actual:   ${r.actual}`);
    }
    const bad = results.filter((r) => !r.passed).length;
    failed += bad;
    io.out(`${file}: ${results.length - bad} passed, ${bad} failed`);
  }
  return failed > 0 ? 1 : 0;
}

/** `explain [--policy FILE] --account A [--lockdown] [--developer-mode] [--json] METHOD URL`. */
export async function explainCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      policy: { type: 'string', default: process.env.PORTCULLIS_POLICY ?? DEFAULT_POLICY },
      account: { type: 'string' },
      lockdown: { type: 'boolean', default: false },
      'developer-mode': { type: 'boolean', default: false },
      header: { type: 'string', multiple: true, short: 'H' },
      body: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.account || positionals.length !== 2) {
    throw new UsageError('usage: portcullis explain [--policy FILE] --account A [--lockdown] [--developer-mode] [-H "Name: value"] [--body] [--json] METHOD URL');
  }
  const headers: Record<string, string> = {};
  for (const h of values.header ?? []) {
    const colon = h.indexOf(':');
    if (colon <= 0) throw new UsageError(`bad header "${h}": expected "Name: value"`);
    headers[h.slice(0, colon).trim().toLowerCase()] = h.slice(colon + 1).trim();
  }
  const loaded = await loadOrReport(values.policy, io);
  if (!loaded) return 1;
  const policy = compilePolicy(loaded);
  const [method, url] = positionals as [string, string];
  try {
    const result = explain(
      { account: values.account, method: method.toUpperCase(), url, lockdown: values.lockdown, developerMode: values['developer-mode'], headers, body: values.body },
      policy,
    );
    const d = result.decision;
    if (values.json) {
      io.out(JSON.stringify(explanationJson(result, policy.hash)));
    } else {
      io.out(`${d.verdict.toUpperCase()} ${d.reason}${d.wouldDeny ? ` (enforce: ${d.wouldDeny})` : ''}`);
      io.out(`destination: ${d.destination ?? '(none)'}`);
      for (const line of result.why) io.out(`  ${line}`);
    }
    return 0;
  } catch (err) {
    if (!(err instanceof CanonicalError)) throw err;
    if (values.json) io.out(JSON.stringify({ decision: 'deny', reason: 'bad_request', error: err.detail }));
    else io.out(`DENY bad_request\n  ${err.detail}`);
    return 0;
  }
}
