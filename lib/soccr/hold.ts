/**
 * holdConnections: a checkpoint that keeps the originals open, paused (repair mode, reading
 * stopped) and filtered until the caller decides: resume() gives them back to the application
 * live, release() closes them silently. What a handover needs while its target restores the images.
 */
import type * as net from 'node:net';

import { InvalidArgumentError, fromNativeError } from '../errors';
import { closePaused, liveFd, pauseConnections, unpause } from './checkpoint';
import type { PausedConnection } from './checkpoint';
import { DEFAULT_FLUSH_TIMEOUT_MS, checkFlushTimeout, checkNoRepeats, checkSocketArray } from './connection-options';
import { SoccrError, describeValue } from './errors';
import type { ConnectionImage } from './image';

export interface HoldOptions {
  /**
   * 'filter' (default): a drop-all filter on each original while it is held, so nothing the peer
   * sends is acknowledged (it retransmits later, to whichever socket then owns the 4-tuple).
   * 'none': the caller blocks the traffic itself.
   */
  lock?: 'filter' | 'none';
  /** How long to wait for Node's write buffer to reach the kernel (default 10000 ms). */
  flushTimeoutMs?: number;
}

/** 'held' until resume() ('resumed') or release() ('released'), or the socket was destroyed meanwhile ('released'). */
export type HeldState = 'held' | 'resumed' | 'released';

/** One original connection of a hold. The application must not read, write or pause it while held. */
export interface HeldConnection {
  readonly socket: net.Socket;
  readonly image: ConnectionImage;
  readonly state: HeldState;
  /**
   * Repair mode and filter off, reading restarted if it was on: the original runs on as if never
   * checkpointed. Idempotent; throws ERR_CONNECTION_SETTLED after release(), ERR_SOCKET_DESTROYED
   * if the socket was destroyed while held (closing it in repair mode was silent).
   */
  resume(): void;
  /**
   * Closes the original silently (repair mode on: no FIN, no RST; the peer's next packet goes to
   * whichever socket then owns the 4-tuple). Idempotent; throws ERR_CONNECTION_SETTLED after resume().
   */
  release(): void;
}

export interface HeldConnections {
  /** In the order of the sockets given. */
  readonly connections: readonly HeldConnection[];
  /** connections' images, in the same order. */
  readonly images: readonly ConnectionImage[];
  /** resume() of every connection still held (those destroyed meanwhile are skipped). */
  resume(): void;
  /** release() of every connection still held, in one batch. */
  release(): void;
}

interface Entry {
  paused: PausedConnection;
  state: HeldState;
}

/** Whether Node still owns the fd this entry paused (else its number may belong to another file). */
function stillOpen(entry: Entry): boolean {
  const { socket, fd } = entry.paused;
  return !socket.destroyed && liveFd(socket) === fd;
}

function resumeEntry(entry: Entry): void {
  if (entry.state === 'resumed') return;
  if (entry.state === 'released')
    throw new SoccrError('this connection was already released', { code: 'ERR_CONNECTION_SETTLED' });
  if (!stillOpen(entry)) {
    entry.state = 'released';
    throw new SoccrError('the socket was destroyed while held', { code: 'ERR_SOCKET_DESTROYED' });
  }
  entry.state = 'resumed';
  try {
    unpause(entry.paused);
  } catch (error) {
    throw fromNativeError(SoccrError, error, 'resume');
  }
}

function releaseEntries(entries: readonly Entry[]): void {
  const open: PausedConnection[] = [];
  for (const entry of entries) {
    if (entry.state === 'released') continue;
    if (entry.state === 'resumed')
      throw new SoccrError('this connection was already resumed', { code: 'ERR_CONNECTION_SETTLED' });
  }
  for (const entry of entries) {
    if (entry.state !== 'held') continue;
    entry.state = 'released';
    if (stillOpen(entry)) open.push(entry.paused);
  }
  if (open.length > 0) closePaused(open);
}

/** A hold garbage-collected while connections are still held gives them back to the application. */
const abandonedHolds = new FinalizationRegistry<Entry[]>((entries) => {
  for (const entry of entries) {
    if (entry.state !== 'held') continue;
    try {
      resumeEntry(entry);
    } catch {
      // destroyed meanwhile: nothing to give back
    }
  }
});

class Held implements HeldConnection {
  readonly #entry: Entry;
  readonly image: ConnectionImage;
  /** Keeps the hold (and so its finalizer) alive while any of its connections is referenced. */
  readonly #hold: object;

  constructor(entry: Entry, image: ConnectionImage, hold: object) {
    this.#entry = entry;
    this.image = image;
    this.#hold = hold;
  }

  get socket(): net.Socket {
    return this.#entry.paused.socket;
  }

  get state(): HeldState {
    return this.#entry.state;
  }

  resume(): void {
    void this.#hold;
    resumeEntry(this.#entry);
  }

  release(): void {
    releaseEntries([this.#entry]);
  }
}

class Hold implements HeldConnections {
  readonly #entries: Entry[];
  readonly connections: readonly HeldConnection[];
  readonly images: readonly ConnectionImage[];

  constructor(entries: Entry[], images: ConnectionImage[]) {
    this.#entries = entries;
    this.images = images;
    this.connections = entries.map((entry, i) => new Held(entry, images[i], this));
  }

  resume(): void {
    let first: unknown;
    for (const entry of this.#entries) {
      if (entry.state !== 'held') continue;
      if (!stillOpen(entry)) {
        entry.state = 'released';
        continue;
      }
      try {
        resumeEntry(entry);
      } catch (error) {
        first ??= error;
      }
    }
    if (first !== undefined) throw first;
  }

  release(): void {
    releaseEntries(this.#entries.filter((entry) => entry.state === 'held'));
  }
}

/**
 * Checkpoints live connections while keeping the originals: Node's writes are flushed, each
 * socket gets its drop filter (lock 'filter') and is paused and saved in one batch. The images
 * restore anywhere that owns the connections' addresses; until the caller resumes or releases
 * them, the originals stay in repair mode. Fails as a whole (SoccrError, as checkpointConnections)
 * with nothing left paused or filtered.
 */
export async function holdConnections(
  sockets: readonly net.Socket[],
  options: HoldOptions = {},
): Promise<HeldConnections> {
  checkSocketArray(sockets);
  if (typeof options !== 'object' || options === null)
    throw new InvalidArgumentError('options must be an object', 'ERR_INVALID_ARG_TYPE');
  if (options.lock !== undefined && options.lock !== 'filter' && options.lock !== 'none')
    throw new InvalidArgumentError(`lock must be 'filter' or 'none' (got ${describeValue(options.lock)})`);
  checkFlushTimeout(options.flushTimeoutMs);
  checkNoRepeats(sockets);
  const batch = await pauseConnections(sockets, {
    lock: options.lock ?? 'filter',
    flushTimeoutMs: options.flushTimeoutMs ?? DEFAULT_FLUSH_TIMEOUT_MS,
    lockRef: false,
  });
  const entries: Entry[] = batch.entries.map((paused) => ({ paused, state: 'held' }));
  const hold = new Hold(entries, batch.images);
  abandonedHolds.register(hold, entries);
  return hold;
}
