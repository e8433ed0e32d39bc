/**
 * The source's connections while a handover holds them, and the two ways out for each: resume
 * (the application gets it back, live) or release (the target owns it now: the original closes
 * silently). Every connection takes exactly one of them, once (`done`).
 */
import type * as net from 'node:net';

import {
  CONNECTION_IMAGE_VERSION,
  decodeConnectionImage,
  encodeConnectionImage,
  restoreConnections,
  soccr,
} from '../soccr';
import type { ConnectionImage, ConnectionTuple, HeldConnection } from '../soccr';
import type { HandoverMethod } from './handover-messages';

/** One connection while the source holds it. */
export interface Held {
  index: number;
  socket: net.Socket;
  state: Buffer;
  /** method 'repair' + lock 'filter': the original, paused behind its drop filter. */
  held?: HeldConnection;
  image?: ConnectionImage;
  wasReading?: boolean;
  done?: boolean;
}

/** A well-formed image of nothing in particular: what warmUpImageCodec encodes and decodes. */
const SAMPLE_IMAGE: ConnectionImage = {
  version: CONNECTION_IMAGE_VERSION,
  family: 4,
  local: { family: 4, address: '127.0.0.1', port: 1 },
  remote: { family: 4, address: '127.0.0.1', port: 2 },
  // An established connection with every counter 0 (whichever fields SkData has).
  skData: new Proxy({} as ConnectionImage['skData'], {
    get: (_, field) => (field === 'state' ? 1 : field === 'stateName' ? 'ESTABLISHED' : 0),
  }),
  recvQueue: Buffer.alloc(0),
  sendQueue: Buffer.alloc(0),
  sendQueueUnsent: 0,
  pendingRead: Buffer.alloc(0),
};

/**
 * The image codec loads its protobuf schema and generates its encoder and decoder on first use
 * (tens of milliseconds): do that before anything is paused.
 */
export function warmUpImageCodec(): void {
  try {
    decodeConnectionImage(encodeConnectionImage(SAMPLE_IMAGE));
  } catch {
    // Not expected; the real images then pay for the first use themselves.
  }
}

/** The 4-tuples of the sockets that are still open. */
export function liveTuples(sockets: readonly net.Socket[]): ConnectionTuple[] {
  const tuples: ConnectionTuple[] = [];
  for (const socket of sockets) {
    try {
      tuples.push(soccr.connectionTuple(socket));
    } catch {
      // closed meanwhile: it will not be handed over either
    }
  }
  return tuples;
}

/** Gives held connections back to the application, live again. */
export async function resumeHeld(
  entries: readonly Held[],
  lockKind: 'filter' | 'nftables',
  method: HandoverMethod,
  netns: string | undefined,
  onResumed: ((socket: net.Socket, state: Buffer) => void) | undefined,
): Promise<{ resumed: number; lost: number }> {
  let resumed = 0;
  let lost = 0;
  const back: Array<{ socket: net.Socket; state: Buffer }> = [];
  const toRestore: Held[] = [];
  for (const entry of entries) {
    if (entry.done) continue;
    entry.done = true;
    if (method === 'repair' && lockKind === 'nftables' && entry.image) {
      toRestore.push(entry); // the original is closed
      continue;
    }
    try {
      if (entry.held?.state === 'held') entry.held.resume(); // repair and filter off
    } catch {
      // destroyed by the application while held: it closed silently, and comes back as it is
    }
    soccr.restartReading(entry.socket, entry.wasReading ?? false);
    back.push(entry);
  }
  if (toRestore.length > 0) {
    // The originals are closed: restore the images here (their nftables lock is removed by it).
    const options = netns === undefined ? {} : { netns };
    try {
      const sockets = await restoreConnections(
        toRestore.map((e) => e.image as ConnectionImage),
        options,
      );
      sockets.forEach((socket, i) => back.push({ socket, state: toRestore[i].state }));
    } catch {
      for (const entry of toRestore) {
        try {
          const [socket] = await restoreConnections([entry.image as ConnectionImage], options);
          back.push({ socket, state: entry.state });
        } catch {
          lost++;
        }
      }
    }
  }
  for (const { socket, state } of back) {
    resumed++;
    onResumed?.(socket, state);
  }
  return { resumed, lost };
}

/** Closes a confirmed original silently (repair on: no FIN, no RST) or drops our fd copy. */
export function releaseHeld(entry: Held): void {
  if (entry.done) return;
  entry.done = true;
  if (entry.held) {
    if (entry.held.state === 'held') entry.held.release();
  } else if (entry.image === undefined && !entry.socket.destroyed) {
    // method 'fd': the target holds its own fd of the same kernel socket.
    soccr.unreadBytes(entry.socket, { take: true });
    entry.socket.destroy();
  }
}
