/**
 * Output and usage errors for CLI commands, injected so tests capture them without spawning.
 */

/** Where a command writes: stdout and stderr lines. */
export interface Io {
  out(line: string): void;
  err(line: string): void;
}

/** The process's own streams. */
export const processIo: Io = {
  out: (line) => process.stdout.write(line + '\n'),
  err: (line) => process.stderr.write(line + '\n'),
};

/** A command was called with the wrong words: the CLI prints the message and exits 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}
