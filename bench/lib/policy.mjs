// The benchmark's Portcullis policy: a few hundred realistic destinations (exact names, "*."
// wildcards, ports, method/path rules), several account rules and a deny list, plus the
// origin's test name, which resolves to 127.0.0.1 and is allowed to (allowPrivate).

/** Policy YAML with `count` filler destinations and the bench origin on `ports`. */
export function benchPolicy({ originHost, ports, account, count = 300 }) {
  const lines = ['version: 1', 'destinations:'];
  const names = [];
  for (let i = 0; i < count; i++) {
    const name = `svc-${i}`;
    names.push(name);
    const hosts = [`api.service${i}.example.com`, `"*.cdn${i}.example.net"`];
    if (i % 3 === 0) hosts.push(`downloads.vendor${i}.example.org`);
    if (i % 7 === 0) hosts.push(`"*.eu.region${i}.example.io"`);
    const extra = [];
    if (i % 5 === 0) extra.push('ports: [443, 8443]');
    if (i % 11 === 0) extra.push('methods: [GET, HEAD]', 'paths: ["/v1/**", "/health"]');
    if (i % 13 === 0) extra.push('lockdown: allow');
    lines.push(`  ${name}: { hosts: [${hosts.join(', ')}]${extra.length ? ', ' + extra.join(', ') : ''} }`);
  }
  lines.push(
    '  bench-origin:',
    '    description: The benchmark origin (test name → 127.0.0.1 via the bench DNS server).',
    `    hosts: [${originHost}]`,
    `    ports: [${ports.join(', ')}]`,
    '    allowPrivate: [127.0.0.1/32]',
  );
  const half = names.slice(0, count / 2);
  lines.push(
    'accounts:',
    '  - match: "ci-*"',
    `    allow: [${half.join(', ')}]`,
    '  - match: "report-*"',
    '    mode: report',
    `    allow: [${names.slice(0, 20).join(', ')}]`,
    `  - match: "${account.replace(/-.*$/, '')}-*"`,
    `    allow: [bench-origin, ${names.join(', ')}]`,
    '  - match: "*"',
    `    allow: [${names.slice(0, 10).join(', ')}]`,
    'deny:',
    '  hosts: ["*.ngrok.io", "*.ngrok-free.app", "*.trycloudflare.com", "*.loca.lt", pastebin.com, paste.ee, transfer.sh, webhook.site, "*.requestcatcher.com"]',
    // The bench drives one account far past the defaults (600 requests/min, 256 tunnels):
    // lift them, or the rate limiter would be what is measured.
    'limits:',
    '  requestsPerMinute: 1000000000',
    '  maxConcurrentTunnels: 100000',
  );
  return lines.join('\n') + '\n';
}
