/**
 * The policy file's JSON Schema for editors (yaml-language-server, VS Code), generated from the
 * zod schema so the two cannot drift; committed as policies/policy.schema.json.
 */
import { z } from 'zod';
import { PolicySchema } from './schema.js';

/** The schema's `$id`: a name, not a location (editors find the file through the `$schema` comment). */
export const POLICY_SCHEMA_ID = 'urn:portcullis:policy:v1';

/** policies/policy.schema.json as it should be committed: pretty JSON with a trailing newline. */
export function renderPolicyJsonSchema(): string {
  // io: 'input' describes what an author writes, so keys with defaults are optional.
  const generated = z.toJSONSchema(PolicySchema, { io: 'input', target: 'draft-2020-12' });
  const { $schema, ...rest } = generated;
  const schema = {
    $schema,
    $id: POLICY_SCHEMA_ID,
    title: 'Portcullis policy',
    description:
      'Egress allowlist policy for Portcullis (SPEC §5). Validate with `portcullis policy check FILE`; host patterns, CIDRs and references between sections are checked there, beyond this schema.',
    ...rest,
  };
  return `${JSON.stringify(schema, null, 2)}\n`;
}
