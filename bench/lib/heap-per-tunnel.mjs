// What one idle tunnel costs Portcullis in live V8 heap, by object kind: two heap snapshots
// (node --heapsnapshot-signal, each after a full GC) around opening N idle TLS tunnels, diffed by
// constructor. RSS deltas of a Node process hide per-tunnel cost in heap slack; this does not.
// Numbers only.
//
//   node bench/lib/heap-per-tunnel.mjs [--cli dist/cli.js] [--tunnels 2000] [--top 30]
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { startBenchEnv } from './env.mjs';
import { REPO } from './targets.mjs';

/** Sends SIGUSR2 and resolves with the snapshot file once it is complete. */
async function snapshot(pid, dir) {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    await sleep(500);
    const file = readdirSync(dir).find((f) => f.endsWith('.heapsnapshot') && !before.has(f));
    if (file === undefined) continue;
    const full = path.join(dir, file);
    // Written in pieces: wait until the size settles and the JSON parses.
    let last = -1;
    for (;;) {
      await sleep(500);
      const size = statSync(full).size;
      if (size === last && size > 0) {
        try {
          return JSON.parse(readFileSync(full, 'utf8'));
        } catch {
          // not complete yet
        }
      }
      last = size;
      if (Date.now() > deadline) break;
    }
  }
  throw new Error('no heap snapshot written');
}

/** Self size and count per "type:name" (constructor for objects, function name for closures). */
function aggregate(s) {
  const f = s.snapshot.meta.node_fields;
  const types = s.snapshot.meta.node_types[0];
  const nf = f.length;
  const iType = f.indexOf('type');
  const iName = f.indexOf('name');
  const iSize = f.indexOf('self_size');
  const agg = new Map();
  let total = 0;
  for (let i = 0; i < s.nodes.length; i += nf) {
    const type = types[s.nodes[i + iType]];
    let name = s.strings[s.nodes[i + iName]];
    if (type.includes('string')) name = '(string)';
    else if (type === 'number' || type === 'code') name = `(${type})`;
    else if (type === 'array') name = name.length < 40 ? name : '';
    const key = `${type}:${name.slice(0, 60)}`;
    const a = agg.get(key) ?? { n: 0, size: 0 };
    a.n++;
    a.size += s.nodes[i + iSize];
    total += s.nodes[i + iSize];
    agg.set(key, a);
  }
  return { agg, total };
}

/** Opens `tunnels` idle tunnels through a fresh Portcullis and diffs two heap snapshots. */
export async function heapPerTunnel({ cli = path.join(REPO, 'dist', 'cli.js'), tunnels = 2000 } = {}) {
  const diag = mkdtempSync(path.join(os.tmpdir(), 'portcullis-heap-'));
  const env = await startBenchEnv({ bulkBytes: 1 << 20, portcullisCli: cli });
  try {
    const t = await env.startTarget('portcullis', 'portcullis', { nodeArgs: ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${diag}`] });
    if (t.skipped) throw new Error(t.skipped);
    const warm = await env.idleTunnels(t, 100);
    await warm.close();
    await sleep(1000);
    const a = aggregate(await snapshot(t.pid, diag));
    const open = await env.idleTunnels(t, tunnels);
    await sleep(1500);
    const b = aggregate(await snapshot(t.pid, diag));
    const n = open.sockets.length;
    await open.close();
    const rows = [];
    for (const [k, vb] of b.agg) {
      const va = a.agg.get(k) ?? { n: 0, size: 0 };
      rows.push({ kind: k, bytesPerTunnel: (vb.size - va.size) / n, objectsPerTunnel: (vb.n - va.n) / n });
    }
    rows.sort((x, y) => y.bytesPerTunnel - x.bytesPerTunnel);
    return { tunnels: n, errors: open.errors, heapBeforeBytes: a.total, heapAfterBytes: b.total, kibPerTunnel: (b.total - a.total) / 1024 / n, rows };
  } finally {
    await env.close();
    rmSync(diag, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { cli: { type: 'string' }, tunnels: { type: 'string' }, top: { type: 'string' } } });
  const r = await heapPerTunnel({ ...(values.cli ? { cli: path.resolve(values.cli) } : {}), ...(values.tunnels ? { tunnels: Number(values.tunnels) } : {}) });
  console.log(
    `live heap per idle tunnel: ${r.kibPerTunnel.toFixed(2)} KiB (${r.tunnels} tunnels, ${r.errors} failed; heap ${(r.heapBeforeBytes / 1048576).toFixed(1)} → ${(r.heapAfterBytes / 1048576).toFixed(1)} MiB)`,
  );
  console.log('  bytes/tunnel  objects/tunnel  kind');
  for (const row of r.rows.slice(0, Number(values.top ?? 30))) {
    console.log(`  ${row.bytesPerTunnel.toFixed(0).padStart(12)}  ${row.objectsPerTunnel.toFixed(2).padStart(14)}  ${row.kind}`);
  }
}
