/**
 * One-call forms of the low-level sequences, for callers that want the whole dump or restore of
 * one socket at once: one native call each (csrc/soccr_oneshot.cc), no handle object, no dup.
 *   dumpFd(fd)     = pause(fd) + getSkData + getQueueBytes x2 + get*Address + release
 *   restoreFd(...) = pauseNewSocket + restore + resume, returning the connected fd
 * The caller must block the connection's traffic first, as for pause().
 */
import * as path from 'node:path';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { socketAddressFromWords, socketAddressToWords } from './address';
import type { SocketAddress } from './address';
import { SoccrError } from './errors';
import { checkConnectedTcp } from './handle';
import { soccrBinding } from './native';
import { skDataFromWords, skDataProblem, writeSkDataWords } from './sk-data';
import type { SkData } from './sk-data';

const SK_DATA_WORDS = 17;
/** Scratch words, filled and consumed within one synchronous call. */
const words = new Uint32Array(SK_DATA_WORDS + 16);
const EMPTY = Buffer.alloc(0);

function packAddress(address: SocketAddress, name: string, at: number): void {
  const valid =
    typeof address === 'object' &&
    address !== null &&
    (address.family === 4 || address.family === 6) &&
    Number.isInteger(address.port) &&
    address.port >= 0 &&
    address.port <= 65535 &&
    socketAddressToWords(address, words, at);
  if (!valid) throw new InvalidArgumentError(`${name} must be {family: 4|6, address, port} with a valid IP address`);
}

export interface SocketDump {
  skData: SkData;
  local: SocketAddress;
  remote: SocketAddress;
  recvQueue: Buffer;
  sendQueue: Buffer;
}

/**
 * libsoccr's whole dump of a connected TCP socket fd in one call: pause, save, both queues, both
 * addresses, release. The socket is left in repair mode, like pause() + release(): close it to
 * drop the connection silently (keep its 4-tuple blocked until the restore), or turn repair off
 * to let it run on. On failure the socket is resumed and the error is typed as pause()'s are.
 */
export function dumpFd(fd: number): SocketDump {
  if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fffffff) throw new InvalidArgumentError('fd must be a non-negative integer', 'ERR_INVALID_ARG_TYPE');
  let queues: [Buffer | null, Buffer | null];
  try {
    queues = soccrBinding().soccrDump(fd, words);
  } catch (error) {
    checkConnectedTcp(fd); // names the precise problem (not TCP, listening, unconnected, state)
    throw fromNativeError(SoccrError, error, 'libsoccr dump');
  }
  return {
    skData: skDataFromWords(words),
    local: socketAddressFromWords(words, SK_DATA_WORDS),
    remote: socketAddressFromWords(words, SK_DATA_WORDS + 8),
    recvQueue: queues[0] ?? EMPTY, // zero-length: nothing to share
    sendQueue: queues[1] ?? EMPTY,
  };
}

/**
 * libsoccr's whole restore in one call: a new non-blocking TCP socket (in the netns at `netns`
 * if given) with the connection restored and resumed (repair off: the kernel sends its window
 * probe). Returns its fd (adoptSocket() hands it to a net.Socket). On failure nothing is left.
 */
export function restoreFd(
  dump: SocketDump,
  options: { netns?: string } = {},
): number {
  if (typeof dump !== 'object' || dump === null) throw new InvalidArgumentError('dump must be an object', 'ERR_INVALID_ARG_TYPE');
  if (typeof options !== 'object' || options === null) throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  const { skData, local, remote, recvQueue, sendQueue } = dump;
  const problem = skDataProblem(skData);
  if (problem) throw new InvalidArgumentError(problem);
  if (options.netns !== undefined && (typeof options.netns !== 'string' || !path.isAbsolute(options.netns))) {
    throw new InvalidArgumentError('netns must be an absolute path');
  }
  writeSkDataWords(skData, words);
  packAddress(local, 'local', SK_DATA_WORDS);
  packAddress(remote, 'remote', SK_DATA_WORDS + 8);
  if (local.family !== remote.family) throw new InvalidArgumentError('local and remote must be of one family');
  if (!(recvQueue instanceof Uint8Array) || recvQueue.length !== skData.inqLen) throw new InvalidArgumentError('recvQueue must be a Buffer of skData.inqLen bytes');
  if (!(sendQueue instanceof Uint8Array) || sendQueue.length !== skData.outqLen) throw new InvalidArgumentError('sendQueue must be a Buffer of skData.outqLen bytes');
  try {
    // One native call: socket (in netns), pause, addresses, queues, restore, resume.
    return soccrBinding().soccrRestore(-1, words, recvQueue, sendQueue, options.netns);
  } catch (error) {
    throw fromNativeError(SoccrError, error, 'libsoccr restore');
  }
}
