/**
 * Property tests of every decoder: valid encodings with bit flips, truncations, splices,
 * insertions and corrupted length fields (plus plain random bytes) go into
 * decodeConnectionImage, decodeResponse (including NOTIFY messages) and decodeRequest. Each call
 * either returns a message that re-encodes to the same bytes' meaning, or throws a typed error
 * (ConnectionImageError / CriuProtocolError with its code) — never another error, a crash or a
 * hang. No fd is opened by any decoder (checked).
 */
import * as fc from 'fast-check';

// Imported per half (not from lib/index) so these tests do not depend on lib/migration.
import {
  CriuProtocolError,
  decodeRequest,
  decodeResponse,
  encodeRequest,
  encodeResponse,
  toCriuOpts,
} from '../../../lib/criu';
import type { CriuOptions, CriuRequestMessage } from '../../../lib/criu';
import { ConnectionImageError, decodeConnectionImage, encodeConnectionImage } from '../../../lib/soccr';
import { compact, featuresArb, imageArb, opt, reqType, responseArb } from '../../fuzz/arbitraries';
import { count, mutatedBytes, printTally, runs, typedOutcome, withoutOpenBugs } from '../../fuzz/fuzz-helpers';
import { type FdSnapshot, newFds, openFds } from '../../helpers/fds';

let fdsAtStart: FdSnapshot = new Map();
beforeAll(() => {
  fdsAtStart = openFds();
});
afterAll(() => {
  printTally('decoders');
  expect(newFds(fdsAtStart)).toEqual([]);
});

// ---------------------------------------------------------------------------------------------
// Connection images

const imageSeeds = fc.sample(
  imageArb.map((i) => new Uint8Array(encodeConnectionImage(i))),
  { numRuns: 16, seed: 7 },
);

describe('decodeConnectionImage', () => {
  it('valid images round-trip', () => {
    fc.assert(
      fc.property(imageArb, (image) => {
        count('image: encode/decode round trip');
        const bytes = encodeConnectionImage(image);
        const decoded = decodeConnectionImage(bytes);
        expect(encodeConnectionImage(decoded)).toEqual(bytes);
      }),
      { numRuns: runs(200) },
    );
  });

  it('mutated and random bytes: a valid image (re-encodable, stable) or ConnectionImageError', () => {
    fc.assert(
      fc.property(
        mutatedBytes(
          imageArb.map((i) => new Uint8Array(encodeConnectionImage(i))),
          imageSeeds,
        ),
        (bytes) => {
          count('image: mutated/random bytes');
          const outcome = typedOutcome(() => decodeConnectionImage(bytes), bytes);
          count(outcome.ok ? 'image: mutated bytes accepted' : 'image: mutated bytes rejected');
          if (outcome.ok) {
            // Whatever decodes is a valid image: it encodes, and decodes again to the same encoding.
            const again = encodeConnectionImage(outcome.value);
            expect(encodeConnectionImage(decodeConnectionImage(again))).toEqual(again);
          } else {
            expect(outcome.error).toBeInstanceOf(ConnectionImageError);
          }
        },
      ),
      { numRuns: runs(2500) },
    );
  });

  it('a non-Uint8Array argument: ConnectionImageError ERR_INVALID_ARG_TYPE', () => {
    fc.assert(
      fc.property(withoutOpenBugs(fc.anything({ withTypedArray: false })), (value) => {
        count('image: non-bytes argument');
        const outcome = typedOutcome(() => decodeConnectionImage(value as Uint8Array), value);
        expect(outcome.ok).toBe(false);
      }),
      { numRuns: runs(200) },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// CRIU RPC messages

/** Random valid CriuOptions (a subset of every kind of field), mapped with toCriuOpts. */
const optionsArb: fc.Arbitrary<CriuOptions> = fc
  .record({
    imagesDir: opt(fc.constantFrom('/tmp/images', 'imgs')),
    pid: opt(fc.integer({ min: 1, max: 0x7fffffff })),
    leaveRunning: opt(fc.boolean()),
    tcpEstablished: opt(fc.boolean()),
    shellJob: opt(fc.boolean()),
    logLevel: opt(fc.integer({ min: 0, max: 4 })),
    logFile: opt(fc.constantFrom('dump.log', 'x')),
    ps: opt(
      fc
        .record({ address: opt(fc.constantFrom('127.0.0.1', 'h')), port: opt(fc.integer({ min: 0, max: 65535 })) })
        .map(compact),
    ),
    external: opt(fc.array(fc.constantFrom('veth[a]:b', 'unix[1]', 'mnt[k]:v'), { maxLength: 3 })),
    cgRoot: opt(fc.array(fc.record({ path: fc.constantFrom('/a', '/b') }), { maxLength: 2 })),
    joinNs: opt(
      fc.array(fc.record({ ns: fc.constant('net'), nsFile: fc.constant('/proc/1/ns/net') }), { maxLength: 2 }),
    ),
    unixSkIno: opt(fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 3 })),
    manageCgroupsMode: opt(
      fc.constantFrom('ignore', 'none', 'props', 'soft', 'full', 'strict', 'default') as fc.Arbitrary<
        CriuOptions['manageCgroupsMode']
      >,
    ),
    networkLock: opt(fc.constantFrom('iptables', 'nftables', 'skip') as fc.Arbitrary<CriuOptions['networkLock']>),
    ghostLimit: opt(fc.nat({ max: 0xffffffff })),
    emptyNs: opt(fc.constantFrom(0, 0x40000000)),
    timeout: opt(fc.nat({ max: 0xffffffff })),
    preDumpMode: opt(fc.constantFrom('splice', 'read') as fc.Arbitrary<CriuOptions['preDumpMode']>),
  })
  .map((o) => compact(o) as CriuOptions);

const requestArb: fc.Arbitrary<CriuRequestMessage> = fc
  .record({
    type: reqType,
    opts: opt(optionsArb.map((o) => toCriuOpts(o))),
    notifySuccess: opt(fc.boolean()),
    keepOpen: opt(fc.boolean()),
    features: opt(featuresArb),
    pid: opt(fc.nat({ max: 0xffffffff })),
  })
  .map((r) => compact(r) as CriuRequestMessage);

const responseSeeds = fc.sample(
  responseArb.map((r) => new Uint8Array(encodeResponse(r))),
  { numRuns: 16, seed: 11 },
);
const requestSeeds = fc.sample(
  requestArb.map((r) => new Uint8Array(encodeRequest(r))),
  { numRuns: 16, seed: 13 },
);

describe('decodeResponse (criu_resp, NOTIFY included)', () => {
  it('valid responses round-trip', () => {
    fc.assert(
      fc.property(responseArb, (resp) => {
        count('criu_resp: round trip');
        const bytes = encodeResponse(resp);
        expect(encodeResponse(decodeResponse(bytes))).toEqual(bytes);
      }),
      { numRuns: runs(200) },
    );
  });

  it('mutated and random bytes: a re-encodable criu_resp or CriuProtocolError', () => {
    fc.assert(
      fc.property(
        mutatedBytes(
          responseArb.map((r) => new Uint8Array(encodeResponse(r))),
          responseSeeds,
        ),
        (bytes) => {
          count('criu_resp: mutated/random bytes');
          const outcome = typedOutcome(() => decodeResponse(bytes), bytes);
          count(outcome.ok ? 'criu_resp: mutated bytes accepted' : 'criu_resp: mutated bytes rejected');
          if (outcome.ok) {
            // Whatever the decoder accepts, the (strict) encoder accepts too, and it is stable.
            const again = encodeResponse(outcome.value);
            expect(encodeResponse(decodeResponse(again))).toEqual(again);
          } else {
            expect(outcome.error).toBeInstanceOf(CriuProtocolError);
            expect(outcome.error.code).toBe('ERR_CRIU_PROTOCOL');
          }
        },
      ),
      { numRuns: runs(2500) },
    );
  });
});

describe('decodeRequest (criu_req)', () => {
  it('valid requests round-trip', () => {
    fc.assert(
      fc.property(requestArb, (req) => {
        count('criu_req: round trip');
        const bytes = encodeRequest(req);
        expect(encodeRequest(decodeRequest(bytes))).toEqual(bytes);
      }),
      { numRuns: runs(300) },
    );
  });

  it('mutated and random bytes: a re-encodable criu_req or CriuProtocolError', () => {
    fc.assert(
      fc.property(
        mutatedBytes(
          requestArb.map((r) => new Uint8Array(encodeRequest(r))),
          requestSeeds,
        ),
        (bytes) => {
          count('criu_req: mutated/random bytes');
          const outcome = typedOutcome(() => decodeRequest(bytes), bytes);
          count(outcome.ok ? 'criu_req: mutated bytes accepted' : 'criu_req: mutated bytes rejected');
          if (outcome.ok) {
            const again = encodeRequest(outcome.value);
            expect(encodeRequest(decodeRequest(again))).toEqual(again);
          } else {
            expect(outcome.error).toBeInstanceOf(CriuProtocolError);
          }
        },
      ),
      { numRuns: runs(2000) },
    );
  });

  it('a non-Uint8Array argument: a typed error', () => {
    fc.assert(
      fc.property(withoutOpenBugs(fc.anything({ withTypedArray: false })), (value) => {
        count('criu codec: non-bytes argument');
        expect(typedOutcome(() => decodeResponse(value as Uint8Array), value).ok).toBe(false);
        expect(typedOutcome(() => decodeRequest(value as Uint8Array), value).ok).toBe(false);
      }),
      { numRuns: runs(300) },
    );
  });
});
