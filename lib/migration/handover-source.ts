/**
 * handOverConnections: the source side of a connections-only migration. Protocol (version 2):
 * HELLO -> WELCOME|REFUSE; CONNECTION(_FD) x n; STAGE_END -> STAGED; COMMIT -> RESULT; DONE ->
 * COMMITTED. Pipelined: everything that can is done before the freeze (channel, TLS, HELLO, the
 * target's checks and gap lock, locks, codec); after it, the address moves while the images
 * travel in batches and the target restores them as they arrive; STAGE_END waits for the move. One owner at every moment (docs/ARCHITECTURE.md, "Who owns a
 * connection"): until DONE is sent the source can always resume (the target never commits without
 * DONE); after DONE it keeps the originals held until COMMITTED, resumes them if the channel
 * closes (the target's copies died with it), and if it only times out releases them as uncertain.
 */
import type * as net from 'node:net';
import * as path from 'node:path';

import { InvalidArgumentError } from '../errors';
import { NftablesLock, checkpointConnections, holdConnections, soccr } from '../soccr';
import type { HeldConnections } from '../soccr';
import { openChannel, checkChannelSpec } from './handover-connect';
import type { HandoverChannelSpec } from './handover-connect';
import type { HandoverChannel } from './handover-channel';
import { HandoverError } from './handover-errors';
import {
  MessageType,
  decodeCommitted,
  decodeCount,
  decodeReason,
  decodeResult,
  decodeWelcome,
  encodeCount,
  encodeDone,
  encodeHello,
} from './handover-messages';
import type { HandoverMethod } from './handover-messages';
import { liveTuples, releaseHeld, resumeHeld, warmUpImageCodec } from './handover-source-held';
import type { Held } from './handover-source-held';
import { AddressMove, sendConnections } from './handover-source-stream';

export type { HandoverMethod };

export interface HandoverProgress {
  phase: string;
  detail?: Record<string, unknown>;
}

export interface HandOverOptions {
  /**
   * The target's control channel: a SeqpacketTransport (same host; required for 'fd'), a connected
   * unix stream net.Socket or authorized tls.TLSSocket, { path } (unix stream), or { host, port,
   * tls } (mutual TLS 1.3; TCP without tls is refused with ERR_HANDOVER_TLS_REQUIRED).
   */
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
  /**
   * Moves the service address to the target: 'repair', as soon as every connection is paused
   * (while the images travel); 'fd', before STAGE_END. Always finished before STAGE_END.
   */
  moveAddress?: () => Promise<void>;
  /** Moves it back if the target fails after moveAddress, so the originals can resume. */
  moveAddressBack?: () => Promise<void>;
  signal?: AbortSignal;
  /** Whole-handover time limit (default 60000 ms). */
  timeoutMs?: number;
  /**
   * Called at each step (hello, checkpoint, moveAddress, transfer, staged, commit, result, done,
   * committed: its detail has the phases); a returned promise is awaited (inside the handover's
   * time limit).
   */
  onProgress?: (event: HandoverProgress) => void | Promise<void>;
}

/**
 * Where a handover's time went (ms, measured on the source). Only `checkpoint` through `commit`
 * pause the connections; `moveAddress` runs alongside `transfer`.
 */
export interface HandoverPhases {
  /** Warm-up before anything is paused: channel (TLS), HELLO -> WELCOME (the target's checks and gap lock), our lock table. */
  handshake: number;
  /** Freeze to the last checkpoint: serializeState, flush, lock, libsoccr's batch dump. */
  checkpoint: number;
  /** The images written to the channel (the target restores them as they arrive). */
  transfer: number;
  /** Until STAGED: the rest of the address move, the target's last restores. */
  staged: number;
  /** The address move itself (from its start, right after the checkpoint). */
  moveAddress: number;
  /** COMMIT -> RESULT. */
  restore: number;
  /** DONE -> COMMITTED: the target's lock removed, repair mode off, its connections live. */
  commit: number;
  /** The connections' pause as the source sees it: the first freeze to COMMITTED. */
  pause: number;
  total: number;
}

export interface HandOverResult {
  method: HandoverMethod;
  /** Connections the target confirmed (COMMITTED: now its own). */
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
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal))
    throw new InvalidArgumentError('signal must be an AbortSignal', 'ERR_INVALID_ARG_TYPE');
  for (const name of ['serializeState', 'onResumed', 'moveAddress', 'moveAddressBack', 'onProgress'] as const) {
    if (options[name] !== undefined && typeof options[name] !== 'function')
      throw new InvalidArgumentError(`${name} must be a function`, 'ERR_INVALID_ARG_TYPE');
  }
  checkChannelSpec(options.to, 'options.to');
}

function asHandoverError(error: unknown): HandoverError {
  if (error instanceof HandoverError) return error;
  return new HandoverError((error as Error).message, (error as { code?: string }).code ?? 'ERR_HANDOVER_FAILED', error);
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
  const progress = async (phase: string, detail?: Record<string, unknown>): Promise<void> => {
    await options.onProgress?.({ phase, ...(detail ? { detail } : {}) });
  };
  const phases: HandoverPhases = {
    handshake: 0,
    checkpoint: 0,
    transfer: 0,
    staged: 0,
    moveAddress: 0,
    restore: 0,
    commit: 0,
    pause: 0,
    total: 0,
  };
  const started = performance.now();
  let mark = started;
  const lap = (phase: keyof HandoverPhases): void => {
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
  // The source accepts no CONNECTION and replies that name at most the connections it has.
  channel.limits = { maxConnections: sockets.length, maxImageBytes: 0, maxStateBytes: 0 };
  const held: Held[] = [];
  let lock: NftablesLock | undefined;
  let hold: HeldConnections | undefined;
  let addressMoved: boolean;
  const address = new AddressMove(options.moveAddress, () => progress('moveAddress'));
  let frozenAt: number;
  let doneSent = false;
  let closed = 0;
  const send = (type: MessageType, id: number, body?: Uint8Array, fds?: number[]): Promise<void> =>
    channel.send(type, id, body, { signal, ...(fds ? { fds } : {}) });
  try {
    // With the address moving, the 4-tuples go in HELLO: the target drops them before anything
    // is paused (harmless: no packet of theirs reaches it until the address arrives).
    const tuples = method === 'repair' && options.moveAddress !== undefined ? liveTuples(sockets) : undefined;
    await send(
      MessageType.HELLO,
      0,
      encodeHello({
        method,
        count: sockets.length,
        addressMoves: options.moveAddress !== undefined,
        lock: lockKind,
        pid: process.pid,
        ...(tuples ? { tuples } : {}),
      }),
    );
    const welcome = await channel.expect([MessageType.WELCOME, MessageType.REFUSE], signal);
    if (welcome.type === MessageType.REFUSE) {
      throw new HandoverError(
        `target refused the handover: ${decodeReason(MessageType.REFUSE, welcome.payload)}`,
        'ERR_HANDOVER_REFUSED',
      );
    }
    decodeWelcome(welcome.payload);
    await progress('hello');
    // The nftables table is made before the application lets go of anything (outside the pause).
    if (method === 'repair' && lockKind === 'nftables' && sockets.length > 0)
      lock = await NftablesLock.create({
        sweepable: true,
        ...(options.netns === undefined ? {} : { netns: options.netns }),
      });
    lap('handshake');
    await progress('checkpoint', { connections: sockets.length });
    mark = frozenAt = performance.now();

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

    if (method === 'repair' && lockKind === 'filter' && live.length > 0) {
      // One batch from the first pause to the last: nothing else runs on these sockets meanwhile.
      hold = await holdConnections(
        live.map((entry) => entry.socket),
        { lock: 'filter' },
      );
      hold.connections.forEach((connection, i) => {
        live[i].held = connection;
        live[i].image = connection.image;
      });
    } else if (method === 'repair' && live.length > 0 && lock) {
      const images = await checkpointConnections(
        live.map((entry) => entry.socket),
        { lock, ...(options.netns === undefined ? {} : { netns: options.netns }) },
      );
      images.forEach((image, i) => (live[i].image = image));
    }
    lap('checkpoint');

    // Every original is paused (and, lock 'nftables', closed): the address can move now, while
    // the images travel. The target drops the announced 4-tuples until each restore's commit.
    if (method === 'repair') address.start();
    await sendConnections(channel, live, method, signal, () => progress('transfer', { connections: live.length }));
    lap('transfer');
    // STAGE_END only once the address is here: the target restores what it could not yet (its
    // restore binds the connections' local address) before it answers STAGED.
    await address.result();
    addressMoved = address.moved;
    await send(MessageType.STAGE_END, 0, encodeCount(live.length));
    const staged = await channel.expect([MessageType.STAGED], signal);
    if (decodeCount(MessageType.STAGED, staged.payload, live.length) !== live.length)
      throw new HandoverError('the target staged another number of connections', 'ERR_HANDOVER_PROTOCOL');
    lap('staged');
    await progress('staged');
    phases.moveAddress = address.durationMs;

    // From COMMIT on, the outcome is awaited (up to the time limit), never guessed.
    await send(MessageType.COMMIT, 0);
    await progress('commit');
    const result = decodeResult(
      (await channel.expect([MessageType.RESULT], signal)).payload,
      new Set(live.map((e) => e.index)),
    );
    lap('restore');
    await progress('result', { restored: result.restored.length, failed: result.failed.length });
    const failures = result.failed.map((f) => ({ index: f.id, code: f.code, message: f.message }));
    const restored = new Set(result.restored);
    let resumed = 0;
    let lost = 0;
    // What the target could not restore is ours alone: back to the application (or lost when
    // the address is already at the target and the original cannot run here).
    const refusedByTarget = live.filter((e) => !restored.has(e.index));
    if (refusedByTarget.length > 0) {
      if (addressMoved && method === 'repair' && lockKind === 'filter') {
        refusedByTarget.forEach(releaseHeld);
        lost += refusedByTarget.length;
      } else {
        const back = await resumeHeld(refusedByTarget, lockKind, method, options.netns, options.onResumed);
        resumed += back.resumed;
        lost += back.lost;
      }
    }

    doneSent = true;
    await send(MessageType.DONE, 0, encodeDone({ commit: result.restored }));
    await progress('done');
    const committed = decodeCommitted((await channel.expect([MessageType.COMMITTED], signal)).payload, restored);
    const byIndex = new Map(live.map((e) => [e.index, e]));
    lap('commit');
    phases.pause = mark - frozenAt;
    const taken = committed.committed.map((id) => byIndex.get(id) as Held);
    if (hold && committed.failed.length === 0) {
      // Everything still held is the target's now: closed in one batch.
      hold.release();
      for (const entry of taken) entry.done = true;
    } else {
      taken.forEach(releaseHeld);
    }
    // A commit that failed on the target closed its copy silently: ours is the only one left.
    const notCommitted = committed.failed.map((f) => byIndex.get(f.id) as Held);
    failures.push(...committed.failed.map((f) => ({ index: f.id, code: f.code, message: f.message })));
    if (notCommitted.length > 0) {
      if (addressMoved && method === 'repair' && lockKind === 'filter') {
        notCommitted.forEach(releaseHeld);
        lost += notCommitted.length;
      } else {
        const back = await resumeHeld(notCommitted, lockKind, method, options.netns, options.onResumed);
        resumed += back.resumed;
        lost += back.lost;
      }
    }
    phases.total = performance.now() - started;
    await progress('committed', { handedOver: committed.committed.length, resumed, lost, phases: { ...phases } });
    return { method, handedOver: committed.committed.length, resumed, lost, closed, failures, phases };
  } catch (error) {
    const failure = asHandoverError(error);
    failure.closed = closed;
    const targetGone = failure.code === 'ERR_HANDOVER_CHANNEL_CLOSED' || failure.code === 'ERR_HANDOVER_PEER_ABORTED';
    if (doneSent && !targetGone) {
      // DONE went out but COMMITTED did not come: the target may have committed. Resuming could
      // make two live owners; releasing loses at most what the target did not take.
      const uncertain = held.filter((e) => !e.done);
      uncertain.forEach(releaseHeld);
      failure.uncertain = uncertain.length;
      throw failure;
    }
    if (!targetGone && failure.code !== 'ERR_HANDOVER_REFUSED') await channel.abort(failure.message);
    // Before DONE (or the target died after it, taking its uncommitted copies along): ours again,
    // once a move still under way has ended.
    await address.settled();
    addressMoved = address.moved;
    if ((addressMoved || address.failed) && options.moveAddressBack) {
      await options.moveAddressBack().catch(() => undefined);
      addressMoved = false;
    }
    if (addressMoved && method === 'repair' && lockKind === 'filter') {
      const stranded = held.filter((e) => !e.done);
      stranded.forEach(releaseHeld);
      failure.lost = stranded.length;
    } else {
      const { resumed, lost } = await resumeHeld(held, lockKind, method, options.netns, options.onResumed);
      failure.resumed = resumed;
      failure.lost = lost;
    }
    throw failure;
  } finally {
    channel.close();
    if (lock) await lock.destroy().catch(() => undefined);
  }
}
