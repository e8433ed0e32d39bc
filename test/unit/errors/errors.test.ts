/**
 * The error classes callers match on: `code` always a string, errno/syscall/cause kept from what
 * failed underneath, `name` the class's own, and no field present that was not given.
 */
import { criuCapabilityProblem } from '../../../lib/capabilities';
import { CliError, UsageError } from '../../../lib/cli/common';
import {
  CriuAbortError,
  CriuConnectionError,
  CriuNotifyHandlerError,
  CriuProtocolError,
  CriuRequestError,
  CriuTimeoutError,
} from '../../../lib/criu/errors';
import { InvalidArgumentError, NodeCriuError, callNative, describeValue, fromNativeError } from '../../../lib/errors';
import { HandoverError } from '../../../lib/migration/handover-errors';
import { ConnectionImageError, NftablesLockError, SoccrError } from '../../../lib/soccr/errors';

/** An error shaped like the ones csrc/errors.cc throws. */
function nativeError(code: string, errno: number, syscall: string, message = `${syscall} ${code}`): Error {
  return Object.assign(new Error(message), { code, errno, syscall });
}

describe('NodeCriuError', () => {
  it('keeps code, errno, syscall and cause; name is the class', () => {
    const cause = new Error('below');
    const error = new NodeCriuError('failed', { code: 'ENOENT', errno: -2, syscall: 'open', cause });
    expect(error).toBeInstanceOf(Error);
    expect(error).toMatchObject({
      name: 'NodeCriuError',
      message: 'failed',
      code: 'ENOENT',
      errno: -2,
      syscall: 'open',
    });
    expect(error.cause).toBe(cause);
  });

  it('has no errno, syscall, cause or capability when not given', () => {
    const error = new NodeCriuError('failed', { code: 'ERR_X' });
    expect(error.errno).toBeUndefined();
    expect(error.syscall).toBeUndefined();
    for (const key of ['cause', 'capability', 'missingCapabilities'])
      expect(Object.prototype.hasOwnProperty.call(error, key)).toBe(false);
  });

  it('subclasses carry their own name and default code', () => {
    const cases: [NodeCriuError, string, string][] = [
      [new InvalidArgumentError('x'), 'InvalidArgumentError', 'ERR_INVALID_ARG_VALUE'],
      [new InvalidArgumentError('x', 'ERR_OUT_OF_RANGE'), 'InvalidArgumentError', 'ERR_OUT_OF_RANGE'],
      [new SoccrError('x', { code: 'ENOTCONN' }), 'SoccrError', 'ENOTCONN'],
      [new ConnectionImageError('x'), 'ConnectionImageError', 'ERR_CONNECTION_IMAGE_INVALID'],
      [new ConnectionImageError('x', { code: 'ERR_OTHER' }), 'ConnectionImageError', 'ERR_OTHER'],
      [new NftablesLockError('x', { code: 'ERR_NFT_FAILED' }), 'NftablesLockError', 'ERR_NFT_FAILED'],
      [new CriuProtocolError('x'), 'CriuProtocolError', 'ERR_CRIU_PROTOCOL'],
      [new CriuTimeoutError('x', 5), 'CriuTimeoutError', 'ERR_CRIU_TIMEOUT'],
      [new CriuAbortError('x'), 'CriuAbortError', 'ABORT_ERR'],
      [new HandoverError('x', 'ERR_HANDOVER_PROTOCOL'), 'HandoverError', 'ERR_HANDOVER_PROTOCOL'],
      [new UsageError('x'), 'UsageError', 'ERR_USAGE'],
      [new CliError('x', 3, 'ERR_NOT_ROOT', 'run it with sudo'), 'CliError', 'ERR_NOT_ROOT'],
    ];
    for (const [error, name, code] of cases) {
      expect(error).toBeInstanceOf(NodeCriuError);
      expect({ name: error.name, code: error.code }).toEqual({ name, code });
    }
  });

  it('subclass details: exit code and signal, timeout, notify script, handover counters', () => {
    expect(new CriuConnectionError('x', { code: 'ENOENT', exitCode: null, signal: 'SIGKILL' })).toMatchObject({
      exitCode: null,
      signal: 'SIGKILL',
    });
    expect(new CriuConnectionError('x', { code: 'E' }).exitCode).toBeUndefined();
    expect(new CriuTimeoutError('x', 250).timeoutMs).toBe(250);
    const cause = new Error('handler threw');
    const notify = new CriuNotifyHandlerError('post-dump', cause);
    expect(notify).toMatchObject({ code: 'ERR_CRIU_NOTIFY_HANDLER', script: 'post-dump', cause });
    expect(notify.message).toBe("notify handler for 'post-dump' failed: handler threw");
    expect(new CriuNotifyHandlerError('pre-dump', 42).message).toBe("notify handler for 'pre-dump' failed: 42");
    expect(new HandoverError('x', 'E')).toMatchObject({ resumed: 0, lost: 0, closed: 0 });
    expect(new CliError('x', 4, 'ENOENT', undefined, { pid: 9 })).toMatchObject({ exitCode: 4, details: { pid: 9 } });
  });

  it("CriuRequestError: code from cr_errno's name, EMPTY as unsupported, errno negative; EPERM when capabilities lack", () => {
    // CRIU runs with our capabilities, so without them the code is EPERM whatever CRIU said.
    const lacking = criuCapabilityProblem() !== undefined;
    const esrch = new CriuRequestError('dump failed', { requestType: 'DUMP', responseType: 'DUMP', crErrno: 3 });
    expect(esrch).toMatchObject({ requestType: 'DUMP', responseType: 'DUMP', crErrno: 3, errno: -3 });
    expect(esrch.code).toBe(lacking ? 'EPERM' : 'ESRCH');
    const empty = new CriuRequestError('rejected', { requestType: 'FEATURE_CHECK', responseType: 'EMPTY' });
    expect(empty.code).toBe(lacking ? 'EPERM' : 'ERR_CRIU_UNSUPPORTED');
    expect(empty.errno).toBeUndefined();
    const plain = new CriuRequestError('failed', { requestType: 'RESTORE', logFile: '/x/restore.log', logTail: 'E' });
    expect(plain.code).toBe(lacking ? 'EPERM' : 'ERR_CRIU_REQUEST_FAILED');
    expect(plain).toMatchObject({ logFile: '/x/restore.log', logTail: 'E' });
  });
});

describe('describeValue', () => {
  it('never throws, whatever the value', () => {
    const noProto = Object.create(null) as object;
    const badToString = { toString: 42 };
    const throwing = {
      toString() {
        throw new Error('no');
      },
    };
    expect(describeValue(noProto)).toBe('[object Object]');
    expect(describeValue(badToString)).toBe('[object Object]');
    expect(describeValue(throwing)).toBe('[object Object]');
    expect(describeValue(Symbol('s'))).toBe('Symbol(s)');
    expect(describeValue(12n)).toBe('12');
    expect(describeValue(undefined)).toBe('undefined');
  });
});

describe('native errors to typed errors', () => {
  it('takes errno and syscall only from errors with numeric errno and string code and syscall', () => {
    expect(fromNativeError(SoccrError, nativeError('ENOENT', -2, 'open'))).toMatchObject({
      errno: -2,
      syscall: 'open',
    });
    for (const notNative of [
      { errno: -2, code: 'ENOENT' },
      { errno: '2', code: 'ENOENT', syscall: 'open' },
    ]) {
      const typed = fromNativeError(SoccrError, Object.assign(new Error('x'), notNative));
      expect(typed.code).toBe('ENOENT');
      expect(typed.syscall).toBeUndefined();
    }
    for (const notAnError of [null, 'ENOENT']) expect(fromNativeError(SoccrError, notAnError).code).toBe('ERR_NATIVE');
  });

  it('keeps errno, code and syscall, prefixes the context, and keeps the original as cause', () => {
    const original = nativeError('ENOENT', -2, 'open', 'open ENOENT: no such file');
    const typed = fromNativeError(SoccrError, original, 'libsoccr restore');
    expect(typed).toBeInstanceOf(SoccrError);
    expect(typed).toMatchObject({
      name: 'SoccrError',
      message: 'libsoccr restore: open ENOENT: no such file',
      code: 'ENOENT',
      errno: -2,
      syscall: 'open',
    });
    expect(typed.cause).toBe(original);
  });

  it('passes NodeCriuErrors through unchanged', () => {
    const already = new InvalidArgumentError('bad');
    expect(fromNativeError(SoccrError, already, 'ctx')).toBe(already);
  });

  it('keeps a string code of other errors, and says ERR_NATIVE when there is none', () => {
    const coded = fromNativeError(SoccrError, Object.assign(new TypeError('wrong'), { code: 'ERR_X' }));
    expect(coded).toMatchObject({ code: 'ERR_X', message: 'wrong' });
    expect(coded.errno).toBeUndefined();
    expect(fromNativeError(SoccrError, new Error('plain'), 'ctx')).toMatchObject({
      code: 'ERR_NATIVE',
      message: 'ctx: plain',
    });
    expect(fromNativeError(SoccrError, 'a string')).toMatchObject({ code: 'ERR_NATIVE', message: 'a string' });
  });

  it('callNative returns the value, or throws the typed error', () => {
    expect(callNative(SoccrError, 'ctx', () => 7)).toBe(7);
    expect(() =>
      callNative(SoccrError, 'ctx', () => {
        throw nativeError('EBADF', -9, 'getsockopt');
      }),
    ).toThrow(expect.objectContaining({ name: 'SoccrError', code: 'EBADF', errno: -9, syscall: 'getsockopt' }));
  });
});
