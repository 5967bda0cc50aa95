/**
 * A private redis-server for tests: 127.0.0.1 on a free port, no persistence, killed after.
 * Never the machine's shared Redis. Also a TCP relay that can cut one replica off Redis.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import net from 'node:net';

/** Whether `redis-server` can be started here. */
export const HAVE_REDIS = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;

/** A running (or stopped, restartable) redis-server. */
export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:PORT */
  readonly url: string;
  /** SIGKILLs the server (its data is gone: it never persists). */
  kill(): Promise<void>;
  /** Starts it again on the same port, empty. */
  restart(): Promise<void>;
  /** Kills it; idempotent. */
  close(): Promise<void>;
}

/** A port that was free a moment ago (redis-server has no `--port 0`). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function launch(port: number): Promise<ChildProcess> {
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--protected-mode', 'yes'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`redis-server did not start on port ${port}: ${out.slice(-500)}`));
    }, 5_000);
    const onData = (chunk: Buffer): void => {
      out += chunk.toString('utf8');
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.stdout?.off('data', onData);
        child.stdout?.resume();
        resolve(child);
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => void (out += c.toString('utf8')));
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited with ${code}: ${out.slice(-500)}`));
    });
  });
}

function stop(child: ChildProcess | null): Promise<void> {
  if (child === null || child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

/** Starts a private redis-server. */
export async function startRedisServer(): Promise<RedisServer> {
  // A port can be taken between the probe and redis binding it: try a few.
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    let child: ChildProcess | null;
    try {
      child = await launch(port);
    } catch (err) {
      if (attempt < 3) continue;
      throw err;
    }
    return {
      port,
      url: `redis://127.0.0.1:${port}`,
      kill: async () => {
        await stop(child);
        child = null;
      },
      restart: async () => {
        await stop(child);
        child = await launch(port);
      },
      close: async () => {
        await stop(child);
        child = null;
      },
    };
  }
}

/** A TCP relay to a target port whose connections can be cut and later allowed again. */
export interface Relay {
  readonly port: number;
  /** Destroys every relayed connection and refuses new ones until `resume()`. */
  cut(): void;
  resume(): void;
  close(): Promise<void>;
}

/** Relays 127.0.0.1:<relay port> to 127.0.0.1:<target>. */
export async function startRelay(target: number): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  let open = true;
  const server = net.createServer((client) => {
    if (!open) {
      client.destroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut: () => {
      open = false;
      for (const s of sockets) s.destroy();
    },
    resume: () => {
      open = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
