/**
 * The `portcullis` command dispatcher: argv → the verb's module. Exit codes: 0 ok, 1 a check failed,
 * 2 usage or configuration error.
 */
import {
  developerModeOff,
  developerModeOn,
  lockdownOff,
  lockdownOn,
  lockdownStatus,
  sessionsCreate,
  sessionsList,
  sessionsRevoke,
  sessionsRevokeAll,
} from './admin-client.js';
import { explainCommand, policyCheck, policyTest } from './policy.js';
import { serveCommand } from './serve.js';
import { caInit, caRotate, caShow } from './ca.js';
import { processIo, UsageError, type Io } from './io.js';

type Command = (argv: string[], io: Io) => Promise<number>;

const COMMANDS: Record<string, Command | Record<string, Command>> = {
  policy: { check: policyCheck, test: policyTest },
  explain: explainCommand,
  serve: serveCommand,
  ca: { init: caInit, show: caShow, rotate: caRotate },
  sessions: { list: sessionsList, create: sessionsCreate, revoke: sessionsRevoke, 'revoke-all': sessionsRevokeAll },
  lockdown: { on: lockdownOn, off: lockdownOff, status: lockdownStatus },
  'developer-mode': { on: developerModeOn, off: developerModeOff },
};

const USAGE = `usage: portcullis <command>

  serve [--config FILE] [flags]         run the proxy
  policy check FILE...                  validate policy files (file:line:col errors)
  policy test FILE...                   run the policy's tests: table
  explain --account A METHOD URL        show the decision for a request, sending nothing
  sessions list|create|revoke|revoke-all
  lockdown on|off|status ACCOUNT
  developer-mode on|off ACCOUNT
  ca init|show|rotate [--ca-dir DIR]    the TLS interception CA`;

/** Runs the CLI with the given arguments; returns the exit code. */
export async function main(argv: string[], io: Io = processIo): Promise<number> {
  const [verb, ...rest] = argv;
  if (verb === undefined || verb === '--help' || verb === '-h' || verb === 'help') {
    io.out(USAGE);
    return verb === undefined ? 2 : 0;
  }
  const entry = COMMANDS[verb];
  try {
    if (entry === undefined) throw new UsageError(`unknown command "${verb}"\n${USAGE}`);
    if (typeof entry === 'function') return await entry(rest, io);
    const [sub, ...args] = rest;
    const command = sub === undefined ? undefined : entry[sub];
    if (command === undefined) throw new UsageError(`usage: portcullis ${verb} ${Object.keys(entry).join('|')} ...`);
    return await command(args, io);
  } catch (err) {
    if (err instanceof UsageError || (err instanceof Error && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
      io.err(err.message);
      return 2;
    }
    throw err;
  }
}
