/**
 * Keeps the compiled policy current: reload on file change and on demand, swap atomically,
 * and keep the last good policy when a new one is invalid.
 */
import { EventEmitter } from 'node:events';
import { watch, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { compilePolicy, type CompiledPolicy } from './compile.js';
import { loadPolicyFile, PolicyLoadError, type LoadedPolicy, type PolicyIssue } from './load.js';

/** The result of one reload attempt. */
export type ReloadResult =
  | { readonly result: 'success'; readonly hash: string; readonly warnings: readonly PolicyIssue[] }
  | { readonly result: 'unchanged'; readonly hash: string }
  | { readonly result: 'failure'; readonly error: string; readonly issues: readonly PolicyIssue[] };

/** Options; dependencies are injectable for tests. */
export interface PolicyReloaderOptions {
  /** Debounce for bursts of file events, in milliseconds (default 150). */
  readonly debounceMs?: number;
  readonly load?: (file: string) => Promise<LoadedPolicy>;
}

/**
 * Watches the policy file's directory, not the file: Kubernetes ConfigMaps update by swapping a
 * symlink (`..data`), which a watch on the file itself never sees. Events are debounced, the file
 * is re-read, and nothing is swapped unless its content hash changed.
 *
 * Events: `reload` (ReloadResult, for every attempt), `change` (CompiledPolicy, after a swap).
 */
export class PolicyReloader extends EventEmitter {
  readonly file: string;
  #current: CompiledPolicy;
  #watcher: FSWatcher | null = null;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<ReloadResult> | null = null;
  #again = false;
  readonly #debounceMs: number;
  readonly #load: (file: string) => Promise<LoadedPolicy>;

  private constructor(file: string, initial: CompiledPolicy, options: PolicyReloaderOptions) {
    super();
    this.file = file;
    this.#current = initial;
    this.#debounceMs = options.debounceMs ?? 150;
    this.#load = options.load ?? loadPolicyFile;
  }

  /** Loads and compiles the policy once; throws PolicyLoadError if the initial file is invalid. */
  static async open(file: string, options: PolicyReloaderOptions = {}): Promise<PolicyReloader> {
    const path = resolve(file);
    const loaded = await (options.load ?? loadPolicyFile)(path);
    return new PolicyReloader(path, compilePolicy(loaded), options);
  }

  /** The policy in force. */
  get current(): CompiledPolicy {
    return this.#current;
  }

  /** Starts watching the file's directory. Idempotent. */
  watch(): this {
    if (this.#watcher) return this;
    const name = basename(this.file);
    this.#watcher = watch(dirname(this.file), { persistent: false }, (_event, changed) => {
      // Unknown names and the ConfigMap's "..data" swap both may change what the file points to.
      if (changed === null || changed === name || String(changed).startsWith('..')) this.#schedule();
    });
    this.#watcher.on('error', () => this.#schedule());
    return this;
  }

  #schedule(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.reload();
    }, this.#debounceMs);
    this.#timer.unref();
  }

  /** Reloads now. Concurrent calls share one run, and a call during a run triggers one more. */
  async reload(): Promise<ReloadResult> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#reloadOnce();
    try {
      let result = await this.#running;
      while (this.#again) {
        this.#again = false;
        this.#running = this.#reloadOnce();
        result = await this.#running;
      }
      return result;
    } finally {
      this.#running = null;
    }
  }

  async #reloadOnce(): Promise<ReloadResult> {
    let result: ReloadResult;
    try {
      const loaded = await this.#load(this.file);
      if (loaded.hash === this.#current.hash) {
        result = { result: 'unchanged', hash: loaded.hash };
      } else {
        const compiled = compilePolicy(loaded);
        this.#current = compiled;
        result = { result: 'success', hash: loaded.hash, warnings: loaded.warnings };
        this.emit('change', compiled);
      }
    } catch (err) {
      const issues = err instanceof PolicyLoadError ? err.issues : [];
      result = { result: 'failure', error: err instanceof Error ? err.message : String(err), issues };
    }
    this.emit('reload', result);
    return result;
  }

  /** Stops watching. Idempotent. */
  close(): void {
    this.#watcher?.close();
    this.#watcher = null;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }
}
