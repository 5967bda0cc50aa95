// Benchmark: TLS interception. Leaf mint time, and requests/s through an intercepted tunnel vs an
// opaque tunnel to the same TLS origin (undici ProxyAgent, keep-alive, loopback only).
// Numbers only; never asserts.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ProxyAgent, request } from 'undici';
import { startApp } from '../dist/app.js';
import { loadConfig } from '../dist/config/load.js';
import { createLogger } from '../dist/observability/logger.js';
import { createCa, LeafMinter } from '../dist/tls/ca.js';

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function ipCert(dir) {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'o.key'), '-out', path.join(dir, 'o.crt'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  return { cert: readFileSync(path.join(dir, 'o.crt'), 'utf8'), key: readFileSync(path.join(dir, 'o.key'), 'utf8') };
}

async function mintTimes(n = 200) {
  const minter = await LeafMinter.fromPem(await createCa('bench'));
  await minter.mintPem('warm.example');
  const times = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await minter.mintPem(`host${i}.example.com`);
    times.push(performance.now() - t0);
  }
  return { medianMs: median(times), minMs: Math.min(...times), maxMs: Math.max(...times) };
}

async function requestsPerSecond(proxyPort, auth, ca, url, seconds, concurrency) {
  const agent = new ProxyAgent({ uri: `http://127.0.0.1:${proxyPort}`, token: auth, requestTls: { ca }, connections: concurrency });
  let n = 0;
  const deadline = performance.now() + seconds * 1000;
  const worker = async () => {
    while (performance.now() < deadline) {
      const r = await request(url, { dispatcher: agent });
      await r.body.dump();
      n++;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  const rps = n / ((performance.now() - t0) / 1000);
  await agent.close();
  return rps;
}

export async function benchIntercept({ seconds = 3, rounds = 3, concurrency = 8 } = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), 'portcullis-bench-intercept-'));
  const cert = ipCert(dir);
  const origin = https.createServer(cert, (req, res) => res.end('ok'));
  await new Promise((r) => origin.listen(0, '127.0.0.1', r));
  const port = origin.address().port;
  const opaque = https.createServer(cert, (req, res) => res.end('ok'));
  await new Promise((r) => opaque.listen(0, '127.0.0.1', r));
  const opaquePort = opaque.address().port;
  writeFileSync(
    path.join(dir, 'policy.yaml'),
    `version: 1
destinations:
  inspected: { hosts: ["127.0.0.1"], ports: [${port}], inspect: true, allowPrivate: [127.0.0.1/32] }
  opaque: { hosts: ["127.0.0.1"], ports: [${opaquePort}], allowPrivate: [127.0.0.1/32] }
accounts: [{ match: "*", allow: [inspected, opaque] }]
limits: { requestsPerMinute: 100000000 }
`,
  );
  const config = loadConfig(['--policy', path.join(dir, 'policy.yaml'), '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--store', `file:${path.join(dir, 'state.json')}`, '--admin-token-file', path.join(dir, 'tokens.json'), '--ca-dir', path.join(dir, 'ca')], {});
  const app = await startApp(config, { logger: createLogger({ level: 'info', destination: path.join(dir, 'log.jsonl') }), upstreamCa: cert.cert });
  try {
    const adminToken = readFileSync(path.join(dir, 'admin.token'), 'utf8').trim();
    const created = await (await fetch(`http://${app.adminAddress}/v1/accounts/bench/sessions`, { method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: '{"app":"bench"}' })).json();
    const auth = `Basic ${Buffer.from(`bench:${created.token}`).toString('base64')}`;
    const proxyCa = readFileSync(path.join(dir, 'ca', 'ca-cert.pem'), 'utf8');
    const intercepted = [];
    const tunnel = [];
    for (let r = 0; r < rounds; r++) {
      intercepted.push(await requestsPerSecond(app.proxyAddress.port, auth, proxyCa, `https://127.0.0.1:${port}/`, seconds, concurrency));
      tunnel.push(await requestsPerSecond(app.proxyAddress.port, auth, cert.cert, `https://127.0.0.1:${opaquePort}/`, seconds, concurrency));
    }
    return { mint: await mintTimes(), interceptedRps: median(intercepted), opaqueRps: median(tunnel), interceptedRange: [Math.min(...intercepted), Math.max(...intercepted)], opaqueRange: [Math.min(...tunnel), Math.max(...tunnel)], concurrency };
  } finally {
    await app.close();
    origin.close();
    opaque.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printIntercept(r) {
  console.log('TLS interception');
  console.log(`  leaf mint: median ${r.mint.medianMs.toFixed(2)} ms (${r.mint.minMs.toFixed(2)}–${r.mint.maxMs.toFixed(2)})`);
  console.log(`  keep-alive requests/s, ${r.concurrency} connections: intercepted ${r.interceptedRps.toFixed(0)} (${r.interceptedRange.map((x) => x.toFixed(0)).join('–')}), opaque tunnel ${r.opaqueRps.toFixed(0)} (${r.opaqueRange.map((x) => x.toFixed(0)).join('–')})`);
  console.log(`  ratio intercepted/opaque: ${(r.interceptedRps / r.opaqueRps).toFixed(2)}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printIntercept(await benchIntercept());
}
