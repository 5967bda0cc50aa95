// Child processes, free ports and RSS for the proxy benchmark. Everything binds 127.0.0.1.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/** A free TCP port on 127.0.0.1 (bound and released; a peer binds it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resolves once 127.0.0.1:port accepts a connection; throws after `timeoutMs`. */
export async function waitForPort(port, timeoutMs = 15_000, isAlive = () => true) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (!isAlive()) throw new Error(`the process meant to listen on 127.0.0.1:${port} exited`);
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** `pid` and every process below it (a proxy with worker processes counts as all of them). */
export function processTree(pid) {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    let tasks = [];
    try {
      tasks = readdirSync(`/proc/${out[i]}/task`);
    } catch {
      continue;
    }
    for (const tid of tasks) {
      try {
        for (const child of readFileSync(`/proc/${out[i]}/task/${tid}/children`, 'utf8').split(' ')) if (child !== '') out.push(Number(child));
      } catch {
        // The thread ended, or the kernel lacks CONFIG_PROC_CHILDREN: the process alone counts.
      }
    }
  }
  return out;
}

/** Sums `read(pid)` over the process tree; NaN when the process itself is gone. */
function overTree(pid, read) {
  const own = read(pid);
  if (Number.isNaN(own)) return NaN;
  return processTree(pid)
    .slice(1)
    .reduce((sum, p) => sum + (read(p) || 0), own);
}

/** Resident set size of a process and its children in KiB, from /proc/PID/status; NaN when it is gone. */
export function rssKiB(pid) {
  return overTree(pid, (p) => {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      return m ? Number(m[1]) : NaN;
    } catch {
      return NaN;
    }
  });
}

/** CPU time (user + system) of a process and its children in ms, from /proc/PID/stat; NaN when it is gone. */
export function cpuMs(pid) {
  return overTree(pid, (p) => {
    try {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // utime and stime are fields 14 and 15 of the full line, in clock ticks (100 Hz on Linux).
      return (Number(fields[11]) + Number(fields[12])) * 10;
    } catch {
      return NaN;
    }
  });
}

// Children still running when the bench exits (an exception, Ctrl-C) are killed, so that no
// proxy outlives the run that started it.
const live = new Set();
let hooked = false;
function track(child) {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]]) process.once(signal, () => process.exit(code));
}

/**
 * Spawns a long-running child; `stop()` sends SIGTERM, waits up to `graceMs`, then SIGKILL.
 * stderr is kept (last 64 KiB) for error messages.
 */
export function startProcess(command, args, options = {}) {
  const child = spawn(command, args, { stdio: options.stdio ?? ['ignore', 'ignore', 'pipe'], cwd: options.cwd, env: options.env ?? process.env });
  track(child);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d) => {
    stderr = (stderr + d).slice(-65536);
    options.onStderr?.(d);
  });
  let exited = false;
  const exit = new Promise((resolve) => child.once('exit', (code, signal) => {
    exited = true;
    resolve({ code, signal });
  }));
  child.once('error', () => undefined);
  return {
    child,
    pid: child.pid,
    get stderr() {
      return stderr;
    },
    get alive() {
      return !exited;
    },
    exit,
    async stop(graceMs = 10_000) {
      if (exited) return exit;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const r = await exit;
      clearTimeout(timer);
      return r;
    },
  };
}
