/**
 * The container image, built and started for real by scripts/image-smoke.sh (buildah from a
 * debootstrap base plus this machine's node, then the image's own ENTRYPOINT/CMD/HEALTHCHECK in
 * fresh namespaces). Opt-in with PORTCULLIS_IMAGE_TEST=1: it needs root, buildah and debootstrap,
 * downloads a Debian base system and the npm dependencies, and takes minutes (about 1.5 with a warm
 * cache in /var/tmp/portcullis-image-smoke, 2.5 cold), far too slow for every `npm test`. Everything else about the Dockerfile is
 * checked statically in manifests.test.ts on every run.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect, test } from 'vitest';
import { ROOT } from './deploy-files.js';

const enabled = process.env['PORTCULLIS_IMAGE_TEST'] === '1';
const SKIP = 'set PORTCULLIS_IMAGE_TEST=1 to build and start the image (root, buildah, debootstrap; minutes)';
const TIMEOUT_MS = 15 * 60_000;

/** Runs the smoke script; resolves with its exit code and combined output. */
function smoke(): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('bash', [path.join(ROOT, 'scripts/image-smoke.sh')], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      process.stderr.write(chunk);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('close', (code) => resolve({ code, output }));
  });
}

test.skipIf(!enabled)(`the image builds, starts as non-root node PID 1, answers /healthz and drains on SIGTERM${enabled ? '' : ` (${SKIP})`}`, async () => {
  const { code, output } = await smoke();
  expect(output).toMatch(/^image-smoke: ok: Dockerfile built /m);
  expect(output).toMatch(/^image-smoke: ok: HEALTHCHECK .* exits 0/m);
  expect(output).toMatch(/^image-smoke: ok: PID 1 in the container is node/m);
  expect(output).toMatch(/^image-smoke: ok: GET http:\/\/127\.0\.0\.1:9090\/healthz → \{"status":"ok"\}$/m);
  expect(output).toMatch(/^image-smoke: ok: GET http:\/\/example\.org\/ through the proxy → 403/m);
  expect(output).toMatch(/^image-smoke: ok: SIGTERM to PID 1 → drained and exited 0/m);
  expect(output).toMatch(/^image-smoke: ok: iptables-init image/m);
  expect(output).toMatch(/^image-smoke: PASS$/m);
  expect(code).toBe(0);
}, TIMEOUT_MS);
