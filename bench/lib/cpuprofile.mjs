// Reads a V8 .cpuprofile (node --cpu-prof) and ranks functions by self and total time, over a
// window of the profile (the workload, not start-up and shutdown), with each function's origin:
// portcullis (dist/), a dependency (node_modules/NAME), node internals, or V8 itself (GC etc.).
import { readFileSync } from 'node:fs';

/** Where a frame's code lives. */
export function category(url, functionName) {
  if (url === '') return functionName.startsWith('(') ? functionName.replace(/[()]/g, '') : 'native';
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  if (url.includes('/dist/')) return 'portcullis';
  if (url.startsWith('node:')) return 'node';
  return 'other';
}

function shortUrl(url) {
  const m = /node_modules\/(.*)$/.exec(url) ?? /\/dist\/(.*)$/.exec(url);
  return m ? m[1] : url.replace(/^node:/, 'node:');
}

/**
 * Summarizes `file`, keeping samples whose time lies in [profileEnd - fromEndUs, profileEnd -
 * toEndUs]. Returns { totalMs, byCategory, self: [...], total: [...] } with percentages.
 */
export function summarizeProfile(file, { fromEndUs = Infinity, toEndUs = 0 } = {}) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // Sample times: startTime + running sum of timeDeltas.
  const times = new Float64Array(p.samples.length);
  let t = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i];
    times[i] = t;
  }
  const end = times[times.length - 1] ?? p.endTime;
  const lo = end - fromEndUs;
  const hi = end - toEndUs;
  const selfUs = new Map();
  let totalUs = 0;
  for (let i = 0; i < p.samples.length; i++) {
    if (times[i] < lo || times[i] > hi) continue;
    // The delta after a sample is the time it stood for.
    const dt = i + 1 < p.samples.length ? p.timeDeltas[i + 1] : 0;
    selfUs.set(p.samples[i], (selfUs.get(p.samples[i]) ?? 0) + dt);
    totalUs += dt;
  }
  const keyOf = (n) => {
    const f = n.callFrame;
    return `${f.functionName || '(anonymous)'}\t${f.url}\t${f.lineNumber + 1}`;
  };
  const self = new Map();
  const total = new Map();
  const byCategory = new Map();
  for (const [id, us] of selfUs) {
    const n = nodes.get(id);
    const k = keyOf(n);
    self.set(k, (self.get(k) ?? 0) + us);
    const cat = category(n.callFrame.url, n.callFrame.functionName);
    byCategory.set(cat, (byCategory.get(cat) ?? 0) + us);
    // Total (inclusive) time: every distinct function on the stack gets the sample once.
    const seen = new Set();
    for (let cur = id; cur !== undefined; cur = parent.get(cur)) {
      const kk = keyOf(nodes.get(cur));
      if (seen.has(kk)) continue;
      seen.add(kk);
      total.set(kk, (total.get(kk) ?? 0) + us);
    }
  }
  const rows = (m) =>
    [...m.entries()]
      .map(([k, us]) => {
        const [fn, url, line] = k.split('\t');
        return { function: fn, where: url ? `${shortUrl(url)}:${line}` : '', category: category(url, fn), ms: us / 1000, pct: (100 * us) / totalUs };
      })
      .sort((a, b) => b.ms - a.ms);
  return {
    totalMs: totalUs / 1000,
    byCategory: [...byCategory.entries()].map(([k, us]) => ({ category: k, ms: us / 1000, pct: (100 * us) / totalUs })).sort((a, b) => b.ms - a.ms),
    self: rows(self),
    total: rows(total),
  };
}
