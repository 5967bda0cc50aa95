#!/usr/bin/env node
/**
 * Entry point of the `portcullis` binary; see src/commands/main.ts for the verbs.
 */
import { main } from './commands/main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`portcullis: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 2;
  },
);
