/**
 * What both ends of a server handover share: the check that a server can be handed over at all,
 * and the per-connection state envelope. The envelope says what the connection was on the
 * source ('net': the application's raw stream; 'http': a keep-alive connection between two
 * requests) around the application's own state; a state without it (a handOverConnections
 * source) is the application's state as it is.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';

import { InvalidArgumentError } from '../errors';
import { HandoverError } from './handover-errors';

const MAGIC = Buffer.from('NCSV');
const VERSION = 1;

export type ConnectionKind = 'net' | 'http';

export function encodeServerState(kind: ConnectionKind, state: Uint8Array): Buffer {
  return Buffer.concat([MAGIC, Buffer.from([VERSION, kind === 'http' ? 1 : 0]), state]);
}

export function decodeServerState(bytes: Buffer): { kind?: ConnectionKind; state: Buffer } {
  if (bytes.length < MAGIC.length + 2 || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return { state: bytes };
  const version = bytes[MAGIC.length];
  const kind = bytes[MAGIC.length + 1];
  if (version !== VERSION || kind > 1)
    throw new HandoverError(
      `connection state of version ${version}, kind ${kind}: unknown here`,
      'ERR_HANDOVER_PROTOCOL',
    );
  return { kind: kind === 1 ? 'http' : 'net', state: bytes.subarray(MAGIC.length + 2) };
}

/**
 * A TLS server's connections cannot move by this route: their TLS state (keys, sequence numbers)
 * lives inside OpenSSL in this process, not in the kernel socket.
 */
export function checkServer(server: unknown, name: string): asserts server is net.Server {
  if (server instanceof tls.Server)
    throw new HandoverError(
      `${name} is a TLS (https/tls) server: its TLS sessions live inside OpenSSL in this process and cannot ` +
        'move with the TCP connection; move the whole process with migrateProcess (the process route) instead',
      'ERR_HANDOVER_TLS_SERVER',
    );
  if (!(server instanceof net.Server))
    throw new InvalidArgumentError(`${name} must be a net.Server or http.Server`, 'ERR_INVALID_ARG_TYPE');
}

export function checkTimeout(value: unknown, name: string): void {
  if (value !== undefined && (typeof value !== 'number' || !Number.isFinite(value) || value <= 0))
    throw new InvalidArgumentError(`${name} must be > 0`, 'ERR_OUT_OF_RANGE');
}

export function checkFunctions(options: object, names: readonly string[]): void {
  for (const name of names) {
    const value = (options as Record<string, unknown>)[name];
    if (value !== undefined && typeof value !== 'function')
      throw new InvalidArgumentError(`${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
  }
}

export function checkChoice(value: unknown, name: string, choices: readonly string[]): void {
  if (value !== undefined && !choices.includes(value as string))
    throw new InvalidArgumentError(`${name} must be ${choices.map((c) => `'${c}'`).join(' or ')}`);
}
