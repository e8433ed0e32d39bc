/**
 * handOverConnections: the source side of a connections-only migration. Every connection the
 * target has not confirmed comes back to the application through onResumed: with 'repair' +
 * 'filter' the originals themselves (holdConnections), with 'nftables' a local restore of the
 * images, with 'fd' the original sockets. Protocol: HELLO -> WELCOME|REFUSE; CONNECTION(_FD) x n;
 * STAGE_END -> STAGED; [moveAddress]; COMMIT -> RESULT; DONE (docs/ARCHITECTURE.md).
 */
import type * as net from 'node:net';
import * as path from 'node:path';

import { InvalidArgumentError } from '../errors';
import {
  NftablesLock,
  checkpointConnections,
  decodeConnectionImage,
  encodeConnectionImage,
  holdConnections,
  restoreConnections,
  soccr,
} from '../soccr';
import type { ConnectionImage, ConnectionTuple, HeldConnection } from '../soccr';
import { MessageType, jsonOf, openChannel } from './handover-channel';
import type { HandoverChannel, HandoverChannelSpec } from './handover-channel';
import { HandoverError } from './handover-errors';

export type HandoverMethod = 'repair' | 'fd';

export interface HandOverOptions {
  /** The target's control channel: a SeqpacketTransport (same host; required for 'fd'), a connected net.Socket, {host, port} (TCP) or {path} (unix stream). */
  to: HandoverChannelSpec;
  /**
   * 'repair' (default): TCP_REPAIR checkpoint, the target restores a new socket (any host that owns
   * the connection's address by then). 'fd': the live fd itself goes over SCM_RIGHTS (same host,
   * same kernel socket; no repair mode, no lock).
   */
  method?: HandoverMethod;
  /**
   * Called once per connection when the handover begins: the application stops using the socket
   * (no more reads or writes) and returns its state for it, which the target's onConnection gets.
   */
  serializeState?: (socket: net.Socket) => Uint8Array | Promise<Uint8Array>;
  /**
   * A connection the target did not take is back with the application: the same socket (filter
   * lock, fd) or a locally restored one (nftables lock), with the state serializeState returned.
   */
  onResumed?: (socket: net.Socket, state: Buffer) => void;
  /**
   * 'repair' only. 'filter': the originals stay open, paused behind a drop filter, until the target
   * confirms; needs the target to own the connections' local address (it moves: moveAddress, or the
   * target is another namespace/host that has it). 'nftables': the originals are closed and their
   * 4-tuples dropped by an nftables table in `netns` until restored (target in the same namespace).
   * Default: 'filter' when moveAddress is given, else 'nftables'.
   */
  lock?: 'filter' | 'nftables';
  /** Network namespace path the sockets live in (for the nftables table; default: ours). */
  netns?: string;
  /** Moves the service address to the target, between STAGED and COMMIT. */
  moveAddress?: () => Promise<void>;
  /** Moves it back if the target fails after moveAddress, so the originals can resume. */
  moveAddressBack?: () => Promise<void>;
  signal?: AbortSignal;
  /** Whole-handover time limit (default 60000 ms); on expiry the source resumes everything. */
  timeoutMs?: number;
  onProgress?: (event: { phase: string; detail?: Record<string, unknown> }) => void;
}

export interface HandoverPhases {
  handshake: number;
  checkpoint: number;
  transfer: number;
  moveAddress: number;
  restore: number;
  total: number;
}

export interface HandOverResult {
  method: HandoverMethod;
  /** Connections the target confirmed (now its own). */
  handedOver: number;
  /** Connections back with the application (onResumed was called for each). */
  resumed: number;
  /** Connections neither side could keep (only after a partial failure once the address moved). */
  lost: number;
  /** Connections that were closed (destroyed) when the handover reached them; given back through onResumed as they are. */
  closed: number;
  failures: Array<{ index: number; code: string; message: string }>;
  phases: HandoverPhases;
}

/** One connection while the source holds it. */
interface Held {
  index: number;
  socket: net.Socket;
  state: Buffer;
  /** method 'repair' + lock 'filter': the original, paused behind its drop filter. */
  held?: HeldConnection;
  image?: ConnectionImage;
  wasReading?: boolean;
  done?: boolean;
}

function validate(sockets: unknown, options: HandOverOptions): void {
  if (!Array.isArray(sockets))
    throw new InvalidArgumentError('sockets must be an array of net.Socket', 'ERR_INVALID_ARG_TYPE');
  if (new Set(sockets).size !== sockets.length) throw new InvalidArgumentError('sockets must not repeat');
  if (typeof options !== 'object' || options === null || options.to === undefined)
    throw new InvalidArgumentError('options.to is required', 'ERR_INVALID_ARG_TYPE');
  if (options.method !== undefined && options.method !== 'repair' && options.method !== 'fd')
    throw new InvalidArgumentError(`method must be 'repair' or 'fd'`);
  if (options.lock !== undefined && options.lock !== 'filter' && options.lock !== 'nftables')
    throw new InvalidArgumentError(`lock must be 'filter' or 'nftables'`);
  if (options.netns !== undefined && (typeof options.netns !== 'string' || !path.isAbsolute(options.netns)))
    throw new InvalidArgumentError('netns must be an absolute path');
  if (options.timeoutMs !== undefined && (!Number.isFinite(options.timeoutMs) || options.timeoutMs <= 0))
    throw new InvalidArgumentError('timeoutMs must be > 0', 'ERR_OUT_OF_RANGE');
  for (const name of ['serializeState', 'onResumed', 'moveAddress', 'moveAddressBack', 'onProgress'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function')
      throw new InvalidArgumentError(`${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
  }
}

function u32Prefixed(first: Uint8Array, rest: Uint8Array): Buffer {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(first.byteLength, 0);
  return Buffer.concat([length, first, rest]);
}

/**
 * The image codec loads its protobuf schema on first use: do that before anything is paused. Decoding nothing loads it and then fails validation, which is all we want here.
 */
export function warmUpImageCodec(): void {
  try {
    decodeConnectionImage(new Uint8Array(0));
  } catch {
    // expected: an empty image is not valid
  }
}

/** The 4-tuples of the sockets that are still open. */
function liveTuples(sockets: readonly net.Socket[]): ConnectionTuple[] {
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

/** Gives a held connection back to the application, live again. */
async function resumeHeld(
  entries: Held[],
  lockKind: 'filter' | 'nftables',
  method: HandoverMethod,
  netns: string | undefined,
  onResumed: HandOverOptions['onResumed'],
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
    try {
      const sockets = await restoreConnections(
        toRestore.map((e) => e.image as ConnectionImage),
        netns === undefined ? {} : { netns },
      );
      sockets.forEach((socket, i) => back.push({ socket, state: toRestore[i].state } as Held));
    } catch {
      for (const entry of toRestore) {
        try {
          const [socket] = await restoreConnections(
            [entry.image as ConnectionImage],
            netns === undefined ? {} : { netns },
          );
          back.push({ socket, state: entry.state } as Held);
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
function releaseHeld(entry: Held): void {
  entry.done = true;
  if (entry.held) {
    entry.held.release();
  } else if (!entry.socket.destroyed) {
    soccr.unreadBytes(entry.socket, { take: true });
    entry.socket.destroy();
  }
}

export async function handOverConnections(
  sockets: readonly net.Socket[],
  options: HandOverOptions,
): Promise<HandOverResult> {
  validate(sockets, options);
  const method = options.method ?? 'repair';
  const lockKind = options.lock ?? (options.moveAddress ? 'filter' : 'nftables');
  const signal = AbortSignal.any([
    AbortSignal.timeout(options.timeoutMs ?? 60000),
    ...(options.signal ? [options.signal] : []),
  ]);
  const progress = (phase: string, detail?: Record<string, unknown>) =>
    options.onProgress?.({ phase, ...(detail ? { detail } : {}) });
  const phases: HandoverPhases = { handshake: 0, checkpoint: 0, transfer: 0, moveAddress: 0, restore: 0, total: 0 };
  const started = performance.now();
  let mark = started;
  const lap = (phase: keyof HandoverPhases) => {
    const now = performance.now();
    phases[phase] = now - mark;
    mark = now;
  };

  warmUpImageCodec();
  const channel: HandoverChannel = await openChannel(options.to, signal);
  if (method === 'fd' && !channel.canPassFds) {
    channel.close();
    throw new HandoverError(`method 'fd' needs a SeqpacketTransport channel`, 'ERR_HANDOVER_FDS_UNSUPPORTED');
  }
  const held: Held[] = [];
  let lock: NftablesLock | undefined;
  let addressMoved = false;
  let moveFailed = false;
  let closed = 0;
  try {
    // With the address moving, the 4-tuples go in HELLO: the target drops them before anything
    // is paused (harmless: no packet of theirs reaches it until the address arrives).
    const tuples = method === 'repair' && options.moveAddress !== undefined ? liveTuples(sockets) : undefined;
    channel.sendJson(MessageType.HELLO, {
      method,
      count: sockets.length,
      addressMoves: options.moveAddress !== undefined,
      lock: lockKind,
      pid: process.pid,
      ...(tuples ? { tuples } : {}),
    });
    const welcome = await channel.expect([MessageType.WELCOME, MessageType.REFUSE], signal);
    if (welcome.type === MessageType.REFUSE) {
      throw new HandoverError(
        `target refused the handover: ${jsonOf<{ reason?: string }>(welcome).reason ?? 'no reason'}`,
        'ERR_HANDOVER_REFUSED',
      );
    }
    // The nftables table is made before the application lets go of anything (outside the pause).
    if (method === 'repair' && lockKind === 'nftables' && sockets.length > 0)
      lock = await NftablesLock.create(options.netns === undefined ? {} : { netns: options.netns });
    lap('handshake');
    progress('checkpoint', { connections: sockets.length });

    for (const [index, socket] of sockets.entries()) {
      const state = options.serializeState ? await options.serializeState(socket) : new Uint8Array(0);
      // libuv stops reading now: a FIN or data that arrives meanwhile stays in the kernel (and
      // goes with the connection) instead of ending or destroying the net.Socket under us.
      const wasReading = soccr.stopReading(socket);
      held.push({ index, socket, state: Buffer.from(state), wasReading });
    }
    // A connection that closed meanwhile (destroyed, or its writes failed) is not handed over: the
    // application gets it back as it is.
    const flushed = await Promise.allSettled(
      held.map((entry) =>
        entry.socket.destroyed
          ? Promise.reject(new HandoverError('socket destroyed', 'ERR_SOCKET_DESTROYED'))
          : soccr.flushWrites(entry.socket, { timeoutMs: 10000 }),
      ),
    );
    const live: Held[] = [];
    held.forEach((entry, i) => {
      if (flushed[i].status === 'fulfilled' && !entry.socket.destroyed) {
        live.push(entry);
      } else {
        entry.done = true;
        closed++;
        options.onResumed?.(entry.socket, entry.state);
      }
    });

    if (method === 'fd') {
      for (const entry of live) {
        const pending = soccr.unreadBytes(entry.socket);
        channel.send(MessageType.CONNECTION_FD, entry.index, u32Prefixed(pending, entry.state), [
          soccr.fdOfSocket(entry.socket),
        ]);
      }
    } else if (lockKind === 'filter') {
      // One batch from the first pause to the last: nothing else runs on these sockets meanwhile.
      const hold = await holdConnections(
        live.map((entry) => entry.socket),
        { lock: 'filter' },
      );
      hold.connections.forEach((connection, i) => {
        live[i].held = connection;
        live[i].image = connection.image;
      });
    } else if (live.length > 0 && lock) {
      const images = await checkpointConnections(
        live.map((entry) => entry.socket),
        { lock, ...(options.netns === undefined ? {} : { netns: options.netns }) },
      );
      images.forEach((image, i) => (live[i].image = image));
    }
    lap('checkpoint');

    if (method === 'repair') {
      for (const entry of live)
        channel.send(
          MessageType.CONNECTION,
          entry.index,
          u32Prefixed(encodeConnectionImage(entry.image as ConnectionImage), entry.state),
        );
    }
    channel.sendJson(MessageType.STAGE_END, { count: live.length });
    await channel.expect([MessageType.STAGED], signal);
    lap('transfer');

    if (options.moveAddress) {
      progress('moveAddress');
      try {
        await options.moveAddress();
      } catch (error) {
        // It may have moved the address part of the way: moveAddressBack (if given) undoes that.
        moveFailed = true;
        throw new HandoverError(`moveAddress failed: ${(error as Error).message}`, 'ERR_HANDOVER_ADDRESS', error);
      }
      addressMoved = true;
    }
    lap('moveAddress');

    progress('restore');
    channel.send(MessageType.COMMIT, 0);
    const result = jsonOf<{ restored: number[]; failed: Array<{ id: number; code: string; message: string }> }>(
      await channel.expect([MessageType.RESULT], signal),
    );
    const restored = new Set(result.restored);
    const failures = result.failed.map((f) => ({ index: f.id, code: f.code, message: f.message }));
    let handedOver = 0;
    for (const entry of held) {
      if (!restored.has(entry.index)) continue;
      releaseHeld(entry);
      handedOver++;
    }
    lap('restore');
    let resumed = 0;
    let lost = 0;
    const unconfirmed = held.filter((e) => !e.done);
    if (unconfirmed.length > 0) {
      if (addressMoved && method === 'repair' && lockKind === 'filter') {
        // The address is at the target now: these originals cannot run here any more.
        unconfirmed.forEach((entry) => releaseHeld(entry));
        lost = unconfirmed.length;
      } else {
        ({ resumed, lost } = await resumeHeld(unconfirmed, lockKind, method, options.netns, options.onResumed));
      }
    }
    try {
      channel.send(MessageType.DONE, 0);
    } catch {
      // the target may have closed already: it has its connections
    }
    phases.total = performance.now() - started;
    progress('done', { handedOver, resumed, lost });
    return { method, handedOver, resumed, lost, closed, failures, phases };
  } catch (error) {
    const failure =
      error instanceof HandoverError
        ? error
        : new HandoverError(
            (error as Error).message,
            (error as { code?: string }).code ?? 'ERR_HANDOVER_FAILED',
            error,
          );
    if (
      failure.code !== 'ERR_HANDOVER_REFUSED' &&
      failure.code !== 'ERR_HANDOVER_PEER_ABORTED' &&
      failure.code !== 'ERR_HANDOVER_CHANNEL_CLOSED'
    ) {
      try {
        channel.sendJson(MessageType.ABORT, { reason: failure.message });
      } catch {
        // channel already broken
      }
    }
    if ((addressMoved || moveFailed) && options.moveAddressBack) {
      await options.moveAddressBack().catch(() => undefined);
      addressMoved = false;
    }
    if (addressMoved && method === 'repair' && lockKind === 'filter') {
      const stranded = held.filter((e) => !e.done);
      stranded.forEach((entry) => releaseHeld(entry));
      failure.lost = stranded.length;
    } else {
      const { resumed, lost } = await resumeHeld(held, lockKind, method, options.netns, options.onResumed);
      failure.resumed = resumed;
      failure.lost = lost;
    }
    failure.closed = closed;
    throw failure;
  } finally {
    channel.close();
    if (lock) await lock.destroy().catch(() => undefined);
  }
}
