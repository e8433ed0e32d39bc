/**
 * acceptHandover: the target side of handOverConnections (see handover-source.ts for the protocol).
 * It stages every connection, locks its own gap when the service address is about to arrive (an
 * nftables table in `netns` dropping the staged 4-tuples, so packets that reach this host before
 * their socket exists are not answered with RST), restores or adopts them on COMMIT, confirms
 * with RESULT, and only then hands each to onConnection with the application's state.
 */
import * as net from 'node:net';
import * as path from 'node:path';

import { InvalidArgumentError } from '../errors';
import { NftablesLock, decodeConnectionImage, stageRestoreConnections } from '../soccr';
import type { ConnectionImage, ConnectionTuple, StagedRestore } from '../soccr';
import { acceptChannel, jsonOf, MessageType, openChannel } from './handover-channel';
import type { HandoverChannel, HandoverChannelSpec, HandoverMessage } from './handover-channel';
import { closeFdQuietly, HandoverError } from './handover-errors';
import { warmUpImageCodec } from './handover-source';
import type { HandoverMethod } from './handover-source';

export interface HandoverHello {
  method: HandoverMethod;
  count: number;
  addressMoves: boolean;
  lock: 'filter' | 'nftables';
  pid: number;
  /** With addressMoves: the connections' 4-tuples, for the target's gap lock. */
  tuples?: ConnectionTuple[];
}

const tupleKey = (t: ConnectionTuple) => `${t.local.address} ${t.local.port} ${t.remote.address} ${t.remote.port}`;

export interface AcceptHandoverOptions {
  /** The channel from the source: a SeqpacketTransport or net.Socket, or where to listen for it. */
  from: HandoverChannelSpec | { listen: { host?: string; port: number } | { path: string } };
  /** Called once per connection taken over, after the source was told: the application owns it now. */
  onConnection: (socket: net.Socket, state: Buffer) => void | Promise<void>;
  /** Restore the connections into this network namespace (path; default: ours). 'repair' only. */
  netns?: string;
  /** Drop the staged connections' packets here until each is restored, when the source says the address moves (default 'nftables'). */
  lock?: 'nftables' | 'none';
  /** Return false or a reason string to refuse the handover (nothing is touched on either side). */
  accept?: (hello: HandoverHello) => boolean | string;
  /** Called with the listening address when `from.listen` is used. */
  onListening?: (address: net.AddressInfo | string) => void;
  signal?: AbortSignal;
  /** Whole-handover time limit (default 60000 ms). */
  timeoutMs?: number;
}

export interface AcceptHandoverResult {
  method: HandoverMethod;
  accepted: number;
  failed: number;
  phases: { stage: number; restore: number; total: number };
}

interface Staged {
  id: number;
  state: Buffer;
  image?: ConnectionImage;
  fd?: number;
  pendingRead?: Buffer;
}

function splitPrefixed(payload: Buffer): [Buffer, Buffer] {
  if (payload.length < 4) throw new HandoverError('short connection message', 'ERR_HANDOVER_PROTOCOL');
  const length = payload.readUInt32BE(0);
  if (payload.length < 4 + length) throw new HandoverError('truncated connection message', 'ERR_HANDOVER_PROTOCOL');
  return [payload.subarray(4, 4 + length), payload.subarray(4 + length)];
}

function validEndpoint(e: unknown): boolean {
  if (typeof e !== 'object' || e === null) return false;
  const { family, address, port } = e as { family?: unknown; address?: unknown; port?: unknown };
  return (
    (family === 4 || family === 6) &&
    typeof address === 'string' &&
    net.isIP(address) !== 0 &&
    Number.isInteger(port) &&
    (port as number) > 0 &&
    (port as number) < 65536
  );
}

function validateHello(hello: HandoverHello): void {
  if ((hello.method !== 'repair' && hello.method !== 'fd') || !Number.isInteger(hello.count) || hello.count < 0) {
    throw new HandoverError('malformed HELLO', 'ERR_HANDOVER_PROTOCOL');
  }
  // The tuples end up in an nft batch: only well-formed addresses and ports get that far.
  if (
    hello.tuples !== undefined &&
    (!Array.isArray(hello.tuples) || !hello.tuples.every((t) => validEndpoint(t?.local) && validEndpoint(t?.remote)))
  ) {
    throw new HandoverError('malformed HELLO tuples', 'ERR_HANDOVER_PROTOCOL');
  }
}

/** Staged restores (not live yet, see stageRestoreConnections) and, per image, where it is or why it failed. */
interface StagedImages {
  groups: StagedRestore[];
  outcomes: Array<{ group: number; position: number } | Error>;
}

async function stageEach(images: ConnectionImage[], netns: string | undefined): Promise<StagedImages> {
  const options = netns === undefined ? {} : { netns };
  try {
    return {
      groups: [await stageRestoreConnections(images, options)],
      outcomes: images.map((_, position) => ({ group: 0, position })),
    };
  } catch {
    // One bad image fails the batch (it is rolled back): find which, stage the rest one by one.
    const result: StagedImages = { groups: [], outcomes: [] };
    for (const image of images) {
      try {
        result.groups.push(await stageRestoreConnections([image], options));
        result.outcomes.push({ group: result.groups.length - 1, position: 0 });
      } catch (error) {
        result.outcomes.push(error as Error);
      }
    }
    return result;
  }
}

export async function acceptHandover(options: AcceptHandoverOptions): Promise<AcceptHandoverResult> {
  if (typeof options !== 'object' || options === null || options.from === undefined)
    throw new InvalidArgumentError('options.from is required', 'ERR_INVALID_ARG_TYPE');
  if (typeof options.onConnection !== 'function')
    throw new InvalidArgumentError('onConnection must be a function', 'ERR_INVALID_ARG_TYPE');
  if (options.netns !== undefined && (typeof options.netns !== 'string' || !path.isAbsolute(options.netns)))
    throw new InvalidArgumentError('netns must be an absolute path');
  if (options.lock !== undefined && options.lock !== 'nftables' && options.lock !== 'none')
    throw new InvalidArgumentError(`lock must be 'nftables' or 'none'`);
  const signal = AbortSignal.any([
    AbortSignal.timeout(options.timeoutMs ?? 60000),
    ...(options.signal ? [options.signal] : []),
  ]);
  const from = options.from;
  const channel: HandoverChannel =
    typeof from === 'object' && from !== null && 'listen' in from
      ? await acceptChannel(from.listen, signal, options.onListening)
      : await openChannel(from as HandoverChannelSpec, signal);

  warmUpImageCodec();
  const started = performance.now();
  const staged: Staged[] = [];
  let lock: NftablesLock | undefined;
  let committed = false;
  let restores: StagedRestore[] = [];
  try {
    const hello = jsonOf<HandoverHello>(await channel.expect([MessageType.HELLO], signal));
    validateHello(hello);
    let refusal: string | undefined;
    if (hello.method === 'fd' && !channel.canPassFds) refusal = `method 'fd' needs a SEQPACKET channel`;
    else if (options.accept) {
      const verdict = options.accept(hello);
      if (verdict !== true) refusal = typeof verdict === 'string' ? verdict : 'refused by the application';
    }
    if (refusal !== undefined) {
      channel.sendJson(MessageType.REFUSE, { reason: refusal });
      throw new HandoverError(`handover refused: ${refusal}`, 'ERR_HANDOVER_REFUSED');
    }
    // The gap lock (when the address moves here) is made before WELCOME, with the tuples HELLO
    // announced: nothing is paused yet, so none of this lengthens the connections' pause.
    const wantLock =
      hello.method === 'repair' && hello.addressMoves && (options.lock ?? 'nftables') === 'nftables' && hello.count > 0;
    const announced = new Set<string>();
    if (wantLock) {
      lock = await NftablesLock.create(options.netns === undefined ? {} : { netns: options.netns });
      const tuples = Array.isArray(hello.tuples) ? hello.tuples : [];
      await lock.add(tuples);
      tuples.forEach((t) => announced.add(tupleKey(t)));
    }
    channel.sendJson(MessageType.WELCOME, { pid: process.pid });

    for (;;) {
      const message: HandoverMessage = await channel.expect(
        [MessageType.CONNECTION, MessageType.CONNECTION_FD, MessageType.STAGE_END],
        signal,
      );
      if (message.type === MessageType.STAGE_END) break;
      if (message.type === MessageType.CONNECTION_FD) {
        if (hello.method !== 'fd' || message.fds.length !== 1) {
          message.fds.forEach(closeFdQuietly);
          throw new HandoverError('CONNECTION_FD without exactly one fd', 'ERR_HANDOVER_PROTOCOL');
        }
        const [pendingRead, state] = splitPrefixed(message.payload);
        staged.push({
          id: message.id,
          state: Buffer.from(state),
          fd: message.fds[0],
          pendingRead: Buffer.from(pendingRead),
        });
      } else {
        if (hello.method !== 'repair') throw new HandoverError('CONNECTION in an fd handover', 'ERR_HANDOVER_PROTOCOL');
        const [image, state] = splitPrefixed(message.payload);
        staged.push({ id: message.id, state: Buffer.from(state), image: decodeConnectionImage(image) });
      }
    }

    if (lock && staged.length > 0) {
      const late = staged
        .map((s) => ({ local: (s.image as ConnectionImage).local, remote: (s.image as ConnectionImage).remote }))
        .filter((t) => !announced.has(tupleKey(t)));
      await lock.add(late);
      // restoreConnections removes each tuple from this table right before it resumes the socket.
      for (const s of staged) (s.image as ConnectionImage).lock = lock.ref;
    }
    channel.send(MessageType.STAGED, 0);
    const stagedAt = performance.now();

    await channel.expect([MessageType.COMMIT], signal);
    committed = true;
    const sockets: Array<{ id: number; socket: net.Socket; state: Buffer }> = [];
    const failed: Array<{ id: number; code: string; message: string }> = [];
    if (hello.method === 'fd') {
      for (const s of staged) {
        const socket = new net.Socket({ fd: s.fd as number, readable: true, writable: true });
        s.fd = undefined;
        if (s.pendingRead && s.pendingRead.length > 0) socket.unshift(s.pendingRead);
        sockets.push({ id: s.id, socket, state: s.state });
      }
      // Confirm before the application touches anything: from here the source lets go.
      channel.sendJson(MessageType.RESULT, { restored: sockets.map((s) => s.id), failed });
    } else {
      const { groups, outcomes } = await stageEach(
        staged.map((s) => s.image as ConnectionImage),
        options.netns,
      );
      restores = groups;
      const restoredIds: number[] = [];
      outcomes.forEach((outcome, i) => {
        if (outcome instanceof Error)
          failed.push({
            id: staged[i].id,
            code: (outcome as { code?: string }).code ?? 'ERR_RESTORE',
            message: outcome.message,
          });
        else restoredIds.push(staged[i].id);
      });
      channel.sendJson(MessageType.RESULT, { restored: restoredIds, failed });
      // The restored copies stay in repair mode and locked until the source has let go of its own
      // (DONE), or is gone: should this process die before that, they vanish without a FIN or RST
      // and the source, which never got RESULT, resumes its originals; nothing is lost.
      await channel.expect([MessageType.DONE], signal).catch(() => undefined);
      const live = await Promise.all(groups.map((group) => group.commit().catch((error: Error) => error)));
      outcomes.forEach((outcome, i) => {
        if (outcome instanceof Error) return;
        const group = live[outcome.group];
        if (group instanceof Error)
          failed.push({
            id: staged[i].id,
            code: (group as { code?: string }).code ?? 'ERR_RESTORE',
            message: group.message,
          });
        else sockets.push({ id: staged[i].id, socket: group[outcome.position], state: staged[i].state });
      });
    }
    const restoredAt = performance.now();
    await Promise.all(sockets.map((s) => options.onConnection(s.socket, s.state)));
    // DONE (or the source closing) ends the handover; the connections are ours either way.
    if (hello.method === 'fd') await channel.expect([MessageType.DONE], signal).catch(() => undefined);
    return {
      method: hello.method,
      accepted: sockets.length,
      failed: failed.length,
      phases: { stage: stagedAt - started, restore: restoredAt - stagedAt, total: performance.now() - started },
    };
  } catch (error) {
    const code = (error as { code?: string }).code;
    // Tell the source, unless it already knows (it was refused, it aborted, or it is gone).
    if (
      !committed &&
      code !== 'ERR_HANDOVER_REFUSED' &&
      code !== 'ERR_HANDOVER_PEER_ABORTED' &&
      code !== 'ERR_HANDOVER_CHANNEL_CLOSED'
    ) {
      try {
        channel.sendJson(MessageType.ABORT, { reason: (error as Error).message });
      } catch {
        // channel already broken
      }
    }
    throw error instanceof HandoverError
      ? error
      : new HandoverError((error as Error).message, (error as { code?: string }).code ?? 'ERR_HANDOVER_FAILED', error);
  } finally {
    restores.forEach((restore) => restore.abort()); // those not committed: closed silently
    for (const s of staged) if (s.fd !== undefined) closeFdQuietly(s.fd);
    channel.close();
    if (lock) await lock.destroy().catch(() => undefined);
  }
}
