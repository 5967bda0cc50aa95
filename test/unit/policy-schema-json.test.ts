import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { POLICY_SCHEMA_ID, renderPolicyJsonSchema } from '../../src/policy/json-schema.js';

const COMMITTED = new URL('../../policies/policy.schema.json', import.meta.url);

describe('policies/policy.schema.json', () => {
  test('is up to date with the zod schema', () => {
    const committed = readFileSync(COMMITTED, 'utf8');
    expect(committed, 'policies/policy.schema.json is stale: run `npm run gen:schema`').toBe(renderPolicyJsonSchema());
  });

  test('is pretty JSON with one trailing newline and names itself', () => {
    const text = renderPolicyJsonSchema();
    expect(text.endsWith('}\n')).toBe(true);
    expect(text).toContain('\n  "type": "object",\n');
    const schema = JSON.parse(text) as Record<string, unknown>;
    expect(schema).toMatchObject({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: POLICY_SCHEMA_ID,
      title: 'Portcullis policy',
      type: 'object',
      additionalProperties: false,
    });
  });

  test('describes the input side: keys with defaults are optional', () => {
    const schema = JSON.parse(renderPolicyJsonSchema()) as {
      required: string[];
      properties: {
        destinations: { additionalProperties: { required: string[]; properties: { inspect: { default: unknown } } } };
        lockdown: { required?: string[] };
      };
    };
    expect(schema.required).toEqual(['version']);
    const destination = schema.properties.destinations.additionalProperties;
    expect(destination.required).toEqual(['hosts']);
    expect(destination.properties.inspect.default).toBe(false);
    expect(schema.properties.lockdown.required ?? []).toEqual([]);
  });
});
