/**
 * The shared input checks (lib/security.ts) every entry point runs before a native call, nft or
 * CRIU: fds, paths, socket paths, namespace paths, and the private images directory.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import {
  checkFd,
  checkNetnsPath,
  checkPath,
  checkSocketPath,
  ensurePrivateDirectory,
  pathProblem,
} from '../../../lib/security';

describe('the shared checks (lib/security.ts)', () => {
  it('fds: integers 0..2^31-1 only', () => {
    expect(checkFd(0, 'fd')).toBe(0);
    expect(checkFd(0x7fffffff, 'fd')).toBe(0x7fffffff);
    for (const [value, code] of [
      [-1, 'ERR_OUT_OF_RANGE'],
      [2 ** 31, 'ERR_OUT_OF_RANGE'],
      [1.5, 'ERR_INVALID_ARG_TYPE'],
      ['1', 'ERR_INVALID_ARG_TYPE'],
      [null, 'ERR_INVALID_ARG_TYPE'],
    ] as const) {
      expect(() => checkFd(value, 'fd')).toThrow(expect.objectContaining({ name: 'InvalidArgumentError', code }));
    }
  });

  it('paths: string, not empty, no NUL, bounded; socket paths at most 107 bytes; absolute where required', () => {
    expect(checkPath('/run/netns/x', 'p', { absolute: true })).toBe('/run/netns/x');
    expect(() => checkPath('/run/netns/x\0y', 'p')).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: 'p must not contain a NUL byte' }),
    );
    expect(() => checkPath('', 'p')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => checkPath(7, 'p')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => checkPath('run/netns/x', 'p', { absolute: true })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }),
    );
    expect(() => checkPath(`/${'x'.repeat(4095)}`, 'p')).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(checkSocketPath(`/${'x'.repeat(106)}`, 's')).toHaveLength(107);
    expect(() => checkSocketPath(`/${'x'.repeat(107)}`, 's')).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
    // Bytes, not characters: 36 three-byte characters are 108 bytes.
    expect(() => checkSocketPath(`${'€'.repeat(36)}`, 's')).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
  });
});

describe('namespace paths and path problems', () => {
  it('netns paths: absolute and NUL-free only', () => {
    expect(checkNetnsPath('/run/netns/a')).toBe('/run/netns/a');
    expect(() => checkNetnsPath('run/netns/a')).toThrow(
      expect.objectContaining({
        code: 'ERR_INVALID_ARG_VALUE',
        message: "netns must be an absolute path, got 'run/netns/a'",
      }),
    );
    expect(() => checkNetnsPath('/proc/1/ns/net\0', '--netns')).toThrow('--netns must not contain a NUL byte');
  });

  it('pathProblem says what is wrong and never throws', () => {
    expect(pathProblem('/ok', 'p')).toBeUndefined();
    expect(pathProblem(Symbol('s'), 'p')).toEqual({
      code: 'ERR_INVALID_ARG_TYPE',
      message: 'p must be a path string, got Symbol(s)',
    });
    expect(pathProblem(Object.create(null), 'p')?.code).toBe('ERR_INVALID_ARG_TYPE');
    expect(pathProblem('abcd', 'p', { maxBytes: 3 })).toEqual({
      code: 'ERR_OUT_OF_RANGE',
      message: 'p is 4 bytes long; at most 3 are allowed',
    });
  });
});

describe('ensurePrivateDirectory', () => {
  let root: string;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'ncr-unit-private-'));
  });
  afterEach(() => {
    fs.rmSync(root, { recursive: true, force: true });
  });

  it('creates a missing directory and its missing parents 0700, and returns the absolute path', () => {
    const dir = path.join(root, 'a', 'b');
    const umask = process.umask(0o022);
    try {
      expect(ensurePrivateDirectory(dir)).toBe(dir);
    } finally {
      process.umask(umask);
    }
    expect(fs.statSync(dir).mode & 0o7777).toBe(0o700);
    expect(fs.statSync(path.join(root, 'a')).mode & 0o7777).toBe(0o700);
  });

  it('uses an existing private directory as it is', () => {
    fs.chmodSync(root, 0o700);
    expect(ensurePrivateDirectory(root)).toBe(root);
    expect(fs.statSync(root).mode & 0o7777).toBe(0o700);
  });

  it('refuses a group- or world-writable directory and a file with ERR_UNSAFE_DIRECTORY, changing nothing', () => {
    for (const mode of [0o770, 0o707, 0o777]) {
      fs.chmodSync(root, mode);
      expect(() => ensurePrivateDirectory(root, '--images-dir')).toThrow(
        expect.objectContaining({
          code: 'ERR_UNSAFE_DIRECTORY',
          message: expect.stringMatching(/^--images-dir .* is writable by/),
        }),
      );
      expect(fs.statSync(root).mode & 0o7777).toBe(mode);
    }
    const file = path.join(root, 'file');
    fs.writeFileSync(file, '');
    expect(() => ensurePrivateDirectory(file)).toThrow(
      expect.objectContaining({ code: 'ERR_UNSAFE_DIRECTORY', message: expect.stringContaining('is not a directory') }),
    );
  });

  it('refuses a bad path before touching the filesystem', () => {
    expect(() => ensurePrivateDirectory('')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => ensurePrivateDirectory(3)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});
