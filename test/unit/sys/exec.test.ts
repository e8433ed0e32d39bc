/** lib/sys/exec.ts without root: argument building, the environment, and the runner's error codes. */
import * as path from 'node:path';

import { commandEnv, commandLine, describeCommand, findExecutable, run, tail } from '../../../lib/sys/exec';

describe('commandLine', () => {
  it('runs the command itself without a namespace', () => {
    expect(commandLine('nft', ['-j', 'list', 'tables'])).toEqual({ command: 'nft', args: ['-j', 'list', 'tables'] });
  });

  it('enters a namespace through nsenter, arguments kept as they are (no shell)', () => {
    expect(commandLine('ip', ['addr', 'add', '10.0.0.1/24; reboot'], '/run/netns/a b')).toEqual({
      command: 'nsenter',
      args: ['--net=/run/netns/a b', '--', 'ip', 'addr', 'add', '10.0.0.1/24; reboot'],
    });
  });
});

describe('commandEnv', () => {
  it('forces LC_ALL=C over our environment and the additions', () => {
    const env = commandEnv({ LC_ALL: 'de_DE.UTF-8', EXTRA: '1' });
    expect(env.LC_ALL).toBe('C');
    expect(env.EXTRA).toBe('1');
    expect(env.PATH).toBe(process.env.PATH);
  });
});

describe('tail', () => {
  it('keeps the end of a long text', () => {
    expect(tail('abcdef', 3)).toBe('def');
    expect(tail('ab', 3)).toBe('ab');
  });
});

describe('run', () => {
  const node = process.execPath;

  it('resolves with stdout and stderr; stdin carries the input', async () => {
    const script = 'process.stdin.pipe(process.stdout); process.stderr.write(process.env.LC_ALL)';
    await expect(run(node, ['-e', script], { input: 'hello' })).resolves.toEqual({ stdout: 'hello', stderr: 'C' });
  });

  it('a non-zero exit is ERR_COMMAND_FAILED with the exit code, the stderr tail and the command', async () => {
    const error = await run(node, ['-e', 'process.stderr.write("bad thing"); process.exit(3)']).catch((e) => e);
    expect(error).toMatchObject({
      name: 'CommandError',
      code: 'ERR_COMMAND_FAILED',
      exitCode: 3,
      stderr: 'bad thing',
      command: node,
    });
    expect(error.args[0]).toBe('-e');
    expect(error.message).toContain('bad thing');
  });

  it('a command killed by a signal says which', async () => {
    const error = await run(node, ['-e', 'process.kill(process.pid, "SIGTERM")']).catch((e) => e);
    expect(error).toMatchObject({ code: 'ERR_COMMAND_FAILED', signal: 'SIGTERM' });
    expect(error.exitCode).toBeUndefined();
  });

  it('a missing executable is ERR_COMMAND_NOT_FOUND', async () => {
    await expect(run('/nonexistent/node-criu-no-such-command', [])).rejects.toMatchObject({
      code: 'ERR_COMMAND_NOT_FOUND',
    });
  });

  it('timeoutMs kills it: ERR_COMMAND_TIMEOUT', async () => {
    await expect(run(node, ['-e', 'setInterval(() => {}, 1000)'], { timeoutMs: 200 })).rejects.toMatchObject({
      code: 'ERR_COMMAND_TIMEOUT',
    });
  });

  it('an abort kills it: ABORT_ERR, also when the signal fired before', async () => {
    const controller = new AbortController();
    const running = run(node, ['-e', 'setInterval(() => {}, 1000)'], { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    await expect(running).rejects.toMatchObject({ code: 'ABORT_ERR' });
    await expect(run(node, ['-e', ''], { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });

  it('bounds stdout at maxOutputBytes', async () => {
    const { stdout } = await run(node, ['-e', 'process.stdout.write("x".repeat(100000))'], { maxOutputBytes: 1000 });
    expect(stdout.length).toBeLessThan(100000);
    expect(stdout.length).toBeGreaterThanOrEqual(1000);
  });
});

describe('findExecutable', () => {
  it('finds an executable on PATH or in the extra directories, else undefined', () => {
    expect(findExecutable('node-criu-no-such-command')).toBeUndefined();
    const dir = path.dirname(process.execPath);
    expect(findExecutable(path.basename(process.execPath), [dir])).toBe(process.execPath);
  });
});

describe('describe', () => {
  it('shortens long arguments in messages', () => {
    expect(describeCommand('nft', ['-j', 'x'.repeat(500)])).toBe(`nft -j ${'x'.repeat(117)}...`);
    expect(describeCommand('ip', ['addr'])).toBe('ip addr');
  });
});
