// Benchmark: decide() cost per call with 10, 1,000 and 100,000 host rules, and compile time.
// Reports medians of several runs; never asserts (machines are shared and noisy).
import { performance } from 'node:perf_hooks';
import { compilePolicy } from '../dist/policy/compile.js';
import { decide } from '../dist/policy/decide.js';
import { parsePolicy } from '../dist/policy/load.js';

const RUNS = 7;
const CALLS = 200_000;

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** A policy with `rules` host rules: half exact names, half "*." wildcards. */
function policyYaml(rules) {
  const lines = ['version: 1', 'destinations:'];
  const perDest = 10;
  for (let d = 0; d < rules / perDest; d++) {
    const hosts = [];
    for (let h = 0; h < perDest; h++) {
      const i = d * perDest + h;
      hosts.push(i % 2 === 0 ? `host${i}.example.com` : `"*.zone${i}.example.net"`);
    }
    lines.push(`  d${d}: { hosts: [${hosts.join(', ')}], methods: [GET, HEAD], paths: ["/api/**", "/health"] }`);
  }
  lines.push('accounts:');
  lines.push('  - match: "ci-*"', `    allow: [${Array.from({ length: Math.min(rules / perDest, 50) }, (_, i) => `d${i}`).join(', ')}]`);
  lines.push('  - match: "*"', '    allow: [d0]');
  lines.push('deny:', '  hosts: ["*.ngrok.io", pastebin.com]');
  return lines.join('\n');
}

function inputs(rules) {
  const last = rules - 2;
  return [
    { account: 'ci-7', kind: 'http', scheme: 'http', host: 'host0.example.com', hostKind: 'name', port: 80, method: 'GET', path: '/api/v1/items/42', query: 'page=2', headerNames: ['host', 'user-agent', 'accept'], hasBody: false, upgrade: null, requestBytes: 180, lockdown: false, developerMode: false },
    { account: 'ci-7', kind: 'connect', scheme: 'https', host: 'a.b.zone1.example.net', hostKind: 'name', port: 443, method: 'CONNECT', lockdown: false, developerMode: false },
    { account: 'agent', kind: 'connect', scheme: 'https', host: `host${last}.example.com`, hostKind: 'name', port: 443, method: 'CONNECT', lockdown: false, developerMode: false },
    { account: 'agent', kind: 'http', scheme: 'http', host: 'unknown.example.org', hostKind: 'name', port: 80, method: 'POST', path: '/x', query: null, headerNames: ['host'], hasBody: true, upgrade: null, requestBytes: 90, lockdown: false, developerMode: false },
  ];
}

export async function benchDecide() {
  const results = [];
  for (const rules of [10, 1_000, 100_000]) {
    const source = policyYaml(rules);
    const loaded = parsePolicy(source, `bench-${rules}.yaml`);
    const compileTimes = [];
    let compiled;
    for (let r = 0; r < (rules >= 100_000 ? 3 : RUNS); r++) {
      const t0 = performance.now();
      compiled = compilePolicy(loaded);
      compileTimes.push(performance.now() - t0);
    }
    const ins = inputs(rules);
    let sink = 0;
    for (let i = 0; i < 50_000; i++) sink += decide(ins[i & 3], compiled).verdict.length; // warm-up
    const perCall = [];
    for (let r = 0; r < RUNS; r++) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < CALLS; i++) sink += decide(ins[i & 3], compiled).verdict.length;
      perCall.push(Number(process.hrtime.bigint() - t0) / CALLS);
    }
    if (sink === 0) throw new Error('unreachable');
    results.push({ rules, nsPerDecision: median(perCall), minNs: Math.min(...perCall), maxNs: Math.max(...perCall), compileMs: median(compileTimes) });
  }
  return results;
}

export function printDecide(results) {
  console.log('decide() — ns per decision (median of %d runs × %d calls; 4 mixed inputs)', RUNS, CALLS);
  console.log('  rules      median ns   (min–max)        compile ms');
  for (const r of results) {
    console.log(`  ${String(r.rules).padEnd(9)}  ${r.nsPerDecision.toFixed(0).padStart(9)}   (${r.minNs.toFixed(0)}–${r.maxNs.toFixed(0)})`.padEnd(48) + `${r.compileMs.toFixed(1).padStart(10)}`);
  }
  const first = results[0];
  const last = results[results.length - 1];
  console.log(`  ratio 100k/10 rules: ${(last.nsPerDecision / first.nsPerDecision).toFixed(2)}×`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printDecide(await benchDecide());
}
