/**
 * Open client connections and tunnels, indexed by session and account, so that revocation,
 * lockdown and policy reloads can close exactly what they must, at once.
 */
import type { Socket } from 'node:net';
import type { DecisionInput } from '../policy/decide.js';

/** An open tunnel: what it was decided on, and how to close it. */
export interface OpenTunnel {
  readonly account: string;
  readonly sessionId: string;
  /** The CONNECT's decision input, re-decided when the policy changes. */
  readonly input: DecisionInput;
  close(reason: 'session_revoked' | 'session_expired' | 'lockdown_destination' | 'not_allowlisted' | 'draining' | string): void;
}

interface Binding {
  sessionId: string;
  account: string;
}

/** Tracks client connections (bound to their first session) and tunnels. */
export class ConnectionRegistry {
  readonly #bySession = new Map<string, Set<Socket>>();
  readonly #byAccount = new Map<string, Set<Socket>>();
  readonly #binding = new WeakMap<Socket, Binding>();
  readonly #tunnels = new Set<OpenTunnel>();
  readonly #tunnelsByAccount = new Map<string, number>();
  readonly #pendingByAccount = new Map<string, number>();
  readonly #noTunnelWaiters: (() => void)[] = [];

  /** The session a connection is bound to, if any. */
  bindingOf(socket: Socket): Binding | undefined {
    return this.#binding.get(socket);
  }

  /** Binds a client connection to its first authenticated session. */
  bind(socket: Socket, sessionId: string, account: string): void {
    if (this.#binding.has(socket)) return;
    this.#binding.set(socket, { sessionId, account });
    add(this.#bySession, sessionId, socket);
    add(this.#byAccount, account, socket);
    socket.once('close', () => {
      remove(this.#bySession, sessionId, socket);
      remove(this.#byAccount, account, socket);
    });
  }

  /** Registers a tunnel; returns its unregister function. */
  addTunnel(tunnel: OpenTunnel): () => void {
    this.#tunnels.add(tunnel);
    this.#tunnelsByAccount.set(tunnel.account, (this.#tunnelsByAccount.get(tunnel.account) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#tunnels.delete(tunnel);
      const n = (this.#tunnelsByAccount.get(tunnel.account) ?? 1) - 1;
      if (n <= 0) this.#tunnelsByAccount.delete(tunnel.account);
      else this.#tunnelsByAccount.set(tunnel.account, n);
      if (this.#tunnels.size === 0) for (const wake of this.#noTunnelWaiters.splice(0)) wake();
    };
  }

  /** Resolves once no tunnel is registered (at once when none is). */
  whenNoTunnels(): Promise<void> {
    if (this.#tunnels.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#noTunnelWaiters.push(resolve));
  }

  /**
   * Holds a tunnel slot while a CONNECT is resolved and dialed, so that CONNECTs arriving in the
   * same moment cannot all pass the concurrency check; returns the release function (idempotent).
   */
  reserveTunnel(account: string): () => void {
    this.#pendingByAccount.set(account, (this.#pendingByAccount.get(account) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const n = (this.#pendingByAccount.get(account) ?? 1) - 1;
      if (n <= 0) this.#pendingByAccount.delete(account);
      else this.#pendingByAccount.set(account, n);
    };
  }

  /** Open (and reserved) tunnels of an account on this replica. */
  tunnelCount(account: string): number {
    return (this.#tunnelsByAccount.get(account) ?? 0) + (this.#pendingByAccount.get(account) ?? 0);
  }

  get tunnels(): ReadonlySet<OpenTunnel> {
    return this.#tunnels;
  }

  /** Sessions with an open connection or tunnel on this replica. */
  openSessionIds(): IterableIterator<string> {
    return this.#bySession.keys();
  }

  /** Closes every connection and tunnel of a session; returns how many were closed. */
  closeSession(sessionId: string, reason: string): number {
    let n = 0;
    for (const t of [...this.#tunnels]) if (t.sessionId === sessionId) (t.close(reason), n++);
    for (const s of [...(this.#bySession.get(sessionId) ?? [])]) (s.destroy(), n++);
    return n;
  }

  /** Closes every connection and tunnel of an account. */
  closeAccount(account: string, reason: string): number {
    let n = 0;
    for (const t of [...this.#tunnels]) if (t.account === account) (t.close(reason), n++);
    for (const s of [...(this.#byAccount.get(account) ?? [])]) (s.destroy(), n++);
    return n;
  }

  /** Closes every client connection and tunnel. */
  closeAll(reason: string): number {
    let n = 0;
    for (const t of [...this.#tunnels]) (t.close(reason), n++);
    for (const set of this.#byAccount.values()) for (const s of [...set]) (s.destroy(), n++);
    return n;
  }
}

function add<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  let set = map.get(key);
  if (set === undefined) map.set(key, (set = new Set()));
  set.add(value);
}

function remove<K, V>(map: Map<K, Set<V>>, key: K, value: V): void {
  const set = map.get(key);
  if (set === undefined) return;
  set.delete(value);
  if (set.size === 0) map.delete(key);
}
