import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FileStore } from '../../src/state/file-store.js';

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const writerScript = join(repoRoot, 'test', 'helpers', 'store-writer.ts');
const ROUNDS = 5;

interface Round {
  readonly created: string[];
  readonly revoked: string[];
}

/** Runs the writer until it reports ready, lets it write for `ms`, then SIGKILLs it. */
function writeThenKill(file: string, ms: number): Promise<Round> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', writerScript, file], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      out += chunk;
      if (timer === undefined && out.startsWith('ready\n')) {
        timer = setTimeout(() => child.kill('SIGKILL'), ms);
      }
    });
    child.stderr.on('data', (chunk: string) => {
      err += chunk;
    });
    child.on('error', reject);
    // 'close' waits for stdout to drain, so every line the child wrote is in `out`.
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') {
        reject(new Error(`writer exited on its own (code ${code}, signal ${signal}): ${err}`));
        return;
      }
      // Only complete lines count: the last one may have been cut by the kill.
      const lines = out.split('\n').slice(0, -1);
      resolve({
        created: lines.filter((l) => l.startsWith('created ')).map((l) => l.slice(8)),
        revoked: lines.filter((l) => l.startsWith('revoked ')).map((l) => l.slice(8)),
      });
    });
  });
}

describe('file store under kill -9', () => {
  let dir: string;
  let file: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'portcullis-crash-'));
    file = join(dir, 'state.json');
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('every_reported_write_survives_and_the_file_stays_valid', { timeout: 30_000 }, async () => {
    const created = new Set<string>();
    const revoked = new Set<string>();
    for (let round = 0; round < ROUNDS; round += 1) {
      const ms = 50 + Math.floor(Math.random() * 250);
      const context = `round ${round}, killed ${ms} ms after ready`;
      const result = await writeThenKill(file, ms);
      for (const id of result.created) created.add(id);
      for (const id of result.revoked) revoked.add(id);

      // The file on disk is a complete document before anything repairs it.
      const doc = JSON.parse(await readFile(file, 'utf8')) as { version: number; sessions: Record<string, unknown> };
      expect(doc.version, context).toBe(1);

      const store = new FileStore(file);
      await store.open();
      try {
        const missing = [...created].filter((id) => store.getSession(id) === undefined);
        expect(missing, context).toEqual([]);
        const unrevoked = [...revoked].filter((id) => store.getSession(id)?.revokedAt == null);
        expect(unrevoked, context).toEqual([]);
        expect(Object.keys(doc.sessions).length, context).toBeGreaterThanOrEqual(created.size);
        // Leftover temp files from the killed write are gone once the store has opened.
        expect(await readdir(dir), context).toEqual(['state.json']);
      } finally {
        await store.close();
      }
    }
    expect(created.size).toBeGreaterThan(ROUNDS);
    expect(revoked.size).toBeGreaterThan(0);
  });

  test('a_restart_keeps_the_same_sessions', async () => {
    const first = new FileStore(file);
    await first.open();
    const sessions = first.listSessions('crash');
    await first.close();
    expect(sessions.length).toBeGreaterThan(0);

    const second = new FileStore(file);
    await second.open();
    try {
      expect(second.listSessions('crash')).toEqual(sessions);
    } finally {
      await second.close();
    }
  });
});
