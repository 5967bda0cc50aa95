/**
 * Runs a policy's own `tests:` table (`portcullis policy test`).
 */
import { CanonicalError } from '../net/canonical.js';
import type { CompiledPolicy } from './compile.js';
import { explain } from './explain.js';
import type { PolicyTest } from './schema.js';

/** The result of one test row. */
export interface PolicyTestResult {
  readonly name: string;
  readonly passed: boolean;
  readonly expected: string;
  readonly actual: string;
}

/** "deny", "deny lockdown_method", "allow allowlisted", "report report_would_deny (not_allowlisted)". */
function expectation(expect: PolicyTest['expect']): { verdict: string; reason: string | null } {
  if (typeof expect === 'string') return { verdict: expect, reason: null };
  const [verdict, reason] = Object.entries(expect)[0]!;
  return { verdict, reason };
}

/** Runs one test row against the compiled policy. */
export function runPolicyTest(test: PolicyTest, policy: CompiledPolicy): PolicyTestResult {
  const space = test.request.indexOf(' ');
  const method = test.request.slice(0, space);
  const url = test.request.slice(space + 1);
  const want = expectation(test.expect);
  const expected = want.reason ? `${want.verdict} ${want.reason}` : want.verdict;
  let actual: string;
  let verdict: string;
  let reasons: string[];
  try {
    const { decision } = explain(
      { account: test.account, method, url, lockdown: test.lockdown, developerMode: test.developerMode, headers: test.headers, body: test.body },
      policy,
    );
    verdict = decision.verdict;
    // In report mode both the allow reason and the would-be denial may be asserted.
    reasons = decision.wouldDeny ? [decision.reason, decision.wouldDeny] : [decision.reason];
    actual = decision.wouldDeny ? `${verdict} ${decision.reason} (${decision.wouldDeny})` : `${verdict} ${decision.reason}`;
  } catch (err) {
    if (!(err instanceof CanonicalError)) throw err;
    verdict = 'deny';
    reasons = ['bad_request'];
    actual = `deny bad_request (${err.detail})`;
  }
  const passed = verdict === want.verdict && (want.reason === null || reasons.includes(want.reason));
  return { name: test.name, passed, expected, actual };
}

/** Runs every test row of the policy. */
export function runPolicyTests(policy: CompiledPolicy): PolicyTestResult[] {
  return policy.policy.tests.map((t) => runPolicyTest(t, policy));
}
