#!/usr/bin/env node
/**
 * node-criu: the command line. `node-criu <command> [options]`; see `node-criu --help`.
 * Results go to stdout (one JSON document with --json), progress and errors to stderr; the exit
 * code says what kind of failure it was (common.ts EXIT). No argument ever passes through a shell.
 */
import { agentCommand, AGENT_HELP } from './agent';
import { checkCommand, CHECK_HELP } from './check';
import { CliError, EXIT, makeOutput, toCliError, printError, UsageError, type Output } from './common';
import { DEMO_HELP, demoCommand } from './demo';
import { dumpCommand, DUMP_HELP, restoreCommand, RESTORE_HELP } from './dump-restore';
import { migrateCommand, MIGRATE_HELP } from './migrate';
import { serviceCommand, SERVICE_HELP } from './service';

const HELP = `Usage: node-criu <command> [options]

Checkpoint, restore and live-migrate Linux processes with their TCP connections (CRIU).

Commands:
  check     can this machine do it? (root, CRIU 4.2+, kernel checks, features, tools)
  dump      checkpoint a process tree into a directory
  restore   restore a process tree from a directory
  migrate   live-migrate a process tree into another network namespace, or to another host
  agent     receive migrations on this host (mutual TLS), until SIGTERM
  demo      a live demonstration with clients streaming through a migration
  service   run 'criu service' on a unix socket you name (mode 0600), until Ctrl-C

Run 'node-criu <command> --help' for a command's options. Common options: --json (one JSON
document on stdout), --quiet (no progress on stderr), --criu-path PATH.

Exit codes: 0 ok, 1 failed, 2 usage, 3 environment (not root, CRIU missing or too old),
4 not found (pid, namespace, images), 5 migration not done but the process still runs on the
source, 6 the process is not running anywhere (images kept), 7 uncertain: the channel to the
agent was lost after the restore was requested (check the target host; nothing rolled back),
8 refused: the process dumped with --leave-running still runs and owns its connections.`;

type Command = (args: string[], out: Output, signal: AbortSignal) => Promise<number>;

const COMMANDS: Record<string, { run: Command; help: string }> = {
  check: { run: checkCommand, help: CHECK_HELP },
  dump: { run: dumpCommand, help: DUMP_HELP },
  restore: { run: restoreCommand, help: RESTORE_HELP },
  migrate: { run: migrateCommand, help: MIGRATE_HELP },
  demo: { run: demoCommand, help: DEMO_HELP },
  service: { run: serviceCommand, help: SERVICE_HELP },
  agent: { run: agentCommand, help: AGENT_HELP },
};

export async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  const json = args.includes('--json');
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(`${HELP}\n`);
    return name === undefined ? EXIT.USAGE : EXIT.OK;
  }
  if (name === '--version' || name === '-v') {
    process.stdout.write(`${(require('../../package.json') as { version: string }).version}\n`);
    return EXIT.OK;
  }
  const command = COMMANDS[name];
  if (command === undefined) {
    printError(json, new CliError(`unknown command '${name}'`, EXIT.USAGE, 'ERR_USAGE', "see 'node-criu --help'"));
    return EXIT.USAGE;
  }
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${command.help}\n`);
    return EXIT.OK;
  }
  const out = makeOutput(json, args.includes('--quiet') || args.includes('-q'));
  // Ctrl-C: migrate stops before the dump, or rolls back after it; it never kills CRIU mid-dump.
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    out.progress(`${sig}: stopping at the next safe point`);
    controller.abort(new CliError(`interrupted by ${sig}`, EXIT.FAILED, 'ERR_INTERRUPTED'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    return await command.run(args, out, controller.signal);
  } catch (error) {
    const failure = toCliError(error instanceof UsageError ? error : error);
    printError(json, failure);
    return failure.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (error: unknown) => {
      process.stderr.write(`node-criu: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
      process.exitCode = EXIT.FAILED;
    },
  );
}
