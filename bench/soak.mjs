// Soak: mixed traffic through one Portcullis process for N minutes (default 1), printing its RSS
// and heap over time, so that growth shows. Numbers only: nothing passes or fails.
//
// Traffic, all at once, in short bounded runs until the time is up:
//   keep-alive requests (wrk, 8 connections), one request per connection (wrk, 4 connections),
//   denied requests (a host outside the policy, wrk, 2 connections), CONNECT + TLS setups
//   (4 loops), and a pool of 200 idle tunnels of which 50 are replaced every sample.
// Samples: RSS (/proc), heap used and total (admin /metrics), open tunnels and connections,
// requests decided so far (portcullis_requests_total).
//
//   node bench/run.mjs --only soak --minutes 10
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { startBenchEnv } from './lib/env.mjs';
import { rssKiB } from './lib/procs.mjs';
import { findBinary } from './lib/targets.mjs';
import { runWrk } from './lib/wrk.mjs';
import { PROXY_DEFAULTS } from './proxy.mjs';

const MiB = 1024 * 1024;

/** Every soak option with its default. */
export const SOAK_DEFAULTS = Object.freeze({
  minutes: 1,
  /** Seconds between samples; 0 = about 30 samples over the run, at least every 5 s. */
  sampleEveryS: 0,
  /** Idle tunnels kept open, and how many of them are replaced at every sample. */
  idleTunnels: 200,
  idleChurn: 50,
});

/** Runs the soak; returns { meta, samples, summary }. */
export async function benchSoak(options = {}) {
  const o = { ...PROXY_DEFAULTS, ...SOAK_DEFAULTS, ...options };
  const durationMs = o.minutes * 60_000;
  const sampleMs = (o.sampleEveryS > 0 ? o.sampleEveryS : Math.max(5, Math.round((o.minutes * 60) / 30))) * 1000;
  const env = await startBenchEnv({ ...o, bulkBytes: 1 * MiB });
  const out = { meta: { date: new Date().toISOString(), minutes: o.minutes, sampleEveryS: sampleMs / 1000, node: process.version, cpus: os.cpus().length, tunnelEndpoints: env.meta.tunnelEndpoints }, samples: [], errors: {} };
  try {
    const t = await env.startTarget('portcullis');
    if (t.skipped) throw new Error(t.skipped);
    const denied = { ...t, host: 'denied.example.org' };
    const started = performance.now();
    const deadline = started + durationMs;
    const left = () => deadline - performance.now();
    const note = (kind, r) => {
      const e = (out.errors[kind] ??= { runs: 0, ops: 0, errors: 0, non2xx: 0, firstError: null });
      e.runs++;
      e.ops += r.requests ?? r.count ?? 0;
      e.errors += r.errors ?? 0;
      e.non2xx += r.non2xx ?? 0;
      e.firstError ??= r.firstError ?? null;
    };
    const hasWrk = findBinary('wrk') !== null;
    // Each loop repeats short runs (at most 10 s) until the deadline.
    const loop = async (kind, run) => {
      while (left() > 1000) {
        const seconds = Math.max(1, Math.min(10, Math.floor(left() / 1000)));
        try {
          note(kind, await run(seconds));
        } catch (err) {
          note(kind, { errors: 1, firstError: err.message });
          await sleep(500);
        }
      }
    };
    const loops = [
      hasWrk ? loop('keep-alive', (s) => runWrk({ target: t, originPort: env.httpPort, connections: 8, durationS: s })) : null,
      hasWrk ? loop('new-connection', (s) => runWrk({ target: t, originPort: env.httpPort, connections: 4, durationS: s, close: true })) : null,
      // Denials are expected here (403 not_allowlisted): they count as non-2xx, not as errors.
      hasWrk ? loop('denied', (s) => runWrk({ target: denied, originPort: 80, connections: 2, durationS: s })) : null,
      loop('connect', (s) => env.tunnelRate(t, s * 1000, 4)),
    ].filter(Boolean);

    // The idle pool, churned at every sample.
    let pool = [];
    const refill = async () => {
      const need = o.idleTunnels - pool.filter((s) => !s.destroyed).length;
      pool = pool.filter((s) => !s.destroyed);
      if (need > 0) {
        const r = await env.idleTunnels(t, need);
        pool.push(...r.sockets);
        if (r.errors > 0) note('idle-tunnels', { errors: r.errors, firstError: r.firstError });
      }
    };
    const sampler = (async () => {
      await refill();
      while (left() > 0) {
        const heap = await t.heap();
        const s = {
          s: Math.round((performance.now() - started) / 1000),
          rssKiB: rssKiB(t.pid),
          heapUsed: heap?.heapUsed ?? NaN,
          heapTotal: heap?.heapTotal ?? NaN,
          tunnels: heap?.activeTunnels ?? NaN,
          connections: heap?.activeConnections ?? NaN,
          requests: heap?.requests ?? NaN,
        };
        out.samples.push(s);
        o.progress(`soak ${s.s}s: rss ${(s.rssKiB / 1024).toFixed(1)} MiB, heap ${(s.heapUsed / MiB).toFixed(1)} MiB, tunnels ${s.tunnels}, requests ${s.requests}`);
        if (!t.process.alive) {
          out.crashed = t.process.stderr.trim().split('\n').slice(-10);
          break;
        }
        for (const sock of pool.splice(0, o.idleChurn)) sock.destroy();
        await refill();
        await sleep(Math.min(sampleMs, Math.max(0, left())));
      }
    })();
    await Promise.all([...loops, sampler]);
    for (const sock of pool) sock.destroy();
    await sleep(2000);
    const heap = await t.heap();
    out.after = { rssKiB: rssKiB(t.pid), heapUsed: heap?.heapUsed ?? NaN, tunnels: heap?.activeTunnels ?? NaN, connections: heap?.activeConnections ?? NaN };
    out.summary = summarizeSoak(out.samples);
    await t.stop();
    out.exit = await t.process.exit;
  } finally {
    await env.close();
  }
  return out;
}

/** Least-squares slope of y over x. */
function slope(xs, ys) {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/** RSS and heap trend over the last two thirds of the samples (the first third is warm-up). */
function summarizeSoak(samples) {
  const tail = samples.slice(Math.floor(samples.length / 3));
  const xs = tail.map((s) => s.s / 60);
  const first = samples[0];
  const last = samples[samples.length - 1];
  const secs = last && first ? last.s - first.s : 0;
  return {
    rssFirstKiB: first?.rssKiB,
    rssLastKiB: last?.rssKiB,
    rssMaxKiB: Math.max(...samples.map((s) => s.rssKiB)),
    rssSlopeKiBPerMin: slope(xs, tail.map((s) => s.rssKiB)),
    heapSlopeKiBPerMin: slope(xs, tail.map((s) => s.heapUsed / 1024)),
    requestsPerSecond: secs > 0 ? (last.requests - first.requests) / secs : NaN,
  };
}

/** Prints the RSS-over-time table and the trend. */
export function printSoak(r) {
  console.log(`soak — Portcullis under mixed traffic for ${r.meta.minutes} min, a sample every ${r.meta.sampleEveryS} s (tunnel end points: ${r.meta.tunnelEndpoints})`);
  console.log('      s   RSS MiB   heap used MiB   heap total MiB   tunnels   conns   requests');
  for (const s of r.samples) {
    console.log(
      `  ${String(s.s).padStart(5)}   ${(s.rssKiB / 1024).toFixed(1).padStart(7)}   ${(s.heapUsed / MiB).toFixed(1).padStart(13)}   ${(s.heapTotal / MiB).toFixed(1).padStart(14)}   ${String(s.tunnels).padStart(7)}   ${String(s.connections).padStart(5)}   ${String(s.requests).padStart(8)}`,
    );
  }
  const m = r.summary;
  if (m) {
    console.log(
      `  RSS ${(m.rssFirstKiB / 1024).toFixed(1)} → ${(m.rssLastKiB / 1024).toFixed(1)} MiB (max ${(m.rssMaxKiB / 1024).toFixed(1)}); trend over the last two thirds: RSS ${m.rssSlopeKiBPerMin.toFixed(0)} KiB/min, heap used ${m.heapSlopeKiBPerMin.toFixed(0)} KiB/min; ${m.requestsPerSecond.toFixed(0)} decisions/s`,
    );
  }
  if (r.after) console.log(`  after the traffic stopped: RSS ${(r.after.rssKiB / 1024).toFixed(1)} MiB, heap used ${(r.after.heapUsed / MiB).toFixed(1)} MiB, tunnels ${r.after.tunnels}, connections ${r.after.connections}`);
  for (const [k, e] of Object.entries(r.errors)) {
    console.log(`  ${k}: ${e.runs} runs, ${e.ops} ops, ${e.errors} errors, ${e.non2xx} non-2xx${e.firstError ? ` (first: ${e.firstError})` : ''}`);
  }
  if (r.crashed) console.log(`  ! portcullis exited during the soak: ${r.crashed.join(' | ')}`);
  if (r.exit) console.log(`  portcullis exit: ${r.exit.code ?? r.exit.signal}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  printSoak(await benchSoak());
}
