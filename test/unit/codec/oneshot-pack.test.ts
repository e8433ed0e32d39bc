/**
 * The one-call paths' address packing (lib/soccr/oneshot-pack.ts) remembers the last IPv4 address
 * of each slot in both forms. Whatever the order of packs and unpacks, valid and invalid, every
 * result must equal the uncached conversion: a remembered pair is never returned for another
 * address, and an invalid address never passes because a valid one came before it.
 */
import * as fc from 'fast-check';

import { InvalidArgumentError } from '../../../lib/errors';
import { ipv4Word, socketAddressFromWords, type SocketAddress } from '../../../lib/soccr/address';
import { PACKED_WORDS, SK_DATA_WORDS, packAddress, unpackAddress } from '../../../lib/soccr/oneshot-pack';

const OWN = SK_DATA_WORDS;
const PEER = SK_DATA_WORDS + 8;

/** A few addresses so that steps repeat them, plus near misses of them that are not IPv4 text. */
const texts = ['10.0.0.1', '10.0.0.2', '127.0.0.1', '0.0.0.0', '255.255.255.255'];
const textArb = fc.oneof(
  fc.constantFrom(...texts),
  fc.constantFrom('010.0.0.1', '10.0.0.1 ', '10.0.0', '', '256.0.0.1', '::1'),
  fc.ipV4(),
);

type Step = { kind: 'pack'; at: number; text: string; port: number } | { kind: 'unpack'; at: number; word: number };

const stepArb: fc.Arbitrary<Step> = fc.oneof(
  fc.record({
    kind: fc.constant('pack' as const),
    at: fc.constantFrom(OWN, PEER),
    text: textArb,
    port: fc.integer({ min: 0, max: 65535 }),
  }),
  fc.record({
    kind: fc.constant('unpack' as const),
    at: fc.constantFrom(OWN, PEER),
    word: fc.oneof(fc.constantFrom(...texts.map(ipv4Word)), fc.integer({ min: 0, max: 0xffffffff })),
  }),
);

describe('oneshot-pack IPv4 memo', () => {
  it('packs and unpacks exactly as the uncached conversions, in any order', () => {
    fc.assert(
      fc.property(fc.array(stepArb, { maxLength: 40 }), (steps) => {
        const words = new Uint32Array(PACKED_WORDS);
        for (const step of steps) {
          if (step.kind === 'pack') {
            const address: SocketAddress = { family: 4, address: step.text, port: step.port };
            const expected = ipv4Word(step.text);
            if (expected < 0) {
              expect(() => packAddress(address, 'local', words, step.at)).toThrow(InvalidArgumentError);
            } else {
              packAddress(address, 'local', words, step.at);
              expect(Array.from(words.subarray(step.at, step.at + 8))).toEqual([4, step.port, expected, 0, 0, 0, 0, 0]);
            }
          } else {
            words.fill(0, step.at, step.at + 8);
            words[step.at] = 4;
            words[step.at + 1] = 80;
            words[step.at + 2] = step.word;
            expect(unpackAddress(words, step.at)).toEqual(socketAddressFromWords(words, step.at));
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('unpacks IPv6 as socketAddressFromWords does', () => {
    const words = new Uint32Array(PACKED_WORDS);
    words.set([6, 443, 0x20010db8, 0, 0, 1, 0, 0], PEER);
    expect(unpackAddress(words, PEER)).toEqual({ family: 6, address: '2001:db8::1', port: 443 });
  });
});
