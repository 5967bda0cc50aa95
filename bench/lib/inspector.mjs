// A V8 inspector session to a bench-started Node process (loopback, random port): full GC and
// process.memoryUsage() on demand, so that Node's memory per idle tunnel can be read after a
// collection instead of through heap slack. The process must run with
// --inspect-port=127.0.0.1:0; SIGUSR1 opens the inspector, which prints its URL on stderr.
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocket } from 'undici';

/** Opens the inspector of `proc` (a startProcess handle) and connects to it. */
export async function attachInspector(proc, timeoutMs = 10_000) {
  process.kill(proc.pid, 'SIGUSR1');
  const deadline = Date.now() + timeoutMs;
  let url;
  while ((url = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(proc.stderr)?.[1]) === undefined) {
    if (Date.now() > deadline) throw new Error('the inspector did not open');
    await sleep(50);
  }
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = () => reject(new Error(`cannot connect to ${url}`));
  });
  let id = 0;
  const pending = new Map();
  ws.onmessage = (ev) => {
    const m = JSON.parse(String(ev.data));
    pending.get(m.id)?.(m);
    pending.delete(m.id);
  };
  const call = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const i = ++id;
      const timer = setTimeout(() => reject(new Error(`${method} timed out`)), 60_000);
      pending.set(i, (m) => {
        clearTimeout(timer);
        if (m.error) reject(new Error(`${method}: ${m.error.message}`));
        else resolve(m.result);
      });
      ws.send(JSON.stringify({ id: i, method, params }));
    });
  return {
    /** A full, compacting collection of all available garbage. */
    gc: () => call('HeapProfiler.collectGarbage'),
    /** process.memoryUsage() in the target, bytes. */
    memoryUsage: async () => JSON.parse((await call('Runtime.evaluate', { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true })).result.value),
    close: () => ws.close(),
  };
}
