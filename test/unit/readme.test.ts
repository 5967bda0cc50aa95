import { readFileSync } from 'node:fs';
import path from 'node:path';
import { expect, test } from 'vitest';
import { REASONS, REASON_CODES } from '../../src/reasons.js';
import { METRIC_NAMES } from '../../src/observability/metrics.js';

const readme = readFileSync(path.resolve(import.meta.dirname, '../../README.md'), 'utf8');

test('the README reason-code table is the registry, row for row', () => {
  const rows = [...readme.matchAll(/^\| `([a-z0-9_]+)` \| (deny|allow|error) \| (\d{3}) \| (.+) \|$/gm)].map((m) => [m[1], m[2], Number(m[3]), m[4]]);
  const registry = REASON_CODES.map((code) => [code, REASONS[code].kind, REASONS[code].status, REASONS[code].message]);
  expect(rows).toEqual(registry);
});

test('every metric is documented in the README', () => {
  for (const name of METRIC_NAMES) expect(readme).toContain(`\`${name}\``);
});

test('the README shows the two set-up commands and .ci/run calls the test one', () => {
  expect(readme).toContain('npm install && npm start');
  expect(readme).toContain('npm install && npm test');
  expect(readFileSync(path.resolve(import.meta.dirname, '../../.ci/run'), 'utf8')).toMatch(/npm ci && npm test/);
});
