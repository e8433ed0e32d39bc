/**
 * The CLI's argument handling, without running any command: strict parsing, number flags, the
 * usage errors each command raises before it checks root or looks for CRIU, and the mapping of
 * error codes to exit codes and hints.
 */
import {
  COMMON_OPTIONS,
  EXIT,
  UsageError,
  parse,
  positiveInteger,
  toCliError,
  CliError,
} from '../../../lib/cli/common';
import { main } from '../../../lib/cli/main';

/** Runs main() with stdout and stderr captured. */
async function run(...argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout += String(chunk);
    return true;
  });
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr += String(chunk);
    return true;
  });
  try {
    const code = await main(argv);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe('parse and number flags', () => {
  it('parses known options and refuses unknown ones, positionals and missing values as UsageError', () => {
    expect(parse(['--json', '-q', '--criu-path', '/x/criu'], COMMON_OPTIONS)).toEqual({
      json: true,
      quiet: true,
      'criu-path': '/x/criu',
    });
    for (const args of [['--bogus'], ['positional'], ['--criu-path']]) {
      expect(() => parse(args, COMMON_OPTIONS)).toThrow(
        expect.objectContaining({ name: 'UsageError', code: 'ERR_USAGE' }),
      );
    }
  });

  it('positiveInteger: digits only, at least 1; undefined passes through', () => {
    expect(positiveInteger(undefined, '--pid')).toBeUndefined();
    expect(positiveInteger('1', '--pid')).toBe(1);
    expect(positiveInteger('4194304', '--pid')).toBe(4194304);
    for (const bad of ['0', '-1', '1.5', '1e3', ' 1', '0x10', '']) {
      expect(() => positiveInteger(bad, '--pid')).toThrow(
        expect.objectContaining({ code: 'ERR_USAGE', message: `--pid must be a positive integer, got '${bad}'` }),
      );
    }
  });
});

describe('usage errors exit 2 before any privileged step', () => {
  it.each([
    [['dump', '--bogus'], /Unknown option '--bogus'/],
    [['dump'], /--pid is required/],
    [['dump', '--pid', '0', '--images-dir', '/x'], /--pid must be a positive integer/],
    [['dump', '--pid', '1'], /--images-dir is required/],
    [
      ['dump', '--pid', '1', '--images-dir', '/x', '--network-lock', 'pf'],
      /--network-lock must be one of nftables, iptables, skip/,
    ],
    [['restore', '--images-dir', '/x', '--network-lock', 'x'], /--network-lock must be one of/],
    [['migrate', '--pid', '1', '--images-dir', '/x', '--route', 'connections'], /cannot move an arbitrary pid/],
    [['migrate', '--pid', '1', '--images-dir', '/x', '--route', 'other'], /--route must be 'process' or 'connections'/],
    [
      ['migrate', '--pid', '1', '--images-dir', '/x', '--transfer', 'ftp'],
      /--transfer must be 'directory' or 'page-server'/,
    ],
    [['service'], /--address is required/],
    [['service', '--address', '/x.sock', '--socket-mode', '999'], /--socket-mode must be an octal mode/],
    [['service', '--address', '/x.sock', '--socket-mode', 'rw'], /--socket-mode must be an octal mode/],
  ])('%j', async (argv, message) => {
    const { code, stdout, stderr } = await run(...argv);
    expect(code).toBe(EXIT.USAGE);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(stderr).toContain("node-criu: hint: see 'node-criu <command> --help'");
  });

  it('an unknown command: exit 2, and with --json one error document on stdout', async () => {
    const { code, stdout } = await run('frobnicate', '--json');
    expect(code).toBe(EXIT.USAGE);
    expect(JSON.parse(stdout)).toEqual({
      ok: false,
      error: {
        code: 'ERR_USAGE',
        message: "unknown command 'frobnicate'",
        exitCode: 2,
        hint: "see 'node-criu --help'",
      },
    });
  });

  it('no command prints the help and exits 2; --help exits 0; --version prints the package version', async () => {
    const none = await run();
    expect(none.code).toBe(EXIT.USAGE);
    expect(none.stdout).toMatch(/^Usage: node-criu <command>/);
    expect((await run('--help')).code).toBe(EXIT.OK);
    const help = await run('dump', '--help');
    expect(help.code).toBe(EXIT.OK);
    expect(help.stdout).toMatch(/^Usage: node-criu dump --pid PID --images-dir DIR/);
    const version = await run('--version');
    expect(version.stdout).toBe(`${(require('../../../package.json') as { version: string }).version}\n`);
  });

  it('takes its signal handlers away again', async () => {
    const before = process.listenerCount('SIGINT');
    await run('service');
    expect(process.listenerCount('SIGINT')).toBe(before);
  });
});

describe('toCliError: codes to exit codes and hints', () => {
  const exitOf = (code: string) => toCliError(Object.assign(new Error('x'), { code })).exitCode;

  it('maps each kind of failure to its exit code', () => {
    expect(exitOf('ERR_PID_NOT_FOUND')).toBe(EXIT.NOT_FOUND);
    expect(exitOf('ESRCH')).toBe(EXIT.NOT_FOUND);
    expect(exitOf('ENOENT')).toBe(EXIT.NOT_FOUND);
    expect(exitOf('ERR_CRIU_NOT_FOUND')).toBe(EXIT.ENVIRONMENT);
    expect(exitOf('ERR_MIGRATION_ROLLED_BACK')).toBe(EXIT.NOT_MIGRATED);
    expect(exitOf('ERR_MIGRATION_LOST')).toBe(EXIT.LOST);
    expect(exitOf('ERR_OUT_OF_RANGE')).toBe(EXIT.USAGE);
    expect(exitOf('ERR_UNSAFE_DIRECTORY')).toBe(EXIT.USAGE);
    expect(exitOf('EIO')).toBe(EXIT.FAILED);
    expect(toCliError('not an error')).toMatchObject({
      code: 'ERR_UNKNOWN',
      exitCode: EXIT.FAILED,
      message: 'not an error',
    });
  });

  it('keeps a CliError, turns a UsageError into exit 2, and keeps the details --json prints', () => {
    const cli = new CliError('x', EXIT.ENVIRONMENT, 'ERR_NOT_ROOT');
    expect(toCliError(cli)).toBe(cli);
    expect(toCliError(new UsageError('bad'))).toMatchObject({
      code: 'ERR_USAGE',
      exitCode: EXIT.USAGE,
      message: 'bad',
    });
    const lost = toCliError(
      Object.assign(new Error('both failed'), {
        code: 'ERR_MIGRATION_LOST',
        imagesDir: '/imgs',
        pid: 42,
        phase: 'rollback',
        logFile: '/imgs/restore.log',
      }),
    );
    expect(lost.details).toEqual({ imagesDir: '/imgs', pid: 42, phase: 'rollback', logFile: '/imgs/restore.log' });
    expect(lost.hint).toBe(
      "restore it by hand: node-criu restore --images-dir /imgs --netns <source netns>; CRIU's log: /imgs/restore.log",
    );
  });

  it('says what to do for the common failures', () => {
    const hint = (code: string) => toCliError(Object.assign(new Error('x'), { code })).hint;
    expect(hint('ERR_CRIU_NOT_FOUND')).toMatch(/node-criu check --install/);
    expect(hint('EEXIST')).toMatch(/CRIU restores the same pid/);
    expect(hint('ESRCH')).toBe('the process is gone');
    expect(hint('EIO')).toBeUndefined();
  });
});
