/** Replies to results and errors (lib/criu/replies.ts) and the client's argument checks (client-options.ts). */
import { checkClientOptions, checkFeatures, splitPreDumpOptions } from '../../../lib/criu/client-options';
import { CriuReqType } from '../../../lib/criu/messages';
import { pageServerResult, requestFailure, toCriuVersion } from '../../../lib/criu/replies';

describe('toCriuVersion', () => {
  it('builds the text and libcriu number; a gitid build rounds up to the next 100', () => {
    expect(toCriuVersion({ majorNumber: 4, minorNumber: 2, sublevel: 1 })).toEqual({
      major: 4,
      minor: 2,
      sublevel: 1,
      text: '4.2.1',
      number: 40201,
    });
    expect(toCriuVersion({ majorNumber: 4, minorNumber: 2, gitid: 'abc', name: 'CRIUty' })).toEqual({
      major: 4,
      minor: 2,
      gitid: 'abc',
      name: 'CRIUty',
      text: '4.2',
      number: 40300,
    });
  });
});

describe('requestFailure', () => {
  it("carries CRIU's errno and message; an EMPTY reply reads as a rejection", () => {
    const failed = requestFailure(
      { type: CriuReqType.DUMP },
      { type: CriuReqType.DUMP, success: false, crErrno: 3, crErrmsg: 'no such task\n' },
    );
    expect(failed).toMatchObject({
      name: 'CriuRequestError',
      requestType: 'DUMP',
      crErrno: 3,
      crErrmsg: 'no such task\n',
    });
    expect(failed.message).toMatch(/^CRIU DUMP failed: no such task; errno 3, ESRCH/);
    const empty = requestFailure({ type: CriuReqType.WAIT_PID, pid: 9 }, { type: CriuReqType.EMPTY, success: false });
    expect(empty).toMatchObject({ requestType: 'WAIT_PID', responseType: 'EMPTY' });
    expect(empty.message).toMatch(/^CRIU rejected WAIT_PID 9 \(EMPTY reply\)/);
  });
});

describe('pageServerResult', () => {
  it('reports the pid only when CRIU gives a real one; no port is a failure', () => {
    const type = CriuReqType.PAGE_SERVER;
    expect(pageServerResult({ type }, { type, success: true, ps: { port: 1234, pid: 0 } })).toEqual({ port: 1234 });
    expect(pageServerResult({ type }, { type, success: true, ps: { port: 1234, pid: 55 } })).toEqual({
      port: 1234,
      pid: 55,
    });
    expect(() => pageServerResult({ type }, { type, success: true })).toThrow(
      expect.objectContaining({ name: 'CriuRequestError' }),
    );
  });
});

describe('client options', () => {
  it('accepts swrk and service forms', () => {
    expect(checkClientOptions({})).toEqual({ mode: 'swrk' });
    expect(checkClientOptions({ criuPath: '/usr/sbin/criu' })).toEqual({ mode: 'swrk', criuPath: '/usr/sbin/criu' });
    expect(checkClientOptions({ mode: 'service', address: '/run/criu.sock' })).toEqual({
      mode: 'service',
      address: '/run/criu.sock',
    });
  });

  it.each([
    [null, 'ERR_INVALID_ARG_TYPE'],
    [{ bogus: 1 }, 'ERR_INVALID_ARG_VALUE'],
    [{ mode: 'daemon' }, 'ERR_INVALID_ARG_VALUE'],
    [{ mode: 'service' }, 'ERR_INVALID_ARG_VALUE'],
    [{ mode: 'service', address: '/x.sock', criuPath: '/criu' }, 'ERR_INVALID_ARG_VALUE'],
    [{ mode: 'service', address: '\0abstract' }, 'ERR_INVALID_ARG_VALUE'],
    [{ address: '/x.sock' }, 'ERR_INVALID_ARG_VALUE'],
    [{ criuPath: '' }, 'ERR_INVALID_ARG_TYPE'],
    [{ criuPath: 7 }, 'ERR_INVALID_ARG_TYPE'],
  ])('refuses %p with %s', (options, code) => {
    expect(() => checkClientOptions(options)).toThrow(expect.objectContaining({ code }));
  });

  it('checks features and preDump options', () => {
    expect(() => checkFeatures({ memTrack: true })).not.toThrow();
    expect(() => checkFeatures({ fast: true })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(() => checkFeatures({ memTrack: 1 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const shouldContinue = () => false;
    expect(splitPreDumpOptions({ imagesDir: '/d', shouldContinue, maxIterations: 3, pid: 5 })).toEqual({
      shouldContinue,
      maxIterations: 3,
      criuOptions: { imagesDir: '/d', pid: 5 },
    });
    expect(() => splitPreDumpOptions({ imagesDir: '/d', maxIterations: 0 })).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }),
    );
    expect(() => splitPreDumpOptions({ imagesDir: '/d', shouldContinue: true })).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
  });
});
