/**
 * Child process for the file-store crash test: opens the store named by argv[2] and writes
 * sessions (and some revocations) as fast as it can from several concurrent loops, so writes
 * coalesce. A line goes to stdout only after the write resolved, i.e. once it is durable:
 *   ready | created <id> | revoked <id>
 * The parent kills it with SIGKILL at a random moment; nothing here ever exits on its own.
 */
import { writeSync } from 'node:fs';
import { newSessionId } from '../../src/identity/tokens.js';
import { FileStore } from '../../src/state/file-store.js';

const file = process.argv[2];
if (file === undefined) throw new Error('usage: store-writer.ts STATE_FILE');

const store = new FileStore(file);
await store.open();
// writeSync: a line must be out of the process before the next await, or a kill could eat it.
const report = (line: string): void => {
  writeSync(1, `${line}\n`);
};
report('ready');

// Padding makes each document larger, so a kill is more likely to land mid-write.
const padding = 'Mozilla/5.0 (store-writer) '.repeat(12);

async function writeLoop(loop: number): Promise<never> {
  for (let n = 0; ; n += 1) {
    const id = newSessionId();
    await store.createSession({
      id,
      account: 'crash',
      app: `loop-${loop}`,
      label: null,
      authMethod: 'token',
      tokenHash: 'f'.repeat(64),
      createdAt: new Date().toISOString(),
      createdBy: 'store-writer',
      expiresAt: null,
      lastSeenAt: null,
      clientIp: '192.0.2.1',
      userAgent: padding,
      revokedAt: null,
      revokedBy: null,
    });
    report(`created ${id}`);
    if (n % 5 === 4) {
      const revoked = await store.revokeSession('crash', id, 'store-writer');
      if (revoked !== null) report(`revoked ${id}`);
    }
  }
}

await Promise.all([0, 1, 2, 3].map(writeLoop));
