/**
 * Writes policies/policy.schema.json from the zod policy schema (`npm run gen:schema`).
 * With --check it writes nothing and exits 1 when the committed file is stale (for CI).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { renderPolicyJsonSchema } from '../src/policy/json-schema.js';

export { renderPolicyJsonSchema };

/** Where the generated schema is committed, independent of the working directory. */
export const POLICY_SCHEMA_FILE = fileURLToPath(new URL('../policies/policy.schema.json', import.meta.url));

/** Current committed text, or null when the file does not exist yet. */
function committed(): string | null {
  try {
    return readFileSync(POLICY_SCHEMA_FILE, 'utf8');
  } catch {
    return null;
  }
}

/** Generates (or with --check verifies) the file; returns the process exit code. */
export function main(args: readonly string[]): number {
  const fresh = renderPolicyJsonSchema();
  if (args.includes('--check')) {
    if (committed() === fresh) return 0;
    process.stderr.write(`${POLICY_SCHEMA_FILE} is stale; run npm run gen:schema\n`);
    return 1;
  }
  writeFileSync(POLICY_SCHEMA_FILE, fresh);
  return 0;
}

// Run only as a script, so tests can import this module without writing anything.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = main(process.argv.slice(2));
}
