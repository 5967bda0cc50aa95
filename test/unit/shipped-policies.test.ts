import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { describe, expect, test } from 'vitest';
import { compilePolicy } from '../../src/policy/compile.js';
import { loadPolicyFileSync } from '../../src/policy/load.js';
import { runPolicyTests } from '../../src/policy/policy-tests.js';

const root = path.resolve(import.meta.dirname, '../..');
const shipped = [
  'policies/default.yaml',
  ...readdirSync(path.join(root, 'policies/examples'))
    .filter((f) => f.endsWith('.yaml'))
    .map((f) => `policies/examples/${f}`),
];
const schema = JSON.parse(readFileSync(path.join(root, 'policies/policy.schema.json'), 'utf8')) as object;
const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);

describe.each(shipped)('%s', (file) => {
  const loaded = loadPolicyFileSync(path.join(root, file));

  test('loads without errors and has a tests: table', () => {
    expect(loaded.policy.tests.length).toBeGreaterThan(3);
  });

  test('every row of its tests: table passes', () => {
    const failures = runPolicyTests(compilePolicy(loaded)).filter((r) => !r.passed);
    expect(failures).toEqual([]);
  });

  test('the generated JSON Schema accepts it', () => {
    const ok = validate(parse(readFileSync(path.join(root, file), 'utf8')));
    expect(validate.errors ?? []).toEqual([]);
    expect(ok).toBe(true);
  });
});

test('the JSON Schema rejects what the loader rejects structurally', () => {
  expect(validate({ version: 1, destinations: { a: { hosts: ['x.com'], bogus: true } } })).toBe(false);
  expect(validate({ version: 2 })).toBe(false);
});
