/**
 * Byte-level tests of lib/criu/codec.ts: known encodings (including replies captured from the real
 * CRIU 4.2.1 swrk), round trips, presence versus proto2 defaults, and every way decoding must fail
 * with CriuProtocolError (ERR_CRIU_PROTOCOL) rather than return garbage or leak another error type.
 */
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from '../../../lib/criu/codec';
import { CriuProtocolError } from '../../../lib/criu/errors';
import { InvalidArgumentError, NodeCriuError } from '../../../lib/errors';
import {
  CriuReqType,
  reqTypeName,
  type CriuRequestMessage,
  type CriuResponseMessage,
} from '../../../lib/criu/messages';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Field tag bytes: (number << 3) | wire type, as a varint. */
function tag(field: number, wire: number): number[] {
  const out: number[] = [];
  let v = (field << 3) | wire;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v >>>= 7;
  }
  out.push(v);
  return out;
}

function expectProtocolError(bytes: Uint8Array, message?: RegExp): CriuProtocolError {
  let caught: unknown;
  try {
    decodeResponse(bytes);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(CriuProtocolError);
  const error = caught as CriuProtocolError;
  expect(error.code).toBe('ERR_CRIU_PROTOCOL');
  if (message) expect(error.message).toMatch(message);
  return error;
}

function expectInvalid(fn: () => unknown, code: string, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(InvalidArgumentError);
  expect((caught as InvalidArgumentError).code).toBe(code);
  expect((caught as Error).message).toMatch(message);
}

describe('request encoding: known bytes', () => {
  it('VERSION is 08 0a', () => {
    expect(encodeRequest({ type: CriuReqType.VERSION }).toString('hex')).toBe('080a');
  });

  it('CHECK with keep_open true is 08 03 20 01; keep_open false is still sent (presence)', () => {
    expect(encodeRequest({ type: CriuReqType.CHECK, keepOpen: true }).toString('hex')).toBe('08032001');
    expect(encodeRequest({ type: CriuReqType.CHECK, keepOpen: false }).toString('hex')).toBe('08032000');
  });

  it('a DUMP request encodes fields in number order with varints, including field 64', () => {
    const bytes = encodeRequest({
      type: CriuReqType.DUMP,
      opts: { networkLock: 2, tcpEstablished: true, leaveRunning: true, pid: 1234, imagesDirFd: 5 },
    });
    // 08 01 | 12 0c { 08 05 | 10 d2 09 | 18 01 | 28 01 | 80 04 02 }
    expect(bytes.toString('hex')).toBe('0801120c080510d2091801280180' + '0402');
  });

  it('images_dir_fd -1 is a 10-byte varint (int32 sign extension, as protobuf-c expects)', () => {
    const bytes = encodeRequest({ type: CriuReqType.RESTORE, opts: { imagesDirFd: -1, imagesDir: '/i' } });
    expect(bytes.toString('hex')).toBe('0802' + '12' + '10' + '08ffffffffffffffffff01' + 'a204' + '022f69');
  });

  it('absent optional fields are not on the wire; explicit defaults are', () => {
    expect(encodeRequest({ type: 1, opts: { imagesDirFd: 3 } }).toString('hex')).toBe('080112020803');
    expect(encodeRequest({ type: 1, opts: { imagesDirFd: 3, logLevel: 2 } }).toString('hex')).toBe('0801120408034802');
    expect(encodeRequest({ type: 1, opts: { imagesDirFd: 3, logLevel: undefined } }).toString('hex')).toBe(
      '080112020803',
    );
  });

  it('WAIT_PID carries pid as uint32 (field 6)', () => {
    expect(encodeRequest({ type: CriuReqType.WAIT_PID, pid: 300 }).toString('hex')).toBe('080b30ac02');
    expect(encodeRequest({ type: CriuReqType.WAIT_PID, pid: 0xffffffff }).toString('hex')).toBe('080b30ffffffff0f');
  });

  it('a NOTIFY answer is type 6 plus notify_success', () => {
    expect(encodeRequest({ type: CriuReqType.NOTIFY, notifySuccess: true }).toString('hex')).toBe('08061801');
    expect(encodeRequest({ type: CriuReqType.NOTIFY, notifySuccess: false }).toString('hex')).toBe('08061800');
  });
});

describe('response decoding: known bytes', () => {
  it("decodes CRIU 4.2.1's real VERSION reply (captured from swrk)", () => {
    expect(decodeResponse(hex('080a10015206080410022001'))).toEqual({
      type: CriuReqType.VERSION,
      success: true,
      version: { majorNumber: 4, minorNumber: 2, sublevel: 1 },
    });
  });

  it("decodes CRIU 4.2.1's real CHECK reply, with absent fields absent (not proto2 defaults)", () => {
    const resp = decodeResponse(hex('08031001'));
    expect(resp).toEqual({ type: CriuReqType.CHECK, success: true });
    expect(Object.keys(resp).sort()).toEqual(['success', 'type']);
    expect('crErrno' in resp).toBe(false);
    expect(resp.dump).toBeUndefined();
    expect(Object.getPrototypeOf(resp)).toBe(Object.prototype);
  });

  it("decodes CRIU 4.2.1's real failure replies (captured from swrk on this kernel)", () => {
    // DUMP of a pid that does not exist: ESRCH, and cr_errmsg is CRIU's FIRST error line, which on
    // machines without CAP_SYS_RESOURCE is the harmless RLIMIT_NOFILE complaint, not the cause.
    const errmsg = "Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n";
    const errmsgHex = '4a5e' + Buffer.from(errmsg).toString('hex');
    expect(decodeResponse(hex('080110001a0208003803' + errmsgHex))).toEqual({
      type: CriuReqType.DUMP,
      success: false,
      dump: { restored: false },
      crErrno: 3,
      crErrmsg: errmsg,
    });
    // A failed RESTORE carries restore.pid -1 and no cr_errno.
    expect(decodeResponse(hex('08021000220b08ffffffffffffffffff01' + errmsgHex))).toEqual({
      type: CriuReqType.RESTORE,
      success: false,
      restore: { pid: -1 },
      crErrmsg: errmsg,
    });
    // DUMP with opts {} (no images dir at all): EBADRQC.
    expect(decodeResponse(hex('080110001a0208003838'))).toEqual({
      type: 1,
      success: false,
      dump: { restored: false },
      crErrno: 56,
    });
    // WAIT_PID on a pid that is not criu's child: failure without cr_errno.
    expect(decodeResponse(hex('080b1000'))).toEqual({ type: CriuReqType.WAIT_PID, success: false });
    // FEATURE_CHECK of all three on this kernel (no soft-dirty, so no mem_track).
    expect(decodeResponse(hex('080910014206080010011801'))).toEqual({
      type: CriuReqType.FEATURE_CHECK,
      success: true,
      features: { memTrack: false, lazyPages: true, pidfdStore: true },
    });
    // A request type CRIU does not know (42): CRIU answers EMPTY, success false.
    expect(decodeResponse(hex('08001000'))).toEqual({ type: CriuReqType.EMPTY, success: false });
  });

  it('decodes a failure with cr_errno and cr_errmsg', () => {
    const msg = Buffer.from("Can't dump: no such process");
    const bytes = Buffer.from([0x08, 0x01, 0x10, 0x00, 0x38, 0x03, 0x4a, msg.length, ...msg]);
    expect(decodeResponse(bytes)).toEqual({
      type: CriuReqType.DUMP,
      success: false,
      crErrno: 3,
      crErrmsg: msg.toString(),
    });
  });

  it('decodes EMPTY + success false (CRIU rejecting a request)', () => {
    expect(decodeResponse(hex('08001000'))).toEqual({ type: CriuReqType.EMPTY, success: false });
  });

  it('decodes a NOTIFY message with script and pid', () => {
    const script = Buffer.from('post-restore');
    const notify = [0x0a, script.length, ...script, 0x10, 0xb9, 0x60];
    const bytes = Buffer.from([0x08, 0x06, 0x10, 0x01, 0x2a, notify.length, ...notify]);
    expect(decodeResponse(bytes)).toEqual({ type: 6, success: true, notify: { script: 'post-restore', pid: 12345 } });
  });

  it('decodes RESTORE (pid), DUMP restored=false, page server info, WAIT_PID status and features', () => {
    expect(decodeResponse(hex('0802 1001 2203 08d209'))).toEqual({ type: 2, success: true, restore: { pid: 1234 } });
    expect(decodeResponse(hex('0801 1001 1a02 0800'))).toEqual({ type: 1, success: true, dump: { restored: false } });
    expect(decodeResponse(hex('080c 1001 3206 10901c 18e807'))).toEqual({
      type: 12,
      success: true,
      ps: { port: 3600, pid: 1000 },
    });
    expect(decodeResponse(hex('080b 1001 5880 02'))).toEqual({ type: 11, success: true, status: 256 });
    expect(decodeResponse(hex('0809 1001 4204 0800 1801'))).toEqual({
      type: 9,
      success: true,
      features: { memTrack: false, pidfdStore: true },
    });
  });

  it('decodes a negative int32 (10-byte varint)', () => {
    expect(decodeResponse(hex('0801 1000 38ffffffffffffffffff01'))).toEqual({ type: 1, success: false, crErrno: -1 });
  });

  it('skips unknown fields of every wire type (a newer CRIU may add fields)', () => {
    const base = hex('08031001');
    const extras = Buffer.from([
      ...tag(100, 0),
      0x96,
      0x01, // varint
      ...tag(101, 1),
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8, // fixed64
      ...tag(102, 2),
      3,
      0x61,
      0x62,
      0x63, // length-delimited
      ...tag(103, 5),
      1,
      2,
      3,
      4, // fixed32
    ]);
    expect(decodeResponse(Buffer.concat([base, extras]))).toEqual({ type: 3, success: true });
    expect(decodeResponse(Buffer.concat([extras, base]))).toEqual({ type: 3, success: true });
  });

  it('accepts a Uint8Array view with an offset into a larger buffer', () => {
    const backing = Buffer.from('ffff08031001ffff', 'hex');
    expect(decodeResponse(new Uint8Array(backing.buffer, backing.byteOffset + 2, 4))).toEqual({
      type: 3,
      success: true,
    });
  });
});

describe('malformed responses throw CriuProtocolError', () => {
  it('empty input: type and success are required', () => {
    expectProtocolError(Buffer.alloc(0), /missing required 'type'/);
  });

  it('missing success', () => {
    expectProtocolError(hex('080a'), /missing required 'success'/);
  });

  it('missing required fields inside nested messages', () => {
    expectProtocolError(hex('0802 1001 2200'), /missing required 'pid'/); // restore {}
    expectProtocolError(hex('080a 1001 5202 0804'), /missing required 'minorNumber'/); // version {major}
  });

  it('an enum number CRIU 4.2 does not define', () => {
    expectProtocolError(hex('082a1001'), /type: 42 is not a criu_req_type value/);
    expectProtocolError(hex('08ffffffffffffffffff011001'), /type: -1 is not/);
    expect(reqTypeName(42)).toBe('UNKNOWN(42)');
  });

  it('a wire type that does not match the field', () => {
    expectProtocolError(Buffer.from([...tag(1, 2), 1, 1, 0x10, 1]), /type \(field 1\): wire type 2, expected 0/);
    expectProtocolError(
      Buffer.from([0x08, 0x01, 0x10, 0x01, ...tag(9, 0), 1]),
      /crErrmsg \(field 9\): wire type 0, expected 2/,
    );
    expectProtocolError(Buffer.from([0x08, 0x01, 0x10, 0x01, ...tag(4, 0), 1]), /restore \(field 4\)/);
  });

  it('groups, invalid wire types and field number 0', () => {
    expectProtocolError(Buffer.from([0x08, 0x01, 0x10, 0x01, ...tag(50, 3), ...tag(50, 4)]), /wire type 3/);
    expectProtocolError(Buffer.from([0x08, 0x01, 0x10, 0x01, ...tag(50, 6)]), /wire type 6/);
    expectProtocolError(Buffer.from([0x08, 0x01, 0x10, 0x01, ...tag(50, 7)]), /wire type 7/);
    expectProtocolError(Buffer.from([0x00, 0x01, 0x08, 0x01, 0x10, 0x01]), /field number 0/);
  });

  it('an over-long varint', () => {
    expectProtocolError(Buffer.from([0x08, ...Array(10).fill(0x80), 0x01, 0x10, 0x01]), /varint longer than 10 bytes/);
  });

  it('a length past the end, also inside a nested message', () => {
    expectProtocolError(hex('0801 1001 4a05 6162'), /length 5 exceeds the 2 bytes left/);
    expectProtocolError(hex('080a 1001 5204 0804 1a05'), /version: field 3 length 5 exceeds/);
  });

  it('every truncation of a full reply either decodes a valid prefix or throws CriuProtocolError', () => {
    const full = encodeResponse({
      type: CriuReqType.DUMP,
      success: false,
      dump: { restored: true },
      crErrno: 22,
      crErrmsg: 'Error (criu/cr-dump.c:2099): Dumping FAILED.',
      version: { majorNumber: 4, minorNumber: 2, gitid: 'v4.2', sublevel: 1, extra: 0, name: 'CRIU' },
      status: 9,
    });
    let failures = 0;
    for (let n = 0; n < full.length; n++) {
      try {
        const partial = decodeResponse(full.subarray(0, n));
        // A valid prefix ends on a field boundary after both required fields.
        expect(partial.type).toBe(CriuReqType.DUMP);
        expect(partial.success).toBe(false);
      } catch (error) {
        expect(error).toBeInstanceOf(CriuProtocolError);
        expect((error as CriuProtocolError).code).toBe('ERR_CRIU_PROTOCOL');
        failures++;
      }
    }
    expect(failures).toBeGreaterThan(full.length / 2);
    expect(decodeResponse(full).crErrmsg).toBe('Error (criu/cr-dump.c:2099): Dumping FAILED.');
  });

  it('random garbage never yields an error other than CriuProtocolError', () => {
    let seed = 0x2545f491;
    const random = (): number => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) / 0x100000000;
    };
    let decoded = 0;
    let rejected = 0;
    for (let i = 0; i < 3000; i++) {
      const noise = Buffer.alloc(1 + Math.floor(random() * 40));
      for (let j = 0; j < noise.length; j++) noise[j] = Math.floor(random() * 256);
      // Half the inputs start with a valid header, so the decoder gets past the required fields.
      const bytes = i % 2 === 0 ? Buffer.concat([hex('08011001'), noise]) : noise;
      try {
        const resp = decodeResponse(bytes);
        expect(typeof resp.success).toBe('boolean');
        decoded++;
      } catch (error) {
        if (!(error instanceof CriuProtocolError)) throw error;
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(0);
    expect(decoded + rejected).toBe(3000);
  });

  it('rejects a non-Uint8Array argument with InvalidArgumentError', () => {
    expectInvalid(
      () => decodeResponse('0803' as unknown as Uint8Array),
      'ERR_INVALID_ARG_TYPE',
      /must be a Uint8Array/,
    );
  });

  it('errors are NodeCriuErrors with the underlying protobufjs error as cause', () => {
    const error = expectProtocolError(hex('080a'));
    expect(error).toBeInstanceOf(NodeCriuError);
    expect(error.cause).toBeInstanceOf(Error);
  });
});

describe('encoding validates first', () => {
  it('required fields', () => {
    expectInvalid(() => encodeRequest({} as CriuRequestMessage), 'ERR_INVALID_ARG_VALUE', /criu_req.type is required/);
    expectInvalid(
      () => encodeRequest({ type: 1, opts: {} as never }),
      'ERR_INVALID_ARG_VALUE',
      /criu_req.opts.imagesDirFd is required/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, inheritFd: [{ key: 'k' } as never] } }),
      'ERR_INVALID_ARG_VALUE',
      /opts.inheritFd\[0\].fd is required/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, joinNs: [{ ns: 'net' } as never] } }),
      'ERR_INVALID_ARG_VALUE',
      /joinNs\[0\].nsFile is required/,
    );
    expectInvalid(
      () => encodeResponse({ type: 1 } as CriuResponseMessage),
      'ERR_INVALID_ARG_VALUE',
      /criu_resp.success is required/,
    );
    expectInvalid(
      () => encodeResponse({ type: 2, success: true, restore: {} as never }),
      'ERR_INVALID_ARG_VALUE',
      /restore.pid is required/,
    );
  });

  it('types, ranges, enum numbers and unknown keys', () => {
    expectInvalid(
      () => encodeRequest({ type: 99 as CriuReqType }),
      'ERR_INVALID_ARG_VALUE',
      /99 is not a criu_req_type value/,
    );
    expectInvalid(() => encodeRequest({ type: '1' as never }), 'ERR_INVALID_ARG_TYPE', /criu_req_type number/);
    expectInvalid(
      () => encodeRequest({ type: 1, keepOpen: 1 as never }),
      'ERR_INVALID_ARG_TYPE',
      /keepOpen must be a boolean/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 2 ** 31 } }),
      'ERR_OUT_OF_RANGE',
      /imagesDirFd must be an int32/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1.5 } }),
      'ERR_INVALID_ARG_TYPE',
      /must be an integer/,
    );
    expectInvalid(() => encodeRequest({ type: 11, pid: -1 }), 'ERR_OUT_OF_RANGE', /pid must be an uint32/);
    expectInvalid(() => encodeRequest({ type: 11, pid: 2 ** 32 }), 'ERR_OUT_OF_RANGE', /pid must be an uint32/);
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, networkLock: 4 as never } }),
      'ERR_INVALID_ARG_VALUE',
      /not a criu_network_lock_method/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, external: 'unix[1]' as never } }),
      'ERR_INVALID_ARG_TYPE',
      /external must be an array/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, external: [1 as never] } }),
      'ERR_INVALID_ARG_TYPE',
      /external\[0\] must be a string/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: { imagesDirFd: 1, leaveRuning: true } as never }),
      'ERR_INVALID_ARG_VALUE',
      /leaveRuning is not a field of criu_opts/,
    );
    expectInvalid(
      () => encodeRequest({ type: 1, opts: null as never }),
      'ERR_INVALID_ARG_TYPE',
      /opts must be a criu_opts object, got null/,
    );
    expectInvalid(() => encodeRequest(null as never), 'ERR_INVALID_ARG_TYPE', /criu_req must be a criu_req object/);
  });
});

describe('round trips', () => {
  it('every criu_resp field', () => {
    const resp: CriuResponseMessage = {
      type: CriuReqType.PAGE_SERVER,
      success: true,
      dump: { restored: true },
      restore: { pid: 99 },
      notify: { script: 'network-lock', pid: 0 },
      ps: { address: '::1', port: 27, pid: 5, fd: 6 },
      crErrno: 0,
      features: { memTrack: false, lazyPages: true, pidfdStore: false },
      crErrmsg: '',
      version: { majorNumber: 4, minorNumber: 2, gitid: 'abc', sublevel: 1, extra: 2, name: 'x' },
      status: -1,
    };
    expect(decodeResponse(encodeResponse(resp))).toEqual(resp);
  });

  it('requests of every type', () => {
    for (const type of Object.values(CriuReqType)) {
      const req: CriuRequestMessage = { type, opts: { imagesDirFd: 4, logFile: `${reqTypeName(type)}.log` } };
      expect(decodeRequest(encodeRequest(req))).toEqual(req);
    }
  });

  it('a large request: 2,000 external entries (about 90 KB)', () => {
    const external = Array.from(
      { length: 2000 },
      (_, i) => `unix[${1000000 + i}]:/run/some/fairly/long/socket/path-${i}`,
    );
    const req: CriuRequestMessage = { type: CriuReqType.DUMP, opts: { imagesDirFd: 3, pid: 1, external } };
    const bytes = encodeRequest(req);
    expect(bytes.length).toBeGreaterThan(80_000);
    expect(decodeRequest(bytes)).toEqual(req);
    // A large reply (a long cr_errmsg) decodes too.
    const crErrmsg = 'x'.repeat(70_000);
    expect(decodeResponse(encodeResponse({ type: 1, success: false, crErrmsg })).crErrmsg).toBe(crErrmsg);
  });

  it('non-ASCII strings survive as UTF-8', () => {
    const resp: CriuResponseMessage = { type: 1, success: false, crErrmsg: 'Fehler: Datei „ü“ 🦀' };
    const bytes = encodeResponse(resp);
    expect(bytes.includes(Buffer.from('🦀'))).toBe(true);
    expect(decodeResponse(bytes)).toEqual(resp);
  });

  it('encodeRequest returns a Buffer that stays valid after further encodes', () => {
    const first = encodeRequest({ type: CriuReqType.VERSION });
    const copy = Buffer.from(first);
    for (let i = 0; i < 100; i++) encodeRequest({ type: CriuReqType.CHECK, keepOpen: true });
    expect(Buffer.isBuffer(first)).toBe(true);
    expect(first.equals(copy)).toBe(true);
  });
});
