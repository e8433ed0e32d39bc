/**
 * Property tests of the public functions that take plain values: random objects into
 * validateCriuOptions / toCriuOpts, new Criu(...), encodeRequest / encodeResponse and
 * encodeConnectionImage. Only typed errors (NodeCriuError with a string code) come out, and what
 * validation accepts the next stage accepts too (options that validate map to a criu_opts the
 * strict encoder takes; an image that validates encodes and decodes to itself).
 */
import * as fc from 'fast-check';

import {
  CRIU_OPTION_NAMES,
  Criu,
  CriuReqType,
  encodeRequest,
  encodeResponse,
  toCriuOpts,
  validateCriuOptions,
} from '../../lib/criu';
import type { CriuOptions } from '../../lib/criu';
import { InvalidArgumentError } from '../../lib/errors';
import {
  ConnectionImageError,
  connectionImageProblem,
  decodeConnectionImage,
  encodeConnectionImage,
} from '../../lib/soccr';
import type { ConnectionImage } from '../../lib/soccr';
import { imageArb } from './arbitraries';
import { EXOTIC, anyValue, count, objectWith, printTally, runs, typedOutcome } from './fuzz-helpers';
import { type FdSnapshot, newFds, openFds } from '../helpers/fds';

let fdsAtStart: FdSnapshot = new Map();
beforeAll(() => {
  fdsAtStart = openFds();
});
afterAll(() => {
  printTally('api-args');
  expect(newFds(fdsAtStart)).toEqual([]);
});

/** Values that look almost right for an option (so validation gets past the type check). */
const plausible: fc.Arbitrary<unknown> = fc.oneof(
  fc.boolean(),
  fc.constantFrom(0, 1, 4, 5, -1, 65535, 65536, 0x40000000, 0x7fffffff, 0x80000000, 0xffffffff, 2 ** 32, 1.5, NaN),
  fc.constantFrom('', 'a', 'a/b', '.', '..', 'x\0y', 'nftables', 'splice', 'read', 'direct', 'full', 'bogus', '/tmp'),
  fc.array(fc.constantFrom('a', '', 'b\0', 1, null), { maxLength: 3 }),
  fc.array(
    objectWith(
      ['key', 'fd', 'val', 'ifIn', 'ifOut', 'ns', 'nsFile', 'extraOpt', 'ctrl', 'path'],
      fc.constantFrom('k', '', 3, -1, 'x\0', undefined),
    ),
    { maxLength: 3 },
  ),
  objectWith(['address', 'port', 'pid', 'fd'], fc.constantFrom('h', '', 0, 1, -1, 70000, 1.5, undefined)),
  anyValue,
);

const criuOptionsArb = fc.oneof(
  { weight: 6, arbitrary: objectWith(CRIU_OPTION_NAMES as readonly string[], plausible) },
  { weight: 1, arbitrary: anyValue },
);

const resolvedArb = fc.oneof(
  fc.constant(undefined),
  fc.record(
    {
      imagesDirFd: fc.oneof(fc.nat({ max: 100 }), anyValue),
      workDirFd: fc.oneof(fc.nat({ max: 100 }), anyValue),
      inheritFdNumbers: fc.oneof(fc.array(fc.nat({ max: 100 }), { maxLength: 3 }), anyValue),
      psFd: fc.oneof(fc.nat({ max: 100 }), anyValue),
    },
    { requiredKeys: [], noNullPrototype: !EXOTIC },
  ),
);

describe('CRIU options', () => {
  it('validateCriuOptions / toCriuOpts: typed errors only; accepted options encode', () => {
    fc.assert(
      fc.property(criuOptionsArb, resolvedArb, (options, resolved) => {
        count('validateCriuOptions/toCriuOpts: random objects');
        const valid = typedOutcome(() => validateCriuOptions(options), options);
        if (!valid.ok) {
          expect(valid.error).toBeInstanceOf(InvalidArgumentError);
          // toCriuOpts validates the same way.
          expect(typedOutcome(() => toCriuOpts(options as CriuOptions), options).ok).toBe(false);
          return;
        }
        count('validateCriuOptions: accepted');
        const mapped = typedOutcome(() => toCriuOpts(options as CriuOptions, resolved as never), { options, resolved });
        if (mapped.ok) {
          count('toCriuOpts: mapped');
          // Anything validation lets through is a criu_opts the strict encoder accepts.
          const encoded = typedOutcome(
            () => encodeRequest({ type: CriuReqType.DUMP, opts: mapped.value }),
            mapped.value,
          );
          if (!encoded.ok)
            throw new Error(`validated options do not encode: ${encoded.error.message} (${fc.stringify(options)})`);
        }
      }),
      { numRuns: runs(4000) },
    );
  });
});

describe('new Criu(options)', () => {
  it('constructs or throws InvalidArgumentError, never spawns', () => {
    const clientOptions = fc.oneof(
      {
        weight: 4,
        arbitrary: objectWith(
          ['mode', 'criuPath', 'address'],
          fc.oneof(fc.constantFrom('swrk', 'service', '', '/usr/sbin/criu', '/tmp/criu.sock'), anyValue),
        ),
      },
      { weight: 1, arbitrary: anyValue },
    );
    fc.assert(
      fc.property(clientOptions, (options) => {
        count('new Criu: random options');
        const outcome = typedOutcome(() => new Criu(options as never), options);
        if (outcome.ok) {
          count('new Criu: constructed');
          expect(['swrk', 'service']).toContain(outcome.value.mode);
        } else {
          expect(outcome.error).toBeInstanceOf(InvalidArgumentError);
        }
      }),
      { numRuns: runs(2000) },
    );
  });
});

describe('encodeRequest / encodeResponse with random messages', () => {
  it('encode or throw InvalidArgumentError', () => {
    const requestKeys = ['type', 'opts', 'notifySuccess', 'keepOpen', 'features', 'pid'];
    const responseKeys = [
      'type',
      'success',
      'dump',
      'restore',
      'notify',
      'ps',
      'crErrno',
      'features',
      'crErrmsg',
      'version',
      'status',
    ];
    const values = fc.oneof(
      plausible,
      objectWith(['imagesDirFd', 'pid', 'script', 'majorNumber', 'minorNumber', 'restored', 'memTrack'], plausible),
    );
    fc.assert(
      fc.property(objectWith(requestKeys, values), objectWith(responseKeys, values), (req, resp) => {
        count('encodeRequest/encodeResponse: random objects');
        for (const [fn, value] of [
          [encodeRequest, req],
          [encodeResponse, resp],
        ] as const) {
          const outcome = typedOutcome(() => fn(value as never), value);
          if (!outcome.ok) expect(outcome.error).toBeInstanceOf(InvalidArgumentError);
        }
      }),
      { numRuns: runs(3000) },
    );
  });
});

describe('encodeConnectionImage with random objects', () => {
  const imageKeys = [
    'version',
    'family',
    'local',
    'remote',
    'skData',
    'recvQueue',
    'sendQueue',
    'sendQueueUnsent',
    'pendingRead',
    'lock',
  ];
  const skKeys = ['state', 'inqLen', 'outqLen', 'unsqLen', 'flags', 'sndWscale', 'stateName'];

  /** A valid image with one to three fields (or sk_data fields) replaced by random values. */
  const brokenImage = fc
    .tuple(
      imageArb,
      fc.array(
        fc.tuple(
          fc.constantFrom(
            ...imageKeys,
            ...skKeys.map((k) => `skData.${k}`),
            'local.port',
            'local.address',
            'remote.family',
            'lock.table',
          ),
          fc.oneof(plausible, anyValue),
        ),
        {
          minLength: 1,
          maxLength: 3,
        },
      ),
    )
    .map(([image, edits]) => {
      const copy = {
        ...image,
        skData: { ...image.skData },
        local: { ...image.local },
        remote: { ...image.remote },
        lock: image.lock && { ...image.lock },
      } as Record<string, unknown>;
      for (const [where, value] of edits) {
        const [head, tail] = where.split('.');
        const target = tail === undefined ? copy : (copy[head] as Record<string, unknown> | undefined);
        if (typeof target === 'object' && target !== null) target[tail ?? head] = value;
      }
      return copy;
    });

  it('encodes (and decodes to the same encoding) exactly what validates; else ConnectionImageError', () => {
    fc.assert(
      fc.property(fc.oneof({ weight: 5, arbitrary: brokenImage }, { weight: 1, arbitrary: anyValue }), (image) => {
        count('encodeConnectionImage: broken images');
        const problem = connectionImageProblem(image);
        const outcome = typedOutcome(() => encodeConnectionImage(image as ConnectionImage), image);
        if (outcome.ok) {
          count('encodeConnectionImage: accepted');
          expect(problem).toBeUndefined();
          expect(encodeConnectionImage(decodeConnectionImage(outcome.value))).toEqual(outcome.value);
        } else {
          expect(outcome.error).toBeInstanceOf(ConnectionImageError);
          expect(problem).toBeDefined();
        }
      }),
      { numRuns: runs(3000) },
    );
  });
});
