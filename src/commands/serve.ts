/**
 * `portcullis serve`: load and freeze the config, start the proxy, drain on SIGTERM/SIGINT.
 */
import { startApp } from '../app.js';
import { ConfigError, describeFlags, loadConfig } from '../config/load.js';
import { PolicyLoadError } from '../policy/load.js';
import { trustHint } from './ca.js';
import type { Io } from './io.js';

/** Runs the proxy until a signal; returns the exit code. */
export async function serveCommand(argv: string[], io: Io): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.out('usage: portcullis serve [--config FILE] [flags]\n\nEach flag is also PORTCULLIS_<FLAG> and a camelCase key of the --config file.\n');
    io.out(describeFlags());
    return 0;
  }
  let config;
  try {
    config = loadConfig(argv, process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      io.err(`portcullis: ${err.message}`);
      return 2;
    }
    throw err;
  }
  let app;
  try {
    app = await startApp(config);
  } catch (err) {
    if (err instanceof PolicyLoadError) {
      io.err(err.message);
      io.err(`portcullis: the policy ${config.policy} is invalid; nothing was started`);
      return 2;
    }
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') {
      io.err(`portcullis: cannot listen: ${(err as Error).message}`);
      return 2;
    }
    throw err;
  }
  const proxy = `${app.proxyAddress.address.includes(':') ? `[${app.proxyAddress.address}]` : app.proxyAddress.address}:${app.proxyAddress.port}`;
  const scheme = config.tls ? 'https' : 'http';
  io.err(`portcullis: proxy listening on ${scheme}://${proxy}, admin API on ${app.adminAddress}`);
  io.err(`portcullis: policy ${config.policy} (${app.policy.current.hash.slice(0, 12)})`);
  if (app.createdAdminTokenFile) {
    io.err(`portcullis: created an admin token in ${app.createdAdminTokenFile} (mode 0600); the CLI reads it from there`);
  }
  if (app.createdCaFile) {
    io.err(`portcullis: the policy intercepts TLS, so an interception CA was created: ${app.createdCaFile}`);
    io.err(trustHint(app.createdCaFile));
  }
  io.err('portcullis: create a session for an agent, then give it the proxy line it prints:');
  io.err(`    npx portcullis sessions create my-agent --app my-agent-runtime`);
  io.err(`    export HTTP_PROXY=${scheme}://my-agent:<token>@${proxy} HTTPS_PROXY=${scheme}://my-agent:<token>@${proxy}`);

  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      io.err(`portcullis: ${signal}: draining (up to ${config.drainTimeoutMs} ms)`);
      app.close().then(resolve, resolve);
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  return 0;
}
