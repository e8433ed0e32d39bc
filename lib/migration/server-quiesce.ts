/**
 * Brings an http.Server's keep-alive connections to rest between two requests, so each can move
 * with nothing of HTTP in flight: no response pending, and node:http's parser holding no byte of
 * a next request. A connection is stopped reading as soon as its parser is between messages:
 * pipelined requests it has not read stay in the kernel's receive queue, which goes along with
 * the connection (the target's parser reads them first). A connection whose parser is inside a
 * message keeps reading until that message is complete; one with responses pending waits for
 * them (node:http may restart reading when a response drains: it is stopped again at the next
 * look). A connection is ready when both hold at the same moment; it then reads nothing more.
 */
import type * as http from 'node:http';
import type * as net from 'node:net';

import { soccr } from '../soccr';
import { abortError } from './handover-channel';
import { httpSnapshot, leftHttp, responsePending } from './server-http';

export interface Quieted {
  /** Between requests, not reading: to be handed over. */
  ready: net.Socket[];
  /** Still inside a request at the deadline (reading again, as before). */
  busy: net.Socket[];
  /** Closed or closing meanwhile (left to end here). */
  gone: net.Socket[];
  /** Gives every ready connection back to node:http as it was (reading, its idle timeout). */
  resume(sockets?: readonly net.Socket[]): void;
}

interface Stopped {
  wasReading: boolean;
  timeout: number | undefined;
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function closing(socket: net.Socket): boolean {
  return socket.destroyed || socket.writableEnded || !socket.readable || leftHttp(socket);
}

export async function quiesceHttp(
  server: http.Server,
  sockets: readonly net.Socket[],
  deadline: number,
  signal: AbortSignal,
): Promise<Quieted> {
  const stopped = new Map<net.Socket, Stopped>();
  const stop = (socket: net.Socket): void => {
    const reading = soccr.stopReading(socket);
    const entry = stopped.get(socket);
    if (entry) {
      entry.wasReading ||= reading;
      return;
    }
    // node:http's keep-alive timer would close a connection that waits here for its turn.
    stopped.set(socket, { wasReading: reading, timeout: socket.timeout });
    socket.setTimeout(0);
  };
  const restart = (socket: net.Socket): void => {
    const entry = stopped.get(socket);
    if (!entry) return;
    stopped.delete(socket);
    if (socket.destroyed) return;
    if (entry.timeout) socket.setTimeout(entry.timeout);
    soccr.restartReading(socket, entry.wasReading);
  };
  const pending = new Set(sockets);
  const ready: net.Socket[] = [];
  const gone: net.Socket[] = [];
  try {
    for (;;) {
      if (signal.aborted) throw abortError(signal);
      const snapshot = httpSnapshot(server);
      for (const socket of pending) {
        if (closing(socket)) {
          pending.delete(socket);
          restart(socket);
          gone.push(socket);
        } else if (!snapshot.parserIdle(socket)) {
          restart(socket); // the rest of this request is still to be read
        } else {
          stop(socket);
          if (!responsePending(socket)) {
            pending.delete(socket);
            ready.push(socket);
          }
        }
      }
      if (pending.size === 0 || performance.now() > deadline) break;
      await pause(2);
    }
  } catch (error) {
    [...stopped.keys()].forEach(restart);
    throw error;
  }
  for (const socket of pending) restart(socket);
  return {
    ready,
    busy: [...pending],
    gone,
    resume: (subset = ready) => subset.forEach(restart),
  };
}
