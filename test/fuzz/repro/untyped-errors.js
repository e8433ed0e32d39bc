#!/usr/bin/env node
/**
 * Reproduction (kept out of the jest suite): public functions throw an UNTYPED TypeError
 * ("Cannot convert object to primitive value") instead of an InvalidArgumentError /
 * ConnectionImageError when a bad argument is an object without a prototype
 * (Object.create(null)) or with an own non-function `toString`/`valueOf` (e.g. JSON.parse of
 * '{"toString": 0}'): the error message is built with String(value) / `${value}`, which throws
 * for those values.
 * Found by test/fuzz/api-args.test.ts with FUZZ_EXOTIC=1.
 *
 * Run: npm run build && node test/fuzz/repro/untyped-errors.js
 * Exit status 1 while any case throws something other than a NodeCriuError with a string code.
 */
'use strict';
const path = require('node:path');
const lib = require(path.join(__dirname, '..', '..', '..', 'dist'));

const bare = Object.create(null);
const json = JSON.parse('{"toString": 0}');
const sym = Symbol('x');
const image = () => ({
  version: 1,
  family: 4,
  local: { family: 4, address: '127.0.0.1', port: 1 },
  remote: { family: 4, address: '127.0.0.1', port: 2 },
  skData: {
    state: 1,
    stateName: 'ESTABLISHED',
    inqLen: 0,
    inqSeq: 0,
    outqLen: 0,
    outqSeq: 0,
    unsqLen: 0,
    optMask: 0,
    mssClamp: 0,
    sndWscale: 0,
    rcvWscale: 0,
    timestamp: 0,
    flags: 0,
    sndWl1: 0,
    sndWnd: 0,
    maxWindow: 0,
    rcvWnd: 0,
    rcvWup: 0,
  },
  recvQueue: Buffer.alloc(0),
  sendQueue: Buffer.alloc(0),
  sendQueueUnsent: 0,
  pendingRead: Buffer.alloc(0),
});

const cases = [
  ['validateCriuOptions({ghostLimit: bare})', () => lib.validateCriuOptions({ ghostLimit: bare })],
  ['validateCriuOptions({pid: [bare]})', () => lib.validateCriuOptions({ pid: [bare] })],
  ['validateCriuOptions({logLevel: sym})', () => lib.validateCriuOptions({ logLevel: sym })],
  ['validateCriuOptions({statusFd: sym})', () => lib.validateCriuOptions({ statusFd: sym })],
  ['toCriuOpts({}, {imagesDirFd: bare})', () => lib.toCriuOpts({}, { imagesDirFd: bare })],
  ['new Criu({mode: bare})', () => new lib.Criu({ mode: bare })],
  ['new Criu({mode: sym})', () => new lib.Criu({ mode: sym })],
  ['encodeRequest({type: 1, pid: bare})', () => lib.encodeRequest({ type: 1, pid: bare })],
  ['encodeResponse({type: 1, success: bare})', () => lib.encodeResponse({ type: 1, success: bare })],
  ['encodeConnectionImage({...image, version: bare})', () => lib.encodeConnectionImage({ ...image(), version: bare })],
  [
    'encodeConnectionImage({...image, family: [bare]})',
    () => lib.encodeConnectionImage({ ...image(), family: [bare] }),
  ],
  [
    'encodeConnectionImage(local.address: bare)',
    () => {
      const i = image();
      i.local.address = bare;
      return lib.encodeConnectionImage(i);
    },
  ],
  [
    'encodeConnectionImage(skData.state: bare)',
    () => {
      const i = image();
      i.skData.state = bare;
      return lib.encodeConnectionImage(i);
    },
  ],
  [
    'encodeConnectionImage(skData.flags: sym)',
    () => {
      const i = image();
      i.skData.flags = sym;
      return lib.encodeConnectionImage(i);
    },
  ],
  [
    'checkpointConnection(socket-ish, {lock: bare})',
    () => lib.checkpointConnection(new (require('node:net').Socket)(), { lock: bare }),
  ],
  ['soccr.pause(bare)', () => lib.soccr.pause(bare)],
  ['decodeResponse(JSON {toString: 0})', () => lib.decodeResponse(json)],
  ['decodeRequest(JSON {toString: 0})', () => lib.decodeRequest(json)],
  ['validateCriuOptions({pid: JSON {toString: 0}})', () => lib.validateCriuOptions({ pid: json })],
  ['new Criu({mode: JSON {toString: 0}})', () => new lib.Criu({ mode: json })],
];

let untyped = 0;
(async () => {
  for (const [name, fn] of cases) {
    let outcome;
    try {
      await fn();
      outcome = 'no error';
    } catch (error) {
      const typed = error instanceof lib.NodeCriuError && typeof error.code === 'string';
      if (!typed) untyped++;
      outcome = typed ? `typed ${error.code}` : `UNTYPED ${error && error.name}: ${error && error.message}`;
    }
    console.log(`${outcome.startsWith('UNTYPED') ? 'FAIL' : 'ok  '} ${name}: ${outcome}`);
  }
  console.log(`${untyped} of ${cases.length} cases threw an untyped error`);
  process.exitCode = untyped > 0 ? 1 : 0;
})();
