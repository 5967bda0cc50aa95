// Benchmark: Portcullis side by side with no proxy (direct), squid, tinyproxy and node-floor (the
// thinnest Node forwarding proxy, bench/peers/node-floor.mjs: what Node itself costs), in one run,
// on loopback. Workloads are interleaved in short rounds (the target order rotates every round)
// so machine drift hits every target alike; figures are medians with min–max. Numbers only:
// nothing here passes or fails.
//
//   ka1, ka32  plain HTTP keep-alive through the proxy (wrk, absolute-form): req/s, p50/p99
//   newconn    one request per new client connection (wrk, Connection: close): req/s
//   connect    CONNECT + TLS handshake with SNI to a TLS origin, then close: tunnels/s
//   bulk       256 MiB down one tunnel (a real ClientHello first, then plain bytes): MB/s
//   rss        proxy RSS idle and with 2,000 idle TLS tunnels: KiB per tunnel, on a fresh
//              instance of each proxy (bench/lib/heap-per-tunnel.mjs gives Portcullis' live heap
//              per tunnel by object kind, which RSS deltas of a Node process blur)
// Every run also reports the proxy's own CPU time (user + system, all threads, /proc) per request
// or tunnel: on a 2-core machine shared with the load generators and origins, that is the
// steadiest figure of what the proxy costs.
//
// Portcullis runs as `node dist/cli.js serve` (file store, a policy of 300 destinations plus the
// origin's test name, a session from the admin API, info logs to a file). It resolves the name
// through a bench DNS server (→ 127.0.0.1, allowPrivate on that destination); squid gets the same
// name from a hosts_file; tinyproxy, which only reads /etc/hosts, and node-floor are given 127.0.0.1.
// Tunnel end points (TLS origin, CONNECT+handshake client, bulk source and sink) are C
// (bench/lib/tlsload.c, built at run time with cc and OpenSSL) so that Node's TLS cost does not
// cap the figures; without a compiler the bench falls back to Node end points and says so.
import { createReadStream, mkdirSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ORIGIN_HOST, startBenchEnv } from './lib/env.mjs';
import { summarizeProfile } from './lib/cpuprofile.mjs';
import { attachInspector } from './lib/inspector.mjs';
import { cpuMs, rssKiB } from './lib/procs.mjs';
import { summarize } from './lib/stats.mjs';
import { findBinary } from './lib/targets.mjs';
import { runWrk } from './lib/wrk.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const MiB = 1024 * 1024;
/** Targets that are Node processes: their RSS is also read after a full GC (inspector). */
const NODE_TARGETS = new Set(['portcullis', 'node-floor']);

/** Every option with its default. Durations are seconds unless the name says ms. */
export const PROXY_DEFAULTS = Object.freeze({
  /** Measured rounds per workload and target. */
  rounds: 4,
  /** Seconds of each wrk run and each tunnel-setup run. */
  durationS: 2,
  /** Bytes of the bulk transfer. */
  bulkBytes: 256 * MiB,
  /** Idle tunnels held open for the RSS figure (RSS is also read at half of it). */
  idleTunnels: 2000,
  /** Concurrent connections of the keep-alive runs. */
  keepAliveConnections: [1, 32],
  /** Concurrent connections of the new-connection run and loops of the CONNECT run. */
  concurrency: 32,
  targets: ['direct', 'squid', 'tinyproxy', 'node-floor', 'portcullis'],
  /** node-floor's processes: more than one runs it under node:cluster (CPU and RSS cover them all). */
  floorWorkers: 1,
  workloads: ['ka1', 'ka32', 'newconn', 'connect', 'bulk', 'rss'],
  /** Portcullis entry point and extra node flags (e.g. --cpu-prof). */
  portcullisCli: path.join(HERE, '..', 'dist', 'cli.js'),
  portcullisNodeArgs: [],
  /** Use Node TLS and bulk end points even when bench/lib/tlsload.c builds. */
  nodeEndpoints: false,
  /** Keep the temp directory (logs, configs) instead of removing it. */
  keep: false,
  /** Progress lines go here. */
  progress: (line) => process.stderr.write(`  · ${line}\n`),
});

/** Runs `fn` while measuring the proxy's CPU time; adds `cpuUsPerOp` when `ops(result)` > 0. */
async function withCpu(target, fn, ops) {
  const c0 = target.pid ? cpuMs(target.pid) : NaN;
  const r = await fn();
  const c1 = target.pid ? cpuMs(target.pid) : NaN;
  const n = ops(r);
  return { ...r, cpuUsPerOp: n > 0 ? ((c1 - c0) * 1000) / n : NaN };
}

/** The workloads that run in rounds: label, unit and one measurement. */
function roundWorkloads(o, env) {
  const w = {};
  for (const c of o.keepAliveConnections) {
    w[`ka${c}`] = {
      label: `keep-alive c${c}`,
      run: (t, d = o.durationS) => withCpu(t, () => runWrk({ target: t, originPort: env.httpPort, connections: c, durationS: d }), (r) => r.requests),
    };
  }
  w.newconn = {
    label: `new conn c${o.concurrency}`,
    run: (t, d = o.durationS) => withCpu(t, () => runWrk({ target: t, originPort: env.httpPort, connections: o.concurrency, durationS: d, close: true }), (r) => r.requests),
  };
  w.connect = {
    label: `CONNECT+TLS c${o.concurrency}`,
    run: (t, d = o.durationS) => withCpu(t, () => env.tunnelRate(t, d * 1000, o.concurrency), (r) => r.count),
  };
  w.bulk = {
    label: `bulk ${Math.round(o.bulkBytes / MiB)} MiB`,
    run: async (t) => {
      try {
        return await env.bulk(t);
      } catch (err) {
        return { mbPerSecond: NaN, errors: 1, firstError: err.message };
      }
    },
  };
  return w;
}

/**
 * RSS idle (after a warm-up), at half and at all of `count` idle tunnels, and after closing them.
 * For the Node targets (Portcullis, node-floor) also RSS and live heap after a full GC at idle and
 * with all tunnels: a Node process keeps freed heap committed, and 2,000 tunnels can fit in that
 * slack unseen.
 */
async function measureRss(t, o, env, workloads) {
  const heap = async () => (t.heap ? await t.heap() : null);
  // One inspector sees one process: a node-floor under node:cluster gets RSS figures only.
  const inspector = NODE_TARGETS.has(t.name) && !(t.workers > 1) ? await attachInspector(t.process).catch(() => null) : null;
  const afterGc = async () => {
    if (inspector === null) return null;
    await inspector.gc();
    await sleep(500);
    const m = await inspector.memoryUsage();
    return { rssKiB: rssKiB(t.pid), heapUsedKiB: m.heapUsed / 1024, externalKiB: m.external / 1024 };
  };
  const startKiB = rssKiB(t.pid);
  // Warm-up: a second of keep-alive requests and of tunnel setups, so that idle is "has served".
  if (workloads.ka32) await workloads.ka32.run(t, 1).catch(() => undefined);
  if (workloads.connect) await workloads.connect.run(t, 1).catch(() => undefined);
  const warm = await env.idleTunnels(t, 100);
  await warm.close();
  await sleep(1500);
  const idleKiB = rssKiB(t.pid);
  const heapIdle = await heap();
  const gcIdle = await afterGc();
  const half = await env.idleTunnels(t, o.idleTunnels / 2);
  await sleep(1000);
  const halfKiB = rssKiB(t.pid);
  const rest = await env.idleTunnels(t, o.idleTunnels / 2);
  await sleep(1500);
  const fullKiB = rssKiB(t.pid);
  const heapFull = await heap();
  const gcFull = await afterGc();
  inspector?.close();
  const open = half.sockets.length + rest.sockets.length;
  const alive = [...half.sockets, ...rest.sockets].filter((s) => !s.destroyed).length;
  await half.close();
  await rest.close();
  await sleep(1500);
  const afterKiB = rssKiB(t.pid);
  return {
    startKiB,
    idleKiB,
    halfKiB,
    fullKiB,
    afterCloseKiB: afterKiB,
    opened: open,
    aliveAtMeasure: alive,
    errors: half.errors + rest.errors,
    firstError: half.firstError ?? rest.firstError,
    perTunnelKiB: (fullKiB - idleKiB) / open,
    marginalKiB: (fullKiB - halfKiB) / rest.sockets.length,
    heapIdle,
    heapFull,
    gcIdle,
    gcFull,
    gcRssPerTunnelKiB: gcIdle && gcFull ? (gcFull.rssKiB - gcIdle.rssKiB) / open : undefined,
    liveHeapPerTunnelKiB: gcIdle && gcFull ? (gcFull.heapUsedKiB - gcIdle.heapUsedKiB) / open : undefined,
  };
}

/** Counts Portcullis log lines by level and the egress lines by decision/reason. */
async function scanLog(file) {
  const out = { lines: 0, byLevel: {}, egress: 0, notAllowed: {}, errorSamples: [] };
  const rl = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  for await (const line of rl) {
    if (line === '') continue;
    out.lines++;
    let j;
    try {
      j = JSON.parse(line);
    } catch {
      out.byLevel.unparsable = (out.byLevel.unparsable ?? 0) + 1;
      continue;
    }
    out.byLevel[j.level] = (out.byLevel[j.level] ?? 0) + 1;
    if (j.msg === 'egress') {
      out.egress++;
      if (j.decision !== 'allow' || j.error !== undefined) {
        const key = `${j.kind}/${j.phase ?? 'decision'}/${j.decision}/${j.reason}${j.error ? ` (${j.error})` : ''}`;
        out.notAllowed[key] = (out.notAllowed[key] ?? 0) + 1;
      }
    } else if (j.level !== 'info' && out.errorSamples.length < 5) {
      out.errorSamples.push(`${j.level}: ${j.msg} ${j.err ? String(j.err).split('\n')[0] : ''}`.trim());
    }
  }
  return out;
}

/** Runs the whole comparison; returns plain data (see printProxy). */
export async function benchProxy(options = {}) {
  const o = { ...PROXY_DEFAULTS, ...options };
  const progress = o.progress;
  let env = null;
  const results = {
    meta: {
      date: new Date().toISOString(),
      node: process.version,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model ?? null,
      loadavg: os.loadavg(),
      rounds: o.rounds,
      durationS: o.durationS,
      bulkBytes: o.bulkBytes,
      idleTunnels: o.idleTunnels,
      concurrency: o.concurrency,
      originHost: ORIGIN_HOST,
      versions: {},
      skipped: {},
      dir: null,
    },
    targets: [],
    workloads: {},
    rss: {},
    ratios: {},
    portcullisLog: null,
  };
  try {
    if (findBinary('wrk') === null && o.workloads.some((w) => w.startsWith('ka') || w === 'newconn')) {
      results.meta.skipped.wrk = 'wrk not installed (apt-get install wrk): keep-alive and new-connection workloads skipped';
      o.workloads = o.workloads.filter((w) => !(w.startsWith('ka') || w === 'newconn'));
    }
    env = await startBenchEnv(o);
    if (o.keep) results.meta.dir = env.dir;
    results.meta.tunnelEndpoints = env.meta.tunnelEndpoints;
    progress(`origins: http ${env.httpPort}, tls ${env.tlsPort}, bulk ${env.bulkPort}; tunnel end points ${env.meta.tunnelEndpoints}; dns ${env.dns.server}`);
    const targets = [];
    for (const name of o.targets) {
      const t = await env.startTarget(name);
      if (t.skipped) {
        results.meta.skipped[name] = t.skipped;
        progress(`${name}: skipped — ${t.skipped}`);
        continue;
      }
      if (t.version) results.meta.versions[name] = t.version;
      progress(`${name}: ${t.port ? `127.0.0.1:${t.port}, pid ${t.pid}` : 'no proxy'}`);
      targets.push(t);
    }
    results.targets = targets.map((t) => t.name);

    const all = roundWorkloads(o, env);
    const chosen = o.workloads.filter((w) => all[w] !== undefined);
    // Warm-up (not recorded): JIT, pools, squid's and tinyproxy's first connections.
    for (const t of targets) {
      for (const w of chosen) {
        if (w === 'bulk') continue;
        await all[w].run(t, 1).catch(() => undefined);
      }
    }
    progress(`warm-up done; ${o.rounds} rounds of ${chosen.join(', ')}`);
    const raw = {};
    for (let r = 0; r < o.rounds; r++) {
      const order = targets.map((_, i) => targets[(i + r) % targets.length]);
      for (const w of chosen) {
        for (const t of order) {
          const m = await all[w].run(t).catch((err) => ({ errors: 1, firstError: err.message }));
          ((raw[w] ??= {})[t.name] ??= []).push(m);
        }
      }
      progress(`round ${r + 1}/${o.rounds} done`);
    }
    for (const w of chosen) {
      const per = {};
      for (const t of targets) {
        const ms = raw[w]?.[t.name] ?? [];
        const pick = (k) => summarize(ms.map((m) => m[k]));
        const errors = ms.reduce((n, m) => n + (m.errors ?? 0), 0);
        const non2xx = ms.reduce((n, m) => n + (m.non2xx ?? 0), 0);
        const firstError = ms.find((m) => m.firstError)?.firstError ?? null;
        per[t.name] =
          w === 'bulk'
            ? { mbPerSecond: pick('mbPerSecond'), errors, firstError }
            : w === 'connect'
              ? { perSecond: pick('perSecond'), p50Ms: pick('p50Ms'), p99Ms: pick('p99Ms'), cpuUsPerOp: pick('cpuUsPerOp'), errors, firstError }
              : {
                  rps: pick('rps'),
                  p50Ms: pick('p50Ms'),
                  p99Ms: pick('p99Ms'),
                  cpuUsPerOp: pick('cpuUsPerOp'),
                  errors,
                  errorKinds: Object.fromEntries(['connect', 'read', 'write', 'timeout'].map((k) => [k, ms.reduce((n, m) => n + (m.errorKinds?.[k] ?? 0), 0)])),
                  non2xx,
                  firstError,
                };
      }
      results.workloads[w] = { label: all[w].label, perTarget: per };
    }

    // The loaded instances are done: note Portcullis' RSS after the load, stop them all, and
    // read its log for anything that went wrong.
    for (const t of targets) {
      if (t.pid !== null) results.meta[`rssAfterLoadKiB.${t.name}`] = rssKiB(t.pid);
      await t.stop();
    }
    const pc = targets.find((t) => t.name === 'portcullis');
    if (pc) {
      results.portcullisLog = await scanLog(pc.logFile);
      results.portcullisLog.exit = await pc.process.exit;
      results.portcullisLog.stderrTail = pc.process.stderr.trim().split('\n').slice(-3);
    }

    // RSS on a fresh instance of each proxy (after a short warm-up): a process that has just
    // served the load workloads holds freed heap and buffers that idle tunnels would fill
    // unseen, which hides what a tunnel costs.
    if (o.workloads.includes('rss')) {
      for (const t0 of targets) {
        if (t0.pid === null) continue;
        // A Node target's inspector port is only opened (by SIGUSR1) for the after-GC figures.
        const inspect = '--inspect-port=127.0.0.1:0';
        const extra = t0.name === 'portcullis' ? { nodeArgs: [...o.portcullisNodeArgs, inspect] } : t0.name === 'node-floor' && o.floorWorkers <= 1 ? { nodeArgs: [inspect] } : {};
        const t = await env.startTarget(t0.name, `${t0.name}-rss`, extra);
        if (t.skipped) {
          results.rss[t0.name] = { skipped: t.skipped };
          continue;
        }
        progress(`rss: fresh ${t.name} with ${o.idleTunnels} idle tunnels`);
        try {
          results.rss[t.name] = await measureRss(t, o, env, all);
        } finally {
          await t.stop();
        }
      }
    }
    results.ratios = ratios(results);
    results.meta.loadavgEnd = os.loadavg();
  } finally {
    await env?.close();
  }
  return results;
}

/** The headline figure of each workload, for ratios: [key, higher-is-better]. */
const HEADLINES = [
  ['ka1', 'rps', true],
  ['ka32', 'rps', true],
  ['ka32', 'p99Ms', false],
  ['newconn', 'rps', true],
  ['connect', 'perSecond', true],
  ['bulk', 'mbPerSecond', true],
];

function ratios(results) {
  const out = {};
  for (const other of ['squid', 'direct', 'node-floor', 'tinyproxy']) {
    if (!results.targets.includes('portcullis') || !results.targets.includes(other)) continue;
    const r = {};
    for (const [w, k] of HEADLINES) {
      const a = results.workloads[w]?.perTarget.portcullis?.[k]?.median;
      const b = results.workloads[w]?.perTarget[other]?.[k]?.median;
      if (a !== undefined && b !== undefined) r[`${w}.${k}`] = a / b;
    }
    // RSS after a full GC for the Node targets: their plain RSS delta hides tunnels in heap slack.
    const pa = results.rss.portcullis?.gcRssPerTunnelKiB ?? results.rss.portcullis?.perTunnelKiB;
    const pb = results.rss[other]?.gcRssPerTunnelKiB ?? results.rss[other]?.perTunnelKiB;
    if (pa !== undefined && pb !== undefined) r['rss.perTunnelKiB'] = pa / pb;
    out[`portcullis/${other}`] = r;
  }
  return out;
}

function fmt(x, digits = 0) {
  if (x === undefined || x === null || !Number.isFinite(x)) return '—';
  return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function cell(s, digits = 0) {
  if (!s || !Number.isFinite(s.median)) return '—';
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}

/** Prints the comparison table, ratio lines, RSS and anything that went wrong. */
export function printProxy(results) {
  const m = results.meta;
  const names = results.targets;
  console.log(
    `proxy benchmark — median (min–max) of ${m.rounds} interleaved rounds, ${m.durationS} s each; ${m.cpus} CPUs ${m.cpuModel ?? ''}, node ${m.node}, loopback`,
  );
  for (const [k, v] of Object.entries(m.versions)) console.log(`  ${k}: ${v}`);
  if (m.tunnelEndpoints) console.log(`  tunnel end points: ${m.tunnelEndpoints}`);
  console.log(`  load average at start ${m.loadavg?.map((x) => x.toFixed(2)).join(' ')}, at end ${m.loadavgEnd?.map((x) => x.toFixed(2)).join(' ') ?? '—'} (other work on the machine shows here)`);
  for (const [k, v] of Object.entries(m.skipped)) console.log(`  skipped ${k}: ${v}`);
  const rows = [];
  const W = results.workloads;
  const add = (label, w, key, digits) => {
    if (!W[w]) return;
    rows.push([label, ...names.map((n) => cell(W[w].perTarget[n]?.[key], digits))]);
  };
  for (const w of Object.keys(W).filter((k) => k.startsWith('ka'))) {
    add(`${W[w].label} req/s`, w, 'rps', 0);
    add(`${W[w].label} p50 ms`, w, 'p50Ms', 2);
    add(`${W[w].label} p99 ms`, w, 'p99Ms', 2);
    add(`${W[w].label} proxy CPU µs/req`, w, 'cpuUsPerOp', 1);
  }
  add(`${W.newconn?.label} req/s`, 'newconn', 'rps', 0);
  add(`${W.newconn?.label} proxy CPU µs/req`, 'newconn', 'cpuUsPerOp', 1);
  add(`${W.connect?.label} tunnels/s`, 'connect', 'perSecond', 0);
  add(`${W.connect?.label} p99 ms`, 'connect', 'p99Ms', 2);
  add(`${W.connect?.label} proxy CPU µs/tunnel`, 'connect', 'cpuUsPerOp', 1);
  add(`${W.bulk?.label} MB/s`, 'bulk', 'mbPerSecond', 0);
  if (names.some((n) => m[`rssAfterLoadKiB.${n}`] !== undefined)) {
    rows.push(['RSS after the load MiB', ...names.map((n) => fmt(m[`rssAfterLoadKiB.${n}`] / 1024, 1))]);
  }
  if (Object.keys(results.rss).length > 0) {
    const r = (n, f) => (results.rss[n] && !results.rss[n].skipped ? f(results.rss[n]) : '—');
    rows.push(['fresh instance: RSS at start MiB', ...names.map((n) => r(n, (x) => fmt(x.startKiB / 1024, 1)))]);
    rows.push(['  RSS idle after warm-up MiB', ...names.map((n) => r(n, (x) => fmt(x.idleKiB / 1024, 1)))]);
    rows.push([`  RSS with ${m.idleTunnels} idle tunnels MiB`, ...names.map((n) => r(n, (x) => fmt(x.fullKiB / 1024, 1)))]);
    rows.push(['  KiB per idle tunnel (RSS)', ...names.map((n) => r(n, (x) => fmt(x.perTunnelKiB, 1)))]);
    rows.push(['    marginal (2nd half) KiB', ...names.map((n) => r(n, (x) => fmt(x.marginalKiB, 1)))]);
    if (Object.values(results.rss).some((x) => x.gcRssPerTunnelKiB !== undefined)) {
      rows.push(['  KiB per idle tunnel (RSS after full GC)', ...names.map((n) => r(n, (x) => fmt(x.gcRssPerTunnelKiB, 1)))]);
      rows.push(['  live heap KiB per tunnel (after full GC)', ...names.map((n) => r(n, (x) => fmt(x.liveHeapPerTunnelKiB, 1)))]);
    }
    rows.push(['  RSS after closing them MiB', ...names.map((n) => r(n, (x) => fmt(x.afterCloseKiB / 1024, 1)))]);
  }
  const widths = [Math.max(...rows.map((row) => row[0].length)), ...names.map((n, i) => Math.max(n.length, ...rows.map((row) => row[i + 1].length)))];
  console.log('  ' + ['workload'.padEnd(widths[0]), ...names.map((n, i) => n.padStart(widths[i + 1]))].join('  '));
  for (const row of rows) console.log('  ' + row.map((c, i) => (i === 0 ? c.padEnd(widths[0]) : c.padStart(widths[i]))).join('  '));

  for (const [pair, r] of Object.entries(results.ratios)) {
    const parts = Object.entries(r).map(([k, v]) => `${k.replace('.rps', ' req/s').replace('.perSecond', ' tunnels/s').replace('.mbPerSecond', ' MB/s').replace('.p99Ms', ' p99').replace('rss.perTunnelKiB', 'KiB/tunnel')} ${fmt(v, 2)}×`);
    console.log(`  ${pair}: ${parts.join(', ')}`);
  }
  const pc = results.rss.portcullis;
  if (pc?.heapIdle && pc?.heapFull) {
    console.log(
      `  portcullis heap used (garbage included): idle ${fmt(pc.heapIdle.heapUsed / MiB, 1)} MiB, with tunnels ${fmt(pc.heapFull.heapUsed / MiB, 1)} MiB; gauge active_tunnels ${pc.heapFull.activeTunnels}; live heap per tunnel by kind: node bench/lib/heap-per-tunnel.mjs`,
    );
  }
  // Problems: request errors, refusals, unexpected log lines.
  for (const [w, v] of Object.entries(W)) {
    for (const [n, s] of Object.entries(v.perTarget)) {
      if ((s.errors ?? 0) > 0 || (s.non2xx ?? 0) > 0) {
        const kinds = s.errorKinds ? ` [${Object.entries(s.errorKinds).filter(([, x]) => x > 0).map(([k, x]) => `${k} ${x}`).join(', ')}]` : '';
        // tinyproxy answers every request with a close (no client keep-alive): wrk counts each as a read error.
        const why = n === 'tinyproxy' && s.errorKinds && s.errorKinds.read === s.errors ? ' — tinyproxy closes every client connection after one response' : '';
        console.log(`  ! ${v.label} via ${n}: ${s.errors ?? 0} errors${kinds}, ${s.non2xx ?? 0} non-2xx${s.firstError ? ` (first: ${s.firstError})` : ''}${why}`);
      }
    }
  }
  for (const [n, r] of Object.entries(results.rss)) {
    if (r.errors > 0 || r.aliveAtMeasure !== r.opened) console.log(`  ! rss via ${n}: ${r.errors} tunnels failed to open, ${r.opened - r.aliveAtMeasure} closed early${r.firstError ? ` (first: ${r.firstError})` : ''}`);
  }
  const log = results.portcullisLog;
  if (log) {
    console.log(`  portcullis log: ${fmt(log.lines)} lines (${Object.entries(log.byLevel).map(([k, v]) => `${k} ${fmt(v)}`).join(', ')}); exit ${log.exit?.code ?? log.exit?.signal}`);
    for (const [k, v] of Object.entries(log.notAllowed)) {
      // wrk stops with requests in flight; those lines say the client left (at most c per run).
      const why = k.includes('client closed the connection') ? ' — requests in flight when wrk stopped' : '';
      console.log(`  ! portcullis egress ${k}: ${fmt(v)}${why}`);
    }
    for (const s of log.errorSamples) console.log(`  ! portcullis log ${s}`);
  }
}

/**
 * Profiles Portcullis under `node --cpu-prof`: one fresh process per workload (keep-alive c32,
 * new connections, CONNECT+TLS and bulk by default), a 1 s warm-up, then `profileSeconds` of load.
 * Returns the top functions by self and total time over the load window only.
 */
export async function profileProxy(options = {}) {
  const o = { ...PROXY_DEFAULTS, profileSeconds: 10, profileWorkloads: ['ka32', 'newconn', 'connect', 'bulk'], ...options };
  o.profileDir ??= path.join(os.tmpdir(), `portcullis-profiles-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  mkdirSync(o.profileDir, { recursive: true });
  const out = { profileDir: o.profileDir, seconds: o.profileSeconds, workloads: {} };
  const env = await startBenchEnv(o);
  try {
    const all = roundWorkloads(o, env);
    for (const w of o.profileWorkloads) {
      const name = `portcullis-${w}.cpuprofile`;
      const t = await env.startTarget('portcullis', `portcullis-prof-${w}`, {
        nodeArgs: [...o.portcullisNodeArgs, '--cpu-prof', '--cpu-prof-dir', o.profileDir, '--cpu-prof-name', name],
      });
      if (t.skipped) throw new Error(t.skipped);
      await all[w].run(t, 1);
      o.progress(`profiling ${w} for ${o.profileSeconds} s`);
      let m;
      if (w === 'bulk') {
        // One transfer is short: repeat it for the whole window.
        const stopAt = performance.now() + o.profileSeconds * 1000;
        const runs = [];
        while (performance.now() < stopAt) runs.push(await all[w].run(t));
        m = { mbPerSecond: summarize(runs.map((r) => r.mbPerSecond)).median, transfers: runs.length };
      } else {
        m = await all[w].run(t, o.profileSeconds);
      }
      const ended = performance.now();
      await t.stop();
      const tailUs = (performance.now() - ended) * 1000;
      const file = path.join(o.profileDir, name);
      if (!readdirSync(o.profileDir).includes(name)) throw new Error(`no profile written at ${file}`);
      // The load window: from the end of the profile, skip shutdown, keep the measured seconds.
      const summary = summarizeProfile(file, { toEndUs: tailUs, fromEndUs: tailUs + o.profileSeconds * 1000 * 1000 });
      out.workloads[w] = { label: all[w].label, file, measured: m, ...summary };
    }
  } finally {
    await env.close();
  }
  return out;
}

/** Prints the profile summaries: categories, top self time, top Portcullis total time. */
export function printProfile(p, top = 25) {
  console.log(`cpu profiles of Portcullis (node --cpu-prof), ${p.seconds} s of load each; files in ${p.profileDir}`);
  for (const [w, r] of Object.entries(p.workloads)) {
    const m = r.measured;
    const rate = m.rps ?? m.perSecond;
    const what = m.mbPerSecond !== undefined ? `${fmt(m.mbPerSecond)} MB/s over ${m.transfers} transfers` : `${fmt(rate)}/s, proxy CPU ${fmt(m.cpuUsPerOp, 1)} µs per op`;
    console.log(`\n  ${r.label}: ${what}, ${fmt(r.totalMs)} ms sampled`);
    console.log(`  by origin: ${r.byCategory.slice(0, 10).map((c) => `${c.category} ${fmt(c.pct, 1)}%`).join(', ')}`);
    console.log('  top self time:');
    for (const f of r.self.slice(0, top)) console.log(`    ${fmt(f.pct, 1).padStart(5)}%  ${f.function.slice(0, 48).padEnd(48)} ${f.where}`);
    console.log('  top total time, Portcullis code:');
    for (const f of r.total.filter((x) => x.category === 'portcullis').slice(0, 15)) console.log(`    ${fmt(f.pct, 1).padStart(5)}%  ${f.function.slice(0, 48).padEnd(48)} ${f.where}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printProxy(await benchProxy());
}
