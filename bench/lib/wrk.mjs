// Runs wrk (one thread) with bench/lib/wrk-request.lua and returns its figures.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'wrk-request.lua');

/**
 * One wrk run against a target for `durationS` seconds with `connections` connections.
 * `close` sends Connection: close (one request per new client connection).
 * Returns { rps, p50Ms, p99Ms, errors, non2xx, requests }.
 */
export function runWrk({ wrk = 'wrk', target, originPort, path: reqPath = '/v1/items/42', connections, durationS, close = false }) {
  const authority = `${target.host}:${originPort}`;
  const viaProxy = target.port !== null;
  const url = viaProxy ? `http://127.0.0.1:${target.port}/` : `http://127.0.0.1:${originPort}/`;
  const requestTarget = viaProxy ? `http://${authority}${reqPath}` : reqPath;
  const headers = [`Host: ${authority}`, 'User-Agent: portcullis-bench/1 (wrk)', 'Accept: application/json'];
  if (target.auth) headers.push(`Proxy-Authorization: ${target.auth}`);
  if (close) headers.push('Connection: close');
  const args = ['-t1', `-c${connections}`, `-d${durationS}s`, '--timeout', '5s', '-s', SCRIPT, url, '--', requestTarget, ...headers];
  return new Promise((resolve, reject) => {
    execFile(wrk, args, { timeout: (durationS + 20) * 1000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      const m = /^WRKJSON (.*)$/m.exec(stdout);
      if (m === null) return reject(new Error(`wrk failed: ${err?.message ?? ''} ${stderr.trim()} ${stdout.trim()}`.trim()));
      const j = JSON.parse(m[1]);
      const seconds = j.durationUs / 1e6;
      const errors = j.connect + j.read + j.write + j.timeout;
      resolve({
        rps: j.requests / seconds,
        p50Ms: j.p50Us / 1000,
        p99Ms: j.p99Us / 1000,
        requests: j.requests,
        errors,
        errorKinds: { connect: j.connect, read: j.read, write: j.write, timeout: j.timeout },
        non2xx: j.status,
      });
    });
  });
}
