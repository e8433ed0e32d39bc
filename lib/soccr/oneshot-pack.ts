/**
 * The packed restore arguments (sk_data in 17 words, then own and peer address in 8 words each,
 * csrc/socket_ops.h) built and validated in one pass, for the one-connection hot paths
 * (soccr.restoreFd, SoccrHandle.restore). Validation is complete: it accepts exactly what
 * skDataProblem and the address checks accept, and on a failure the error carries their
 * description. Every property is read once (a getter cannot pass the check and then change).
 * Also the way back for soccr.dumpFd's addresses (unpackAddress).
 */
import { InvalidArgumentError } from '../errors';
import { ipv4Word, socketAddressFromWords, socketAddressToWords } from './address';
import type { SocketAddress } from './address';
import { RESTORABLE_STATES, SOCCR_FLAGS_WINDOW, skDataProblem } from './sk-data';
import type { SkData } from './sk-data';

export const SK_DATA_WORDS = 17;
export const PACKED_WORDS = SK_DATA_WORDS + 16;

/** Stores v in words[i] if it is a uint32; false otherwise (ToUint32 would change it). */
function packWord(words: Uint32Array, i: number, v: unknown): boolean {
  if (typeof v !== 'number') return false;
  words[i] = v;
  return words[i] === v;
}

/**
 * Writes sk_data into words[0..16], checking what skDataProblem checks (every field a uint32, a
 * restorable state, unsqLen <= outqLen, no unknown flag bits) with plain property reads. Throws
 * InvalidArgumentError with skDataProblem's description when anything is wrong.
 */
export function packSkData(data: SkData, words: Uint32Array): void {
  const valid =
    typeof data === 'object' &&
    data !== null &&
    packWord(words, 0, data.state) &&
    packWord(words, 1, data.inqLen) &&
    packWord(words, 2, data.inqSeq) &&
    packWord(words, 3, data.outqLen) &&
    packWord(words, 4, data.outqSeq) &&
    packWord(words, 5, data.unsqLen) &&
    packWord(words, 6, data.optMask) &&
    packWord(words, 7, data.mssClamp) &&
    packWord(words, 8, data.sndWscale) &&
    packWord(words, 9, data.rcvWscale) &&
    packWord(words, 10, data.timestamp) &&
    packWord(words, 11, data.flags) &&
    packWord(words, 12, data.sndWl1) &&
    packWord(words, 13, data.sndWnd) &&
    packWord(words, 14, data.maxWindow) &&
    packWord(words, 15, data.rcvWnd) &&
    packWord(words, 16, data.rcvWup) &&
    RESTORABLE_STATES.has(words[0]) &&
    words[5] <= words[3] &&
    (words[11] & ~SOCCR_FLAGS_WINDOW) === 0;
  if (!valid) throw new InvalidArgumentError(skDataProblem(data) ?? 'sk_data is invalid');
}

/**
 * The last IPv4 address of each slot (0: own, 1: peer) in both forms, word and dotted text: a
 * server's own address repeats in every dump, and a restore gets back the strings its dump made.
 * Both directions fill it with a matching pair (the dotted form is canonical), so a hit in either
 * direction is exact, and it saves the string building and parsing.
 */
const memoWord = [-1, -1];
const memoText = ['', ''];

/** The dotted text of an IPv4 word (memoized per slot). */
function ipv4Text(word: number, slot: 0 | 1): string {
  if (memoWord[slot] === word) return memoText[slot];
  const text = `${word >>> 24}.${(word >>> 16) & 0xff}.${(word >>> 8) & 0xff}.${word & 0xff}`;
  memoWord[slot] = word;
  memoText[slot] = text;
  return text;
}

/** ipv4Word (memoized per slot): -1 unless `text` is a dotted-quad IPv4 address. */
function ipv4WordOf(text: string, slot: 0 | 1): number {
  if (text === memoText[slot]) return memoWord[slot];
  const word = ipv4Word(text);
  if (word >= 0) {
    memoWord[slot] = word;
    memoText[slot] = text;
  }
  return word;
}

/** The memo slot of the address at `at`: the own address is packed first, the peer's after it. */
function slotAt(at: number): 0 | 1 {
  return at === SK_DATA_WORDS ? 0 : 1;
}

/** The SocketAddress in the packed words at `at` (socketAddressFromWords, IPv4 memoized). */
export function unpackAddress(words: Uint32Array, at: number): SocketAddress {
  if (words[at] !== 4) return socketAddressFromWords(words, at);
  return { family: 4, address: ipv4Text(words[at + 2], slotAt(at)), port: words[at + 1] };
}

/**
 * Writes a SocketAddress in the packed form at `at`; throws InvalidArgumentError naming `name`
 * when it is not {family: 4|6, address, port} with a valid address of that family.
 */
export function packAddress(address: SocketAddress, name: string, words: Uint32Array, at: number): void {
  if (typeof address === 'object' && address !== null) {
    const { family, port } = address;
    if (Number.isInteger(port) && port >= 0 && port <= 65535) {
      if (family === 4) {
        // IPv4 without a Buffer or a TypedArray fill (the common case of the hot path).
        const word = ipv4WordOf(address.address, slotAt(at));
        if (word >= 0) {
          words[at] = 4;
          words[at + 1] = port;
          words[at + 2] = word;
          words[at + 3] = 0;
          words[at + 4] = 0;
          words[at + 5] = 0;
          words[at + 6] = 0;
          words[at + 7] = 0;
          return;
        }
      } else if (family === 6 && socketAddressToWords(address, words, at)) {
        return;
      }
    }
  }
  throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port} with a valid IP address`);
}

/**
 * The transfer bits of csrc's restore calls (1 recv, 2 send): set for a queue whose Buffer is a
 * non-empty view spanning its whole (non-shared) ArrayBuffer, which the native side then detaches
 * after a successful restore. A view of part of a buffer (Node's pooled small Buffers, slices)
 * is never handed over.
 */
export function transferMask(recvQueue: Uint8Array, sendQueue: Uint8Array): number {
  return spansWholeBuffer(recvQueue) | (spansWholeBuffer(sendQueue) << 1);
}

function spansWholeBuffer(bytes: Uint8Array): number {
  const buffer = bytes.buffer;
  return bytes.byteLength !== 0 &&
    bytes.byteOffset === 0 &&
    buffer instanceof ArrayBuffer &&
    bytes.byteLength === buffer.byteLength
    ? 1
    : 0;
}
