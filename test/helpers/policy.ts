/**
 * Policy helpers for tests: compile YAML text, build decision inputs with defaults.
 */
import { compilePolicy, type CompiledPolicy } from '../../src/policy/compile.js';
import type { DecisionInput } from '../../src/policy/decide.js';
import { parsePolicy } from '../../src/policy/load.js';

/** Compiles policy YAML text (throws PolicyLoadError on invalid input). */
export function compileYaml(yaml: string, file = 'test.yaml'): CompiledPolicy {
  return compilePolicy(parsePolicy(yaml, file));
}

/** A plain-HTTP GET decision input with overridable fields. */
export function httpInput(overrides: Partial<DecisionInput> & { host: string }): DecisionInput {
  return {
    account: 'agent',
    kind: 'http',
    scheme: 'http',
    hostKind: 'name',
    port: 80,
    method: 'GET',
    path: '/',
    query: null,
    headerNames: ['host', 'user-agent', 'accept'],
    hasBody: false,
    upgrade: null,
    requestBytes: 100,
    lockdown: false,
    developerMode: false,
    ...overrides,
  };
}

/** A CONNECT decision input with overridable fields. */
export function connectInput(overrides: Partial<DecisionInput> & { host: string }): DecisionInput {
  return {
    account: 'agent',
    kind: 'connect',
    scheme: 'https',
    hostKind: 'name',
    port: 443,
    method: 'CONNECT',
    lockdown: false,
    developerMode: false,
    ...overrides,
  };
}
